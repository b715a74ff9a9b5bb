//! One iSCSI connection (= one session: MaxConnections=1) as a sans-I/O
//! machine over a TCP byte stream: login, then the full feature phase.
//!
//! See the module docs of [`super`] for the host loop.

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
            && !self.releases.iter().any(|io| io.slot() == slot)
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
            let _ = self.releases.push_back(io);
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

    // ---------------------------------------------------------------- input

    /// Feed received bytes. Returns how many were consumed: one whole PDU, or
    /// 0 when `rx` does not yet hold a whole PDU (read more and call again
    /// with the unconsumed bytes first). Call repeatedly while it returns > 0,
    /// and drain `poll_event`, `poll_transmit` and `poll_storage` after.
    #[must_use = "the consumed bytes must be dropped from the receive buffer"]
    pub fn handle_input<B: Backend>(
        &mut self,
        now: Instant,
        rx: &[u8],
        targets: &Targets<'_>,
        backend: &mut B,
    ) -> usize {
        match self.state {
            State::Closing | State::Closed => return rx.len(),
            State::AwaitSession => return 0,
            State::Login | State::FullFeature => {}
        }
        let Some(head) = rx.get(..BHS_LEN) else {
            return 0;
        };
        let bhs = Bhs::new_unchecked(head);
        let layout = pdu_len(&bhs, self.rx_digests);
        let max_data = if self.state == State::Login {
            super::login::MAX_LOGIN_TEXT
        } else {
            self.params.target_mrdsl as usize
        };
        if layout.data_len > max_data {
            // We cannot even find the next PDU boundary safely.
            self.protocol_error();
            return rx.len();
        }
        let Some(pdu) = rx.get(..layout.total_len) else {
            return 0;
        };
        self.stats.pdus_in += 1;
        // Any PDU proves the initiator is alive, not only the ping's answer.
        self.last_rx = self.last_rx.max(now);
        self.ping = None;
        let header_end = BHS_LEN + layout.ahs_len;
        if self.rx_digests.header {
            let want = (self.crc)(0, pdu.get(..header_end).unwrap_or(&[]));
            let got = pdu.get(header_end..header_end + DIGEST_LEN).unwrap_or(&[]);
            if got != want.to_le_bytes() {
                // At ERL 0 a bad header cannot be trusted at all (RFC 7143 §7.8).
                self.stats.digest_errors += 1;
                self.protocol_error();
                return rx.len();
            }
        }
        let data = pdu
            .get(layout.data_offset..layout.data_offset + layout.data_len)
            .unwrap_or(&[]);
        if self.rx_digests.data && layout.data_len > 0 {
            let padded = pdu
                .get(layout.data_offset..layout.data_offset + pad4(layout.data_len))
                .unwrap_or(&[]);
            let want = (self.crc)(0, padded);
            let at = layout.data_offset + pad4(layout.data_len);
            let got = pdu.get(at..at + DIGEST_LEN).unwrap_or(&[]);
            if got != want.to_le_bytes() {
                self.stats.digest_errors += 1;
                self.reject(RejectReason::DataDigestError, &bhs);
                return layout.total_len;
            }
        }
        let ahs = pdu.get(BHS_LEN..header_end).unwrap_or(&[]);
        let parsed = match InitiatorPdu::parse(&bhs) {
            Ok(p) => p,
            Err(_) => {
                self.protocol_error();
                return rx.len();
            }
        };
        if self.state == State::Login {
            match parsed {
                InitiatorPdu::Login(req) => self.on_login(&req, data, targets),
                _ => {
                    // Anything but a Login Request before full feature phase.
                    self.protocol_error();
                }
            }
            return layout.total_len;
        }
        match parsed {
            InitiatorPdu::ScsiCommand(cmd) => self.on_command(&bhs, &cmd, ahs, data, backend),
            InitiatorPdu::DataOut(d) => self.on_data_out(&d, data, backend),
            InitiatorPdu::NopOut(n) => self.on_nop_out(&bhs, &n, data),
            // A discovery session has no LUNs: task management there would
            // reach whichever target happens to be index 0 (RFC 7143 §4.3:
            // only Text and Logout are allowed in discovery).
            InitiatorPdu::TaskMgmt(_) if self.discovery => {
                self.reject(RejectReason::ProtocolError, &bhs)
            }
            InitiatorPdu::TaskMgmt(t) => self.on_tmf(&t, backend),
            InitiatorPdu::Text(t) => self.on_text(&bhs, &t, data, targets),
            InitiatorPdu::Logout(l) => self.on_logout(&l),
            InitiatorPdu::Login(_) => {
                // A login on a connection in full feature phase is a protocol error.
                self.reject(RejectReason::ProtocolError, &bhs);
            }
            InitiatorPdu::Other(Opcode::SnackRequest) => {
                // ERL 0: no SNACK support.
                self.reject(RejectReason::CommandNotSupported, &bhs);
            }
            InitiatorPdu::Other(_) => self.reject(RejectReason::CommandNotSupported, &bhs),
        }
        layout.total_len
    }

    fn on_login(&mut self, req: &LoginRequest, data: &[u8], targets: &Targets<'_>) {
        match self.login.handle(req, data, targets, &self.limits) {
            LoginStep::Respond => self.login_response_pending = true,
            LoginStep::NeedSession(s) => {
                self.state = State::AwaitSession;
                let _ = self.events.push_back(Event::SessionRequest(s));
            }
            LoginStep::Fail(status) => {
                debug!("iscsi: login failed: {:?}", status);
                self.login_response_pending = true;
                self.close(CloseReason::LoginFailed(status));
            }
        }
    }

    /// Answer to [`Event::SessionRequest`]: the session table admitted it.
    /// If `adm.reinstated` names another connection, close that one.
    pub fn session_admitted(&mut self, adm: &Admission) {
        if self.state != State::AwaitSession {
            return;
        }
        self.login.session_granted(adm.tsih);
        self.login_response_pending = true;
        self.nexus = adm.nexus;
        self.target = self.login.target();
        self.discovery = self.login.is_discovery();
        self.params = *self.login.params();
        self.rx_digests = Digests {
            header: self.params.header_digest,
            data: self.params.data_digest,
        };
        let (resp, _) = self.login.response();
        self.exp_cmd_sn = resp.exp_cmd_sn;
        self.max_cmd_sn = resp.max_cmd_sn;
        self.stat_sn = self.login.next_stat_sn();
        self.state = State::FullFeature;
        self.login_deadline = None;
        let _ = self.events.push_back(Event::LoggedIn {
            nexus: self.nexus,
            target: if self.discovery { None } else { self.target },
        });
    }

    /// Answer to [`Event::SessionRequest`]: refused (e.g. the table is full).
    pub fn session_refused(&mut self, status: LoginStatus) {
        if self.state != State::AwaitSession {
            return;
        }
        self.login.session_refused(status);
        self.login_response_pending = true;
        self.state = State::Login;
        self.close(CloseReason::LoginFailed(status));
    }

    /// Check CmdSN of a non-immediate request; true when it may proceed.
    fn accept_cmd_sn(&mut self, immediate: bool, cmd_sn: u32) -> bool {
        if immediate {
            return true;
        }
        // In window: ExpCmdSN <= CmdSN <= MaxCmdSN (serial arithmetic).
        let in_window = !sn_lt(cmd_sn, self.exp_cmd_sn) && !sn_lt(self.max_cmd_sn, cmd_sn);
        if !in_window {
            self.stats.cmdsn_dropped += 1;
            return false;
        }
        self.exp_cmd_sn = cmd_sn.wrapping_add(1);
        true
    }

    fn find_task(&self, itt: u32) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| !t.is_free() && t.phase != Phase::Aborted && t.itt == itt)
    }

    fn on_command<T: AsRef<[u8]>, B: Backend>(
        &mut self,
        bhs: &Bhs<T>,
        cmd: &ScsiCommand,
        ahs: &[u8],
        data: &[u8],
        backend: &mut B,
    ) {
        if self.discovery {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        if !self.accept_cmd_sn(cmd.immediate, cmd.cmd_sn) {
            return;
        }
        if self.find_task(cmd.itt).is_some() {
            self.reject(RejectReason::TaskInProgress, bhs);
            return;
        }
        let unsolicited_end = if cmd.write {
            if self.params.initial_r2t {
                data.len() as u32
            } else {
                self.params.first_burst_length.min(cmd.edtl)
            }
        } else {
            0
        };
        if !data.is_empty()
            && (!self.params.immediate_data
                || !cmd.write
                || data.len() as u32 > cmd.edtl
                || data.len() as u32 > self.params.first_burst_length)
        {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        let Some(slot) = (0..TASKS).find(|&i| self.slot_free(i)) else {
            // TASK SET FULL.
            self.queue_ctrl(Ctrl::Status {
                itt: cmd.itt,
                status: 0x28,
            });
            return;
        };
        let Some(target) = self.target else {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        };
        let nexus = self.nexus;
        let self_initial_r2t = self.params.initial_r2t;
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        t.reset();
        t.itt = cmd.itt;
        t.lun_raw = cmd.lun;
        t.lun = decode_lun(cmd.lun);
        t.cmd_sn = cmd.cmd_sn;
        t.edtl = cmd.edtl;
        t.read = cmd.read;
        t.write = cmd.write;
        t.attr = cmd.attr;
        match super::pdu::full_cdb(&cmd.cdb, ahs, &mut t.cdb) {
            Some(n) => t.cdb_len = n,
            None => {
                // Longer than MAX_CDB: let the SCSI layer refuse the opcode
                // from the first 16 bytes (INVALID FIELD / OPCODE).
                t.cdb_len = 16;
            }
        }
        t.unsolicited_open = cmd.write && !cmd.final_bit && !self_initial_r2t;
        t.unsolicited_end = unsolicited_end.max(data.len() as u32);
        t.phase = Phase::Collecting;
        let req = ScsiRequest {
            nexus,
            target,
            lun: t.lun,
            lun_raw: t.lun_raw,
            io: t.io(slot),
            itt: t.itt,
            cdb: t.cdb.get(..t.cdb_len).unwrap_or(&[]),
            edtl: t.edtl,
            read: t.read,
            write: t.write,
            attr: t.attr,
        };
        let plan = backend.scsi_command(&req, &mut t.scratch);
        self.apply_plan(slot, plan, backend);
        // Immediate data is the first piece of the unsolicited burst.
        if !data.is_empty() {
            let is_collecting = self
                .tasks
                .get(slot)
                .is_some_and(|t| t.phase == Phase::Collecting);
            if is_collecting {
                // R2Ts planned before the immediate data counted are not sent yet: redo them.
                if let Some(t) = self.tasks.get_mut(slot) {
                    t.r2ts.clear();
                    t.next_r2t_offset = 0;
                }
                self.accept_data(slot, 0, data, backend);
                self.after_data(slot, backend);
            }
        }
    }

    fn apply_plan<B: Backend>(&mut self, slot: usize, plan: Plan, backend: &mut B) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        // A storage plan means the backend keeps state for this task from
        // now on (the driver's collection buffer, say): it must hear
        // `Release` however the task ends, even before any data arrived or
        // any storage request was polled (ABORT TASK, LUN reset, a bad
        // Data-Out, connection loss).
        if !matches!(plan, Plan::Complete { .. } | Plan::ReceiveParameters { .. }) {
            t.used_storage = true;
        }
        match plan {
            Plan::Complete {
                status,
                data_len,
                sense_len,
            } => {
                let data_len = data_len.min(SCRATCH as u32);
                t.status = status;
                t.sense_at = data_len;
                t.sense_len = sense_len.min((SCRATCH as u32).saturating_sub(data_len));
                if t.read {
                    let sent = data_len.min(t.edtl);
                    t.residual = Residual::of(t.edtl, data_len);
                    t.data_in_len = sent;
                    t.phase = if sent > 0 {
                        Phase::DataIn(Source::Scratch)
                    } else {
                        Phase::Respond
                    };
                } else {
                    // A write plan already fixed the residual; otherwise the
                    // command consumed no Data-Out at all.
                    if !t.residual_fixed {
                        t.residual = Residual::of(if t.write { t.edtl } else { 0 }, 0);
                    }
                    t.data_in_len = 0;
                    t.phase = Phase::Respond;
                }
            }
            Plan::Read { offset, len } => {
                let sent = if t.read { len.min(t.edtl) } else { 0 };
                t.residual = Residual::of(if t.read { t.edtl } else { 0 }, len);
                t.data_in_len = sent;
                t.status = 0;
                t.phase = if sent == 0 {
                    Phase::Respond
                } else {
                    Phase::StorageQueued(StorageOp::Read { offset, len: sent })
                };
            }
            Plan::Write { offset, len, fua } => {
                let edtl = if t.write { t.edtl } else { 0 };
                // SPDTL > EDTL: process normally but transfer (and write)
                // only EDTL bytes, with an overflow residual (FCP-4 option a,
                // what libiscsi's iSCSIResiduals suite checks).
                t.residual = Residual::of(edtl, len);
                t.residual_fixed = true;
                let len = len.min(edtl);
                t.status = 0;
                if len == 0 {
                    t.phase = Phase::StorageQueued(StorageOp::Write {
                        offset,
                        len: 0,
                        fua,
                    });
                    return;
                }
                t.sink = Sink::Storage { offset, fua };
                t.xfer_len = len;
                t.phase = Phase::Collecting;
                self.schedule_r2ts(slot);
            }
            Plan::ReceiveParameters { len } => {
                let edtl = if t.write { t.edtl } else { 0 };
                t.residual = Residual::of(edtl, len);
                t.residual_fixed = true;
                let len = len.min(edtl).min(SCRATCH as u32);
                t.sink = Sink::Scratch;
                t.xfer_len = len;
                t.phase = Phase::Collecting;
                if len == 0 {
                    self.finish_collect(slot, backend);
                } else {
                    self.schedule_r2ts(slot);
                }
            }
            Plan::Flush => t.phase = Phase::StorageQueued(StorageOp::Flush),
            Plan::Unmap { offset, len } => {
                t.phase = Phase::StorageQueued(StorageOp::Unmap { offset, len })
            }
            Plan::WriteSame {
                offset,
                len,
                pattern_len,
            } => {
                t.phase = Phase::StorageQueued(StorageOp::WriteSame {
                    offset,
                    len,
                    pattern_len: pattern_len.min(SCRATCH as u32),
                })
            }
        }
    }

    /// Plan R2Ts for the solicited part of a write.
    fn schedule_r2ts(&mut self, slot: usize) {
        let max_outstanding = usize::from(self.params.max_outstanding_r2t).clamp(1, MAX_R2T);
        let max_burst = self.params.max_burst_length.max(512);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        if t.phase != Phase::Collecting || t.unsolicited_open {
            return;
        }
        if t.next_r2t_offset < t.wire_offset {
            t.next_r2t_offset = t.wire_offset;
        }
        while t.r2ts.len() < max_outstanding && t.next_r2t_offset < t.xfer_len {
            let len = (t.xfer_len - t.next_r2t_offset).min(max_burst);
            let ttt = self.next_ttt;
            self.next_ttt = self.next_ttt.wrapping_add(1);
            if self.next_ttt == RESERVED_TAG {
                self.next_ttt = 1;
            }
            let r = R2tState {
                ttt,
                offset: t.next_r2t_offset,
                len,
                sent: false,
            };
            if t.r2ts.push_back(r).is_err() {
                break;
            }
            t.next_r2t_offset += len;
        }
    }

    /// Deliver in-order Data-Out bytes at `offset` to the task's sink.
    fn accept_data<B: Backend>(&mut self, slot: usize, offset: u32, data: &[u8], backend: &mut B) {
        let target = self.target.unwrap_or(0);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let end = offset.saturating_add(data.len() as u32);
        t.wire_offset = end;
        // Keep only what the command consumes; the rest (EDTL > SPDTL) is dropped.
        let keep = t.xfer_len.saturating_sub(offset).min(data.len() as u32) as usize;
        let Some(kept) = data.get(..keep) else {
            return;
        };
        if kept.is_empty() {
            return;
        }
        match t.sink {
            Sink::Storage { offset: base, .. } => {
                // The host may buffer this: it hears `Release` when the task ends.
                t.used_storage = true;
                backend.write_data(WriteChunk {
                    io: t.io(slot),
                    target,
                    lun: t.lun,
                    offset: base + u64::from(offset),
                    data: kept,
                })
            }
            Sink::Scratch => {
                let at = offset as usize;
                if let Some(d) = t.scratch.get_mut(at..at + kept.len()) {
                    d.copy_from_slice(kept);
                }
            }
        }
    }

    /// After data arrived: finish the collection or ask for more.
    fn after_data<B: Backend>(&mut self, slot: usize, backend: &mut B) {
        let Some(t) = self.tasks.get(slot) else {
            return;
        };
        if t.phase != Phase::Collecting {
            return;
        }
        if t.wire_offset >= t.xfer_len {
            self.finish_collect(slot, backend);
        } else {
            self.schedule_r2ts(slot);
        }
    }

    fn finish_collect<B: Backend>(&mut self, slot: usize, backend: &mut B) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        t.r2ts.clear();
        match t.sink {
            Sink::Storage { offset, fua } => {
                t.phase = Phase::StorageQueued(StorageOp::Write {
                    offset,
                    len: t.xfer_len,
                    fua,
                });
            }
            Sink::Scratch => {
                let len = t.xfer_len;
                self.resume(slot, Resume::Parameters { len }, backend);
            }
        }
    }

    fn resume<B: Backend>(&mut self, slot: usize, why: Resume, backend: &mut B) {
        let nexus = self.nexus;
        let target = self.target.unwrap_or(0);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let req = ScsiRequest {
            nexus,
            target,
            lun: t.lun,
            lun_raw: t.lun_raw,
            io: t.io(slot),
            itt: t.itt,
            cdb: t.cdb.get(..t.cdb_len).unwrap_or(&[]),
            edtl: t.edtl,
            read: t.read,
            write: t.write,
            attr: t.attr,
        };
        let plan = backend.scsi_resume(&req, why, &mut t.scratch);
        self.apply_plan(slot, plan, backend);
    }

    fn on_data_out<B: Backend>(&mut self, d: &DataOut, data: &[u8], backend: &mut B) {
        let Some(slot) = self.find_task(d.itt) else {
            // Late unsolicited data after an early status, or an aborted task.
            self.stats.stray_data_out += 1;
            return;
        };
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        if t.phase != Phase::Collecting {
            self.stats.stray_data_out += 1;
            return;
        }
        // A Data-Out sequence error ends the command (ERL 0 cannot recover
        // it) but not the connection: CHECK CONDITION, ABORTED COMMAND /
        // DATA PHASE ERROR. Later Data-Out for it is ignored as stray.
        let end = d.buffer_offset.saturating_add(data.len() as u32);
        let ok = if d.buffer_offset != t.wire_offset || data.is_empty() {
            false
        } else if d.ttt == RESERVED_TAG {
            // Unsolicited burst.
            t.unsolicited_open && d.data_sn == t.unsolicited_data_sn && end <= t.unsolicited_end
        } else {
            t.r2ts.front().is_some_and(|r| {
                r.sent
                    && d.ttt == r.ttt
                    && d.data_sn == t.seq_data_sn
                    && end <= r.offset + r.len
                    && (!d.final_bit || end == r.offset + r.len)
            })
        };
        if !ok {
            self.stats.data_sequence_errors += 1;
            t.check_condition(0x0b, 0x4b, 0x00);
            return;
        }
        if d.ttt == RESERVED_TAG {
            t.unsolicited_data_sn = t.unsolicited_data_sn.wrapping_add(1);
            if d.final_bit {
                t.unsolicited_open = false;
            }
        } else {
            t.seq_data_sn = t.seq_data_sn.wrapping_add(1);
            if d.final_bit {
                let _ = t.r2ts.pop_front();
                t.seq_data_sn = 0;
            }
        }
        self.accept_data(slot, d.buffer_offset, data, backend);
        let unsolicited_open = self.tasks.get(slot).is_some_and(|t| t.unsolicited_open);
        let done = self
            .tasks
            .get(slot)
            .is_some_and(|t| t.wire_offset >= t.xfer_len);
        if done || !unsolicited_open {
            self.after_data(slot, backend);
        }
    }

    fn on_nop_out<T: AsRef<[u8]>>(&mut self, bhs: &Bhs<T>, n: &NopOut, data: &[u8]) {
        if !self.accept_cmd_sn(n.immediate, n.cmd_sn) {
            return;
        }
        if n.itt == RESERVED_TAG {
            // The answer to our ping (TTT echoed; `handle_input` already
            // counted it as life) or a one-way NOP: no answer.
            return;
        }
        let Ok(data) = Vec::from_slice(data) else {
            self.reject(RejectReason::OutOfResources, bhs);
            return;
        };
        self.queue_ctrl(Ctrl::NopIn {
            itt: n.itt,
            lun: n.lun,
            data,
        });
    }

    fn on_tmf<B: Backend>(&mut self, t: &TaskMgmtRequest, backend: &mut B) {
        if !self.accept_cmd_sn(t.immediate, t.cmd_sn) {
            return;
        }
        let lun = decode_lun(t.lun);
        // Only the target this session logged in to may be reset.
        let Some(target) = self.target else {
            self.queue_ctrl(Ctrl::Tmf {
                itt: t.itt,
                response: TmfResponse::Rejected,
            });
            return;
        };
        let response = match t.function {
            TmfFunction::AbortTask => match self.find_task(t.ref_task_tag) {
                Some(slot) => {
                    self.abort_task(slot);
                    TmfResponse::Complete
                }
                None => {
                    // RFC 7143 §11.5.1: a task never received (RefCmdSN in
                    // window) counts as aborted; one already done does not exist.
                    if sn_lt(t.ref_cmd_sn, self.exp_cmd_sn) {
                        TmfResponse::NoSuchTask
                    } else {
                        TmfResponse::Complete
                    }
                }
            },
            TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
                self.abort_where(|task| task.lun == lun);
                match backend.task_management(self.nexus, target, lun, t.function) {
                    TmfOutcome::NoSuchLun => TmfResponse::NoSuchLun,
                    _ => TmfResponse::Complete,
                }
            }
            TmfFunction::LogicalUnitReset => {
                self.abort_where(|task| task.lun == lun);
                match backend.task_management(self.nexus, target, lun, t.function) {
                    TmfOutcome::Complete => TmfResponse::Complete,
                    TmfOutcome::NoSuchLun => TmfResponse::NoSuchLun,
                    TmfOutcome::NotSupported => TmfResponse::NotSupported,
                }
            }
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                self.abort_all_tasks();
                let r = match backend.task_management(self.nexus, target, lun, t.function) {
                    TmfOutcome::NotSupported => TmfResponse::NotSupported,
                    _ => TmfResponse::Complete,
                };
                if t.function == TmfFunction::TargetColdReset && r == TmfResponse::Complete {
                    // A cold reset drops the connection after the response.
                    self.close_after_ctrl = Some(CloseReason::TargetColdReset);
                }
                r
            }
            TmfFunction::ClearAca | TmfFunction::TaskReassign => TmfResponse::NotSupported,
            TmfFunction::Unknown(_) => TmfResponse::Rejected,
        };
        self.queue_ctrl(Ctrl::Tmf {
            itt: t.itt,
            response,
        });
    }

    fn abort_where(&mut self, f: impl Fn(&Task<SCRATCH>) -> bool) {
        for slot in 0..TASKS {
            let hit = self.tasks.get(slot).is_some_and(|t| !t.is_free() && f(t));
            if hit {
                self.abort_task(slot);
            }
        }
    }

    fn on_text<T: AsRef<[u8]>>(
        &mut self,
        bhs: &Bhs<T>,
        t: &TextRequest,
        data: &[u8],
        targets: &Targets<'_>,
    ) {
        if !self.accept_cmd_sn(t.immediate, t.cmd_sn) {
            return;
        }
        if t.ttt != RESERVED_TAG {
            // The initiator asks for the next piece of a long response.
            if t.ttt == self.text_ttt && self.text_sent < self.text.len() {
                self.queue_ctrl(Ctrl::Text {
                    itt: t.itt,
                    lun: t.lun,
                });
            } else {
                self.reject(RejectReason::ProtocolError, bhs);
            }
            return;
        }
        if t.cont {
            // Multi-PDU text requests are not needed by any key we support.
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        let mut buf = [0u8; MAX_TEXT_RESPONSE];
        let mut out = TextWriter::new(&mut buf);
        let initiator = self.login.initiator_name();
        for p in pairs(data) {
            let Ok(p) = p else {
                break;
            };
            if p.key == "SendTargets" {
                let mut tpgt = [0u8; 20];
                let tpgt = super::text::fmt_u64(u64::from(targets.portal_group_tag), &mut tpgt);
                for (i, tc) in targets.targets.iter().enumerate() {
                    let wanted = match p.value {
                        "All" => self.discovery,
                        "" => !self.discovery && Some(i) == self.target,
                        name => tc.name.eq_ignore_ascii_case(name),
                    };
                    if !wanted || !tc.allows(initiator) {
                        continue;
                    }
                    let ok = out.push("TargetName", tc.name).is_ok()
                        && out
                            .push_parts("TargetAddress", &[targets.portal, ",", tpgt])
                            .is_ok();
                    if !ok {
                        warn!("iscsi: SendTargets response truncated");
                        break;
                    }
                }
            } else {
                let _ = out.push(p.key, "NotUnderstood");
            }
        }
        let n = out.len();
        self.text.clear();
        self.text_sent = 0;
        self.text_ttt = RESERVED_TAG;
        let _ = self.text.extend_from_slice(buf.get(..n).unwrap_or(&[]));
        self.queue_ctrl(Ctrl::Text {
            itt: t.itt,
            lun: t.lun,
        });
    }

    fn on_logout(&mut self, l: &LogoutRequest) {
        if !self.accept_cmd_sn(l.immediate, l.cmd_sn) {
            return;
        }
        let response = match l.reason {
            LogoutReason::CloseSession => 0,
            LogoutReason::CloseConnection if l.cid == self.login.cid() => 0,
            LogoutReason::CloseConnection => 1,
            LogoutReason::RemoveForRecovery => 2,
            LogoutReason::Unknown(_) => 3,
        };
        if response == 0 {
            self.abort_all_tasks();
            self.close_after_ctrl = Some(CloseReason::Logout);
        }
        self.queue_ctrl(Ctrl::Logout {
            itt: l.itt,
            response,
        });
    }

    // -------------------------------------------------------------- storage

    /// The next storage request for the host, if any. Each `Read`, `Write`,
    /// `Flush`, `Unmap` and `WriteSame` must be answered once with
    /// [`Connection::complete_storage`] (now or later, in any order).
    #[must_use]
    pub fn poll_storage(&mut self) -> Option<StorageRequest<'_>> {
        if let Some(io) = self.releases.pop_front() {
            return Some(StorageRequest::Release { io });
        }
        let target = self.target.unwrap_or(0);
        let slot = self
            .tasks
            .iter()
            .position(|t| matches!(t.phase, Phase::StorageQueued(_)))?;
        let t = self.tasks.get_mut(slot)?;
        let Phase::StorageQueued(op) = t.phase else {
            return None;
        };
        t.phase = Phase::StorageBusy(op);
        t.used_storage = true;
        let io = t.io(slot);
        let lun = t.lun;
        Some(match op {
            StorageOp::Read { offset, len } => StorageRequest::Read {
                io,
                target,
                lun,
                offset,
                len,
            },
            StorageOp::Write { offset, len, fua } => StorageRequest::Write {
                io,
                target,
                lun,
                offset,
                len,
                fua,
            },
            StorageOp::Flush => StorageRequest::Flush { io, target, lun },
            StorageOp::Unmap { offset, len } => StorageRequest::Unmap {
                io,
                target,
                lun,
                offset,
                len,
            },
            StorageOp::WriteSame {
                offset,
                len,
                pattern_len,
            } => StorageRequest::WriteSame {
                io,
                target,
                lun,
                offset,
                len,
                pattern: t.scratch.get(..pattern_len as usize).unwrap_or(&[]),
            },
        })
    }

    /// The host finished the storage request `io`.
    pub fn complete_storage<B: Backend>(
        &mut self,
        now: Instant,
        io: IoId,
        result: Result<(), crate::scsi::IoError>,
        backend: &mut B,
    ) {
        let _ = now;
        let slot = io.slot();
        let Some(t) = self.tasks.get_mut(slot) else {
            self.stats.stray_completions += 1;
            return;
        };
        if t.generation != io.generation() {
            self.stats.stray_completions += 1;
            return;
        }
        match t.phase {
            Phase::Aborted => self.end_task(slot),
            Phase::StorageBusy(StorageOp::Read { offset, .. }) if result.is_ok() => {
                t.phase = Phase::DataIn(Source::Storage { offset });
            }
            Phase::StorageBusy(_) => {
                t.data_in_len = 0;
                self.resume(slot, Resume::Storage(result), backend);
            }
            _ => self.stats.stray_completions += 1,
        }
    }

    // --------------------------------------------------------------- events

    /// Next event for the host.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----------------------------------------------------------------- time

    /// When [`Connection::handle_timeout`] must next be called: the login
    /// deadline, then in full feature phase the next NOP-In ping (after
    /// `nop_in_interval_ms` without a PDU) or the deadline of the ping in
    /// flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Login | State::AwaitSession => self.login_deadline,
            State::FullFeature => self.nop_deadline(),
            _ => None,
        }
    }

    fn nop_deadline(&self) -> Option<Instant> {
        if self.limits.nop_in_interval_ms == 0 {
            return None;
        }
        Some(match self.ping {
            Some(p) => p.deadline,
            None => self.last_rx + Duration::from_millis(self.limits.nop_in_interval_ms),
        })
    }

    /// Handle timers due at `now` (idempotent): close a login that took too
    /// long; in full feature phase send a NOP-In ping after the idle
    /// interval, and close the connection ([`CloseReason::PeerTimeout`])
    /// when the ping's deadline passes without any PDU from the initiator.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.login_deadline {
            if now >= d && matches!(self.state, State::Login | State::AwaitSession) {
                debug!("iscsi: login timed out");
                self.login_deadline = None;
                self.login_response_pending = false;
                self.close(CloseReason::LoginTimeout);
            }
        }
        if self.state != State::FullFeature {
            return;
        }
        match (self.ping, self.nop_deadline()) {
            (Some(p), _) if now >= p.deadline => {
                debug!("iscsi: NOP-In ping {:#x} unanswered: peer gone", p.ttt);
                self.ping = None;
                self.abort_all_tasks();
                self.ctrl.clear();
                self.close(CloseReason::PeerTimeout);
            }
            (None, Some(due)) if now >= due => {
                let ttt = self.alloc_ping_ttt();
                self.ping = Some(Ping {
                    ttt,
                    deadline: now + Duration::from_millis(self.limits.nop_in_timeout_ms),
                });
                self.stats.pings += 1;
                self.queue_ctrl(Ctrl::Ping { ttt });
            }
            _ => {}
        }
    }

    /// A fresh Target Transfer Tag for a ping (never 0xffffffff).
    fn alloc_ping_ttt(&mut self) -> u32 {
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        ttt
    }

    // ---------------------------------------------------------------- output

    fn data_offset(&self) -> usize {
        BHS_LEN
            + if self.tx_digests.header {
                DIGEST_LEN
            } else {
                0
            }
    }

    /// Bytes a PDU with `data_len` bytes of data needs.
    fn pdu_size(&self, data_len: usize) -> usize {
        self.data_offset()
            + pad4(data_len)
            + if self.tx_digests.data && data_len > 0 {
                DIGEST_LEN
            } else {
                0
            }
    }

    /// Digests and padding for a PDU whose BHS and data are in place.
    fn seal(&mut self, buf: &mut [u8], data_len: usize) -> Option<usize> {
        let total = self.pdu_size(data_len);
        let buf = buf.get_mut(..total)?;
        if self.tx_digests.header {
            let d = (self.crc)(0, buf.get(..BHS_LEN)?);
            buf.get_mut(BHS_LEN..BHS_LEN + DIGEST_LEN)?
                .copy_from_slice(&d.to_le_bytes());
        }
        let off = self.data_offset();
        for b in buf.get_mut(off + data_len..off + pad4(data_len))? {
            *b = 0;
        }
        if self.tx_digests.data && data_len > 0 {
            let d = (self.crc)(0, buf.get(off..off + pad4(data_len))?);
            let at = off + pad4(data_len);
            buf.get_mut(at..at + DIGEST_LEN)?
                .copy_from_slice(&d.to_le_bytes());
        }
        self.stats.pdus_out += 1;
        Some(total)
    }

    /// Write the next PDU to send into `buf` and return its length. Call
    /// until it returns `None` after every input, completion and timeout.
    /// `buf` should hold at least 56 bytes plus the initiator's
    /// MaxRecvDataSegmentLength (8 KiB for iPXE); smaller buffers get
    /// smaller Data-In PDUs, and `None` if even a header does not fit.
    #[must_use]
    pub fn poll_transmit<B: Backend>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        backend: &mut B,
    ) -> Option<usize> {
        let _ = now;
        if self.state == State::Closed {
            return None;
        }
        if self.login_response_pending {
            let n = self.emit_login_response(buf)?;
            self.login_response_pending = false;
            if self.state == State::FullFeature {
                // Digests start with the first PDU after the final response.
                self.tx_digests = self.rx_digests;
            }
            return Some(n);
        }
        if let Some(n) = self.emit_ctrl(buf) {
            return Some(n);
        }
        if self.state == State::FullFeature && self.close_after_ctrl.is_none() {
            if let Some(n) = self.emit_r2t(buf) {
                return Some(n);
            }
            if let Some(n) = self.emit_task_output(buf, backend) {
                return Some(n);
            }
        }
        if self.ctrl.is_empty() {
            if let Some(why) = self.close_after_ctrl.take() {
                self.close(why);
            }
        }
        if self.state == State::Closing {
            self.lose_nexus(backend);
            self.state = State::Closed;
            let _ = self.events.push_back(Event::Close);
        }
        None
    }

    fn emit_login_response(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (resp, text) = self.login.response();
        let total = BHS_LEN + pad4(text.len());
        let out = buf.get_mut(..total)?;
        let (head, data) = out.split_at_mut(BHS_LEN);
        let mut r = *resp;
        r.data_len = text.len() as u32;
        r.emit(&mut Bhs::new_unchecked(head));
        data.get_mut(..text.len())?.copy_from_slice(text);
        for b in data.get_mut(text.len()..)? {
            *b = 0;
        }
        self.stats.pdus_out += 1;
        Some(total)
    }

    fn emit_ctrl(&mut self, buf: &mut [u8]) -> Option<usize> {
        let c = self.ctrl.front()?.clone();
        let off = self.data_offset();
        let mut text_advance = None;
        let (data_len, ok) = {
            let max = self.advertise(0);
            let exp = self.exp_cmd_sn;
            let stat_sn = self.stat_sn;
            let mrdsl = self.params.initiator_mrdsl.max(512) as usize;
            if matches!(c, Ctrl::Text { .. }) && self.text_ttt == RESERVED_TAG {
                self.text_ttt = self.next_ttt;
                self.next_ttt = self.next_ttt.wrapping_add(1).max(1);
                if self.next_ttt == RESERVED_TAG {
                    self.next_ttt = 1;
                }
            }
            let text_ttt = self.text_ttt;
            let need = |n: usize| self.pdu_size(n);
            match &c {
                Ctrl::Reject { reason, bhs } => {
                    let len = need(BHS_LEN);
                    let b = buf.get_mut(..len)?;
                    Reject {
                        reason: *reason,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_sn: 0,
                        data_len: BHS_LEN as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + BHS_LEN)?.copy_from_slice(bhs);
                    (BHS_LEN, true)
                }
                Ctrl::NopIn { itt, lun, data } => {
                    let len = need(data.len());
                    let b = buf.get_mut(..len)?;
                    NopIn {
                        lun: *lun,
                        itt: *itt,
                        ttt: RESERVED_TAG,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: data.len() as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + data.len())?.copy_from_slice(data);
                    (data.len(), true)
                }
                Ctrl::Tmf { itt, response } => {
                    let b = buf.get_mut(..need(0))?;
                    TaskMgmtResponse {
                        response: *response,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Logout { itt, response } => {
                    let b = buf.get_mut(..need(0))?;
                    LogoutResponse {
                        response: *response,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        time2wait: 0,
                        time2retain: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Status { itt, status } => {
                    let b = buf.get_mut(..need(0))?;
                    ScsiResponse {
                        response: 0,
                        status: *status,
                        residual: Residual::None,
                        itt: *itt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        exp_data_sn: 0,
                        data_len: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Ping { ttt } => {
                    let b = buf.get_mut(..need(0))?;
                    NopIn {
                        lun: 0,
                        itt: RESERVED_TAG,
                        ttt: *ttt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: 0,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    (0, true)
                }
                Ctrl::Text { itt, lun } => {
                    // Pieces of at most the initiator's MaxRecvDataSegmentLength;
                    // all but the last carry C=1 and a TTT to continue with.
                    let from = self.text_sent.min(self.text.len());
                    let piece = (self.text.len() - from).min(mrdsl);
                    let more = from + piece < self.text.len();
                    let b = buf.get_mut(..need(piece))?;
                    TextResponse {
                        final_bit: !more,
                        cont: more,
                        lun: *lun,
                        itt: *itt,
                        ttt: if more { text_ttt } else { RESERVED_TAG },
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                        data_len: piece as u32,
                    }
                    .emit(&mut Bhs::new_unchecked(&mut b[..]));
                    b.get_mut(off..off + piece)?
                        .copy_from_slice(self.text.get(from..from + piece)?);
                    text_advance = Some((from + piece, more));
                    (piece, true)
                }
            }
        };
        if !ok {
            return None;
        }
        let _ = self.ctrl.pop_front();
        if let Some((sent, more)) = text_advance {
            self.text_sent = sent;
            if !more {
                self.text_ttt = RESERVED_TAG;
            }
        }
        // Every control response carries and advances StatSN (only Data-In
        // without status, R2T and a ping, RFC 7143 §11.19.4, do not).
        if !matches!(c, Ctrl::Ping { .. }) {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        self.seal(buf, data_len)
    }

    fn emit_r2t(&mut self, buf: &mut [u8]) -> Option<usize> {
        let exp = self.exp_cmd_sn;
        let max = self.advertise(0);
        let stat_sn = self.stat_sn;
        let need = self.pdu_size(0);
        for t in self.tasks.iter_mut() {
            if t.phase != Phase::Collecting {
                continue;
            }
            let itt = t.itt;
            let lun = t.lun_raw;
            let r2t_sn = t.r2t_sn;
            let Some(r) = t.r2ts.iter_mut().find(|r| !r.sent) else {
                continue;
            };
            let b = buf.get_mut(..need)?;
            R2t {
                lun,
                itt,
                ttt: r.ttt,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                r2t_sn,
                buffer_offset: r.offset,
                desired_len: r.len,
            }
            .emit(&mut Bhs::new_unchecked(&mut b[..]));
            r.sent = true;
            t.r2t_sn = t.r2t_sn.wrapping_add(1);
            return self.seal(buf, 0);
        }
        None
    }

    fn emit_task_output<B: Backend>(&mut self, buf: &mut [u8], backend: &mut B) -> Option<usize> {
        for i in 0..TASKS {
            let slot = (self.rr + i) % TASKS.max(1);
            let phase = self.tasks.get(slot).map(|t| t.phase)?;
            let n = match phase {
                Phase::DataIn(src) => self.emit_data_in(slot, src, buf, backend),
                Phase::Respond => self.emit_response(slot, buf),
                _ => continue,
            };
            if n.is_some() {
                self.rr = slot;
                return n;
            }
            return None;
        }
        None
    }

    fn emit_data_in<B: Backend>(
        &mut self,
        slot: usize,
        src: Source,
        buf: &mut [u8],
        backend: &mut B,
    ) -> Option<usize> {
        let off = self.data_offset();
        let overhead = self.pdu_size(0) + if self.tx_digests.data { DIGEST_LEN } else { 0 };
        let room = buf.len().checked_sub(overhead)? & !3;
        let mrdsl = self.params.initiator_mrdsl.max(512);
        let max_burst = self.params.max_burst_length.max(512);
        let target = self.target.unwrap_or(0);
        let exp = self.exp_cmd_sn;
        let (remaining, burst_left, good) = {
            let t = self.tasks.get(slot)?;
            let remaining = t.data_in_len.checked_sub(t.data_in_sent)?;
            (
                remaining,
                max_burst - (t.data_in_sent % max_burst),
                t.status == 0,
            )
        };
        let len_guess = remaining.min(mrdsl).min(burst_left).min(room as u32);
        let max = self.advertise(usize::from(len_guess == remaining && good));
        let t = self.tasks.get_mut(slot)?;
        let remaining = t.data_in_len.checked_sub(t.data_in_sent)?;
        // Stay inside the current burst (sequence) of MaxBurstLength.
        let burst_left = max_burst - (t.data_in_sent % max_burst);
        let len = remaining.min(mrdsl).min(burst_left).min(room as u32);
        if len == 0 {
            return None;
        }
        let offset = t.data_in_sent;
        // The data first: a failed or short read must not go out, and
        // neither may a GOOD status after it.
        let data = buf.get_mut(off..off + len as usize)?;
        let read = match src {
            Source::Scratch => {
                let at = offset as usize;
                data.copy_from_slice(t.scratch.get(at..at + len as usize)?);
                Ok(())
            }
            Source::Storage { offset: base } => backend.read_data(ReadChunk {
                io: t.io(slot),
                target,
                lun: t.lun,
                offset: base + u64::from(offset),
                dst: data,
            }),
        };
        if let Err(e) = read {
            self.resume(slot, Resume::Storage(Err(e)), backend);
            return self.emit_response(slot, buf);
        }
        let t = self.tasks.get_mut(slot)?;
        let last = len == remaining;
        let end_of_burst = last || len == burst_left;
        // GOOD status rides in the final Data-In (S bit); anything else gets
        // its own SCSI Response (iPXE needs that).
        let with_status = last && t.status == 0;
        let stat_sn = if with_status {
            let s = self.stat_sn;
            self.stat_sn = self.stat_sn.wrapping_add(1);
            s
        } else {
            self.stat_sn
        };
        DataIn {
            final_bit: end_of_burst,
            ack: false,
            status: if with_status { Some(0) } else { None },
            residual: if with_status {
                t.residual
            } else {
                Residual::None
            },
            lun: 0,
            itt: t.itt,
            ttt: RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            data_sn: t.data_sn,
            buffer_offset: offset,
            data_len: len,
        }
        .emit(&mut Bhs::new_unchecked(buf.get_mut(..BHS_LEN)?));
        t.data_sn = t.data_sn.wrapping_add(1);
        t.data_in_sent += len;
        if last {
            if with_status {
                self.end_task(slot);
            } else if let Some(t) = self.tasks.get_mut(slot) {
                t.phase = Phase::Respond;
            }
        }
        self.seal(buf, len as usize)
    }

    fn emit_response(&mut self, slot: usize, buf: &mut [u8]) -> Option<usize> {
        let off = self.data_offset();
        let max = self.advertise(1);
        let t = self.tasks.get(slot)?;
        let sense_len = t.sense_len as usize;
        let data_len = if sense_len > 0 { sense_len + 2 } else { 0 };
        let need = self.pdu_size(data_len);
        let b = buf.get_mut(..need)?;
        let stat_sn = self.stat_sn;
        ScsiResponse {
            response: 0,
            status: t.status,
            residual: t.residual,
            itt: t.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: max,
            exp_data_sn: t.data_sn.wrapping_add(t.r2t_sn),
            data_len: data_len as u32,
        }
        .emit(&mut Bhs::new_unchecked(b.get_mut(..BHS_LEN)?));
        if sense_len > 0 {
            let at = t.sense_at as usize;
            let sense = t.scratch.get(at..at + sense_len)?;
            b.get_mut(off..off + 2)?
                .copy_from_slice(&(sense_len as u16).to_be_bytes());
            b.get_mut(off + 2..off + 2 + sense_len)?
                .copy_from_slice(sense);
        }
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.end_task(slot);
        self.seal(buf, data_len)
    }
}
