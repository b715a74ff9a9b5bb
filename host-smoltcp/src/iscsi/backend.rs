//! The connection's [`Backend`] without allocation: the SCSI layer of the
//! caller's targets, synchronous storage on [`Disks`], and a fixed table of
//! commands with storage work.
//!
//! Data-Out that is not written as is, is handled as it streams in, in
//! bounce-buffer pieces: ORWRITE reads, ORs and writes each piece; VERIFY
//! (BYTCHK 01b) and the compare half of COMPARE AND WRITE compare each
//! piece, and the write half is written only if nothing differed (the
//! halves arrive in order). Only one-block Data-Out (WRITE SAME, VERIFY
//! with BYTCHK 11b) and parameter lists are collected, into one small
//! buffer per connection. A command whose collected data does not fit, or
//! that needs the buffer while another command holds it, ends with CHECK
//! CONDITION (INVALID FIELD IN CDB) or BUSY: the connection goes on. Between
//! pieces other commands may run, so COMPARE AND WRITE and ORWRITE are
//! atomic only against commands whose data is not interleaved with theirs.

use sanboot_core::iscsi::{
    pdu::TmfFunction, Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageError,
    StorageRequest, TmfOutcome, WriteChunk,
};
use sanboot_core::scsi::{self, asc, Io, IoError, IoResult, Response, Sense, SenseKey, Step};

use crate::storage::{BlockDevice, Disks};

/// SCSI state of one target: up to 4 LUNs, 8 I_T nexus slots, 4
/// persistent-reservation registrations per LUN.
pub type ScsiTarget = scsi::Target<4, { NEXUS_SLOTS as usize }, 4>;

/// I_T nexus slots of a [`ScsiTarget`].
pub const NEXUS_SLOTS: u16 = 8;

/// Bounce buffer for read-compare and read-modify-write work.
const BOUNCE: usize = 4096;
/// Logical block size of the LUNs this backend serves (a zero block for
/// WRITE SAME with NDOB).
const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy)]
struct Pending {
    io_id: u32,
    target: usize,
    lun: u64,
    io: Io,
    result: Option<IoResult>,
    write_failed: bool,
    collects: bool,
    /// First differing byte seen while streaming (VERIFY, COMPARE AND WRITE).
    miscompare: Option<u64>,
    /// A streamed read-modify-write failed.
    failed: Option<IoError>,
}

/// Who this connection's session is, as the SCSI layer sees it.
#[derive(Debug, Clone)]
pub(crate) struct NexusInfo {
    pub(crate) id: u64,
    pub(crate) index: u16,
    pub(crate) initiator: heapless::String<224>,
    pub(crate) isid: [u8; 6],
    pub(crate) target: Option<usize>,
}

/// Per-connection backend state.
#[derive(Debug)]
pub(crate) struct BackendState<const TASKS: usize> {
    pending: [Option<Pending>; TASKS],
    pub(crate) nexus: Option<NexusInfo>,
    /// The command whose Data-Out is in the collection buffer, and how much.
    collector: Option<u32>,
    collected: usize,
}

impl<const TASKS: usize> BackendState<TASKS> {
    pub(crate) fn new() -> Self {
        BackendState {
            pending: [None; TASKS],
            nexus: None,
            collector: None,
            collected: 0,
        }
    }
}

/// The borrowed view the connection calls into.
pub(crate) struct Glue<'b, D: Disks, const TASKS: usize> {
    pub(crate) state: &'b mut BackendState<TASKS>,
    pub(crate) scsi: &'b mut [ScsiTarget],
    pub(crate) disks: &'b mut D,
    pub(crate) collect: &'b mut [u8],
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

/// A finished command: Data-In at the start of `buf`, sense after it.
fn complete(resp: Response, buf: &mut [u8]) -> Plan {
    let data_len = (resp.data_len as usize).min(buf.len());
    let mut sense_len = 0;
    if let Some(sense) = resp.sense {
        let bytes = sense.bytes();
        let bytes = bytes.as_bytes();
        if let Some(dst) = buf
            .get_mut(data_len..)
            .and_then(|rest| rest.get_mut(..bytes.len()))
        {
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

fn busy() -> Plan {
    Plan::Complete {
        status: scsi::Status::Busy.as_u8(),
        data_len: 0,
        sense_len: 0,
    }
}

/// Runs `f` over `[offset, offset + len)` in bounce-sized pieces.
fn chunks(
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, usize, u64) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(BOUNCE as u64) as usize;
        f(offset.saturating_add(done), n, done)?;
        done = done.saturating_add(n as u64);
    }
    Ok(())
}

fn read(disk: &mut dyn BlockDevice, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
    disk.read(offset, buf).map_err(|_| IoError::Read)
}

fn write(disk: &mut dyn BlockDevice, offset: u64, data: &[u8]) -> Result<(), IoError> {
    disk.write(offset, data).map_err(|_| IoError::Write)
}

/// Performs the operations the connection has no plan for, with `data` the
/// collected Data-Out.
fn perform(disk: &mut dyn BlockDevice, io: &Io, data: &[u8]) -> IoResult {
    let mut bounce = [0u8; BOUNCE];
    let mut miscompare = None;
    let r = match *io {
        Io::Verify {
            offset,
            len,
            data_out_len,
        } => {
            let one_block = (data_out_len as usize) < len as usize;
            chunks(offset, u64::from(len), |off, n, at| {
                let b = bounce.get_mut(..n).ok_or(IoError::Other)?;
                read(disk, off, b)?;
                let start = if one_block {
                    (at as usize) % data.len().max(1)
                } else {
                    at as usize
                };
                let want = data.get(start..start + n).ok_or(IoError::Other)?;
                if miscompare.is_none() {
                    if let Some(i) = scsi::first_mismatch(b, want) {
                        miscompare = Some(at + i as u64);
                    }
                }
                Ok(())
            })
        }
        Io::WriteSame {
            offset,
            blocks,
            data_out_len,
            ..
        } => {
            let block = if data_out_len == 0 {
                bounce.get(..BLOCK).unwrap_or_default()
            } else {
                data.get(..data_out_len as usize).unwrap_or_default()
            };
            let step = block.len().max(1) as u64;
            let mut r = Ok(());
            for i in 0..blocks {
                if let Err(e) = write(disk, offset.saturating_add(i.saturating_mul(step)), block) {
                    r = Err(e);
                    break;
                }
            }
            r
        }
        Io::Copy { src, dst, len, .. } => {
            // Backwards when the destination overlaps the source's tail.
            let backwards = dst > src && dst < src.saturating_add(u64::from(len));
            let len = u64::from(len);
            let mut done = 0u64;
            let mut r = Ok(());
            while done < len {
                let n = (len - done).min(BOUNCE as u64);
                let at = if backwards { len - done - n } else { done };
                let b = bounce.get_mut(..n as usize).unwrap_or_default();
                if let Err(e) = read(disk, src.saturating_add(at), b)
                    .and_then(|()| write(disk, dst.saturating_add(at), b))
                {
                    r = Err(e);
                    break;
                }
                done += n;
            }
            r
        }
        // Fully provisioned: everything is mapped; UNMAP is not offered.
        Io::LbaStatus { .. } | Io::Unmap => Ok(()),
        // Streamed as their Data-Out arrives (see `stream`), or plain I/O.
        Io::CompareAndWrite { .. }
        | Io::OrWrite { .. }
        | Io::Read { .. }
        | Io::Write { .. }
        | Io::Flush => Ok(()),
    };
    match (r, miscompare) {
        (Err(e), _) => IoResult::Error(e),
        (Ok(()), Some(offset)) => IoResult::Miscompare { offset },
        (Ok(()), None) => IoResult::Ok,
    }
}

fn nexus_of(nexus: &Option<NexusInfo>) -> scsi::Nexus<'_> {
    match nexus {
        Some(n) => scsi::Nexus {
            index: n.index,
            initiator: n.initiator.as_str(),
            isid: n.isid,
        },
        // Before admission (cannot carry commands) or after nexus loss.
        None => scsi::Nexus {
            index: u16::MAX,
            initiator: "",
            isid: [0; 6],
        },
    }
}

impl<D: Disks, const TASKS: usize> Glue<'_, D, TASKS> {
    fn slot(&mut self, io: u32) -> Option<&mut Pending> {
        self.state
            .pending
            .iter_mut()
            .flatten()
            .find(|p| p.io_id == io)
    }

    fn plan(&mut self, req: &ScsiRequest<'_>, step: Step, buf: &mut [u8]) -> Plan {
        let io = match step {
            Step::Done(resp) => return complete(resp, buf),
            Step::DataOut { len } => {
                if len as usize > self.collect.len() {
                    // A parameter list longer than this target takes.
                    let sense =
                        Sense::new(SenseKey::IllegalRequest, asc::PARAMETER_LIST_LENGTH_ERROR);
                    return complete(Response::check(sense), buf);
                }
                return Plan::ReceiveParameters { len };
            }
            Step::Io(io) => io,
        };
        let (plan, collect_len) = match io {
            Io::Read { offset, len } => (Plan::Read { offset, len }, None),
            Io::Write { offset, len, fua } => (Plan::Write { offset, len, fua }, None),
            Io::Flush => (Plan::Flush, None),
            Io::Verify {
                offset,
                len,
                data_out_len,
            } => (
                Plan::Write {
                    offset,
                    len: data_out_len,
                    fua: false,
                },
                // BYTCHK 11b: one block compared with every block, kept here.
                (data_out_len < len).then_some(data_out_len),
            ),
            Io::CompareAndWrite { offset, len, .. } => (
                Plan::Write {
                    offset,
                    len: len.saturating_mul(2),
                    fua: false,
                },
                None,
            ),
            Io::WriteSame {
                offset,
                data_out_len,
                ..
            } if data_out_len > 0 => (
                Plan::Write {
                    offset,
                    len: data_out_len,
                    fua: false,
                },
                Some(data_out_len),
            ),
            Io::OrWrite { offset, len, .. } => (
                Plan::Write {
                    offset,
                    len,
                    fua: false,
                },
                None,
            ),
            Io::WriteSame { .. } | Io::LbaStatus { .. } | Io::Copy { .. } | Io::Unmap => {
                (Plan::Flush, None)
            }
        };
        if let Some(n) = collect_len {
            if n as usize > self.collect.len() {
                let sense = Sense::new(SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
                return complete(Response::check(sense), buf);
            }
            if self.state.collector.is_some() {
                return busy();
            }
            self.state.collector = Some(req.io.0);
            self.state.collected = 0;
        }
        let entry = Pending {
            io_id: req.io.0,
            target: req.target,
            lun: req.lun,
            io,
            result: None,
            write_failed: false,
            collects: collect_len.is_some(),
            miscompare: None,
            failed: None,
        };
        match self.state.pending.iter_mut().find(|p| p.is_none()) {
            Some(free) => *free = Some(entry),
            None => {
                if collect_len.is_some() {
                    self.state.collector = None;
                }
                return busy();
            }
        }
        plan
    }

    /// Runs one storage request to its end, synchronously.
    pub(crate) fn storage(&mut self, req: &StorageRequest<'_>) -> Result<(), StorageError> {
        let io = req.io();
        let Some(p) = self.slot(io.0).copied() else {
            return self.direct(req);
        };
        let Some(disk) = self.disks.disk(p.target, p.lun) else {
            return Err(StorageError::NotReady);
        };
        match (*req, p.io) {
            (StorageRequest::Read { .. }, _) => Ok(()),
            (StorageRequest::Write { fua, .. }, Io::Write { .. }) => {
                if p.write_failed {
                    return Err(StorageError::WriteError);
                }
                if fua {
                    disk.flush().map_err(|_| StorageError::WriteError)?;
                }
                Ok(())
            }
            (StorageRequest::Flush { .. }, Io::Flush) => {
                disk.flush().map_err(|_| StorageError::WriteError)
            }
            (_, Io::OrWrite { fua, .. }) | (_, Io::CompareAndWrite { fua, .. }) => {
                let result = match (p.failed, p.miscompare) {
                    (Some(e), _) => IoResult::Error(e),
                    (None, Some(offset)) => IoResult::Miscompare { offset },
                    (None, None) if fua && disk.flush().is_err() => IoResult::Error(IoError::Write),
                    (None, None) => IoResult::Ok,
                };
                if let Some(slot) = self.slot(p.io_id) {
                    slot.result = Some(result);
                }
                Ok(())
            }
            (_, Io::Verify { .. }) if !p.collects => {
                let result = match (p.failed, p.miscompare) {
                    (Some(e), _) => IoResult::Error(e),
                    (None, Some(offset)) => IoResult::Miscompare { offset },
                    (None, None) => IoResult::Ok,
                };
                if let Some(slot) = self.slot(p.io_id) {
                    slot.result = Some(result);
                }
                Ok(())
            }
            (_, io) => {
                let data = if p.collects {
                    self.collect.get(..self.state.collected).unwrap_or_default()
                } else {
                    &[]
                };
                let result = perform(disk, &io, data);
                if let Some(slot) = self.slot(p.io_id) {
                    slot.result = Some(result);
                }
                Ok(())
            }
        }
    }

    fn direct(&mut self, req: &StorageRequest<'_>) -> Result<(), StorageError> {
        match *req {
            StorageRequest::Flush { target, lun, .. } => match self.disks.disk(target, lun) {
                Some(d) => d.flush().map_err(|_| StorageError::WriteError),
                None => Err(StorageError::NotReady),
            },
            StorageRequest::WriteSame {
                target,
                lun,
                offset,
                len,
                pattern,
                ..
            } => {
                let Some(d) = self.disks.disk(target, lun) else {
                    return Err(StorageError::NotReady);
                };
                let bs = pattern.len().max(1) as u64;
                let io = Io::WriteSame {
                    offset,
                    blocks: len / bs,
                    data_out_len: pattern.len() as u32,
                    unmap: false,
                };
                match perform(d, &io, pattern) {
                    IoResult::Error(e) => Err(to_storage_error(e)),
                    _ => Ok(()),
                }
            }
            StorageRequest::Unmap { target, lun, .. }
            | StorageRequest::Read { target, lun, .. }
            | StorageRequest::Write { target, lun, .. } => match self.disks.disk(target, lun) {
                Some(_) => Ok(()),
                None => Err(StorageError::NotReady),
            },
            StorageRequest::Release { .. } => Ok(()),
        }
    }

    /// The task using `io` is over.
    pub(crate) fn release(&mut self, io: IoId) {
        if self.state.collector == Some(io.0) {
            self.state.collector = None;
            self.state.collected = 0;
        }
        for p in self.state.pending.iter_mut() {
            if p.is_some_and(|p| p.io_id == io.0) {
                *p = None;
            }
        }
    }
}

/// Handles a piece of Data-Out of a streamed operation (see the module
/// docs): `Some((first new miscompare, failure))`, or `None` for a plain
/// write. `at` is the piece's absolute offset on the LUN.
fn stream(
    disk: &mut dyn BlockDevice,
    p: &Pending,
    at: u64,
    data: &[u8],
) -> Option<(Option<u64>, Option<IoError>)> {
    let mut bounce = [0u8; BOUNCE];
    let mut compare = |disk: &mut dyn BlockDevice, start: u64, disk_at: u64, data: &[u8]| {
        // `start`: offset of `data` from the start of the compared range.
        let mut found = None;
        let r = chunks(disk_at, data.len() as u64, |off, n, done| {
            let b = bounce.get_mut(..n).ok_or(IoError::Other)?;
            read(disk, off, b)?;
            let want = data
                .get(done as usize..done as usize + n)
                .ok_or(IoError::Other)?;
            if found.is_none() {
                if let Some(i) = scsi::first_mismatch(b, want) {
                    found = Some(start + done + i as u64);
                }
            }
            Ok(())
        });
        (found, r.err())
    };
    match p.io {
        Io::OrWrite { .. } => {
            let mut or = [0u8; BOUNCE];
            let r = chunks(at, data.len() as u64, |off, n, done| {
                let b = or.get_mut(..n).ok_or(IoError::Other)?;
                read(disk, off, b)?;
                let src = data
                    .get(done as usize..done as usize + n)
                    .ok_or(IoError::Other)?;
                for (x, y) in b.iter_mut().zip(src) {
                    *x |= *y;
                }
                write(disk, off, b)
            });
            Some((None, r.err()))
        }
        Io::Verify { offset, .. } if !p.collects => {
            Some(compare(disk, at.saturating_sub(offset), at, data))
        }
        Io::CompareAndWrite { offset, len, .. } => {
            if p.failed.is_some() {
                return Some((None, None));
            }
            let pos = at.saturating_sub(offset);
            let len = u64::from(len);
            // The part of this piece in the compare half, then the write half.
            let split = usize::try_from(len.saturating_sub(pos))
                .unwrap_or(usize::MAX)
                .min(data.len());
            let (cmp, new) = data.split_at(split);
            let (mut found, mut failed) = (None, None);
            if !cmp.is_empty() {
                (found, failed) = compare(disk, pos, at, cmp);
            }
            if !new.is_empty() && p.miscompare.is_none() && found.is_none() && failed.is_none() {
                let dst = offset.saturating_add(pos.saturating_add(split as u64) - len);
                failed = write(disk, dst, new).err();
            }
            Some((found, failed))
        }
        _ => None,
    }
}

fn absent(cdb: &[u8], buf: &mut [u8]) -> Step {
    scsi::lun_absent_command(cdb, buf)
}

impl<D: Disks, const TASKS: usize> Backend for Glue<'_, D, TASKS> {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let nexus = nexus_of(&self.state.nexus);
        let step = match self.scsi.get_mut(req.target) {
            Some(t) => t.command(req.lun, &nexus, req.cdb, req.edtl, buf),
            None => absent(req.cdb, buf),
        };
        self.plan(req, step, buf)
    }

    fn scsi_resume(&mut self, req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        match why {
            Resume::Parameters { len } => {
                let n = (len as usize).min(buf.len()).min(self.collect.len());
                if let (Some(dst), Some(src)) = (self.collect.get_mut(..n), buf.get(..n)) {
                    dst.copy_from_slice(src);
                }
                let nexus = nexus_of(&self.state.nexus);
                let params = self.collect.get(..n).unwrap_or_default();
                let step = match self.scsi.get_mut(req.target) {
                    Some(t) => t.data_out(req.lun, &nexus, req.cdb, params, buf),
                    None => absent(req.cdb, buf),
                };
                self.plan(req, step, buf)
            }
            Resume::Storage(result) => {
                let Some(p) = self.slot(req.io.0).copied() else {
                    let sense = Sense::new(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE);
                    return complete(Response::check(sense), buf);
                };
                let outcome = match result {
                    Err(e) => IoResult::Error(from_storage_error(e)),
                    Ok(()) => p.result.unwrap_or(IoResult::Ok),
                };
                let resp = match self.scsi.get_mut(p.target) {
                    Some(t) => t.complete(p.lun, &p.io, outcome, buf),
                    None => Response::check(Sense::new(
                        SenseKey::IllegalRequest,
                        asc::LOGICAL_UNIT_NOT_SUPPORTED,
                    )),
                };
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
        let Some(t) = self.scsi.get_mut(target) else {
            return TmfOutcome::NoSuchLun;
        };
        match function {
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
        }
    }

    fn nexus_lost(&mut self, nexus: u64) {
        let Some(info) = self.state.nexus.take_if(|n| n.id == nexus) else {
            return;
        };
        if let Some(t) = info.target.and_then(|i| self.scsi.get_mut(i)) {
            t.nexus_lost(info.index);
        }
    }

    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        let Some(p) = self.slot(chunk.io.0).copied() else {
            return;
        };
        if p.collects {
            if self.state.collector == Some(chunk.io.0) {
                let at = self.state.collected;
                let end = at.saturating_add(chunk.data.len());
                if let Some(dst) = self.collect.get_mut(at..end) {
                    dst.copy_from_slice(chunk.data);
                    self.state.collected = end;
                }
            }
            return;
        }
        let Some(disk) = self.disks.disk(chunk.target, chunk.lun) else {
            if let Some(p) = self.slot(chunk.io.0) {
                p.write_failed = true;
                p.failed = Some(IoError::Other);
            }
            return;
        };
        if let Some(streamed) = stream(disk, &p, chunk.offset, chunk.data) {
            if let Some(slot) = self.slot(chunk.io.0) {
                let (miscompare, failed) = streamed;
                slot.miscompare = slot.miscompare.or(miscompare);
                slot.failed = slot.failed.or(failed);
            }
            return;
        }
        let failed = disk.write(chunk.offset, chunk.data).is_err();
        if failed {
            if let Some(p) = self.slot(chunk.io.0) {
                p.write_failed = true;
            }
        }
    }

    fn read_data(&mut self, chunk: ReadChunk<'_>) {
        let ok = match self.disks.disk(chunk.target, chunk.lun) {
            Some(d) => d.read(chunk.offset, chunk.dst).is_ok(),
            None => false,
        };
        if !ok {
            // The status was decided when the read completed; zeros beat garbage.
            chunk.dst.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    extern crate std;
    use super::*;
    use crate::storage::RamDisk;
    use std::{vec, vec::Vec};

    fn pending(io: Io) -> Pending {
        Pending {
            io_id: 1,
            target: 0,
            lun: 0,
            io,
            result: None,
            write_failed: false,
            collects: false,
            miscompare: None,
            failed: None,
        }
    }

    /// Feeds `data` in pieces of `piece` bytes, as Data-Out PDUs would.
    fn feed(disk: &mut RamDisk<'_>, p: &mut Pending, base: u64, data: &[u8], piece: usize) {
        for (i, c) in data.chunks(piece).enumerate() {
            let at = base + (i * piece) as u64;
            let (m, f) = stream(disk, p, at, c).unwrap();
            p.miscompare = p.miscompare.or(m);
            p.failed = p.failed.or(f);
        }
    }

    #[test]
    fn compare_and_write_writes_only_when_everything_matched() {
        let mut bytes = vec![7u8; 8192];
        let mut disk = RamDisk(&mut bytes);
        let io = Io::CompareAndWrite {
            offset: 1024,
            len: 1024,
            fua: false,
        };
        // Matching compare half, then the new data; pieces straddle the halves.
        let mut data = vec![7u8; 1024];
        data.extend(vec![9u8; 1024]);
        let mut p = pending(io);
        feed(&mut disk, &mut p, 1024, &data, 700);
        assert_eq!((p.miscompare, p.failed), (None, None));
        assert!(disk.0[1024..2048].iter().all(|&b| b == 9));
        assert!(disk.0[2048..].iter().all(|&b| b == 7));

        // A difference at byte 600 of the range: nothing is written.
        let mut data = vec![9u8; 1024];
        data[600] = 0;
        data.extend(vec![5u8; 1024]);
        let mut p = pending(io);
        feed(&mut disk, &mut p, 1024, &data, 512);
        assert_eq!(p.miscompare, Some(600));
        assert!(disk.0[1024..2048].iter().all(|&b| b == 9));
    }

    #[test]
    fn orwrite_and_verify_stream() {
        let mut bytes = vec![0x0fu8; 8192];
        let mut disk = RamDisk(&mut bytes);
        let mut p = pending(Io::OrWrite {
            offset: 4096,
            len: 2048,
            fua: false,
        });
        feed(&mut disk, &mut p, 4096, &[0xf0u8; 2048], 1000);
        assert_eq!(p.failed, None);
        assert!(disk.0[4096..6144].iter().all(|&b| b == 0xff));
        assert!(disk.0[..4096].iter().all(|&b| b == 0x0f));

        let mut p = pending(Io::Verify {
            offset: 4096,
            len: 2048,
            data_out_len: 2048,
        });
        let mut want = vec![0xffu8; 2048];
        want[1500] = 1;
        feed(&mut disk, &mut p, 4096, &want, 512);
        assert_eq!(p.miscompare, Some(1500));
    }

    #[test]
    fn collected_write_same_and_overlapping_copy() {
        let mut bytes = vec![0u8; 8192];
        let mut disk = RamDisk(&mut bytes);
        let block = [3u8; 512];
        let io = Io::WriteSame {
            offset: 512,
            blocks: 4,
            data_out_len: 512,
            unmap: false,
        };
        assert_eq!(perform(&mut disk, &io, &block), IoResult::Ok);
        assert!(disk.0[512..2560].iter().all(|&b| b == 3));
        assert!(disk.0[2560..].iter().all(|&b| b == 0));
        for (i, b) in disk.0.iter_mut().enumerate().take(8192) {
            *b = (i / 512) as u8;
        }
        let copy = Io::Copy {
            src: 0,
            dst: 512,
            len: 6000,
            nexus: 0,
            list_id: None,
        };
        assert_eq!(perform(&mut disk, &copy, &[]), IoResult::Ok);
        let want: Vec<u8> = (0..6000).map(|i| (i / 512) as u8).collect();
        assert_eq!(&disk.0[512..6512], &want[..]);
        // Out of range: an error, not a panic.
        let far = Io::WriteSame {
            offset: 8000,
            blocks: 2,
            data_out_len: 512,
            unmap: false,
        };
        assert!(matches!(
            perform(&mut disk, &far, &block),
            IoResult::Error(_)
        ));
    }
}
