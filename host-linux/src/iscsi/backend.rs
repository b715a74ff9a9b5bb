//! The host's [`Backend`]: the core's iSCSI connection talks to the SCSI
//! layer ([`scsi::Target`], shared by every connection behind a mutex) and
//! to the file-backed [`Disk`]s through it.
//!
//! Storage is done synchronously, in the connection's task: `pwrite` of
//! Data-Out straight from the receive buffer ([`Backend::write_data`]),
//! `pread` straight into the transmit buffer ([`Backend::read_data`]), and
//! `fdatasync` inside [`HostBackend::storage`] — whose result is what the
//! connection loop hands to `complete_storage`, so no status can leave
//! before the sync returned.
//!
//! `scsi::Io` kinds the connection has no plan for travel as:
//! - VERIFY, COMPARE AND WRITE, ORWRITE, WRITE SAME: `Plan::Write` of their Data-Out,
//!   which [`Backend::write_data`] collects here instead of writing; the
//!   operation runs on the matching `StorageRequest::Write`;
//! - UNMAP, GET LBA STATUS, EXTENDED COPY (and WRITE SAME without Data-Out): `Plan::Flush`,
//!   whose `StorageRequest::Flush` runs the real operation.

use std::collections::HashMap;
use std::sync::Arc;

use sanboot_core::iscsi::{
    pdu::TmfFunction, Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageError,
    StorageRequest, TmfOutcome, WriteChunk,
};
use sanboot_core::scsi::{self, Io, IoError, IoResult, Response, Step};

use super::Shared;
use crate::disk::Disk;

/// What the backend remembers about one command's storage work.
#[derive(Debug)]
struct Pending {
    target: usize,
    lun: u64,
    io: Io,
    /// Data-Out collected here (VERIFY, COMPARE AND WRITE, WRITE SAME) or
    /// the UNMAP parameter list.
    data: Vec<u8>,
    /// The operation was done here; this is how it ended.
    result: Option<IoResult>,
    /// A `pwrite` of this write failed.
    write_failed: bool,
}

impl Pending {
    /// Data-Out is collected in `data` rather than written.
    fn collects(&self) -> bool {
        matches!(
            self.io,
            Io::Verify { .. }
                | Io::CompareAndWrite { .. }
                | Io::OrWrite { .. }
                | Io::WriteSame { .. }
        )
    }
}

/// The I_T nexus of this connection as the SCSI layer knows it.
#[derive(Debug, Clone)]
pub struct NexusInfo {
    pub index: u16,
    pub initiator: String,
    pub isid: [u8; 6],
    pub target: Option<usize>,
}

/// Data-In payloads at least this long go out with `sendfile`; shorter
/// ones are cheaper as one `pread` into the batch (fewer syscalls).
const ZERO_COPY_MIN: usize = 64 << 10;

/// Read data not copied into the transmit buffer: the bytes at
/// `tx_addr..tx_addr + len` are sent from the image with `sendfile` instead.
#[derive(Debug)]
pub struct Deferred {
    /// Address of the first byte in the transmit buffer (compared, never
    /// dereferenced).
    pub tx_addr: usize,
    pub len: usize,
    pub disk: Arc<Disk>,
    pub offset: u64,
}

/// One connection's backend.
pub struct HostBackend {
    shared: Arc<Shared>,
    nexus: Option<(u64, NexusInfo)>,
    pending: HashMap<u32, Pending>,
    /// Parameter list of the command being resumed (UNMAP needs it again).
    params: Vec<u8>,
    /// Leave Data-In payload to `sendfile` (only without data digests: the
    /// core never looks at the payload then).
    zero_copy: bool,
    deferred: Vec<Deferred>,
}

impl std::fmt::Debug for HostBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBackend")
            .field("nexus", &self.nexus)
            .field("pending", &self.pending.len())
            .finish()
    }
}

fn to_storage_error(e: IoError) -> StorageError {
    match e {
        IoError::Read => StorageError::ReadError,
        IoError::Write => StorageError::WriteError,
        IoError::NoSpace => StorageError::NoSpace,
        IoError::Other => StorageError::NotReady,
    }
}

fn from_storage_error(e: StorageError) -> IoError {
    match e {
        StorageError::ReadError => IoError::Read,
        StorageError::WriteError => IoError::Write,
        StorageError::NoSpace => IoError::NoSpace,
        StorageError::NotReady => IoError::Other,
    }
}

/// A finished command: status, Data-In at the start of `buf`, sense after it.
fn complete(resp: Response, buf: &mut [u8]) -> Plan {
    let data_len = (resp.data_len as usize).min(buf.len());
    let mut sense_len = 0;
    if let Some(sense) = resp.sense {
        let bytes = sense.bytes();
        let bytes = bytes.as_bytes();
        if let Some(dst) = buf.get_mut(data_len..data_len + bytes.len()) {
            dst.copy_from_slice(bytes);
            sense_len = bytes.len();
        }
    }
    Plan::Complete {
        status: resp.status.as_u8(),
        data_len: data_len as u32,
        sense_len: sense_len as u32,
    }
}

impl HostBackend {
    pub fn new(shared: Arc<Shared>) -> Self {
        HostBackend {
            shared,
            nexus: None,
            pending: HashMap::new(),
            params: Vec::new(),
            zero_copy: false,
            deferred: Vec::new(),
        }
    }

    /// Send read data with `sendfile` from now on (no data digests).
    pub fn set_zero_copy(&mut self, on: bool) {
        self.zero_copy = on;
    }

    /// Read data deferred since the last call, in transmit-buffer order.
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// This connection's session was admitted as `nexus`.
    pub fn set_nexus(&mut self, nexus: u64, info: NexusInfo) {
        self.nexus = Some((nexus, info));
    }

    fn disk(&self, target: usize, lun: u64) -> Option<Arc<Disk>> {
        self.shared.targets.get(target)?.disks.get(&lun).cloned()
    }

    fn with_scsi<R>(
        &self,
        target: usize,
        f: impl FnOnce(&mut super::ScsiTarget, scsi::Nexus<'_>) -> R,
    ) -> Option<R> {
        let t = self.shared.targets.get(target)?;
        let (index, initiator, isid) = match &self.nexus {
            Some((_, n)) => (n.index, n.initiator.as_str(), n.isid),
            None => (u16::MAX, "", [0; 6]),
        };
        let nexus = scsi::Nexus {
            index,
            initiator,
            isid,
        };
        let mut guard = t.scsi.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut guard, nexus))
    }

    fn plan(&mut self, req: &ScsiRequest<'_>, step: Step, buf: &mut [u8]) -> Plan {
        let io = match step {
            Step::Done(resp) => return complete(resp, buf),
            Step::DataOut { len } => return Plan::ReceiveParameters { len },
            Step::Io(io) => io,
        };
        let mut p = Pending {
            target: req.target,
            lun: req.lun,
            io,
            data: Vec::new(),
            result: None,
            write_failed: false,
        };
        let plan = match io {
            Io::Read { offset, len } => Plan::Read { offset, len },
            Io::Write { offset, len, fua } => Plan::Write { offset, len, fua },
            Io::Flush => Plan::Flush,
            Io::Verify {
                offset,
                data_out_len,
                ..
            } => Plan::Write {
                offset,
                len: data_out_len,
                fua: false,
            },
            Io::CompareAndWrite { offset, len, .. } => Plan::Write {
                offset,
                len: len.saturating_mul(2),
                fua: false,
            },
            Io::WriteSame {
                offset,
                data_out_len,
                ..
            } if data_out_len > 0 => Plan::Write {
                offset,
                len: data_out_len,
                fua: false,
            },
            Io::OrWrite { offset, len, .. } => Plan::Write {
                offset,
                len,
                fua: false,
            },
            Io::WriteSame { .. } | Io::LbaStatus { .. } | Io::Copy { .. } => Plan::Flush,
            Io::Unmap => {
                p.data = std::mem::take(&mut self.params);
                Plan::Flush
            }
        };
        if let Plan::Write { len, .. } = plan {
            if p.collects() {
                p.data.reserve_exact(len as usize);
            }
        }
        self.pending.insert(req.io.0, p);
        plan
    }

    /// Runs one storage request to its end (blocking: `fdatasync` happens
    /// here). The caller hands the result to `complete_storage` only after
    /// this returned, so the status cannot precede the sync.
    pub fn storage(&mut self, req: &StorageRequest<'_>) -> Result<(), StorageError> {
        let io = req.io();
        let Some(p) = self.pending.get_mut(&io.0) else {
            // A request for a plan we did not make (core-side Unmap/WriteSame).
            return self.direct(req);
        };
        let Some(disk) = self
            .shared
            .targets
            .get(p.target)
            .and_then(|t| t.disks.get(&p.lun))
            .cloned()
        else {
            return Err(StorageError::NotReady);
        };
        match (*req, p.io) {
            // Reads are pulled by `read_data` straight into the transmit buffer.
            (StorageRequest::Read { .. }, _) => Ok(()),
            (StorageRequest::Write { fua, .. }, Io::Write { .. }) => {
                if p.write_failed {
                    return Err(StorageError::WriteError);
                }
                if fua || !disk.options().write_cache {
                    disk.sync().map_err(|_| StorageError::WriteError)?;
                }
                Ok(())
            }
            (StorageRequest::Flush { .. }, Io::Flush) => {
                disk.sync().map_err(|_| StorageError::WriteError)
            }
            // Operations run here; `scsi_resume` reports their result.
            (_, io) => {
                let result = disk.perform(&io, &p.data);
                p.result = Some(result);
                Ok(())
            }
        }
    }

    fn direct(&mut self, req: &StorageRequest<'_>) -> Result<(), StorageError> {
        let r = match *req {
            StorageRequest::Unmap {
                target,
                lun,
                offset,
                len,
                ..
            } => self.disk(target, lun).map(|d| {
                d.punch_hole(offset, len)
                    .map_err(|_| StorageError::WriteError)
            }),
            StorageRequest::Flush { target, lun, .. } => self
                .disk(target, lun)
                .map(|d| d.sync().map_err(|_| StorageError::WriteError)),
            StorageRequest::WriteSame {
                target,
                lun,
                offset,
                len,
                pattern,
                ..
            } => self.disk(target, lun).map(|d| {
                let bs = u64::from(d.block_size());
                let io = Io::WriteSame {
                    offset,
                    blocks: len / bs,
                    data_out_len: pattern.len() as u32,
                    unmap: false,
                };
                match d.perform(&io, pattern) {
                    IoResult::Error(e) => Err(to_storage_error(e)),
                    _ => Ok(()),
                }
            }),
            StorageRequest::Read { target, lun, .. }
            | StorageRequest::Write { target, lun, .. } => self.disk(target, lun).map(|_| Ok(())),
            StorageRequest::Release { .. } => Some(Ok(())),
        };
        r.unwrap_or(Err(StorageError::NotReady))
    }

    /// Whether `req` may block for long (fdatasync, hole punching, big
    /// copies): the caller then lets tokio move other tasks off this thread.
    pub fn may_block(&self, req: &StorageRequest<'_>) -> bool {
        match (req, self.pending.get(&req.io().0)) {
            (StorageRequest::Read { .. } | StorageRequest::Release { .. }, _) => false,
            (
                StorageRequest::Write {
                    fua, target, lun, ..
                },
                Some(p),
            ) if matches!(p.io, Io::Write { .. }) => {
                *fua || self
                    .disk(*target, *lun)
                    .is_some_and(|d| !d.options().write_cache)
            }
            _ => true,
        }
    }

    /// The task using `io` is over.
    pub fn release(&mut self, io: IoId) {
        self.pending.remove(&io.0);
    }
}

impl Backend for HostBackend {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let step = self
            .with_scsi(req.target, |t, nexus| {
                t.command(req.lun, &nexus, req.cdb, req.edtl, buf)
            })
            .unwrap_or_else(|| scsi::lun_absent_command(req.cdb, buf));
        self.plan(req, step, buf)
    }

    fn scsi_resume(&mut self, req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        match why {
            Resume::Parameters { len } => {
                let n = (len as usize).min(buf.len());
                self.params.clear();
                self.params
                    .extend_from_slice(buf.get(..n).unwrap_or_default());
                let params = std::mem::take(&mut self.params);
                let step = self
                    .with_scsi(req.target, |t, nexus| {
                        t.data_out(req.lun, &nexus, req.cdb, &params, buf)
                    })
                    .unwrap_or_else(|| scsi::lun_absent_command(req.cdb, buf));
                self.params = params;
                let plan = self.plan(req, step, buf);
                self.params.clear();
                plan
            }
            Resume::Storage(result) => {
                let Some(p) = self.pending.get_mut(&req.io.0) else {
                    let e = result.err().unwrap_or(StorageError::NotReady);
                    let resp = Response::check(scsi::Sense::new(
                        scsi::SenseKey::HardwareError,
                        scsi::asc::INTERNAL_TARGET_FAILURE,
                    ));
                    tracing::warn!(?e, "storage completion for an unknown command");
                    return complete(resp, buf);
                };
                let outcome = match result {
                    Err(e) => IoResult::Error(from_storage_error(e)),
                    Ok(()) => p.result.take().unwrap_or(IoResult::Ok),
                };
                let (lun, io) = (p.lun, p.io);
                let resp = self
                    .with_scsi(req.target, |t, _| t.complete(lun, &io, outcome, buf))
                    .unwrap_or_else(|| {
                        Response::check(scsi::Sense::new(
                            scsi::SenseKey::IllegalRequest,
                            scsi::asc::LOGICAL_UNIT_NOT_SUPPORTED,
                        ))
                    });
                complete(resp, buf)
            }
        }
    }

    fn task_management(
        &mut self,
        _nexus: u64,
        target: usize,
        lun: u64,
        function: TmfFunction,
    ) -> TmfOutcome {
        let r = self.with_scsi(target, |t, _| match function {
            TmfFunction::LogicalUnitReset => {
                if t.lun(lun).is_none() {
                    return TmfOutcome::NoSuchLun;
                }
                t.lun_reset(lun);
                TmfOutcome::Complete
            }
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                t.target_reset();
                TmfOutcome::Complete
            }
            TmfFunction::AbortTask | TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
                TmfOutcome::Complete
            }
            _ => TmfOutcome::NotSupported,
        });
        r.unwrap_or(TmfOutcome::NoSuchLun)
    }

    fn nexus_lost(&mut self, nexus: u64) {
        if let Some(info) = self.shared.nexus_lost(nexus) {
            if let Some(t) = info.target.and_then(|i| self.shared.targets.get(i)) {
                let mut scsi = t.scsi.lock().unwrap_or_else(|e| e.into_inner());
                scsi.nexus_lost(info.index);
            }
        }
        if self.nexus.as_ref().is_some_and(|(n, _)| *n == nexus) {
            self.nexus = None;
        }
    }

    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        let Some(p) = self.pending.get_mut(&chunk.io.0) else {
            return;
        };
        if p.collects() {
            p.data.extend_from_slice(chunk.data);
            return;
        }
        let Some(disk) = self
            .shared
            .targets
            .get(chunk.target)
            .and_then(|t| t.disks.get(&chunk.lun))
        else {
            p.write_failed = true;
            return;
        };
        if let Err(e) = disk.write(chunk.offset, chunk.data, false) {
            tracing::warn!(image = %disk.path().display(), offset = chunk.offset, "write failed: {e}");
            p.write_failed = true;
        }
    }

    fn read_data(&mut self, chunk: ReadChunk<'_>) {
        let Some(disk) = self
            .shared
            .targets
            .get(chunk.target)
            .and_then(|t| t.disks.get(&chunk.lun))
        else {
            chunk.dst.fill(0);
            return;
        };
        if self.zero_copy && chunk.dst.len() >= ZERO_COPY_MIN {
            self.deferred.push(Deferred {
                tx_addr: chunk.dst.as_ptr() as usize,
                len: chunk.dst.len(),
                disk: disk.clone(),
                offset: chunk.offset,
            });
            return;
        }
        if let Err(e) = disk.read(chunk.offset, chunk.dst) {
            // The status (GOOD) was decided when the read completed; a failure
            // this late can only be logged.
            tracing::error!(image = %disk.path().display(), offset = chunk.offset, "read failed: {e}");
            chunk.dst.fill(0);
        }
    }
}
