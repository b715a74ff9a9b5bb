//! The boundary between the iSCSI connection and the rest of the target: the
//! SCSI layer (what a CDB means) and storage (where the bytes live).
//!
//! The connection owns transport: Data-In/R2T/Data-Out, residuals, status
//! delivery, CmdSN ordering. It calls [`Backend`] synchronously with small
//! values, and asks for storage work through [`StorageRequest`]s that the
//! host may finish at any time and in any order.

use super::pdu::TmfFunction;
use crate::scsi::IoError;

/// Identifies one storage operation of one task; stable until the host sees
/// [`StorageRequest::Release`] for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IoId(pub u32);

impl IoId {
    pub(crate) fn new(slot: usize, generation: u16) -> Self {
        IoId(((generation as u32) << 16) | (slot as u32 & 0xffff))
    }
    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff) as usize
    }
    pub(crate) fn generation(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// A SCSI command as the connection hands it to the SCSI layer.
#[derive(Debug, Clone, Copy)]
pub struct ScsiRequest<'a> {
    /// The I_T nexus (session) this command came from; see [`super::Admission::nexus`].
    pub nexus: u64,
    /// Index of the target in [`super::Targets::targets`].
    pub target: usize,
    /// The LUN, decoded to a flat number (SAM peripheral/flat addressing).
    pub lun: u64,
    /// The LUN field exactly as sent.
    pub lun_raw: u64,
    /// The task's storage handle (the same for every step of this command).
    pub io: IoId,
    /// Initiator Task Tag.
    pub itt: u32,
    /// The CDB: 16 bytes from the BHS (shorter CDBs are zero padded), plus
    /// the Extended CDB AHS for longer ones (up to 32 bytes).
    pub cdb: &'a [u8],
    /// Expected Data Transfer Length.
    pub edtl: u32,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// Task attribute (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub attr: u8,
}

/// What the SCSI layer wants done next for a command.
///
/// Offsets and lengths are in bytes on the LUN's backing storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Plan {
    /// Finished. `buf[..data_len]` is Data-In (sent if the command is a read),
    /// `buf[data_len..data_len + sense_len]` is sense data (with CHECK CONDITION).
    Complete {
        /// SCSI status (0 GOOD, 2 CHECK CONDITION, 8 BUSY, 0x18 RESERVATION CONFLICT, ...).
        status: u8,
        /// Bytes of Data-In at the start of the buffer.
        data_len: u32,
        /// Bytes of sense data after the Data-In.
        sense_len: u32,
    },
    /// Read `len` bytes at `offset` and send them as Data-In, then GOOD.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count the command transfers (SPDTL).
        len: u32,
    },
    /// Receive `len` bytes of Data-Out and write them at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte count the command transfers (SPDTL).
        len: u32,
        /// Force unit access: durable before completion.
        fua: bool,
    },
    /// Receive a `len`-byte parameter list into the buffer, then call
    /// [`Backend::scsi_resume`] with [`Resume::Parameters`].
    ReceiveParameters {
        /// Parameter list length.
        len: u32,
    },
    /// Make all written data durable (SYNCHRONIZE CACHE).
    Flush,
}

/// Why the SCSI layer is being called again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Resume {
    /// The parameter list arrived: `buf[..len]` (may be shorter than asked,
    /// if the initiator's EDTL was).
    Parameters {
        /// Bytes received.
        len: u32,
    },
    /// The storage operation the last plan asked for finished.
    Storage(Result<(), IoError>),
}

/// Work the host must do on storage; see [`super::Connection::poll_storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageRequest {
    /// Read `len` bytes at `offset`. Data is pulled later through
    /// [`Backend::read_data`]; keep it until `Release`.
    Read {
        /// Handle.
        io: IoId,
        /// Target index.
        target: usize,
        /// LUN.
        lun: u64,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// All `len` bytes at `offset` were delivered through
    /// [`Backend::write_data`]; make them stick (durably if `fua`).
    Write {
        /// Handle.
        io: IoId,
        /// Target index.
        target: usize,
        /// LUN.
        lun: u64,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Durable before completion.
        fua: bool,
    },
    /// Flush the LUN's backing store.
    Flush {
        /// Handle.
        io: IoId,
        /// Target index.
        target: usize,
        /// LUN.
        lun: u64,
    },
    /// The task using `io` is over: free whatever the host kept for it.
    /// Needs no completion.
    Release {
        /// Handle.
        io: IoId,
    },
}

impl StorageRequest {
    /// The handle the request concerns.
    pub fn io(&self) -> IoId {
        match *self {
            StorageRequest::Read { io, .. }
            | StorageRequest::Write { io, .. }
            | StorageRequest::Flush { io, .. }
            | StorageRequest::Release { io } => io,
        }
    }
}

/// Write payload arriving from the wire, straight from the receive buffer.
#[derive(Debug)]
pub struct WriteChunk<'a> {
    /// Handle of the write.
    pub io: IoId,
    /// Target index.
    pub target: usize,
    /// LUN.
    pub lun: u64,
    /// Absolute byte offset on the LUN.
    pub offset: u64,
    /// The bytes.
    pub data: &'a [u8],
}

/// A request to copy read data into the transmit buffer.
#[derive(Debug)]
pub struct ReadChunk<'a> {
    /// Handle of the read (its `Read` request was completed).
    pub io: IoId,
    /// Target index.
    pub target: usize,
    /// LUN.
    pub lun: u64,
    /// Absolute byte offset on the LUN.
    pub offset: u64,
    /// Where the bytes go: fill it completely.
    pub dst: &'a mut [u8],
}

/// Outcome of a task management function at the SCSI layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TmfOutcome {
    /// Done.
    Complete,
    /// No such LUN.
    NoSuchLun,
    /// Not supported.
    NotSupported,
}

/// What the connection needs from the host: the SCSI layer and data movement.
///
/// Every method is called synchronously from inside `handle_input`,
/// `poll_transmit` or `complete_storage`, so it must not block for long.
pub trait Backend {
    /// Start a SCSI command. `buf` is the task's scratch buffer for Data-In
    /// and sense data the SCSI layer generates.
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan;

    /// Continue a command after its parameter list arrived or its storage
    /// operation finished. A `Read` is not resumed on success (its data goes
    /// out as Data-In, then GOOD) but is on failure.
    fn scsi_resume(&mut self, req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan;

    /// A task management function that touches SCSI state (LUN/target reset:
    /// unit attentions, reservations). The connection has already dropped
    /// its own affected tasks.
    fn task_management(
        &mut self,
        nexus: u64,
        target: usize,
        lun: u64,
        function: TmfFunction,
    ) -> TmfOutcome;

    /// The session (I_T nexus) ended: release its reservations and the like.
    fn nexus_lost(&mut self, nexus: u64);

    /// Write payload for a `Plan::Write`, in order, before its
    /// [`StorageRequest::Write`]. A synchronous host may `pwrite` it now; an
    /// asynchronous one copies it.
    fn write_data(&mut self, chunk: WriteChunk<'_>);

    /// Fill `chunk.dst` with data of a completed read. An error (a failed
    /// or short read) ends the command with CHECK CONDITION instead of
    /// sending `chunk.dst`.
    fn read_data(&mut self, chunk: ReadChunk<'_>) -> Result<(), IoError>;
}
