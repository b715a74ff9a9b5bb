//! Who may read a per-station script that carries secrets (CHAP): only the
//! address that station was seen with in a DHCP exchange sanboot answered.
//!
//! The DHCP server tells which address a station takes
//! ([`crate::dhcp::Server::poll_station`]); the host records it here
//! and asks [`StationAddresses::check`] before a TFTP transfer of such a
//! script. This stops a casual fetch of another machine's script from the
//! LAN; it is no defence against a machine that forges DHCP and TFTP from
//! another's MAC and address (neither protocol authenticates anything).

use core::net::Ipv4Addr;

/// What [`StationAddresses::check`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptAccess {
    /// The requester is the address recorded for the station.
    Allowed,
    /// No address is recorded for the station yet (it has not done DHCP
    /// with sanboot since the start): refuse.
    Unknown,
    /// The station was seen with another address: refuse.
    OtherAddress {
        /// The address recorded for the station.
        expected: Ipv4Addr,
    },
}

impl ScriptAccess {
    /// May the script be sent?
    pub fn is_allowed(self) -> bool {
        self == ScriptAccess::Allowed
    }
}

/// MAC → the address the station last used, for at most `N` stations.
///
/// An address belongs to one station at a time: recording it for one MAC
/// forgets it for any other (a lease that moved to another machine must not
/// keep opening the old one's script). A full table refuses the new
/// station ([`StationAddresses::record`] returns false), whose script is
/// then refused too; nothing recorded is evicted.
#[derive(Debug, Clone)]
pub struct StationAddresses<const N: usize> {
    slots: [Option<([u8; 6], Ipv4Addr)>; N],
}

impl<const N: usize> Default for StationAddresses<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> StationAddresses<N> {
    /// An empty table.
    pub const fn new() -> Self {
        StationAddresses { slots: [None; N] }
    }

    /// Remembers that `mac` uses `ip`. False if the table is full and `mac`
    /// was not in it.
    pub fn record(&mut self, mac: [u8; 6], ip: Ipv4Addr) -> bool {
        for slot in self.slots.iter_mut() {
            if matches!(slot, Some((m, a)) if *a == ip && *m != mac) {
                *slot = None;
            }
        }
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Some((m, _)) if *m == mac))
        {
            *slot = Some((mac, ip));
            return true;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((mac, ip));
                true
            }
            None => false,
        }
    }

    /// The address recorded for `mac`.
    pub fn address(&self, mac: [u8; 6]) -> Option<Ipv4Addr> {
        self.slots
            .iter()
            .flatten()
            .find(|(m, _)| *m == mac)
            .map(|(_, a)| *a)
    }

    /// May `requester` read the secret-carrying script of `mac`?
    pub fn check(&self, mac: [u8; 6], requester: Ipv4Addr) -> ScriptAccess {
        match self.address(mac) {
            Some(a) if a == requester => ScriptAccess::Allowed,
            Some(expected) => ScriptAccess::OtherAddress { expected },
            None => ScriptAccess::Unknown,
        }
    }

    /// Stations recorded.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// No station recorded?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const M1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const M2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const IP1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
    const IP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);

    #[test]
    fn only_the_recorded_address_may_read() {
        let mut t = StationAddresses::<4>::new();
        assert_eq!(t.check(M1, IP1), ScriptAccess::Unknown);
        assert!(t.record(M1, IP1));
        assert_eq!(t.check(M1, IP1), ScriptAccess::Allowed);
        assert_eq!(
            t.check(M1, IP2),
            ScriptAccess::OtherAddress { expected: IP1 }
        );
        // The station moved: its new address, not the old one.
        assert!(t.record(M1, IP2));
        assert!(t.check(M1, IP2).is_allowed());
        assert!(!t.check(M1, IP1).is_allowed());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_address_belongs_to_one_station() {
        let mut t = StationAddresses::<4>::new();
        assert!(t.record(M1, IP1));
        // IP1 was leased again, to M2: M1's script no longer goes there.
        assert!(t.record(M2, IP1));
        assert_eq!(t.check(M1, IP1), ScriptAccess::Unknown);
        assert!(t.check(M2, IP1).is_allowed());
    }

    #[test]
    fn a_full_table_refuses_new_stations_and_keeps_the_old() {
        let mut t = StationAddresses::<1>::new();
        assert!(t.record(M1, IP1));
        assert!(!t.record(M2, IP2));
        assert_eq!(t.check(M2, IP2), ScriptAccess::Unknown);
        assert!(t.check(M1, IP1).is_allowed());
        // Known stations still move.
        assert!(t.record(M1, IP2));
        assert!(t.check(M1, IP2).is_allowed());
    }
}
