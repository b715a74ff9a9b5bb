//! The login phase of one connection (RFC 7143 §6): security and operational
//! stages, the C (continue) and T (transit) bits, CHAP, and the decision to
//! enter full feature phase.
//!
//! [`Login`] is pure: it turns a complete Login Request (header + text) into
//! the next Login Response (header + text kept inside it). Entering full
//! feature phase needs a session from the host's [`super::SessionTable`]; the
//! machine then returns [`LoginStep::NeedSession`] and waits for
//! [`Login::session_granted`] or [`Login::session_refused`].

use heapless::{String, Vec};

use super::chap::{self, ChallengeSource, CHALLENGE_LEN, CHAP_MD5, MAX_CHALLENGE_LEN};
use super::config::{DigestPolicy, TargetLimits, Targets};
use super::params::{negotiate, KeyOutcome, SessionParams};
use super::pdu::{LoginRequest, LoginResponse, Stage};
use super::text::{self, pairs, parse_number, TextWriter};

/// Longest iSCSI name (RFC 7143 §4.2.7.1: 223 bytes).
pub const MAX_NAME_LEN: usize = 223;
/// Largest login text we collect across C-bit PDUs.
pub const MAX_LOGIN_TEXT: usize = 8192;
/// Largest login response text.
pub const MAX_LOGIN_RESPONSE: usize = 2048;

/// Login status (Status-Class, Status-Detail), RFC 7143 §11.13.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoginStatus {
    /// 0x0000 success.
    Success,
    /// 0x0200 miscellaneous initiator error.
    InitiatorError,
    /// 0x0201 authentication failure.
    AuthFailure,
    /// 0x0202 authorization failure (initiator not allowed).
    AuthorizationFailure,
    /// 0x0203 target not found.
    NotFound,
    /// 0x0205 unsupported version.
    UnsupportedVersion,
    /// 0x0206 too many connections.
    TooManyConnections,
    /// 0x0207 missing parameter.
    MissingParameter,
    /// 0x0209 session type not supported.
    SessionTypeNotSupported,
    /// 0x020a session does not exist.
    SessionDoesNotExist,
    /// 0x020b invalid request during login.
    InvalidDuringLogin,
    /// 0x0300 target error.
    TargetError,
    /// 0x0302 out of resources.
    OutOfResources,
}

impl LoginStatus {
    /// (Status-Class, Status-Detail).
    pub fn code(self) -> (u8, u8) {
        match self {
            LoginStatus::Success => (0, 0),
            LoginStatus::InitiatorError => (2, 0),
            LoginStatus::AuthFailure => (2, 1),
            LoginStatus::AuthorizationFailure => (2, 2),
            LoginStatus::NotFound => (2, 3),
            LoginStatus::UnsupportedVersion => (2, 5),
            LoginStatus::TooManyConnections => (2, 6),
            LoginStatus::MissingParameter => (2, 7),
            LoginStatus::SessionTypeNotSupported => (2, 9),
            LoginStatus::SessionDoesNotExist => (2, 0x0a),
            LoginStatus::InvalidDuringLogin => (2, 0x0b),
            LoginStatus::TargetError => (3, 0),
            LoginStatus::OutOfResources => (3, 2),
        }
    }
}

/// A request for a session, made when the initiator enters full feature phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionRequest {
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH from the Login Request (0: new session or reinstatement).
    pub tsih: u16,
    /// Index into [`Targets::targets`]; `None` for a discovery session.
    pub target: Option<usize>,
}

/// What the connection must do after feeding a Login Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoginStep {
    /// Send [`Login::response`] and keep reading login PDUs.
    Respond,
    /// Ask the session table; then call `session_granted`/`session_refused`.
    NeedSession(SessionRequest),
    /// Send the (failure) response, then close the connection.
    Fail(LoginStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// AuthMethod not negotiated yet.
    Pending,
    /// CHAP chosen; waiting for CHAP_A.
    ChapWaitAlgorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    ChapWaitResponse {
        id: u8,
        challenge: [u8; CHALLENGE_LEN],
    },
    /// Authenticated (or no authentication required).
    Done,
}

/// Login state of one connection.
#[derive(Debug)]
pub struct Login {
    first: bool,
    stage: Stage,
    auth: Auth,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    initiator: String<MAX_NAME_LEN>,
    target: Option<usize>,
    discovery: bool,
    params: SessionParams,
    stat_sn: u32,
    tpgt_sent: bool,
    mrdsl_sent: bool,
    challenges: ChallengeSource,
    rx_text: Vec<u8, MAX_LOGIN_TEXT>,
    response: LoginResponse,
    response_text: Vec<u8, MAX_LOGIN_RESPONSE>,
    window: u32,
}

fn empty_response() -> LoginResponse {
    LoginResponse {
        transit: false,
        cont: false,
        csg: Stage::Security,
        nsg: Stage::Security,
        version_max: 0,
        version_active: 0,
        isid: [0; 6],
        tsih: 0,
        itt: 0,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        status_class: 0,
        status_detail: 0,
        data_len: 0,
    }
}

impl Login {
    /// A connection waiting for its first Login Request. `seed` feeds CHAP
    /// challenges; `window` is how many commands the session will accept
    /// (MaxCmdSN - ExpCmdSN + 1).
    pub fn new(seed: [u8; 16], window: u32) -> Self {
        Login {
            first: true,
            stage: Stage::Security,
            auth: Auth::Pending,
            isid: [0; 6],
            tsih: 0,
            cid: 0,
            initiator: String::new(),
            target: None,
            discovery: false,
            params: SessionParams::default(),
            stat_sn: 0,
            tpgt_sent: false,
            mrdsl_sent: false,
            challenges: ChallengeSource::new(seed),
            rx_text: Vec::new(),
            response: empty_response(),
            response_text: Vec::new(),
            window: window.max(1),
        }
    }

    /// InitiatorName (empty until the first request).
    pub fn initiator_name(&self) -> &str {
        &self.initiator
    }

    /// Target index, once known.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Is this a discovery session?
    pub fn is_discovery(&self) -> bool {
        self.discovery
    }

    /// Negotiated parameters so far.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// ISID of the session being logged in.
    pub fn isid(&self) -> [u8; 6] {
        self.isid
    }

    /// CID of this connection.
    pub fn cid(&self) -> u16 {
        self.cid
    }

    /// StatSN the first full feature phase response will carry.
    pub fn next_stat_sn(&self) -> u32 {
        self.stat_sn
    }

    /// The response to send: header and text.
    pub fn response(&self) -> (&LoginResponse, &[u8]) {
        (&self.response, &self.response_text)
    }

    /// Feed one Login Request PDU with its data segment.
    pub fn handle(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        targets: &Targets<'_>,
        limits: &TargetLimits,
    ) -> LoginStep {
        self.response_text.clear();
        self.response = LoginResponse {
            transit: false,
            cont: false,
            csg: req.csg,
            nsg: Stage::Security,
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn.wrapping_add(self.window - 1),
            status_class: 0,
            status_detail: 0,
            data_len: 0,
        };
        if self.first {
            // ExpStatSN of a first Login Request means nothing (iPXE sends 1);
            // our StatSN starts at 0, as tgt's does.
            if req.version_min > 0 {
                return self.fail(LoginStatus::UnsupportedVersion);
            }
            self.isid = req.isid;
            self.tsih = req.tsih;
            self.cid = req.cid;
        } else if req.isid != self.isid || req.tsih != self.tsih || req.cid != self.cid {
            return self.fail(LoginStatus::InitiatorError);
        }
        if req.csg != self.stage
            && !(self.first && req.csg == Stage::Operational && self.stage == Stage::Security)
        {
            return self.fail(LoginStatus::InitiatorError);
        }
        if req.transit
            && !matches!(
                (req.csg, req.nsg),
                (Stage::Security, Stage::Operational | Stage::FullFeature)
                    | (Stage::Operational, Stage::FullFeature)
            )
        {
            return self.fail(LoginStatus::InitiatorError);
        }
        if req.transit && req.cont {
            return self.fail(LoginStatus::InitiatorError);
        }
        if self.rx_text.extend_from_slice(data).is_err() {
            return self.fail(LoginStatus::OutOfResources);
        }
        if req.cont {
            // More text follows: answer with an empty response (§6.1.1).
            self.advance_stat_sn();
            return LoginStep::Respond;
        }
        let step = self.process(req, targets, limits);
        self.rx_text.clear();
        step
    }

    fn advance_stat_sn(&mut self) {
        self.stat_sn = self.stat_sn.wrapping_add(1);
    }

    fn fail(&mut self, status: LoginStatus) -> LoginStep {
        let (c, d) = status.code();
        self.response.status_class = c;
        self.response.status_detail = d;
        self.response.transit = false;
        self.response.nsg = Stage::Security;
        self.response_text.clear();
        self.response.data_len = 0;
        self.advance_stat_sn();
        LoginStep::Fail(status)
    }

    fn process(
        &mut self,
        req: &LoginRequest,
        targets: &Targets<'_>,
        limits: &TargetLimits,
    ) -> LoginStep {
        let text_buf = core::mem::take(&mut self.rx_text);
        let mut out_buf = [0u8; MAX_LOGIN_RESPONSE];
        let mut out = TextWriter::new(&mut out_buf);
        let r = self.process_keys(req, &text_buf, targets, limits, &mut out);
        let n = out.len();
        if let Err(status) = r {
            if status == LoginStatus::AuthFailure {
                // Who tried which target: the one line an operator needs to
                // tell a mistyped secret from a station posing as another.
                let target = self
                    .target
                    .and_then(|i| targets.targets.get(i))
                    .map_or("", |t| t.name);
                warn!(
                    "iSCSI CHAP authentication failed: initiator {} target {}",
                    self.initiator.as_str(),
                    target
                );
            }
            return self.fail(status);
        }
        self.first = false;
        if self
            .response_text
            .extend_from_slice(out_buf.get(..n).unwrap_or(&[]))
            .is_err()
        {
            return self.fail(LoginStatus::TargetError);
        }
        self.response.data_len = self.response_text.len() as u32;
        // A target that requires digests refuses a session that reaches full
        // feature phase without them (both default to None when not offered).
        let required = !self.discovery
            && self
                .target
                .and_then(|i| targets.targets.get(i))
                .is_some_and(|t| t.digest == DigestPolicy::Required);
        if required
            && self.response.transit
            && self.response.nsg == Stage::FullFeature
            && !(self.params.header_digest && self.params.data_digest)
        {
            return self.fail(LoginStatus::InitiatorError);
        }
        self.advance_stat_sn();
        if self.response.transit && self.response.nsg == Stage::FullFeature {
            self.params.finish();
            return LoginStep::NeedSession(SessionRequest {
                isid: self.isid,
                tsih: self.tsih,
                target: if self.discovery { None } else { self.target },
            });
        }
        LoginStep::Respond
    }

    fn process_keys(
        &mut self,
        req: &LoginRequest,
        text: &[u8],
        targets: &Targets<'_>,
        limits: &TargetLimits,
        out: &mut TextWriter<'_>,
    ) -> Result<(), LoginStatus> {
        let overflow = |_| LoginStatus::TargetError;
        // Leading keys first: they decide which target and auth apply.
        if self.first {
            let mut initiator = None;
            let mut target_name = None;
            let mut session_type = "Normal";
            for p in pairs(text) {
                let p = p.map_err(|_| LoginStatus::InitiatorError)?;
                match p.key {
                    "InitiatorName" => initiator = Some(p.value),
                    "TargetName" => target_name = Some(p.value),
                    "SessionType" => session_type = p.value,
                    _ => {}
                }
            }
            let initiator = initiator.ok_or(LoginStatus::MissingParameter)?;
            if initiator.is_empty() || initiator.len() > MAX_NAME_LEN {
                return Err(LoginStatus::InitiatorError);
            }
            self.initiator.clear();
            self.initiator
                .push_str(initiator)
                .map_err(|_| LoginStatus::InitiatorError)?;
            match session_type {
                "Normal" => {
                    let name = target_name.ok_or(LoginStatus::MissingParameter)?;
                    let (idx, t) = targets.find(name).ok_or(LoginStatus::NotFound)?;
                    if !t.allows(initiator) {
                        return Err(LoginStatus::AuthorizationFailure);
                    }
                    self.target = Some(idx);
                    self.discovery = false;
                }
                "Discovery" => self.discovery = true,
                _ => return Err(LoginStatus::SessionTypeNotSupported),
            }
            if req.tsih != 0 && self.discovery {
                return Err(LoginStatus::SessionDoesNotExist);
            }
        }
        // A normal session follows its target's digest policy.
        let target_limits;
        let limits = match self.target.and_then(|i| targets.targets.get(i)) {
            Some(t) if !self.discovery => {
                target_limits = TargetLimits {
                    digest: t.digest,
                    ..*limits
                };
                &target_limits
            }
            _ => limits,
        };
        // Which secrets apply is decided per initiator (LIO's per-ACL CHAP):
        // its own entry on this target, else the target's.
        let (chap_cfg, mutual_cfg) = match self.target.and_then(|i| targets.targets.get(i)) {
            Some(t) => t.chap_for(&self.initiator),
            None => (None, None),
        };
        let chap_cfg = if self.discovery { None } else { chap_cfg };
        // A first request that skips the security stage is fine only when no
        // authentication is required.
        if self.first && req.csg == Stage::Operational {
            if chap_cfg.is_some() {
                return Err(LoginStatus::AuthFailure);
            }
            self.auth = Auth::Done;
            self.stage = Stage::Operational;
        }
        if !self.tpgt_sent && !self.discovery {
            out.push_num("TargetPortalGroupTag", u64::from(targets.portal_group_tag))
                .map_err(overflow)?;
            self.tpgt_sent = true;
        }
        let mut chap_n: Option<&str> = None;
        let mut chap_r: Option<&str> = None;
        let mut chap_i: Option<&str> = None;
        let mut chap_c: Option<&str> = None;
        for p in pairs(text) {
            let p = p.map_err(|_| LoginStatus::InitiatorError)?;
            match p.key {
                "InitiatorName" | "TargetName" | "SessionType" => {
                    if !self.first {
                        // Leading-only keys may not change after the first PDU.
                        let same = match p.key {
                            "InitiatorName" => p.value == self.initiator.as_str(),
                            _ => true,
                        };
                        if !same {
                            return Err(LoginStatus::InitiatorError);
                        }
                    }
                }
                "InitiatorAlias" => {}
                "AuthMethod" => {
                    if req.csg != Stage::Security {
                        out.push(p.key, "Irrelevant").map_err(overflow)?;
                        continue;
                    }
                    let offered = |m: &str| p.value.split(',').any(|v| v == m);
                    if chap_cfg.is_some() {
                        if offered("CHAP") {
                            out.push("AuthMethod", "CHAP").map_err(overflow)?;
                            self.auth = Auth::ChapWaitAlgorithm;
                        } else {
                            return Err(LoginStatus::AuthFailure);
                        }
                    } else if offered("None") {
                        out.push("AuthMethod", "None").map_err(overflow)?;
                        self.auth = Auth::Done;
                    } else {
                        // e.g. CHAP only, but this target has no secret.
                        return Err(LoginStatus::AuthFailure);
                    }
                }
                "CHAP_A" => {
                    if self.auth != Auth::ChapWaitAlgorithm {
                        return Err(LoginStatus::InitiatorError);
                    }
                    let md5 = p
                        .value
                        .split(',')
                        .any(|v| parse_number(v) == Some(u64::from(CHAP_MD5)));
                    if !md5 {
                        return Err(LoginStatus::AuthFailure);
                    }
                    let (id, challenge) = self.challenges.next_challenge();
                    out.push_num("CHAP_A", u64::from(CHAP_MD5))
                        .map_err(overflow)?;
                    out.push_num("CHAP_I", u64::from(id)).map_err(overflow)?;
                    let mut hex = [0u8; 2 + 2 * CHALLENGE_LEN];
                    let c =
                        text::encode_hex(&challenge, &mut hex).ok_or(LoginStatus::TargetError)?;
                    out.push("CHAP_C", c).map_err(overflow)?;
                    self.auth = Auth::ChapWaitResponse { id, challenge };
                }
                "CHAP_N" => chap_n = Some(p.value),
                "CHAP_R" => chap_r = Some(p.value),
                "CHAP_I" => chap_i = Some(p.value),
                "CHAP_C" => chap_c = Some(p.value),
                key => {
                    match negotiate(key, p.value, limits, self.discovery, &mut self.params, out)
                        .map_err(overflow)?
                    {
                        KeyOutcome::Handled => {}
                        KeyOutcome::NotOperational => {
                            out.push(key, "NotUnderstood").map_err(overflow)?;
                        }
                        KeyOutcome::Refused => return Err(LoginStatus::InitiatorError),
                    }
                }
            }
        }
        if chap_n.is_some() || chap_r.is_some() {
            let Auth::ChapWaitResponse { id, challenge } = self.auth else {
                return Err(LoginStatus::InitiatorError);
            };
            let cred = chap_cfg.ok_or(LoginStatus::AuthFailure)?;
            let (Some(n), Some(r)) = (chap_n, chap_r) else {
                return Err(LoginStatus::AuthFailure);
            };
            let mut got = [0u8; chap::RESPONSE_LEN + 1];
            let len = text::decode_binary(r, &mut got).ok_or(LoginStatus::AuthFailure)?;
            let want = chap::response(id, cred.secret, &challenge);
            if n != cred.user || !chap::constant_time_eq(got.get(..len).unwrap_or(&[]), &want) {
                return Err(LoginStatus::AuthFailure);
            }
            // Mutual CHAP: the initiator challenges us.
            match (chap_i, chap_c) {
                (Some(i), Some(c)) => {
                    let mutual = mutual_cfg.ok_or(LoginStatus::AuthFailure)?;
                    let id = parse_number(i)
                        .filter(|v| *v <= 255)
                        .ok_or(LoginStatus::AuthFailure)? as u8;
                    let mut ch = [0u8; MAX_CHALLENGE_LEN];
                    let clen = text::decode_binary(c, &mut ch).ok_or(LoginStatus::AuthFailure)?;
                    let ch = ch.get(..clen).unwrap_or(&[]);
                    // Refuse our own challenge reflected back (RFC 7143 §12.1.3).
                    if clen == 0 || ch == challenge.as_slice() {
                        return Err(LoginStatus::AuthFailure);
                    }
                    let resp = chap::response(id, mutual.secret, ch);
                    let mut hex = [0u8; 2 + 2 * chap::RESPONSE_LEN];
                    let rs = text::encode_hex(&resp, &mut hex).ok_or(LoginStatus::TargetError)?;
                    out.push("CHAP_N", mutual.user).map_err(overflow)?;
                    out.push("CHAP_R", rs).map_err(overflow)?;
                }
                (None, None) => {}
                _ => return Err(LoginStatus::AuthFailure),
            }
            self.auth = Auth::Done;
        } else if chap_i.is_some() || chap_c.is_some() {
            return Err(LoginStatus::InitiatorError);
        }

        // Security stage without an AuthMethod offer: allowed only if none is needed.
        if self.auth == Auth::Pending && req.transit {
            if chap_cfg.is_some() {
                return Err(LoginStatus::AuthFailure);
            }
            self.auth = Auth::Done;
        }

        let leaving_security = req.transit && self.auth == Auth::Done;
        let transit = match req.csg {
            Stage::Security => leaving_security,
            _ => req.transit,
        };
        // Declare our receive limit once, in the operational stage or when
        // jumping straight to full feature phase.
        if !self.mrdsl_sent
            && (req.csg == Stage::Operational || (transit && req.nsg == Stage::FullFeature))
        {
            self.params.target_mrdsl = limits.max_recv_data_segment_length.max(512);
            out.push_num(
                "MaxRecvDataSegmentLength",
                u64::from(self.params.target_mrdsl),
            )
            .map_err(overflow)?;
            self.mrdsl_sent = true;
        }
        self.response.transit = transit;
        self.response.csg = req.csg;
        // NSG is reserved (zero) without the T bit.
        self.response.nsg = if transit { req.nsg } else { Stage::Security };
        if transit {
            self.stage = req.nsg;
        } else {
            self.stage = req.csg;
        }
        Ok(())
    }

    /// The host admitted the session: fill in TSIH for the final response.
    pub fn session_granted(&mut self, tsih: u16) {
        self.response.tsih = tsih;
        self.stage = Stage::FullFeature;
    }

    /// The host refused the session: turn the pending response into a failure.
    pub fn session_refused(&mut self, status: LoginStatus) {
        // `fail` advances StatSN; the pending response already did.
        self.stat_sn = self.stat_sn.wrapping_sub(1);
        let _ = self.fail(status);
    }

    /// Stage reached (FullFeature once the session was granted).
    pub fn stage(&self) -> Stage {
        self.stage
    }
}
