//! The boot stages of a station, as both hosts count and show them.
//!
//! A host turns what the state machines hand back (a DHCP
//! [`crate::dhcp::Received`] or [`crate::dhcp::Transmit`], an accepted TFTP
//! transfer, an iSCSI `LoggedIn` event, a first storage read) into a
//! [`Stage`]; [`StageCounts`] counts them in fixed memory. The Linux host
//! also keeps a per-station timeline of them; a board keeps just the counts.

use crate::dhcp::{ClientKind, MessageType};

/// One step of a network boot, in the order a station normally takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stage {
    /// DHCPDISCOVER from a boot client.
    DhcpDiscover,
    /// DHCPOFFER (or ProxyDHCP offer) sent.
    DhcpOffer,
    /// DHCPREQUEST from a boot client.
    DhcpRequest,
    /// DHCPACK (or ProxyDHCP ACK) sent.
    DhcpAck,
    /// A boot binary (iPXE, a kernel, an initrd) fetched over TFTP or HTTP.
    BootFile,
    /// An iPXE script fetched.
    Script,
    /// The boot firmware (iPXE) logged in to its iSCSI target.
    IscsiLogin,
    /// The first READ of a session.
    FirstRead,
    /// A further login to a disk after the firmware's: the OS's own
    /// initiator (an initramfs) taking over the disk.
    OsLogin,
    /// A failed step: a refused or failed transfer or login.
    Error,
}

impl Stage {
    /// How many known stages there are (the length of [`Stage::ALL`]).
    pub const COUNT: usize = 10;
    /// Every known stage, in boot order.
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::DhcpDiscover,
        Stage::DhcpOffer,
        Stage::DhcpRequest,
        Stage::DhcpAck,
        Stage::BootFile,
        Stage::Script,
        Stage::IscsiLogin,
        Stage::FirstRead,
        Stage::OsLogin,
        Stage::Error,
    ];

    /// A short stable name (`dhcp_discover`, `first_read`, …), for logs,
    /// JSON and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Stage::DhcpDiscover => "dhcp_discover",
            Stage::DhcpOffer => "dhcp_offer",
            Stage::DhcpRequest => "dhcp_request",
            Stage::DhcpAck => "dhcp_ack",
            Stage::BootFile => "boot_file",
            Stage::Script => "script",
            Stage::IscsiLogin => "iscsi_login",
            Stage::FirstRead => "first_read",
            Stage::OsLogin => "os_login",
            Stage::Error => "error",
        }
    }

    /// The stage of a DHCP message from or to a boot client; `None` for
    /// other messages and for clients that do not boot from the network
    /// (an OS renewing its address is not a boot step).
    pub fn of_dhcp(message: MessageType, client: ClientKind) -> Option<Stage> {
        if client == ClientKind::Plain {
            return None;
        }
        match message {
            MessageType::Discover => Some(Stage::DhcpDiscover),
            MessageType::Offer => Some(Stage::DhcpOffer),
            MessageType::Request => Some(Stage::DhcpRequest),
            MessageType::Ack => Some(Stage::DhcpAck),
            _ => None,
        }
    }
}

/// How often each [`Stage`] happened, over all stations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts {
    counts: [u64; Stage::COUNT],
}

impl StageCounts {
    /// All zero.
    pub const fn new() -> Self {
        StageCounts {
            counts: [0; Stage::COUNT],
        }
    }

    /// Counts one `stage`.
    pub fn record(&mut self, stage: Stage) {
        if let Some(c) = self.counts.get_mut(stage as usize) {
            *c = c.wrapping_add(1);
        }
    }

    /// How many times `stage` was recorded.
    pub fn get(&self, stage: Stage) -> u64 {
        self.counts.get(stage as usize).copied().unwrap_or(0)
    }

    /// Every known stage with its count, in boot order.
    pub fn iter(&self) -> impl Iterator<Item = (Stage, u64)> + '_ {
        Stage::ALL.iter().map(|&s| (s, self.get(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_stage_at_its_index() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn counts_each_stage_apart() {
        let mut c = StageCounts::new();
        c.record(Stage::DhcpDiscover);
        c.record(Stage::DhcpDiscover);
        c.record(Stage::FirstRead);
        assert_eq!(c.get(Stage::DhcpDiscover), 2);
        assert_eq!(c.get(Stage::FirstRead), 1);
        assert_eq!(c.get(Stage::DhcpAck), 0);
        assert_eq!(c.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn an_os_renewing_its_address_is_no_boot_step() {
        let pxe = ClientKind::Pxe { arch: 0 };
        assert_eq!(
            Stage::of_dhcp(MessageType::Discover, pxe),
            Some(Stage::DhcpDiscover)
        );
        assert_eq!(
            Stage::of_dhcp(MessageType::Ack, ClientKind::Ipxe),
            Some(Stage::DhcpAck)
        );
        assert_eq!(
            Stage::of_dhcp(MessageType::Request, ClientKind::Plain),
            None
        );
        assert_eq!(Stage::of_dhcp(MessageType::Release, pxe), None);
    }
}
