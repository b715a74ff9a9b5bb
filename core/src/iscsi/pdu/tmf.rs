//! Task Management Function Request and Response (RFC 7143 §11.5-11.6).

use super::bhs::{check_opcode, Bhs, Opcode, WireError};

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
