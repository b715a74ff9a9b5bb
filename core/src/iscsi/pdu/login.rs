//! Login and Text PDUs (RFC 7143 §11.10-11.13): the login stages and
//! the key=value exchanges before and after Full Feature Phase.

use super::bhs::{check_opcode, Bhs, Opcode, WireError};

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
