//! The target-wide session table: TSIH allocation, the session limit, and
//! ERL 0 session reinstatement (RFC 7143 §6.3.5).
//!
//! Sessions span connections, so this table lives beside the connections (a
//! host with several threads wraps it in a mutex). A connection asks it once,
//! when login reaches full feature phase, and tells it when it ends.
//!
//! # Takeover at the session limit
//!
//! A station that reboots leaves its sessions behind: iPXE abandons its
//! session when the OS takes the NIC (no logout, and a random ISID, so the
//! next boot cannot reinstate it), and a powered-off OS never logs out.
//! Dead-peer detection ([`super::TargetLimits::nop_in_interval_ms`]) reaps
//! them within a minute, but a station reboots faster than that. So when
//! the table is full, [`SessionTable::admit_at`] lets a login take over the
//! session of the *same initiator name* that has been silent longest
//! (at least [`TAKEOVER_MIN_IDLE_MS`]) instead of refusing it: a station
//! that logs in again has evidently restarted. Hosts report each
//! connection's activity with [`SessionTable::touch`].
//!
//! # Nexus slots
//!
//! Each normal session gets the SCSI layer's slot for its I_T nexus
//! ([`Admission::slot`], the lowest free one: `< N` and below the session
//! limit, so size the SCSI targets' `N` to the limit). A slot stays taken
//! until the connection that held it ends ([`SessionTable::release`]), also
//! when a reinstating or takeover login replaced its session meanwhile: the
//! old connection still tells the SCSI layer its nexus is gone, and that
//! must not reset the slot of a session that already uses it.

use heapless::String;

use super::login::{LoginStatus, SessionRequest, MAX_NAME_LEN};
use crate::time::{Duration, Instant};

/// A session silent for less than this is never taken over: it may be a
/// live session the initiator is using right now (an initiator that opens
/// several sessions at once, such as a multipath open-iscsi).
pub const TAKEOVER_MIN_IDLE_MS: u64 = 5_000;

/// A session that [`SessionTable::admit_at`] gave to a new login because the
/// table was full (the host closes it through [`Admission::reinstated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Takeover {
    /// TSIH of the session that was replaced.
    pub tsih: u16,
    /// Its ISID.
    pub isid: [u8; 6],
    /// How long it had been silent.
    pub idle: Duration,
}

/// A session the table granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Admission {
    /// TSIH of the session (for the final Login Response).
    pub tsih: u16,
    /// An identifier for the I_T nexus, unique for the table's lifetime (the
    /// SCSI layer keys reservations and unit attentions on it).
    pub nexus: u64,
    /// Host token of a connection whose session this login reinstates: the
    /// host must close that connection (and drop its tasks) now.
    pub reinstated: Option<u64>,
    /// Set when `reinstated` names a session of the same initiator taken
    /// over at the session limit (not an RFC reinstatement by ISID): what
    /// the host logs about it.
    pub takeover: Option<Takeover>,
    /// The SCSI layer's slot for this I_T nexus (`scsi::Nexus::index`);
    /// `u16::MAX` for a discovery session (no LUNs).
    pub slot: u16,
}

#[derive(Debug, Clone)]
struct Entry {
    tsih: u16,
    isid: [u8; 6],
    initiator: String<MAX_NAME_LEN>,
    target: Option<usize>,
    token: u64,
    /// Last PDU the session's connection received, as far as the host told us.
    last_active: Instant,
    /// SCSI nexus slot (`u16::MAX`: none).
    slot: u16,
}

/// Up to `N` concurrent sessions.
#[derive(Debug)]
pub struct SessionTable<const N: usize> {
    entries: [Option<Entry>; N],
    next_tsih: u16,
    next_nexus: u64,
    /// At most this many normal sessions (`N` unless
    /// [`SessionTable::set_limit`]).
    limit: usize,
    /// At most this many discovery sessions, counted apart so idle
    /// discovery sessions cannot keep a disk from logging in.
    discovery_limit: usize,
    /// Slots of replaced sessions whose connection has not ended yet:
    /// `(connection token, slot)`.
    retired: heapless::Vec<(u64, u16), N>,
}

impl<const N: usize> Default for SessionTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SessionTable<N> {
    /// An empty table.
    pub fn new() -> Self {
        SessionTable {
            entries: core::array::from_fn(|_| None),
            next_tsih: 1,
            next_nexus: 1,
            limit: N,
            discovery_limit: N,
            retired: heapless::Vec::new(),
        }
    }

    /// The lowest nexus slot no session and no ending connection holds.
    fn free_slot(&self, target: Option<usize>) -> u16 {
        if target.is_none() {
            return u16::MAX;
        }
        let taken = |s: u16| {
            self.entries.iter().flatten().any(|e| e.slot == s)
                || self.retired.iter().any(|&(_, r)| r == s)
        };
        (0..N)
            .filter_map(|s| u16::try_from(s).ok())
            .find(|&s| !taken(s))
            .unwrap_or(u16::MAX)
    }

    /// `old`'s session was replaced: its slot stays taken until its
    /// connection ends.
    fn retire(&mut self, old: &Entry) {
        if old.slot != u16::MAX && self.retired.push((old.token, old.slot)).is_err() {
            // More ending connections than sessions cannot happen; if it
            // did, the slot is reused early (its unit attentions reset).
            warn!("iscsi: retired nexus slots full");
        }
    }

    /// Admit at most `max` normal sessions (capped at `N`), e.g. `[iscsi]
    /// max_sessions`.
    pub fn set_limit(&mut self, max: usize) {
        self.limit = max.min(N);
    }

    /// Admit at most `max` discovery sessions (capped at `N`), e.g.
    /// `[iscsi] max_discovery_sessions`.
    pub fn set_discovery_limit(&mut self, max: usize) {
        self.discovery_limit = max.min(N);
    }

    /// The connection `token` received a PDU at `now` (hosts may call this
    /// at a coarse rate, say once a second per connection): it decides
    /// which session a takeover picks.
    pub fn touch(&mut self, token: u64, now: Instant) {
        for e in self.entries.iter_mut().flatten() {
            if e.token == token && e.last_active < now {
                e.last_active = now;
            }
        }
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Number of discovery sessions (`discovery`) or of normal sessions.
    pub fn count(&self, discovery: bool) -> usize {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.target.is_none() == discovery)
            .count()
    }

    /// No sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn alloc_tsih(&mut self) -> u16 {
        loop {
            let t = self.next_tsih;
            self.next_tsih = self.next_tsih.wrapping_add(1);
            if self.next_tsih == 0 {
                self.next_tsih = 1;
            }
            if t != 0 && !self.entries.iter().flatten().any(|e| e.tsih == t) {
                return t;
            }
        }
    }

    /// Admit the session a connection (identified by the host's `token`) asks
    /// for; a full table refuses it (`OutOfResources`). Hosts with a clock
    /// use [`SessionTable::admit_at`].
    pub fn admit(
        &mut self,
        initiator: &str,
        req: &SessionRequest,
        token: u64,
    ) -> Result<Admission, LoginStatus> {
        self.admit_inner(None, initiator, req, token)
    }

    /// [`SessionTable::admit`] at `now`; when the table is full, the login
    /// takes over the session of the same initiator name that has been
    /// silent longest, if that is at least [`TAKEOVER_MIN_IDLE_MS`]
    /// ([`Admission::takeover`] says so, [`Admission::reinstated`] names
    /// the connection to close).
    pub fn admit_at(
        &mut self,
        now: Instant,
        initiator: &str,
        req: &SessionRequest,
        token: u64,
    ) -> Result<Admission, LoginStatus> {
        self.admit_inner(Some(now), initiator, req, token)
    }

    fn admit_inner(
        &mut self,
        now: Option<Instant>,
        initiator: &str,
        req: &SessionRequest,
        token: u64,
    ) -> Result<Admission, LoginStatus> {
        let same = |e: &Entry| {
            e.isid == req.isid
                && e.target == req.target
                && e.initiator.as_str().eq_ignore_ascii_case(initiator)
        };
        if req.tsih != 0 {
            // Adding a connection to an existing session: we run one
            // connection per session (MaxConnections=1).
            return if self
                .entries
                .iter()
                .flatten()
                .any(|e| e.tsih == req.tsih && same(e))
            {
                Err(LoginStatus::TooManyConnections)
            } else {
                Err(LoginStatus::SessionDoesNotExist)
            };
        }
        let mut name = String::new();
        name.push_str(initiator)
            .map_err(|_| LoginStatus::InitiatorError)?;
        let nexus = self.next_nexus;
        self.next_nexus = self.next_nexus.wrapping_add(1);
        // Reinstatement: same initiator name + ISID (+ target) replaces the old session.
        let old = self
            .entries
            .iter()
            .position(|e| e.as_ref().is_some_and(same));
        if let Some(i) = old {
            // A reinstated session gets a new TSIH; the old one is gone.
            let tsih = self.alloc_tsih();
            let nexus_slot = self.free_slot(req.target);
            let entry = self.entries.get_mut(i).ok_or(LoginStatus::TargetError)?;
            let old = entry.replace(Entry {
                tsih,
                isid: req.isid,
                initiator: name,
                target: req.target,
                token,
                last_active: now.unwrap_or_default(),
                slot: nexus_slot,
            });
            if let Some(old) = &old {
                self.retire(old);
            }
            return Ok(Admission {
                tsih,
                nexus,
                reinstated: old.map(|e| e.token),
                takeover: None,
                slot: nexus_slot,
            });
        }
        let discovery = req.target.is_none();
        let limit = if discovery {
            self.discovery_limit
        } else {
            self.limit
        };
        if self.count(discovery) >= limit {
            return self.take_over(now, name, req, token, nexus);
        }
        let tsih = self.alloc_tsih();
        let nexus_slot = self.free_slot(req.target);
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(LoginStatus::OutOfResources)?;
        *entry = Some(Entry {
            tsih,
            isid: req.isid,
            initiator: name,
            target: req.target,
            token,
            last_active: now.unwrap_or_default(),
            slot: nexus_slot,
        });
        Ok(Admission {
            tsih,
            nexus,
            reinstated: None,
            takeover: None,
            slot: nexus_slot,
        })
    }

    /// The table is full: give the new login the longest-silent session of
    /// the same initiator name, or refuse it.
    fn take_over(
        &mut self,
        now: Option<Instant>,
        name: String<MAX_NAME_LEN>,
        req: &SessionRequest,
        token: u64,
        nexus: u64,
    ) -> Result<Admission, LoginStatus> {
        let now = now.ok_or(LoginStatus::OutOfResources)?;
        let min_idle = Duration::from_millis(TAKEOVER_MIN_IDLE_MS);
        let victim = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, e.as_ref()?)))
            .filter(|(_, e)| e.initiator.as_str().eq_ignore_ascii_case(&name))
            .filter(|(_, e)| e.target.is_none() == req.target.is_none())
            .filter(|(_, e)| now.saturating_since(e.last_active) >= min_idle)
            .min_by_key(|(_, e)| e.last_active)
            .map(|(i, _)| i)
            .ok_or(LoginStatus::OutOfResources)?;
        let tsih = self.alloc_tsih();
        let nexus_slot = self.free_slot(req.target);
        let entry = self
            .entries
            .get_mut(victim)
            .ok_or(LoginStatus::TargetError)?;
        let old = entry.replace(Entry {
            tsih,
            isid: req.isid,
            initiator: name,
            target: req.target,
            token,
            last_active: now,
            slot: nexus_slot,
        });
        let old = old.ok_or(LoginStatus::TargetError)?;
        self.retire(&old);
        Ok(Admission {
            tsih,
            nexus,
            reinstated: Some(old.token),
            takeover: Some(Takeover {
                tsih: old.tsih,
                isid: old.isid,
                idle: now.saturating_since(old.last_active),
            }),
            slot: nexus_slot,
        })
    }

    /// A connection ended: drop its session (only if it still owns it; a
    /// reinstated session belongs to the new connection).
    /// Its nexus slot is free again.
    pub fn release(&mut self, token: u64) {
        for e in self.entries.iter_mut() {
            if e.as_ref().is_some_and(|s| s.token == token) {
                *e = None;
            }
        }
        self.retired.retain(|&(t, _)| t != token);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn req(isid: u8, tsih: u16) -> SessionRequest {
        SessionRequest {
            isid: [0x40, 0, 0x27, 0x23, 0, isid],
            tsih,
            target: Some(0),
        }
    }

    #[test]
    fn reinstatement_replaces_old_connection() {
        let mut t = SessionTable::<2>::new();
        let a = t.admit("iqn.i", &req(1, 0), 10).unwrap();
        assert_eq!(a.reinstated, None);
        let b = t.admit("IQN.I", &req(1, 0), 11).unwrap();
        assert_eq!(b.reinstated, Some(10));
        assert_ne!(a.nexus, b.nexus);
        assert_eq!(t.len(), 1);
        // the old connection's late release does not drop the new session
        t.release(10);
        assert_eq!(t.len(), 1);
        t.release(11);
        assert!(t.is_empty());
    }

    #[test]
    fn discovery_and_normal_sessions_are_counted_apart() {
        let mut t = SessionTable::<4>::new();
        let discovery = SessionRequest {
            target: None,
            ..req(1, 0)
        };
        t.admit("iqn.d", &discovery, 1).unwrap();
        t.admit("iqn.n", &req(2, 0), 2).unwrap();
        t.admit("iqn.n", &req(3, 0), 3).unwrap();
        assert_eq!((t.count(true), t.count(false)), (1, 2));
        t.release(1);
        assert_eq!((t.count(true), t.count(false)), (0, 2));
    }

    #[test]
    fn nexus_slots_are_held_until_the_connection_ends() {
        let mut t = SessionTable::<4>::new();
        let a = t.admit("iqn.a", &req(1, 0), 1).unwrap();
        let b = t.admit("iqn.b", &req(1, 0), 2).unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        let discovery = SessionRequest {
            target: None,
            ..req(2, 0)
        };
        assert_eq!(t.admit("iqn.a", &discovery, 3).unwrap().slot, u16::MAX);
        // A reinstates its session: the new one gets a fresh slot while the
        // old connection (token 1) has not ended.
        let a2 = t.admit("iqn.a", &req(1, 0), 4).unwrap();
        assert_eq!(a2.reinstated, Some(1));
        assert_eq!(a2.slot, 2);
        t.release(1);
        // Slot 0 is free again.
        assert_eq!(t.admit("iqn.c", &req(1, 0), 5).unwrap().slot, 0);
        t.release(2);
        assert_eq!(t.admit("iqn.d", &req(1, 0), 6).unwrap().slot, 1);
    }

    #[test]
    fn limit_and_tsih_rules() {
        let mut t = SessionTable::<2>::new();
        let a = t.admit("iqn.i", &req(1, 0), 1).unwrap();
        t.admit("iqn.i", &req(2, 0), 2).unwrap();
        assert_eq!(
            t.admit("iqn.i", &req(3, 0), 3),
            Err(LoginStatus::OutOfResources)
        );
        assert_eq!(
            t.admit("iqn.i", &req(1, a.tsih), 4),
            Err(LoginStatus::TooManyConnections)
        );
        assert_eq!(
            t.admit("iqn.i", &req(1, 999), 4),
            Err(LoginStatus::SessionDoesNotExist)
        );
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A rebooting station at `max_sessions = 2`: its third login takes
    /// over its longest-silent session instead of being refused.
    #[test]
    fn full_table_takeover_picks_the_same_initiators_longest_silent_session() {
        let mut t = SessionTable::<4>::new();
        t.set_limit(2);
        let a = t.admit_at(at(0), "iqn.station", &req(1, 0), 1).unwrap();
        let b = t.admit_at(at(1_000), "iqn.station", &req(2, 0), 2).unwrap();
        assert_eq!((a.takeover, b.takeover), (None, None));
        // Session 1 was active later than session 2: 2 is the one to go.
        t.touch(1, at(3_000));
        let c = t
            .admit_at(at(60_000), "IQN.STATION", &req(3, 0), 3)
            .unwrap();
        assert_eq!(c.reinstated, Some(2));
        let over = c.takeover.unwrap();
        assert_eq!(over.tsih, b.tsih);
        assert_eq!(over.isid, req(2, 0).isid);
        assert_eq!(over.idle, Duration::from_millis(59_000));
        assert_eq!(t.len(), 2);
        // The replaced connection's late release leaves the new session.
        t.release(2);
        assert_eq!(t.len(), 2);
        // The next login takes over session 1 (silent since 3 s).
        let d = t
            .admit_at(at(61_000), "iqn.station", &req(4, 0), 4)
            .unwrap();
        assert_eq!(d.reinstated, Some(1));
    }

    #[test]
    fn takeover_spares_other_initiators_and_recent_sessions() {
        let mut t = SessionTable::<2>::new();
        t.admit_at(at(0), "iqn.other", &req(1, 0), 1).unwrap();
        t.admit_at(at(0), "iqn.station", &req(2, 0), 2).unwrap();
        // Another initiator's silent session is never taken.
        assert_eq!(
            t.admit_at(at(100_000), "iqn.third", &req(3, 0), 3),
            Err(LoginStatus::OutOfResources)
        );
        // A session active less than TAKEOVER_MIN_IDLE_MS ago is in use.
        t.touch(2, at(100_000));
        assert_eq!(
            t.admit_at(
                at(100_000 + TAKEOVER_MIN_IDLE_MS - 1),
                "iqn.station",
                &req(3, 0),
                3
            ),
            Err(LoginStatus::OutOfResources)
        );
        // Without a clock (`admit`) a full table refuses as before.
        assert_eq!(
            t.admit("iqn.station", &req(3, 0), 3),
            Err(LoginStatus::OutOfResources)
        );
        let ok = t
            .admit_at(
                at(100_000 + TAKEOVER_MIN_IDLE_MS),
                "iqn.station",
                &req(3, 0),
                3,
            )
            .unwrap();
        assert_eq!(ok.reinstated, Some(2));
    }
}
