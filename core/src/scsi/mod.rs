//! The SCSI block layer (SPC-4 / SBC-3) behind the iSCSI target.
//!
//! Sans-I/O like the rest of the core: the transport hands a [`Target`] (or a
//! single [`Lun`]) a CDB and gets back a [`Step`] telling it what to do next.
//! Nothing here touches a disk; storage work is described by an [`Io`] which
//! the host performs (synchronously, on a thread pool, with io_uring…) and
//! then reports with [`Lun::complete`].
//!
//! # Driving a command
//!
//! 1. `command(nexus, cdb, expected_len, data_in)` returns a [`Step`]:
//!    - [`Step::Done`]: send `data_len` bytes of `data_in` as Data-In (if
//!      any), then the [`Response`] (status + sense).
//!    - [`Step::DataOut`]: the command carries a parameter list (MODE SELECT,
//!      UNMAP, PERSISTENT RESERVE OUT…): collect `len` bytes of Data-Out and
//!      call `data_out(nexus, cdb, data, data_in)`, which returns the next
//!      [`Step`] (never another `DataOut`).
//!    - [`Step::Io`]: perform the [`Io`] (see its variants for which Data-Out
//!      bytes to collect first and where Data-In comes from), then call
//!      `complete(&io, result, data_in)` for the [`Response`].
//! 2. Residuals: every `Done`/`Io` states the real transfer length
//!    (`data_len`, or the `Io`'s Data-Out/Data-In length). The transport
//!    compares it with the initiator's Expected Data Transfer Length and
//!    reports underflow/overflow; this layer never looks at the wire.
//!
//! # Commands
//!
//! SPC-4: TEST UNIT READY, INQUIRY (standard; VPD 00h, 80h, 83h, B0h, B1h,
//! B2h), REQUEST SENSE, REPORT LUNS ([`Target`]), REPORT SUPPORTED
//! OPERATION CODES (all / one command, RCTD), MODE SENSE(6)/(10) and MODE
//! SELECT(6)/(10) (caching page, control page with D_SENSE and SWP,
//! informational exceptions page), RESERVE/RELEASE(6)/(10), PERSISTENT
//! RESERVE IN (READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL
//! STATUS) and OUT (REGISTER, REGISTER AND IGNORE EXISTING KEY, RESERVE,
//! RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT; all six types), EXTENDED
//! COPY (LID1, block to block inside the LUN) and RECEIVE COPY RESULTS.
//! SBC-3: READ/WRITE(6)/(10)/(12)/(16), WRITE AND VERIFY(10)/(12)/(16),
//! VERIFY(10)/(12)/(16) (BYTCHK 0, 1, 3), READ CAPACITY(10)/(16), SYNCHRONIZE
//! CACHE(10)/(16), PRE-FETCH(10)/(16), WRITE SAME(10)/(16) (UNMAP, NDOB),
//! UNMAP, GET LBA STATUS, SANITIZE (BLOCK ERASE), COMPARE AND WRITE, ORWRITE(16), START STOP UNIT,
//! PREVENT ALLOW MEDIUM REMOVAL, READ DEFECT DATA(10)/(12). Everything else
//! is INVALID COMMAND OPERATION CODE, and REPORT SUPPORTED OPERATION CODES
//! lists exactly what this LUN serves (UNMAP only when thin-provisioned),
//! so initiators such as libiscsi's test suite skip the rest.
//!
//! The layer keeps no per-task state: a command's later steps are recomputed
//! from its CDB, so any number of commands may be in flight at once.
//! Atomicity of COMPARE AND WRITE against concurrent writes to the same
//! blocks is the host's job (it owns the storage queue).
//!
//! Unit attentions, SPC-2 reservations and persistent reservations are per
//! I_T nexus: the transport gives each I_T nexus a small [`Nexus::index`]
//! (`< N`, the const generic of [`Lun`]) and tells the layer about resets,
//! nexus loss and logout through the `*_reset` / [`Lun::nexus_lost`] hooks.

mod cdb;
mod config;
mod inquiry;
mod lun;
mod mode;
mod opcodes;
mod pr;
mod sense;
mod status;
mod target;
mod xcopy;

#[cfg(test)]
mod tests;

pub use cdb::opcode;
pub use config::LunConfig;
pub use lun::{Lun, LunStats};
pub use sense::{asc, Sense, SenseBytes, SenseKey};
pub use target::{encode_lun, lun_absent_command, Target, TargetFull, Units};

/// Who sent a command: one I_T nexus (initiator port × target port).
///
/// Persistent reservations remember the initiator port by name, so a
/// registration survives a reconnection of the same initiator port; unit
/// attentions and SPC-2 reservations are kept per `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nexus<'a> {
    /// Slot assigned by the transport, `< N` of the [`Lun`]. The same I_T
    /// nexus should keep its slot while it exists; a slot is reused only
    /// after [`Lun::nexus_lost`] (or [`Target::nexus_lost`]) for it.
    pub index: u16,
    /// iSCSI initiator name (RFC 7143 `InitiatorName`), at most 223 bytes.
    pub initiator: &'a str,
    /// The session's ISID (6 bytes): with the name it forms the initiator
    /// port name `<name>,i,0x<isid>`.
    pub isid: [u8; 6],
}

/// SCSI status (SAM-5 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// GOOD (0x00).
    Good,
    /// CHECK CONDITION (0x02): sense data explains why.
    CheckCondition,
    /// CONDITION MET (0x04): PRE-FETCH found room for the whole range.
    ConditionMet,
    /// BUSY (0x08).
    Busy,
    /// RESERVATION CONFLICT (0x18).
    ReservationConflict,
    /// TASK SET FULL (0x28).
    TaskSetFull,
    /// Any other value.
    Unknown(u8),
}

impl Status {
    /// The status byte on the wire.
    pub const fn as_u8(self) -> u8 {
        match self {
            Status::Good => 0x00,
            Status::CheckCondition => 0x02,
            Status::ConditionMet => 0x04,
            Status::Busy => 0x08,
            Status::ReservationConflict => 0x18,
            Status::TaskSetFull => 0x28,
            Status::Unknown(v) => v,
        }
    }
}

/// How a command ends: status, sense and the Data-In length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: Status,
    /// Data-In length. For commands answered by the layer: bytes of the
    /// caller's `data_in` buffer (already cut to the CDB's ALLOCATION LENGTH
    /// and to the buffer size). After [`Io::Read`]: the bytes read from
    /// storage (`len`).
    pub data_len: u32,
    /// Sense data when `status` is CHECK CONDITION.
    pub sense: Option<Sense>,
}

impl Response {
    /// GOOD with `data_len` bytes of Data-In.
    pub const fn good(data_len: u32) -> Self {
        Response {
            status: Status::Good,
            data_len,
            sense: None,
        }
    }
    /// CHECK CONDITION with the given sense.
    pub const fn check(sense: Sense) -> Self {
        Response {
            status: Status::CheckCondition,
            data_len: 0,
            sense: Some(sense),
        }
    }
    /// RESERVATION CONFLICT (no sense data).
    pub const fn conflict() -> Self {
        Response {
            status: Status::ReservationConflict,
            data_len: 0,
            sense: None,
        }
    }
}

/// What the transport does next with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The command is finished: send Data-In (if `data_len > 0`) and status.
    Done(Response),
    /// Collect `len` bytes of Data-Out (the parameter list) and call
    /// `data_out` with them.
    DataOut {
        /// Parameter list length in bytes (from the CDB).
        len: u32,
    },
    /// Perform this storage operation, then call `complete`.
    Io(Io),
}

/// A storage operation the host performs for a command.
///
/// Offsets and lengths are in bytes of the LUN's image (already checked
/// against its capacity). `fua`: the written data must be durable (e.g.
/// `fdatasync` or `O_DSYNC`) before the command's status is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Read `len` bytes at `offset` and send them as Data-In (READ 6/10/12/16).
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count (may be 0: nothing to read, status GOOD).
        len: u32,
    },
    /// Collect `len` bytes of Data-Out and write them at `offset`
    /// (WRITE 6/10/12/16, WRITE AND VERIFY 10/12/16).
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte count (may be 0).
        len: u32,
        /// Force Unit Access: durable before status.
        fua: bool,
    },
    /// Make every acknowledged write durable (SYNCHRONIZE CACHE 10/16).
    Flush,
    /// VERIFY: collect `data_out_len` bytes of Data-Out, read `len` bytes at
    /// `offset` and compare. When `data_out_len < len` (BYTCHK 11b), the
    /// Data-Out is one block compared with every block in turn; with no
    /// Data-Out (BYTCHK 00b) the blocks need only be readable.
    /// Report the first differing byte (counted from the start of the
    /// range) with [`IoResult::Miscompare`].
    Verify {
        /// Byte offset.
        offset: u64,
        /// Bytes of storage to compare.
        len: u32,
        /// Bytes of Data-Out to collect (== `len`, or one block).
        data_out_len: u32,
    },
    /// COMPARE AND WRITE: collect `2 * len` bytes of Data-Out; atomically
    /// with respect to other commands, read `len` bytes at `offset` and
    /// compare them with the first half; if equal write the second half
    /// (durable first when `fua`), else report [`IoResult::Miscompare`].
    CompareAndWrite {
        /// Byte offset.
        offset: u64,
        /// Bytes compared, and bytes written.
        len: u32,
        /// Force Unit Access.
        fua: bool,
    },
    /// ORWRITE(16): collect `len` bytes of Data-Out; atomically with
    /// respect to other commands, read `len` bytes at `offset`, OR the
    /// Data-Out into them and write the result back (durable first when
    /// `fua`).
    OrWrite {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
        /// Force Unit Access.
        fua: bool,
    },
    /// EXTENDED COPY: copy `len` bytes from `src` to `dst` within this
    /// LUN (the ranges may overlap: copy as if through a buffer). No
    /// Data-Out. `nexus` and `list_id` are bookkeeping for RECEIVE COPY
    /// RESULTS: pass the `Io` back unchanged.
    Copy {
        /// Source byte offset.
        src: u64,
        /// Destination byte offset.
        dst: u64,
        /// Byte count.
        len: u32,
        /// Nexus slot that sent the command.
        nexus: u16,
        /// LIST IDENTIFIER to report the status under, if any.
        list_id: Option<u8>,
    },
    /// WRITE SAME 10/16: collect `data_out_len` bytes (one block, or 0 for
    /// NDOB meaning a block of zeros) and write that block `blocks` times
    /// from `offset`. With `unmap` (thin LUNs only) deallocate the range
    /// instead, whatever the block holds (SBC-4: UNMAP=1, ANCHOR=0 →
    /// deallocate; deallocated blocks read back as zeros, LBPRZ=1); the
    /// Data-Out block is still received. SANITIZE BLOCK ERASE arrives as an
    /// `unmap` WRITE SAME of the whole LUN with no Data-Out.
    WriteSame {
        /// Byte offset.
        offset: u64,
        /// Number of blocks to write.
        blocks: u64,
        /// Bytes of Data-Out to collect.
        data_out_len: u32,
        /// UNMAP bit set (and the LUN is thin-provisioned).
        unmap: bool,
    },
    /// UNMAP: deallocate every range of [`unmap_ranges`] over the parameter
    /// list that was passed to `data_out` (already validated).
    Unmap,
    /// GET LBA STATUS: find whether the block at `lba` is mapped and how
    /// many following blocks share that state, then report it with
    /// [`IoResult::LbaStatus`]. (Hosts that cannot tell answer
    /// [`IoResult::Ok`], meaning "mapped to the end".)
    LbaStatus {
        /// First logical block asked about.
        lba: u64,
        /// ALLOCATION LENGTH of the CDB.
        alloc_len: u32,
    },
}

/// How the host finished an [`Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoResult {
    /// Done (for a compare: the data matched).
    Ok,
    /// VERIFY / COMPARE AND WRITE found a difference at this byte offset
    /// from the start of the compared range.
    Miscompare {
        /// Offset of the first differing byte.
        offset: u64,
    },
    /// Answer to [`Io::LbaStatus`].
    LbaStatus {
        /// The block is deallocated (a hole) rather than mapped.
        deallocated: bool,
        /// Number of blocks from `lba` in that same state (≥ 1).
        blocks: u64,
    },
    /// The storage failed.
    Error(IoError),
}

/// Storage failure classes, each mapped to its sense code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IoError {
    /// MEDIUM ERROR / UNRECOVERED READ ERROR (11/00).
    Read,
    /// MEDIUM ERROR / WRITE ERROR (0C/00).
    Write,
    /// The backing store is full: DATA PROTECT / SPACE ALLOCATION FAILED
    /// WRITE PROTECT (27/07).
    NoSpace,
    /// HARDWARE ERROR / INTERNAL TARGET FAILURE (44/00).
    Other,
    /// Another initiator's PREEMPT AND ABORT ended the command: ABORTED
    /// COMMAND / COMMANDS CLEARED BY ANOTHER INITIATOR (2F/00).
    Aborted,
}

/// Whether a WRITE SAME *without* the UNMAP bit may still be done as a
/// deallocation on a thin LUN (an optimisation): only when the block is all
/// zeros, since deallocated blocks read back as zeros (LBPRZ=1).
pub fn write_same_may_unmap(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// The first offset where `a` and `b` differ (or where the shorter ends).
pub fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    match a.iter().zip(b.iter()).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(n),
        None => None,
    }
}

/// The byte ranges `(offset, len)` of an UNMAP parameter list that
/// [`Lun::data_out`] accepted (it returned [`Io::Unmap`]). Zero-length
/// descriptors are skipped.
pub fn unmap_ranges(param: &[u8], block_size: u32) -> impl Iterator<Item = (u64, u64)> + '_ {
    let descs = param.get(8..).unwrap_or(&[]);
    let desc_len = usize::from(cdb::Bytes(param).u16(2));
    let descs = descs.get(..desc_len.min(descs.len())).unwrap_or(&[]);
    descs.chunks_exact(16).filter_map(move |d| {
        let d = cdb::Bytes(d);
        let lba = d.u64(0);
        let n = d.u32(8);
        if n == 0 {
            return None;
        }
        let bs = u64::from(block_size);
        Some((lba.checked_mul(bs)?, u64::from(n).checked_mul(bs)?))
    })
}
