//! Server behaviour, driven with packets cut from the peer captures.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::dhcp::leases::LeaseState;
use crate::dhcp::probe::{ProbeResult, PROBE_ATTEMPTS};
use crate::dhcp::wire::tests::{
    EDK2_DISCOVER, EDK2_REQUEST, IPXE_BIOS_DISCOVER, IPXE_BIOS_REQUEST, IPXE_EFI_DISCOVER,
    UNDIONLY_DISCOVER,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);

const DNS: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 0, 2, 53)];

fn full_config() -> Config<'static> {
    let mut c = Config::new(Mode::Full, SERVER);
    // The captured REQUEST asks for .129, the first address of this pool.
    c.pool = Some((Ipv4Addr::new(192, 0, 2, 129), Ipv4Addr::new(192, 0, 2, 150)));
    c.router = Some(SERVER);
    c.dns = &DNS;
    c.lease_secs = 600;
    c.boot.root_path = Some("/scripts");
    c
}

fn t(ms: u64) -> Instant {
    Instant(ms)
}

/// Feeds one packet; returns the reply's metadata and parsed content.
fn exchange<const N: usize, const P: usize>(
    s: &mut Server<'_, N, P>,
    now: u64,
    src: SocketAddrV4,
    port: u16,
    bytes: &[u8],
) -> Option<(Transmit<'static>, Repr)> {
    s.handle_packet(t(now), src, port, bytes);
    let mut buf = [0xa5u8; 1500];
    let tx = s.poll_transmit(t(now), &mut buf)?;
    assert!(
        s.poll_transmit(t(now), &mut buf).is_none(),
        "one input, one reply"
    );
    let r = Repr::parse(&Packet::new_checked(&buf[..tx.len]).unwrap()).unwrap();
    // Owned copies of the 'static strings the test config uses.
    let tx = Transmit {
        file: tx.file.map(leak),
        boot_file: None,
        ..tx
    };
    Some((tx, r))
}

fn leak(s: &str) -> &'static str {
    match s {
        "boot.ipxe" => "boot.ipxe",
        "undionly.kpxe" => "undionly.kpxe",
        "ipxe.efi" => "ipxe.efi",
        "special.efi" => "special.efi",
        "http://192.0.2.1/ipxe.efi" => "http://192.0.2.1/ipxe.efi",
        _ => "?",
    }
}

fn modified(bytes: &[u8], f: impl FnOnce(&mut Repr)) -> heapless::Vec<u8, 1500> {
    let mut r = Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap();
    f(&mut r);
    let mut out = heapless::Vec::new();
    out.resize(r.buffer_len(), 0).unwrap();
    r.emit(&mut out).unwrap();
    out
}

fn plain_discover(mac: [u8; 6], xid: u32) -> heapless::Vec<u8, 1500> {
    let mut r = Repr::new(Op::Request, xid, mac);
    r.message_type = Some(MessageType::Discover);
    for c in [1, 3, 6] {
        r.params.insert(c);
    }
    let mut out = heapless::Vec::new();
    out.resize(r.buffer_len(), 0).unwrap();
    r.emit(&mut out).unwrap();
    out
}

fn request_for(mac: [u8; 6], xid: u32, ip: Ipv4Addr) -> heapless::Vec<u8, 1500> {
    let mut r = Repr::new(Op::Request, xid, mac);
    r.message_type = Some(MessageType::Request);
    r.server_id = Some(SERVER);
    r.requested_ip = Some(ip);
    let mut out = heapless::Vec::new();
    out.resize(r.buffer_len(), 0).unwrap();
    r.emit(&mut out).unwrap();
    out
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

#[test]
fn full_dora_with_captured_ipxe() {
    let mut s = Server::<64>::new(full_config()).unwrap();
    let (tx, offer) = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(offer.message_type, Some(MessageType::Offer));
    assert_eq!(offer.yiaddr, Ipv4Addr::new(192, 0, 2, 129));
    let discover = Repr::parse(&Packet::new_checked(IPXE_BIOS_DISCOVER).unwrap()).unwrap();
    assert_eq!(offer.xid, discover.xid, "xid echoed");
    assert_eq!(
        offer.siaddr, SERVER,
        "iPXE needs siaddr to find the TFTP server"
    );
    assert_eq!(&offer.file[..], b"boot.ipxe");
    assert_eq!(&offer.bootfile[..], b"boot.ipxe\0");
    assert_eq!(offer.ipxe, Some(IpxeEncap { no_pxedhcp: true }));
    assert_eq!(&offer.root_path[..], b"/scripts");
    assert_eq!(offer.server_id, Some(SERVER));
    assert_eq!(offer.lease_time, Some(600));
    assert_eq!(offer.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(offer.router, Some(SERVER));
    assert_eq!(tx.dst, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(tx.broadcast);
    assert_eq!(tx.src_port, 67);
    assert_eq!((tx.client, tx.file), (ClientKind::Ipxe, Some("boot.ipxe")));

    let g = s.generation();
    let (tx, ack) = exchange(&mut s, 1000, CLIENT, 67, IPXE_BIOS_REQUEST).unwrap();
    assert_eq!(ack.message_type, Some(MessageType::Ack));
    assert_eq!(ack.yiaddr, Ipv4Addr::new(192, 0, 2, 129));
    assert_eq!(&ack.file[..], b"boot.ipxe");
    assert_eq!(tx.message, MessageType::Ack);
    assert_ne!(s.generation(), g, "an ACK must be persisted");
    let leases: heapless::Vec<Lease, 4> = s.leases(t(1000)).collect();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].mac, MAC);
    assert_eq!(leases[0].expires, t(601_000));
    assert_eq!(s.stats().offers, 1);
    assert_eq!(s.stats().acks, 1);
}

#[test]
fn proxy_offer_to_plain_pxe_bios_gets_undionly() {
    let mut s = Server::<4>::new(Config::new(Mode::Proxy, SERVER)).unwrap();
    let pxe_bios = modified(IPXE_BIOS_DISCOVER, |r| {
        r.user_class.clear();
        r.ipxe = None;
    });
    let (tx, o) = exchange(&mut s, 0, CLIENT, 67, &pxe_bios).unwrap();
    assert_eq!(
        o.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        "a proxy never gives addresses"
    );
    assert_eq!(o.siaddr, SERVER);
    assert_eq!(&o.file[..], b"undionly.kpxe");
    assert_eq!(&o.bootfile[..], b"undionly.kpxe\0");
    assert_eq!(&o.vendor_class[..], b"PXEClient");
    assert_eq!(o.server_id, Some(SERVER));
    assert_eq!(o.uuid.len(), 17, "option 97 echoed");
    assert_eq!(o.lease_time, None);
    assert_eq!(o.ipxe, None);
    assert_eq!(
        &o.vendor_specific[..],
        &[6, 1, 8, 255],
        "43: skip boot server discovery"
    );
    assert!(tx.proxy && tx.broadcast);
    assert_eq!(s.stats().proxy_offers, 1);
    assert_eq!(s.lease_table().len(), 0);
}

#[test]
fn proxy_offer_and_4011_ack_to_edk2_uefi() {
    let mut s = Server::<4>::new(Config::new(Mode::Proxy, SERVER)).unwrap();
    let (tx, o) = exchange(&mut s, 0, CLIENT, 67, EDK2_DISCOVER).unwrap();
    assert_eq!(&o.file[..], b"ipxe.efi");
    assert_eq!(o.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert!(o.broadcast, "EDK2 asked for broadcast");
    assert_eq!(tx.dst.ip(), &Ipv4Addr::BROADCAST);
    assert_eq!(tx.client, ClientKind::Pxe { arch: 7 });
    assert!(
        o.vendor_specific.is_empty(),
        "UEFI asks port 4011 when 43 is absent"
    );
    let edk2_uuid = Repr::parse(&Packet::new_checked(EDK2_DISCOVER).unwrap())
        .unwrap()
        .uuid;
    assert_eq!(o.uuid, edk2_uuid);

    // Its REQUEST to the DHCP server on 67 is not the proxy's business...
    assert!(exchange(&mut s, 10, CLIENT, 67, EDK2_REQUEST).is_none());
    // ...but a REQUEST on 4011 gets the boot file, back to where it came from.
    let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 129), 68);
    let (tx, a) = exchange(&mut s, 20, from, PXE_PORT, EDK2_REQUEST).unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    assert_eq!(&a.file[..], b"ipxe.efi");
    assert_eq!(a.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(&a.vendor_class[..], b"PXEClient");
    assert_eq!((tx.dst, tx.src_port), (from, PXE_PORT));
    assert_eq!(s.stats().proxy_acks, 1);
}

#[test]
fn ipxe_gets_the_script_in_proxy_mode_too() {
    let mut c = Config::new(Mode::Proxy, SERVER);
    c.boot.root_path = Some("/scripts");
    let mut s = Server::<4>::new(c).unwrap();
    for d in [IPXE_BIOS_DISCOVER, IPXE_EFI_DISCOVER, UNDIONLY_DISCOVER] {
        let (_, o) = exchange(&mut s, 0, CLIENT, 67, d).unwrap();
        assert_eq!(&o.file[..], b"boot.ipxe");
        assert_eq!(o.ipxe, Some(IpxeEncap { no_pxedhcp: true }));
        assert_eq!(&o.root_path[..], b"/scripts");
    }
    // Option 175 alone (no 77) is enough to be recognised as iPXE.
    let only175 = modified(IPXE_EFI_DISCOVER, |r| r.user_class.clear());
    let (_, o) = exchange(&mut s, 0, CLIENT, 67, &only175).unwrap();
    assert_eq!(&o.file[..], b"boot.ipxe");
    // RFC 3004 form of 77 without 175.
    let rfc3004 = modified(IPXE_EFI_DISCOVER, |r| {
        r.ipxe = None;
        r.user_class.clear();
        r.user_class.extend_from_slice(b"\x04iPXE").unwrap();
    });
    let (tx, o) = exchange(&mut s, 0, CLIENT, 67, &rfc3004).unwrap();
    assert_eq!(&o.file[..], b"boot.ipxe");
    assert_eq!(tx.client, ClientKind::Ipxe);
}

#[test]
fn plain_client_is_ignored_by_the_proxy() {
    let mut s = Server::<4>::new(Config::new(Mode::Proxy, SERVER)).unwrap();
    assert!(exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    assert_eq!(s.stats().ignored, 1);
    // In full mode the same client gets an address and no boot file.
    let mut s = Server::<4>::new(full_config()).unwrap();
    let (tx, o) = exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).unwrap();
    assert_eq!(o.yiaddr, Ipv4Addr::new(192, 0, 2, 129));
    assert!(o.file.is_empty() && o.bootfile.is_empty());
    assert_eq!(tx.file, None);
}

#[test]
fn http_boot_client_gets_the_url_and_httpclient() {
    let mut c = full_config();
    c.boot.http = Some("http://192.0.2.1/ipxe.efi");
    let mut s = Server::<4>::new(c).unwrap();
    let http = modified(EDK2_DISCOVER, |r| {
        r.client_arch = Some(16);
        r.vendor_class.clear();
        r.vendor_class
            .extend_from_slice(b"HTTPClient:Arch:00016:UNDI:003001")
            .unwrap();
    });
    let (_, o) = exchange(&mut s, 0, CLIENT, 67, &http).unwrap();
    assert_eq!(&o.bootfile[..], b"http://192.0.2.1/ipxe.efi\0");
    assert_eq!(&o.vendor_class[..], b"HTTPClient");
}

fn http_discover(arch: u16) -> heapless::Vec<u8, 1500> {
    modified(EDK2_DISCOVER, |r| {
        r.client_arch = Some(arch);
        r.vendor_class.clear();
        r.vendor_class
            .extend_from_slice(b"HTTPClient:Arch:00016:UNDI:003001")
            .unwrap();
    })
}

const HTTP_SERVER: SocketAddrV4 = SocketAddrV4::new(SERVER, 80);

#[test]
fn our_http_server_boots_uefi_http_clients_in_both_modes() {
    for mode in [Mode::Full, Mode::Proxy] {
        let mut c = full_config();
        c.mode = mode;
        c.boot.http_server = Some(HTTP_SERVER);
        let mut s = Server::<4>::new(c).unwrap();
        let (tx, o) = exchange(&mut s, 0, CLIENT, 67, &http_discover(16)).unwrap();
        assert_eq!(tx.proxy, mode == Mode::Proxy);
        assert_eq!(&o.bootfile[..], b"http://192.0.2.1/ipxe.efi\0", "{mode:?}");
        assert_eq!(&o.file[..], b"http://192.0.2.1/ipxe.efi", "{mode:?}");
        // UEFI 2.x 24.7.2: an offer without "HTTPClient" is not an HTTP boot offer.
        assert_eq!(&o.vendor_class[..], b"HTTPClient", "{mode:?}");
        assert_eq!(
            o.yiaddr.is_unspecified(),
            mode == Mode::Proxy,
            "a proxy gives no address"
        );
        let (_, o) = exchange(&mut s, 0, CLIENT, 67, &http_discover(19)).unwrap();
        assert_eq!(&o.bootfile[..], b"http://192.0.2.1/ipxe-arm64.efi\0");
        // x86 32-bit UEFI HTTP: nothing to offer, in proxy mode no answer at all.
        let r = exchange(&mut s, 0, CLIENT, 67, &http_discover(15));
        match mode {
            Mode::Proxy => assert!(r.is_none()),
            Mode::Full => {
                let (_, o) = r.unwrap();
                assert!(o.bootfile.is_empty() && o.vendor_class.is_empty());
            }
        }
    }
}

#[test]
fn ipxe_gets_its_script_over_http_when_we_serve_it() {
    for mode in [Mode::Full, Mode::Proxy] {
        let mut c = full_config();
        c.mode = mode;
        c.boot.http_server = Some(SocketAddrV4::new(SERVER, 8080));
        let mut s = Server::<4>::new(c).unwrap();
        let (_, o) = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
        assert_eq!(&o.bootfile[..], b"http://192.0.2.1:8080/boot.ipxe\0");
        s.handle_packet(t(0), CLIENT, 67, IPXE_BIOS_DISCOVER);
        let tx = s.poll_transmit(t(0), &mut [0u8; 1500]).unwrap();
        assert_eq!(
            tx.boot_file,
            Some(BootFile::Http {
                server: SocketAddrV4::new(SERVER, 8080),
                path: "boot.ipxe"
            }),
            "hosts log the URL the client got"
        );
        // A plain PXE ROM has only TFTP: its file stays a name.
        let (_, o) = exchange(&mut s, 0, CLIENT, 67, EDK2_DISCOVER).unwrap();
        assert_eq!(&o.bootfile[..], b"ipxe.efi\0");
    }
}

#[test]
fn names_too_long_for_an_http_url_are_refused() {
    let mut c = full_config();
    static LONG: [u8; 240] = [b'x'; 240];
    c.boot.script = core::str::from_utf8(&LONG).unwrap();
    assert!(Server::<4>::new(c).is_ok(), "fits as a TFTP name");
    c.boot.http_server = Some(HTTP_SERVER);
    assert_eq!(Server::<4>::new(c).err(), Some(ConfigError::NameTooLong));
}

#[test]
fn pool_exhaustion_is_refused_and_counted() {
    let mut c = full_config();
    c.pool = Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)));
    let mut s = Server::<8>::new(c).unwrap();
    let a = exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1))
        .unwrap()
        .1
        .yiaddr;
    let b = exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(2), 2))
        .unwrap()
        .1
        .yiaddr;
    assert_ne!(a, b);
    assert!(exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(3), 3)).is_none());
    assert_eq!(s.stats().pool_exhausted, 1);
    // The offers are only held briefly: after the hold the third client is served.
    let (_, o) = exchange(&mut s, 11_000, CLIENT, 67, &plain_discover(mac(3), 4)).unwrap();
    assert!(o.yiaddr == a || o.yiaddr == b);
}

#[test]
fn reservation_is_honoured() {
    let hosts = [
        Host {
            ip: Some(Ipv4Addr::new(192, 0, 2, 50)),
            hostname: Some("station1"),
            ..Host::new(MAC)
        },
        Host {
            boot_file: Some("special.efi"),
            ..Host::new([0x52, 0x54, 0, 0xe2, 0xe0, 0x02])
        },
    ];
    let mut c = full_config();
    c.hosts = &hosts;
    let mut s = Server::<8>::new(c).unwrap();
    let (_, o) = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(o.yiaddr, Ipv4Addr::new(192, 0, 2, 50));
    assert_eq!(&o.hostname[..], b"station1");
    let req = request_for(MAC, 9, Ipv4Addr::new(192, 0, 2, 50));
    let (_, a) = exchange(&mut s, 1, CLIENT, 67, &req).unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    // Another client asking for the reserved address is refused.
    let (_, n) = exchange(
        &mut s,
        2,
        CLIENT,
        67,
        &request_for(mac(9), 10, Ipv4Addr::new(192, 0, 2, 50)),
    )
    .unwrap();
    assert_eq!(n.message_type, Some(MessageType::Nak));
    // Per-host boot file override for a PXE client.
    let other = modified(EDK2_DISCOVER, |r| {
        r.chaddr = [0x52, 0x54, 0, 0xe2, 0xe0, 0x02]
    });
    let (tx, o) = exchange(&mut s, 3, CLIENT, 67, &other).unwrap();
    assert_eq!(&o.file[..], b"special.efi");
    assert_eq!(tx.choice, Some(BootChoice::Host));
    // Unsorted hosts are a configuration error, not a silent miss.
    let mut c = full_config();
    let rev = [hosts[1], hosts[0]];
    c.hosts = &rev;
    assert_eq!(Server::<8>::new(c).err(), Some(ConfigError::HostsNotSorted));
}

#[test]
fn lease_expiry_frees_the_address() {
    let mut c = full_config();
    c.pool = Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 100)));
    c.lease_secs = 60;
    let mut s = Server::<8>::new(c).unwrap();
    let ip = Ipv4Addr::new(192, 0, 2, 100);
    exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).unwrap();
    let (_, a) = exchange(&mut s, 10, CLIENT, 67, &request_for(mac(1), 1, ip)).unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    assert!(exchange(&mut s, 30_000, CLIENT, 67, &plain_discover(mac(2), 2)).is_none());
    assert_eq!(s.poll_timeout(), Some(t(60_010)));
    s.handle_timeout(t(60_010));
    assert_eq!(s.leases(t(60_010)).count(), 0);
    let (_, o) = exchange(&mut s, 60_011, CLIENT, 67, &plain_discover(mac(2), 3)).unwrap();
    assert_eq!(o.yiaddr, ip);
}

#[test]
fn leases_load_back_after_restart() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let lease = Lease {
        mac: mac(7),
        ip: Ipv4Addr::new(192, 0, 2, 140),
        expires: t(500_000),
        state: LeaseState::Bound,
    };
    s.load_lease(t(0), lease).unwrap();
    let (_, o) = exchange(&mut s, 1, CLIENT, 67, &plain_discover(mac(7), 1)).unwrap();
    assert_eq!(o.yiaddr, lease.ip);
    let (_, o) = exchange(&mut s, 1, CLIENT, 67, &plain_discover(mac(8), 2)).unwrap();
    assert_ne!(o.yiaddr, lease.ip);
}

#[test]
fn request_for_another_server_or_address_is_handled() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let (_, o) = exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).unwrap();
    let other = modified(&request_for(mac(1), 1, o.yiaddr), |r| {
        r.server_id = Some(Ipv4Addr::new(192, 0, 2, 2))
    });
    assert!(exchange(&mut s, 1, CLIENT, 67, &other).is_none());
    assert_eq!(s.lease_table().len(), 0, "the offer was given back");
    // INIT-REBOOT with an address outside our pool: NAK, broadcast.
    let foreign = modified(&request_for(mac(1), 2, Ipv4Addr::new(10, 9, 9, 9)), |r| {
        r.server_id = None
    });
    let (tx, n) = exchange(&mut s, 2, CLIENT, 67, &foreign).unwrap();
    assert_eq!(n.message_type, Some(MessageType::Nak));
    assert_eq!(n.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert!(tx.broadcast);
    // RENEWING: unicast back to ciaddr.
    let ip = Ipv4Addr::new(192, 0, 2, 133);
    exchange(&mut s, 3, CLIENT, 67, &request_for(mac(2), 3, ip)).unwrap();
    let renew = modified(&request_for(mac(2), 4, ip), |r| {
        r.server_id = None;
        r.requested_ip = None;
        r.ciaddr = ip;
    });
    let (tx, a) = exchange(&mut s, 4, SocketAddrV4::new(ip, 68), 67, &renew).unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    assert_eq!(tx.dst, SocketAddrV4::new(ip, 68));
    assert!(!tx.broadcast);
}

#[test]
fn relayed_requests_go_back_to_the_relay() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let relay = Ipv4Addr::new(192, 0, 2, 254);
    let d = modified(&plain_discover(mac(1), 1), |r| r.giaddr = relay);
    let (tx, o) = exchange(&mut s, 0, SocketAddrV4::new(relay, 67), 67, &d).unwrap();
    assert_eq!(tx.dst, SocketAddrV4::new(relay, 67));
    assert_eq!(o.giaddr, relay);
}

#[test]
fn release_and_decline() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let ip = Ipv4Addr::new(192, 0, 2, 129);
    exchange(&mut s, 0, CLIENT, 67, &request_for(mac(1), 1, ip)).unwrap();
    let rel = modified(&request_for(mac(1), 2, ip), |r| {
        r.message_type = Some(MessageType::Release);
        r.requested_ip = None;
        r.ciaddr = ip;
    });
    assert!(exchange(&mut s, 1, CLIENT, 67, &rel).is_none());
    assert_eq!(s.stats().releases, 1);
    assert_eq!(s.leases(t(1)).count(), 0);
    exchange(&mut s, 2, CLIENT, 67, &request_for(mac(1), 3, ip)).unwrap();
    let dec = modified(&request_for(mac(1), 4, ip), |r| {
        r.message_type = Some(MessageType::Decline)
    });
    assert!(exchange(&mut s, 3, CLIENT, 67, &dec).is_none());
    assert_eq!(s.stats().declines, 1);
    let (_, o) = exchange(&mut s, 4, CLIENT, 67, &plain_discover(mac(1), 5)).unwrap();
    assert_ne!(o.yiaddr, ip, "a declined address is not offered again");
}

#[test]
fn reply_respects_max_message_size() {
    let mut c = full_config();
    let dns = [Ipv4Addr::new(192, 0, 2, 53); 4];
    c.dns = &dns;
    let name: &'static str = Box::leak("x".repeat(100).into_boxed_str());
    let root: &'static str = Box::leak("r".repeat(200).into_boxed_str());
    c.boot.script = name;
    c.boot.root_path = Some(root);
    let mut s = Server::<8>::new(c).unwrap();
    let small = modified(IPXE_BIOS_DISCOVER, |r| r.max_size = Some(576));
    s.handle_packet(t(0), CLIENT, 67, &small);
    let mut buf = [0u8; 1500];
    let tx = s.poll_transmit(t(0), &mut buf).unwrap();
    assert!(tx.len <= 576 - 28, "{} bytes", tx.len);
    let r = Repr::parse(&Packet::new_checked(&buf[..tx.len]).unwrap()).unwrap();
    assert_eq!(r.file.len(), 100, "the boot file survives trimming");
    assert_eq!(r.root_path.len(), 200);
    assert!(r.dns.is_empty());
    // With iPXE's own limit (1472) nothing is trimmed.
    s.handle_packet(t(0), CLIENT, 67, IPXE_BIOS_DISCOVER);
    let tx = s.poll_transmit(t(0), &mut buf).unwrap();
    let r = Repr::parse(&Packet::new_checked(&buf[..tx.len]).unwrap()).unwrap();
    assert_eq!(r.bootfile.len(), 101);
    assert_eq!(r.dns.len(), 4);
}

extern crate std;
use std::boxed::Box;
use std::string::ToString;
use std::vec::Vec as StdVec;

#[test]
fn garbage_is_dropped_and_the_machine_keeps_working() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let mut junk: StdVec<StdVec<u8>> = StdVec::new();
    junk.push(StdVec::new());
    junk.push(std::vec![0xff; 239]);
    junk.push(std::vec![0x01; 600]);
    let mut reply = IPXE_BIOS_DISCOVER.to_vec();
    reply[0] = 2; // BOOTREPLY
    junk.push(reply);
    let mut token_ring = IPXE_BIOS_DISCOVER.to_vec();
    token_ring[1] = 6;
    junk.push(token_ring);
    let mut cut = IPXE_BIOS_DISCOVER.to_vec();
    cut.truncate(300);
    junk.push(cut);
    let bootp = modified(IPXE_BIOS_DISCOVER, |r| r.message_type = None).to_vec();
    junk.push(bootp);
    for j in &junk {
        assert!(exchange(&mut s, 0, CLIENT, 67, j).is_none());
    }
    let st = *s.stats();
    assert_eq!(st.received, junk.len() as u64);
    assert_eq!(st.malformed, 4);
    assert_eq!(st.not_request, 1);
    assert_eq!(st.not_ethernet, 1);
    assert_eq!(st.no_message_type, 1);
    let (_, o) = exchange(&mut s, 1, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(o.message_type, Some(MessageType::Offer));
    let _ = "".to_string();
}

#[test]
fn full_dora_with_captured_edk2_gets_ipxe_efi() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    let (tx, o) = exchange(&mut s, 0, CLIENT, 67, EDK2_DISCOVER).unwrap();
    assert_eq!(o.message_type, Some(MessageType::Offer));
    assert_eq!(&o.file[..], b"ipxe.efi");
    assert_eq!(&o.bootfile[..], b"ipxe.efi\0");
    assert_eq!(o.siaddr, SERVER);
    assert!(o.broadcast && tx.broadcast);
    assert_eq!(o.ipxe, None, "175 is for iPXE only");
    assert!(o.root_path.is_empty(), "17 is for iPXE only");
    let req = modified(EDK2_REQUEST, |r| r.requested_ip = Some(o.yiaddr));
    let (_, a) = exchange(&mut s, 4000, CLIENT, 67, &req).unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    assert_eq!(a.yiaddr, o.yiaddr);
    assert_eq!(&a.file[..], b"ipxe.efi");
}

#[test]
fn a_host_buffer_too_small_drops_the_reply_and_counts_it() {
    let mut s = Server::<8>::new(full_config()).unwrap();
    s.handle_packet(t(0), CLIENT, 67, IPXE_BIOS_DISCOVER);
    let mut tiny = [0u8; 200];
    assert!(s.poll_transmit(t(0), &mut tiny).is_none());
    assert_eq!(s.stats().too_big, 1);
    // The next exchange is unaffected.
    assert!(exchange(&mut s, 1, CLIENT, 67, IPXE_BIOS_DISCOVER).is_some());
}

/// Which address a reply shows the station uses (who may read its
/// secret-carrying script): a full-mode ACK's lease, a 4011 request's source.
#[test]
fn station_address_comes_from_acks_and_4011_requests() {
    let mut s = Server::<64>::new(full_config()).unwrap();
    let (offer, _) = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(offer.station_address(), None, "an offer leases nothing yet");
    let (ack, _) = exchange(&mut s, 1000, CLIENT, 67, IPXE_BIOS_REQUEST).unwrap();
    assert_eq!(ack.mac, MAC);
    assert_eq!(ack.station_address(), Some(Ipv4Addr::new(192, 0, 2, 129)));

    let mut s = Server::<4>::new(Config::new(Mode::Proxy, SERVER)).unwrap();
    let (offer, _) = exchange(&mut s, 0, CLIENT, 67, EDK2_DISCOVER).unwrap();
    assert_eq!(offer.station_address(), None, "broadcast, no address");
    let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 77), 68);
    let (ack, _) = exchange(&mut s, 20, from, PXE_PORT, EDK2_REQUEST).unwrap();
    assert_eq!(ack.station_address(), Some(*from.ip()));
    assert_eq!(s.poll_station(), Some((ack.mac, *from.ip())));
    assert_eq!(s.poll_station(), None, "reported once");
    // A 4011 request from 0.0.0.0 is answered by broadcast: no address.
    let (ack, _) = exchange(&mut s, 30, CLIENT, PXE_PORT, EDK2_REQUEST).unwrap();
    assert_eq!(ack.station_address(), None);
    assert_eq!(s.poll_station(), None);
}

/// iPXE beside a router does not always ask port 4011 (QEMU's iPXE ROM
/// does not): in proxy mode its REQUEST to the router, which the proxy
/// does not answer, names the address it takes.
#[test]
fn proxy_sees_the_address_an_ipxe_request_takes() {
    let mut s = Server::<4>::new(Config::new(Mode::Proxy, SERVER)).unwrap();
    let (_, _) = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(s.poll_station(), None, "a DISCOVER takes no address");
    assert!(exchange(&mut s, 10, CLIENT, 67, IPXE_BIOS_REQUEST).is_none());
    let req = Repr::parse(&Packet::new_checked(IPXE_BIOS_REQUEST).unwrap()).unwrap();
    assert_eq!(
        s.poll_station(),
        Some((MAC, req.requested_ip.unwrap())),
        "the REQUEST's option 50"
    );
    // Full mode reports its ACK's lease instead.
    let mut s = Server::<64>::new(full_config()).unwrap();
    let _ = exchange(&mut s, 0, CLIENT, 67, IPXE_BIOS_DISCOVER).unwrap();
    assert_eq!(s.poll_station(), None);
    let (ack, _) = exchange(&mut s, 1000, CLIENT, 67, IPXE_BIOS_REQUEST).unwrap();
    assert_eq!(s.poll_station(), Some((MAC, ack.yiaddr)));
}

/// A REQUEST without server id: INIT-REBOOT (`ciaddr` 0, option 50) or,
/// with `renewing`, RENEWING (`ciaddr` set, no option 50).
fn reboot_request(mac: [u8; 6], xid: u32, ip: Ipv4Addr, renewing: bool) -> heapless::Vec<u8, 1500> {
    let mut r = Repr::new(Op::Request, xid, mac);
    r.message_type = Some(MessageType::Request);
    if renewing {
        r.ciaddr = ip;
    } else {
        r.requested_ip = Some(ip);
    }
    let mut out = heapless::Vec::new();
    out.resize(r.buffer_len(), 0).unwrap();
    r.emit(&mut out).unwrap();
    out
}

#[test]
fn renew_only_mode_answers_claims_but_offers_nothing_new() {
    let reserved = Ipv4Addr::new(192, 0, 2, 200);
    let hosts = [Host {
        ip: Some(reserved),
        ..Host::new(mac(9))
    }];
    let mut c = full_config();
    c.hosts = &hosts;
    let mut s = Server::<16>::new(c).unwrap();
    // Lease records lost: renew-only for one lease time (600 s).
    s.set_renew_only(Some(t(600_000)));
    assert_eq!(s.renew_only(t(1)), Some(t(600_000)));

    // A new client gets no offer, counted.
    assert!(exchange(&mut s, 1, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    assert_eq!(s.stats().renew_only_silent, 1);
    // A reservation is still offered: it is configured, not remembered.
    let (_, o) = exchange(&mut s, 2, CLIENT, 67, &plain_discover(mac(9), 2)).unwrap();
    assert_eq!(o.yiaddr, reserved);

    // INIT-REBOOT: the client claims .140, nobody holds it: ACK, learnt back.
    let claimed = Ipv4Addr::new(192, 0, 2, 140);
    let (_, a) = exchange(
        &mut s,
        3,
        CLIENT,
        67,
        &reboot_request(mac(2), 3, claimed, false),
    )
    .unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    assert_eq!(a.yiaddr, claimed);
    assert_eq!(
        s.lease_table().lookup_ip(t(3), claimed).unwrap().mac,
        mac(2)
    );
    // Another client claiming the same address conflicts: NAK.
    let (_, n) = exchange(
        &mut s,
        4,
        CLIENT,
        67,
        &reboot_request(mac(3), 4, claimed, false),
    )
    .unwrap();
    assert_eq!(n.message_type, Some(MessageType::Nak));
    // RENEWING (unicast, ciaddr) of another address: ACK.
    let other = Ipv4Addr::new(192, 0, 2, 141);
    let renewing = SocketAddrV4::new(other, 68);
    let (_, a) = exchange(
        &mut s,
        5,
        renewing,
        67,
        &reboot_request(mac(4), 5, other, true),
    )
    .unwrap();
    assert_eq!(a.message_type, Some(MessageType::Ack));
    // A client that renewed in this period is offered its address again.
    let (_, o) = exchange(&mut s, 6, CLIENT, 67, &plain_discover(mac(2), 6)).unwrap();
    assert_eq!(o.yiaddr, claimed);

    // After one lease time, new clients get offers again.
    assert!(s.renew_only(t(600_000)).is_none());
    let (_, o) = exchange(&mut s, 600_001, CLIENT, 67, &plain_discover(mac(1), 7)).unwrap();
    assert_eq!(o.message_type, Some(MessageType::Offer));
    assert_eq!(s.stats().renew_only_silent, 1);
}

fn probing_config() -> Config<'static> {
    let mut c = full_config();
    c.probe = true;
    c
}

#[test]
fn a_new_address_is_probed_before_it_is_offered() {
    let mut s = Server::<16, 2>::new(probing_config()).unwrap();
    // DISCOVER: no reply yet, one probe for the first pool address.
    assert!(exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    let first = Ipv4Addr::new(192, 0, 2, 129);
    assert_eq!(s.poll_probe(), Some(first));
    assert_eq!(s.poll_probe(), None);
    // The address is held meanwhile: another client is not offered it.
    assert!(exchange(&mut s, 1, CLIENT, 67, &plain_discover(mac(2), 2)).is_none());
    assert_eq!(s.poll_probe(), Some(Ipv4Addr::new(192, 0, 2, 130)));
    // A retransmitted DISCOVER while probing starts nothing new.
    assert!(exchange(&mut s, 2, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    assert_eq!(s.poll_probe(), None);

    // Nobody answered: the offer goes out, with the DISCOVER's xid.
    s.handle_probe(t(300), first, ProbeResult::Free);
    let mut buf = [0u8; 1500];
    let tx = s.poll_transmit(t(300), &mut buf).unwrap();
    let offer = Repr::parse(&Packet::new_checked(&buf[..tx.len]).unwrap()).unwrap();
    assert_eq!(offer.message_type, Some(MessageType::Offer));
    assert_eq!((offer.yiaddr, offer.xid, offer.chaddr), (first, 1, mac(1)));
    // REQUEST, ACK; a later DISCOVER of a bound client is not probed again.
    let (_, ack) = exchange(&mut s, 400, CLIENT, 67, &request_for(mac(1), 3, first)).unwrap();
    assert_eq!(ack.message_type, Some(MessageType::Ack));
    let (_, o) = exchange(&mut s, 500, CLIENT, 67, &plain_discover(mac(1), 4)).unwrap();
    assert_eq!(o.yiaddr, first);
    assert_eq!(s.stats().probes, 2);
}

#[test]
fn an_address_in_use_is_declined_and_another_probed() {
    let mut s = Server::<16, 2>::new(probing_config()).unwrap();
    assert!(exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    let taken = s.poll_probe().unwrap();
    s.handle_probe(t(300), taken, ProbeResult::InUse);
    let mut buf = [0u8; 1500];
    assert!(
        s.poll_transmit(t(300), &mut buf).is_none(),
        "no offer of a used address"
    );
    let next = s.poll_probe().unwrap();
    assert_ne!(next, taken);
    s.handle_probe(t(600), next, ProbeResult::Free);
    let tx = s.poll_transmit(t(600), &mut buf).unwrap();
    assert_eq!(tx.yiaddr, next);
    assert_eq!(s.stats().probe_in_use, 1);
    // The used address stays out of the pool for decline_hold (600 s), even
    // when a client asks for it by name.
    let ask = modified(&plain_discover(mac(2), 2), |r| r.requested_ip = Some(taken));
    assert!(exchange(&mut s, 700, CLIENT, 67, &ask).is_none());
    assert_ne!(s.poll_probe(), Some(taken));
    assert_eq!(
        s.lease_table().lookup_ip(t(700), taken).unwrap().state,
        LeaseState::Declined
    );
}

#[test]
fn probes_are_bounded_and_give_up() {
    let mut s = Server::<16, 1>::new(probing_config()).unwrap();
    assert!(exchange(&mut s, 0, CLIENT, 67, &plain_discover(mac(1), 1)).is_none());
    let ip = s.poll_probe().unwrap();
    // The only slot is taken: a second new client gets nothing, and its
    // address is not held for it.
    assert!(exchange(&mut s, 1, CLIENT, 67, &plain_discover(mac(2), 2)).is_none());
    assert_eq!(s.poll_probe(), None);
    assert_eq!(s.stats().probe_refused, 1);
    assert!(s.lease_table().lookup_mac(t(1), &mac(2)).is_none());
    // Three addresses in use in a row: this DISCOVER is given up.
    let mut probed = ip;
    for _ in 1..PROBE_ATTEMPTS {
        s.handle_probe(t(2), probed, ProbeResult::InUse);
        probed = s.poll_probe().unwrap();
    }
    s.handle_probe(t(3), probed, ProbeResult::InUse);
    assert_eq!(s.poll_probe(), None);
    assert_eq!(s.probes_pending(), 0);
    assert_eq!(s.stats().probe_in_use, u64::from(PROBE_ATTEMPTS));
    assert_eq!(s.stats().probe_refused, 2);
    // A host that never answers: the probe is dropped after offer_hold.
    assert!(exchange(&mut s, 10, CLIENT, 67, &plain_discover(mac(3), 3)).is_none());
    let ip = s.poll_probe().unwrap();
    assert!(s.poll_timeout().unwrap() <= t(10_010));
    s.handle_timeout(t(10_011));
    assert_eq!(s.probes_pending(), 0);
    assert!(s.lease_table().lookup_ip(t(10_011), ip).is_none());
    // A late answer for it is ignored.
    s.handle_probe(t(10_012), ip, ProbeResult::Free);
    let mut buf = [0u8; 1500];
    assert!(s.poll_transmit(t(10_012), &mut buf).is_none());
}

/// `handle_packet` says what the client asked, so a host can show the
/// DISCOVER and REQUEST of a boot (not only the replies); garbage is `None`.
#[test]
fn handle_packet_reports_the_client_message() {
    let mut s = Server::<64>::new(full_config()).unwrap();
    let got = s
        .handle_packet(t(0), CLIENT, 67, IPXE_BIOS_DISCOVER)
        .unwrap();
    let discover = Repr::parse(&Packet::new_checked(IPXE_BIOS_DISCOVER).unwrap()).unwrap();
    assert_eq!(got.mac, discover.chaddr);
    assert_eq!(got.message, MessageType::Discover);
    assert_eq!(got.client, ClientKind::Ipxe);
    assert!(!got.pxe_port);
    assert_eq!(got.address, None, "a DISCOVER has no address yet");
    let _ = s.poll_transmit(t(0), &mut [0u8; 1500]);
    let got = s
        .handle_packet(t(1), CLIENT, 67, IPXE_BIOS_REQUEST)
        .unwrap();
    assert_eq!(got.message, MessageType::Request);
    let request = Repr::parse(&Packet::new_checked(IPXE_BIOS_REQUEST).unwrap()).unwrap();
    assert!(request.requested_ip.is_some());
    assert_eq!(got.address, request.requested_ip);
    let plain = plain_discover(mac(7), 9);
    let got = s.handle_packet(t(2), CLIENT, 67, &plain).unwrap();
    assert_eq!((got.mac, got.client), (mac(7), ClientKind::Plain));
    assert_eq!(s.handle_packet(t(3), CLIENT, 67, &[1, 2, 3]), None);
}
