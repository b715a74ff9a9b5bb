//! The Basic Header Segment as a zero-copy view, the whole-PDU layout
//! computed from it (AHS, digests, padding), and the Additional Header
//! Segments.

use core::fmt;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// The Initiator Task Tag value meaning "none" (RFC 7143 §11.18, §11.19).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Errors of the wire layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// A field holds a value the RFC forbids.
    Malformed,
    /// The opcode is not the one this `Repr` parses.
    WrongOpcode,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated PDU"),
            WireError::Malformed => f.write_str("malformed PDU"),
            WireError::WrongOpcode => f.write_str("unexpected opcode"),
        }
    }
}

enum_with_unknown! {
    /// BHS opcode (RFC 7143 §11.1.1), without the I bit.
    pub enum Opcode(u8) {
        /// NOP-Out (initiator).
        NopOut = 0x00,
        /// SCSI Command.
        ScsiCommand = 0x01,
        /// SCSI Task Management Function Request.
        TaskMgmtRequest = 0x02,
        /// Login Request.
        LoginRequest = 0x03,
        /// Text Request.
        TextRequest = 0x04,
        /// SCSI Data-Out.
        DataOut = 0x05,
        /// Logout Request.
        LogoutRequest = 0x06,
        /// SNACK Request.
        SnackRequest = 0x10,
        /// NOP-In (target).
        NopIn = 0x20,
        /// SCSI Response.
        ScsiResponse = 0x21,
        /// SCSI Task Management Function Response.
        TaskMgmtResponse = 0x22,
        /// Login Response.
        LoginResponse = 0x23,
        /// Text Response.
        TextResponse = 0x24,
        /// SCSI Data-In.
        DataIn = 0x25,
        /// Logout Response.
        LogoutResponse = 0x26,
        /// Ready To Transfer.
        R2t = 0x31,
        /// Asynchronous Message.
        AsyncMessage = 0x32,
        /// Reject.
        Reject = 0x3f,
    }
}

pub(super) mod field {
    pub const OPCODE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const TOTAL_AHS_LEN: usize = 4;
    pub const DATA_SEG_LEN: usize = 5;
    pub const LUN: usize = 8;
    pub const ITT: usize = 16;
}

/// An unvalidated view over a Basic Header Segment.
///
/// After [`Bhs::new_checked`] succeeds no accessor can panic.
#[derive(Debug, Clone)]
pub struct Bhs<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Bhs<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Bhs { buffer }
    }

    /// Wrap a buffer, checking it holds at least [`BHS_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = Self::new_unchecked(buffer);
        b.check_len()?;
        Ok(b)
    }

    /// Check the buffer holds a whole BHS.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < BHS_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub(super) fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    pub(super) fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.byte(at), self.byte(at + 1)])
    }

    pub(super) fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.byte(at),
            self.byte(at + 1),
            self.byte(at + 2),
            self.byte(at + 3),
        ])
    }

    pub(super) fn be64(&self, at: usize) -> u64 {
        (u64::from(self.be32(at)) << 32) | u64::from(self.be32(at + 4))
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode::from(self.byte(field::OPCODE) & 0x3f)
    }

    /// The I (immediate delivery) bit.
    pub fn immediate(&self) -> bool {
        self.byte(field::OPCODE) & 0x40 != 0
    }

    /// Byte 1: the F bit and opcode-specific flags.
    pub fn flags(&self) -> u8 {
        self.byte(field::FLAGS)
    }

    /// The F (final) bit.
    pub fn final_bit(&self) -> bool {
        self.flags() & 0x80 != 0
    }

    /// TotalAHSLength, in 4-byte words.
    pub fn total_ahs_len(&self) -> u8 {
        self.byte(field::TOTAL_AHS_LEN)
    }

    /// DataSegmentLength in bytes, without padding.
    pub fn data_segment_len(&self) -> u32 {
        u32::from_be_bytes([
            0,
            self.byte(field::DATA_SEG_LEN),
            self.byte(field::DATA_SEG_LEN + 1),
            self.byte(field::DATA_SEG_LEN + 2),
        ])
    }

    /// Bytes 8..16: LUN, or opcode-specific (ISID/TSIH in login).
    pub fn lun(&self) -> u64 {
        self.be64(field::LUN)
    }

    /// Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.be32(field::ITT)
    }

    /// A big-endian u32 at byte `at` (0 when out of the BHS).
    pub fn word(&self, at: usize) -> u32 {
        self.be32(at)
    }

    /// The 48 bytes of the BHS (shorter if the buffer is).
    pub fn as_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..BHS_LEN).unwrap_or(b)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Bhs<T> {
    pub(super) fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = v;
        }
    }

    pub(super) fn set_bytes(&mut self, at: usize, v: &[u8]) {
        for (i, &b) in v.iter().enumerate() {
            self.set_byte(at + i, b);
        }
    }

    pub(super) fn set_be16(&mut self, at: usize, v: u16) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    pub(super) fn set_be32(&mut self, at: usize, v: u32) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    pub(super) fn set_be64(&mut self, at: usize, v: u64) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    /// Zero the BHS, then set the opcode and I bit.
    pub fn clear(&mut self, opcode: Opcode, immediate: bool) {
        for i in 0..BHS_LEN {
            self.set_byte(i, 0);
        }
        self.set_byte(
            field::OPCODE,
            (u8::from(opcode) & 0x3f) | if immediate { 0x40 } else { 0 },
        );
    }

    /// Set byte 1.
    pub fn set_flags(&mut self, v: u8) {
        self.set_byte(field::FLAGS, v);
    }

    /// Set TotalAHSLength (words).
    pub fn set_total_ahs_len(&mut self, v: u8) {
        self.set_byte(field::TOTAL_AHS_LEN, v);
    }

    /// Set DataSegmentLength (bytes, at most 2^24-1; higher bits are dropped).
    pub fn set_data_segment_len(&mut self, v: u32) {
        let b = v.to_be_bytes();
        self.set_bytes(field::DATA_SEG_LEN, &[b[1], b[2], b[3]]);
    }

    /// Set bytes 8..16.
    pub fn set_lun(&mut self, v: u64) {
        self.set_be64(field::LUN, v);
    }

    /// Set the Initiator Task Tag.
    pub fn set_itt(&mut self, v: u32) {
        self.set_be32(field::ITT, v);
    }

    /// Set a big-endian u32 at byte `at`.
    pub fn set_word(&mut self, at: usize, v: u32) {
        self.set_be32(at, v);
    }
}

/// Round `n` up to a multiple of 4 (saturating).
pub const fn pad4(n: usize) -> usize {
    match n.checked_add(3) {
        Some(v) => v & !3,
        None => usize::MAX & !3,
    }
}

/// Which digests are in use on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

/// Layout of one whole PDU, computed from its BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PduLayout {
    /// Bytes of AHS after the BHS.
    pub ahs_len: usize,
    /// Offset of the data segment.
    pub data_offset: usize,
    /// DataSegmentLength (unpadded).
    pub data_len: usize,
    /// Total PDU length including padding and digests.
    pub total_len: usize,
}

/// Compute the layout of the PDU whose BHS is `bhs`, with the given digests.
pub fn pdu_len<T: AsRef<[u8]>>(bhs: &Bhs<T>, digests: Digests) -> PduLayout {
    let ahs_len = usize::from(bhs.total_ahs_len()) * 4;
    let hd = if digests.header { DIGEST_LEN } else { 0 };
    let data_offset = BHS_LEN + ahs_len + hd;
    let data_len = bhs.data_segment_len() as usize;
    let dd = if digests.data && data_len > 0 {
        DIGEST_LEN
    } else {
        0
    };
    PduLayout {
        ahs_len,
        data_offset,
        data_len,
        total_len: data_offset + pad4(data_len) + dd,
    }
}

/// Checks the length and that the BHS carries `op`.
pub(super) fn check_opcode<T: AsRef<[u8]>>(bhs: &Bhs<T>, op: Opcode) -> Result<(), WireError> {
    bhs.check_len()?;
    if bhs.opcode() == op {
        Ok(())
    } else {
        Err(WireError::WrongOpcode)
    }
}

/// AHSType of an Extended CDB AHS (RFC 7143 §11.2.1.3).
pub const AHS_EXTENDED_CDB: u8 = 1;
/// AHSType of a Bidirectional Read Expected Data Transfer Length AHS.
pub const AHS_BIDI_READ_LENGTH: u8 = 2;

/// Iterate over the Additional Header Segments of a PDU: `(AHSType,
/// AHS-Specific byte followed by the data)`. Stops at the first malformed one.
pub fn ahs_segments(ahs: &[u8]) -> impl Iterator<Item = (u8, &[u8])> + '_ {
    let mut rest = ahs;
    core::iter::from_fn(move || {
        let [l0, l1, ty, ..] = *rest else {
            return None;
        };
        // AHSLength counts the AHS-Specific byte and the data, not the
        // 3 bytes of length and type; each AHS is padded to 4 bytes.
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let body = rest.get(3..3 + len)?;
        rest = rest.get(pad4(3 + len)..).unwrap_or(&[]);
        Some((ty, body))
    })
}

/// The whole CDB of a SCSI Command: the 16 bytes of the BHS plus an
/// Extended CDB AHS, if any. Returns the length written into `out`, or
/// `None` when `out` is too small.
pub fn full_cdb(bhs_cdb: &[u8; 16], ahs: &[u8], out: &mut [u8]) -> Option<usize> {
    out.get_mut(..16)?.copy_from_slice(bhs_cdb);
    let mut n = 16;
    for (ty, body) in ahs_segments(ahs) {
        if ty == AHS_EXTENDED_CDB {
            // Skip the reserved AHS-Specific byte.
            let ext = body.get(1..).unwrap_or(&[]);
            out.get_mut(16..16 + ext.len())?.copy_from_slice(ext);
            n = 16 + ext.len();
        }
    }
    Some(n)
}
