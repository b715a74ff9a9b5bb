//! SCSI commands: the plan the backend makes, R2Ts, Data-Out collection
//! and delivery, resuming a command.

use super::*;

impl<const TASKS: usize, const SCRATCH: usize> Connection<TASKS, SCRATCH> {
    pub(super) fn on_command<T: AsRef<[u8]>, B: Backend>(
        &mut self,
        bhs: &Bhs<T>,
        cmd: &ScsiCommand,
        ahs: &[u8],
        data: &[u8],
        backend: &mut B,
    ) {
        if self.discovery {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        if !self.accept_cmd_sn(cmd.immediate, cmd.cmd_sn) {
            return;
        }
        if self.find_task(cmd.itt).is_some() {
            self.reject(RejectReason::TaskInProgress, bhs);
            return;
        }
        let unsolicited_end = if cmd.write {
            if self.params.initial_r2t {
                data.len() as u32
            } else {
                self.params.first_burst_length.min(cmd.edtl)
            }
        } else {
            0
        };
        if !data.is_empty()
            && (!self.params.immediate_data
                || !cmd.write
                || data.len() as u32 > cmd.edtl
                || data.len() as u32 > self.params.first_burst_length)
        {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        let Some(slot) = (0..TASKS).find(|&i| self.slot_free(i)) else {
            // TASK SET FULL.
            self.queue_ctrl(Ctrl::Status {
                itt: cmd.itt,
                status: 0x28,
            });
            return;
        };
        let Some(target) = self.target else {
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        };
        let nexus = self.nexus;
        let self_initial_r2t = self.params.initial_r2t;
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        t.reset();
        t.itt = cmd.itt;
        t.lun_raw = cmd.lun;
        t.lun = decode_lun(cmd.lun);
        t.cmd_sn = cmd.cmd_sn;
        t.edtl = cmd.edtl;
        t.read = cmd.read;
        t.write = cmd.write;
        t.attr = cmd.attr;
        match crate::iscsi::pdu::full_cdb(&cmd.cdb, ahs, &mut t.cdb) {
            Some(n) => t.cdb_len = n,
            None => {
                // Longer than MAX_CDB: let the SCSI layer refuse the opcode
                // from the first 16 bytes (INVALID FIELD / OPCODE).
                t.cdb_len = 16;
            }
        }
        t.unsolicited_open = cmd.write && !cmd.final_bit && !self_initial_r2t;
        t.unsolicited_end = unsolicited_end.max(data.len() as u32);
        t.phase = Phase::Collecting;
        let req = ScsiRequest {
            nexus,
            target,
            lun: t.lun,
            lun_raw: t.lun_raw,
            io: t.io(slot),
            itt: t.itt,
            cdb: t.cdb.get(..t.cdb_len).unwrap_or(&[]),
            edtl: t.edtl,
            read: t.read,
            write: t.write,
            attr: t.attr,
        };
        let plan = backend.scsi_command(&req, &mut t.scratch);
        self.apply_plan(slot, plan, backend);
        // Immediate data is the first piece of the unsolicited burst.
        if !data.is_empty() {
            let is_collecting = self
                .tasks
                .get(slot)
                .is_some_and(|t| matches!(t.phase, Phase::Collecting));
            if is_collecting {
                // R2Ts planned before the immediate data counted are not sent yet: redo them.
                if let Some(t) = self.tasks.get_mut(slot) {
                    t.r2ts.clear();
                    t.next_r2t_offset = 0;
                }
                self.accept_data(slot, 0, data, backend);
                self.after_data(slot, backend);
            }
        }
    }

    pub(super) fn apply_plan<B: Backend>(&mut self, slot: usize, plan: Plan, backend: &mut B) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        // A storage plan means the backend keeps state for this task from
        // now on (the driver's collection buffer, say): it must hear
        // `Release` however the task ends, even before any data arrived or
        // any storage request was polled (ABORT TASK, LUN reset, a bad
        // Data-Out, connection loss).
        if !matches!(plan, Plan::Complete { .. } | Plan::ReceiveParameters { .. }) {
            t.used_storage = true;
        }
        match plan {
            Plan::Complete {
                status,
                data_len,
                sense_len,
            } => {
                let data_len = data_len.min(SCRATCH as u32);
                t.status = status;
                t.sense_at = data_len;
                t.sense_len = sense_len.min((SCRATCH as u32).saturating_sub(data_len));
                if t.read {
                    let sent = data_len.min(t.edtl);
                    t.residual = Residual::of(t.edtl, data_len);
                    t.data_in_len = sent;
                    t.phase = if sent > 0 {
                        Phase::DataIn(Source::Scratch)
                    } else {
                        Phase::Respond
                    };
                } else {
                    // A write plan already fixed the residual; otherwise the
                    // command consumed no Data-Out at all.
                    if !t.residual_fixed {
                        t.residual = Residual::of(if t.write { t.edtl } else { 0 }, 0);
                    }
                    t.data_in_len = 0;
                    t.phase = Phase::Respond;
                }
            }
            Plan::Read { offset, len } => {
                let sent = if t.read { len.min(t.edtl) } else { 0 };
                t.residual = Residual::of(if t.read { t.edtl } else { 0 }, len);
                t.data_in_len = sent;
                t.status = 0;
                t.phase = if sent == 0 {
                    Phase::Respond
                } else {
                    Phase::StorageQueued(StorageOp::Read { offset, len: sent })
                };
            }
            Plan::Write { offset, len, fua } => {
                let edtl = if t.write { t.edtl } else { 0 };
                // SPDTL > EDTL: process normally but transfer (and write)
                // only EDTL bytes, with an overflow residual (FCP-4 option a,
                // what libiscsi's iSCSIResiduals suite checks).
                t.residual = Residual::of(edtl, len);
                t.residual_fixed = true;
                let len = len.min(edtl);
                t.status = 0;
                if len == 0 {
                    t.phase = Phase::StorageQueued(StorageOp::Write {
                        offset,
                        len: 0,
                        fua,
                    });
                    return;
                }
                t.sink = Sink::Storage { offset, fua };
                t.xfer_len = len;
                t.phase = Phase::Collecting;
                self.schedule_r2ts(slot);
            }
            Plan::ReceiveParameters { len } => {
                let edtl = if t.write { t.edtl } else { 0 };
                t.residual = Residual::of(edtl, len);
                t.residual_fixed = true;
                let len = len.min(edtl).min(SCRATCH as u32);
                t.sink = Sink::Scratch;
                t.xfer_len = len;
                t.phase = Phase::Collecting;
                if len == 0 {
                    self.finish_collect(slot, backend);
                } else {
                    self.schedule_r2ts(slot);
                }
            }
            Plan::Flush => t.phase = Phase::StorageQueued(StorageOp::Flush),
        }
    }

    /// Plan R2Ts for the solicited part of a write.
    pub(super) fn schedule_r2ts(&mut self, slot: usize) {
        let max_outstanding = usize::from(self.params.max_outstanding_r2t).clamp(1, MAX_R2T);
        let max_burst = self.params.max_burst_length.max(512);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        if !matches!(t.phase, Phase::Collecting) || t.unsolicited_open {
            return;
        }
        if t.next_r2t_offset < t.wire_offset {
            t.next_r2t_offset = t.wire_offset;
        }
        while t.r2ts.len() < max_outstanding && t.next_r2t_offset < t.xfer_len {
            let len = (t.xfer_len - t.next_r2t_offset).min(max_burst);
            let ttt = self.next_ttt;
            self.next_ttt = self.next_ttt.wrapping_add(1);
            if self.next_ttt == RESERVED_TAG {
                self.next_ttt = 1;
            }
            let r = R2tState {
                ttt,
                offset: t.next_r2t_offset,
                len,
                sent: false,
            };
            if t.r2ts.push_back(r).is_err() {
                break;
            }
            t.next_r2t_offset += len;
        }
    }

    /// Deliver in-order Data-Out bytes at `offset` to the task's sink.
    pub(super) fn accept_data<B: Backend>(
        &mut self,
        slot: usize,
        offset: u32,
        data: &[u8],
        backend: &mut B,
    ) {
        let target = self.target.unwrap_or(0);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let end = offset.saturating_add(data.len() as u32);
        t.wire_offset = end;
        // Keep only what the command consumes; the rest (EDTL > SPDTL) is dropped.
        let keep = t.xfer_len.saturating_sub(offset).min(data.len() as u32) as usize;
        let Some(kept) = data.get(..keep) else {
            return;
        };
        if kept.is_empty() {
            return;
        }
        match t.sink {
            Sink::Storage { offset: base, .. } => {
                // The host may buffer this: it hears `Release` when the task ends.
                t.used_storage = true;
                backend.write_data(WriteChunk {
                    io: t.io(slot),
                    target,
                    lun: t.lun,
                    offset: base + u64::from(offset),
                    data: kept,
                })
            }
            Sink::Scratch => {
                let at = offset as usize;
                if let Some(d) = t.scratch.get_mut(at..at + kept.len()) {
                    d.copy_from_slice(kept);
                }
            }
        }
    }

    /// After data arrived: finish the collection or ask for more.
    pub(super) fn after_data<B: Backend>(&mut self, slot: usize, backend: &mut B) {
        let Some(t) = self.tasks.get(slot) else {
            return;
        };
        if !matches!(t.phase, Phase::Collecting) {
            return;
        }
        if t.wire_offset >= t.xfer_len {
            self.finish_collect(slot, backend);
        } else {
            self.schedule_r2ts(slot);
        }
    }

    pub(super) fn finish_collect<B: Backend>(&mut self, slot: usize, backend: &mut B) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        t.r2ts.clear();
        match t.sink {
            Sink::Storage { offset, fua } => {
                t.phase = Phase::StorageQueued(StorageOp::Write {
                    offset,
                    len: t.xfer_len,
                    fua,
                });
            }
            Sink::Scratch => {
                let len = t.xfer_len;
                self.resume(slot, Resume::Parameters { len }, backend);
            }
        }
    }

    pub(super) fn resume<B: Backend>(&mut self, slot: usize, why: Resume, backend: &mut B) {
        let nexus = self.nexus;
        let target = self.target.unwrap_or(0);
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let req = ScsiRequest {
            nexus,
            target,
            lun: t.lun,
            lun_raw: t.lun_raw,
            io: t.io(slot),
            itt: t.itt,
            cdb: t.cdb.get(..t.cdb_len).unwrap_or(&[]),
            edtl: t.edtl,
            read: t.read,
            write: t.write,
            attr: t.attr,
        };
        let plan = backend.scsi_resume(&req, why, &mut t.scratch);
        self.apply_plan(slot, plan, backend);
    }

    pub(super) fn on_data_out<B: Backend>(&mut self, d: &DataOut, data: &[u8], backend: &mut B) {
        let Some(slot) = self.find_task(d.itt) else {
            // Late unsolicited data after an early status, or an aborted task.
            self.stats.stray_data_out += 1;
            return;
        };
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        if !matches!(t.phase, Phase::Collecting) {
            self.stats.stray_data_out += 1;
            return;
        }
        // A Data-Out sequence error ends the command (ERL 0 cannot recover
        // it) but not the connection: CHECK CONDITION, ABORTED COMMAND /
        // DATA PHASE ERROR. Later Data-Out for it is ignored as stray.
        let end = d.buffer_offset.saturating_add(data.len() as u32);
        let ok = if d.buffer_offset != t.wire_offset || data.is_empty() {
            false
        } else if d.ttt == RESERVED_TAG {
            // Unsolicited burst.
            t.unsolicited_open && d.data_sn == t.unsolicited_data_sn && end <= t.unsolicited_end
        } else {
            t.r2ts.front().is_some_and(|r| {
                r.sent
                    && d.ttt == r.ttt
                    && d.data_sn == t.seq_data_sn
                    && end <= r.offset + r.len
                    && (!d.final_bit || end == r.offset + r.len)
            })
        };
        if !ok {
            self.stats.data_sequence_errors += 1;
            t.check_condition(0x0b, 0x4b, 0x00);
            return;
        }
        if d.ttt == RESERVED_TAG {
            t.unsolicited_data_sn = t.unsolicited_data_sn.wrapping_add(1);
            if d.final_bit {
                t.unsolicited_open = false;
            }
        } else {
            t.seq_data_sn = t.seq_data_sn.wrapping_add(1);
            if d.final_bit {
                let _ = t.r2ts.pop_front();
                t.seq_data_sn = 0;
            }
        }
        self.accept_data(slot, d.buffer_offset, data, backend);
        let unsolicited_open = self.tasks.get(slot).is_some_and(|t| t.unsolicited_open);
        let done = self
            .tasks
            .get(slot)
            .is_some_and(|t| t.wire_offset >= t.xfer_len);
        if done || !unsolicited_open {
            self.after_data(slot, backend);
        }
    }
}
