//! DHCP wire format (RFC 2131 §2, RFC 2132 options, RFC 3396 long options,
//! RFC 3004 user class, RFC 4578 PXE options).
//!
//! [`Packet`] is an unvalidated view over a BOOTP message; after
//! [`Packet::new_checked`] no accessor can panic. [`Repr`] is the parsed
//! meaning, limited to the fields and options sanboot reads or writes;
//! [`Repr::emit`] writes it into a caller buffer.
//!
//! Options that appear more than once are concatenated in order (RFC 3396),
//! across the `options` field and, when option 52 says so, the `file` and
//! `sname` fields. Byte-string options are kept up to a fixed capacity; longer
//! values are cut at that capacity rather than refused, because the server
//! only compares prefixes of them (vendor class) or echoes them (UUID).

use core::net::Ipv4Addr;

use heapless::Vec;

/// Field offsets of the fixed BOOTP header (RFC 2131 figure 1).
pub mod field {
    #![allow(missing_docs)]
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Range<usize> = 4..8;
    pub const SECS: Range<usize> = 8..10;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const SIADDR: Range<usize> = 20..24;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..44;
    pub const SNAME: Range<usize> = 44..108;
    pub const FILE: Range<usize> = 108..236;
    pub const MAGIC: Range<usize> = 236..240;
    pub const OPTIONS: usize = 240;
}

/// The magic cookie that starts the options (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// BOOTP's minimum message size; shorter replies confuse old PXE ROMs.
pub const MIN_MESSAGE_LEN: usize = 300;
/// The `flags` bit asking for broadcast replies (RFC 2131 §2).
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes sanboot knows (RFC 2132, 3004, 4578, iPXE).
#[allow(missing_docs)]
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const ROOT_PATH: u8 = 17;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_NDI: u8 = 94;
    pub const UUID: u8 = 97;
    pub const IPXE_ENCAP: u8 = 175;
    pub const END: u8 = 255;
    /// iPXE encapsulated option 175.176: skip waiting for ProxyDHCP offers.
    pub const IPXE_NO_PXEDHCP: u8 = 176;
}

/// Why a message could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Shorter than the fixed header, or an option runs past the end.
    Truncated,
    /// The options do not start with the magic cookie.
    BadMagic,
    /// `htype`/`hlen` are not Ethernet (1/6).
    NotEthernet,
    /// An option has a length its code does not allow.
    Malformed,
    /// The output buffer is too small; `required` bytes are needed.
    InsufficientSize {
        /// Bytes the message needs.
        required: usize,
    },
}

enum_with_unknown! {
    /// BOOTP `op`.
    pub enum Op(u8) {
        /// Client to server.
        Request = 1,
        /// Server to client.
        Reply = 2,
    }
}

enum_with_unknown! {
    /// Option 53, DHCP message type (RFC 2132 §9.6).
    pub enum MessageType(u8) {
        /// DHCPDISCOVER
        Discover = 1,
        /// DHCPOFFER
        Offer = 2,
        /// DHCPREQUEST
        Request = 3,
        /// DHCPDECLINE
        Decline = 4,
        /// DHCPACK
        Ack = 5,
        /// DHCPNAK
        Nak = 6,
        /// DHCPRELEASE
        Release = 7,
        /// DHCPINFORM
        Inform = 8,
    }
}

/// A zero-copy view over a BOOTP/DHCP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn ip_at(b: &[u8], r: core::ops::Range<usize>) -> Ipv4Addr {
    match b.get(r) {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn u16_at(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    match b.get(r) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length; accessors then return
    /// zeros for bytes that are missing.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds at least the fixed header and magic cookie.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed header and the magic cookie position are present.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < field::OPTIONS {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// `op`: 1 request, 2 reply.
    pub fn op(&self) -> Op {
        Op::from(self.b().get(field::OP).copied().unwrap_or(0))
    }
    /// `htype`: hardware address type (1 = Ethernet).
    pub fn htype(&self) -> u8 {
        self.b().get(field::HTYPE).copied().unwrap_or(0)
    }
    /// `hlen`: hardware address length.
    pub fn hlen(&self) -> u8 {
        self.b().get(field::HLEN).copied().unwrap_or(0)
    }
    /// `hops`: relay hop count.
    pub fn hops(&self) -> u8 {
        self.b().get(field::HOPS).copied().unwrap_or(0)
    }
    /// `xid`: transaction id.
    pub fn xid(&self) -> u32 {
        match self.b().get(field::XID) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }
    /// `secs`: seconds since the client began.
    pub fn secs(&self) -> u16 {
        u16_at(self.b(), field::SECS)
    }
    /// `flags` (bit 15 = broadcast).
    pub fn flags(&self) -> u16 {
        u16_at(self.b(), field::FLAGS)
    }
    /// `ciaddr`: the client's current address.
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), field::CIADDR)
    }
    /// `yiaddr`: "your" address, given by the server.
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), field::YIADDR)
    }
    /// `siaddr`: next server (TFTP) address.
    pub fn siaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), field::SIADDR)
    }
    /// `giaddr`: relay agent address.
    pub fn giaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), field::GIADDR)
    }
    /// `chaddr`: 16 bytes of client hardware address.
    pub fn chaddr(&self) -> &[u8] {
        self.b().get(field::CHADDR).unwrap_or(&[])
    }
    /// `sname`: 64 bytes of server host name (or options, if overloaded).
    pub fn sname(&self) -> &[u8] {
        self.b().get(field::SNAME).unwrap_or(&[])
    }
    /// `file`: 128 bytes of boot file name (or options, if overloaded).
    pub fn file(&self) -> &[u8] {
        self.b().get(field::FILE).unwrap_or(&[])
    }
    /// The four bytes where the magic cookie belongs.
    pub fn magic(&self) -> &[u8] {
        self.b().get(field::MAGIC).unwrap_or(&[])
    }
    /// The options field, everything after the magic cookie.
    pub fn options(&self) -> &[u8] {
        self.b().get(field::OPTIONS..).unwrap_or(&[])
    }

    /// All options in wire order across the regions option 52 names, with
    /// split options *not* yet joined (see [`Repr::parse`] for that).
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter::new(self.options(), self.file(), self.sname())
    }
}

/// One option instance as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpOption<'a> {
    /// Option code.
    pub code: u8,
    /// Option payload.
    pub data: &'a [u8],
}

/// Iterates options: the `options` field, then `file` and `sname` when
/// option 52 overloads them (RFC 2131 §4.1, RFC 3396 order). Yields
/// `Err(Truncated)` once if an option runs past its region, then stops.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    regions: [&'a [u8]; 3],
    region: usize,
    pos: usize,
    failed: bool,
}

/// Finds option 52 in the options field alone (it may not appear elsewhere).
fn find_overload(options: &[u8]) -> u8 {
    let mut it = OptionIter {
        regions: [options, &[], &[]],
        region: 0,
        pos: 0,
        failed: false,
    };
    let mut overload = 0;
    for o in it.by_ref().flatten() {
        if o.code == opt::OVERLOAD {
            if let Some(&v) = o.data.first() {
                overload = v;
            }
        }
    }
    overload
}

impl<'a> OptionIter<'a> {
    fn new(options: &'a [u8], file: &'a [u8], sname: &'a [u8]) -> Self {
        let overload = find_overload(options);
        let file = if overload & 1 != 0 { file } else { &[] };
        let sname = if overload & 2 != 0 { sname } else { &[] };
        OptionIter {
            regions: [options, file, sname],
            region: 0,
            pos: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<DhcpOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let region = *self.regions.get(self.region)?;
            let rest = region.get(self.pos..).unwrap_or(&[]);
            match rest {
                [] | [opt::END, ..] => {
                    self.region = self.region.saturating_add(1);
                    self.pos = 0;
                }
                [opt::PAD, ..] => self.pos = self.pos.saturating_add(1),
                [code, len, tail @ ..] => {
                    let len = usize::from(*len);
                    let Some(data) = tail.get(..len) else {
                        self.failed = true;
                        return Some(Err(Error::Truncated));
                    };
                    self.pos = self.pos.saturating_add(2).saturating_add(len);
                    return Some(Ok(DhcpOption { code: *code, data }));
                }
                [_] => {
                    self.failed = true;
                    return Some(Err(Error::Truncated));
                }
            }
        }
    }
}

/// Option 55 as a set of codes. Order is not kept: replies list options in
/// sanboot's fixed order, which RFC 2131 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamList([u32; 8]);

impl ParamList {
    /// An empty list.
    pub const fn new() -> Self {
        ParamList([0; 8])
    }
    /// Adds `code`.
    pub fn insert(&mut self, code: u8) {
        if let Some(w) = self.0.get_mut(usize::from(code >> 5)) {
            *w |= 1 << (code & 31);
        }
    }
    /// Whether the client asked for `code`.
    pub fn contains(&self, code: u8) -> bool {
        self.0
            .get(usize::from(code >> 5))
            .is_some_and(|w| w & (1 << (code & 31)) != 0)
    }
    /// Whether no code was asked for.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// Number of codes asked for.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// The codes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..=255).filter(|c| self.contains(*c))
    }
}

/// Option 175 (iPXE encapsulated options) as far as sanboot cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpxeEncap {
    /// 175.176 `no-pxedhcp` = 1: iPXE skips its 2 s wait for ProxyDHCP offers.
    pub no_pxedhcp: bool,
}

/// Capacity of the vendor class (60), client id (61), user class (77) and
/// host name (12) strings.
pub const SHORT_STR: usize = 64;
/// Capacity of the root path (17), boot file (67) and `file` strings.
pub const LONG_STR: usize = 255;

/// The parsed meaning of a DHCP message, limited to what sanboot uses.
///
/// Byte strings are empty when the option is absent. `file` and `sname`
/// are the BOOTP fields without their NUL padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// `op`
    pub op: Op,
    /// `hops`
    pub hops: u8,
    /// `xid`
    pub xid: u32,
    /// `secs`
    pub secs: u16,
    /// `flags` bit 15: the client wants broadcast replies.
    pub broadcast: bool,
    /// `ciaddr`
    pub ciaddr: Ipv4Addr,
    /// `yiaddr`
    pub yiaddr: Ipv4Addr,
    /// `siaddr` (next server: where iPXE and PXE ROMs fetch the boot file)
    pub siaddr: Ipv4Addr,
    /// `giaddr`
    pub giaddr: Ipv4Addr,
    /// `chaddr`: the Ethernet MAC (only Ethernet is accepted).
    pub chaddr: [u8; 6],
    /// `sname`
    pub sname: Vec<u8, 64>,
    /// `file`
    pub file: Vec<u8, 128>,
    /// 53
    pub message_type: Option<MessageType>,
    /// 1
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3 (first router only)
    pub router: Option<Ipv4Addr>,
    /// 6 (up to 4)
    pub dns: Vec<Ipv4Addr, 4>,
    /// 12
    pub hostname: Vec<u8, SHORT_STR>,
    /// 17
    pub root_path: Vec<u8, LONG_STR>,
    /// 43, vendor-specific (PXE encapsulated options), raw
    pub vendor_specific: Vec<u8, SHORT_STR>,
    /// 50
    pub requested_ip: Option<Ipv4Addr>,
    /// 51, seconds
    pub lease_time: Option<u32>,
    /// 54
    pub server_id: Option<Ipv4Addr>,
    /// 55
    pub params: ParamList,
    /// 56 (NAK reason)
    pub message: Vec<u8, SHORT_STR>,
    /// 57
    pub max_size: Option<u16>,
    /// 58, seconds
    pub renewal_time: Option<u32>,
    /// 59, seconds
    pub rebinding_time: Option<u32>,
    /// 60
    pub vendor_class: Vec<u8, SHORT_STR>,
    /// 61
    pub client_id: Vec<u8, SHORT_STR>,
    /// 67
    pub bootfile: Vec<u8, LONG_STR>,
    /// 77, as sent (raw `iPXE` or RFC 3004 length-prefixed)
    pub user_class: Vec<u8, SHORT_STR>,
    /// 93 (first architecture listed)
    pub client_arch: Option<u16>,
    /// 94: type, major, minor
    pub client_ndi: Option<[u8; 3]>,
    /// 97: type 0 + 16-byte UUID, kept as sent (≤ 32 bytes)
    pub uuid: Vec<u8, 32>,
    /// 175 (present or not, and 175.176)
    pub ipxe: Option<IpxeEncap>,
}

fn push_trunc<const N: usize>(v: &mut Vec<u8, N>, data: &[u8]) {
    for b in data {
        if v.push(*b).is_err() {
            break;
        }
    }
}

fn trim_nul<const N: usize>(field: &[u8]) -> Vec<u8, N> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let mut v = Vec::new();
    push_trunc(&mut v, field.get(..end).unwrap_or(&[]));
    v
}

fn ip_of(data: &[u8]) -> Result<Ipv4Addr, Error> {
    match data {
        [a, b, c, d] => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => Err(Error::Malformed),
    }
}

fn u32_of(data: &[u8]) -> Result<u32, Error> {
    match data {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(Error::Malformed),
    }
}

/// Fixed-size options, joined before they are decoded (RFC 3396 applies to
/// every option, so a 4-byte address may in theory arrive in two pieces).
#[derive(Default)]
struct Staged {
    msg_type: Vec<u8, 4>,
    mask: Vec<u8, 4>,
    router: Vec<u8, 4>,
    dns: Vec<u8, 16>,
    requested: Vec<u8, 4>,
    lease: Vec<u8, 4>,
    server_id: Vec<u8, 4>,
    max_size: Vec<u8, 2>,
    renewal: Vec<u8, 4>,
    rebinding: Vec<u8, 4>,
    arch: Vec<u8, 2>,
    ndi: Vec<u8, 3>,
    ipxe: Vec<u8, 64>,
}

fn stage<const N: usize>(v: &mut Vec<u8, N>, data: &[u8], overflow: &mut bool) {
    if v.extend_from_slice(data).is_err() {
        *overflow = true;
    }
}

fn opt_wire_len(len: usize) -> usize {
    // Values longer than 255 bytes are split into several options (RFC 3396).
    let pieces = len.div_ceil(255).max(1);
    pieces.saturating_mul(2).saturating_add(len)
}

/// Writes options sequentially into a buffer; `emit` sizes the buffer first,
/// so a failed write only marks the writer as overflowed.
struct OptWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
    overflow: bool,
}

impl OptWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos = end;
            }
            None => self.overflow = true,
        }
    }
    fn option(&mut self, code: u8, data: &[u8]) {
        if data.is_empty() {
            self.put(&[code, 0]);
            return;
        }
        for chunk in data.chunks(255) {
            // chunks(255) keeps every piece's length within a u8.
            self.put(&[code, chunk.len() as u8]);
            self.put(chunk);
        }
    }
}

impl Repr {
    /// A message with every field zero and no options.
    pub fn new(op: Op, xid: u32, chaddr: [u8; 6]) -> Repr {
        Repr {
            op,
            hops: 0,
            xid,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            message_type: None,
            subnet_mask: None,
            router: None,
            dns: Vec::new(),
            hostname: Vec::new(),
            root_path: Vec::new(),
            vendor_specific: Vec::new(),
            requested_ip: None,
            lease_time: None,
            server_id: None,
            params: ParamList::new(),
            message: Vec::new(),
            max_size: None,
            renewal_time: None,
            rebinding_time: None,
            vendor_class: Vec::new(),
            client_id: Vec::new(),
            bootfile: Vec::new(),
            user_class: Vec::new(),
            client_arch: None,
            client_ndi: None,
            uuid: Vec::new(),
            ipxe: None,
        }
    }

    /// Parses a message. Only Ethernet (`htype` 1, `hlen` 6) is accepted.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.magic() != MAGIC_COOKIE {
            return Err(Error::BadMagic);
        }
        if packet.htype() != 1 || packet.hlen() != 6 {
            return Err(Error::NotEthernet);
        }
        let mut chaddr = [0u8; 6];
        if let Some(mac) = packet.chaddr().get(..6) {
            chaddr.copy_from_slice(mac);
        }
        let mut r = Repr::new(packet.op(), packet.xid(), chaddr);
        r.hops = packet.hops();
        r.secs = packet.secs();
        r.broadcast = packet.flags() & FLAG_BROADCAST != 0;
        r.ciaddr = packet.ciaddr();
        r.yiaddr = packet.yiaddr();
        r.siaddr = packet.siaddr();
        r.giaddr = packet.giaddr();

        let overload = find_overload(packet.options());
        if overload & 2 == 0 {
            r.sname = trim_nul(packet.sname());
        }
        if overload & 1 == 0 {
            r.file = trim_nul(packet.file());
        }

        let mut s = Staged::default();
        let mut ov = false;
        for o in packet.option_iter() {
            let o = o?;
            let d = o.data;
            match o.code {
                opt::MESSAGE_TYPE => stage(&mut s.msg_type, d, &mut ov),
                opt::SUBNET_MASK => stage(&mut s.mask, d, &mut ov),
                opt::ROUTER => {
                    // Only the first router matters; later ones are dropped.
                    push_trunc(&mut s.router, d)
                }
                opt::DNS => push_trunc(&mut s.dns, d),
                opt::HOSTNAME => push_trunc(&mut r.hostname, d),
                opt::ROOT_PATH => push_trunc(&mut r.root_path, d),
                opt::VENDOR_SPECIFIC => push_trunc(&mut r.vendor_specific, d),
                opt::REQUESTED_IP => stage(&mut s.requested, d, &mut ov),
                opt::LEASE_TIME => stage(&mut s.lease, d, &mut ov),
                opt::SERVER_ID => stage(&mut s.server_id, d, &mut ov),
                opt::PARAM_REQUEST_LIST => d.iter().for_each(|c| r.params.insert(*c)),
                opt::MESSAGE => push_trunc(&mut r.message, d),
                opt::MAX_MESSAGE_SIZE => stage(&mut s.max_size, d, &mut ov),
                opt::RENEWAL_TIME => stage(&mut s.renewal, d, &mut ov),
                opt::REBINDING_TIME => stage(&mut s.rebinding, d, &mut ov),
                opt::VENDOR_CLASS => push_trunc(&mut r.vendor_class, d),
                opt::CLIENT_ID => push_trunc(&mut r.client_id, d),
                opt::BOOTFILE => push_trunc(&mut r.bootfile, d),
                opt::USER_CLASS => push_trunc(&mut r.user_class, d),
                opt::CLIENT_ARCH => push_trunc(&mut s.arch, d),
                opt::CLIENT_NDI => stage(&mut s.ndi, d, &mut ov),
                opt::UUID => push_trunc(&mut r.uuid, d),
                opt::IPXE_ENCAP => {
                    r.ipxe = Some(IpxeEncap::default());
                    push_trunc(&mut s.ipxe, d)
                }
                _ => {}
            }
        }
        if ov {
            return Err(Error::Malformed);
        }
        let ip = |v: &[u8]| -> Result<Option<Ipv4Addr>, Error> {
            if v.is_empty() {
                Ok(None)
            } else {
                ip_of(v).map(Some)
            }
        };
        let secs = |v: &[u8]| -> Result<Option<u32>, Error> {
            if v.is_empty() {
                Ok(None)
            } else {
                u32_of(v).map(Some)
            }
        };
        r.message_type = match s.msg_type.as_slice() {
            [] => None,
            [t] => Some(MessageType::from(*t)),
            _ => return Err(Error::Malformed),
        };
        r.subnet_mask = ip(&s.mask)?;
        r.router = match s.router.as_slice() {
            [] => None,
            [a, b, c, d, ..] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => return Err(Error::Malformed),
        };
        for c in s.dns.chunks_exact(4) {
            let _ = r.dns.push(ip_of(c)?);
        }
        r.requested_ip = ip(&s.requested)?;
        r.lease_time = secs(&s.lease)?;
        r.server_id = ip(&s.server_id)?;
        r.max_size = match s.max_size.as_slice() {
            [] => None,
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => return Err(Error::Malformed),
        };
        r.renewal_time = secs(&s.renewal)?;
        r.rebinding_time = secs(&s.rebinding)?;
        r.client_arch = match s.arch.as_slice() {
            [] => None,
            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
            _ => return Err(Error::Malformed),
        };
        r.client_ndi = match s.ndi.as_slice() {
            [] => None,
            [a, b, c] => Some([*a, *b, *c]),
            _ => return Err(Error::Malformed),
        };
        if let Some(enc) = r.ipxe.as_mut() {
            let mut rest = s.ipxe.as_slice();
            // Encapsulated options: plain TLVs without PAD/END semantics.
            while let [code, len, tail @ ..] = rest {
                let Some((data, next)) = tail.split_at_checked(usize::from(*len)) else {
                    break;
                };
                if *code == opt::IPXE_NO_PXEDHCP && data.first() == Some(&1) {
                    enc.no_pxedhcp = true;
                }
                rest = next;
            }
        }
        Ok(r)
    }

    /// Whether option 77 says the client is iPXE: either the raw 4 bytes
    /// `iPXE` iPXE actually sends, or an RFC 3004 list containing `iPXE`.
    pub fn user_class_is_ipxe(&self) -> bool {
        let uc = self.user_class.as_slice();
        if uc == b"iPXE" {
            return true;
        }
        let mut rest = uc;
        while let [len, tail @ ..] = rest {
            let Some((class, next)) = tail.split_at_checked(usize::from(*len)) else {
                return false;
            };
            if class == b"iPXE" {
                return true;
            }
            rest = next;
        }
        false
    }

    fn options_len(&self) -> usize {
        let mut n = 0usize;
        let mut add = |present: bool, len: usize| {
            if present {
                n = n.saturating_add(opt_wire_len(len));
            }
        };
        add(self.message_type.is_some(), 1);
        add(self.server_id.is_some(), 4);
        add(self.lease_time.is_some(), 4);
        add(self.renewal_time.is_some(), 4);
        add(self.rebinding_time.is_some(), 4);
        add(self.subnet_mask.is_some(), 4);
        add(self.router.is_some(), 4);
        add(!self.dns.is_empty(), self.dns.len().saturating_mul(4));
        add(!self.hostname.is_empty(), self.hostname.len());
        add(!self.root_path.is_empty(), self.root_path.len());
        add(!self.vendor_specific.is_empty(), self.vendor_specific.len());
        add(self.requested_ip.is_some(), 4);
        add(!self.params.is_empty(), self.params.len());
        add(!self.message.is_empty(), self.message.len());
        add(self.max_size.is_some(), 2);
        add(!self.vendor_class.is_empty(), self.vendor_class.len());
        add(!self.client_id.is_empty(), self.client_id.len());
        add(!self.bootfile.is_empty(), self.bootfile.len());
        add(!self.user_class.is_empty(), self.user_class.len());
        add(self.client_arch.is_some(), 2);
        add(self.client_ndi.is_some(), 3);
        add(!self.uuid.is_empty(), self.uuid.len());
        add(self.ipxe.is_some(), self.ipxe_len());
        n.saturating_add(1) // END
    }

    fn ipxe_len(&self) -> usize {
        match self.ipxe {
            Some(IpxeEncap { no_pxedhcp: true }) => 3,
            _ => 0,
        }
    }

    /// Length of the emitted message: header, cookie, options, END, padded
    /// to BOOTP's 300-byte minimum.
    pub fn buffer_len(&self) -> usize {
        field::OPTIONS
            .saturating_add(self.options_len())
            .max(MIN_MESSAGE_LEN)
    }

    /// Writes the message into `buf` and returns its length
    /// ([`buffer_len`](Self::buffer_len)). Every byte up to that length is written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        let Some(out) = buf.get_mut(..len) else {
            return Err(Error::InsufficientSize { required: len });
        };
        out.fill(0);
        let (hdr, options) = out.split_at_mut(field::OPTIONS);
        let mut h = OptWriter {
            buf: hdr,
            pos: 0,
            overflow: false,
        };
        h.put(&[u8::from(self.op), 1, 6, self.hops]);
        h.put(&self.xid.to_be_bytes());
        h.put(&self.secs.to_be_bytes());
        let flags = if self.broadcast { FLAG_BROADCAST } else { 0 };
        h.put(&flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            h.put(&a.octets());
        }
        h.put(&self.chaddr);
        let hdr_overflow = h.overflow;
        if let Some(d) = hdr.get_mut(field::SNAME.start..field::SNAME.start + self.sname.len()) {
            d.copy_from_slice(&self.sname);
        }
        if let Some(d) = hdr.get_mut(field::FILE.start..field::FILE.start + self.file.len()) {
            d.copy_from_slice(&self.file);
        }
        if let Some(d) = hdr.get_mut(field::MAGIC) {
            d.copy_from_slice(&MAGIC_COOKIE);
        }

        let mut w = OptWriter {
            buf: options,
            pos: 0,
            overflow: false,
        };
        if let Some(t) = self.message_type {
            w.option(opt::MESSAGE_TYPE, &[u8::from(t)]);
        }
        if let Some(a) = self.server_id {
            w.option(opt::SERVER_ID, &a.octets());
        }
        if let Some(t) = self.lease_time {
            w.option(opt::LEASE_TIME, &t.to_be_bytes());
        }
        if let Some(t) = self.renewal_time {
            w.option(opt::RENEWAL_TIME, &t.to_be_bytes());
        }
        if let Some(t) = self.rebinding_time {
            w.option(opt::REBINDING_TIME, &t.to_be_bytes());
        }
        if let Some(a) = self.subnet_mask {
            w.option(opt::SUBNET_MASK, &a.octets());
        }
        if let Some(a) = self.router {
            w.option(opt::ROUTER, &a.octets());
        }
        if !self.dns.is_empty() {
            let mut d = [0u8; 16];
            for (dst, a) in d.chunks_exact_mut(4).zip(self.dns.iter()) {
                dst.copy_from_slice(&a.octets());
            }
            w.option(opt::DNS, d.get(..self.dns.len() * 4).unwrap_or(&[]));
        }
        let s = |w: &mut OptWriter, code, v: &[u8]| {
            if !v.is_empty() {
                w.option(code, v)
            }
        };
        s(&mut w, opt::HOSTNAME, &self.hostname);
        s(&mut w, opt::ROOT_PATH, &self.root_path);
        s(&mut w, opt::VENDOR_SPECIFIC, &self.vendor_specific);
        if let Some(a) = self.requested_ip {
            w.option(opt::REQUESTED_IP, &a.octets());
        }
        if !self.params.is_empty() {
            let mut codes = [0u8; 256];
            let mut n = 0usize;
            for (dst, c) in codes.iter_mut().zip(self.params.iter()) {
                *dst = c;
                n += 1;
            }
            w.option(opt::PARAM_REQUEST_LIST, codes.get(..n).unwrap_or(&[]));
        }
        s(&mut w, opt::MESSAGE, &self.message);
        if let Some(m) = self.max_size {
            w.option(opt::MAX_MESSAGE_SIZE, &m.to_be_bytes());
        }
        s(&mut w, opt::VENDOR_CLASS, &self.vendor_class);
        s(&mut w, opt::CLIENT_ID, &self.client_id);
        s(&mut w, opt::BOOTFILE, &self.bootfile);
        s(&mut w, opt::USER_CLASS, &self.user_class);
        if let Some(a) = self.client_arch {
            w.option(opt::CLIENT_ARCH, &a.to_be_bytes());
        }
        if let Some(n) = self.client_ndi {
            w.option(opt::CLIENT_NDI, &n);
        }
        s(&mut w, opt::UUID, &self.uuid);
        match self.ipxe {
            Some(IpxeEncap { no_pxedhcp: true }) => {
                w.option(opt::IPXE_ENCAP, &[opt::IPXE_NO_PXEDHCP, 1, 1])
            }
            Some(_) => w.option(opt::IPXE_ENCAP, &[]),
            None => {}
        }
        w.put(&[opt::END]);
        if hdr_overflow || w.overflow {
            // buffer_len() and the writes disagree: a bug, reported as a size error.
            return Err(Error::InsufficientSize { required: len });
        }
        Ok(len)
    }
}

#[cfg(test)]
pub(crate) mod tests;
