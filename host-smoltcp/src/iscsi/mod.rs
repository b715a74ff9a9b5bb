//! iSCSI glue: a fixed pool of smoltcp TCP sockets listening on the portal
//! port, each carrying one core [`Connection`] at a time.
//!
//! Per connection and poll round: bytes from the TCP ring are copied into a
//! PDU buffer (a PDU may straddle the ring's wrap) and fed to
//! `handle_input`; events admit sessions in the shared [`SessionTable`];
//! the core's storage [`Driver`] runs storage requests synchronously on the
//! [`Disks`] and completes them before any PDU is produced, so no status
//! leaves before its write (or flush) returned; then PDUs are produced into
//! the shared scratch buffer while the TCP transmit ring has room.

use core::cell::RefCell;

use sanboot_core::block::BlockDevice;
use sanboot_core::iscsi::{
    Access, CloseReason, Connection, Driver, Event as IscsiEvent, Luns, SessionTable, TargetLimits,
    Targets,
};
use sanboot_core::scsi::{self, Units};
use sanboot_core::time::Instant;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;

use crate::event::Event;
use crate::storage::Disks;

/// SCSI state of one target: up to 4 LUNs, 8 I_T nexus slots, 4
/// persistent-reservation registrations per LUN.
pub type ScsiTarget = scsi::Target<4, { NEXUS_SLOTS as usize }, 4>;

/// I_T nexus slots of a [`ScsiTarget`].
const NEXUS_SLOTS: u16 = 8;

/// Commands in flight per connection.
pub const ISCSI_TASKS: usize = 8;
/// Default per-command buffer for data the SCSI layer generates (INQUIRY,
/// MODE SENSE, sense data); longer answers are cut to it. The `S` const of
/// [`crate::Appliance`]: 4096 holds every answer (REPORT SUPPORTED
/// OPERATION CODES with timeouts too), 1024 fits small boards.
pub const ISCSI_SCRATCH: usize = 1024;
/// Default TCP receive ring per connection (the receive window).
pub const ISCSI_TCP_RX: usize = 8192;
/// Default TCP transmit ring per connection (read data in flight).
pub const ISCSI_TCP_TX: usize = 16384;
/// PDU reassembly buffer per connection: holds the longest PDU the
/// initiator may send (`Connection::max_pdu_len` for our
/// MaxRecvDataSegmentLength, [`ISCSI_MAX_RECV_DATA`]).
pub const ISCSI_PDU: usize = 12288;
/// MaxRecvDataSegmentLength we declare.
pub const ISCSI_MAX_RECV_DATA: u32 = 8192;
/// Collection buffer per connection (COMPARE AND WRITE, UNMAP lists, the
/// one block of WRITE SAME).
pub const ISCSI_COLLECT: usize = 1024;
/// MAXIMUM COMPARE AND WRITE LENGTH the LUNs must report: both halves of
/// 512-byte blocks fit [`ISCSI_COLLECT`].
pub const ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS: u8 = (ISCSI_COLLECT / 1024) as u8;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT thin LUNs must report: a whole
/// UNMAP parameter list (8 + 16 per descriptor) fits [`ISCSI_COLLECT`].
pub const ISCSI_MAX_UNMAP_DESCRIPTORS: u32 = ((ISCSI_COLLECT - 8) / 16) as u32;
/// Bounce buffer per connection for streamed VERIFY/ORWRITE pieces,
/// WRITE SAME fills and EXTENDED COPY.
pub const ISCSI_BOUNCE: usize = 2048;
/// Smallest transmit room worth producing a PDU into.
const MIN_TX_ROOM: usize = 1024;

/// The core connection type the appliance runs, with `S` bytes of scratch
/// per command.
pub type IscsiConnection<const S: usize = ISCSI_SCRATCH> = Connection<ISCSI_TASKS, S>;

/// The iSCSI part of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct IscsiConfig<'a> {
    /// Portal port (3260).
    pub port: u16,
    /// Targets, their allowed initiators, CHAP and LUN numbers; `portal`
    /// is what SendTargets reports (`"192.0.2.1:3260"`).
    pub targets: Targets<'a>,
    /// Dead-peer detection: NOP-In ping after this long without a PDU (0:
    /// none); see `TargetLimits::nop_in_interval_ms` (default 15 000).
    pub nop_in_interval_ms: u64,
    /// An unanswered ping closes the session after this long; also the TCP
    /// socket's timeout (`set_timeout`, keep-alives every third of it), so
    /// unacknowledged data or keep-alives abort a vanished peer (default 30 000).
    pub nop_in_timeout_ms: u64,
}

impl IscsiConfig<'_> {
    /// The limits we negotiate with (what the buffers above can hold) and
    /// this configuration's dead-peer timers.
    pub fn limits(&self) -> TargetLimits {
        TargetLimits {
            nop_in_interval_ms: self.nop_in_interval_ms,
            nop_in_timeout_ms: self.nop_in_timeout_ms,
            ..limits()
        }
    }
}

/// The limits we negotiate with (what the buffers above can hold).
pub fn limits() -> TargetLimits {
    TargetLimits {
        max_recv_data_segment_length: ISCSI_MAX_RECV_DATA,
        first_burst_length: ISCSI_MAX_RECV_DATA,
        max_burst_length: 65536,
        max_outstanding_r2t: 1,
        ..TargetLimits::default()
    }
}

/// Byte buffers of one connection (all zero: `.bss` in a `static`), with
/// TCP rings of `RX` and `TX` bytes.
#[derive(Debug)]
pub struct IscsiBytes<const RX: usize = ISCSI_TCP_RX, const TX: usize = ISCSI_TCP_TX> {
    pub(crate) tcp_rx: [u8; RX],
    pub(crate) tcp_tx: [u8; TX],
    pub(crate) pdu: [u8; ISCSI_PDU],
    pub(crate) collect: [u8; ISCSI_COLLECT],
    pub(crate) bounce: [u8; ISCSI_BOUNCE],
}

impl<const RX: usize, const TX: usize> IscsiBytes<RX, TX> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        IscsiBytes {
            tcp_rx: [0; RX],
            tcp_tx: [0; TX],
            pdu: [0; ISCSI_PDU],
            collect: [0; ISCSI_COLLECT],
            bounce: [0; ISCSI_BOUNCE],
        }
    }
}

impl<const RX: usize, const TX: usize> Default for IscsiBytes<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Slot<'a, const S: usize> {
    socket: SocketHandle,
    pdu: &'a mut [u8],
    start: usize,
    end: usize,
    conn: Option<IscsiConnection<S>>,
    driver: Driver<&'a mut [u8], ISCSI_TASKS>,
    peer: Option<IpEndpoint>,
    closing: bool,
}

/// The targets as the core's storage driver sees them (one thread: the
/// exclusive access COMPARE AND WRITE asks for is a given).
struct SmolLuns<'b, D> {
    scsi: RefCell<&'b mut [ScsiTarget]>,
    disks: RefCell<&'b mut D>,
}

impl<'b, D> SmolLuns<'b, D> {
    fn new(scsi: &'b mut [ScsiTarget], disks: &'b mut D) -> Self {
        SmolLuns {
            scsi: RefCell::new(scsi),
            disks: RefCell::new(disks),
        }
    }
}

impl<D: Disks> Luns for SmolLuns<'_, D> {
    fn units<R>(&self, target: usize, f: impl FnOnce(&mut dyn Units) -> R) -> Option<R> {
        let mut scsi = self.scsi.try_borrow_mut().ok()?;
        Some(f(scsi.get_mut(target)?))
    }

    fn device<R>(
        &self,
        target: usize,
        lun: u64,
        _: Access,
        f: impl FnOnce(&mut dyn BlockDevice) -> R,
    ) -> Option<R> {
        let mut disks = self.disks.try_borrow_mut().ok()?;
        Some(f(disks.disk(target, lun)?))
    }
}

/// The iSCSI service with `C` connections.
pub(crate) struct Iscsi<'a, D: Disks, const C: usize, const S: usize> {
    config: IscsiConfig<'a>,
    slots: [Slot<'a, S>; C],
    sessions: SessionTable<C>,
    scsi: &'a mut [ScsiTarget],
    disks: D,
    next_token: u64,
    seed: u64,
}

impl<D: Disks, const C: usize, const S: usize> core::fmt::Debug for Iscsi<'_, D, C, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Iscsi")
            .field("port", &self.config.port)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn seed_bytes(seed: u64, token: u64) -> [u8; 16] {
    // splitmix64 over the seed and the token: distinct CHAP challenges per connection.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(seed ^ token);
    let b = mix(a ^ seed.rotate_left(17));
    let mut out = [0u8; 16];
    let (lo, hi) = out.split_at_mut(8);
    lo.copy_from_slice(&a.to_le_bytes());
    hi.copy_from_slice(&b.to_le_bytes());
    out
}

impl<'a, D: Disks, const C: usize, const S: usize> Iscsi<'a, D, C, S> {
    pub(crate) fn new<const RX: usize, const TX: usize>(
        config: IscsiConfig<'a>,
        sockets: &mut SocketSet<'a>,
        buffers: &'a mut [IscsiBytes<RX, TX>; C],
        scsi: &'a mut [ScsiTarget],
        disks: D,
        seed: u64,
    ) -> Self {
        let slots = buffers.each_mut().map(|b| {
            let IscsiBytes {
                tcp_rx,
                tcp_tx,
                pdu,
                collect,
                bounce,
            } = b;
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut tcp_rx[..]),
                tcp::SocketBuffer::new(&mut tcp_tx[..]),
            );
            Slot {
                socket: sockets.add(socket),
                pdu: &mut pdu[..],
                start: 0,
                end: 0,
                conn: None,
                driver: Driver::new(&mut collect[..], &mut bounce[..]),
                peer: None,
                closing: false,
            }
        });
        Iscsi {
            config,
            slots,
            sessions: SessionTable::new(),
            scsi,
            disks,
            next_token: 1,
            seed,
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.conn.as_ref()?.poll_timeout())
            .min()
    }

    /// Handles every connection. True if anything moved.
    pub(crate) fn process(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        let mut moved = false;
        let mut reinstated = None;
        for i in 0..C {
            let (m, r) = self.process_slot(i, now, sockets, scratch, on_event);
            moved |= m;
            reinstated = reinstated.or(r);
        }
        if let Some(token) = reinstated {
            for i in 0..C {
                let hit = self
                    .slots
                    .get(i)
                    .and_then(|s| s.conn.as_ref())
                    .is_some_and(|c| c.token() == token);
                if hit {
                    self.finish(
                        i,
                        now,
                        sockets,
                        on_event,
                        "session replaced by a new login of the same initiator",
                    );
                    if let Some(s) = self.slots.get(i) {
                        sockets.get_mut::<tcp::Socket>(s.socket).abort();
                    }
                }
            }
        }
        moved
    }

    /// Ends slot `i`'s connection: abort the machine, release its tasks and session.
    fn finish(
        &mut self,
        i: usize,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        on_event: &mut dyn FnMut(Event<'_>),
        reason: &'static str,
    ) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        let luns = SmolLuns::new(self.scsi, &mut self.disks);
        slot.driver.bind(&luns).end(&mut conn);
        self.sessions.release(conn.token());
        slot.start = 0;
        slot.end = 0;
        slot.closing = false;
        let socket = sockets.get_mut::<tcp::Socket>(slot.socket);
        socket.close();
        if let Some(peer) = slot.peer.take() {
            let s = conn.stats();
            on_event(Event::IscsiClosed {
                peer,
                reason,
                idle_ms: now.saturating_since(conn.last_activity()).millis(),
                pdus_in: s.pdus_in,
                pdus_out: s.pdus_out,
            });
        }
    }

    /// Returns (moved, token of a connection a login reinstated).
    fn process_slot(
        &mut self,
        i: usize,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> (bool, Option<u64>) {
        let port = self.config.port;
        let Some(slot) = self.slots.get_mut(i) else {
            return (false, None);
        };
        let socket = sockets.get_mut::<tcp::Socket>(slot.socket);
        if slot.conn.is_none() {
            if !socket.is_open() {
                // Cannot fail: the socket is closed and the port is not 0.
                let _ = socket.listen(port);
            }
            if socket.state() != tcp::State::Established {
                return (false, None);
            }
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1);
            slot.conn = Some(Connection::new(
                now,
                token,
                self.config.limits(),
                seed_bytes(self.seed, token),
            ));
            slot.peer = socket.remote_endpoint();
            socket.set_nagle_enabled(false);
            // A vanished peer: keep-alives on an idle socket, and the abort
            // when neither data nor keep-alives are acknowledged in time
            // (mid-transfer the core cannot ping: the TX ring is full).
            let timeout = self.config.nop_in_timeout_ms.max(1000);
            socket.set_timeout(Some(smoltcp::time::Duration::from_millis(timeout)));
            socket.set_keep_alive(Some(smoltcp::time::Duration::from_millis(timeout / 3)));
            // An initiator with Nagle on holds a Data-Out until the command
            // before it is acknowledged: a delayed ACK would cost every
            // write its delay.
            socket.set_ack_delay(None);
            if let Some(peer) = slot.peer {
                on_event(Event::IscsiConnected { peer });
            }
        }
        let Some(conn) = slot.conn.as_mut() else {
            return (false, None);
        };
        let targets = self.config.targets;
        let luns = SmolLuns::new(self.scsi, &mut self.disks);
        let mut moved = false;
        let mut reinstated = None;
        let mut close = slot.closing;

        // 1. input: whole PDUs from the reassembly buffer.
        if let Some(room) = slot.pdu.get_mut(slot.end..) {
            if let Ok(n) = socket.recv_slice(room) {
                slot.end = slot.end.saturating_add(n);
                moved |= n > 0;
            }
        }
        loop {
            let input = slot.pdu.get(slot.start..slot.end).unwrap_or_default();
            let n = conn.handle_input(now, input, &targets, &mut slot.driver.bind(&luns));
            if n == 0 {
                break;
            }
            slot.start = slot.start.saturating_add(n).min(slot.end);
        }
        self.sessions.touch(conn.token(), conn.last_activity());
        if slot.start == slot.end {
            (slot.start, slot.end) = (0, 0);
        } else if slot.start > 0 {
            slot.pdu.copy_within(slot.start..slot.end, 0);
            slot.end -= slot.start;
            slot.start = 0;
        }
        // A full buffer the machine takes nothing from can never progress.
        let stuck = slot.start == 0 && slot.end == slot.pdu.len();
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }

        // 2–4 until nothing moves: events, storage, output.
        for _ in 0..64 {
            let mut progress = false;
            while let Some(ev) = conn.poll_event() {
                progress = true;
                match ev {
                    IscsiEvent::SessionRequest(req) => {
                        if let Ok(adm) = slot.driver.admit(conn, &mut self.sessions, now, &req) {
                            if let (Some(peer), Some(over)) = (slot.peer, adm.takeover) {
                                on_event(Event::IscsiTakeover {
                                    peer,
                                    initiator: conn.initiator_name(),
                                    old_tsih: over.tsih,
                                    old_idle_ms: over.idle.millis(),
                                });
                            }
                            reinstated = reinstated.or(adm.reinstated);
                        }
                    }
                    IscsiEvent::LoggedIn { target, .. } => {
                        if let Some(peer) = slot.peer {
                            on_event(Event::IscsiLogin {
                                peer,
                                initiator: conn.initiator_name(),
                                target: target.and_then(|t| targets.targets.get(t)).map(|t| t.name),
                            });
                        }
                    }
                    IscsiEvent::Close => close = true,
                }
            }
            if slot.driver.bind(&luns).run_storage(conn, now) > 0 {
                progress = true;
            }
            loop {
                let free = socket.send_capacity().saturating_sub(socket.send_queue());
                let room = free.min(scratch.len());
                if room < MIN_TX_ROOM {
                    break;
                }
                let Some(buf) = scratch.get_mut(..room) else {
                    break;
                };
                let Some(n) = conn.poll_transmit(now, buf, &mut slot.driver.bind(&luns)) else {
                    break;
                };
                progress = true;
                if let Some(pdu) = buf.get(..n) {
                    // `room` fits: this cannot come up short.
                    let _ = socket.send_slice(pdu);
                }
            }
            moved |= progress;
            if !progress {
                break;
            }
        }
        slot.closing = close;
        let peer_gone = !socket.is_active() || !socket.may_recv();
        // `close` is graceful in smoltcp: queued PDUs go out before the FIN.
        let ended = close || conn.is_closed() || peer_gone || stuck;
        if ended {
            let reason = if stuck {
                "receive buffer full"
            } else if conn.close_reason() == Some(CloseReason::PeerTimeout) {
                "peer timeout: no answer to a NOP-In ping"
            } else if close || conn.is_closed() {
                "logout"
            } else if socket.state() == tcp::State::Closed {
                // A reset, or smoltcp's abort: no ACK for data or
                // keep-alives within the timeout.
                "connection reset or timed out (TCP data or keep-alives unacknowledged)"
            } else {
                "closed by initiator"
            };
            self.finish(i, now, sockets, on_event, reason);
            moved = true;
        }
        (moved, reinstated)
    }
}
