//! The iSCSI side of golden-image stations (`crate::stations`): a change
//! to a station's overlay files is made with that station's I/O stopped,
//! and its LUN reopened on the files as they are afterwards.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sanboot_config::images::{ops, request::Request};
use sanboot_core::iscsi::Access;

use super::Shared;
use crate::config::lun_device::LunDevice;
use crate::stations::{BootWork, Registry};

/// How long the first login of a boot waits for the previous boot's
/// sessions to end once told to.
const STALE_WAIT: Duration = Duration::from_secs(10);

/// Applies `req` to the station of `target`: holding the target's device
/// map for writing waits for every command's I/O in progress and holds new
/// ones; the devices are flushed (a checkpoint), the files changed, and
/// LUN 0 reopened. A connected station reads the same bytes before and
/// after a snapshot or commit; reset and rollback come only here when it
/// has no session.
pub(super) fn apply(
    shared: &Shared,
    registry: &Registry,
    target: usize,
    req: &Request,
    requested: bool,
) {
    // Target indices are stable across reloads (`reload.rs`).
    let generation = shared.generation();
    let Some(t) = generation.targets.get(target) else {
        return;
    };
    let Some(station) = registry.station(target) else {
        return;
    };
    let mut disks = t.disks.write().unwrap_or_else(|e| e.into_inner());
    for d in disks.values() {
        if let Err(e) = d.sync() {
            tracing::warn!(station = %station.hostname, "flush before {req}: {e:#}");
        }
    }
    // `commit` reads the station's disk through the device open here.
    let view = disks.get(&0).cloned();
    let with_view = |_: &std::path::Path, _: &std::path::Path, merge: ops::Merge<'_>| {
        let dev = view.as_ref().context("the station's LUN is not open")?;
        dev.with_device(Access::Shared, |d| merge(d))
    };
    let _ = registry.apply(target, req, requested, &with_view);
    // The old device goes first: its file may have been replaced, and the
    // new one takes the overlay's lock.
    drop(view);
    disks.remove(&0);
    match sanboot_config::images::open_station(station) {
        Ok(disk) => {
            disks.insert(0, Arc::new(disk));
        }
        Err(e) => tracing::error!(
            station = %station.hostname,
            "cannot reopen its disk after {req}: {e:#}; its commands fail until restart"
        ),
    }
}

/// A station's LUN as `open_targets` opens it: over the base version it
/// sits on now. `None` for LUNs that are not a station's.
pub(super) fn open(target: usize, lun: u64) -> Option<anyhow::Result<LunDevice>> {
    let station = crate::stations::registry()?.station(target)?;
    (lun == 0).then(|| sanboot_config::images::open_station(station))
}

/// A station that never wrote (an empty overlay) on an old version of
/// its image moves to the current one at its boot.
fn unwritten_and_behind(shared: &Shared, registry: &Registry, target: usize) -> bool {
    let Some(station) = registry.station(target) else {
        return false;
    };
    let behind = matches!(
        (station.version(), station.current_version()),
        (Ok(v), Ok(c)) if v < c
    );
    let empty = shared.generation().targets.get(target).is_some_and(|t| {
        let disks = t.disks.read().unwrap_or_else(|e| e.into_inner());
        matches!(disks.get(&0).map(|d| &**d), Some(LunDevice::Overlay(o)) if o.data_bytes() == 0)
    });
    behind && empty
}

/// The first login of a boot: close the previous boot's sessions, wait
/// for them to end, then apply the volatile reset and pending requests.
pub(super) async fn boot(shared: &Shared, registry: &Registry, work: BootWork) {
    if !work.stale.is_empty() {
        for token in &work.stale {
            let kill = shared
                .kills
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
                .cloned();
            if let Some(k) = kill {
                shared
                    .replaced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        *token,
                        "the station booted again (fetched its script and logged in)".into(),
                    );
                k.notify_one();
            }
        }
        let start = std::time::Instant::now();
        while start.elapsed() < STALE_WAIT {
            let alive = {
                let kills = shared.kills.lock().unwrap_or_else(|e| e.into_inner());
                work.stale.iter().any(|t| kills.contains_key(t))
            };
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(req) = &work.pending {
        tokio::task::block_in_place(|| apply(shared, registry, work.target, req, true));
    }
    if work.volatile || unwritten_and_behind(shared, registry, work.target) {
        let reset = Request::Reset;
        tokio::task::block_in_place(|| apply(shared, registry, work.target, &reset, false));
    }
}

/// Applies what may be applied now, every [`crate::stations::POLL`],
/// until `stop`.
pub(super) async fn poll(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(registry) = crate::stations::registry() else {
        return;
    };
    loop {
        tokio::select! {
            _ = super::stopped(&mut stop) => return,
            _ = tokio::time::sleep(crate::stations::POLL) => {}
        }
        for (target, req) in registry.due() {
            tokio::task::block_in_place(|| apply(&shared, registry, target, &req, true));
        }
    }
}
