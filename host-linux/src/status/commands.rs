//! What one iSCSI connection counts: SCSI commands by operation code, the
//! time from a storage command's arrival to its end, bytes moved, and the
//! session's first READ.
//!
//! [`Counted`] wraps the storage driver's `Backend` where the connection
//! hands it commands: it only looks at the CDB's first byte and the plan
//! the driver answered, and forwards everything unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sanboot_core::iscsi::pdu::TmfFunction;
use sanboot_core::iscsi::{
    Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageRequest, TmfOutcome, WriteChunk,
};
use sanboot_core::scsi::IoError;

use super::metrics::CommandBatch;

/// Start times kept at most (commands whose end we never hear of, such as
/// a parameter list that was not followed by storage, must not pile up).
const MAX_TRACKED: usize = 1024;

/// Per-connection accounting, added to the shared counters in batches
/// ([`CommandClock::flush`]).
#[derive(Debug, Default)]
pub struct CommandClock {
    started: HashMap<IoId, Instant>,
    batch: CommandBatch,
    /// Bytes for the station's totals since the last flush.
    read: u64,
    written: u64,
    /// The station the session belongs to, once logged in.
    station: Option<String>,
    /// Its byte totals.
    io: Option<Arc<super::store::IoTotals>>,
    first_read_seen: bool,
}

impl CommandClock {
    /// The session logged in as `station` (its traffic is reported there).
    pub fn logged_in(&mut self, station: Option<(String, Arc<super::store::IoTotals>)>) {
        (self.station, self.io) = station.map_or((None, None), |(s, io)| (Some(s), Some(io)));
    }

    /// A storage request the connection polled: counts its bytes and
    /// notes the session's first READ; a `Release` ends the command's clock.
    pub fn storage(&mut self, req: &StorageRequest) {
        match *req {
            StorageRequest::Read { offset, len, .. } => {
                self.bytes(u64::from(len), 0);
                if !self.first_read_seen {
                    self.first_read_seen = true;
                    if let Some(s) = &self.station {
                        super::iscsi_first_read(s, offset, len);
                    }
                }
            }
            StorageRequest::Write { len, .. } => self.bytes(0, u64::from(len)),
            StorageRequest::Release { io } => {
                if let Some(t) = self.started.remove(&io) {
                    self.batch.latency(t.elapsed().as_secs_f64());
                }
            }
            _ => {}
        }
    }

    fn bytes(&mut self, read: u64, written: u64) {
        self.batch.io_bytes(read, written);
        self.read += read;
        self.written += written;
    }

    /// Adds what was counted to the shared counters and the station's
    /// totals. The connection calls it before it waits (so an idle
    /// session's last commands show) and when it ends.
    pub fn flush(&mut self) {
        if let Some(m) = super::metrics() {
            m.add(&mut self.batch);
        }
        if let Some(io) = &self.io {
            if self.read > 0 || self.written > 0 {
                io.add(self.read, self.written);
            }
        }
        (self.read, self.written) = (0, 0);
    }

    fn command(&mut self, io: IoId, opcode: u8, plan: &Plan) {
        self.batch.command(opcode);
        // A command answered at once has no storage and no Release.
        if !matches!(plan, Plan::Complete { .. }) {
            if self.started.len() >= MAX_TRACKED {
                self.started.clear();
            }
            self.started.insert(io, Instant::now());
        }
    }
}

/// The driver, observed: see the module doc.
#[derive(Debug)]
pub struct Counted<'c, B> {
    inner: B,
    clock: &'c mut CommandClock,
}

impl<'c, B: Backend> Counted<'c, B> {
    /// Wraps `inner` for one call into the connection.
    pub fn new(inner: B, clock: &'c mut CommandClock) -> Self {
        Counted { inner, clock }
    }
}

impl<B: Backend> Backend for Counted<'_, B> {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let plan = self.inner.scsi_command(req, buf);
        let opcode = req.cdb.first().copied().unwrap_or(0);
        self.clock.command(req.io, opcode, &plan);
        plan
    }

    fn scsi_resume(&mut self, req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        self.inner.scsi_resume(req, why, buf)
    }

    fn task_management(
        &mut self,
        nexus: u64,
        target: usize,
        lun: u64,
        function: TmfFunction,
    ) -> TmfOutcome {
        self.inner.task_management(nexus, target, lun, function)
    }

    fn nexus_lost(&mut self, nexus: u64) {
        self.inner.nexus_lost(nexus)
    }

    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        self.inner.write_data(chunk)
    }

    fn read_data(&mut self, chunk: ReadChunk<'_>) -> Result<(), IoError> {
        self.inner.read_data(chunk)
    }
}
