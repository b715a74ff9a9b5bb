//! Probes before an offer: is an address nobody renewed really unused?
//!
//! RFC 2131 §2.2 and §4.4.1: a server SHOULD probe an address before
//! allocating it (sanboot leaves the how to the host: an ARP probe with
//! sender address 0.0.0.0 as RFC 5227 §2.1.1 describes, or an ICMP echo).
//! The server keeps the DISCOVER that asked while the host probes, and
//! answers it when the host reports the result; a fixed number of probes
//! may be pending at once, so a flood of DISCOVERs costs bounded memory.

use core::net::Ipv4Addr;

use super::wire::Repr;
use crate::time::Instant;

/// Addresses tried for one DISCOVER before giving up (each found in use
/// is declined and the next free one probed).
pub const PROBE_ATTEMPTS: u8 = 3;

/// What the host found when it probed an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProbeResult {
    /// Nobody answered within the host's timeout.
    Free,
    /// Some machine answered for the address: it is in use.
    InUse,
}

/// One pending probe: the address, and the DISCOVER to answer after it.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) ip: Ipv4Addr,
    pub(crate) mac: [u8; 6],
    pub(crate) req: Repr,
    /// Handed to the host by `poll_probe`.
    pub(crate) sent: bool,
    pub(crate) started: Instant,
    /// Addresses already tried for this DISCOVER, this one included.
    pub(crate) attempt: u8,
}

/// At most `P` pending probes.
#[derive(Debug)]
pub(crate) struct Probes<const P: usize> {
    slots: [Option<Probe>; P],
}

impl<const P: usize> Probes<P> {
    pub(crate) fn new() -> Self {
        Probes {
            slots: [const { None }; P],
        }
    }

    /// Whether a probe for `mac` is pending (its DISCOVER is answered then).
    pub(crate) fn has_mac(&self, mac: &[u8; 6]) -> bool {
        self.slots.iter().flatten().any(|p| p.mac == *mac)
    }

    /// Queues a probe; `false` when every slot is taken.
    pub(crate) fn start(&mut self, probe: Probe) -> bool {
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(probe);
                true
            }
            None => false,
        }
    }

    /// The next probe to send, marked sent.
    pub(crate) fn next_unsent(&mut self) -> Option<Ipv4Addr> {
        let p = self.slots.iter_mut().flatten().find(|p| !p.sent)?;
        p.sent = true;
        Some(p.ip)
    }

    /// Removes and returns the probe of `ip` the host was asked for.
    pub(crate) fn take_sent(&mut self, ip: Ipv4Addr) -> Option<Probe> {
        self.slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|p| p.sent && p.ip == ip))?
            .take()
    }

    /// Removes one probe started before `before` (the host never answered).
    pub(crate) fn take_stale(&mut self, before: Instant) -> Option<Probe> {
        self.slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|p| p.started < before))?
            .take()
    }

    /// The earliest start of a pending probe.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|p| p.started).min()
    }

    /// Pending probes.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}
