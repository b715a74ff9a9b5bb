//! Storage requests handed to the host and their completions.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
    /// The next storage request for the host, if any. Each `Read`, `Write`
    /// and `Flush` must be answered once with
    /// [`Connection::complete_storage`] (now or later, in any order).
    #[must_use]
    pub fn poll_storage(&mut self) -> Option<StorageRequest> {
        if let Some(io) = self.releases.pop_front() {
            if let Some(q) = self.release_queued.get_mut(io.slot()) {
                *q = false;
            }
            return Some(StorageRequest::Release { io });
        }
        let target = self.target.unwrap_or(0);
        let slot = self
            .tasks
            .iter()
            .position(|t| matches!(t.phase, Phase::StorageQueued(_)))?;
        let t = self.tasks.get_mut(slot)?;
        let Phase::StorageQueued(op) = t.phase else {
            return None;
        };
        t.phase = Phase::StorageBusy(op);
        t.used_storage = true;
        let io = t.io(slot);
        let lun = t.lun;
        Some(match op {
            StorageOp::Read { offset, len } => StorageRequest::Read {
                io,
                target,
                lun,
                offset,
                len,
            },
            StorageOp::Write { offset, len, fua } => StorageRequest::Write {
                io,
                target,
                lun,
                offset,
                len,
                fua,
            },
            StorageOp::Flush => StorageRequest::Flush { io, target, lun },
        })
    }

    /// The host finished the storage request `io`.
    pub fn complete_storage<B: Backend>(
        &mut self,
        now: Instant,
        io: IoId,
        result: Result<(), crate::scsi::IoError>,
        backend: &mut B,
    ) {
        let _ = now;
        let slot = io.slot();
        let Some(t) = self.tasks.get_mut(slot) else {
            self.stats.stray_completions += 1;
            return;
        };
        if t.generation != io.generation() {
            self.stats.stray_completions += 1;
            return;
        }
        match t.phase {
            Phase::Aborted => self.end_task(slot),
            Phase::StorageBusy(StorageOp::Read { offset, .. }) if result.is_ok() => {
                t.phase = Phase::DataIn(Source::Storage { offset });
            }
            Phase::StorageBusy(_) => {
                t.data_in_len = 0;
                self.resume(slot, Resume::Storage(result), backend);
            }
            _ => self.stats.stray_completions += 1,
        }
    }
}
