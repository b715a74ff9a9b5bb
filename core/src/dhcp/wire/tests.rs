//! Wire tests on DHCP messages cut from the peer captures (see `../testdata/SOURCES.txt`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

pub(crate) const IPXE_BIOS_DISCOVER: &[u8] = include_bytes!("../testdata/ipxe_bios_discover.bin");
pub(crate) const IPXE_BIOS_REQUEST: &[u8] = include_bytes!("../testdata/ipxe_bios_request.bin");
pub(crate) const DNSMASQ_OFFER_IPXE: &[u8] =
    include_bytes!("../testdata/dnsmasq_offer_ipxe_bios.bin");
pub(crate) const DNSMASQ_ACK_IPXE: &[u8] = include_bytes!("../testdata/dnsmasq_ack_ipxe_bios.bin");
pub(crate) const UNDIONLY_DISCOVER: &[u8] = include_bytes!("../testdata/undionly_discover.bin");
pub(crate) const UNDIONLY_REQUEST: &[u8] = include_bytes!("../testdata/undionly_request.bin");
pub(crate) const EDK2_DISCOVER: &[u8] = include_bytes!("../testdata/edk2_discover.bin");
pub(crate) const EDK2_REQUEST: &[u8] = include_bytes!("../testdata/edk2_request.bin");
pub(crate) const DNSMASQ_OFFER_EDK2: &[u8] = include_bytes!("../testdata/dnsmasq_offer_edk2.bin");
pub(crate) const IPXE_EFI_DISCOVER: &[u8] = include_bytes!("../testdata/ipxe_efi_discover.bin");
pub(crate) const IPXE_EFI_REQUEST: &[u8] = include_bytes!("../testdata/ipxe_efi_request.bin");

const ALL: &[&[u8]] = &[
    IPXE_BIOS_DISCOVER,
    IPXE_BIOS_REQUEST,
    DNSMASQ_OFFER_IPXE,
    DNSMASQ_ACK_IPXE,
    UNDIONLY_DISCOVER,
    UNDIONLY_REQUEST,
    EDK2_DISCOVER,
    EDK2_REQUEST,
    DNSMASQ_OFFER_EDK2,
    IPXE_EFI_DISCOVER,
    IPXE_EFI_REQUEST,
];

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];

fn parse(bytes: &[u8]) -> Repr {
    Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap()
}

#[test]
fn ipxe_bios_discover_fields() {
    let r = parse(IPXE_BIOS_DISCOVER);
    assert_eq!(r.op, Op::Request);
    assert_eq!(r.message_type, Some(MessageType::Discover));
    assert_eq!(r.chaddr, MAC);
    assert!(!r.broadcast);
    assert_eq!(r.max_size, Some(1472));
    assert_eq!(r.client_arch, Some(0));
    assert_eq!(r.client_ndi, Some([1, 2, 1]));
    assert_eq!(&r.vendor_class[..], b"PXEClient:Arch:00000:UNDI:002001");
    assert_eq!(&r.user_class[..], b"iPXE");
    assert!(r.user_class_is_ipxe());
    assert_eq!(r.ipxe, Some(IpxeEncap { no_pxedhcp: false }));
    assert_eq!(&r.client_id[..], &[1, 0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01]);
    assert_eq!(r.uuid.len(), 17);
    assert_eq!(r.uuid[0], 0);
    for c in [1, 3, 6, 17, 43, 60, 66, 67, 175, 203] {
        assert!(r.params.contains(c), "PRL lacks {c}");
    }
    assert_eq!(r.params.len(), 23);
    assert!(r.server_id.is_none() && r.requested_ip.is_none());
}

#[test]
fn ipxe_request_names_server_and_address() {
    let r = parse(IPXE_BIOS_REQUEST);
    assert_eq!(r.message_type, Some(MessageType::Request));
    assert_eq!(r.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(r.requested_ip, Some(Ipv4Addr::new(192, 0, 2, 129)));
}

#[test]
fn edk2_discover_is_plain_pxe_with_broadcast() {
    let r = parse(EDK2_DISCOVER);
    assert!(r.broadcast);
    assert_eq!(r.client_arch, Some(7));
    assert_eq!(r.client_ndi, Some([1, 3, 0]));
    assert!(r.user_class.is_empty());
    assert!(!r.user_class_is_ipxe());
    assert_eq!(r.ipxe, None);
    assert!(r.client_id.is_empty());
    assert_eq!(r.params.len(), 35);
    assert!(r.vendor_class.starts_with(b"PXEClient:Arch:00007"));
    assert!(parse(UNDIONLY_DISCOVER).broadcast);
}

#[test]
fn dnsmasq_offer_to_ipxe() {
    let r = parse(DNSMASQ_OFFER_IPXE);
    assert_eq!(r.op, Op::Reply);
    assert_eq!(r.message_type, Some(MessageType::Offer));
    assert_eq!(r.yiaddr, Ipv4Addr::new(192, 0, 2, 129));
    assert_eq!(r.siaddr, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(&r.bootfile[..], b"boot.ipxe\0");
    assert!(r.file.is_empty());
    assert_eq!(&r.root_path[..], b"/scripts");
    assert_eq!(r.ipxe, Some(IpxeEncap { no_pxedhcp: true }));
    assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(r.router, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(r.lease_time, Some(600));
    assert_eq!(r.renewal_time, Some(300));
}

#[test]
fn round_trip_every_fixture() {
    for (i, bytes) in ALL.iter().enumerate() {
        let r = parse(bytes);
        let mut buf = [0xa5u8; 1500];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, r.buffer_len());
        assert!(
            buf[n..].iter().all(|b| *b == 0xa5),
            "fixture {i}: wrote past len"
        );
        let mut zeroed = [0u8; 1500];
        r.emit(&mut zeroed).unwrap();
        assert_eq!(
            buf[..n],
            zeroed[..n],
            "fixture {i}: a byte was left unwritten"
        );
        let again = parse(&buf[..n]);
        // 175's sub-options other than 176 are not kept, so compare after that.
        assert_eq!(again, r, "fixture {i}");
    }
}

#[test]
fn emit_refuses_a_short_buffer() {
    let r = parse(IPXE_BIOS_DISCOVER);
    let need = r.buffer_len();
    let mut buf = [0u8; 1500];
    assert_eq!(
        r.emit(&mut buf[..need - 1]),
        Err(Error::InsufficientSize { required: need })
    );
}

#[test]
fn replies_are_padded_to_bootp_minimum() {
    let r = Repr::new(Op::Reply, 7, MAC);
    assert_eq!(r.buffer_len(), MIN_MESSAGE_LEN);
}

fn header(op: u8) -> [u8; 240] {
    let mut h = [0u8; 240];
    h[0] = op;
    h[1] = 1;
    h[2] = 6;
    h[28..34].copy_from_slice(&MAC);
    h[236..240].copy_from_slice(&MAGIC_COOKIE);
    h
}

#[test]
fn split_options_are_concatenated_rfc3396() {
    let mut p = header(1).to_vec();
    p.extend_from_slice(&[53, 1, 1]);
    p.extend_from_slice(&[60, 9]);
    p.extend_from_slice(b"PXEClient");
    p.extend_from_slice(&[55, 2, 1, 3]);
    p.extend_from_slice(&[60, 5]);
    p.extend_from_slice(b":Arch");
    // A server id split in two halves.
    p.extend_from_slice(&[54, 2, 192, 0, 54, 2, 2, 1]);
    p.extend_from_slice(&[55, 1, 67, 255]);
    let r = parse(&p);
    assert_eq!(&r.vendor_class[..], b"PXEClient:Arch");
    assert_eq!(r.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert!(r.params.contains(1) && r.params.contains(3) && r.params.contains(67));
}

#[test]
fn overloaded_file_and_sname_carry_options() {
    let mut p = header(1);
    // file: the second half of the vendor class, then END.
    p[108..116].copy_from_slice(&[60, 5, b':', b'A', b'r', b'c', b'h', 255]);
    // sname: the user class.
    p[44..51].copy_from_slice(&[77, 4, b'i', b'P', b'X', b'E', 255]);
    let mut p = p.to_vec();
    p.extend_from_slice(&[53, 1, 1, 52, 1, 3, 60, 9]);
    p.extend_from_slice(b"PXEClient");
    p.push(255);
    let r = parse(&p);
    assert_eq!(&r.vendor_class[..], b"PXEClient:Arch");
    assert!(r.user_class_is_ipxe());
    assert!(r.file.is_empty() && r.sname.is_empty());
}

#[test]
fn rfc3004_user_class_form_is_ipxe() {
    let mut r = Repr::new(Op::Request, 1, MAC);
    r.user_class.extend_from_slice(b"\x03abc\x04iPXE").unwrap();
    assert!(r.user_class_is_ipxe());
    r.user_class.clear();
    r.user_class.extend_from_slice(b"\x04iPXE").unwrap();
    assert!(r.user_class_is_ipxe());
    r.user_class.clear();
    r.user_class.extend_from_slice(b"\x05iPXE").unwrap();
    assert!(!r.user_class_is_ipxe());
}

#[test]
fn long_param_list_is_split_on_emit() {
    let mut r = Repr::new(Op::Request, 1, MAC);
    r.message_type = Some(MessageType::Discover);
    for c in 0..=255u8 {
        r.params.insert(c);
    }
    let mut buf = [0u8; 1500];
    let n = r.emit(&mut buf).unwrap();
    assert_eq!(parse(&buf[..n]), r);
}

#[test]
fn garbage_is_refused_not_panicked() {
    assert_eq!(
        Packet::new_checked(&[0u8; 10][..]).err(),
        Some(Error::Truncated)
    );
    let mut p = header(1);
    p[236] = 0;
    assert_eq!(
        Repr::parse(&Packet::new_checked(&p[..]).unwrap()),
        Err(Error::BadMagic)
    );
    let mut p = header(1);
    p[1] = 6;
    assert_eq!(
        Repr::parse(&Packet::new_checked(&p[..]).unwrap()),
        Err(Error::NotEthernet)
    );
    let mut p = header(1).to_vec();
    p.extend_from_slice(&[53, 4, 1]);
    assert_eq!(
        Repr::parse(&Packet::new_checked(&p[..]).unwrap()),
        Err(Error::Truncated)
    );
    let mut p = header(1).to_vec();
    p.extend_from_slice(&[53, 2, 1, 1, 255]);
    assert_eq!(
        Repr::parse(&Packet::new_checked(&p[..]).unwrap()),
        Err(Error::Malformed)
    );
    let mut p = header(1).to_vec();
    p.extend_from_slice(&[54, 3, 1, 2, 3, 255]);
    assert_eq!(
        Repr::parse(&Packet::new_checked(&p[..]).unwrap()),
        Err(Error::Malformed)
    );
    // Every prefix of a real message parses or fails cleanly.
    for n in 0..IPXE_BIOS_DISCOVER.len() {
        if let Ok(p) = Packet::new_checked(&IPXE_BIOS_DISCOVER[..n]) {
            let _ = Repr::parse(&p);
        }
    }
}
