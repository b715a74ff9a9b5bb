//! What an administrator sees: each station's boot timeline, the sessions
//! and disks, and counters for Prometheus.
//!
//! The services call the small hook functions here (`dhcp_received`,
//! `fetch`, `iscsi_logged_in`, …) with values the core hands back; they do
//! nothing until [`init`] ran, so unit tests of a service need no status.
//! The timeline lives in [`store`], the counters in [`metrics`], the HTTP
//! side in [`web`], and `sanboot status` in [`cli`].

pub mod cli;
pub mod commands;
pub mod metrics;
pub mod store;
pub mod web;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sanboot_core::dhcp::{self, MessageType};
use sanboot_core::timeline::Stage;
use serde::Serialize;

use crate::config::{self, Config};
pub use metrics::FetchResult;

/// Everything the status page shows.
#[derive(Debug)]
pub struct Status {
    config: Arc<Config>,
    store: Mutex<store::Store>,
    /// The counters behind `/metrics`.
    pub metrics: metrics::Metrics,
    /// Addresses learned from DHCP replies: TFTP and iSCSI see only IPs.
    ip_to_mac: Mutex<HashMap<IpAddr, [u8; 6]>>,
    /// The config's hosts by the initiator name their script sets.
    initiators: HashMap<String, [u8; 6]>,
    hostnames: HashMap<[u8; 6], String>,
    sessions: Mutex<HashMap<u64, Session>>,
    started_ms: u64,
}

/// An iSCSI session in full feature phase.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The connection's number (sanboot's own).
    pub id: u64,
    /// InitiatorName.
    pub initiator: String,
    /// The target (`(discovery)` for SendTargets sessions).
    pub target: String,
    /// The station it belongs to (see [`store::Station::id`]).
    pub station: String,
    /// The initiator's address and port.
    pub peer: String,
    /// How it authenticated: `None`, `CHAP ok`, `CHAP (mutual) ok`.
    pub auth: String,
    /// Unix ms of the login.
    pub since_ms: u64,
}

/// One LUN's image file.
#[derive(Debug, Clone, Serialize)]
pub struct DiskInfo {
    /// Target IQN.
    pub target: String,
    /// LUN number.
    pub lun: u64,
    /// Image path.
    pub image: String,
    /// Size the initiator sees, bytes.
    pub size: u64,
    /// Space the image takes on the server's disk (allocated blocks), bytes.
    pub used: u64,
    /// Read-only LUN.
    pub read_only: bool,
}

/// The `/api/stations` document.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Unix ms now.
    pub now_ms: u64,
    /// Unix ms when sanboot started.
    pub started_ms: u64,
    /// Stations, most recently seen first.
    pub stations: Vec<store::Station>,
    /// Sessions in full feature phase.
    pub sessions: Vec<Session>,
    /// The LUNs' image files.
    pub disks: Vec<DiskInfo>,
}

static STATUS: OnceLock<Arc<Status>> = OnceLock::new();

/// Address → MAC entries kept (a DHCP flood must not grow memory).
const MAX_ADDRESSES: usize = 4096;

/// Starts recording (once per process; `sanboot serve` calls it).
pub fn init(config: Arc<Config>) -> Arc<Status> {
    STATUS.get_or_init(|| Arc::new(Status::new(config))).clone()
}

fn get() -> Option<&'static Status> {
    STATUS.get().map(|s| &**s)
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `52:54:00:e2:e0:01`.
pub fn mac_text(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

impl Status {
    /// A status with no stations yet; `config` maps initiator names and
    /// host names to MACs.
    pub fn new(config: Arc<Config>) -> Status {
        let mut initiators = HashMap::new();
        let mut hostnames = HashMap::new();
        let iqns = config::translate::initiators(&config).unwrap_or_default();
        for (host, iqn) in config.hosts.iter().zip(iqns.iter()) {
            let Ok(mac) = config::parse_mac(&host.mac) else {
                continue;
            };
            if !iqn.is_empty() {
                initiators.insert(iqn.to_ascii_lowercase(), mac);
            }
            if let Some(h) = &host.hostname {
                hostnames.insert(mac, h.clone());
            }
        }
        Status {
            config,
            store: Mutex::new(store::Store::default()),
            metrics: metrics::Metrics::default(),
            ip_to_mac: Mutex::new(HashMap::new()),
            initiators,
            hostnames,
            sessions: Mutex::new(HashMap::new()),
            started_ms: unix_ms(),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a stage for a station, counts it and logs one line.
    fn record(&self, mac: Option<[u8; 6]>, id: &str, stage: Stage, detail: String) {
        self.record_at(mac, id, stage, detail, None);
    }

    fn record_at(
        &self,
        mac: Option<[u8; 6]>,
        id: &str,
        stage: Stage,
        detail: String,
        discover_from: Option<dhcp::ClientKind>,
    ) {
        let hostname = mac.and_then(|m| self.hostnames.get(&m)).map(String::as_str);
        let since = self.store().record(
            id,
            hostname,
            stage,
            detail.clone(),
            unix_ms(),
            discover_from,
        );
        self.metrics.stage(stage);
        let secs = since as f64 / 1000.0;
        if stage == Stage::Error {
            tracing::warn!(station = %id, stage = stage.name(), "boot stage: {detail} (+{secs:.1} s)");
        } else {
            tracing::info!(station = %id, stage = stage.name(), "boot stage: {detail} (+{secs:.1} s)");
        }
    }

    /// Remembers which station has `ip`. Bounded: when full, the map
    /// starts over (DHCP traffic fills it again; until then TFTP and iSCSI
    /// peers show by address).
    fn learn_ip(&self, ip: std::net::Ipv4Addr, mac: [u8; 6]) {
        let mut map = self.ip_to_mac.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&IpAddr::V4(ip)) {
            map.clear();
        }
        map.insert(IpAddr::V4(ip), mac);
    }

    /// The station a peer address belongs to: its MAC if a DHCP reply
    /// showed it, else the address itself.
    fn station_of_ip(&self, ip: IpAddr) -> (Option<[u8; 6]>, String) {
        let mac = self
            .ip_to_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .copied();
        match mac {
            Some(m) => (Some(m), mac_text(m)),
            None => (None, ip.to_string()),
        }
    }

    /// The station of an iSCSI initiator: by the config's initiator names,
    /// else by its address.
    fn station_of_initiator(&self, initiator: &str, peer: IpAddr) -> (Option<[u8; 6]>, String) {
        match self.initiators.get(&initiator.to_ascii_lowercase()) {
            Some(&m) => (Some(m), mac_text(m)),
            None => self.station_of_ip(peer),
        }
    }

    /// Everything `/api/stations` shows.
    pub fn snapshot(&self) -> Snapshot {
        let mut sessions: Vec<Session> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        sessions.sort_by_key(|s| s.id);
        Snapshot {
            now_ms: unix_ms(),
            started_ms: self.started_ms,
            stations: self.store().stations(),
            sessions,
            disks: disks(&self.config),
        }
    }
}

/// The LUN images with their size and the space they use.
fn disks(config: &Config) -> Vec<DiskInfo> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for t in &config.targets {
        for l in &t.luns {
            let meta = std::fs::metadata(&l.image).ok();
            out.push(DiskInfo {
                target: t.iqn.clone(),
                lun: l.id,
                image: l.image.display().to_string(),
                size: meta.as_ref().map_or(0, |m| m.len()),
                used: meta.as_ref().map_or(0, |m| m.blocks() * 512),
                read_only: l.read_only,
            });
        }
    }
    out
}

// ---- hooks the services call -------------------------------------------

/// DHCP: a client message arrived (`handle_packet`'s answer).
pub fn dhcp_received(r: &dhcp::Received) {
    let Some(s) = get() else { return };
    s.metrics.dhcp(false, u8::from(r.message));
    // ProxyDHCP replies carry no address: the client's REQUEST to the
    // other server says which one it takes.
    if let Some(ip) = r.address.filter(|_| r.client != dhcp::ClientKind::Plain) {
        s.learn_ip(ip, r.mac);
    }
    if let Some(stage) = Stage::of_dhcp(r.message, r.client) {
        let discover = (r.message == MessageType::Discover).then_some(r.client);
        let via = if r.pxe_port { " on port 4011" } else { "" };
        let detail = format!("DHCP {}{via}", dhcp_name(r.message));
        s.record_at(Some(r.mac), &mac_text(r.mac), stage, detail, discover);
    }
}

/// DHCP: a reply went out.
pub fn dhcp_sent(t: &dhcp::Transmit<'_>) {
    let Some(s) = get() else { return };
    s.metrics.dhcp(true, u8::from(t.message));
    // The station's address: what we gave it, or where we sent to.
    let ip = if !t.yiaddr.is_unspecified() {
        Some(t.yiaddr)
    } else if !t.dst.ip().is_broadcast() && !t.dst.ip().is_unspecified() {
        Some(*t.dst.ip())
    } else {
        None
    };
    let id = mac_text(t.mac);
    if let Some(ip) = ip {
        s.learn_ip(ip, t.mac);
    }
    if let Some(stage) = Stage::of_dhcp(t.message, t.client) {
        let proto = if t.proxy { "ProxyDHCP" } else { "DHCP" };
        let file = t.file.map(|f| format!(" file={f}")).unwrap_or_default();
        let addr = ip.map(|i| format!(" {i}")).unwrap_or_default();
        let detail = format!("{proto} {}{addr}{file}", dhcp_name(t.message));
        s.record(Some(t.mac), &id, stage, detail);
        if let Some(ip) = ip {
            s.store().set_ip(&id, ip.to_string());
        }
    }
}

/// DHCP: how many leases are bound now.
pub fn dhcp_leases(bound: usize) {
    if let Some(s) = get() {
        s.metrics.set_leases(bound);
    }
}

fn dhcp_name(m: MessageType) -> &'static str {
    match m {
        MessageType::Discover => "DISCOVER",
        MessageType::Offer => "OFFER",
        MessageType::Request => "REQUEST",
        MessageType::Ack => "ACK",
        MessageType::Nak => "NAK",
        MessageType::Decline => "DECLINE",
        MessageType::Release => "RELEASE",
        MessageType::Inform => "INFORM",
        _ => "message",
    }
}

/// How a boot file or script was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// TFTP.
    Tftp,
    /// HTTP (the HTTP boot service calls [`fetch`] with this).
    Http,
}

/// One fetch of a boot file or script, as it ended.
#[derive(Debug, Clone)]
pub struct Fetch<'a> {
    /// TFTP or HTTP.
    pub via: Via,
    /// The client's address.
    pub client: IpAddr,
    /// The path asked for.
    pub path: &'a str,
    /// A generated iPXE script (or any `.ipxe` file) rather than a binary.
    pub script: bool,
    /// Bytes the client received.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
    /// How it ended.
    pub ended: Ended,
}

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every byte delivered.
    Complete,
    /// Refused before any byte went out (not found, busy): why.
    Refused(String),
    /// The client ended it (TFTP ERROR, HTTP connection closed): why.
    /// Before any data this is a PXE ROM asking only for the size (EDK2
    /// does, then asks again), not a failure.
    ByClient(String),
    /// It broke (timeout, read error): why.
    Failed(String),
}

/// TFTP or HTTP: a boot file or script transfer ended (or was refused).
/// The HTTP boot service calls this once per request it answers.
pub fn fetch(f: Fetch<'_>) {
    let Some(s) = get() else { return };
    let probe = matches!(f.ended, Ended::ByClient(_)) && f.bytes == 0;
    let result = match &f.ended {
        Ended::Complete => FetchResult::Complete,
        Ended::Refused(_) => FetchResult::Refused,
        Ended::ByClient(_) if probe => FetchResult::Probe,
        Ended::ByClient(_) | Ended::Failed(_) => FetchResult::Failed,
    };
    s.metrics
        .fetch(f.via == Via::Http, f.script, result, f.bytes);
    let (mac, id) = s.station_of_ip(f.client);
    let proto = match f.via {
        Via::Tftp => "TFTP",
        Via::Http => "HTTP",
    };
    match &f.ended {
        Ended::Complete => {
            let stage = if f.script {
                Stage::Script
            } else {
                Stage::BootFile
            };
            let detail = format!(
                "{proto} {} ({} bytes in {} ms)",
                f.path,
                f.bytes,
                f.took.as_millis()
            );
            s.record(mac, &id, stage, detail);
        }
        // The size probe is no step of the boot.
        Ended::ByClient(_) if probe => {}
        Ended::Refused(why) | Ended::ByClient(why) | Ended::Failed(why) => {
            s.record(mac, &id, Stage::Error, format!("{proto} {}: {why}", f.path))
        }
    }
}

/// iSCSI: a session reached full feature phase. Returns the station id the
/// connection reports under and the station's byte totals it adds to.
pub fn iscsi_logged_in(
    conn: u64,
    initiator: &str,
    target: Option<&str>,
    peer: SocketAddr,
    auth: &str,
) -> Option<(String, Arc<store::IoTotals>)> {
    let s = get()?;
    s.metrics.session(1);
    let (mac, id) = s.station_of_initiator(initiator, peer.ip());
    let tname = target.unwrap_or("(discovery)");
    s.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(
        conn,
        Session {
            id: conn,
            initiator: initiator.to_string(),
            target: tname.to_string(),
            station: id.clone(),
            peer: peer.to_string(),
            auth: auth.to_string(),
            since_ms: unix_ms(),
        },
    );
    if target.is_some() {
        // The firmware's login comes first in a boot; a later one is the
        // OS's own initiator (an initramfs) taking over the disk.
        let stage = if s.store().has_reached(&id, Stage::IscsiLogin) {
            Stage::OsLogin
        } else {
            Stage::IscsiLogin
        };
        let detail = format!("iSCSI login {initiator} to {tname}, auth {auth}");
        s.record(mac, &id, stage, detail);
    }
    // A discovery session of an unknown station has no entry yet.
    let io = s.store().io(&id)?;
    Some((id, io))
}

/// iSCSI: a login was refused or failed (`chap`: CHAP did not verify).
pub fn iscsi_login_failed(initiator: &str, peer: SocketAddr, why: &str, chap: bool) {
    let Some(s) = get() else { return };
    s.metrics.login_failed(chap);
    let (mac, id) = s.station_of_initiator(initiator, peer.ip());
    let detail = format!("iSCSI login of {initiator} failed: {why}");
    s.record(mac, &id, Stage::Error, detail);
}

/// iSCSI: the first READ of a session.
pub fn iscsi_first_read(station: &str, offset: u64, len: u32) {
    let Some(s) = get() else { return };
    let detail = format!("first READ: {len} bytes at {offset}");
    s.record(None, station, Stage::FirstRead, detail);
}

/// iSCSI: the connection `conn` ended (it was logged in if it reported).
pub fn iscsi_session_ended(conn: u64) {
    let Some(s) = get() else { return };
    let was = s
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&conn);
    if was.is_some() {
        s.metrics.session(-1);
    }
}

/// The counters, for the command path (`None` before [`init`]).
pub fn metrics() -> Option<&'static metrics::Metrics> {
    get().map(|s| &s.metrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status() -> Status {
        let config: Config = toml::from_str(
            r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [[host]]
            mac = "52-54-00-E2-E0-01"
            hostname = "pc1"
            target = "iqn.2024-01.test:disk"
            "#,
        )
        .unwrap();
        Status::new(Arc::new(config))
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 1];

    #[test]
    fn an_initiator_name_from_the_config_finds_its_station() {
        let s = status();
        let peer: IpAddr = "192.0.2.77".parse().unwrap();
        // The name the host's script sets (default template), any case.
        let (mac, id) = s.station_of_initiator("IQN.2010-04.org.ipxe:pc1-52-54-00-e2-e0-01", peer);
        assert_eq!((mac, id.as_str()), (Some(MAC), "52:54:00:e2:e0:01"));
        // Anyone else is shown by address until DHCP told us its MAC.
        let (mac, id) = s.station_of_initiator("iqn.1993-08.org.debian:01:abc", peer);
        assert_eq!((mac, id.as_str()), (None, "192.0.2.77"));
        s.learn_ip("192.0.2.77".parse().unwrap(), MAC);
        let (mac, _) = s.station_of_initiator("iqn.1993-08.org.debian:01:abc", peer);
        assert_eq!(mac, Some(MAC));
    }

    #[test]
    fn the_address_map_is_bounded() {
        let s = status();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            s.learn_ip(std::net::Ipv4Addr::from(0x0a00_0000 + i), MAC);
        }
        let n = s.ip_to_mac.lock().unwrap().len();
        assert!(n <= MAX_ADDRESSES, "{n}");
    }
}
