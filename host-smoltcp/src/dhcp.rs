//! DHCP glue: one UDP socket on 67 (DHCP and ProxyDHCP share it: smoltcp
//! hands a datagram to the first matching socket only) and, in proxy mode,
//! one on 4011.
//!
//! Replies go where the core's `Transmit::dst` says, with no local address
//! set: smoltcp then picks our configured address as the source. (Reusing a
//! received datagram's local address would make a reply to a broadcast come
//! from 255.255.255.255.) Replies to clients without an address are
//! broadcast, since smoltcp cannot unicast before the client answers ARP.

use core::net::SocketAddrV4;

use sanboot_core::dhcp::{server::PXE_PORT, server::SERVER_PORT, Server};
use sanboot_core::time::Instant;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::buffers::{fits, DHCP_PAYLOAD};
use crate::event::Event;

/// Datagrams taken per socket per poll round.
const RX_BURST: usize = 16;

/// The DHCP service.
#[derive(Debug)]
pub(crate) struct Dhcp<'a, const N: usize> {
    pub(crate) server: Server<'a, N>,
    main: SocketHandle,
    pxe: Option<SocketHandle>,
}

impl<'a, const N: usize> Dhcp<'a, N> {
    pub(crate) fn new(
        server: Server<'a, N>,
        main: SocketHandle,
        pxe: Option<SocketHandle>,
    ) -> Self {
        Dhcp { server, main, pxe }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// Handles what arrived on 67 and 4011. True if anything moved.
    pub(crate) fn process(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        let mut moved = false;
        let ports = [(Some(self.main), SERVER_PORT), (self.pxe, PXE_PORT)];
        for (handle, port) in ports {
            let Some(handle) = handle else { continue };
            for _ in 0..RX_BURST {
                // One reply per request: take a request only when its reply
                // has room (the interface drains the queue between rounds).
                let room = [Some(self.main), self.pxe]
                    .into_iter()
                    .flatten()
                    .all(|h| fits(sockets.get::<udp::Socket>(h), DHCP_PAYLOAD));
                if !room {
                    break;
                }
                let socket = sockets.get_mut::<udp::Socket>(handle);
                let Ok((bytes, meta)) = socket.recv() else {
                    break;
                };
                moved = true;
                #[allow(irrefutable_let_patterns)]
                let IpAddress::Ipv4(ip) = meta.endpoint.addr
                else {
                    continue;
                };
                let src = SocketAddrV4::new(ip, meta.endpoint.port);
                self.server.handle_packet(now, src, port, bytes);
                self.transmit(now, sockets, scratch, on_event);
            }
        }
        moved
    }

    fn transmit(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        scratch: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        while let Some(out) = self.server.poll_transmit(now, scratch) {
            let via = match self.pxe {
                Some(pxe) if out.src_port == PXE_PORT => pxe,
                _ => self.main,
            };
            let dst = IpEndpoint::new(IpAddress::Ipv4(*out.dst.ip()), out.dst.port());
            let sent = scratch.get(..out.len).is_some_and(|p| {
                sockets
                    .get_mut::<udp::Socket>(via)
                    .send_slice(p, dst)
                    .is_ok()
            });
            on_event(if sent {
                Event::DhcpReply(out)
            } else {
                Event::DhcpDropped
            });
        }
    }
}
