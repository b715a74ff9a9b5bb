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
//! the end. A hole nobody fills keeps a *retired* placeholder: a target
//! with no LUNs whose allow-list holds a name no initiator can send (it
//! contains a NUL, the text separator), so SendTargets never lists it and
//! every login to it is refused; trailing ones are dropped. No kept
//! target ever changes index, so no kept session is ever closed.
//!
//! What a reload refuses: changing the LUNs (image, size, read-only, thin,
//! write cache, or the set of LUN ids) of a target that stays. Its initiators
//! have its capacity and identity cached and a filesystem mounted on it;
//! swapping the image under them corrupts that filesystem, and reopening a
//! writable image that the old state still holds would fail its `flock`
//! anyway. To change one: remove the target (reload: its sessions close),
//! then add it back changed (reload), or restart sanboot.

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

/// The allow-list entry of a retired placeholder: no initiator name can
/// contain a NUL (it separates key=value pairs on the wire).
const RETIRED: &str = "\0retired";

fn is_retired(t: &Target) -> bool {
    t.initiators.iter().any(|i| i == RETIRED)
}

/// A placeholder keeping index `index` (see the module doc), shaped from
/// the target that had it.
fn retired(old: &Target, index: usize) -> Target {
    let mut t = old.clone();
    t.iqn = format!("iqn.2026-12.invalid.sanboot:retired-{index}");
    t.initiators = vec![RETIRED.to_string()];
    t.chap = None;
    t.luns.clear();
    t
}

/// Where each target of the next generation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The target at this old index, kept.
    Kept(usize),
    /// `new.targets[i]`, opened now.
    Added(usize),
    /// A retired placeholder for the target that had this old index.
    Retired(usize),
}

/// The next generation's order: old targets (by IQN; `None` for retired
/// placeholders) against the new file's. Kept targets keep their index,
/// added ones fill holes first, trailing holes are dropped.
fn place(old: &[Option<&str>], new: &[&str]) -> Vec<Slot> {
    let mut slots: Vec<Option<Slot>> = old
        .iter()
        .enumerate()
        .map(|(i, iqn)| iqn.filter(|iqn| new.contains(iqn)).map(|_| Slot::Kept(i)))
        .collect();
    for (n, iqn) in new.iter().enumerate() {
        if old.contains(&Some(*iqn)) {
            continue;
        }
        match slots.iter_mut().find(|s| s.is_none()) {
            Some(hole) => *hole = Some(Slot::Added(n)),
            None => slots.push(Some(Slot::Added(n))),
        }
    }
    while slots.last().is_some_and(Option::is_none) {
        slots.pop();
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or(Slot::Retired(i)))
        .collect()
}

/// Checks `new` against the running generation and opens what it adds.
/// Nothing changes until [`commit`]; dropping the result closes what it opened.
pub(crate) fn prepare(shared: &Shared, new: &Config) -> Result<Prepared> {
    let cur = shared.generation();
    let old = &cur.config.targets;
    let old_iqns: Vec<Option<&str>> = old
        .iter()
        .map(|t| (!is_retired(t)).then_some(t.iqn.as_str()))
        .collect();
    let new_iqns: Vec<&str> = new.targets.iter().map(|t| t.iqn.as_str()).collect();
    let slots = place(&old_iqns, &new_iqns);

    let (mut kept, mut added) = (0, 0);
    let mut targets = Vec::with_capacity(slots.len());
    let mut states = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot {
            Slot::Kept(i) => {
                let (Some(o), Some(state)) = (old.get(i), cur.targets.get(i)) else {
                    bail!("internal: kept target {i} missing");
                };
                let Some(t) = new.targets.iter().find(|t| t.iqn == o.iqn) else {
                    bail!("internal: kept target {} missing", o.iqn);
                };
                if !same_luns(o, t) {
                    bail!(
                        "[[target]] {}: its LUNs changed; a running target's images are not \
                         swapped under its initiators. Remove the target and reload, then add \
                         it back and reload again, or restart sanboot",
                        t.iqn
                    );
                }
                kept += 1;
                targets.push(t.clone());
                states.push(state.clone());
            }
            Slot::Added(n) => {
                let Some(t) = new.targets.get(n) else {
                    bail!("internal: added target {n} missing");
                };
                // A failure (missing image, locked) refuses the whole reload.
                states.push(Arc::new(open_target(new, t)?));
                targets.push(t.clone());
                added += 1;
            }
            Slot::Retired(i) => {
                let Some(o) = old.get(i) else {
                    bail!("internal: retired target {i} missing");
                };
                states.push(Arc::new(open_target(new, &retired(o, i))?));
                targets.push(retired(o, i));
            }
        }
    }
    let close: Vec<(usize, &'static str)> = old_iqns
        .iter()
        .enumerate()
        .filter(|(_, iqn)| iqn.is_some_and(|iqn| !new_iqns.contains(&iqn)))
        .map(|(i, _)| (i, "target removed by a configuration reload"))
        .collect();
    let mut config = new.clone();
    config.targets = targets;
    let summary = format!(
        "{} targets: {kept} kept, {added} added, {} removed",
        kept + added,
        close.len()
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
        shared.close_connection(token, Some(why));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kept_targets_keep_their_index() {
        use Slot::*;
        let a = Some("a");
        let (b, c) = (Some("b"), Some("c"));
        // Unchanged; one added at the end.
        assert_eq!(place(&[a, b], &["b", "a"]), [Kept(0), Kept(1)]);
        assert_eq!(
            place(&[a, b], &["a", "b", "c"]),
            [Kept(0), Kept(1), Added(2)]
        );
        // A removed target in the middle: its index stays taken.
        assert_eq!(
            place(&[a, b, c], &["a", "c"]),
            [Kept(0), Retired(1), Kept(2)]
        );
        // A new one fills the hole, even an old placeholder's.
        assert_eq!(
            place(&[a, None, c], &["a", "c", "d"]),
            [Kept(0), Added(2), Kept(2)]
        );
        // Trailing holes go.
        assert_eq!(place(&[a, b, c], &["a"]), [Kept(0)]);
        assert_eq!(place(&[a, None], &["a"]), [Kept(0)]);
        assert_eq!(place(&[a, b], &[]), []);
        // Removed and re-added under the same name: a fresh target.
        assert_eq!(place(&[None, b], &["a", "b"]), [Added(0), Kept(1)]);
    }

    #[test]
    fn a_retired_placeholder_admits_nobody() {
        let t: Target =
            toml::from_str("iqn = \"iqn.2026-12.x:y\"\n[[lun]]\nid = 0\nimage = \"a.img\"\n")
                .unwrap();
        let r = retired(&t, 3);
        assert!(is_retired(&r) && !is_retired(&t));
        assert!(r.luns.is_empty() && r.chap.is_none());
        assert_ne!(r.iqn, t.iqn);
        let mut config: crate::config::Config =
            toml::from_str("[server]\naddress = \"192.0.2.1\"\n").unwrap();
        config.targets = vec![r];
        let views = crate::config::translate::TargetViews::new(&config, &[]);
        let configs = views.configs();
        let c = configs.first().copied();
        assert!(c.is_some_and(|c| !c.allows("iqn.2026-12.x:initiator") && !c.allows("")));
    }
}
