//! DHCP / ProxyDHCP service: binds `sanboot_core::dhcp::Server` to UDP
//! sockets on one interface and keeps the lease file.
//!
//! The server runs on its own thread with a current-thread tokio runtime:
//! its lease table is a few MiB (a const-generic array), more than a tokio
//! worker stack holds, and one thread owning the machine needs no locking.
//!
//! Leases are written to `<state_dir>/leases` by writing `leases.tmp`,
//! fsyncing it, renaming it over the old file and fsyncing the directory,
//! at most once per [`PERSIST_INTERVAL`] when something changed and once
//! more on stop; the write runs on the blocking pool so the packet loop
//! never waits for the disk.
//! Times in the file are Unix milliseconds, which is also the core's clock.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use sanboot_core::dhcp::{
    self, server::PXE_PORT, server::SERVER_PORT, BootChoice, ClientKind, Lease, LeaseState,
    MessageType, Mode, Transmit,
};
use sanboot_core::time::Instant;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::stations::Stations;
use crate::config::{translate, Config, DhcpMode};

mod probe;

/// Lease slots (reservations included). Each slot costs 32 bytes.
pub const LEASE_SLOTS: usize = 65536;
/// Shortest time between two lease file writes.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const THREAD_STACK: usize = 64 << 20;
const LEASE_FILE: &str = "leases";
/// How often renew-only mode is repeated in the log.
const RENEW_ONLY_WARN_EVERY: Duration = Duration::from_secs(60);

/// Addresses probed at once before an offer (full mode); more new clients
/// at the same moment get their offer on a retransmission.
pub const PROBE_SLOTS: usize = 128;

type Server<'a> = dhcp::Server<'a, LEASE_SLOTS, PROBE_SLOTS>;

/// Runs the DHCP service until `stop` turns true.
pub async fn run(
    config: Arc<Config>,
    stations: Arc<Stations>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    if config.dhcp.mode == DhcpMode::Off {
        let _ = stop.wait_for(|s| *s).await;
        return Ok(());
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dhcp".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("dhcp runtime")
                .and_then(|rt| rt.block_on(serve(config, stations, stop)));
            let _ = done_tx.send(result);
        })
        .context("cannot start the dhcp thread")?;
    done_rx.await.context("dhcp thread died")?
}

/// The core's clock: Unix time in milliseconds.
fn now() -> Instant {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Instant::from_millis(ms)
}

/// The lease hash key: differs per start so clients cannot aim at a bucket.
fn hash_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now().millis());
    h.finish()
}

fn bind_udp(port: u16, interface: &str) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("SO_BINDTODEVICE {interface} (needs CAP_NET_RAW)"))?;
    // A burst of DISCOVERs must queue in the kernel, not be dropped there.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind UDP {addr} on {interface}"))?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Builds the core server for `config`: its hosts and options. Also how a
/// reload is checked (the table is built and dropped; this thread's stack
/// holds two).
fn build_check(config: &Config, seed: u64) -> Result<()> {
    let hosts = translate::dhcp_hosts(config)?;
    let core = translate::dhcp_config(config, &hosts, seed)
        .context("[dhcp] mode = \"off\": no DHCP server to run")?;
    Server::new(core).map_err(|e| anyhow::anyhow!("[dhcp]: {e:?}"))?;
    Ok(())
}

/// What ends one configuration's run of the packet loop.
enum Next {
    Stop,
    /// A reload already checked: rebuild with it, then answer.
    Reload(Arc<Config>, tokio::sync::oneshot::Sender<Result<()>>),
}

async fn serve(
    config: Arc<Config>,
    stations: Arc<Stations>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let Some(interface) = config.server.interface.clone() else {
        bail!("[server] interface is required for DHCP");
    };
    let interface = interface.as_str();
    let seed = hash_seed();
    let mut reloads = crate::reload::register_dhcp();
    let state_dir = config.server.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state_dir {}", state_dir.display()))?;
    let lease_path = state_dir.join(LEASE_FILE);
    let full = config.dhcp.mode == DhcpMode::Full;

    let main = bind_udp(config.dhcp.port, interface)?;
    let pxe = if config.dhcp.mode == DhcpMode::Proxy && config.dhcp.pxe_port {
        Some(bind_udp(PXE_PORT, interface)?)
    } else {
        None
    };
    info!(
        mode = ?config.dhcp.mode,
        interface,
        port = config.dhcp.port,
        pxe_port = pxe.is_some(),
        "DHCP listening"
    );

    // Full mode probes addresses nobody renewed before offering them.
    let mut prober = match full.then(|| probe::Prober::new(interface)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            warn!(
                interface,
                "address probes off (raw ICMP socket: {e}): new addresses are offered unprobed"
            );
            None
        }
        None => None,
    };
    let mut persister = Persister::new(lease_path.clone(), 0);
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; 1500];
    let mut tick = tokio::time::interval(PERSIST_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // One pass per configuration: a reload rebuilds the server (hosts,
    // pool, options) around the same sockets and carries the leases over.
    let mut config = config;
    let mut carried: Option<(Vec<Lease>, Option<Instant>, dhcp::Stats)> = None;
    let mut renew_warned = None;
    loop {
        let hosts = translate::dhcp_hosts(&config)?;
        let mut core = translate::dhcp_config(&config, &hosts, seed)
            .context("[dhcp] mode = \"off\": no DHCP server to run")?;
        core.probe = prober.is_some() && config.dhcp.probe;
        let mut server = Server::new(core).map_err(|e| anyhow::anyhow!("[dhcp]: {e:?}"))?;
        match carried.take() {
            None if full => {
                load_leases(&mut server, &lease_path);
                // A station booted before a restart still has its lease.
                for l in server.leases(now()) {
                    stations.record(l.mac, l.ip);
                }
            }
            None => {}
            Some((leases, renew_only, stats)) => {
                server.set_renew_only(renew_only);
                server.carry_stats(stats);
                let t = now();
                for l in leases {
                    if let Err(e) = server.load_lease(t, l) {
                        warn!(mac = %Mac(l.mac), ip = %l.ip, "lease dropped by the reload: {e:?}");
                    }
                }
            }
        }
        // A rebuilt table counts generations afresh: write it once.
        persister.written = server.generation().wrapping_sub(1);

        let next = loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break Next::Stop;
                    }
                }
                Some((new, reply)) = async { match reloads.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    match build_check(&new, seed) {
                        Ok(()) => break Next::Reload(new, reply),
                        Err(e) => { let _ = reply.send(Err(e)); }
                    }
                }
                // Before the sockets: under a flood they are always ready, and
                // `biased` would otherwise starve the lease file.
                _ = tick.tick() => {
                    server.handle_timeout(now());
                    persister.maybe_write(&server, false).await;
                    crate::status::dhcp_leases(server.leases(now()).count());
                    warn_renew_only(&server, &mut renew_warned);
                }
                (ip, result) = async { match prober.as_mut() { Some(p) => p.next().await, None => std::future::pending().await } } => {
                    if result == dhcp::ProbeResult::InUse {
                        warn!(%ip, "DHCP probe: the address answers, someone uses it: declined, offering another");
                    }
                    let t = now();
                    server.handle_probe(t, ip, result);
                    while let Some(out) = server.poll_transmit(t, &mut tx) {
                        if let Some(payload) = tx.get(..out.len) {
                            send(&main, payload, out.dst).await;
                            log_reply(&out);
                            crate::status::dhcp_sent(&out);
                        }
                    }
                    start_probes(&mut server, prober.as_mut());
                }
                r = async { match &pxe { Some(s) => s.readable().await, None => std::future::pending().await } } => {
                    r?;
                    if let Some(s) = &pxe {
                        drain(&mut server, &stations, s, Some(&main), PXE_PORT, &mut rx, &mut tx).await;
                    }
                }
                r = main.readable() => {
                    r?;
                    drain(&mut server, &stations, &main, pxe.as_ref(), SERVER_PORT, &mut rx, &mut tx).await;
                    start_probes(&mut server, prober.as_mut());
                }
            }
        };
        match next {
            Next::Reload(new, reply) => {
                server.handle_timeout(now());
                carried = Some((
                    server.leases(now()).collect(),
                    server.renew_only(now()),
                    *server.stats(),
                ));
                drop(server);
                config = new;
                info!(
                    hosts = config.hosts.len(),
                    "DHCP: configuration reloaded, leases kept"
                );
                let _ = reply.send(Ok(()));
            }
            Next::Stop => {
                server.handle_timeout(now());
                persister.maybe_write(&server, true).await;
                log_stats(server.stats());
                return Ok(());
            }
        }
    }
}

/// Hands the probes the server asked for to the prober.
fn start_probes(server: &mut Server<'_>, prober: Option<&mut probe::Prober>) {
    let Some(prober) = prober else { return };
    while let Some(ip) = server.poll_probe() {
        debug!(%ip, "DHCP probe");
        prober.start(ip);
    }
}

fn log_stats(s: &dhcp::Stats) {
    info!(
        received = s.received,
        offers = s.offers,
        acks = s.acks,
        naks = s.naks,
        proxy_offers = s.proxy_offers,
        proxy_acks = s.proxy_acks,
        ignored = s.ignored,
        dropped = s.malformed + s.not_ethernet + s.not_request + s.no_message_type,
        pool_exhausted = s.pool_exhausted,
        renew_only_silent = s.renew_only_silent,
        probes = s.probes,
        probe_in_use = s.probe_in_use,
        probe_refused = s.probe_refused,
        "DHCP stopped"
    );
}

/// Handles every datagram already queued on `sock` (received on `local_port`),
/// then returns to the select loop. `other` is the socket of the other port,
/// for replies that must leave from it.
async fn drain(
    server: &mut Server<'_>,
    stations: &Stations,
    sock: &UdpSocket,
    other: Option<&UdpSocket>,
    local_port: u16,
    rx: &mut [u8],
    tx: &mut [u8],
) {
    // Bounded, so the persist tick and stop still get their turn under load.
    for _ in 0..256 {
        let (n, from) = match sock.try_recv_from(rx) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                debug!("dhcp recv: {e}");
                return;
            }
        };
        let SocketAddr::V4(from) = from else { continue };
        let Some(bytes) = rx.get(..n) else { continue };
        let t = now();
        if let Some(received) = server.handle_packet(t, from, local_port, bytes) {
            crate::status::dhcp_received(&received);
        }
        while let Some(out) = server.poll_transmit(t, tx) {
            let via = if out.src_port == local_port {
                sock
            } else {
                other.unwrap_or(sock)
            };
            let Some(payload) = tx.get(..out.len) else {
                continue;
            };
            send(via, payload, out.dst).await;
            log_reply(&out);
            crate::status::dhcp_sent(&out);
        }
        // The address the station takes: who may read its secret script.
        if let Some((mac, ip)) = server.poll_station() {
            stations.record(mac, ip);
        }
    }
}

async fn send(sock: &UdpSocket, payload: &[u8], dst: SocketAddrV4) {
    let dst = SocketAddr::V4(dst);
    let result = match sock.try_send_to(payload, dst) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => sock.send_to(payload, dst).await,
        other => other,
    };
    if let Err(e) = result {
        warn!(%dst, "dhcp send: {e}");
    }
}

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

struct Kind(ClientKind);

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ClientKind::Ipxe => f.write_str("iPXE"),
            ClientKind::Pxe { arch } => write!(f, "PXE arch {arch}"),
            ClientKind::Http { arch } => write!(f, "HTTP boot arch {arch}"),
            ClientKind::Plain => f.write_str("no PXE"),
        }
    }
}

fn message_name(m: MessageType) -> &'static str {
    match m {
        MessageType::Offer => "OFFER",
        MessageType::Ack => "ACK",
        MessageType::Nak => "NAK",
        _ => "reply",
    }
}

/// One line per boot step per MAC; plain DHCP clients (no boot intent)
/// only at debug, so a load test does not turn into a logging test.
fn log_reply(t: &Transmit<'_>) {
    let proto = if t.proxy { "ProxyDHCP" } else { "DHCP" };
    let msg = message_name(t.message);
    // As the client got it: a name on TFTP, or a URL on our HTTP server.
    let file = t
        .boot_file
        .map_or_else(|| "-".to_string(), |f| f.to_string());
    let how = match t.choice {
        Some(BootChoice::Host) => ", host override",
        _ => "",
    };
    if t.client == ClientKind::Plain {
        debug!(mac = %Mac(t.mac), "{proto} {msg} {} to {}", t.yiaddr, t.dst);
    } else if t.proxy {
        info!(mac = %Mac(t.mac), "{proto} {msg} file={file} ({}{how}) to {}", Kind(t.client), t.dst);
    } else {
        info!(mac = %Mac(t.mac), "{proto} {msg} {} file={file} ({}{how})", t.yiaddr, Kind(t.client));
    }
}

const HEADER: &str = "# sanboot DHCP leases: mac ip expires(unix ms)";
const RENEW_ONLY: &str = "# renew-only-until ";

/// Lease file: the header, then one `mac ip expires_unix_ms` line per
/// bound lease; while the server is in renew-only mode, a marker line with
/// its end, so a restart in that period keeps it.
fn format_leases(leases: &[Lease], renew_only: Option<Instant>) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(leases.len() * 48 + 96);
    s.push_str(HEADER);
    s.push('\n');
    if let Some(until) = renew_only {
        let _ = writeln!(s, "{RENEW_ONLY}{}", until.millis());
    }
    for l in leases {
        let _ = writeln!(s, "{} {} {}", Mac(l.mac), l.ip, l.expires.millis());
    }
    s
}

fn parse_lease_line(line: &str) -> Option<Lease> {
    let mut it = line.split_ascii_whitespace();
    let mac = crate::config::parse_mac(it.next()?).ok()?;
    let ip: Ipv4Addr = it.next()?.parse().ok()?;
    let expires: u64 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(Lease {
        mac,
        ip,
        expires: Instant::from_millis(expires),
        state: LeaseState::Bound,
    })
}

/// What a lease file held.
#[derive(Debug, Default, PartialEq)]
struct LeaseFile {
    leases: Vec<Lease>,
    /// A renew-only period the last run was in.
    renew_only: Option<Instant>,
    /// Why the file cannot be trusted to list every lease (`None`: it can).
    corrupt: Option<String>,
}

/// Parses a lease file. A missing header (an empty or truncated file) or a
/// line that does not parse makes it corrupt; the lines that parse are
/// still returned.
fn parse_lease_file(text: &str) -> LeaseFile {
    let mut out = LeaseFile::default();
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        out.corrupt = Some("no header line (empty, truncated or not a sanboot lease file)".into());
    }
    let mut bad = 0usize;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(ms) = line.strip_prefix(RENEW_ONLY) {
            match ms.trim().parse() {
                Ok(ms) => out.renew_only = Some(Instant::from_millis(ms)),
                Err(_) => bad += 1,
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            match parse_lease_line(line) {
                Some(l) => out.leases.push(l),
                None => bad += 1,
            }
        }
    }
    if bad > 0 && out.corrupt.is_none() {
        out.corrupt = Some(format!("{bad} lines do not parse"));
    }
    out
}

/// Loads the lease file into `server`. A corrupt or unreadable file never
/// leaves the table silently empty: it is kept aside as
/// `leases.corrupt-<unix seconds>`, whatever parsed is loaded, and the
/// server runs renew-only for one lease time (see
/// `sanboot_core::dhcp::Server::set_renew_only`).
fn load_leases(server: &mut Server<'_>, path: &Path) {
    let t = now();
    let file = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_lease_file(&text),
            Err(e) => {
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                LeaseFile {
                    corrupt: Some("not UTF-8".into()),
                    ..parse_lease_file(&text)
                }
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => LeaseFile {
            corrupt: Some(format!("cannot read it: {e}")),
            ..LeaseFile::default()
        },
    };
    let (mut loaded, mut skipped) = (0usize, 0usize);
    for l in &file.leases {
        match server.load_lease(t, *l) {
            Ok(()) => loaded += 1,
            Err(_) => skipped += 1,
        }
    }
    info!(path = %path.display(), loaded, skipped, "DHCP leases loaded (expired or conflicting ones skipped)");
    let lease_time = Duration::from_secs(u64::from(server.config().lease_secs));
    let until = match &file.corrupt {
        Some(why) => {
            let aside = path.with_file_name(format!("{LEASE_FILE}.corrupt-{}", t.millis() / 1000));
            let kept = match std::fs::rename(path, &aside) {
                Ok(()) => format!("kept aside as {}", aside.display()),
                Err(e) => format!("could not be moved aside ({e})"),
            };
            error!(
                path = %path.display(),
                "DHCP LEASE FILE CORRUPT: {why}; it was {kept}. Leases it held may be lost: \
                 answering only renewals and reservations, no new offers, for one lease time ({} s)",
                lease_time.as_secs()
            );
            Some(t + sanboot_core::time::Duration::from_millis(lease_time.as_millis() as u64))
        }
        None => file.renew_only,
    };
    server.set_renew_only(until);
}

/// While renew-only lasts, says so now and then (a new station that gets no
/// address should find the reason in the log).
fn warn_renew_only(server: &Server<'_>, last: &mut Option<std::time::Instant>) {
    let Some(until) = server.renew_only(now()) else {
        return;
    };
    if last.is_some_and(|l| l.elapsed() < RENEW_ONLY_WARN_EVERY) {
        return;
    }
    *last = Some(std::time::Instant::now());
    warn!(
        remaining_secs = until.millis().saturating_sub(now().millis()) / 1000,
        unanswered_discovers = server.stats().renew_only_silent,
        "DHCP renew-only (lease file was corrupt): no new offers until every old lease was renewed or expired"
    );
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the lease file when the lease generation moved, at most once per
/// tick, one write at a time, off the packet loop.
struct Persister {
    path: PathBuf,
    written: u64,
    inflight: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Persister {
    fn new(path: PathBuf, generation: u64) -> Self {
        Persister {
            path,
            written: generation,
            inflight: None,
        }
    }

    async fn maybe_write(&mut self, server: &Server<'_>, final_write: bool) {
        if let Some(h) = &self.inflight {
            if !h.is_finished() && !final_write {
                return;
            }
        }
        if let Some(h) = self.inflight.take() {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(path = %self.path.display(), "lease file write failed: {e}"),
                Err(e) => warn!("lease writer: {e}"),
            }
        }
        let generation = server.generation();
        if generation == self.written || server.config().mode != Mode::Full {
            return;
        }
        let leases: Vec<Lease> = server.leases(now()).collect();
        let renew_only = server.renew_only(now());
        self.written = generation;
        let path = self.path.clone();
        let job = tokio::task::spawn_blocking(move || {
            write_atomically(&path, &format_leases(&leases, renew_only))
        });
        if final_write {
            match job.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(path = %self.path.display(), "lease file write failed: {e}"),
                Err(e) => warn!("lease writer: {e}"),
            }
        } else {
            self.inflight = Some(job);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn lease_file_round_trip() {
        let leases = [Lease {
            mac: [0x52, 0x54, 0, 0xe2, 0xe0, 1],
            ip: Ipv4Addr::new(192, 0, 2, 100),
            expires: Instant::from_millis(1_700_000_000_000),
            state: LeaseState::Bound,
        }];
        let text = format_leases(&leases, None);
        let back = parse_lease_file(&text);
        assert_eq!(back.leases, leases);
        assert_eq!(back.corrupt, None);
        assert_eq!(back.renew_only, None);
        let until = Instant::from_millis(1_700_000_600_000);
        let back = parse_lease_file(&format_leases(&leases, Some(until)));
        assert_eq!(
            (back.leases.as_slice(), back.renew_only),
            (&leases[..], Some(until))
        );
        assert!(parse_lease_line("zz 1.2.3.4 5").is_none());
        assert!(parse_lease_line("52:54:00:e2:e0:01 1.2.3 5").is_none());
    }

    #[test]
    fn corrupt_lease_files_are_recognised() {
        let good = "52:54:00:e2:e0:01 192.0.2.100 1700000000000\n";
        assert!(parse_lease_file("").corrupt.is_some(), "empty");
        assert!(parse_lease_file(good).corrupt.is_some(), "no header");
        let torn = format!("{HEADER}\n{good}52:54:00:e2:e0:02 192.0.2.1");
        let f = parse_lease_file(&torn);
        assert!(f.corrupt.is_some(), "torn last line");
        assert_eq!(f.leases.len(), 1, "what parses is kept");
        assert!(parse_lease_file(&format!("{HEADER}\n{good}"))
            .corrupt
            .is_none());
    }

    /// A corrupt file is moved aside (never overwritten by the next write)
    /// and the server goes renew-only for one lease time.
    #[test]
    fn corrupt_lease_file_is_kept_aside_and_renew_only_starts() {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(|| {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(LEASE_FILE);
                std::fs::write(&path, "garbage\x00\x01").unwrap();
                let mut c =
                    sanboot_core::dhcp::Config::new(Mode::Full, Ipv4Addr::new(192, 0, 2, 1));
                c.pool = Some((Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)));
                c.lease_secs = 600;
                let mut server = Server::new(c).unwrap();
                load_leases(&mut server, &path);
                let until = server.renew_only(now()).expect("renew-only");
                let left = until.millis() - now().millis();
                assert!((590_000..=600_000).contains(&left), "{left}");
                assert!(!path.exists());
                let aside: Vec<_> = std::fs::read_dir(dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                assert_eq!(aside.len(), 1);
                assert!(aside[0].starts_with("leases.corrupt-"), "{aside:?}");
                assert_eq!(
                    std::fs::read(dir.path().join(&aside[0])).unwrap(),
                    b"garbage\x00\x01"
                );
                // A missing file is a fresh start, not a corruption.
                let mut server = Server::new(c).unwrap();
                load_leases(&mut server, &path);
                assert!(server.renew_only(now()).is_none());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEASE_FILE);
        write_atomically(&path, "a\n").unwrap();
        write_atomically(&path, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert!(!path.with_extension("tmp").exists());
    }
}
