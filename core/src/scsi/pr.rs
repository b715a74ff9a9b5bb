//! Persistent reservations (SPC-4 §5.12): PERSISTENT RESERVE IN / OUT.
#![allow(dead_code)] // filled in by the PR commands

use super::Nexus;

/// Longest iSCSI name (RFC 7143 §4.2.7.1: 223 bytes).
pub(crate) const NAME_MAX: usize = 223;

/// One registered I_T nexus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registrant {
    pub key: u64,
    pub name: heapless::Vec<u8, NAME_MAX>,
    pub isid: [u8; 6],
    /// Nexus slot last seen for this initiator port (for unit attentions).
    pub index: u16,
}

impl Registrant {
    pub fn is(&self, nexus: &Nexus<'_>) -> bool {
        self.isid == nexus.isid && self.name.as_slice() == nexus.initiator.as_bytes()
    }
}

/// The persistent reservation: holder (a registrant, or every registrant
/// for the "all registrants" types) and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Index into the registrant table of the holder (meaningless for the
    /// all-registrants types).
    pub holder: usize,
    pub kind: u8,
}

/// Registrations and reservation of one logical unit.
#[derive(Debug, Clone)]
pub(crate) struct Reservations<const R: usize> {
    pub regs: heapless::Vec<Registrant, R>,
    pub generation: u32,
    pub held: Option<Held>,
}

impl<const R: usize> Reservations<R> {
    pub const fn new() -> Self {
        Reservations {
            regs: heapless::Vec::new(),
            generation: 0,
            held: None,
        }
    }

    /// Any registration or reservation exists (SPC-2 RESERVE conflicts).
    pub fn active(&self) -> bool {
        !self.regs.is_empty() || self.held.is_some()
    }
}
