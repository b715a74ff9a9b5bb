//! One iSCSI connection (= one session: MaxConnections=1) as a sans-I/O
//! machine over a TCP byte stream: login, then the full feature phase.
//!
//! See the module docs of [`super`] for the host loop. The machine's state
//! and small helpers live here; its entries are split by concern into the
//! private modules `input` (PDUs in, login, admission), `command` (SCSI
//! commands, R2Ts, Data-Out), `control` (NOP, task management, Text,
//! Logout), `storage` (requests to the host and completions), `timers`
//! (events, login deadline, NOP-In pings) and `output` (PDUs out).

mod command;
mod control;
mod input;
mod output;
mod storage;
mod timers;

use heapless::{Deque, Vec};

use super::backend::{
    Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageRequest, TmfOutcome, WriteChunk,
};
use super::config::{TargetLimits, Targets};
use super::crc32c::{crc32c_append, Crc32cFn};
use super::login::{Login, LoginStatus, LoginStep, SessionRequest};
use super::params::SessionParams;
use super::pdu::{
    pad4, pdu_len, Bhs, DataIn, DataOut, Digests, InitiatorPdu, LoginRequest, LogoutReason,
    LogoutRequest, LogoutResponse, NopIn, NopOut, Opcode, R2t, Reject, RejectReason, Residual,
    ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
    TmfFunction, TmfResponse, BHS_LEN, DIGEST_LEN, RESERVED_TAG,
};
use super::session::Admission;
use super::task::{Phase, R2tState, Sink, Source, StorageOp, Task, MAX_R2T};
use super::text::{pairs, TextWriter};
use crate::time::{Duration, Instant};

/// Largest ping data echoed in a NOP-In.
pub const MAX_PING_DATA: usize = 256;
/// Largest Text Response (SendTargets) we build.
pub const MAX_TEXT_RESPONSE: usize = 4096;
const CONTROL_QUEUE: usize = 16;
/// Command slots kept back so an immediate command always finds one.
const IMMEDIATE_RESERVE: usize = 1;

/// Things the host must act on; drain with [`Connection::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// Login reached full feature phase: admit the session in the host's
    /// [`super::SessionTable`] (`admit_at(now, conn.initiator_name(), &req, token)`)
    /// and answer with [`Connection::session_admitted`] or
    /// [`Connection::session_refused`].
    SessionRequest(SessionRequest),
    /// Full feature phase started.
    LoggedIn {
        /// I_T nexus id.
        nexus: u64,
        /// Target index (`None`: discovery session).
        target: Option<usize>,
    },
    /// Everything to send has been handed out by `poll_transmit`: close the
    /// TCP connection and release the session (`SessionTable::release`).
    /// [`Connection::close_reason`] says why.
    Close,
}

/// Why the connection closed itself (hosts log it; the peer saw it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CloseReason {
    /// The initiator logged out (Logout Response sent).
    Logout,
    /// Login refused with this status (unknown target, initiator not
    /// allowed, CHAP failed, no session slot, ...), sent in the Login Response.
    LoginFailed(LoginStatus),
    /// No login completed within `login_timeout_ms`.
    LoginTimeout,
    /// A PDU this connection cannot continue after (counted in
    /// [`Stats::protocol_errors`]).
    ProtocolError,
    /// TARGET COLD RESET: the connection drops after its response.
    TargetColdReset,
    /// The initiator sent nothing, not even an answer to a NOP-In ping,
    /// for `nop_in_interval_ms` + `nop_in_timeout_ms` (see
    /// [`TargetLimits`]): the station is gone.
    PeerTimeout,
}

/// Counters for things that went wrong without a panic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// PDUs received.
    pub pdus_in: u64,
    /// PDUs sent.
    pub pdus_out: u64,
    /// Commands outside the CmdSN window, silently ignored.
    pub cmdsn_dropped: u64,
    /// Reject PDUs sent.
    pub rejects: u64,
    /// Header or data digest mismatches.
    pub digest_errors: u64,
    /// Protocol errors that closed the connection.
    pub protocol_errors: u64,
    /// Data-Out with a wrong DataSN, offset, TTT or length: the command
    /// failed with CHECK CONDITION.
    pub data_sequence_errors: u64,
    /// Data-Out for a task we do not know (late data after an early status).
    pub stray_data_out: u64,
    /// Storage completions that matched no task.
    pub stray_completions: u64,
    /// Control responses dropped because the queue was full.
    pub control_overflow: u64,
    /// NOP-In pings sent (dead-peer detection).
    pub pings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Login,
    AwaitSession,
    FullFeature,
    /// Send what is queued, then report `Event::Close`.
    Closing,
    Closed,
}

// A short fixed queue; boxing the large variants is not possible without alloc.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Ctrl {
    Reject {
        reason: RejectReason,
        bhs: [u8; BHS_LEN],
    },
    NopIn {
        itt: u32,
        lun: u64,
        data: Vec<u8, MAX_PING_DATA>,
    },
    Tmf {
        itt: u32,
        response: TmfResponse,
    },
    Logout {
        itt: u32,
        response: u8,
    },
    /// A status without a task (TASK SET FULL).
    Status {
        itt: u32,
        status: u8,
    },
    Text {
        itt: u32,
        lun: u64,
    },
    /// A target-initiated NOP-In ping (ITT 0xffffffff, this TTT).
    Ping {
        ttt: u32,
    },
}

/// A NOP-In ping waiting for any PDU from the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ping {
    ttt: u32,
    deadline: Instant,
}

/// One iSCSI connection with up to `TASKS` outstanding commands, each with a
/// `SCRATCH`-byte buffer for command-generated data (INQUIRY, sense, ...).
#[derive(Debug)]
pub struct Connection<const TASKS: usize = 32, const SCRATCH: usize = 1024> {
    state: State,
    token: u64,
    limits: TargetLimits,
    login: Login,
    login_response_pending: bool,
    login_deadline: Option<Instant>,
    params: SessionParams,
    rx_digests: Digests,
    tx_digests: Digests,
    crc: Crc32cFn,
    nexus: u64,
    target: Option<usize>,
    discovery: bool,
    stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    tasks: [Task<SCRATCH>; TASKS],
    next_ttt: u32,
    rr: usize,
    ctrl: Deque<Ctrl, CONTROL_QUEUE>,
    text: Vec<u8, MAX_TEXT_RESPONSE>,
    /// Bytes of `text` already sent (a long response goes out in pieces).
    text_sent: usize,
    /// Target Transfer Tag of a Text Response waiting for its continuation.
    text_ttt: u32,
    releases: Deque<IoId, TASKS>,
    /// Per slot: its `Release` is in `releases` (not yet polled).
    release_queued: [bool; TASKS],
    events: Deque<Event, 4>,
    /// Close once the control queue (the Logout or TMF response) is sent.
    close_after_ctrl: Option<CloseReason>,
    close_reason: Option<CloseReason>,
    nexus_reported: bool,
    stats: Stats,
    /// When the last whole PDU arrived (dead-peer detection).
    last_rx: Instant,
    /// The ping in flight, if any; any PDU from the initiator ends it.
    ping: Option<Ping>,
}

fn decode_lun(raw: u64) -> u64 {
    let b = raw.to_be_bytes();
    match b[0] >> 6 {
        // peripheral device addressing, bus 0
        0 if b[0] == 0 => u64::from(b[1]),
        // flat space addressing
        1 => (u64::from(b[0] & 0x3f) << 8) | u64::from(b[1]),
        _ => raw,
    }
}

/// Serial number arithmetic (RFC 1982) for 32-bit sequence numbers.
fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
    /// A new connection, accepted at `now`. `token` is the host's name for it
    /// (given back in [`Admission::reinstated`]); `seed` must be random (CHAP
    /// challenges are derived from it).
    pub fn new(now: Instant, token: u64, limits: TargetLimits, seed: [u8; 16]) -> Self {
        let window = TASKS.saturating_sub(IMMEDIATE_RESERVE).max(1) as u32;
        Connection {
            state: State::Login,
            token,
            limits,
            login: Login::new(seed, window),
            login_response_pending: false,
            login_deadline: Some(now + Duration::from_millis(limits.login_timeout_ms)),
            params: SessionParams::default(),
            rx_digests: Digests::default(),
            tx_digests: Digests::default(),
            crc: crc32c_append,
            nexus: 0,
            target: None,
            discovery: false,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            tasks: core::array::from_fn(|_| Task::new()),
            next_ttt: 1,
            rr: 0,
            ctrl: Deque::new(),
            text: Vec::new(),
            text_sent: 0,
            text_ttt: RESERVED_TAG,
            releases: Deque::new(),
            release_queued: [false; TASKS],
            events: Deque::new(),
            close_after_ctrl: None,
            close_reason: None,
            nexus_reported: false,
            stats: Stats::default(),
            last_rx: now,
            ping: None,
        }
    }

    /// Use a faster CRC32C (e.g. `crc32c::crc32c_append`) for digests.
    pub fn set_crc32c(&mut self, f: Crc32cFn) {
        self.crc = f;
    }

    /// The host's token for this connection.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// InitiatorName from login (empty before the first Login Request).
    pub fn initiator_name(&self) -> &str {
        self.login.initiator_name()
    }

    /// Negotiated parameters (valid in full feature phase).
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// True once in full feature phase.
    pub fn is_full_feature(&self) -> bool {
        self.state == State::FullFeature
    }

    /// True when the connection is finished (after `Event::Close`).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// I_T nexus id (0 before login completes).
    pub fn nexus(&self) -> u64 {
        self.nexus
    }

    /// When the initiator last sent a whole PDU (any PDU: a command, data,
    /// an answer to a ping); the accept time before its first one.
    pub fn last_activity(&self) -> Instant {
        self.last_rx
    }

    /// The longest PDU the peer may send us: the host's receive buffer must
    /// hold at least this many bytes, or `handle_input` can never progress.
    pub fn max_pdu_len(&self) -> usize {
        let data =
            (self.limits.max_recv_data_segment_length as usize).max(super::login::MAX_LOGIN_TEXT);
        BHS_LEN + 255 * 4 + 2 * DIGEST_LEN + pad4(data)
    }

    /// Whether task slot `slot` may take a new command: free, and the
    /// host has been told to release what it kept for the slot's last
    /// task. So at most one `Release` per slot is ever queued, and none is
    /// dropped, however many tasks end between two `poll_storage` rounds.
    fn slot_free(&self, slot: usize) -> bool {
        self.tasks.get(slot).is_some_and(|t| t.is_free())
            && !self.release_queued.get(slot).copied().unwrap_or(true)
    }

    /// MaxCmdSN to put in the PDU being built, counting `freeing` task slots
    /// that this PDU releases. Only advertised values are enforced, and they
    /// never move backwards.
    fn advertise(&mut self, freeing: usize) -> u32 {
        let busy = (0..TASKS).filter(|&i| !self.slot_free(i)).count();
        let w = TASKS.saturating_sub(busy.saturating_sub(freeing) + IMMEDIATE_RESERVE) as u32;
        let candidate = self.exp_cmd_sn.wrapping_add(w).wrapping_sub(1);
        if sn_lt(self.max_cmd_sn, candidate) {
            self.max_cmd_sn = candidate;
        }
        self.max_cmd_sn
    }

    /// Why the connection closed itself; `None` while it is open or when
    /// only the host closed it ([`Connection::abort`]).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    fn close(&mut self, why: CloseReason) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.state = State::Closing;
        self.close_reason = Some(why);
    }

    fn protocol_error(&mut self) {
        self.stats.protocol_errors += 1;
        self.abort_all_tasks();
        self.ctrl.clear();
        self.close(CloseReason::ProtocolError);
    }

    /// The host closes the connection (TCP reset/EOF, or a reinstating login
    /// elsewhere): all tasks end now. Drain `poll_storage` for `Release`s.
    pub fn abort<B: Backend>(&mut self, backend: &mut B) {
        self.abort_all_tasks();
        self.lose_nexus(backend);
        self.ctrl.clear();
        self.login_response_pending = false;
        self.state = State::Closed;
    }

    /// Tell the SCSI layer the I_T nexus is gone, once.
    fn lose_nexus<B: Backend>(&mut self, backend: &mut B) {
        if self.nexus != 0 && !self.nexus_reported {
            self.nexus_reported = true;
            backend.nexus_lost(self.nexus);
        }
    }

    fn end_task(&mut self, slot: usize) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        if t.used_storage {
            let io = t.io(slot);
            if self.releases.is_full() {
                let _ = self.releases.pop_front();
            }
            if self.releases.push_back(io).is_ok() {
                if let Some(q) = self.release_queued.get_mut(slot) {
                    *q = true;
                }
            }
        }
        t.reset();
    }

    fn abort_task(&mut self, slot: usize) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        match t.phase {
            Phase::Free | Phase::Aborted => {}
            Phase::StorageBusy(_) => t.phase = Phase::Aborted,
            _ => self.end_task(slot),
        }
    }

    fn abort_all_tasks(&mut self) {
        for slot in 0..TASKS {
            self.abort_task(slot);
        }
    }

    fn queue_ctrl(&mut self, c: Ctrl) {
        if self.ctrl.push_back(c).is_err() {
            self.stats.control_overflow += 1;
        }
    }

    fn reject<T: AsRef<[u8]>>(&mut self, reason: RejectReason, bhs: &Bhs<T>) {
        let mut copy = [0u8; BHS_LEN];
        let src = bhs.as_bytes();
        if let Some(d) = copy.get_mut(..src.len()) {
            d.copy_from_slice(src);
        }
        self.stats.rejects += 1;
        self.queue_ctrl(Ctrl::Reject { reason, bhs: copy });
    }
}
