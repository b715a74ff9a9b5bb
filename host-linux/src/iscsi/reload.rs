//! The targets a running iSCSI service serves, and swapping them on a
//! configuration reload without dropping sessions whose target stays.
//!
//! A [`Generation`] is one configuration's targets: their config and their
//! open state ([`TargetState`]: SCSI state and image files). A connection
//! takes the current generation when it starts and, once logged in to a
//! target, keeps only that target's state; a reload builds the next
//! generation, reusing the state of every target it keeps, so those sessions
//! go on reading and writing the same open images, reservations and all.
//!
//! Target *indices* are what the session table and the core's connection
//! know a target by, so the next generation keeps every surviving target at
//! its old index: new targets fill the holes removed ones left, then go at
//! the end; a hole nobody fills is closed by moving the last target into it
//! (that target's sessions are closed, its initiators log in again at the
//! new index, with fresh SCSI state over the same open images).
//!
//! What a reload refuses: changing the LUNs (image, size, read-only, thin,
//! write cache, or the set of LUN ids) of a target that stays. Its initiators
//! have its capacity and identity cached and a filesystem mounted on it;
//! swapping the image under them corrupts that filesystem, and reopening a
//! writable image that the old state still holds would fail its `flock`
//! anyway. To change one: remove the target (reload: its sessions close),
//! then add it back changed (reload), or restart sanboot.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::{open_target, Shared, TargetState};
use crate::config::{Config, Target};

/// One configuration's targets, in the order the core indexes them.
pub(crate) struct Generation {
    /// The whole configuration (its `targets` in index order).
    pub(crate) config: Arc<Config>,
    /// `targets[i]` serves `config.targets[i]`.
    pub(crate) targets: Vec<Arc<TargetState>>,
}

/// A reload checked and its new targets opened, not yet in effect.
pub(crate) struct Prepared {
    next: Generation,
    /// Old indices whose sessions must close, and why.
    close: Vec<(usize, &'static str)>,
    /// One line for the log and `sanboot reload`.
    pub(crate) summary: String,
}

impl Prepared {
    /// The configuration as it will run (targets reordered to keep indices).
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.next.config
    }
}

/// The LUN definitions compared as their `Debug` text: every field counts,
/// and the config crate need not derive `PartialEq` for this.
fn same_luns(a: &Target, b: &Target) -> bool {
    format!("{:?}", a.luns) == format!("{:?}", b.luns)
}

/// Checks `new` against the running generation and opens what it adds.
/// Nothing changes until [`commit`]; dropping the result closes what it opened.
pub(crate) fn prepare(shared: &Shared, new: &Config) -> Result<Prepared> {
    let cur = shared.generation();
    let old = &cur.config.targets;
    let old_index: HashMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, t)| (t.iqn.as_str(), i))
        .collect();

    // Survivors at their old index; LUN changes refused.
    let mut slots: Vec<Option<(Target, Arc<TargetState>)>> = vec![None; 0];
    slots.resize_with(old.len(), || None);
    let mut added = Vec::new();
    for t in &new.targets {
        match old_index.get(t.iqn.as_str()) {
            Some(&i) => {
                let (Some(o), Some(state)) = (old.get(i), cur.targets.get(i)) else {
                    continue;
                };
                if !same_luns(o, t) {
                    bail!(
                        "[[target]] {}: its LUNs changed; a running target's images are not \
                         swapped under its initiators. Remove the target and reload, then add \
                         it back and reload again, or restart sanboot",
                        t.iqn
                    );
                }
                if let Some(s) = slots.get_mut(i) {
                    *s = Some((t.clone(), state.clone()));
                }
            }
            None => added.push(t.clone()),
        }
    }
    let mut close: Vec<(usize, &'static str)> = old
        .iter()
        .enumerate()
        .filter(|(_, t)| !new.targets.iter().any(|n| n.iqn == t.iqn))
        .map(|(i, _)| (i, "target removed by a configuration reload"))
        .collect();
    let removed = close.len();

    // New targets: open their images (a failure refuses the whole reload).
    let mut opened = Vec::new();
    for t in &added {
        opened.push((t.clone(), Arc::new(open_target(t)?)));
    }
    let added_count = opened.len();
    for entry in opened {
        match slots.iter_mut().find(|s| s.is_none()) {
            Some(hole) => *hole = Some(entry),
            None => slots.push(Some(entry)),
        }
    }
    // Holes left: move the last target into each (its sessions close, its
    // SCSI state starts fresh over the same open images).
    while let Some(hole) = slots.iter().position(|s| s.is_none()) {
        let Some(last) = slots.pop() else { break };
        let Some((t, state)) = last else { continue };
        if hole >= slots.len() {
            slots.push(Some((t, state)));
            break;
        }
        close.push((
            slots.len(),
            "target moved to another index by a configuration reload",
        ));
        let fresh = TargetState::fresh_from(&state, &t)?;
        if let Some(s) = slots.get_mut(hole) {
            *s = Some((t, Arc::new(fresh)));
        }
    }
    let (targets_cfg, states): (Vec<Target>, Vec<Arc<TargetState>>) =
        slots.into_iter().flatten().unzip();
    let mut config = new.clone();
    config.targets = targets_cfg;
    let summary = format!(
        "{} targets: {} kept, {} added, {} removed",
        states.len(),
        states.len() - added_count,
        added_count,
        removed
    );
    Ok(Prepared {
        next: Generation {
            config: Arc::new(config),
            targets: states,
        },
        close,
        summary,
    })
}

/// Puts a prepared generation in effect and closes the sessions of targets
/// it removed or moved. New logins see it at once; kept sessions go on.
pub(crate) fn commit(shared: &Shared, p: Prepared) {
    let next = Arc::new(p.next);
    *shared.generation.write().unwrap_or_else(|e| e.into_inner()) = next;
    let logged = shared.logged.lock().unwrap_or_else(|e| e.into_inner());
    for (&token, &index) in logged.iter() {
        let Some((_, why)) = p.close.iter().find(|(i, _)| *i == index) else {
            continue;
        };
        shared.close_connection(token, why);
    }
}
