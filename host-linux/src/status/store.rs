//! The boot timeline of each station: what happened, when, in which boot.
//!
//! Bounded like everything else: at most [`MAX_STATIONS`] stations (the one
//! heard from longest ago is dropped for a new one) and [`MAX_EVENTS`]
//! events per station (the oldest are dropped).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sanboot_core::dhcp::ClientKind;
use sanboot_core::timeline::Stage;
use serde::Serialize;

/// Stations kept.
pub const MAX_STATIONS: usize = 256;
/// Events kept per station.
pub const MAX_EVENTS: usize = 64;
/// A DISCOVER after this long without news from a station starts a new
/// boot even if the last one never reached its disk.
const NEW_BOOT_AFTER_MS: u64 = 5 * 60 * 1000;

/// One thing that happened to a station.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Which boot of this station (counted since sanboot started).
    pub boot: u32,
    /// The stage, by its stable name.
    pub stage: &'static str,
    /// What exactly (file name, target, CHAP result, error).
    pub detail: String,
}

/// The first time a stage was reached in the current boot, and how long
/// until the next stage.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StageTime {
    /// The stage, by its stable name.
    pub stage: &'static str,
    /// Milliseconds since the boot started.
    pub at_ms: u64,
    /// Milliseconds until the next stage was reached (`None`: the latest).
    pub took_ms: Option<u64>,
}

/// One station as `/api/stations` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Station {
    /// `52:54:00:e2:e0:01`, or the IP address / initiator name when the
    /// MAC could not be learned.
    pub id: String,
    /// From the config's `[[host]]`, when there is one.
    pub hostname: Option<String>,
    /// Its address, once a DHCP reply or a transfer showed it.
    pub ip: Option<String>,
    /// The latest stage of the current boot.
    pub stage: &'static str,
    /// Boots seen (1 for the first).
    pub boot: u32,
    /// Unix ms when the current boot started.
    pub boot_started_ms: u64,
    /// Unix ms of the latest event.
    pub last_seen_ms: u64,
    /// The current boot's stages in the order reached.
    pub stages: Vec<StageTime>,
    /// The latest events (all boots), oldest first.
    pub events: Vec<Event>,
    /// Bytes its iSCSI sessions read and wrote.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Failed steps.
    pub errors: u64,
}

/// A station's iSCSI byte totals: its connections add to them without
/// taking the store's lock.
#[derive(Debug, Default)]
pub struct IoTotals {
    read: AtomicU64,
    written: AtomicU64,
}

impl IoTotals {
    /// Adds bytes read and written.
    pub fn add(&self, read: u64, written: u64) {
        self.read.fetch_add(read, Relaxed);
        self.written.fetch_add(written, Relaxed);
    }
}

#[derive(Debug)]
struct Entry {
    station: Station,
    io: Arc<IoTotals>,
    events: VecDeque<Event>,
    /// (stage, unix ms) of the current boot, first time each.
    reached: Vec<(Stage, u64)>,
}

impl Entry {
    fn new(id: &str, hostname: Option<String>) -> Entry {
        Entry {
            station: Station {
                id: id.to_string(),
                hostname,
                ip: None,
                stage: "",
                boot: 0,
                boot_started_ms: 0,
                last_seen_ms: 0,
                stages: Vec::new(),
                events: Vec::new(),
                bytes_read: 0,
                bytes_written: 0,
                errors: 0,
            },
            io: Arc::default(),
            events: VecDeque::new(),
            reached: Vec::new(),
        }
    }

    fn reached(&self, stage: Stage) -> bool {
        self.reached.iter().any(|(s, _)| *s == stage)
    }

    /// Whether a DISCOVER from `client` at `now` is a new boot rather than
    /// a later round of the same one (iPXE asking again after PXE chained it).
    fn discover_starts_boot(&self, client: ClientKind, now: u64) -> bool {
        let s = &self.station;
        s.boot == 0
            || now.saturating_sub(s.last_seen_ms) > NEW_BOOT_AFTER_MS
            || self.reached(Stage::IscsiLogin)
            // A plain PXE ROM asks only once per power-on: if this boot
            // already fetched something, the machine started over.
            || (matches!(client, ClientKind::Pxe { .. } | ClientKind::Http { .. })
                && (self.reached(Stage::BootFile) || self.reached(Stage::Script)))
    }
}

/// Every station's timeline.
#[derive(Debug, Default)]
pub struct Store {
    entries: HashMap<String, Entry>,
}

impl Store {
    /// Records `stage` for station `id` at `now` (Unix ms). A DISCOVER
    /// (`discover_from` is its client kind) may start a new boot. Returns
    /// milliseconds since the boot started, for the log line.
    pub fn record(
        &mut self,
        id: &str,
        hostname: Option<&str>,
        stage: Stage,
        detail: String,
        now: u64,
        discover_from: Option<ClientKind>,
    ) -> u64 {
        if !self.entries.contains_key(id) && self.entries.len() >= MAX_STATIONS {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.station.last_seen_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        let e = self
            .entries
            .entry(id.to_string())
            .or_insert_with(|| Entry::new(id, hostname.map(str::to_string)));
        let new_boot = match discover_from {
            Some(client) => e.discover_starts_boot(client, now),
            None => e.station.boot == 0,
        };
        if new_boot {
            e.station.boot = e.station.boot.saturating_add(1);
            e.station.boot_started_ms = now;
            e.reached.clear();
        }
        if stage == Stage::Error {
            e.station.errors = e.station.errors.saturating_add(1);
        }
        if !e.reached(stage) {
            e.reached.push((stage, now));
        }
        if stage != Stage::Error {
            e.station.stage = stage.name();
        }
        e.station.last_seen_ms = now;
        if e.events.len() >= MAX_EVENTS {
            e.events.pop_front();
        }
        e.events.push_back(Event {
            at_ms: now,
            boot: e.station.boot,
            stage: stage.name(),
            detail,
        });
        now.saturating_sub(e.station.boot_started_ms)
    }

    /// The station's address, once learned.
    pub fn set_ip(&mut self, id: &str, ip: String) {
        if let Some(e) = self.entries.get_mut(id) {
            e.station.ip = Some(ip);
        }
    }

    /// The station's iSCSI byte totals, for a connection to add to.
    pub fn io(&self, id: &str) -> Option<Arc<IoTotals>> {
        self.entries.get(id).map(|e| e.io.clone())
    }

    /// Whether the station's current boot has reached `stage`.
    pub fn has_reached(&self, id: &str, stage: Stage) -> bool {
        self.entries.get(id).is_some_and(|e| e.reached(stage))
    }

    /// Every station, most recently seen first.
    pub fn stations(&self) -> Vec<Station> {
        let mut out: Vec<Station> = self
            .entries
            .values()
            .map(|e| {
                let mut s = e.station.clone();
                s.events = e.events.iter().cloned().collect();
                s.stages = stage_times(&e.reached, s.boot_started_ms);
                s.bytes_read = e.io.read.load(Relaxed);
                s.bytes_written = e.io.written.load(Relaxed);
                s
            })
            .collect();
        out.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)));
        out
    }
}

/// Each stage's offset from the boot's start and the time until the next.
fn stage_times(reached: &[(Stage, u64)], started: u64) -> Vec<StageTime> {
    let mut out: Vec<StageTime> = Vec::with_capacity(reached.len());
    for (i, (stage, at)) in reached.iter().enumerate() {
        let next = reached.get(i + 1).map(|(_, t)| *t);
        out.push(StageTime {
            stage: stage.name(),
            at_ms: at.saturating_sub(started),
            took_ms: next.map(|n| n.saturating_sub(*at)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const MAC: &str = "52:54:00:e2:e0:01";

    fn boot(store: &mut Store, t0: u64) {
        let ipxe = Some(ClientKind::Ipxe);
        store.record(
            MAC,
            Some("st1"),
            Stage::DhcpDiscover,
            String::new(),
            t0,
            ipxe,
        );
        store.record(MAC, None, Stage::DhcpOffer, String::new(), t0 + 10, None);
        store.record(
            MAC,
            None,
            Stage::DhcpRequest,
            String::new(),
            t0 + 1000,
            None,
        );
        store.record(MAC, None, Stage::DhcpAck, String::new(), t0 + 1010, None);
        store.record(
            MAC,
            None,
            Stage::Script,
            "boot.ipxe".into(),
            t0 + 1100,
            None,
        );
        store.record(
            MAC,
            None,
            Stage::IscsiLogin,
            "CHAP ok".into(),
            t0 + 1200,
            None,
        );
        store.record(MAC, None, Stage::FirstRead, String::new(), t0 + 1250, None);
    }

    #[test]
    fn one_boot_has_its_stages_in_order_with_times() {
        let mut store = Store::default();
        boot(&mut store, 1_000_000);
        let s = &store.stations()[0];
        assert_eq!(s.id, MAC);
        assert_eq!(s.hostname.as_deref(), Some("st1"));
        assert_eq!(s.boot, 1);
        assert_eq!(s.stage, "first_read");
        let names: Vec<_> = s.stages.iter().map(|t| t.stage).collect();
        assert_eq!(
            names,
            [
                "dhcp_discover",
                "dhcp_offer",
                "dhcp_request",
                "dhcp_ack",
                "script",
                "iscsi_login",
                "first_read"
            ]
        );
        assert_eq!(s.stages[1].at_ms, 10);
        assert_eq!(s.stages[1].took_ms, Some(990));
        assert_eq!(s.stages[6].took_ms, None);
        assert_eq!(s.events[5].detail, "CHAP ok");
    }

    #[test]
    fn a_discover_after_login_is_a_new_boot_but_ipxe_after_pxe_is_not() {
        let mut store = Store::default();
        let pxe = Some(ClientKind::Pxe { arch: 0 });
        let t0 = 5_000_000;
        store.record(MAC, None, Stage::DhcpDiscover, String::new(), t0, pxe);
        store.record(
            MAC,
            None,
            Stage::BootFile,
            "undionly.kpxe".into(),
            t0 + 1,
            None,
        );
        // The chained iPXE asks again: the same boot.
        let ipxe = Some(ClientKind::Ipxe);
        store.record(MAC, None, Stage::DhcpDiscover, String::new(), t0 + 2, ipxe);
        assert_eq!(store.stations()[0].boot, 1);
        store.record(MAC, None, Stage::IscsiLogin, String::new(), t0 + 3, None);
        // Power cycle: the ROM asks again.
        store.record(
            MAC,
            None,
            Stage::DhcpDiscover,
            String::new(),
            t0 + 60_000,
            pxe,
        );
        let s = &store.stations()[0];
        assert_eq!(s.boot, 2);
        assert_eq!(s.boot_started_ms, t0 + 60_000);
        assert_eq!(s.stages.len(), 1, "{:?}", s.stages);
        // Events of the earlier boot stay (bounded), tagged with their boot.
        assert_eq!(s.events.len(), 5);
        assert_eq!(s.events[0].boot, 1);
        assert_eq!(s.events[4].boot, 2);
    }

    #[test]
    fn errors_count_but_do_not_replace_the_stage() {
        let mut store = Store::default();
        boot(&mut store, 0);
        store.record(
            MAC,
            None,
            Stage::Error,
            "TFTP x: not found".into(),
            2000,
            None,
        );
        let s = &store.stations()[0];
        assert_eq!((s.stage, s.errors), ("first_read", 1));
    }

    #[test]
    fn events_and_stations_are_bounded_oldest_dropped() {
        let mut store = Store::default();
        for i in 0..(MAX_EVENTS as u64 + 10) {
            store.record(MAC, None, Stage::FirstRead, format!("{i}"), i, None);
        }
        let s = &store.stations()[0];
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events[0].detail, "10");
        for i in 0..(MAX_STATIONS as u64 + 1) {
            store.record(
                &format!("st{i}"),
                None,
                Stage::DhcpAck,
                String::new(),
                1000 + i,
                None,
            );
        }
        let all = store.stations();
        assert_eq!(all.len(), MAX_STATIONS);
        // MAC was heard from longest ago, then st0: both gone.
        assert!(all.iter().all(|s| s.id != MAC));
        assert!(all.iter().any(|s| s.id == "st1"));
        assert_eq!(all[0].id, format!("st{MAX_STATIONS}"));
    }

    #[test]
    fn bytes_add_up_per_station() {
        let mut store = Store::default();
        boot(&mut store, 0);
        let io = store.io(MAC).unwrap();
        io.add(512, 0);
        io.add(1024, 4096);
        assert!(store.io("nobody").is_none());
        let s = &store.stations()[0];
        assert_eq!((s.bytes_read, s.bytes_written), (1536, 4096));
    }
}
