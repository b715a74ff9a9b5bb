//! The iSCSI target on TCP: one tokio task per connection drives the core's
//! [`Connection`] machine; the SCSI state of each target is shared by all
//! connections (a mutex around [`scsi::Target`]); LUNs are image files
//! ([`crate::config::lun_device::LunDevice`]: an image file or a
//! copy-on-write overlay over a base image).
//!
//! Logins and discovery sessions run on the tokio workers. Once a normal
//! session is logged in, its loop moves to a thread of its own with a
//! one-connection runtime (`run_on_own_thread`): its storage I/O may block
//! there without holding up anything else.
//!
//! A connection task loops: read → `handle_input` until it consumes nothing
//! → events (session admission, reinstatement) → storage requests, run by
//! the core's [`Driver`] on the image files and completed → `poll_transmit`
//! into one batch → one socket write. Storage that must be durable (FUA,
//! SYNCHRONIZE CACHE) is finished — `fdatasync` returned — before
//! `complete_storage` is called, and only `poll_transmit` after that can
//! produce the status. This file holds no SCSI semantics: the driver does.

mod limits;
pub(crate) mod reload;
mod station_io;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use sanboot_core::iscsi::{
    Access, CloseReason, Connection, Driver, Event, LoginStatus, Luns, SessionTable, TargetConfig,
    Targets,
};
use sanboot_core::scsi::{self, Units};
use sanboot_core::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::config::lun_device::LunDevice;
use crate::config::translate::{naa_and_serial, TargetViews};
use crate::config::{self, Config};
use crate::status::commands::Counted;

/// SCSI state of one target: up to 16 LUNs, 64 I_T nexus slots, 32
/// persistent-reservation registrations per LUN.
pub(crate) type ScsiTarget = scsi::Target<16, { config::NEXUS_TABLE }, 32>;
/// Session table capacity; `[iscsi] max_sessions` and
/// `max_discovery_sessions` limit it further.
const SESSION_SLOTS: usize = 256;
const _: () = assert!(SESSION_SLOTS >= config::NEXUS_TABLE + config::DISCOVERY_SESSIONS_LIMIT);
/// A batch write that has not finished by then (the initiator stopped
/// reading: zero window) ends the connection.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Commands in flight per connection, and the per-command scratch buffer
/// (4 KiB holds every SCSI-generated response, REPORT SUPPORTED OPCODES
/// included).
type Conn = Connection<64, 4096>;
/// Transmit batch: PDUs are gathered up to this size before one write.
/// Small enough that the buffer stays in the CPU's L2 cache between the
/// pread that fills it and the write that copies it to the socket: with
/// 1 MiB, seq read cost ~14 % more CPU per GB (0.29 vs 0.25 CPU-s/GB).
const TX_BATCH: usize = 256 << 10;
/// The driver's collection buffer per connection: COMPARE AND WRITE is
/// limited to what fits twice (255 blocks of 512, 32 of 4096 bytes).
const COLLECT: usize = 256 << 10;
/// The driver's bounce buffer per connection (VERIFY, ORWRITE, WRITE SAME,
/// EXTENDED COPY pieces).
const BOUNCE: usize = 256 << 10;
/// Receive and transmit buffers before login: a login PDU (at most 8 KiB
/// of text, RFC 7143 §6.1) or its answer, with headers and digests.
const LOGIN_BUF: usize = 16 << 10;

/// One configured target: its SCSI state and its disks.
pub(crate) struct TargetState {
    pub(crate) scsi: Mutex<ScsiTarget>,
    /// Held for reading around each device access, so a golden-image
    /// station's LUN can be swapped with no I/O in flight (`station_io`).
    pub(crate) disks: RwLock<HashMap<u64, Arc<LunDevice>>>,
}

/// Everything connections share.
pub(crate) struct Shared {
    /// The configuration at start: its `[iscsi]` table (a reload that
    /// changes it is refused, see `crate::reload`).
    config: Arc<Config>,
    /// The targets now served; swapped by a reload (`reload.rs`).
    generation: std::sync::RwLock<Arc<reload::Generation>>,
    /// Logged-in normal sessions: connection token → target index (a reload
    /// closes those whose target it removes).
    logged: Mutex<HashMap<u64, usize>>,
    sessions: Mutex<SessionTable<SESSION_SLOTS>>,
    /// Per connection token: wakes that connection to close it (session
    /// reinstatement).
    kills: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Why a connection woken through `kills` lost its session, when a
    /// takeover (not an RFC reinstatement) did it: logged when it ends.
    replaced: Mutex<HashMap<u64, String>>,
    portal: String,
    epoch: std::time::Instant,
}

impl Shared {
    fn now(&self) -> Instant {
        Instant(self.epoch.elapsed().as_millis() as u64)
    }

    /// The targets now served.
    pub(crate) fn generation(&self) -> Arc<reload::Generation> {
        self.generation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wakes connection `token` to close it; `why`, when given, is logged
    /// when it ends.
    fn close_connection(&self, token: u64, why: Option<&str>) {
        let kill = self
            .kills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
            .cloned();
        if let Some(k) = kill {
            if let Some(why) = why {
                self.replaced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token, why.to_string());
            }
            k.notify_one();
        }
    }
}

/// The targets as the core's storage driver sees them, for one connection:
/// those of the generation it started in; once logged in, only its own
/// (so a reload that removes another target closes that one's images).
struct HostLuns(Vec<Option<Arc<TargetState>>>);

impl HostLuns {
    fn all(generation: &reload::Generation) -> HostLuns {
        HostLuns(generation.targets.iter().cloned().map(Some).collect())
    }

    /// Keeps only target `keep` (`None`: a discovery session needs none).
    fn narrow(&mut self, keep: Option<usize>) {
        for (i, t) in self.0.iter_mut().enumerate() {
            if Some(i) != keep {
                *t = None;
            }
        }
    }
}

impl Luns for HostLuns {
    fn units<R>(&self, target: usize, f: impl FnOnce(&mut dyn Units) -> R) -> Option<R> {
        let t = self.0.get(target)?.as_ref()?;
        let mut scsi = t.scsi.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut *scsi))
    }

    fn device<R>(
        &self,
        target: usize,
        lun: u64,
        access: Access,
        f: impl FnOnce(&mut dyn sanboot_core::block::BlockDevice) -> R,
    ) -> Option<R> {
        let t = self.0.get(target)?.as_ref()?;
        // A golden-image station's LUN may be reopened (snapshot, commit):
        // its map is write-locked then, so its I/O waits here.
        let disks = t.disks.read().unwrap_or_else(|e| e.into_inner());
        Some(disks.get(&lun)?.with_device(access, f))
    }
}

fn open_targets(config: &Config) -> Result<Vec<TargetState>> {
    let mut out = Vec::new();
    for (index, t) in config.targets.iter().enumerate() {
        let mut scsi_target = ScsiTarget::new();
        let mut disks = HashMap::new();
        for l in &t.luns {
            let disk = station_io::open(index, l.id).unwrap_or_else(|| open_lun(t, l))?;
            let (naa, serial) = naa_and_serial(&t.iqn, l.id);
            let mut lun = disk.lun_config(naa, &serial);
            // Both halves of a COMPARE AND WRITE must fit the driver's buffer.
            let fits = COLLECT / (2 * lun.block_size as usize);
            lun.max_compare_and_write_blocks = u8::try_from(fits).unwrap_or(u8::MAX);
            scsi_target
                .add_lun(l.id, lun)
                .map_err(|_| anyhow::anyhow!("[[target]] {}: too many LUNs", t.iqn))?;
            tracing::info!(
                target = %t.iqn,
                lun = l.id,
                image = %l.image.display(),
                base = ?l.base.as_ref().map(|b| b.display().to_string()),
                blocks = disk.blocks(),
                read_only = l.read_only,
                "iscsi LUN"
            );
            disks.insert(l.id, Arc::new(disk));
        }
        out.push(TargetState {
            scsi: Mutex::new(scsi_target),
            disks: RwLock::new(disks),
        });
    }
    Ok(out)
}

/// Opens the image file (or overlay over a base) of one LUN.
fn open_lun(t: &config::Target, l: &config::Lun) -> Result<LunDevice> {
    LunDevice::open(l).with_context(|| format!("[[target]] {} lun {}", t.iqn, l.id))
}

/// Opens one target exactly as [`open_targets`] does (a reload adding it).
fn open_target(config: &Config, t: &config::Target) -> Result<TargetState> {
    let mut one = config.clone();
    one.targets = vec![t.clone()];
    open_targets(&one)?
        .pop()
        .with_context(|| format!("[[target]] {}: not opened", t.iqn))
}

fn portal(config: &Config, local: SocketAddr) -> String {
    if let Some(p) = &config.iscsi.portal {
        return p.clone();
    }
    let ip = if local.ip().is_unspecified() {
        std::net::IpAddr::V4(config.server.address)
    } else {
        local.ip()
    };
    SocketAddr::new(ip, local.port()).to_string()
}

/// Runs the iSCSI target until `stop` turns true.
pub async fn run(config: Arc<Config>, mut stop: watch::Receiver<bool>) -> Result<()> {
    // Golden-image stations: locked, pending changes applied, before their
    // overlays are opened.
    crate::stations::start(&config)?;
    let targets = open_targets(&config)?.into_iter().map(Arc::new).collect();
    limits::raise_fd_limit(config.iscsi.max_connections);
    let conn_limits = limits::ConnectionLimits::new(
        config.iscsi.max_connections,
        config.iscsi.max_connections_per_ip,
    );
    let listener = TcpListener::bind(config.iscsi.listen)
        .await
        .with_context(|| format!("[iscsi] listen = {}: cannot bind", config.iscsi.listen))?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        portal: portal(&config, local),
        config: config.clone(),
        generation: std::sync::RwLock::new(Arc::new(reload::Generation {
            config: config.clone(),
            targets,
        })),
        logged: Mutex::new(HashMap::new()),
        sessions: Mutex::new({
            let mut t = SessionTable::new();
            t.set_limit(config.iscsi.max_sessions);
            t.set_discovery_limit(config.iscsi.max_discovery_sessions);
            t
        }),
        kills: Mutex::new(HashMap::new()),
        replaced: Mutex::new(HashMap::new()),
        epoch: std::time::Instant::now(),
    });
    tracing::info!(
        listen = %local,
        portal = %shared.portal,
        targets = config.targets.len(),
        max_sessions = config.iscsi.max_sessions,
        nop_interval_secs = config.iscsi.nop_interval_secs,
        nop_timeout_secs = config.iscsi.nop_timeout_secs,
        "iscsi target listening"
    );
    crate::reload::register_iscsi(&shared);
    let tokens = AtomicU64::new(1);
    let mut conns = tokio::task::JoinSet::new();
    let station_poll = tokio::spawn(station_io::poll(shared.clone(), stop.clone()));
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("iscsi accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over a cap: closed at once (dropping the socket), before
                // it costs a task and buffers.
                let Some(permit) = conn_limits.admit(peer.ip()) else {
                    continue;
                };
                let token = tokens.fetch_add(1, Ordering::Relaxed);
                conns.spawn(connection(shared.clone(), sock, peer, token, permit, conn_stop.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    while conns.join_next().await.is_some() {}
    let _ = station_poll.await;
    // Whatever initiators left in the page cache goes to disk on a clean stop.
    for t in &shared.generation().targets {
        let disks = t.disks.read().unwrap_or_else(|e| e.into_inner());
        for d in disks.values() {
            if let Err(e) = d.sync() {
                tracing::warn!(image = %d.path().display(), "sync on stop: {e}");
            }
            tracing::info!(image = %d.path().display(), fdatasyncs = d.syncs(), "iscsi LUN closed");
        }
    }
    Ok(())
}

/// Resolves when the stop flag turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn random_seed() -> [u8; 16] {
    use std::io::Read;
    let mut seed = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        seed = t.to_le_bytes();
    }
    seed
}

/// How `initiator` had to authenticate to `t`: its own `[host.chap]` or the
/// target's (the core refuses a login that did not prove it).
fn auth_name(t: Option<&TargetConfig<'_>>, initiator: &str) -> &'static str {
    match t.map(|t| t.chap_for(initiator)) {
        Some((Some(_), Some(_))) => "CHAP (mutual offered)",
        Some((Some(_), None)) => "CHAP",
        _ => "None",
    }
}

/// What ends a connection.
enum End {
    /// The initiator closed TCP (or it broke).
    Disconnect(String),
    /// Logout or a login failure: the core asked to close.
    Closed,
    /// Another login reinstated this session.
    Reinstated,
    /// Not logged in yet and the oldest such when `max_connections` was
    /// reached: closed to make room.
    Evicted,
    /// sanboot is stopping.
    Stop,
    /// Not an end: a normal session logged in and its loop goes on on a
    /// thread of its own.
    OwnThread,
}

/// Runs a logged-in normal session's loop on a thread of its own until it
/// ends, then shuts its socket down. The tokio worker running it becomes
/// that thread (`block_in_place` hands the worker's other tasks to a new
/// worker) and runs a runtime of its own for this one connection: the
/// socket is registered there, so readiness, timers and storage all happen
/// on this thread, with no wake-up across threads per command. Storage
/// I/O — a read of a cold page, an `fdatasync` of a slow disk — then
/// blocks only this session, never DHCP, TFTP, HTTP, logins or other
/// sessions.
///
/// (Measured: running the loop here through the main runtime's handle,
/// its socket left with the worker threads' driver, cost 70 % more CPU per
/// GB on 4 KiB reads; so did handing each transmit batch to
/// `block_in_place`.)
fn run_on_own_thread(sock: TcpStream, mut session: impl AsyncFnMut(&mut TcpStream) -> End) -> End {
    tokio::task::block_in_place(move || {
        let std_sock = match sock.into_std() {
            Ok(s) => s,
            Err(e) => return End::Disconnect(format!("moving the session to its thread: {e}")),
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return End::Disconnect(format!("runtime for the session's thread: {e}")),
        };
        rt.block_on(async move {
            let mut sock = match TcpStream::from_std(std_sock) {
                Ok(s) => s,
                Err(e) => return End::Disconnect(format!("moving the session to its thread: {e}")),
            };
            let end = session(&mut sock).await;
            let _ = sock.shutdown().await;
            end
        })
    })
}

async fn connection(
    shared: Arc<Shared>,
    mut sock: TcpStream,
    peer: SocketAddr,
    token: u64,
    permit: limits::Permit,
    mut stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    if let Err(e) = detect_dead_peers(&sock, &shared.config.iscsi) {
        tracing::warn!(%peer, "iscsi: TCP keepalive / user timeout: {e}");
    }
    let kill = Arc::new(Notify::new());
    shared
        .kills
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token, kill.clone());
    // This connection logs in to the targets of the generation it started
    // in; a reload after its login leaves it alone unless its target went.
    let generation = shared.generation();
    let config = generation.config.clone();
    let mut luns = HostLuns::all(&generation);
    drop(generation);
    // Every host's initiator name, for its `[host.chap]` entries (of this
    // generation: a reload may add hosts).
    let initiators = crate::config::translate::station_initiators(&config);
    let views = TargetViews::new(&config, &initiators);
    let configs = views.configs();
    let targets = Targets {
        targets: &configs,
        portal: &shared.portal,
        portal_group_tag: 1,
    };
    let mut conn: Box<Conn> = Box::new(Connection::new(
        shared.now(),
        token,
        config.iscsi.target_limits(),
        random_seed(),
    ));
    conn.set_crc32c(crc32c::crc32c_append);
    let mut driver: Driver<Vec<u8>, 64> = Driver::new(Vec::new(), Vec::new());
    // Small buffers until login completes: a connection that never logs in
    // (a flood of them) costs little; full ones come with the session.
    let mut rx = vec![0u8; LOGIN_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut tx = vec![0u8; LOGIN_BUF];
    let mut logged_in: Option<(String, String)> = None;
    // Last activity reported to the session table (takeover picks by it).
    let mut touched = conn.last_activity();
    // Commands, bytes and the first READ, for the status page and metrics.
    let mut clock = crate::status::commands::CommandClock::default();

    // Set when a normal session logged in: its loop moves to a thread of
    // its own, where storage may block (see `run_on_own_thread`). Atomics
    // rather than `Cell`s: the loop's future must stay `Send`.
    let wants_thread = AtomicBool::new(false);
    let on_thread = AtomicBool::new(false);
    let mut run = async |sock: &mut TcpStream| -> End {
        'conn: loop {
            // 1. input: whole PDUs.
            loop {
                let n = conn.handle_input(
                    shared.now(),
                    rx.get(start..end).unwrap_or_default(),
                    &targets,
                    &mut Counted::new(driver.bind(&luns), &mut clock),
                );
                if n == 0 {
                    break;
                }
                start += n;
            }
            if start == end {
                (start, end) = (0, 0);
            }
            if conn.last_activity().saturating_since(touched).millis() >= 1000 {
                touched = conn.last_activity();
                shared
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .touch(token, touched);
            }
            // 2–4 until nothing moves: events, storage, output.
            let mut close = false;
            loop {
                let mut progress = false;
                while let Some(ev) = conn.poll_event() {
                    progress = true;
                    match ev {
                        Event::SessionRequest(req) => {
                            let name = conn.initiator_name().to_string();
                            // The first login of a golden-image station's boot
                            // (volatile reset, pending requests) goes first.
                            let stations = crate::stations::registry();
                            if let (Some(t), Some(reg)) = (req.target, stations) {
                                if let Some(work) = reg.boot_work(t, token) {
                                    station_io::boot(&shared, reg, work).await;
                                }
                            }
                            if req.target.is_some() {
                                // Storage buffers come with a normal session.
                                driver = Driver::new(vec![0u8; COLLECT], vec![0u8; BOUNCE]);
                            }
                            // The table holds `[iscsi] max_sessions` and, counted
                            // apart, `max_discovery_sessions`; when full, a
                            // rebooted station takes over its own abandoned session.
                            let admitted = driver.admit(
                                &mut conn,
                                &mut shared.sessions.lock().unwrap_or_else(|e| e.into_inner()),
                                shared.now(),
                                &req,
                            );
                            match admitted {
                                Ok(adm) => {
                                    if let (Some(t), Some(reg)) = (req.target, stations) {
                                        reg.logged_in(t, token);
                                    }
                                    if let (Some(old), Some(over)) = (adm.reinstated, adm.takeover)
                                    {
                                        log_takeover(&shared, peer, &name, old, over);
                                    }
                                    if let Some(old) = adm.reinstated {
                                        // (A takeover's reason was noted above.)
                                        shared.close_connection(old, None);
                                    }
                                }
                                Err(status) => {
                                    tracing::info!(%peer, initiator = %name, ?status, "iscsi login refused");
                                }
                            }
                        }
                        Event::LoggedIn { target, .. } => {
                            permit.logged_in();
                            wants_thread.store(target.is_some(), Ordering::Relaxed);
                            // A normal session batches data both ways; a
                            // discovery session exchanges one text PDU at a time.
                            let (slack, batch) = match target {
                                Some(_) => (256 << 10, TX_BATCH),
                                None => (0, 0),
                            };
                            rx.resize(conn.max_pdu_len() + slack, 0);
                            tx.resize(batch + conn.max_pdu_len(), 0);
                            let t = target.and_then(|i| config.targets.get(i));
                            let tname = t.map_or("(discovery)".to_string(), |t| t.iqn.clone());
                            let p = conn.params();
                            let method = auth_name(
                                target.and_then(|i| configs.get(i)),
                                conn.initiator_name(),
                            );
                            tracing::info!(
                                %peer,
                                initiator = %conn.initiator_name(),
                                target = %tname,
                                auth = method,
                                header_digest = if p.header_digest { "CRC32C" } else { "None" },
                                data_digest = if p.data_digest { "CRC32C" } else { "None" },
                                "iscsi login"
                            );
                            let auth = match method {
                                "None" => "None".to_string(),
                                chap => format!("{chap}: verified"),
                            };
                            clock.logged_in(crate::status::iscsi_logged_in(
                                token,
                                conn.initiator_name(),
                                t.map(|t| t.iqn.as_str()),
                                peer,
                                &auth,
                            ));
                            logged_in = Some((conn.initiator_name().to_string(), tname));
                            luns.narrow(target);
                            if let Some(i) = target {
                                shared
                                    .logged
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(token, i);
                                // A reload between this connection's start and
                                // its login may have removed or moved its target.
                                let now_served = shared.generation().targets.get(i).cloned();
                                let ours = luns.0.get(i).cloned().flatten();
                                if !matches!((now_served, ours), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b))
                                {
                                    shared.close_connection(token, Some("target removed or moved by a configuration reload during login"));
                                }
                            }
                        }
                        Event::Close => close = true,
                    }
                }
                // Storage, in place; the core completes each request after its
                // work returned, so only the output below can carry its status.
                // On the session's own thread anything may block; before the
                // move (commands right behind the login), durable work
                // (fdatasync) tells tokio to move other tasks elsewhere.
                let ran = driver.bind(&luns).run_storage_with(
                    &mut conn,
                    shared.now(),
                    |req, may_block, work| {
                        clock.storage(req);
                        if may_block && !on_thread.load(Ordering::Relaxed) {
                            tokio::task::block_in_place(work);
                        } else {
                            work();
                        }
                    },
                );
                progress |= ran > 0;
                // Output, batched into one write.
                let mut filled = 0;
                // (Before login, the small buffer takes one PDU per write.)
                let room_needed = conn.max_pdu_len().min(tx.len());
                while tx.len() - filled >= room_needed {
                    let room = tx.get_mut(filled..).unwrap_or_default();
                    let Some(n) = conn.poll_transmit(shared.now(), room, &mut driver.bind(&luns))
                    else {
                        break;
                    };
                    filled += n;
                }
                if filled > 0 {
                    progress = true;
                    let out = tx.get(..filled).unwrap_or_default();
                    // An initiator that stops reading (zero window) must not
                    // hold up its reinstatement, sanboot's stop, or forever.
                    let sent = tokio::select! {
                        r = sock.write_all(out) => r,
                        _ = kill.notified() => break 'conn End::Reinstated,
                        _ = stopped(&mut stop) => break 'conn End::Stop,
                        _ = tokio::time::sleep(WRITE_TIMEOUT) => {
                            break 'conn End::Disconnect(format!(
                                "write timed out after {} s: the initiator does not read",
                                WRITE_TIMEOUT.as_secs()
                            ));
                        }
                    };
                    if let Err(e) = sent {
                        break 'conn End::Disconnect(format!("write: {e}"));
                    }
                }
                if !progress {
                    break;
                }
            }
            if close || conn.is_closed() {
                break End::Closed;
            }
            // Bytes that arrived behind the final Login Request wait while the
            // session is admitted; feed them now rather than after the next read.
            if start < end {
                let n = conn.handle_input(
                    shared.now(),
                    rx.get(start..end).unwrap_or_default(),
                    &targets,
                    &mut Counted::new(driver.bind(&luns), &mut clock),
                );
                if n > 0 {
                    start += n;
                    continue;
                }
            }
            // Make room for more input.
            if start > 0 && rx.len() - end < conn.max_pdu_len() {
                rx.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if end >= rx.len() {
                // Cannot happen with a buffer of max_pdu_len() + slack unless the
                // machine stops consuming; never spin on an empty read slice.
                break End::Disconnect("receive buffer full".into());
            }
            if wants_thread.load(Ordering::Relaxed) && !on_thread.load(Ordering::Relaxed) {
                break End::OwnThread;
            }
            // 5. wait for bytes, a timer, a reinstatement or stop.
            clock.flush();
            let deadline = conn.poll_timeout().map(|t| {
                tokio::time::Instant::from_std(shared.epoch) + std::time::Duration::from_millis(t.0)
            });
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Kill and stop first; then bytes before timers: a ping's answer
                // that arrived while this task was busy must be read before the
                // ping's deadline is judged.
                biased;
                _ = kill.notified() => break End::Reinstated,
                _ = stopped(&mut stop) => break End::Stop,
                _ = permit.evicted() => break End::Evicted,
                r = sock.read(rx.get_mut(end..).unwrap_or_default()) => match r {
                    Ok(0) => break End::Disconnect("closed by initiator".into()),
                    Ok(n) => end += n,
                    Err(e) => break End::Disconnect(format!("read: {e}")),
                },
                _ = sleep => conn.handle_timeout(shared.now()),
            }
        }
    };
    let mut end_reason = run(&mut sock).await;
    let mut sock = Some(sock);
    if matches!(end_reason, End::OwnThread) {
        on_thread.store(true, Ordering::Relaxed);
        if let Some(s) = sock.take() {
            end_reason = run_on_own_thread(s, &mut run);
        }
    }

    driver.bind(&luns).end(&mut conn);
    shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .release(token);
    shared
        .kills
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&token);
    if let Some(reg) = crate::stations::registry() {
        reg.ended(token);
    }
    shared
        .logged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&token);
    if let Some(mut s) = sock {
        let _ = s.shutdown().await;
    }
    let closed_because = match conn.close_reason() {
        Some(CloseReason::Logout) | None => "logout".to_string(),
        Some(CloseReason::LoginFailed(status)) => format!("login refused: {status:?}"),
        Some(CloseReason::LoginTimeout) => "login timed out".to_string(),
        Some(CloseReason::ProtocolError) => "protocol error".to_string(),
        Some(CloseReason::TargetColdReset) => "target cold reset".to_string(),
        Some(CloseReason::PeerTimeout) => format!(
            "peer timeout: no answer to a NOP-In ping within {} s",
            config.iscsi.nop_timeout_secs
        ),
    };
    let replaced = shared
        .replaced
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&token);
    let how = match &end_reason {
        End::Disconnect(why) => why.as_str(),
        End::Closed => closed_because.as_str(),
        End::Reinstated => replaced
            .as_deref()
            .unwrap_or("session reinstated by a new login (same initiator and ISID)"),
        End::Evicted => "closed before login to make room: [iscsi] max_connections reached",
        End::Stop => "sanboot stopping",
        // The loop on its own thread never asks to move again.
        End::OwnThread => "session loop ended while moving to its thread",
    };
    clock.flush();
    crate::status::iscsi_session_ended(token);
    if logged_in.is_none() && !conn.initiator_name().is_empty() {
        let chap = matches!(
            conn.close_reason(),
            Some(CloseReason::LoginFailed(LoginStatus::AuthFailure))
        );
        crate::status::iscsi_login_failed(conn.initiator_name(), peer, how, chap);
    }
    let stats = conn.stats();
    // How long the initiator had been silent: a dead station shows it here.
    let idle_secs = shared.now().saturating_since(conn.last_activity()).millis() as f64 / 1000.0;
    match logged_in {
        Some((initiator, target)) => tracing::info!(
            %peer, %initiator, %target, reason = how,
            last_activity_secs_ago = idle_secs,
            pings = stats.pings,
            pdus_in = stats.pdus_in, pdus_out = stats.pdus_out,
            "iscsi session ended"
        ),
        // A login that never reached full feature phase: refused (unknown
        // target, not on the allow-list, CHAP failed), timed out, or a probe.
        None if !conn.initiator_name().is_empty() => tracing::info!(
            %peer,
            initiator = %conn.initiator_name(),
            reason = how,
            "iscsi login failed"
        ),
        None => tracing::debug!(%peer, reason = how, "iscsi connection ended before login"),
    }
}

/// A login at the session limit took over session `old` of the same
/// initiator: say so on both sides (here, and when `old` ends).
fn log_takeover(
    shared: &Shared,
    peer: SocketAddr,
    initiator: &str,
    old: u64,
    over: sanboot_core::iscsi::Takeover,
) {
    let idle = over.idle.millis() as f64 / 1000.0;
    let isid = over.isid.map(|b| format!("{b:02x}")).concat();
    tracing::info!(
        %peer, %initiator, old_tsih = over.tsih, old_isid = %isid, old_idle_secs = idle,
        max_sessions = shared.config.iscsi.max_sessions,
        "iscsi session limit reached: the new login takes over this initiator's longest-silent session"
    );
    // Only for a connection still running (it removes its entry when it ends).
    let running = shared
        .kills
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&old);
    if !running {
        return;
    }
    shared
        .replaced
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            old,
            format!(
                "taken over by a new login of the same initiator from {peer} \
                 (max_sessions = {} reached, silent for {idle:.1} s)",
                shared.config.iscsi.max_sessions
            ),
        );
}

/// TCP-level dead-peer detection, beside the core's NOP-In pings: keepalive
/// probes on an idle socket, and `TCP_USER_TIMEOUT` so that data the peer
/// never acknowledges (a station that vanished mid-transfer, with this
/// task blocked in a write) fails the socket after `nop_timeout_secs`
/// instead of the kernel's ~15 minutes of retransmissions.
fn detect_dead_peers(sock: &TcpStream, iscsi: &config::Iscsi) -> std::io::Result<()> {
    use std::time::Duration;
    let timeout = Duration::from_secs(iscsi.nop_timeout_secs.max(1));
    let idle = Duration::from_secs(match iscsi.nop_interval_secs {
        0 => 15,
        s => s,
    });
    let probe_every = (timeout / 3).max(Duration::from_secs(1));
    let sock = socket2::SockRef::from(sock);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(probe_every)
            .with_retries(3),
    )?;
    sock.set_tcp_user_timeout(Some(timeout))
}
