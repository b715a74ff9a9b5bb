//! The stations of golden images while `sanboot serve` runs: who is
//! connected, when a boot starts, and when a change to a station's overlay
//! (a volatile reset, a `sanboot image` request) may be applied.
//!
//! # When changes happen
//!
//! - **A boot starts** when the station fetches its per-MAC script
//!   (`<mac>.ipxe` over TFTP): that is before iPXE logs in, and only once
//!   per boot (iPXE, then the initramfs, then the OS after pivot all log in
//!   again, but none of them fetches the script). The mark is used by the
//!   station's next login, within [`BOOT_MARK_TTL`]: sessions of that
//!   station still open then belong to the previous boot (a station never
//!   logs out when reset, and iPXE abandons its session), so they are
//!   closed first, and only then is the overlay changed: never under a
//!   connected session.
//! - At that login a **volatile** station's overlay is dropped, and a
//!   pending **reset** or **rollback** is applied.
//! - **snapshot** and **commit** do not change what the station reads:
//!   they are applied within a poll interval even while it runs, with its
//!   I/O held for the moment it takes (after a flush: the copy is the disk
//!   at one instant, as after a power cut).
//! - A reset or rollback of a station that has had no session since
//!   `serve` started (it is off) is applied at once, and every pending
//!   request at `serve`'s start.
//!
//! The station's `<host>.lock` is held for as long as `serve` runs, which
//! is how `sanboot image` knows to hand its request over.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sanboot_config::images::{self, ops, request::Request, Station};
use sanboot_config::Config;

/// A script fetch older than this no longer marks the next login as a boot.
pub const BOOT_MARK_TTL: Duration = Duration::from_secs(120);
/// How often request files are looked for.
pub const POLL: Duration = Duration::from_millis(250);

/// One station as the server tracks it.
struct Tracked {
    station: Station,
    mac: [u8; 6],
    /// Index of its target in `config.targets`.
    target: usize,
    _lock: ops::Held,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections logged in to the station's target.
    sessions: HashSet<u64>,
    /// Whether it has had a session since `serve` started.
    seen: bool,
    /// When it last fetched its script.
    boot_mark: Option<Instant>,
}

/// Every station of the configuration.
pub struct Registry {
    stations: Vec<Tracked>,
}

static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();

/// The registry of the running `serve` (none before [`start`]).
pub fn registry() -> Option<&'static Arc<Registry>> {
    REGISTRY.get()
}

/// A client asks for the generated script `path` (by `request`, "TFTP
/// RRQ" or "HTTP GET" in the log): may it have it? A script with a secret goes
/// only to its station's address (`config::stations`); a script handed
/// out to a golden-image station marks the start of its boot.
pub fn script_requested(
    access: &crate::config::stations::Stations,
    config: &crate::config::Config,
    path: &str,
    client: std::net::IpAddr,
    request: &str,
) -> bool {
    if let Err(why) = access.check(config, path, client) {
        tracing::warn!("{request} {path} from {client} refused: {why}");
        return false;
    }
    if let Some(stations) = registry() {
        stations.script_fetched(path);
    }
    true
}

/// At `serve`'s start, before the targets are opened: locks every station,
/// applies what was pending, records each overlay's base version.
pub fn start(config: &Config) -> Result<()> {
    let mut stations = Vec::new();
    for station in images::stations(config) {
        let lock = ops::lock_station(&station, &ops::serve_holder())?.with_context(|| {
            format!(
                "station {}: {} is held by {}",
                station.hostname,
                station.lock_file().display(),
                ops::lock_holder(&station)
            )
        })?;
        if let Some(req) = pending(&station) {
            finish(
                &station,
                &req,
                ops::apply(&station, &req, &images::with_view),
            );
        }
        // From now on the overlay is bound to this base version.
        station.set_version(station.version()?)?;
        let target = config
            .targets
            .iter()
            .position(|t| t.iqn == station.target_iqn)
            .with_context(|| format!("station {}: no target", station.hostname))?;
        stations.push(Tracked {
            mac: sanboot_config::parse_mac(&station.mac)?,
            station,
            target,
            _lock: lock,
            state: Mutex::new(State::default()),
        });
    }
    // A second `start` in one process (tests) keeps the first registry.
    let _ = REGISTRY.set(Arc::new(Registry { stations }));
    Ok(())
}

fn pending(station: &Station) -> Option<Request> {
    let text = std::fs::read_to_string(station.request_file()).ok()?;
    match Request::parse(text.trim()) {
        Ok(r) => Some(r),
        Err(e) => {
            finish_text(station, &format!("error: {e:#}\n"));
            None
        }
    }
}

/// Writes the result for `sanboot image`, then removes the request.
fn finish(station: &Station, req: &Request, r: Result<String>) {
    let text = match r {
        Ok(line) => {
            tracing::info!(station = %station.hostname, request = %req, "{line}");
            format!("{line}\n")
        }
        Err(e) => {
            tracing::warn!(station = %station.hostname, request = %req, "failed: {e:#}");
            format!("error: {e:#}\n")
        }
    };
    finish_text(station, &text);
}

fn finish_text(station: &Station, text: &str) {
    if let Err(e) = images::layout::write_atomic(&station.result_file(), text.as_bytes()) {
        tracing::warn!(station = %station.hostname, "cannot write the result: {e:#}");
    }
    let _ = std::fs::remove_file(station.request_file());
}

impl Registry {
    fn by_target(&self, target: usize) -> Option<&Tracked> {
        self.stations.iter().find(|s| s.target == target)
    }

    /// TFTP served `name`: a station fetching its `<mac>.ipxe` starts a boot.
    pub fn script_fetched(&self, name: &str) {
        let file = name.rsplit('/').next().unwrap_or(name);
        let Some(mac) = sanboot_core::ipxe::mac_from_script_name(file) else {
            return;
        };
        for s in self.stations.iter().filter(|s| s.mac == mac) {
            lock(&s.state).boot_mark = Some(Instant::now());
            tracing::debug!(station = %s.station.hostname, "boot starts (script fetched)");
        }
    }

    /// Connection `token` was admitted to `target`.
    pub fn logged_in(&self, target: usize, token: u64) {
        if let Some(s) = self.by_target(target) {
            let mut st = lock(&s.state);
            st.sessions.insert(token);
            st.seen = true;
        }
    }

    /// Connection `token` ended (whatever it was).
    pub fn ended(&self, token: u64) {
        for s in &self.stations {
            lock(&s.state).sessions.remove(&token);
        }
    }

    /// A login to `target` is about to be admitted. If it is the first
    /// login of a boot, returns what to do first: the sessions of the
    /// previous boot to close, and the requests to apply after that.
    pub fn boot_work(&self, target: usize, token: u64) -> Option<BootWork> {
        let s = self.by_target(target)?;
        let mut st = lock(&s.state);
        let mark = st.boot_mark.take()?;
        if mark.elapsed() > BOOT_MARK_TTL {
            return None;
        }
        Some(BootWork {
            target,
            stale: st
                .sessions
                .iter()
                .copied()
                .filter(|t| *t != token)
                .collect(),
            pending: pending(&s.station),
            volatile: s.station.mode == sanboot_config::StationMode::Volatile,
        })
    }

    /// Requests that may be applied now (the poller): snapshot and commit
    /// always, reset and rollback of a station that is off.
    pub fn due(&self) -> Vec<(usize, Request)> {
        let mut out = Vec::new();
        for s in &self.stations {
            if !s.station.request_file().exists() {
                continue;
            }
            let Some(req) = pending(&s.station) else {
                continue;
            };
            let st = lock(&s.state);
            if !req.changes_contents() || (!st.seen && st.sessions.is_empty()) {
                out.push((s.target, req));
            }
        }
        out
    }

    /// Applies `req` to the station of `target` and reports to a waiting
    /// `sanboot image`; the caller (`iscsi/station_io.rs`) holds the
    /// station's I/O and reopens its LUN afterwards.
    /// `requested`: it came from `<host>.request` (else it is serve's own,
    /// a volatile reset, and no one waits for it).
    pub fn apply(
        &self,
        target: usize,
        req: &Request,
        requested: bool,
        with_view: ops::WithView<'_>,
    ) -> Result<String> {
        let s = self.by_target(target).context("not a station target")?;
        let r = ops::apply(&s.station, req, with_view);
        let line = r.as_ref().cloned().map_err(|e| anyhow::anyhow!("{e:#}"));
        if requested {
            finish(&s.station, req, r);
        } else {
            match &line {
                Ok(line) => tracing::info!(station = %s.station.hostname, "boot: {line}"),
                Err(e) => tracing::warn!(station = %s.station.hostname, "boot: {req}: {e}"),
            }
        }
        line
    }

    /// The station of `target`, if it is one.
    pub fn station(&self, target: usize) -> Option<&Station> {
        self.by_target(target).map(|s| &s.station)
    }
}

/// What the first login of a boot must wait for.
pub struct BootWork {
    pub target: usize,
    /// Connections of the previous boot, to close before the change.
    pub stale: Vec<u64>,
    /// What `sanboot image` asked for.
    pub pending: Option<Request>,
    /// Drop the overlay (after `pending`).
    pub volatile: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
