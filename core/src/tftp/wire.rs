//! TFTP packets (RFC 1350) with option extension (RFC 2347 OACK, RFC 2348
//! blksize, RFC 2349 timeout/tsize, RFC 7440 windowsize).
//!
//! [`Packet`] is an unvalidated view over a datagram; after
//! [`Packet::new_checked`] no accessor can panic. [`Repr`] is the parsed
//! meaning; [`Repr::emit`] writes exactly [`Repr::buffer_len`] bytes.
//!
//! Parsing is lenient where real firmware is sloppy: option names are
//! case-insensitive, unknown or unparseable options are skipped, bytes of
//! NUL/0xFF padding after the last option are ignored, and a final option value
//! or ERROR message without its terminating NUL is taken up to the end.

use core::fmt;

use crate::decimal::fmt_u64;

/// Largest block size RFC 2348 allows (65535 minus IP and UDP headers).
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 1350 block size, used when no blksize option was agreed.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Length of the DATA/ACK/ERROR header (opcode + block number or error code).
pub const HEADER_LEN: usize = 4;

mod field {
    use core::ops::{Range, RangeFrom};
    pub const OPCODE: Range<usize> = 0..2;
    /// Block number of DATA/ACK, ErrorCode of ERROR.
    pub const BLOCK: Range<usize> = 2..4;
    /// Filename/mode/options of RRQ/WRQ, options of OACK.
    pub const STRINGS: RangeFrom<usize> = 2..;
    /// Data of DATA, ErrMsg of ERROR.
    pub const PAYLOAD: RangeFrom<usize> = 4..;
}

/// A wire-level problem. Parsing errors describe the datagram; `InsufficientSize`
/// is a caller's buffer that cannot hold what must be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Shorter than the fixed header its opcode needs.
    Truncated,
    /// A request without NUL-terminated Filename.
    Malformed,
    /// Opcode outside 1..=6.
    UnknownOpcode(u16),
    /// The output buffer is smaller than `required` bytes.
    InsufficientSize {
        /// Bytes the emit needs.
        required: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated TFTP packet"),
            Error::Malformed => f.write_str("malformed TFTP request"),
            Error::UnknownOpcode(n) => write!(f, "unknown TFTP opcode {n}"),
            Error::InsufficientSize { required } => {
                write!(f, "buffer too small, {required} bytes needed")
            }
        }
    }
}

impl core::error::Error for Error {}

enum_with_unknown! {
    /// TFTP opcode (RFC 1350 §5, RFC 2347 for OACK).
    pub enum Opcode(u16) {
        /// 1: read request.
        Rrq = 1,
        /// 2: write request.
        Wrq = 2,
        /// 3: data.
        Data = 3,
        /// 4: acknowledgment.
        Ack = 4,
        /// 5: error.
        Error = 5,
        /// 6: option acknowledgment.
        Oack = 6,
    }
}

enum_with_unknown! {
    /// ErrorCode of an ERROR packet (RFC 1350 appendix, RFC 2347 for 8).
    pub enum ErrorCode(u16) {
        /// 0: not defined, see error message.
        NotDefined = 0,
        /// 1: file not found.
        FileNotFound = 1,
        /// 2: access violation.
        AccessViolation = 2,
        /// 3: disk full or allocation exceeded.
        DiskFull = 3,
        /// 4: illegal TFTP operation.
        IllegalOperation = 4,
        /// 5: unknown transfer ID.
        UnknownTid = 5,
        /// 6: file already exists.
        FileExists = 6,
        /// 7: no such user.
        NoSuchUser = 7,
        /// 8: option negotiation refused (RFC 2347); also EDK2's "User aborted".
        OptionNegotiation = 8,
    }
}

/// Transfer mode named in a request (RFC 1350 §5), compared case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// `netascii`.
    Netascii,
    /// `octet`.
    Octet,
    /// `mail` (obsolete).
    Mail,
    /// Anything else.
    Unknown,
}

impl Mode {
    /// Classifies a Mode string.
    pub fn from_bytes(b: &[u8]) -> Mode {
        if b.eq_ignore_ascii_case(b"octet") {
            Mode::Octet
        } else if b.eq_ignore_ascii_case(b"netascii") {
            Mode::Netascii
        } else if b.eq_ignore_ascii_case(b"mail") {
            Mode::Mail
        } else {
            Mode::Unknown
        }
    }
}

/// The options of a request or OACK that this server understands, as numbers.
///
/// Values are kept as sent (saturating at `u64::MAX`); whether they are in
/// range is the state machine's decision. A non-numeric `tsize` (atftp sends
/// `tsize enable`) counts as a request for the size, i.e. `Some(0)`; other
/// non-numeric values and unknown names are skipped. When an option appears
/// twice, the first one counts. Emitted in the order blksize, tsize, timeout,
/// windowsize (the order iPXE and dnsmasq use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Options {
    /// RFC 2348 `blksize`.
    pub blksize: Option<u64>,
    /// RFC 2349 `tsize` (0 in a request: "tell me the size").
    pub tsize: Option<u64>,
    /// RFC 2349 `timeout`, seconds.
    pub timeout: Option<u64>,
    /// RFC 7440 `windowsize`, blocks per ACK.
    pub windowsize: Option<u64>,
}

impl Options {
    /// True when no option is set.
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }

    fn entries(&self) -> [(&'static [u8], Option<u64>); 4] {
        [
            (b"blksize", self.blksize),
            (b"tsize", self.tsize),
            (b"timeout", self.timeout),
            (b"windowsize", self.windowsize),
        ]
    }

    /// Parses an option list (`name NUL value NUL ...`), tolerating trailing padding.
    pub fn parse(mut rest: &[u8]) -> Options {
        let mut opts = Options::default();
        loop {
            if rest.iter().all(|&b| b == 0 || b == 0xff) {
                return opts;
            }
            let (name, after) = split_cstr(rest);
            let (value, after) = split_cstr(after);
            rest = after;
            let slot = if name.eq_ignore_ascii_case(b"blksize") {
                &mut opts.blksize
            } else if name.eq_ignore_ascii_case(b"tsize") {
                &mut opts.tsize
            } else if name.eq_ignore_ascii_case(b"timeout") {
                &mut opts.timeout
            } else if name.eq_ignore_ascii_case(b"windowsize") {
                &mut opts.windowsize
            } else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            let is_tsize = name.eq_ignore_ascii_case(b"tsize");
            *slot = match parse_decimal(value) {
                Some(v) => Some(v),
                None if is_tsize => Some(0),
                None => None,
            };
        }
    }

    /// Bytes [`Options::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        self.entries()
            .iter()
            .filter_map(|(name, v)| v.map(|v| name.len() + 1 + decimal_len(v) + 1))
            .sum()
    }

    /// Writes the option list; returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf, self.buffer_len())?;
        w.options(self);
        Ok(w.pos)
    }
}

/// An RRQ or WRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// Filename exactly as sent (not yet checked; see [`super::path`]).
    pub filename: &'a [u8],
    /// Mode string as sent; see [`Request::mode_kind`].
    pub mode: &'a [u8],
    /// Options the client asked for.
    pub options: Options,
}

impl Request<'_> {
    /// The mode, classified.
    pub fn mode_kind(&self) -> Mode {
        Mode::from_bytes(self.mode)
    }
}

/// A parsed TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Repr<'a> {
    /// RRQ: read request.
    Rrq(Request<'a>),
    /// WRQ: write request.
    Wrq(Request<'a>),
    /// DATA: `Block #` and its data (short data = last block).
    Data {
        /// Block # (wraps after 65535).
        block: u16,
        /// Data, 0..=blksize bytes.
        data: &'a [u8],
    },
    /// ACK of `Block #`.
    Ack {
        /// Block # acknowledged (0 acknowledges an OACK).
        block: u16,
    },
    /// ERROR.
    Error {
        /// ErrorCode.
        code: ErrorCode,
        /// ErrMsg without its NUL.
        message: &'a [u8],
    },
    /// OACK: the options the server accepted.
    Oack {
        /// Accepted options and their values.
        options: Options,
    },
}

/// An unvalidated view of a TFTP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors return zeros for missing bytes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks it holds the fixed header its opcode needs.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the length against the opcode: 2 bytes for requests and OACK,
    /// 4 for DATA, ACK and ERROR.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < field::OPCODE.end {
            return Err(Error::Truncated);
        }
        match self.opcode() {
            Opcode::Data | Opcode::Ack | Opcode::Error if len < HEADER_LEN => Err(Error::Truncated),
            _ => Ok(()),
        }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        match self.buffer.as_ref().get(r) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    /// Opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode::from(self.u16_at(field::OPCODE))
    }

    /// Block # of DATA or ACK.
    pub fn block(&self) -> u16 {
        self.u16_at(field::BLOCK)
    }

    /// ErrorCode of ERROR.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from(self.u16_at(field::BLOCK))
    }

    /// Data of DATA, ErrMsg (with its NUL, if any) of ERROR.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD).unwrap_or(&[])
    }

    /// Filename, mode and options of RRQ/WRQ; options of OACK.
    pub fn strings(&self) -> &[u8] {
        self.buffer.as_ref().get(field::STRINGS).unwrap_or(&[])
    }
}

impl<'a> Repr<'a> {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, Error> {
        let bytes: &'a T = packet.buffer;
        Repr::parse_bytes(bytes.as_ref())
    }

    /// Checks and parses a datagram in one step.
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Repr<'a>, Error> {
        let packet = Packet::new_checked(bytes)?;
        let (strings, payload) = (
            bytes.get(field::STRINGS).unwrap_or(&[]),
            bytes.get(field::PAYLOAD).unwrap_or(&[]),
        );
        match packet.opcode() {
            op @ (Opcode::Rrq | Opcode::Wrq) => {
                let (filename, rest) = split_cstr_strict(strings).ok_or(Error::Malformed)?;
                let (mode, rest) = split_cstr(rest);
                let req = Request {
                    filename,
                    mode,
                    options: Options::parse(rest),
                };
                Ok(if op == Opcode::Rrq {
                    Repr::Rrq(req)
                } else {
                    Repr::Wrq(req)
                })
            }
            Opcode::Data => Ok(Repr::Data {
                block: packet.block(),
                data: payload,
            }),
            Opcode::Ack => Ok(Repr::Ack {
                block: packet.block(),
            }),
            Opcode::Error => Ok(Repr::Error {
                code: packet.error_code(),
                message: split_cstr(payload).0,
            }),
            Opcode::Oack => Ok(Repr::Oack {
                options: Options::parse(strings),
            }),
            Opcode::Unknown(n) => Err(Error::UnknownOpcode(n)),
        }
    }

    /// Length of the datagram [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        2 + match self {
            Repr::Rrq(r) | Repr::Wrq(r) => {
                r.filename.len() + 1 + r.mode.len() + 1 + r.options.buffer_len()
            }
            Repr::Data { data, .. } => 2 + data.len(),
            Repr::Ack { .. } => 2,
            Repr::Error { message, .. } => 2 + message.len() + 1,
            Repr::Oack { options } => options.buffer_len(),
        }
    }

    /// Writes the datagram into the front of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf, self.buffer_len())?;
        let opcode = match self {
            Repr::Rrq(_) => Opcode::Rrq,
            Repr::Wrq(_) => Opcode::Wrq,
            Repr::Data { .. } => Opcode::Data,
            Repr::Ack { .. } => Opcode::Ack,
            Repr::Error { .. } => Opcode::Error,
            Repr::Oack { .. } => Opcode::Oack,
        };
        w.put(&u16::from(opcode).to_be_bytes());
        match self {
            Repr::Rrq(r) | Repr::Wrq(r) => {
                w.cstr(r.filename);
                w.cstr(r.mode);
                w.options(&r.options);
            }
            Repr::Data { block, data } => {
                w.put(&block.to_be_bytes());
                w.put(data);
            }
            Repr::Ack { block } => w.put(&block.to_be_bytes()),
            Repr::Error { code, message } => {
                w.put(&u16::from(*code).to_be_bytes());
                w.cstr(message);
            }
            Repr::Oack { options } => w.options(options),
        }
        Ok(w.pos)
    }
}

/// Writes the 4-byte DATA header for `block`; the data goes right after it,
/// so a host can read file bytes straight into `buf[HEADER_LEN..]`.
pub fn emit_data_header(block: u16, buf: &mut [u8]) -> Result<(), Error> {
    let header = buf.get_mut(..HEADER_LEN).ok_or(Error::InsufficientSize {
        required: HEADER_LEN,
    })?;
    let op = u16::from(Opcode::Data).to_be_bytes();
    let bl = block.to_be_bytes();
    header.copy_from_slice(&[op[0], op[1], bl[0], bl[1]]);
    Ok(())
}

/// Splits at the first NUL; without one, everything is the string.
fn split_cstr(b: &[u8]) -> (&[u8], &[u8]) {
    split_cstr_strict(b).unwrap_or((b, &[]))
}

fn split_cstr_strict(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    let (s, rest) = b.split_at_checked(nul)?;
    Some((s, rest.get(1..).unwrap_or(&[])))
}

/// Decimal digits only; saturates at `u64::MAX`. Empty or other bytes → None.
fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(acc.saturating_mul(10).saturating_add(u64::from(d)))
    })
}

fn decimal_len(v: u64) -> usize {
    fmt_u64(v, &mut [0; 20]).len()
}

/// Sequential writer over a buffer whose size was checked up front; every
/// write is still bounds-checked so a wrong `buffer_len` cannot panic.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8], required: usize) -> Result<Self, Error> {
        if buf.len() < required {
            return Err(Error::InsufficientSize { required });
        }
        Ok(Writer { buf, pos: 0 })
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
            self.pos = end;
        }
    }

    fn cstr(&mut self, s: &[u8]) {
        self.put(s);
        self.put(&[0]);
    }

    fn decimal(&mut self, v: u64) {
        self.put(fmt_u64(v, &mut [0; 20]).as_bytes());
    }

    fn options(&mut self, o: &Options) {
        for (name, v) in o.entries() {
            if let Some(v) = v {
                self.cstr(name);
                self.decimal(v);
                self.put(&[0]);
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    const IPXE_RRQ: &[u8] = include_bytes!("testdata/ipxe_rrq_boot.bin");
    const IPXE_OACK: &[u8] = include_bytes!("testdata/ipxe_oack_boot.bin");
    const IPXE_ACK0: &[u8] = include_bytes!("testdata/ipxe_ack0.bin");
    const IPXE_ACK1: &[u8] = include_bytes!("testdata/ipxe_ack1.bin");
    const IPXE_DATA1: &[u8] = include_bytes!("testdata/ipxe_data1_boot.bin");
    const IPXE_RRQ_MAC: &[u8] = include_bytes!("testdata/ipxe_rrq_mac_script.bin");
    const IPXE_RRQ_UNDI: &[u8] = include_bytes!("testdata/ipxe_rrq_undionly.bin");
    const DNSMASQ_DATA1: &[u8] = include_bytes!("testdata/dnsmasq_data1_1432.bin");
    const EDK2_RRQ_TSIZE: &[u8] = include_bytes!("testdata/edk2_rrq_tsize.bin");
    const EDK2_OACK_TSIZE: &[u8] = include_bytes!("testdata/edk2_oack_tsize.bin");
    const EDK2_ERROR8: &[u8] = include_bytes!("testdata/edk2_error8.bin");
    const EDK2_RRQ: &[u8] = include_bytes!("testdata/edk2_rrq.bin");
    const EDK2_OACK: &[u8] = include_bytes!("testdata/edk2_oack.bin");
    const EDK2_DATA1: &[u8] = include_bytes!("testdata/edk2_data1_1468.bin");

    fn emit_prefilled(repr: &Repr) -> ([u8; 2048], usize) {
        let mut buf = [0xa5u8; 2048];
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(n, repr.buffer_len());
        assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past buffer_len");
        (buf, n)
    }

    fn assert_roundtrip_exact(bytes: &[u8]) {
        let repr = Repr::parse_bytes(bytes).unwrap();
        let (buf, n) = emit_prefilled(&repr);
        assert_eq!(&buf[..n], bytes, "{repr:?}");
    }

    #[test]
    fn ipxe_rrq_from_capture() {
        let Repr::Rrq(req) = Repr::parse_bytes(IPXE_RRQ).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, b"boot.ipxe");
        assert_eq!(req.mode_kind(), Mode::Octet);
        assert_eq!(
            req.options,
            Options {
                blksize: Some(1432),
                tsize: Some(0),
                ..Options::default()
            }
        );
        let Repr::Rrq(req) = Repr::parse_bytes(IPXE_RRQ_MAC).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, b"scripts/52-54-00-e2-e0-01.ipxe");
        let Repr::Rrq(req) = Repr::parse_bytes(IPXE_RRQ_UNDI).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, b"undionly.kpxe");
    }

    #[test]
    fn edk2_rrqs_from_capture() {
        let Repr::Rrq(req) = Repr::parse_bytes(EDK2_RRQ_TSIZE).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, b"ipxe.efi");
        assert_eq!(
            req.options,
            Options {
                blksize: Some(1468),
                tsize: Some(0),
                timeout: None,
                windowsize: Some(4),
            }
        );
        let Repr::Rrq(req) = Repr::parse_bytes(EDK2_RRQ).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.options.tsize, None);
        assert_eq!(req.options.windowsize, Some(4));
    }

    #[test]
    fn oack_ack_data_error_from_capture() {
        assert_eq!(
            Repr::parse_bytes(IPXE_OACK).unwrap(),
            Repr::Oack {
                options: Options {
                    blksize: Some(1432),
                    tsize: Some(122),
                    ..Options::default()
                }
            }
        );
        assert_eq!(
            Repr::parse_bytes(EDK2_OACK_TSIZE).unwrap(),
            Repr::Oack {
                options: Options {
                    blksize: Some(1468),
                    tsize: Some(850528),
                    ..Options::default()
                }
            }
        );
        assert_eq!(
            Repr::parse_bytes(IPXE_ACK0).unwrap(),
            Repr::Ack { block: 0 }
        );
        assert_eq!(
            Repr::parse_bytes(IPXE_ACK1).unwrap(),
            Repr::Ack { block: 1 }
        );
        let Repr::Data { block, data } = Repr::parse_bytes(IPXE_DATA1).unwrap() else {
            panic!("not DATA")
        };
        assert_eq!(block, 1);
        assert!(data.starts_with(b"#!ipxe\n"));
        assert_eq!(data.len(), 122, "the OACK's tsize");
        let Repr::Data { data, .. } = Repr::parse_bytes(DNSMASQ_DATA1).unwrap() else {
            panic!("not DATA")
        };
        assert_eq!(data.len(), 1432);
        let Repr::Data { data, .. } = Repr::parse_bytes(EDK2_DATA1).unwrap() else {
            panic!("not DATA")
        };
        assert_eq!(data.len(), 1468);
        assert!(data.starts_with(b"MZ"));
        assert_eq!(
            Repr::parse_bytes(EDK2_ERROR8).unwrap(),
            Repr::Error {
                code: ErrorCode::OptionNegotiation,
                message: b"User aborted the transfer",
            }
        );
    }

    #[test]
    fn captures_roundtrip_byte_exact() {
        // EDK2's RRQs put tsize first; we emit blksize first, so those only
        // round-trip by meaning (below).
        for bytes in [
            IPXE_RRQ,
            IPXE_RRQ_MAC,
            IPXE_RRQ_UNDI,
            IPXE_OACK,
            IPXE_ACK0,
            IPXE_ACK1,
            IPXE_DATA1,
            DNSMASQ_DATA1,
            EDK2_OACK_TSIZE,
            EDK2_OACK,
            EDK2_ERROR8,
            EDK2_DATA1,
        ] {
            assert_roundtrip_exact(bytes);
        }
        for bytes in [EDK2_RRQ_TSIZE, EDK2_RRQ] {
            let repr = Repr::parse_bytes(bytes).unwrap();
            let (buf, n) = emit_prefilled(&repr);
            assert_eq!(n, bytes.len());
            assert_eq!(Repr::parse_bytes(&buf[..n]).unwrap(), repr);
        }
    }

    #[test]
    fn padding_after_last_option_is_ignored() {
        for pad in [&[0u8][..], &[0, 0, 0], &[0xff; 7], &[0, 0xff, 0, 0xff]] {
            let mut v = IPXE_RRQ.to_vec();
            v.extend_from_slice(pad);
            assert_eq!(
                Repr::parse_bytes(&v).unwrap(),
                Repr::parse_bytes(IPXE_RRQ).unwrap()
            );
        }
        // Padding straight after the mode, no options at all.
        let r = Repr::parse_bytes(b"\x00\x01pxelinux.0\x00octet\x00\xff\xff\x00").unwrap();
        let Repr::Rrq(req) = r else { panic!() };
        assert!(req.options.is_empty());
    }

    #[test]
    fn options_are_case_insensitive_and_unknown_ones_skipped() {
        let r = Repr::parse_bytes(
            b"\x00\x01f\x00OCTET\x00BlkSize\x001428\x00utimeout\x00500\x00TSIZE\x000\x00WindowSize\x008\x00timeout\x007\x00",
        )
        .unwrap();
        let Repr::Rrq(req) = r else { panic!() };
        assert_eq!(req.mode_kind(), Mode::Octet);
        assert_eq!(
            req.options,
            Options {
                blksize: Some(1428),
                tsize: Some(0),
                timeout: Some(7),
                windowsize: Some(8),
            }
        );
    }

    #[test]
    fn odd_option_values() {
        let opts = |b: &[u8]| {
            let mut v = b"\x00\x01f\x00octet\x00".to_vec();
            v.extend_from_slice(b);
            let Repr::Rrq(r) = Repr::parse_bytes(&v).unwrap() else {
                panic!()
            };
            r.options
        };
        // atftp's literal "tsize enable".
        assert_eq!(opts(b"tsize\x00enable\x00").tsize, Some(0));
        assert_eq!(opts(b"blksize\x00abc\x00").blksize, None);
        assert_eq!(opts(b"blksize\x00\x00").blksize, None);
        assert_eq!(
            opts(b"blksize\x0099999999999999999999999\x00").blksize,
            Some(u64::MAX)
        );
        // First occurrence wins.
        assert_eq!(
            opts(b"blksize\x00100\x00blksize\x00200\x00").blksize,
            Some(100)
        );
        // Value without its NUL at the very end; a name with no value.
        assert_eq!(opts(b"blksize\x001024").blksize, Some(1024));
        assert_eq!(opts(b"blksize").blksize, None);
    }

    #[test]
    fn short_and_malformed_packets() {
        assert_eq!(Repr::parse_bytes(b""), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(b"\x00"), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(b"\x00\x04\x00"), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(b"\x00\x03\x00"), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(b"\x00\x05\x00"), Err(Error::Truncated));
        assert_eq!(Repr::parse_bytes(b"\x00\x01"), Err(Error::Malformed));
        assert_eq!(Repr::parse_bytes(b"\x00\x01noterm"), Err(Error::Malformed));
        assert_eq!(
            Repr::parse_bytes(b"\x00\x09xx"),
            Err(Error::UnknownOpcode(9))
        );
        // A request with no mode string still parses; the machine refuses the mode.
        let Repr::Rrq(r) = Repr::parse_bytes(b"\x00\x01f\x00").unwrap() else {
            panic!()
        };
        assert_eq!(r.mode_kind(), Mode::Unknown);
        // ERROR without NUL, empty DATA.
        assert_eq!(
            Repr::parse_bytes(b"\x00\x05\x00\x01gone").unwrap(),
            Repr::Error {
                code: ErrorCode::FileNotFound,
                message: b"gone"
            }
        );
        assert_eq!(
            Repr::parse_bytes(b"\x00\x03\xff\xff").unwrap(),
            Repr::Data {
                block: 65535,
                data: b""
            }
        );
    }

    #[test]
    fn emit_refuses_small_buffers() {
        let repr = Repr::parse_bytes(IPXE_RRQ).unwrap();
        let mut buf = [0u8; 38];
        assert_eq!(
            repr.emit(&mut buf),
            Err(Error::InsufficientSize { required: 39 })
        );
        assert_eq!(
            emit_data_header(1, &mut buf[..3]),
            Err(Error::InsufficientSize { required: 4 })
        );
    }

    #[test]
    fn every_repr_emits_and_parses_back() {
        let reprs = [
            Repr::Wrq(Request {
                filename: b"up.bin",
                mode: b"netascii",
                options: Options {
                    timeout: Some(255),
                    ..Options::default()
                },
            }),
            Repr::Oack {
                options: Options {
                    blksize: Some(65464),
                    tsize: Some(u64::MAX),
                    timeout: Some(1),
                    windowsize: Some(64),
                },
            },
            Repr::Oack {
                options: Options::default(),
            },
            Repr::Error {
                code: ErrorCode::Unknown(77),
                message: b"",
            },
            Repr::Ack { block: 65535 },
        ];
        for repr in reprs {
            let (buf, n) = emit_prefilled(&repr);
            assert_eq!(Repr::parse_bytes(&buf[..n]).unwrap(), repr);
        }
        let mut buf = [0xa5u8; 8];
        emit_data_header(0x1234, &mut buf).unwrap();
        assert_eq!(buf, [0, 3, 0x12, 0x34, 0xa5, 0xa5, 0xa5, 0xa5]);
    }

    #[test]
    fn packet_accessors() {
        let p = Packet::new_checked(IPXE_DATA1).unwrap();
        assert_eq!(p.opcode(), Opcode::Data);
        assert_eq!(p.block(), 1);
        assert_eq!(p.payload().len(), 122);
        let p = Packet::new_checked(EDK2_ERROR8).unwrap();
        assert_eq!(p.error_code(), ErrorCode::OptionNegotiation);
        let p = Packet::new_checked(IPXE_RRQ).unwrap();
        assert!(p.strings().starts_with(b"boot.ipxe\0"));
        assert!(matches!(Repr::parse(&p), Ok(Repr::Rrq(_))));
        // Unchecked views of short buffers read zeros instead of panicking.
        let p = Packet::new_unchecked(&[0u8][..]);
        assert_eq!((p.block(), p.payload(), p.strings()), (0, &[][..], &[][..]));
        for v in 0..=10u16 {
            assert_eq!(u16::from(Opcode::from(v)), v);
            assert_eq!(u16::from(ErrorCode::from(v)), v);
        }
    }
}
