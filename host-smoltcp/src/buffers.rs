//! Socket buffers the caller provides (a `static`, or a local on a big
//! stack): every byte the appliance uses besides its own state lives here.

use smoltcp::iface::SocketStorage;
use smoltcp::socket::udp;

/// Largest DHCP message we accept or send (RFC 2131 minimum is 576 with
/// headers; iPXE and EDK2 send under 600; long option 43/175 sets fit).
pub const DHCP_PAYLOAD: usize = 1472;

/// Payload rings of one UDP socket: `RX` bytes in, `TX` bytes out. All
/// zero, so a `static` of them lands in `.bss`, not in flash.
#[derive(Debug)]
pub struct UdpBytes<const RX: usize, const TX: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
}

impl<const RX: usize, const TX: usize> UdpBytes<RX, TX> {
    /// Zeroed rings.
    pub const fn new() -> Self {
        UdpBytes {
            rx: [0; RX],
            tx: [0; TX],
        }
    }
}

impl<const RX: usize, const TX: usize> Default for UdpBytes<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// Datagram slots of one UDP socket: `P` each way. (Separate from the
/// bytes because an empty slot is not all-zero bytes: a `static` of them
/// is initialised data, which costs flash.)
#[derive(Debug)]
pub struct UdpSlots<const P: usize> {
    rx: [udp::PacketMetadata; P],
    tx: [udp::PacketMetadata; P],
}

impl<const P: usize> UdpSlots<P> {
    /// Empty slots.
    pub const fn new() -> Self {
        UdpSlots {
            rx: [udp::PacketMetadata::EMPTY; P],
            tx: [udp::PacketMetadata::EMPTY; P],
        }
    }
}

impl<const P: usize> Default for UdpSlots<P> {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn udp_socket<'a, const P: usize, const RX: usize, const TX: usize>(
    slots: &'a mut UdpSlots<P>,
    bytes: &'a mut UdpBytes<RX, TX>,
) -> udp::Socket<'a> {
    udp::Socket::new(
        udp::PacketBuffer::new(&mut slots.rx[..], &mut bytes.rx[..]),
        udp::PacketBuffer::new(&mut slots.tx[..], &mut bytes.tx[..]),
    )
}

/// Datagrams queued per TFTP transfer socket: a window plus padding slots.
pub const TRANSFER_PACKETS: usize = 16;
/// Receive bytes per TFTP transfer socket: ACKs and ERRORs are small.
pub const TRANSFER_RX: usize = 512;

/// The byte rings of an appliance with `T` TFTP transfers, each transfer
/// socket queueing up to `TX` bytes of DATA (the window granted is what
/// fits: `TX / (blksize + 4) - 1`, at least 1, at most `TRANSFER_PACKETS - 2`),
/// plus one scratch datagram of `TX` bytes.
#[derive(Debug)]
pub struct Buffers<const T: usize, const TX: usize> {
    pub(crate) dhcp: UdpBytes<{ 2 * DHCP_PAYLOAD }, { 2 * DHCP_PAYLOAD }>,
    pub(crate) pxe: UdpBytes<DHCP_PAYLOAD, DHCP_PAYLOAD>,
    pub(crate) tftp: UdpBytes<2048, 512>,
    pub(crate) transfers: [UdpBytes<TRANSFER_RX, TX>; T],
    pub(crate) scratch: [u8; TX],
}

impl<const T: usize, const TX: usize> Buffers<T, TX> {
    /// Zeroed buffers (usable in a `static`, placed in `.bss`).
    pub const fn new() -> Self {
        Buffers {
            dhcp: UdpBytes::new(),
            pxe: UdpBytes::new(),
            tftp: UdpBytes::new(),
            transfers: [const { UdpBytes::new() }; T],
            scratch: [0; TX],
        }
    }
}

impl<const T: usize, const TX: usize> Default for Buffers<T, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// The datagram slots of an appliance with `T` TFTP transfers.
#[derive(Debug)]
pub struct Slots<const T: usize> {
    pub(crate) dhcp: UdpSlots<4>,
    pub(crate) pxe: UdpSlots<1>,
    pub(crate) tftp: UdpSlots<4>,
    pub(crate) transfers: [UdpSlots<TRANSFER_PACKETS>; T],
}

impl<const T: usize> Slots<T> {
    /// Empty slots (usable in a `static`).
    pub const fn new() -> Self {
        Slots {
            dhcp: UdpSlots::new(),
            pxe: UdpSlots::new(),
            tftp: UdpSlots::new(),
            transfers: [const { UdpSlots::new() }; T],
        }
    }
}

impl<const T: usize> Default for Slots<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Socket slots an appliance with `transfers` TFTP transfers and
/// `connections` iSCSI connections needs (DHCP 67, PXE 4011, TFTP 69, one
/// per transfer, one per connection).
pub const fn sockets_needed(transfers: usize, connections: usize) -> usize {
    3 + transfers + connections
}

/// Empty socket slots for [`crate::Appliance::new`].
pub const fn socket_storage<const S: usize>() -> [SocketStorage<'static>; S] {
    [SocketStorage::EMPTY; S]
}

/// True if a datagram of `len` bytes can be queued now, wherever the ring's
/// free space is (smoltcp pads to the ring's start when the tail is short).
pub(crate) fn fits(socket: &udp::Socket<'_>, len: usize) -> bool {
    let free = socket
        .payload_send_capacity()
        .saturating_sub(socket.send_queue());
    socket.can_send()
        && (free >= len.saturating_mul(2) || (socket.send_queue() == 0 && free >= len))
}
