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
use sanboot_core::time::{Duration, Instant};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::buffers::{fits, DHCP_PAYLOAD};
use crate::event::Event;

/// Datagrams taken per socket per poll round.
const RX_BURST: usize = 16;
/// A reply still queued after this long waits for an ARP answer that is not
/// coming (smoltcp keeps such a datagram forever): the socket is reset so
/// that it cannot hold every other client back.
const STUCK: Duration = Duration::from_millis(3000);

/// The DHCP service.
#[derive(Debug)]
pub(crate) struct Dhcp<'a, const N: usize> {
    pub(crate) server: Server<'a, N>,
    main: SocketHandle,
    pxe: Option<SocketHandle>,
    /// Since when each socket (67, 4011) has had a reply queued.
    queued_since: [Option<Instant>; 2],
}

impl<'a, const N: usize> Dhcp<'a, N> {
    pub(crate) fn new(
        server: Server<'a, N>,
        main: SocketHandle,
        pxe: Option<SocketHandle>,
    ) -> Self {
        Dhcp {
            server,
            main,
            pxe,
            queued_since: [None; 2],
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let stuck = self.queued_since.iter().flatten().map(|t| *t + STUCK).min();
        match (self.server.poll_timeout(), stuck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Resets a socket whose reply has waited for ARP for [`STUCK`].
    fn unstick(&mut self, now: Instant, sockets: &mut SocketSet<'_>) {
        let ports = [(Some(self.main), SERVER_PORT), (self.pxe, PXE_PORT)];
        for ((handle, port), since) in ports.into_iter().zip(self.queued_since.iter_mut()) {
            let Some(handle) = handle else { continue };
            let socket = sockets.get_mut::<udp::Socket>(handle);
            if socket.send_queue() == 0 {
                *since = None;
                continue;
            }
            match *since {
                None => *since = Some(now),
                Some(t) if now >= t + STUCK => {
                    socket.close();
                    // Rebinding a closed socket to a non-zero port cannot fail.
                    let _ = socket.bind(port);
                    *since = None;
                }
                Some(_) => {}
            }
        }
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
        self.unstick(now, sockets);
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
                if let Some(r) = self.server.handle_packet(now, src, port, bytes) {
                    on_event(Event::DhcpRequest(r));
                }
                self.transmit(now, sockets, scratch, on_event);
                if let Some((mac, ip)) = self.server.poll_station() {
                    on_event(Event::StationAddress { mac, ip });
                }
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
