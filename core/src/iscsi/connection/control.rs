//! The other requests of the full feature phase: NOP-Out, task
//! management, Text (SendTargets) and Logout.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
    pub(super) fn on_nop_out<T: AsRef<[u8]>>(&mut self, bhs: &Bhs<T>, n: &NopOut, data: &[u8]) {
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

    pub(super) fn on_tmf<B: Backend>(&mut self, t: &TaskMgmtRequest, backend: &mut B) {
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

    pub(super) fn abort_where(&mut self, f: impl Fn(&Task<SCRATCH>) -> bool) {
        for slot in 0..TASKS {
            let hit = self.tasks.get(slot).is_some_and(|t| !t.is_free() && f(t));
            if hit {
                self.abort_task(slot);
            }
        }
    }

    pub(super) fn on_text<T: AsRef<[u8]>>(
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
                let tpgt =
                    crate::iscsi::text::fmt_u64(u64::from(targets.portal_group_tag), &mut tpgt);
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

    pub(super) fn on_logout(&mut self, l: &LogoutRequest) {
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
}
