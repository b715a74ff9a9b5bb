//! Input: whole PDUs from the byte stream, digests, the login phase,
//! session admission and CmdSN checks.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
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
            crate::iscsi::login::MAX_LOGIN_TEXT
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

    pub(super) fn on_login(&mut self, req: &LoginRequest, data: &[u8], targets: &Targets<'_>) {
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
    pub(super) fn accept_cmd_sn(&mut self, immediate: bool, cmd_sn: u32) -> bool {
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

    pub(super) fn find_task(&self, itt: u32) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| !t.is_free() && !matches!(t.phase, Phase::Aborted) && t.itt == itt)
    }
}
