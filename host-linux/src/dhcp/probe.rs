//! Address probes for the core's DHCP server (`Server::poll_probe` /
//! `handle_probe`): is anyone using an address before it is offered?
//!
//! One ICMP echo request to the address through a raw socket bound to the
//! DHCP interface (RFC 2131 §2.2 suggests exactly this). Sending it makes
//! the kernel ARP for the address, so the probe also looks at the
//! namespace's neighbour table (`/proc/net/arp`) when the timeout ends: a
//! machine that drops pings still answers ARP, and a complete entry for the
//! address on our interface means it is in use. (An ARP probe of our own,
//! RFC 5227 style, would need an `AF_PACKET` socket address, which the safe
//! socket API cannot build.) No answer of either kind within
//! [`PROBE_TIMEOUT`]: free. A stale neighbour entry of a machine that just
//! left makes the address look used: it is then declined for a while, the
//! safe side.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use sanboot_core::dhcp::ProbeResult;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a probe waits for an echo reply or an ARP answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// Probes in flight on one interface. Echo replies are read by a small
/// blocking thread (the raw socket has no safe tokio registration) and
/// handed over through a channel; it ends with the `Prober`.
#[derive(Debug)]
pub struct Prober {
    sock: Socket,
    replies: mpsc::UnboundedReceiver<Ipv4Addr>,
    interface: String,
    ident: u16,
    seq: u16,
    pending: HashMap<Ipv4Addr, Instant>,
}

impl Prober {
    /// A raw ICMP socket on `interface` (needs CAP_NET_RAW).
    pub fn new(interface: &str) -> io::Result<Prober> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        s.bind_device(Some(interface.as_bytes()))?;
        let ident = (std::process::id() & 0xffff) as u16;
        let reader = s.try_clone()?;
        // Wakes now and then to notice that the Prober is gone.
        reader.set_read_timeout(Some(Duration::from_millis(250)))?;
        let (tx, replies) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("dhcp-probe".into())
            .spawn(move || {
                while !tx.is_closed() {
                    match recv_reply(&reader, ident) {
                        Ok(Some(from)) => {
                            let _ = tx.send(from);
                        }
                        Ok(None) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => {
                            tracing::warn!("probe socket: {e}");
                            std::thread::sleep(Duration::from_millis(250));
                        }
                    }
                }
            })?;
        Ok(Prober {
            sock: s,
            replies,
            interface: interface.to_string(),
            ident,
            seq: 0,
            pending: HashMap::new(),
        })
    }

    /// Sends the echo request for `ip`; its result comes from [`next`](Self::next).
    pub fn start(&mut self, ip: Ipv4Addr) {
        self.seq = self.seq.wrapping_add(1);
        let packet = echo_request(self.ident, self.seq);
        let to = SockAddr::from(SocketAddrV4::new(ip, 0));
        if let Err(e) = self.sock.send_to(&packet, &to) {
            // No route or no neighbour yet: the ARP check at the timeout decides.
            tracing::debug!(%ip, "probe echo: {e}");
        }
        self.pending.insert(ip, Instant::now() + PROBE_TIMEOUT);
    }

    /// The next finished probe. Pends while none is in flight; cancel-safe.
    pub async fn next(&mut self) -> (Ipv4Addr, ProbeResult) {
        loop {
            let Some(deadline) = self.pending.values().min().copied() else {
                return std::future::pending().await;
            };
            tokio::select! {
                Some(from) = self.replies.recv() => {
                    if self.pending.remove(&from).is_some() {
                        return (from, ProbeResult::InUse);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    let Some(ip) = self.pending.iter().find(|(_, d)| **d <= now).map(|(ip, _)| *ip) else {
                        continue;
                    };
                    self.pending.remove(&ip);
                    let result = if neighbour_known(&self.interface, ip) {
                        ProbeResult::InUse
                    } else {
                        ProbeResult::Free
                    };
                    return (ip, result);
                }
            }
        }
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = match pair {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(ident: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"sanboot?");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Reads one datagram: the source of an echo reply with our identifier.
/// (A raw IPv4 socket hands over the IP header too, source included.)
fn recv_reply(sock: &Socket, ident: u16) -> io::Result<Option<Ipv4Addr>> {
    use std::io::Read;
    let mut buf = [0u8; 1500];
    let n = (&*sock).read(&mut buf)?;
    Ok(parse_reply(buf.get(..n).unwrap_or_default(), ident))
}

/// The source address of an IPv4 datagram holding an ICMP echo reply with
/// identifier `ident`.
fn parse_reply(ip_packet: &[u8], ident: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(ip_packet.first()? & 0x0f) * 4;
    let src: [u8; 4] = ip_packet.get(12..16)?.try_into().ok()?;
    let icmp = ip_packet.get(ihl..)?;
    let id = u16::from_be_bytes(icmp.get(4..6)?.try_into().ok()?);
    (*icmp.first()? == ECHO_REPLY && id == ident).then_some(Ipv4Addr::from(src))
}

/// Whether the kernel has a complete neighbour entry for `ip` on
/// `interface` (flag ATF_COM, 0x2, in `/proc/net/arp`).
fn neighbour_known(interface: &str, ip: Ipv4Addr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/arp") else {
        return false;
    };
    arp_table_has(&table, interface, ip)
}

fn arp_table_has(table: &str, interface: &str, ip: Ipv4Addr) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(addr), Some(flags), Some(dev)) = (f.first(), f.get(2), f.get(5)) else {
            return false;
        };
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|v| v & 0x2 != 0);
        addr.parse() == Ok(ip) && *dev == interface && complete
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn replies_are_matched_by_identifier() {
        let mut ip = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1,
        ];
        ip.extend_from_slice(&[ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(parse_reply(&ip, 0x1234), Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(parse_reply(&ip, 0x1235), None);
        ip[20] = ECHO_REQUEST;
        assert_eq!(parse_reply(&ip, 0x1234), None);
        assert_eq!(parse_reply(&ip[..22], 0x1234), None);
    }

    #[test]
    fn arp_table_needs_a_complete_entry_on_our_interface() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     192.0.2.9        0x1         0x2         52:54:00:00:00:09     *        veth0\n\
                     192.0.2.10       0x1         0x0         00:00:00:00:00:00     *        veth0\n\
                     192.0.2.11       0x1         0x2         52:54:00:00:00:0b     *        eth1\n";
        let ip = |d| Ipv4Addr::new(192, 0, 2, d);
        assert!(arp_table_has(table, "veth0", ip(9)));
        assert!(!arp_table_has(table, "veth0", ip(10)), "incomplete");
        assert!(!arp_table_has(table, "veth0", ip(11)), "other interface");
        assert!(!arp_table_has(table, "veth0", ip(12)));
    }
}
