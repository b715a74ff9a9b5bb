//! The target-wide session table: TSIH allocation, the session limit, and
//! ERL 0 session reinstatement (RFC 7143 §6.3.5).
//!
//! Sessions span connections, so this table lives beside the connections (a
//! host with several threads wraps it in a mutex). A connection asks it once,
//! when login reaches full feature phase, and tells it when it ends.

use heapless::String;

use super::login::{LoginStatus, SessionRequest, MAX_NAME_LEN};

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
}

#[derive(Debug, Clone)]
struct Entry {
    tsih: u16,
    isid: [u8; 6],
    initiator: String<MAX_NAME_LEN>,
    target: Option<usize>,
    token: u64,
}

/// Up to `N` concurrent sessions.
#[derive(Debug)]
pub struct SessionTable<const N: usize> {
    entries: [Option<Entry>; N],
    next_tsih: u16,
    next_nexus: u64,
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

    /// Admit the session a connection (identified by the host's `token`) asks for.
    pub fn admit(
        &mut self,
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
            let slot = self.entries.get_mut(i).ok_or(LoginStatus::TargetError)?;
            let old_token = slot.as_ref().map(|e| e.token);
            *slot = Some(Entry {
                tsih,
                isid: req.isid,
                initiator: name,
                target: req.target,
                token,
            });
            return Ok(Admission {
                tsih,
                nexus,
                reinstated: old_token,
            });
        }
        let tsih = self.alloc_tsih();
        let slot = self
            .entries
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(LoginStatus::OutOfResources)?;
        *slot = Some(Entry {
            tsih,
            isid: req.isid,
            initiator: name,
            target: req.target,
            token,
        });
        Ok(Admission {
            tsih,
            nexus,
            reinstated: None,
        })
    }

    /// A connection ended: drop its session (only if it still owns it; a
    /// reinstated session belongs to the new connection).
    pub fn release(&mut self, token: u64) {
        for e in self.entries.iter_mut() {
            if e.as_ref().is_some_and(|s| s.token == token) {
                *e = None;
            }
        }
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
}
