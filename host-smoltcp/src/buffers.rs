//! Socket buffers the caller provides (a `static`, or a local on a big
//! stack): every byte the appliance uses besides its own state lives here.

use smoltcp::iface::SocketStorage;
use smoltcp::socket::udp;

/// Largest DHCP message we accept or send (RFC 2131 minimum is 576 with
/// headers; iPXE and EDK2 send under 600; long option 43/175 sets fit).
pub const DHCP_PAYLOAD: usize = 1472;

/// Receive and transmit rings of one UDP socket: `P` datagrams and `RX`
/// bytes in, `P` datagrams and `TX` bytes out.
#[derive(Debug)]
pub struct UdpBuffers<const P: usize, const RX: usize, const TX: usize> {
    rx_meta: [udp::PacketMetadata; P],
    rx: [u8; RX],
    tx_meta: [udp::PacketMetadata; P],
    tx: [u8; TX],
}

impl<const P: usize, const RX: usize, const TX: usize> UdpBuffers<P, RX, TX> {
    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        UdpBuffers {
            rx_meta: [udp::PacketMetadata::EMPTY; P],
            rx: [0; RX],
            tx_meta: [udp::PacketMetadata::EMPTY; P],
            tx: [0; TX],
        }
    }

    pub(crate) fn socket(&mut self) -> udp::Socket<'_> {
        udp::Socket::new(
            udp::PacketBuffer::new(&mut self.rx_meta[..], &mut self.rx[..]),
            udp::PacketBuffer::new(&mut self.tx_meta[..], &mut self.tx[..]),
        )
    }
}

impl<const P: usize, const RX: usize, const TX: usize> Default for UdpBuffers<P, RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// Datagrams queued per TFTP transfer socket: a window plus padding slots.
pub const TRANSFER_PACKETS: usize = 16;
/// Receive bytes per TFTP transfer socket: ACKs and ERRORs are small.
pub const TRANSFER_RX: usize = 512;

/// All buffers of an appliance with `T` TFTP transfers, each transfer
/// socket queueing up to `TX` bytes of DATA (the window granted is what
/// fits: `TX / (blksize + 4) - 1`, at least 1, at most `TRANSFER_PACKETS - 2`).
#[derive(Debug)]
pub struct Buffers<const T: usize, const TX: usize> {
    pub(crate) dhcp: UdpBuffers<4, { 4 * DHCP_PAYLOAD }, { 2 * DHCP_PAYLOAD }>,
    pub(crate) pxe: UdpBuffers<2, { 2 * DHCP_PAYLOAD }, { 2 * DHCP_PAYLOAD }>,
    pub(crate) tftp: UdpBuffers<4, 2048, 512>,
    pub(crate) transfers: [UdpBuffers<TRANSFER_PACKETS, TRANSFER_RX, TX>; T],
    pub(crate) scratch: [u8; TX],
}

impl<const T: usize, const TX: usize> Buffers<T, TX> {
    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        Buffers {
            dhcp: UdpBuffers::new(),
            pxe: UdpBuffers::new(),
            tftp: UdpBuffers::new(),
            transfers: [const { UdpBuffers::new() }; T],
            scratch: [0; TX],
        }
    }
}

impl<const T: usize, const TX: usize> Default for Buffers<T, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// Socket slots an appliance with `transfers` TFTP transfers needs
/// (DHCP 67, PXE 4011, TFTP 69, one per transfer).
pub const fn sockets_needed(transfers: usize) -> usize {
    3 + transfers
}

/// Empty socket slots for [`crate::Appliance::new`].
pub const fn socket_storage<const S: usize>() -> [SocketStorage<'static>; S] {
    [SocketStorage::EMPTY; S]
}
