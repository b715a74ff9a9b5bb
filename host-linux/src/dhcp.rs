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
use tracing::{debug, info, warn};

use crate::config::{translate, Config, DhcpMode};

/// Lease slots (reservations included). Each slot costs 32 bytes.
pub const LEASE_SLOTS: usize = 65536;
/// Shortest time between two lease file writes.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const THREAD_STACK: usize = 64 << 20;
const LEASE_FILE: &str = "leases";

type Server<'a> = dhcp::Server<'a, LEASE_SLOTS>;

/// Runs the DHCP service until `stop` turns true.
pub async fn run(config: Arc<Config>, mut stop: watch::Receiver<bool>) -> Result<()> {
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
                .and_then(|rt| rt.block_on(serve(config, stop)));
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

async fn serve(config: Arc<Config>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let Some(interface) = config.server.interface.as_deref() else {
        bail!("[server] interface is required for DHCP");
    };
    let hosts = translate::dhcp_hosts(&config)?;
    let core = translate::dhcp_config(&config, &hosts, hash_seed())
        .context("[dhcp] mode = \"off\": no DHCP server to run")?;
    let mut server = Server::new(core).map_err(|e| anyhow::anyhow!("[dhcp]: {e:?}"))?;

    let state_dir = config.server.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state_dir {}", state_dir.display()))?;
    let lease_path = state_dir.join(LEASE_FILE);
    if server.config().mode == Mode::Full {
        load_leases(&mut server, &lease_path);
    }

    let main = bind_udp(config.dhcp.port, interface)?;
    let pxe = if core.mode == Mode::Proxy && config.dhcp.pxe_port {
        Some(bind_udp(PXE_PORT, interface)?)
    } else {
        None
    };
    info!(
        mode = ?core.mode,
        interface,
        port = config.dhcp.port,
        pxe_port = pxe.is_some(),
        "DHCP listening"
    );

    let mut persister = Persister::new(lease_path, server.generation());
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; 1500];
    let mut tick = tokio::time::interval(PERSIST_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            // Before the sockets: under a flood they are always ready, and
            // `biased` would otherwise starve the lease file.
            _ = tick.tick() => {
                server.handle_timeout(now());
                persister.maybe_write(&server, false).await;
                crate::status::dhcp_leases(server.leases(now()).count());
            }
            r = async { match &pxe { Some(s) => s.readable().await, None => std::future::pending().await } } => {
                r?;
                if let Some(s) = &pxe {
                    drain(&mut server, s, Some(&main), PXE_PORT, &mut rx, &mut tx).await;
                }
            }
            r = main.readable() => {
                r?;
                drain(&mut server, &main, pxe.as_ref(), SERVER_PORT, &mut rx, &mut tx).await;
            }
        }
    }
    server.handle_timeout(now());
    persister.maybe_write(&server, true).await;
    let s = server.stats();
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
        "DHCP stopped"
    );
    Ok(())
}

/// Handles every datagram already queued on `sock` (received on `local_port`),
/// then returns to the select loop. `other` is the socket of the other port,
/// for replies that must leave from it.
async fn drain(
    server: &mut Server<'_>,
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
    let file = t.file.unwrap_or("-");
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

/// Lease file: one `mac ip expires_unix_ms` line per bound lease.
fn format_leases(leases: &[Lease]) -> String {
    let mut s = String::with_capacity(leases.len() * 48 + 64);
    s.push_str("# sanboot DHCP leases: mac ip expires(unix ms)\n");
    for l in leases {
        use std::fmt::Write as _;
        let _ = writeln!(s, "{} {} {}", Mac(l.mac), l.ip, l.expires.millis());
    }
    s
}

fn parse_lease_line(line: &str) -> Option<Lease> {
    let mut it = line.split_ascii_whitespace();
    let mac = crate::config::parse_mac(it.next()?).ok()?;
    let ip: Ipv4Addr = it.next()?.parse().ok()?;
    let expires: u64 = it.next()?.parse().ok()?;
    Some(Lease {
        mac,
        ip,
        expires: Instant::from_millis(expires),
        state: LeaseState::Bound,
    })
}

fn load_leases(server: &mut Server<'_>, path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => {
            warn!(path = %path.display(), "cannot read lease file: {e}");
            return;
        }
    };
    let t = now();
    let (mut loaded, mut skipped) = (0usize, 0usize);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_lease_line(line).map(|l| server.load_lease(t, l)) {
            Some(Ok(())) => loaded += 1,
            _ => skipped += 1,
        }
    }
    info!(path = %path.display(), loaded, skipped, "DHCP leases loaded (expired or conflicting ones skipped)");
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
        self.written = generation;
        let path = self.path.clone();
        let job =
            tokio::task::spawn_blocking(move || write_atomically(&path, &format_leases(&leases)));
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn lease_file_round_trip() {
        let leases = [Lease {
            mac: [0x52, 0x54, 0, 0xe2, 0xe0, 1],
            ip: Ipv4Addr::new(192, 0, 2, 100),
            expires: Instant::from_millis(1_700_000_000_000),
            state: LeaseState::Bound,
        }];
        let text = format_leases(&leases);
        let back: Vec<Lease> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_lease_line)
            .collect();
        assert_eq!(back, leases);
        assert!(parse_lease_line("zz 1.2.3.4 5").is_none());
        assert!(parse_lease_line("52:54:00:e2:e0:01 1.2.3 5").is_none());
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
