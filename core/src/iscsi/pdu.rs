//! iSCSI PDU wire layer (RFC 7143 §11): the 48-byte Basic Header Segment
//! (BHS) as a zero-copy view, plus a typed `Repr` per opcode.
//!
//! A PDU on the wire is `BHS | AHS (TotalAHSLength words) | HeaderDigest? |
//! DataSegment (DataSegmentLength, padded to 4) | DataDigest?`. [`Bhs`] only
//! covers the first 48 bytes; [`pdu_len`] computes the whole length from it.

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

mod field {
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

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.byte(at), self.byte(at + 1)])
    }

    fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.byte(at),
            self.byte(at + 1),
            self.byte(at + 2),
            self.byte(at + 3),
        ])
    }

    fn be64(&self, at: usize) -> u64 {
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
    fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = v;
        }
    }

    fn set_bytes(&mut self, at: usize, v: &[u8]) {
        for (i, &b) in v.iter().enumerate() {
            self.set_byte(at + i, b);
        }
    }

    fn set_be16(&mut self, at: usize, v: u16) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    fn set_be32(&mut self, at: usize, v: u32) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    fn set_be64(&mut self, at: usize, v: u64) {
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

/// Login stages (CSG/NSG, RFC 7143 §11.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stage {
    /// SecurityNegotiation (0).
    Security,
    /// LoginOperationalNegotiation (1).
    Operational,
    /// FullFeaturePhase (3).
    FullFeature,
    /// The reserved value 2.
    Reserved,
}

impl Stage {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Stage::Security,
            1 => Stage::Operational,
            3 => Stage::FullFeature,
            _ => Stage::Reserved,
        }
    }
    fn bits(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::Reserved => 2,
            Stage::FullFeature => 3,
        }
    }
}

fn check_opcode<T: AsRef<[u8]>>(bhs: &Bhs<T>, op: Opcode) -> Result<(), WireError> {
    bhs.check_len()?;
    if bhs.opcode() == op {
        Ok(())
    } else {
        Err(WireError::WrongOpcode)
    }
}

/// Login Request (RFC 7143 §11.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoginRequest {
    /// T (transit) bit.
    pub transit: bool,
    /// C (continue) bit.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (meaningful only with the T bit).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// ISID (6 bytes).
    pub isid: [u8; 6],
    /// TSIH.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

fn isid_of<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> [u8; 6] {
    let l = bhs.lun().to_be_bytes();
    [l[0], l[1], l[2], l[3], l[4], l[5]]
}

fn isid_tsih(isid: [u8; 6], tsih: u16) -> u64 {
    let t = tsih.to_be_bytes();
    u64::from_be_bytes([
        isid[0], isid[1], isid[2], isid[3], isid[4], isid[5], t[0], t[1],
    ])
}

impl LoginRequest {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::LoginRequest)?;
        let f = bhs.flags();
        Ok(LoginRequest {
            transit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            csg: Stage::from_bits(f >> 2),
            nsg: Stage::from_bits(f),
            version_max: bhs.byte(2),
            version_min: bhs.byte(3),
            isid: isid_of(bhs),
            tsih: bhs.be16(14),
            itt: bhs.itt(),
            cid: bhs.be16(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::LoginRequest, true);
        bhs.set_flags(stage_flags(self.transit, self.cont, self.csg, self.nsg));
        bhs.set_byte(2, self.version_max);
        bhs.set_byte(3, self.version_min);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(isid_tsih(self.isid, self.tsih));
        bhs.set_itt(self.itt);
        bhs.set_be16(20, self.cid);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
    }
}

fn stage_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    (if transit { 0x80 } else { 0 })
        | (if cont { 0x40 } else { 0 })
        | (csg.bits() << 2)
        | nsg.bits()
}

/// Login Response (RFC 7143 §11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoginResponse {
    /// T (transit) bit.
    pub transit: bool,
    /// C (continue) bit.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH.
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class.
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl LoginResponse {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::LoginResponse)?;
        let f = bhs.flags();
        Ok(LoginResponse {
            transit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            csg: Stage::from_bits(f >> 2),
            nsg: Stage::from_bits(f),
            version_max: bhs.byte(2),
            version_active: bhs.byte(3),
            isid: isid_of(bhs),
            tsih: bhs.be16(14),
            itt: bhs.itt(),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            status_class: bhs.byte(36),
            status_detail: bhs.byte(37),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::LoginResponse, false);
        bhs.set_flags(stage_flags(self.transit, self.cont, self.csg, self.nsg));
        bhs.set_byte(2, self.version_max);
        bhs.set_byte(3, self.version_active);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(isid_tsih(self.isid, self.tsih));
        bhs.set_itt(self.itt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_byte(36, self.status_class);
        bhs.set_byte(37, self.status_detail);
    }
}

/// Text Request (RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl TextRequest {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::TextRequest)?;
        let f = bhs.flags();
        Ok(TextRequest {
            immediate: bhs.immediate(),
            final_bit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::TextRequest, self.immediate);
        bhs.set_flags((if self.final_bit { 0x80 } else { 0 }) | (if self.cont { 0x40 } else { 0 }));
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
    }
}

/// Text Response (RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TextResponse {
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl TextResponse {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::TextResponse)?;
        let f = bhs.flags();
        Ok(TextResponse {
            final_bit: f & 0x80 != 0,
            cont: f & 0x40 != 0,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::TextResponse, false);
        bhs.set_flags((if self.final_bit { 0x80 } else { 0 }) | (if self.cont { 0x40 } else { 0 }));
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
    }
}

/// SCSI Command (RFC 7143 §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScsiCommand {
    /// I bit.
    pub immediate: bool,
    /// F bit (no unsolicited Data-Out follows when set).
    pub final_bit: bool,
    /// R bit (data from target).
    pub read: bool,
    /// W bit (data to target).
    pub write: bool,
    /// ATTR (task attribute, 3 bits).
    pub attr: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length.
    pub edtl: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// CDB (bytes 32..48; longer CDBs continue in an AHS).
    pub cdb: [u8; 16],
    /// TotalAHSLength (words).
    pub ahs_words: u8,
    /// DataSegmentLength (immediate data).
    pub data_len: u32,
}

impl ScsiCommand {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::ScsiCommand)?;
        let f = bhs.flags();
        let mut cdb = [0u8; 16];
        for (i, b) in cdb.iter_mut().enumerate() {
            *b = bhs.byte(32 + i);
        }
        Ok(ScsiCommand {
            immediate: bhs.immediate(),
            final_bit: f & 0x80 != 0,
            read: f & 0x40 != 0,
            write: f & 0x20 != 0,
            attr: f & 0x07,
            lun: bhs.lun(),
            itt: bhs.itt(),
            edtl: bhs.word(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
            cdb,
            ahs_words: bhs.total_ahs_len(),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::ScsiCommand, self.immediate);
        bhs.set_flags(
            (if self.final_bit { 0x80 } else { 0 })
                | (if self.read { 0x40 } else { 0 })
                | (if self.write { 0x20 } else { 0 })
                | (self.attr & 7),
        );
        bhs.set_total_ahs_len(self.ahs_words);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.edtl);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
        bhs.set_bytes(32, &self.cdb);
    }
}

/// Residual flags and count shared by SCSI Response and Data-In.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Residual {
    /// Exactly the expected length was transferred.
    #[default]
    None,
    /// O bit: the command wanted to transfer this many more bytes.
    Overflow(u32),
    /// U bit: this many expected bytes were not transferred.
    Underflow(u32),
}

impl Residual {
    fn flags(self) -> u8 {
        match self {
            Residual::None => 0,
            Residual::Overflow(_) => 0x04,
            Residual::Underflow(_) => 0x02,
        }
    }
    fn count(self) -> u32 {
        match self {
            Residual::None => 0,
            Residual::Overflow(n) | Residual::Underflow(n) => n,
        }
    }
    fn from_wire(flags: u8, count: u32) -> Self {
        if flags & 0x04 != 0 {
            Residual::Overflow(count)
        } else if flags & 0x02 != 0 {
            Residual::Underflow(count)
        } else {
            Residual::None
        }
    }
    /// Residual of a transfer where the initiator expected `expected` bytes
    /// and the command has `actual` bytes.
    pub fn of(expected: u32, actual: u32) -> Self {
        if actual > expected {
            Residual::Overflow(actual - expected)
        } else if actual < expected {
            Residual::Underflow(expected - actual)
        } else {
            Residual::None
        }
    }
}

/// SCSI Response (RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScsiResponse {
    /// Response (0 = Command Completed at Target).
    pub response: u8,
    /// SCSI status.
    pub status: u8,
    /// Residual (o/u bidirectional flags are not used).
    pub residual: Residual,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN: number of Data-In PDUs / R2Ts sent for this command.
    pub exp_data_sn: u32,
    /// DataSegmentLength (SenseLength + sense data).
    pub data_len: u32,
}

impl ScsiResponse {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::ScsiResponse)?;
        Ok(ScsiResponse {
            response: bhs.byte(2),
            status: bhs.byte(3),
            residual: Residual::from_wire(bhs.flags(), bhs.word(44)),
            itt: bhs.itt(),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            exp_data_sn: bhs.word(36),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::ScsiResponse, false);
        bhs.set_flags(0x80 | self.residual.flags());
        bhs.set_byte(2, self.response);
        bhs.set_byte(3, self.status);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_itt(self.itt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_word(36, self.exp_data_sn);
        bhs.set_word(44, self.residual.count());
    }
}

/// SCSI Data-Out (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataOut {
    /// F bit: last PDU of the sequence.
    pub final_bit: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl DataOut {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::DataOut)?;
        Ok(DataOut {
            final_bit: bhs.final_bit(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            exp_stat_sn: bhs.word(28),
            data_sn: bhs.word(36),
            buffer_offset: bhs.word(40),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::DataOut, false);
        bhs.set_flags(if self.final_bit { 0x80 } else { 0 });
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(28, self.exp_stat_sn);
        bhs.set_word(36, self.data_sn);
        bhs.set_word(40, self.buffer_offset);
    }
}

/// SCSI Data-In (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataIn {
    /// F bit: last PDU of the sequence.
    pub final_bit: bool,
    /// A bit (acknowledge request; ERL > 0 only).
    pub ack: bool,
    /// S bit with the SCSI status it carries.
    pub status: Option<u8>,
    /// Residual (only meaningful with the S bit).
    pub residual: Residual,
    /// LUN (set with the A bit; otherwise reserved).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (only meaningful with the S bit).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl DataIn {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::DataIn)?;
        let f = bhs.flags();
        let s = f & 0x01 != 0;
        Ok(DataIn {
            final_bit: f & 0x80 != 0,
            ack: f & 0x40 != 0,
            status: if s { Some(bhs.byte(3)) } else { None },
            residual: if s {
                Residual::from_wire(f, bhs.word(44))
            } else {
                Residual::None
            },
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            // StatSN is reserved without the S bit.
            stat_sn: if s { bhs.word(24) } else { 0 },
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            data_sn: bhs.word(36),
            buffer_offset: bhs.word(40),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::DataIn, false);
        let mut f = (if self.final_bit { 0x80 } else { 0 }) | (if self.ack { 0x40 } else { 0 });
        if let Some(st) = self.status {
            f |= 0x01 | self.residual.flags();
            bhs.set_byte(3, st);
            bhs.set_word(24, self.stat_sn);
            bhs.set_word(44, self.residual.count());
        }
        bhs.set_flags(f);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_word(36, self.data_sn);
        bhs.set_word(40, self.buffer_offset);
    }
}

/// Ready To Transfer (RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct R2t {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (not advanced by R2T).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_len: u32,
}

impl R2t {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::R2t)?;
        Ok(R2t {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            r2t_sn: bhs.word(36),
            buffer_offset: bhs.word(40),
            desired_len: bhs.word(44),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::R2t, false);
        bhs.set_flags(0x80);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_word(36, self.r2t_sn);
        bhs.set_word(40, self.buffer_offset);
        bhs.set_word(44, self.desired_len);
    }
}

/// NOP-Out (RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag (0xffffffff: no answer wanted).
    pub itt: u32,
    /// Target Transfer Tag (echo of a NOP-In ping, else 0xffffffff).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSegmentLength (ping data).
    pub data_len: u32,
}

impl NopOut {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::NopOut)?;
        Ok(NopOut {
            immediate: bhs.immediate(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::NopOut, self.immediate);
        bhs.set_flags(0x80);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
    }
}

/// NOP-In (RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NopIn {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSegmentLength.
    pub data_len: u32,
}

impl NopIn {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::NopIn)?;
        Ok(NopIn {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.word(20),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::NopIn, false);
        bhs.set_flags(0x80);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ttt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
    }
}

enum_with_unknown! {
    /// Task management function (RFC 7143 §11.5.1).
    pub enum TmfFunction(u8) {
        /// ABORT TASK.
        AbortTask = 1,
        /// ABORT TASK SET.
        AbortTaskSet = 2,
        /// CLEAR ACA.
        ClearAca = 3,
        /// CLEAR TASK SET.
        ClearTaskSet = 4,
        /// LOGICAL UNIT RESET.
        LogicalUnitReset = 5,
        /// TARGET WARM RESET.
        TargetWarmReset = 6,
        /// TARGET COLD RESET.
        TargetColdReset = 7,
        /// TASK REASSIGN.
        TaskReassign = 8,
    }
}

/// Task Management Function Request (RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskMgmtRequest {
    /// I bit.
    pub immediate: bool,
    /// Function.
    pub function: TmfFunction,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Referenced Task Tag.
    pub ref_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN.
    pub ref_cmd_sn: u32,
    /// ExpDataSN.
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::TaskMgmtRequest)?;
        Ok(TaskMgmtRequest {
            immediate: bhs.immediate(),
            function: TmfFunction::from(bhs.flags() & 0x7f),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ref_task_tag: bhs.word(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
            ref_cmd_sn: bhs.word(32),
            exp_data_sn: bhs.word(36),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::TaskMgmtRequest, self.immediate);
        bhs.set_flags(0x80 | (u8::from(self.function) & 0x7f));
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_word(20, self.ref_task_tag);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
        bhs.set_word(32, self.ref_cmd_sn);
        bhs.set_word(36, self.exp_data_sn);
    }
}

enum_with_unknown! {
    /// Task management response code (RFC 7143 §11.6.1).
    pub enum TmfResponse(u8) {
        /// Function complete.
        Complete = 0,
        /// Task does not exist.
        NoSuchTask = 1,
        /// LUN does not exist.
        NoSuchLun = 2,
        /// Task still allegiant.
        TaskAllegiant = 3,
        /// Task allegiance reassignment not supported.
        ReassignNotSupported = 4,
        /// Task management function not supported.
        NotSupported = 5,
        /// Function authorization failed.
        AuthFailed = 6,
        /// Function rejected.
        Rejected = 255,
    }
}

/// Task Management Function Response (RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskMgmtResponse {
    /// Response.
    pub response: TmfResponse,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl TaskMgmtResponse {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::TaskMgmtResponse)?;
        Ok(TaskMgmtResponse {
            response: TmfResponse::from(bhs.byte(2)),
            itt: bhs.itt(),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::TaskMgmtResponse, false);
        bhs.set_flags(0x80);
        bhs.set_byte(2, u8::from(self.response));
        bhs.set_itt(self.itt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
    }
}

enum_with_unknown! {
    /// Logout reason code (RFC 7143 §11.14.1).
    pub enum LogoutReason(u8) {
        /// Close the session.
        CloseSession = 0,
        /// Close the connection.
        CloseConnection = 1,
        /// Remove the connection for recovery.
        RemoveForRecovery = 2,
    }
}

/// Logout Request (RFC 7143 §11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason code.
    pub reason: LogoutReason,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID of the connection to close.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::LogoutRequest)?;
        Ok(LogoutRequest {
            immediate: bhs.immediate(),
            reason: LogoutReason::from(bhs.flags() & 0x7f),
            itt: bhs.itt(),
            cid: bhs.be16(20),
            cmd_sn: bhs.word(24),
            exp_stat_sn: bhs.word(28),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::LogoutRequest, self.immediate);
        bhs.set_flags(0x80 | (u8::from(self.reason) & 0x7f));
        bhs.set_itt(self.itt);
        bhs.set_be16(20, self.cid);
        bhs.set_word(24, self.cmd_sn);
        bhs.set_word(28, self.exp_stat_sn);
    }
}

/// Logout Response (RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LogoutResponse {
    /// Response (0 = closed successfully, 1 = CID not found, ...).
    pub response: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait.
    pub time2wait: u16,
    /// Time2Retain.
    pub time2retain: u16,
}

impl LogoutResponse {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::LogoutResponse)?;
        Ok(LogoutResponse {
            response: bhs.byte(2),
            itt: bhs.itt(),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            time2wait: bhs.be16(40),
            time2retain: bhs.be16(42),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::LogoutResponse, false);
        bhs.set_flags(0x80);
        bhs.set_byte(2, self.response);
        bhs.set_itt(self.itt);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_be16(40, self.time2wait);
        bhs.set_be16(42, self.time2retain);
    }
}

enum_with_unknown! {
    /// Reject reason (RFC 7143 §11.17.1).
    pub enum RejectReason(u8) {
        /// Data (payload) digest error.
        DataDigestError = 0x02,
        /// SNACK reject.
        SnackReject = 0x03,
        /// Protocol error.
        ProtocolError = 0x04,
        /// Command not supported.
        CommandNotSupported = 0x05,
        /// Immediate command rejected: too many immediate commands.
        ImmediateCommandReject = 0x06,
        /// Task in progress.
        TaskInProgress = 0x07,
        /// Invalid data ACK.
        InvalidDataAck = 0x08,
        /// Invalid PDU field.
        InvalidPduField = 0x09,
        /// Long operation reject: out of resources.
        OutOfResources = 0x0a,
        /// Waiting for logout.
        WaitingForLogout = 0x0c,
    }
}

/// Reject (RFC 7143 §11.17); its data segment is the rejected PDU's BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reject {
    /// Reason.
    pub reason: RejectReason,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (only for rejected SNACKs).
    pub data_sn: u32,
    /// DataSegmentLength (48: the rejected BHS).
    pub data_len: u32,
}

impl Reject {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::Reject)?;
        Ok(Reject {
            reason: RejectReason::from(bhs.byte(2)),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            data_sn: bhs.word(36),
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::Reject, false);
        bhs.set_flags(0x80);
        bhs.set_byte(2, u8::from(self.reason));
        bhs.set_data_segment_len(self.data_len);
        bhs.set_itt(RESERVED_TAG);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_word(36, self.data_sn);
    }
}

/// Asynchronous Message (RFC 7143 §11.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AsyncMessage {
    /// LUN.
    pub lun: u64,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent (1 = target requests logout, 2 = drop connection, ...).
    pub event: u8,
    /// AsyncVCode.
    pub vcode: u8,
    /// Parameter1..3.
    pub parameters: [u16; 3],
    /// DataSegmentLength.
    pub data_len: u32,
}

impl AsyncMessage {
    /// Parse from a checked BHS.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        check_opcode(bhs, Opcode::AsyncMessage)?;
        Ok(AsyncMessage {
            lun: bhs.lun(),
            stat_sn: bhs.word(24),
            exp_cmd_sn: bhs.word(28),
            max_cmd_sn: bhs.word(32),
            event: bhs.byte(36),
            vcode: bhs.byte(37),
            parameters: [bhs.be16(38), bhs.be16(40), bhs.be16(42)],
            data_len: bhs.data_segment_len(),
        })
    }

    /// Write into a BHS buffer of at least 48 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, bhs: &mut Bhs<T>) {
        bhs.clear(Opcode::AsyncMessage, false);
        bhs.set_flags(0x80);
        bhs.set_data_segment_len(self.data_len);
        bhs.set_lun(self.lun);
        bhs.set_itt(RESERVED_TAG);
        bhs.set_word(24, self.stat_sn);
        bhs.set_word(28, self.exp_cmd_sn);
        bhs.set_word(32, self.max_cmd_sn);
        bhs.set_byte(36, self.event);
        bhs.set_byte(37, self.vcode);
        bhs.set_be16(38, self.parameters[0]);
        bhs.set_be16(40, self.parameters[1]);
        bhs.set_be16(42, self.parameters[2]);
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

/// Any PDU an initiator sends, parsed from its BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitiatorPdu {
    /// NOP-Out.
    NopOut(NopOut),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// Task Management Function Request.
    TaskMgmt(TaskMgmtRequest),
    /// Login Request.
    Login(LoginRequest),
    /// Text Request.
    Text(TextRequest),
    /// SCSI Data-Out.
    DataOut(DataOut),
    /// Logout Request.
    Logout(LogoutRequest),
    /// SNACK or an opcode this target does not implement.
    Other(Opcode),
}

impl InitiatorPdu {
    /// Parse the BHS of an initiator PDU.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, WireError> {
        bhs.check_len()?;
        Ok(match bhs.opcode() {
            Opcode::NopOut => InitiatorPdu::NopOut(NopOut::parse(bhs)?),
            Opcode::ScsiCommand => InitiatorPdu::ScsiCommand(ScsiCommand::parse(bhs)?),
            Opcode::TaskMgmtRequest => InitiatorPdu::TaskMgmt(TaskMgmtRequest::parse(bhs)?),
            Opcode::LoginRequest => InitiatorPdu::Login(LoginRequest::parse(bhs)?),
            Opcode::TextRequest => InitiatorPdu::Text(TextRequest::parse(bhs)?),
            Opcode::DataOut => InitiatorPdu::DataOut(DataOut::parse(bhs)?),
            Opcode::LogoutRequest => InitiatorPdu::Logout(LogoutRequest::parse(bhs)?),
            other => InitiatorPdu::Other(other),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// Decode hex from the fixture files (whitespace ignored).
    pub(crate) fn hex(s: &str) -> heapless::Vec<u8, 2048> {
        let mut out = heapless::Vec::new();
        let digits: heapless::Vec<u8, 4096> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        for pair in digits.chunks(2) {
            let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push((v(pair[0]) << 4) | v(pair[1])).unwrap();
        }
        out
    }

    const LOGIN1: &str = include_str!("testdata/ipxe-login1.hex");
    const LOGIN_RESP2: &str = include_str!("testdata/tgt-login-resp2.hex");
    const READ10: &str = include_str!("testdata/ipxe-read10.hex");
    const DATA_IN: &str = include_str!("testdata/tgt-data-in-hdr.hex");

    #[test]
    fn ipxe_login_security_stage() {
        let bytes = hex(LOGIN1);
        let bhs = Bhs::new_checked(&bytes[..]).unwrap();
        let req = LoginRequest::parse(&bhs).unwrap();
        assert!(req.transit && !req.cont);
        assert_eq!(req.csg, Stage::Security);
        assert_eq!(req.nsg, Stage::Operational);
        assert_eq!(req.itt, 0x18ae_0001);
        assert_eq!(&req.isid[..4], &[0x40, 0x00, 0x27, 0x23]);
        assert_eq!(req.tsih, 0);
        assert_eq!(req.cmd_sn, 0);
        let layout = pdu_len(&bhs, Digests::default());
        assert_eq!(layout.total_len, bytes.len());
        // round trip
        let mut out = [0xa5u8; BHS_LEN];
        req.emit(&mut Bhs::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &bytes[..BHS_LEN]);
    }

    #[test]
    fn tgt_login_response_round_trip() {
        let bytes = hex(LOGIN_RESP2);
        let bhs = Bhs::new_checked(&bytes[..]).unwrap();
        let resp = LoginResponse::parse(&bhs).unwrap();
        assert!(resp.transit);
        assert_eq!(resp.csg, Stage::Operational);
        assert_eq!(resp.nsg, Stage::FullFeature);
        assert_eq!(resp.tsih, 0x0100);
        assert_eq!(resp.status_class, 0);
        let mut out = [0xa5u8; BHS_LEN];
        resp.emit(&mut Bhs::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &bytes[..BHS_LEN]);
    }

    #[test]
    fn ipxe_read10_command() {
        let bytes = hex(READ10);
        let bhs = Bhs::new_checked(&bytes[..]).unwrap();
        let cmd = ScsiCommand::parse(&bhs).unwrap();
        assert!(cmd.final_bit && cmd.read && !cmd.write);
        assert_eq!(cmd.attr, 1);
        assert_eq!(cmd.cdb[0], 0x28);
        assert_eq!(cmd.lun, 1 << 48);
        let mut out = [0xa5u8; BHS_LEN];
        cmd.emit(&mut Bhs::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &bytes[..BHS_LEN]);
        assert!(matches!(
            InitiatorPdu::parse(&bhs),
            Ok(InitiatorPdu::ScsiCommand(_))
        ));
    }

    #[test]
    fn tgt_data_in_round_trip() {
        let bytes = hex(DATA_IN);
        let bhs = Bhs::new_checked(&bytes[..]).unwrap();
        let d = DataIn::parse(&bhs).unwrap();
        assert!(d.final_bit);
        assert_eq!(d.status, Some(0));
        let mut out = [0xa5u8; BHS_LEN];
        d.emit(&mut Bhs::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &bytes[..BHS_LEN]);
    }

    #[test]
    fn extended_cdb_ahs() {
        // a 32-byte CDB: 16 in the BHS, 16 in an AHS of length 17 (+1 reserved)
        let mut ahs = [0u8; 20];
        ahs[..3].copy_from_slice(&[0, 17, AHS_EXTENDED_CDB]);
        for (i, b) in ahs[4..20].iter_mut().enumerate() {
            *b = 16 + i as u8;
        }
        let bhs_cdb: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut out = [0u8; 32];
        assert_eq!(full_cdb(&bhs_cdb, &ahs, &mut out), Some(32));
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(full_cdb(&bhs_cdb, &ahs, &mut [0u8; 20]), None);
        assert_eq!(full_cdb(&bhs_cdb, &[], &mut out), Some(16));
        // malformed AHS lengths end the walk without a panic
        assert_eq!(ahs_segments(&[0, 200, 1, 0]).count(), 0);
    }

    #[test]
    fn short_buffer_is_truncated() {
        assert_eq!(
            Bhs::new_checked(&[0u8; 47][..]).map(|_| ()),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn layout_with_digests_and_padding() {
        let mut b = [0u8; BHS_LEN];
        let mut bhs = Bhs::new_unchecked(&mut b[..]);
        bhs.set_total_ahs_len(1);
        bhs.set_data_segment_len(5);
        let l = pdu_len(
            &bhs,
            Digests {
                header: true,
                data: true,
            },
        );
        assert_eq!(l.data_offset, 48 + 4 + 4);
        assert_eq!(l.total_len, 56 + 8 + 4);
    }

    #[test]
    fn every_reply_round_trips() {
        let mut buf = [0xa5u8; BHS_LEN];
        let r2t = R2t {
            lun: 1 << 48,
            itt: 7,
            ttt: 9,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            r2t_sn: 4,
            buffer_offset: 8192,
            desired_len: 65536,
        };
        r2t.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(R2t::parse(&Bhs::new_unchecked(&buf[..])), Ok(r2t));
        let rsp = ScsiResponse {
            response: 0,
            status: 2,
            residual: Residual::Underflow(512),
            itt: 1,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            exp_data_sn: 1,
            data_len: 20,
        };
        rsp.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(ScsiResponse::parse(&Bhs::new_unchecked(&buf[..])), Ok(rsp));
        let tmf = TaskMgmtResponse {
            response: TmfResponse::NoSuchTask,
            itt: 5,
            stat_sn: 6,
            exp_cmd_sn: 7,
            max_cmd_sn: 8,
        };
        tmf.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(
            TaskMgmtResponse::parse(&Bhs::new_unchecked(&buf[..])),
            Ok(tmf)
        );
        let lo = LogoutResponse {
            response: 0,
            itt: 1,
            stat_sn: 2,
            exp_cmd_sn: 3,
            max_cmd_sn: 4,
            time2wait: 2,
            time2retain: 0,
        };
        lo.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(LogoutResponse::parse(&Bhs::new_unchecked(&buf[..])), Ok(lo));
        let rj = Reject {
            reason: RejectReason::ProtocolError,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_sn: 0,
            data_len: 48,
        };
        rj.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(Reject::parse(&Bhs::new_unchecked(&buf[..])), Ok(rj));
        assert_eq!(Bhs::new_unchecked(&buf[..]).itt(), RESERVED_TAG);
        let am = AsyncMessage {
            lun: 0,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            event: 1,
            vcode: 0,
            parameters: [0, 2, 0],
            data_len: 0,
        };
        am.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(AsyncMessage::parse(&Bhs::new_unchecked(&buf[..])), Ok(am));
        let nop = NopIn {
            lun: 0,
            itt: 3,
            ttt: RESERVED_TAG,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_len: 0,
        };
        nop.emit(&mut Bhs::new_unchecked(&mut buf[..]));
        assert_eq!(NopIn::parse(&Bhs::new_unchecked(&buf[..])), Ok(nop));
    }
}
