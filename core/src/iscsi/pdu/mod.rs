//! iSCSI PDU wire layer (RFC 7143 §11): the 48-byte Basic Header Segment
//! (BHS) as a zero-copy view, plus a typed `Repr` per opcode.
//!
//! A PDU on the wire is `BHS | AHS (TotalAHSLength words) | HeaderDigest? |
//! DataSegment (DataSegmentLength, padded to 4) | DataDigest?`. [`Bhs`] only
//! covers the first 48 bytes; [`pdu_len`] computes the whole length from it.

mod bhs;
mod login;
mod scsi;
mod session;
mod tmf;

pub use bhs::{
    ahs_segments, full_cdb, pad4, pdu_len, Bhs, Digests, Opcode, PduLayout, WireError,
    AHS_BIDI_READ_LENGTH, AHS_EXTENDED_CDB, BHS_LEN, DIGEST_LEN, RESERVED_TAG,
};
pub use login::{LoginRequest, LoginResponse, Stage, TextRequest, TextResponse};
pub use scsi::{DataIn, DataOut, R2t, Residual, ScsiCommand, ScsiResponse};
pub use session::{
    AsyncMessage, LogoutReason, LogoutRequest, LogoutResponse, NopIn, NopOut, Reject, RejectReason,
};
pub use tmf::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};

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
mod tests;
