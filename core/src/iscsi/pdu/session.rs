//! PDUs that keep a session alive, end it or report on it: NOP-Out/In,
//! Logout, Reject and Asynchronous Message (RFC 7143 §11.9, 11.14-11.19).

use super::bhs::{check_opcode, Bhs, Opcode, WireError, RESERVED_TAG};

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
