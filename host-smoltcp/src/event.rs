//! What happened, for the host to log: one event per boot step.

use sanboot_core::dhcp;
use sanboot_core::tftp::{Outcome, Refusal};
use sanboot_core::timeline::Stage;
use smoltcp::wire::IpEndpoint;

/// A boot step or a problem, reported through the callback of
/// [`crate::Appliance::poll`].
#[derive(Debug, Clone, Copy)]
pub enum Event<'e> {
    /// A DHCP client message arrived (DISCOVER, REQUEST, …).
    DhcpRequest(dhcp::Received),
    /// A DHCP or ProxyDHCP reply went out (see the core's `Transmit`).
    DhcpReply(dhcp::Transmit<'e>),
    /// DHCP saw which address a booting station takes (its lease, its
    /// REQUEST to the real server in proxy mode, or its 4011 request): only
    /// that address may read the station's secret-carrying script.
    StationAddress {
        /// The station.
        mac: [u8; 6],
        /// Its address.
        ip: core::net::Ipv4Addr,
    },
    /// A DHCP reply could not be queued (socket buffer full).
    DhcpDropped,
    /// A TFTP read request was accepted.
    TftpRequest {
        /// The normalised path.
        path: &'e str,
        /// The client.
        peer: IpEndpoint,
        /// A generated iPXE script rather than a file.
        script: bool,
        /// File size.
        size: u64,
        /// Negotiated block size.
        blksize: u16,
        /// Negotiated window size.
        windowsize: u16,
    },
    /// A TFTP read request was answered with ERROR.
    TftpRefused {
        /// The normalised path (empty when the core refused the request itself).
        path: &'e str,
        /// The client.
        peer: IpEndpoint,
        /// Why (`None`: bad filename, mode or a write request).
        reason: Option<Refusal>,
    },
    /// A station's script carries a CHAP secret and the requester is not
    /// the address that station used in DHCP: refused as "file not found"
    /// (a [`Event::TftpRefused`] follows).
    ScriptRefused {
        /// The normalised path.
        path: &'e str,
        /// The requester.
        peer: IpEndpoint,
        /// The MAC whose script was asked for.
        mac: [u8; 6],
        /// The address the station was seen with (`None`: not yet).
        expected: Option<core::net::Ipv4Addr>,
    },
    /// A repeated RRQ from a client whose transfer is running was ignored.
    TftpRepeated {
        /// The client.
        peer: IpEndpoint,
    },
    /// A TFTP transfer ended.
    TftpDone {
        /// The client.
        peer: IpEndpoint,
        /// How it ended.
        outcome: Option<Outcome>,
        /// Bytes the client acknowledged.
        acked: u64,
        /// File size.
        size: u64,
        /// DATA packets sent again.
        retransmitted: u64,
    },
    /// An initiator connected to the portal.
    IscsiConnected {
        /// The initiator's endpoint.
        peer: IpEndpoint,
    },
    /// A session reached full feature phase.
    IscsiLogin {
        /// The initiator's endpoint.
        peer: IpEndpoint,
        /// Its InitiatorName.
        initiator: &'e str,
        /// The target's name (`None`: a discovery session).
        target: Option<&'e str>,
    },
    /// At the session limit, a login took over the longest-silent session
    /// of its own initiator name (a rebooted station's abandoned session);
    /// that session's connection ends next.
    IscsiTakeover {
        /// The new login's endpoint.
        peer: IpEndpoint,
        /// The InitiatorName both sessions share.
        initiator: &'e str,
        /// TSIH of the replaced session.
        old_tsih: u16,
        /// How long the replaced session had been silent (ms).
        old_idle_ms: u64,
    },
    /// An iSCSI connection ended.
    IscsiClosed {
        /// The initiator's endpoint.
        peer: IpEndpoint,
        /// Why.
        reason: &'static str,
        /// Milliseconds since the initiator's last PDU.
        idle_ms: u64,
        /// PDUs received.
        pdus_in: u64,
        /// PDUs sent.
        pdus_out: u64,
    },
}

impl Event<'_> {
    /// The boot stage this event is, if any (counted in
    /// [`crate::Appliance::stages`]).
    pub fn stage(&self) -> Option<Stage> {
        match *self {
            Event::DhcpRequest(r) => Stage::of_dhcp(r.message, r.client),
            Event::DhcpReply(t) => Stage::of_dhcp(t.message, t.client),
            Event::TftpRequest { script: true, .. } => Some(Stage::Script),
            Event::TftpRequest { script: false, .. } => Some(Stage::BootFile),
            Event::IscsiLogin {
                target: Some(_), ..
            } => Some(Stage::IscsiLogin),
            Event::TftpRefused { .. } => Some(Stage::Error),
            Event::TftpDone {
                outcome: Some(Outcome::Complete),
                ..
            } => None,
            // Ended by the client before any data: a PXE ROM's size probe.
            Event::TftpDone {
                outcome: Some(Outcome::PeerError(_)),
                acked: 0,
                ..
            } => None,
            Event::TftpDone { .. } => Some(Stage::Error),
            _ => None,
        }
    }
}
