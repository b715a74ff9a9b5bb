//! Events for the host, and time: the login deadline and NOP-In pings.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
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

    pub(super) fn nop_deadline(&self) -> Option<Instant> {
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
    pub(super) fn alloc_ping_ttt(&mut self) -> u32 {
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        ttt
    }
}
