#![no_main]
//! DHCP server in both modes: arbitrary packets (and arbitrary mutations of
//! real iPXE/EDK2 messages) with advancing time never panic, every reply
//! parses, and afterwards a valid DISCOVER from a fresh MAC still gets an
//! OFFER (the machine stays usable). A third server probes addresses (2
//! probe slots, each probe answered free or in use as the input says) and
//! may be in renew-only mode.
use core::net::{Ipv4Addr, SocketAddrV4};

use sanboot_core::dhcp::server::{Config, Mode, Server, PXE_PORT, SERVER_PORT};
use sanboot_core::dhcp::wire::{MessageType, Op, Packet, Repr};
use sanboot_core::dhcp::{Host, ProbeResult};
use sanboot_core::time::{Duration, Instant};

const SEEDS: &[&[u8]] = &[
    include_bytes!("../../core/src/dhcp/testdata/ipxe_bios_discover.bin"),
    include_bytes!("../../core/src/dhcp/testdata/ipxe_bios_request.bin"),
    include_bytes!("../../core/src/dhcp/testdata/edk2_discover.bin"),
    include_bytes!("../../core/src/dhcp/testdata/edk2_request.bin"),
    include_bytes!("../../core/src/dhcp/testdata/undionly_discover.bin"),
];

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
static HOSTS: [Host<'static>; 2] = [
    Host {
        mac: [0x52, 0x54, 0, 0xe2, 0xe0, 0x01],
        ip: Some(Ipv4Addr::new(192, 0, 2, 50)),
        hostname: Some("station"),
        boot_file: None,
        script: None,
    },
    Host {
        mac: [0x52, 0x54, 0, 0xe2, 0xe0, 0x02],
        ip: None,
        hostname: None,
        boot_file: Some("special.efi"),
        script: Some("special.ipxe"),
    },
];

fn config(mode: Mode) -> Config<'static> {
    let mut c = Config::new(mode, SERVER_IP);
    // A small pool, so exhaustion and expiry paths are reached.
    c.pool = Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 104)));
    c.lease_secs = 30;
    c.offer_hold = Duration::from_secs(2);
    c.decline_hold = Duration::from_secs(5);
    c.boot.root_path = Some("/scripts");
    c.boot.http = Some("http://192.0.2.1/ipxe.efi");
    // Our own HTTP server too: iPXE and arm64 HTTP clients get URLs built from it.
    c.boot.http_server = Some(core::net::SocketAddrV4::new(SERVER_IP, 8080));
    c.hosts = &HOSTS;
    c
}

fn pxe_discover(mac: [u8; 6]) -> Vec<u8> {
    let mut r = Repr::new(Op::Request, 0x1234, mac);
    r.message_type = Some(MessageType::Discover);
    r.client_arch = Some(7);
    r.vendor_class
        .extend_from_slice(b"PXEClient:Arch:00007:UNDI:003000")
        .unwrap();
    let mut out = vec![0; r.buffer_len()];
    r.emit(&mut out).unwrap();
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut full = Server::<8>::new(config(Mode::Full)).unwrap();
    let mut proxy = Server::<8>::new(config(Mode::Proxy)).unwrap();
    let mut probing = Server::<8, 2>::new(Config {
        probe: true,
        ..config(Mode::Full)
    })
    .unwrap();
    if data.first().is_some_and(|b| b & 1 != 0) {
        probing.set_renew_only(Some(Instant::from_millis(60_000)));
    }
    let mut now = 0u64;
    let mut buf = [0u8; 1500];
    // Records: [time step, flags, seed index, mutation offset, len_lo, len_hi, bytes...]
    let mut rest = data;
    while let [step, flags, seed, off, lo, hi, tail @ ..] = rest {
        now += u64::from(*step) * 97;
        let len = usize::from(u16::from_le_bytes([*lo, *hi])) % 600;
        let (body, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let packet: Vec<u8> = if flags & 1 == 1 {
            // Mutate a real message: overwrite from `off` with `body`.
            let mut p = SEEDS[usize::from(*seed) % SEEDS.len()].to_vec();
            let start = usize::from(*off) + if flags & 8 != 0 { 240 } else { 0 };
            for (i, b) in body.iter().enumerate() {
                if let Some(x) = p.get_mut(start + i) {
                    *x = *b;
                }
            }
            if flags & 16 != 0 {
                p.truncate(start);
            }
            p
        } else {
            body.to_vec()
        };
        let port = if flags & 2 != 0 {
            PXE_PORT
        } else {
            SERVER_PORT
        };
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, *seed), 68);
        let t = Instant::from_millis(now);
        if flags & 64 != 0 {
            probing.handle_packet(t, src, port, &packet);
            if flags & 32 != 0 {
                probing.handle_timeout(t);
            }
            drain(&mut probing, t, &mut buf);
            // Answer the probes (free, or in use when bit 7 says so); each
            // answer may start another probe and yields at most one reply.
            let mut answered = 0;
            while let Some(ip) = probing.poll_probe() {
                let r = if flags & 128 != 0 {
                    ProbeResult::InUse
                } else {
                    ProbeResult::Free
                };
                probing.handle_probe(t, ip, r);
                drain(&mut probing, t, &mut buf);
                answered += 1;
                assert!(answered <= 16, "probes do not end");
            }
            assert!(probing.probes_pending() <= 2);
            continue;
        }
        let s = if flags & 4 != 0 {
            &mut proxy
        } else {
            &mut full
        };
        s.handle_packet(t, src, port, &packet);
        if flags & 32 != 0 {
            s.handle_timeout(t);
        }
        drain(s, t, &mut buf);
    }
    // Still usable: a new PXE client gets an OFFER from both, once stale
    // offers have had time to expire.
    let t = Instant::from_millis(now + 3_600_000);
    for s in [&mut full, &mut proxy] {
        s.handle_timeout(t);
        s.handle_packet(
            t,
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            SERVER_PORT,
            &pxe_discover([2, 9, 9, 9, 9, 9]),
        );
        let tx = s
            .poll_transmit(t, &mut buf)
            .expect("a valid DISCOVER must still be answered");
        assert_eq!(tx.message, MessageType::Offer);
    }
    // The probing server, too, after its probe: renew-only has ended by now.
    probing.handle_timeout(t);
    let mac = [2, 9, 9, 9, 9, 8];
    probing.handle_packet(
        t,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SERVER_PORT,
        &pxe_discover(mac),
    );
    let ip = probing.poll_probe().expect("a new client's address is probed");
    probing.handle_probe(t, ip, ProbeResult::Free);
    let tx = probing
        .poll_transmit(t, &mut buf)
        .expect("a free probed address is offered");
    assert_eq!((tx.message, tx.yiaddr, tx.mac), (MessageType::Offer, ip, mac));
});

fn drain<const N: usize, const P: usize>(s: &mut Server<'_, N, P>, t: Instant, buf: &mut [u8]) {
    while let Some(tx) = s.poll_transmit(t, buf) {
        let r = Repr::parse(&Packet::new_checked(&buf[..tx.len]).unwrap()).unwrap();
        assert_eq!(r.op, Op::Reply);
        if tx.proxy {
            assert!(r.yiaddr.is_unspecified());
        }
    }
}
