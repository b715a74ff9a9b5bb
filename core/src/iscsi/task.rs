//! Per-command state of the full feature phase: where a SCSI command is in
//! its life (collecting Data-Out, waiting for storage, sending Data-In,
//! sending status) and the bookkeeping of its data transfer.

use heapless::Deque;

use super::backend::IoId;
use super::pdu::Residual;

/// Longest CDB we accept (16 in the BHS + an Extended CDB AHS).
pub const MAX_CDB: usize = 32;

/// Most R2Ts outstanding per task (caps the negotiated MaxOutstandingR2T).
pub const MAX_R2T: usize = 8;

/// Where received Data-Out goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// To storage through `Backend::write_data`, at this base offset.
    Storage { offset: u64, fua: bool },
    /// Into the task's scratch buffer (a parameter list).
    Scratch,
}

/// Storage work queued or in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageOp {
    Read { offset: u64, len: u32 },
    Write { offset: u64, len: u32, fua: bool },
    Flush,
}

/// Where Data-In comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Storage through `Backend::read_data`, at this base offset.
    Storage { offset: u64 },
    /// The task's scratch buffer.
    Scratch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Free,
    /// Receiving Data-Out.
    Collecting,
    /// Storage request not yet handed to the host.
    StorageQueued(StorageOp),
    /// The host is working on it.
    StorageBusy(StorageOp),
    /// Aborted while the host was busy: free on completion, send nothing.
    Aborted,
    /// Sending Data-In.
    DataIn(Source),
    /// Sending the SCSI Response.
    Respond,
}

/// One outstanding R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R2tState {
    pub ttt: u32,
    pub offset: u32,
    pub len: u32,
    /// Set once the R2T PDU went out.
    pub sent: bool,
}

/// One SCSI command slot.
#[derive(Debug)]
pub(crate) struct Task<const S: usize> {
    pub phase: Phase,
    pub generation: u16,
    pub itt: u32,
    pub lun: u64,
    pub lun_raw: u64,
    pub cmd_sn: u32,
    pub edtl: u32,
    pub read: bool,
    pub write: bool,
    pub attr: u8,
    pub cdb: [u8; MAX_CDB],
    pub cdb_len: usize,
    /// Any storage request was issued (the host may hold buffers).
    pub used_storage: bool,

    // Data-Out collection.
    pub sink: Sink,
    /// Bytes of Data-Out the command consumes (SPDTL for writes).
    pub xfer_len: u32,
    /// Next buffer offset the initiator must send.
    pub wire_offset: u32,
    /// Unsolicited Data-Out may still arrive (the command's F bit was 0).
    pub unsolicited_open: bool,
    /// Last byte (exclusive) of the unsolicited burst.
    pub unsolicited_end: u32,
    pub unsolicited_data_sn: u32,
    pub r2ts: Deque<R2tState, MAX_R2T>,
    /// Next offset an R2T will ask for.
    pub next_r2t_offset: u32,
    pub r2t_sn: u32,
    /// DataSN expected in the current solicited sequence.
    pub seq_data_sn: u32,

    // Data-In.
    pub data_in_len: u32,
    pub data_in_sent: u32,
    pub data_sn: u32,

    // Status.
    pub status: u8,
    pub residual: Residual,
    /// `residual` was set by a Data-Out plan and stays.
    pub residual_fixed: bool,
    /// Sense bytes at `scratch[sense_at..sense_at + sense_len]`.
    pub sense_at: u32,
    pub sense_len: u32,
    pub scratch: [u8; S],
}

impl<const S: usize> Task<S> {
    pub fn new() -> Self {
        Task {
            phase: Phase::Free,
            generation: 0,
            itt: 0,
            lun: 0,
            lun_raw: 0,
            cmd_sn: 0,
            edtl: 0,
            read: false,
            write: false,
            attr: 0,
            cdb: [0; MAX_CDB],
            cdb_len: 16,
            used_storage: false,
            sink: Sink::Scratch,
            xfer_len: 0,
            wire_offset: 0,
            unsolicited_open: false,
            unsolicited_end: 0,
            unsolicited_data_sn: 0,
            r2ts: Deque::new(),
            next_r2t_offset: 0,
            r2t_sn: 0,
            seq_data_sn: 0,
            data_in_len: 0,
            data_in_sent: 0,
            data_sn: 0,
            status: 0,
            residual: Residual::None,
            residual_fixed: false,
            sense_at: 0,
            sense_len: 0,
            scratch: [0; S],
        }
    }

    #[inline]
    pub fn is_free(&self) -> bool {
        matches!(self.phase, Phase::Free)
    }

    pub fn io(&self, slot: usize) -> IoId {
        IoId::new(slot, self.generation)
    }

    /// Reset for a new command (keeps and bumps the generation).
    pub fn reset(&mut self) {
        self.phase = Phase::Free;
        self.generation = self.generation.wrapping_add(1);
        self.used_storage = false;
        self.sink = Sink::Scratch;
        self.xfer_len = 0;
        self.wire_offset = 0;
        self.unsolicited_open = false;
        self.unsolicited_end = 0;
        self.unsolicited_data_sn = 0;
        self.r2ts.clear();
        self.next_r2t_offset = 0;
        self.r2t_sn = 0;
        self.seq_data_sn = 0;
        self.data_in_len = 0;
        self.data_in_sent = 0;
        self.data_sn = 0;
        self.status = 0;
        self.residual = Residual::None;
        self.residual_fixed = false;
        self.sense_at = 0;
        self.sense_len = 0;
    }

    /// Finish with CHECK CONDITION and fixed-format sense data (SPC-4 §4.5.3)
    /// in the scratch buffer.
    pub fn check_condition(&mut self, key: u8, asc: u8, ascq: u8) {
        let sense = [
            0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0,
        ];
        if let Some(d) = self.scratch.get_mut(..sense.len()) {
            d.copy_from_slice(&sense);
            self.sense_len = sense.len() as u32;
        } else {
            self.sense_len = 0;
        }
        self.sense_at = 0;
        self.status = 2;
        self.data_in_len = 0;
        self.r2ts.clear();
        self.phase = Phase::Respond;
    }
}
