//! The TFTP service: `sanboot_core::tftp` bound to tokio UDP sockets and files.
//!
//! One task reads the listening socket and feeds the core [`Listener`]. Each
//! accepted read request gets its own task and its own UDP socket (a fresh
//! ephemeral port, the server's transfer ID) connected to the client, so the
//! kernel drops datagrams from any other source for us. File bytes are read
//! with `pread` into a read-ahead buffer and copied from there straight into
//! the DATA datagram; generated scripts (`sanboot_config::script::virtual_file`) are served
//! from memory. Nothing outside `[tftp] root` is reachable: the core refuses
//! `..`, drive letters and the like, and the resolved file must still lie
//! under the canonical root after following symlinks.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

use anyhow::{Context, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
use sanboot_core::tftp::wire::Repr;
use sanboot_core::tftp::{
    listener::MIN_REPLY_LEN, Incoming, Listener, ListenerEvent, Outcome, ReadAt, ReadError,
    Refusal, Transfer, TransferConfig,
};
use sanboot_core::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::files::{open_under, tftp_root};
use crate::config::stations::Stations;
use crate::config::Config;
use crate::status::Ended;

/// Bytes fetched per `pread`: 64 blocks of 1428, or one of 65464, per syscall.
const READ_AHEAD: usize = 128 * 1024;
/// Socket send buffer: a whole window of the largest blocks (64 x 65468).
const SEND_BUFFER: usize = 4 * 1024 * 1024;

/// State shared by the listening task and the transfer tasks.
struct Shared {
    config: Arc<Config>,
    /// Who may read a secret-carrying script (addresses DHCP saw).
    stations: Arc<Stations>,
    /// `[tftp] root`, canonicalised once at start.
    root: Option<PathBuf>,
    transfer: TransferConfig,
    /// Clients with a running transfer: a repeated RRQ from one of them is
    /// the same request again (our first answer was slow or lost), not a new one.
    active: Mutex<HashSet<SocketAddr>>,
    epoch: StdInstant,
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the tftp service until `stop` turns true.
pub async fn run(
    config: Arc<Config>,
    stations: Arc<Stations>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let listen = config.tftp.listen;
    let socket = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("[tftp] listen = {listen}: cannot bind"))?;
    serve(config, stations, socket, stop).await
}

/// Serves TFTP on an already bound socket until `stop` turns true.
pub async fn serve(
    config: Arc<Config>,
    stations: Arc<Stations>,
    socket: UdpSocket,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let root = tftp_root(&config)?;
    let shared = Arc::new(Shared {
        transfer: TransferConfig {
            max_blksize: config.tftp.max_blksize,
            ..TransferConfig::default()
        },
        config,
        stations,
        root,
        active: Mutex::new(HashSet::new()),
        epoch: StdInstant::now(),
    });
    let socket = Arc::new(socket);
    tracing::info!(
        listen = %socket.local_addr()?,
        root = %shared.root.as_deref().map_or("(virtual files only)".into(), |r| r.display().to_string()),
        "TFTP listening"
    );
    let mut listener = Listener::new();
    let mut buf = vec![0u8; 65536];
    let mut out = [0u8; MIN_REPLY_LEN];
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (len, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier replies surface here; they concern nobody now.
                Err(e) => {
                    tracing::debug!("TFTP listen socket: {e}");
                    continue;
                }
            },
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        match listener.handle(datagram, &mut out) {
            None => {}
            Some(ListenerEvent::Respond(t)) => {
                let reply = out.get(..t.len);
                log_refusal(datagram, reply, peer);
                send_reply(&socket, reply, peer).await;
            }
            Some(ListenerEvent::Incoming(incoming)) => {
                let admitted = {
                    let mut active = shared.active();
                    if active.contains(&peer) {
                        None
                    } else if active.len() >= shared.config.tftp.max_transfers {
                        Some(false)
                    } else {
                        active.insert(peer);
                        Some(true)
                    }
                };
                match admitted {
                    None => {
                        tracing::debug!(client = %peer, "TFTP repeated RRQ ignored");
                        continue;
                    }
                    Some(false) => {
                        tracing::warn!(
                            client = %peer.ip(),
                            file = incoming.path(),
                            max = shared.config.tftp.max_transfers,
                            "TFTP RRQ refused: too many transfers"
                        );
                        if let Ok(t) = incoming.refuse(Refusal::Busy, &mut out) {
                            send_reply(&socket, out.get(..t.len), peer).await;
                        }
                        continue;
                    }
                    Some(true) => {}
                }
                tasks.spawn(transfer_task(
                    shared.clone(),
                    socket.clone(),
                    incoming,
                    peer,
                    stop.clone(),
                ));
            }
        }
    }
    tasks.shutdown().await;
    let s = listener.stats();
    tracing::info!(
        requests = s.read_requests,
        write_requests = s.write_requests,
        bad_paths = s.bad_paths,
        malformed = s.malformed,
        "TFTP stopped"
    );
    Ok(())
}

/// One line for a request the core refused itself (WRQ, bad filename or mode).
fn log_refusal(request: &[u8], reply: Option<&[u8]>, peer: SocketAddr) {
    let (kind, file) = match Repr::parse_bytes(request) {
        Ok(Repr::Rrq(r)) => ("RRQ", String::from_utf8_lossy(r.filename).into_owned()),
        Ok(Repr::Wrq(r)) => ("WRQ", String::from_utf8_lossy(r.filename).into_owned()),
        _ => ("request", String::new()),
    };
    let why = match reply.map(Repr::parse_bytes) {
        Some(Ok(Repr::Error { message, .. })) => String::from_utf8_lossy(message).into_owned(),
        _ => String::new(),
    };
    tracing::info!("TFTP {kind} {file:?} from {} refused: {why}", peer.ip());
}

async fn send_reply(socket: &UdpSocket, bytes: Option<&[u8]>, peer: SocketAddr) {
    if let Some(bytes) = bytes {
        if let Err(e) = socket.send_to(bytes, peer).await {
            tracing::debug!(client = %peer, "TFTP reply not sent: {e}");
        }
    }
}

/// Removes the client from the active set however the task ends.
struct ActiveGuard {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared.active().remove(&self.peer);
    }
}

async fn transfer_task(
    shared: Arc<Shared>,
    listen: Arc<UdpSocket>,
    incoming: Incoming,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _guard = ActiveGuard {
        shared: shared.clone(),
        peer,
    };
    let path = incoming.path().to_owned();
    let mut source = match open(&shared, &path, peer.ip()) {
        Ok(s) => s,
        Err(reason) => {
            tracing::info!(client = %peer.ip(), file = %path, ?reason, "TFTP RRQ refused");
            report_fetch(
                peer,
                &path,
                false,
                0,
                StdInstant::now(),
                Ended::Refused(format!("{reason:?}")),
            );
            let mut out = [0u8; MIN_REPLY_LEN];
            if let Ok(t) = incoming.refuse(reason, &mut out) {
                send_reply(&listen, out.get(..t.len), peer).await;
            }
            return;
        }
    };
    let socket = match transfer_socket(&shared, &listen, peer) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, "TFTP cannot open a transfer socket: {e:#}");
            report_fetch(
                peer,
                &path,
                false,
                0,
                StdInstant::now(),
                Ended::Refused(format!("{e:#}")),
            );
            let mut out = [0u8; MIN_REPLY_LEN];
            if let Ok(t) = incoming.refuse(Refusal::Busy, &mut out) {
                send_reply(&listen, out.get(..t.len), peer).await;
            }
            return;
        }
    };
    let script = matches!(source, Source::Memory(_));
    let asked = incoming.options();
    let started = StdInstant::now();
    let mut transfer = incoming.accept(shared.now(), source.size(), &shared.transfer);
    tracing::info!(
        "TFTP RRQ {} from {} blksize={} windowsize={}{}",
        path,
        peer.ip(),
        transfer.blksize(),
        transfer.windowsize(),
        if asked.tsize.is_some() { " tsize" } else { "" },
    );
    let result = drive(&shared, &socket, &mut transfer, &mut source, stop).await;
    let ms = started.elapsed().as_millis();
    let s = transfer.stats();
    let ended = match (&result, transfer.outcome()) {
        (Ok(()), Some(Outcome::Complete)) => Ended::Complete,
        (Ok(()), Some(Outcome::PeerError(code))) => Ended::ByClient(format!("{code:?}")),
        (Ok(()), outcome) => Ended::Failed(format!("{outcome:?}")),
        (Err(e), _) => Ended::Failed(format!("{e:#}")),
    };
    report_fetch(peer, &path, script, transfer.bytes_acked(), started, ended);
    match (result, transfer.outcome()) {
        (Ok(()), Some(Outcome::Complete)) => tracing::info!(
            "TFTP done {} to {}: {} bytes in {} ms ({} retransmitted)",
            path,
            peer.ip(),
            transfer.size(),
            ms,
            s.retransmitted
        ),
        (Ok(()), Some(Outcome::PeerError(code))) => tracing::info!(
            "TFTP {} to {} ended by the client (ERROR {}) after {} of {} bytes",
            path,
            peer.ip(),
            u16::from(code),
            transfer.bytes_acked(),
            transfer.size()
        ),
        (Ok(()), outcome) => tracing::warn!(
            "TFTP {} to {} failed: {:?} after {} of {} bytes in {} ms",
            path,
            peer.ip(),
            outcome,
            transfer.bytes_acked(),
            transfer.size(),
            ms
        ),
        (Err(e), _) => tracing::warn!(
            "TFTP {} to {} aborted: {:#} after {} of {} bytes",
            path,
            peer.ip(),
            e,
            transfer.bytes_acked(),
            transfer.size()
        ),
    }
}

/// Tells the status page how a request ended; a generated script or an
/// `.ipxe` file counts as a script.
fn report_fetch(
    peer: SocketAddr,
    path: &str,
    generated: bool,
    bytes: u64,
    started: StdInstant,
    ended: Ended,
) {
    crate::status::fetch(crate::status::Fetch {
        via: crate::status::Via::Tftp,
        client: peer.ip(),
        path,
        script: generated || path.ends_with(".ipxe"),
        bytes,
        took: started.elapsed(),
        ended,
    });
}

/// Runs one transfer to its end: drain transmits, then wait for an ACK or the timer.
async fn drive(
    shared: &Shared,
    socket: &UdpSocket,
    transfer: &mut Transfer,
    source: &mut Source,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut batch = Batch::new(transfer.required_buffer_len());
    let mut rx = vec![0u8; 2048];
    loop {
        let now = shared.now();
        loop {
            let count = batch.fill(transfer, now, source)?;
            if count == 0 {
                break;
            }
            batch.send(socket).await.context("send")?;
        }
        if transfer.is_finished() {
            return Ok(());
        }
        let deadline = transfer.poll_timeout().map(|d| {
            let wait = std::time::Duration::from_millis(d.millis().saturating_sub(now.millis()));
            tokio::time::Instant::now() + wait
        });
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => anyhow::bail!("shutting down"),
            r = socket.recv(&mut rx) => {
                let n = r.context("receive")?;
                transfer.handle_datagram(shared.now(), rx.get(..n).unwrap_or(&[]));
                // Take every ACK already queued before sending again, so a
                // burst of stale ones costs no extra windows.
                while let Ok(n) = socket.try_recv(&mut rx) {
                    transfer.handle_datagram(shared.now(), rx.get(..n).unwrap_or(&[]));
                }
            }
            _ = sleep_until(deadline) => transfer.handle_timeout(shared.now()),
        }
    }
}

/// Largest UDP payload in one IPv4 datagram, the limit of a GSO send.
const MAX_GSO_BYTES: usize = 65507;
/// Kernel limit on segments per GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;

/// Consecutive datagrams of one transfer, laid out back to back at a fixed
/// stride so that a run of full DATA packets leaves in one `sendmsg` with
/// UDP_SEGMENT (GSO): the kernel cuts it into datagrams. Falls back to one
/// `send` per datagram if the kernel refuses GSO.
struct Batch {
    buf: Vec<u8>,
    stride: usize,
    lens: Vec<usize>,
    gso: bool,
}

impl Batch {
    fn new(stride: usize) -> Batch {
        let segments = (MAX_GSO_BYTES / stride.max(1)).clamp(1, MAX_GSO_SEGMENTS);
        Batch {
            buf: vec![0u8; stride * segments],
            stride,
            lens: Vec::with_capacity(segments),
            gso: segments > 1,
        }
    }

    /// Polls datagrams into the batch; stops after one shorter than the
    /// stride (an OACK, ERROR or the last DATA), since GSO needs equal sizes.
    fn fill(
        &mut self,
        transfer: &mut Transfer,
        now: Instant,
        source: &mut Source,
    ) -> Result<usize> {
        self.lens.clear();
        for slot in self.buf.chunks_exact_mut(self.stride) {
            match transfer.poll_transmit(now, slot, source)? {
                Some(t) => {
                    self.lens.push(t.len);
                    if t.len != self.stride {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(self.lens.len())
    }

    async fn send(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        let (Some(&last), count) = (self.lens.last(), self.lens.len()) else {
            return Ok(());
        };
        let total = self.stride * (count - 1) + last;
        if self.gso && count > 1 {
            let bytes = self.buf.get(..total).unwrap_or(&[]);
            let segment = u16::try_from(self.stride).unwrap_or(u16::MAX);
            let fd = socket.as_raw_fd();
            let sent = socket
                .async_io(tokio::io::Interest::WRITABLE, || {
                    let iov = [std::io::IoSlice::new(bytes)];
                    let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
                    sendmsg::<SockaddrIn>(fd, &iov, &cmsg, MsgFlags::empty(), None)
                        .map_err(std::io::Error::from)
                })
                .await;
            match sent {
                Ok(_) => return Ok(()),
                // EIO/EINVAL/EOPNOTSUPP: no GSO here; send one by one from now on.
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::ECONNREFUSED) => {
                    tracing::debug!("TFTP: UDP GSO unavailable ({e}), sending datagrams singly");
                    self.gso = false;
                }
                Err(e) => return Err(e),
            }
        }
        for (i, &len) in self.lens.iter().enumerate() {
            let start = i * self.stride;
            if let Some(datagram) = self.buf.get(start..start + len) {
                socket.send(datagram).await?;
            }
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A UDP socket on a fresh port of the server's address, connected to `peer`.
fn transfer_socket(shared: &Shared, listen: &UdpSocket, peer: SocketAddr) -> Result<UdpSocket> {
    let listen_ip = listen.local_addr()?.ip();
    // Answer from the address the client talked to. With a wildcard listener,
    // use the configured server address, or let routing pick if it is not ours.
    let candidates: Vec<IpAddr> = if listen_ip.is_unspecified() {
        vec![IpAddr::V4(shared.config.server.address), listen_ip]
    } else {
        vec![listen_ip]
    };
    let mut last_err = None;
    for ip in candidates {
        let domain = if ip.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        let _ = s.set_send_buffer_size(SEND_BUFFER);
        if let Err(e) = s.bind(&SocketAddr::new(ip, 0).into()) {
            last_err = Some(e);
            continue;
        }
        s.connect(&peer.into())?;
        s.set_nonblocking(true)?;
        return Ok(UdpSocket::from_std(s.into())?);
    }
    Err(last_err.map_or_else(|| anyhow::anyhow!("no address to bind"), Into::into))
}

/// Where a transfer's bytes come from.
enum Source {
    Memory(Vec<u8>),
    File {
        file: std::fs::File,
        size: u64,
        cache: Vec<u8>,
        cache_offset: u64,
    },
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::Memory(v) => v.len() as u64,
            Source::File { size, .. } => *size,
        }
    }
}

impl ReadAt for Source {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        match self {
            Source::Memory(v) => v.as_slice().read_exact_at(offset, buf),
            Source::File {
                file,
                size,
                cache,
                cache_offset,
            } => {
                let hit = offset
                    .checked_sub(*cache_offset)
                    .and_then(|start| usize::try_from(start).ok())
                    .and_then(|start| cache.get(start..start.checked_add(buf.len())?));
                if let Some(bytes) = hit {
                    buf.copy_from_slice(bytes);
                    return Ok(());
                }
                if buf.len() >= READ_AHEAD {
                    return read_file_at(file, offset, buf);
                }
                let want = size.saturating_sub(offset).min(READ_AHEAD as u64);
                cache.resize(usize::try_from(want).unwrap_or(READ_AHEAD), 0);
                read_file_at(file, offset, cache)?;
                *cache_offset = offset;
                let part = cache.get(..buf.len()).ok_or(ReadError::Truncated)?;
                buf.copy_from_slice(part);
                Ok(())
            }
        }
    }
}

fn read_file_at(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadError::Truncated,
        _ => ReadError::Io,
    })
}

/// Finds what `path` (already normalised by the core) names: a generated
/// script first, then a regular file under the root.
fn open(shared: &Shared, path: &str, client: IpAddr) -> Result<Source, Refusal> {
    // Scripts follow a reload (`crate::reload`); the root and limits do not.
    let config = crate::reload::current().unwrap_or_else(|| shared.config.clone());
    if let Some(bytes) = crate::config::script::virtual_file(&config, path) {
        if !crate::stations::script_requested(&shared.stations, &config, path, client, "TFTP RRQ") {
            return Err(Refusal::NotFound);
        }
        return Ok(Source::Memory(bytes));
    }
    let Some(root) = &shared.root else {
        return Err(Refusal::NotFound);
    };
    let file = open_under(root, path)?;
    let size = file.metadata().map_err(|_| Refusal::ReadError)?.len();
    Ok(Source::File {
        file,
        size,
        cache: Vec::new(),
        cache_offset: 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn file_source_reads_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let p = dir.path().join("f");
        std::fs::write(&p, &data).unwrap();
        let mut s = Source::File {
            file: std::fs::File::open(&p).unwrap(),
            size: data.len() as u64,
            cache: Vec::new(),
            cache_offset: 0,
        };
        let mut buf = vec![0u8; 1428];
        for off in (0..data.len() as u64 - 1428)
            .step_by(1428)
            .chain([5, 0, 200_000])
        {
            s.read_exact_at(off, &mut buf).unwrap();
            assert_eq!(&buf[..], &data[off as usize..off as usize + 1428]);
        }
        let mut tail = vec![0u8; 10];
        s.read_exact_at(data.len() as u64 - 10, &mut tail).unwrap();
        assert_eq!(
            s.read_exact_at(data.len() as u64 - 5, &mut tail),
            Err(ReadError::Truncated)
        );
    }
}
