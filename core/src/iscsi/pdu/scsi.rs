//! The SCSI data path (RFC 7143 §11.3-11.8): SCSI Command and Response,
//! Data-Out, Data-In and R2T.

use super::bhs::{check_opcode, Bhs, Opcode, WireError};

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
