//! One logical unit: command dispatch, unit attentions, block commands.

use super::cdb::{opcode as op, Bytes, Writer};
use super::pr::Reservations;
use super::sense::{asc, Sense, SenseKey};
use super::status::{bad_cdb, bad_param, done, illegal, ua, CmdResult, Fail};
use super::xcopy::{self, CopyRecord};
use super::{Io, IoError, IoResult, LunConfig, Nexus, Response, Step};

/// Counters for the host's `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LunStats {
    /// Commands received.
    pub commands: u64,
    /// Commands that ended in CHECK CONDITION.
    pub check_conditions: u64,
    /// Commands that ended in RESERVATION CONFLICT.
    pub conflicts: u64,
}

/// A logical unit: the SCSI state of one disk.
///
/// `N` is the number of I_T nexus slots ([`Nexus::index`] `< N`; commands
/// from a larger index are served but see no unit attentions and cannot
/// reserve), `R` the number of persistent reservation registrations.
#[derive(Debug, Clone)]
pub struct Lun<const N: usize = 16, const R: usize = 8> {
    pub(crate) cfg: LunConfig,
    /// Pending unit attentions per nexus slot.
    pub(crate) ua: [u16; N],
    /// SPC-2 RESERVE(6)/(10) holder.
    pub(crate) spc2: Option<u16>,
    pub(crate) pr: Reservations<R>,
    /// Control mode page D_SENSE: descriptor-format sense.
    pub(crate) d_sense: bool,
    /// Control mode page SWP: software write protect.
    pub(crate) swp: bool,
    pub(crate) stats: LunStats,
    /// Last EXTENDED COPY status per nexus slot (RECEIVE COPY RESULTS).
    pub(crate) copies: [Option<CopyRecord>; N],
    /// Per nexus slot: how often another initiator's PREEMPT AND ABORT
    /// aborted its tasks (see [`Lun::abort_epoch`]).
    pub(crate) aborts: [u32; N],
}

impl<const N: usize, const R: usize> Lun<N, R> {
    /// A logical unit as after power-on: every nexus slot will first see
    /// UNIT ATTENTION / POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub fn new(cfg: LunConfig) -> Self {
        Lun {
            cfg,
            ua: [ua::POWER_ON; N],
            spc2: None,
            pr: Reservations::new(),
            d_sense: false,
            swp: false,
            stats: LunStats::default(),
            copies: [None; N],
            aborts: [0; N],
        }
    }

    /// Changes whenever PREEMPT AND ABORT aborts the tasks of nexus slot
    /// `index`: a command that saw another value when it started must not
    /// touch the medium any more.
    pub fn abort_epoch(&self, index: u16) -> u32 {
        self.aborts.get(usize::from(index)).copied().unwrap_or(0)
    }

    /// The configuration.
    pub fn config(&self) -> &LunConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> LunStats {
        self.stats
    }

    /// The backing image changed size: new capacity, and every nexus sees
    /// UNIT ATTENTION / CAPACITY DATA HAS CHANGED (2A/09).
    pub fn resize(&mut self, blocks: u64) {
        if blocks != self.cfg.blocks {
            self.cfg.blocks = blocks;
            self.raise_all(ua::CAPACITY_CHANGED, None);
        }
    }

    /// LOGICAL UNIT RESET (or TARGET WARM/COLD RESET): releases the SPC-2
    /// reservation, restores mode pages, and raises 29/03 on every nexus.
    /// Persistent reservations survive (SPC-4 §5.12.10).
    pub fn reset(&mut self) {
        self.spc2 = None;
        self.d_sense = false;
        self.swp = false;
        for slot in self.ua.iter_mut() {
            *slot = (*slot & !ua::RESET_CLASS) | ua::RESET;
        }
    }

    /// The I_T nexus in slot `index` is gone (connection lost, logout,
    /// session reinstated): its SPC-2 reservation is released and the slot
    /// is reset so the next nexus using it starts with 29/07... reported as
    /// a fresh power-on (29/00) since it is a new nexus for the initiator.
    pub fn nexus_lost(&mut self, index: u16) {
        if self.spc2 == Some(index) {
            self.spc2 = None;
        }
        if let Some(slot) = self.ua.get_mut(usize::from(index)) {
            *slot = ua::POWER_ON;
        }
        if let Some(slot) = self.copies.get_mut(usize::from(index)) {
            *slot = None;
        }
    }

    /// Raises `bit` on every nexus slot except `except`.
    pub(crate) fn raise_all(&mut self, bit: u16, except: Option<u16>) {
        for (i, slot) in self.ua.iter_mut().enumerate() {
            if except.is_some_and(|e| usize::from(e) == i) {
                continue;
            }
            *slot |= bit;
        }
    }

    /// Takes the highest-priority pending unit attention of `index`.
    pub(crate) fn take_ua(&mut self, index: u16) -> Option<Sense> {
        let slot = self.ua.get_mut(usize::from(index))?;
        if *slot == 0 {
            return None;
        }
        let bit = 1u16 << slot.trailing_zeros();
        if bit & ua::RESET_CLASS != 0 {
            *slot &= !ua::RESET_CLASS;
        } else {
            *slot &= !bit;
        }
        Some(self.sense(SenseKey::UnitAttention, ua::code(bit)))
    }

    pub(crate) fn sense(&self, key: SenseKey, code: (u8, u8)) -> Sense {
        let mut s = Sense::new(key, code);
        s.descriptor = self.d_sense;
        s
    }

    pub(crate) fn finish_public(&mut self, r: CmdResult) -> Step {
        self.finish(r)
    }

    fn finish(&mut self, r: CmdResult) -> Step {
        match r {
            Ok(step) => step,
            Err(Fail::Check(mut s)) => {
                self.stats.check_conditions = self.stats.check_conditions.wrapping_add(1);
                s.descriptor = self.d_sense;
                Step::Done(Response::check(s))
            }
            Err(Fail::Conflict) => {
                self.stats.conflicts = self.stats.conflicts.wrapping_add(1);
                Step::Done(Response::conflict())
            }
        }
    }

    /// Starts a command. `expected_len` is the initiator's Expected Data
    /// Transfer Length (the layer answers with the real length; residuals
    /// are the transport's), `data_in` receives response data for commands
    /// answered here (4 KiB is enough for every response).
    pub fn command(
        &mut self,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        expected_len: u32,
        data_in: &mut [u8],
    ) -> Step {
        self.stats.commands = self.stats.commands.wrapping_add(1);
        let r = self.dispatch(nexus, Bytes(cdb), expected_len, data_in);
        self.finish(r)
    }

    /// Continues a command that returned [`Step::DataOut`] with its
    /// parameter list `data` (which may be shorter than asked if the
    /// initiator sent less).
    pub fn data_out(
        &mut self,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        data: &[u8],
        data_in: &mut [u8],
    ) -> Step {
        let r = self.dispatch_data_out(nexus, Bytes(cdb), data, data_in);
        let step = self.finish(r);
        // A parameter list never asks for more.
        match step {
            Step::DataOut { .. } => self.finish(Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR))),
            s => s,
        }
    }

    /// Finishes a command after the host performed its [`Io`].
    pub fn complete(&mut self, io: &Io, result: IoResult, data_in: &mut [u8]) -> Response {
        let r = self.complete_inner(io, result, data_in);
        match self.finish(r.map(Step::Done)) {
            Step::Done(resp) => resp,
            _ => Response::check(self.sense(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE)),
        }
    }

    fn complete_inner(
        &mut self,
        io: &Io,
        result: IoResult,
        data_in: &mut [u8],
    ) -> CmdResult<Response> {
        match (io, result) {
            (_, IoResult::Error(e)) => {
                if let Io::Copy { nexus, list_id, .. } = io {
                    xcopy::record(&mut self.copies, *nexus, *list_id, false, 0);
                }
                let (key, code) = match e {
                    IoError::Read => (SenseKey::MediumError, asc::UNRECOVERED_READ_ERROR),
                    IoError::Write => (SenseKey::MediumError, asc::WRITE_ERROR),
                    IoError::NoSpace => (
                        SenseKey::DataProtect,
                        asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
                    ),
                    IoError::Other => (SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE),
                    IoError::Aborted => (
                        SenseKey::AbortedCommand,
                        asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR,
                    ),
                };
                Err(Fail::Check(Sense::new(key, code)))
            }
            (Io::Read { len, .. }, IoResult::Ok) => Ok(Response::good(*len)),
            (
                Io::Copy {
                    len,
                    nexus,
                    list_id,
                    ..
                },
                IoResult::Ok,
            ) => {
                xcopy::record(&mut self.copies, *nexus, *list_id, true, u64::from(*len));
                Ok(Response::good(0))
            }
            (Io::Verify { .. } | Io::CompareAndWrite { .. }, IoResult::Miscompare { offset }) => {
                let mut s = Sense::new(SenseKey::Miscompare, asc::MISCOMPARE_DURING_VERIFY);
                s.information = Some(offset);
                Err(Fail::Check(s))
            }
            (Io::LbaStatus { lba, alloc_len }, IoResult::Ok) => {
                let blocks = self.cfg.blocks.saturating_sub(*lba);
                Ok(self.lba_status_data(*lba, blocks, false, *alloc_len, data_in))
            }
            (
                Io::LbaStatus { lba, alloc_len },
                IoResult::LbaStatus {
                    deallocated,
                    blocks,
                },
            ) => {
                let max = self.cfg.blocks.saturating_sub(*lba);
                let blocks = blocks.clamp(1, max.max(1));
                Ok(self.lba_status_data(*lba, blocks, deallocated, *alloc_len, data_in))
            }
            (_, IoResult::Ok) => Ok(Response::good(0)),
            _ => Err(Fail::Check(Sense::new(
                SenseKey::HardwareError,
                asc::INTERNAL_TARGET_FAILURE,
            ))),
        }
    }

    /// GET LBA STATUS parameter data with one descriptor.
    fn lba_status_data(
        &self,
        lba: u64,
        blocks: u64,
        deallocated: bool,
        alloc_len: u32,
        buf: &mut [u8],
    ) -> Response {
        let mut w = Writer::new(buf);
        w.u32(20);
        w.zeros(4);
        w.u64(lba);
        w.u32(u32::try_from(blocks).unwrap_or(u32::MAX));
        w.u8(u8::from(deallocated));
        w.zeros(3);
        Response::good(w.data_len(alloc_len))
    }

    /// Whether writes are refused, and with which sense.
    pub(crate) fn write_protect(&self) -> CmdResult<()> {
        if self.cfg.read_only {
            Err(Fail::Check(Sense::new(
                SenseKey::DataProtect,
                asc::WRITE_PROTECTED,
            )))
        } else if self.swp {
            Err(Fail::Check(Sense::new(SenseKey::DataProtect, (0x27, 0x02))))
        } else {
            Ok(())
        }
    }

    fn dispatch(
        &mut self,
        nexus: &Nexus<'_>,
        cdb: Bytes<'_>,
        expected_len: u32,
        buf: &mut [u8],
    ) -> CmdResult {
        let Some(&opc) = cdb.0.first() else {
            return Err(illegal(asc::INVALID_COMMAND_OPERATION_CODE));
        };
        // INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor clear
        // unit attentions (SAM-5 §5.14); REQUEST SENSE returns them as data.
        if !matches!(opc, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE) {
            if let Some(s) = self.take_ua(nexus.index) {
                return Err(Fail::Check(s));
            }
        }
        if !self.opcode_supported(opc) {
            return Err(illegal(asc::INVALID_COMMAND_OPERATION_CODE));
        }
        self.check_reservations(nexus, cdb)?;
        match opc {
            op::TEST_UNIT_READY => Ok(done(0)),
            op::INQUIRY => self.inquiry(cdb, buf),
            op::REQUEST_SENSE => self.request_sense(nexus, cdb, buf),
            op::READ_CAPACITY_10 => self.read_capacity_10(cdb, buf),
            op::SERVICE_ACTION_IN_16 => match cdb.u8(1) & 0x1f {
                op::SAI_READ_CAPACITY_16 => self.read_capacity_16(cdb, buf),
                op::SAI_GET_LBA_STATUS => self.get_lba_status(cdb, buf),
                _ => Err(bad_cdb(1, Some(4))),
            },
            op::MAINTENANCE_IN => match cdb.u8(1) & 0x1f {
                op::MI_REPORT_SUPPORTED_OPCODES => self.report_supported_opcodes(cdb, buf),
                _ => Err(bad_cdb(1, Some(4))),
            },
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => self.read(cdb),
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => self.write(cdb, false),
            op::WRITE_AND_VERIFY_10 | op::WRITE_AND_VERIFY_12 | op::WRITE_AND_VERIFY_16 => {
                self.write(cdb, true)
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => self.verify(cdb),
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => self.sync_cache(cdb),
            op::PRE_FETCH_10 | op::PRE_FETCH_16 => self.prefetch(cdb),
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => self.write_same(cdb, expected_len),
            op::UNMAP => self.unmap(cdb),
            op::SANITIZE => self.sanitize(cdb),
            op::COMPARE_AND_WRITE => self.compare_and_write(cdb, expected_len),
            op::ORWRITE_16 => self.orwrite(cdb),
            op::EXTENDED_COPY => xcopy::extended_copy(cdb),
            op::RECEIVE_COPY_RESULTS => xcopy::receive_copy_results(&self.copies, nexus, cdb, buf),
            op::READ_DEFECT_DATA_10 | op::READ_DEFECT_DATA_12 => self.read_defect_data(cdb, buf),
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => self.mode_sense(cdb, buf),
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => self.mode_select(cdb),
            op::PERSISTENT_RESERVE_IN => self.pr.persistent_reserve_in(cdb, buf),
            op::PERSISTENT_RESERVE_OUT => Reservations::<R>::persistent_reserve_out(cdb),
            op::START_STOP_UNIT => self.start_stop_unit(cdb),
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => Ok(done(0)),
            op::RESERVE_6 | op::RESERVE_10 => self.reserve_spc2(nexus, cdb),
            op::RELEASE_6 | op::RELEASE_10 => self.release_spc2(nexus, cdb),
            _ => Err(illegal(asc::INVALID_COMMAND_OPERATION_CODE)),
        }
    }

    fn dispatch_data_out(
        &mut self,
        nexus: &Nexus<'_>,
        cdb: Bytes<'_>,
        data: &[u8],
        buf: &mut [u8],
    ) -> CmdResult {
        let _ = buf;
        match cdb.u8(0) {
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => self.mode_select_data(nexus, cdb, data),
            op::PERSISTENT_RESERVE_OUT => self.pr.persistent_reserve_out_data(
                &mut self.ua,
                &mut self.aborts,
                nexus,
                cdb,
                data,
            ),
            op::UNMAP if self.cfg.thin_provisioning => self.unmap_data(data),
            op::EXTENDED_COPY => self.extended_copy_data(nexus, data),
            _ => Err(illegal(asc::INVALID_COMMAND_OPERATION_CODE)),
        }
    }

    /// SPC-2 and persistent reservation access checks.
    fn check_reservations(&self, nexus: &Nexus<'_>, cdb: Bytes<'_>) -> CmdResult<()> {
        let opc = cdb.u8(0);
        if let Some(holder) = self.spc2 {
            if holder != nexus.index {
                let allowed = match opc {
                    op::INQUIRY
                    | op::REPORT_LUNS
                    | op::REQUEST_SENSE
                    | op::RELEASE_6
                    | op::RELEASE_10 => true,
                    op::PREVENT_ALLOW_MEDIUM_REMOVAL => cdb.u8(4) & 3 == 0,
                    op::MAINTENANCE_IN => true,
                    _ => false,
                };
                if !allowed {
                    return Err(Fail::Conflict);
                }
            }
        }
        self.pr.check(nexus, cdb)
    }

    fn start_stop_unit(&self, cdb: Bytes<'_>) -> CmdResult {
        // A disk that is always spinning: power conditions and START are
        // accepted; there is no medium to eject.
        if cdb.bit(4, 1) && !cdb.bit(4, 0) && cdb.u8(4) >> 4 == 0 {
            return Err(bad_cdb(4, Some(1)));
        }
        Ok(done(0))
    }

    fn write_same(&self, cdb: Bytes<'_>, expected_len: u32) -> CmdResult {
        let sixteen = cdb.u8(0) == op::WRITE_SAME_16;
        let flags = cdb.u8(1);
        let (lba, blocks, len_byte) = if sixteen {
            (cdb.u64(2), u64::from(cdb.u32(10)), 10)
        } else {
            (u64::from(cdb.u32(2)), u64::from(cdb.u16(7)), 7)
        };
        if flags >> 5 != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        if flags & 0x10 != 0 {
            // ANCHOR: ANC_SUP is 0
            return Err(bad_cdb(1, Some(4)));
        }
        if flags & 0x06 != 0 {
            // PBDATA / LBDATA (obsolete)
            return Err(bad_cdb(1, Some(2)));
        }
        let unmap = flags & 0x08 != 0;
        let ndob = sixteen && flags & 0x01 != 0;
        if unmap && !self.cfg.thin_provisioning {
            return Err(bad_cdb(1, Some(3)));
        }
        self.write_protect()?;
        self.check_range(lba, blocks)?;
        // WSNZ = 0: zero blocks means "from LBA to the last block".
        let blocks = if blocks == 0 {
            self.cfg.blocks.saturating_sub(lba)
        } else {
            blocks
        };
        let max = self.cfg.max_write_same_blocks;
        if max != 0 && blocks > max {
            return Err(bad_cdb(len_byte, None));
        }
        let data_out_len = if ndob { 0 } else { self.cfg.block_size };
        if expected_len != data_out_len {
            // The Data-Out must be exactly one block (or nothing with NDOB).
            return Err(bad_cdb(len_byte, None));
        }
        if blocks == 0 {
            return Ok(done(0));
        }
        let (offset, _) = self.bytes_of(lba, 1)?;
        Ok(Step::Io(Io::WriteSame {
            offset,
            blocks,
            data_out_len,
            unmap,
        }))
    }

    /// SANITIZE BLOCK ERASE on a thin LUN: every block is deallocated (reads
    /// return zeros afterwards, WABEREQ 01b). The operation completes before
    /// status, with or without IMMED. Other service actions are refused.
    fn sanitize(&self, cdb: Bytes<'_>) -> CmdResult {
        if cdb.bit(1, 6) {
            return Err(bad_cdb(1, Some(6)));
        }
        for byte in 2..7u16 {
            if cdb.u8(usize::from(byte)) != 0 {
                return Err(bad_cdb(byte, None));
            }
        }
        if cdb.u8(1) & 0x1f != 0x02 {
            return Err(bad_cdb(1, Some(4)));
        }
        if cdb.u16(7) != 0 {
            // BLOCK ERASE takes no parameter list.
            return Err(bad_cdb(7, None));
        }
        self.write_protect()?;
        Ok(Step::Io(Io::WriteSame {
            offset: 0,
            blocks: self.cfg.blocks,
            data_out_len: 0,
            unmap: true,
        }))
    }

    fn unmap(&self, cdb: Bytes<'_>) -> CmdResult {
        if cdb.bit(1, 0) {
            // ANCHOR
            return Err(bad_cdb(1, Some(0)));
        }
        self.write_protect()?;
        let len = u32::from(cdb.u16(7));
        match len {
            0 => Ok(done(0)),
            1..=7 => Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR)),
            _ => Ok(Step::DataOut { len }),
        }
    }

    fn unmap_data(&self, data: &[u8]) -> CmdResult {
        if data.len() < 8 {
            return Err(illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let p = Bytes(data);
        let desc_len = usize::from(p.u16(2)).min(data.len().saturating_sub(8));
        let count = desc_len / 16;
        let max_desc = self
            .cfg
            .max_unmap_descriptors
            .min(LunConfig::MAX_UNMAP_DESCRIPTORS) as usize;
        if count > max_desc {
            return Err(bad_param(2));
        }
        let mut any = false;
        for i in 0..count {
            let at = 8usize.saturating_add(i.saturating_mul(16));
            let lba = p.u64(at);
            let n = u64::from(p.u32(at.saturating_add(8)));
            self.check_range(lba, n)?;
            if n > u64::from(self.cfg.max_unmap_blocks) {
                return Err(bad_param(
                    u16::try_from(at.saturating_add(8)).unwrap_or(u16::MAX),
                ));
            }
            any |= n != 0;
        }
        if any {
            Ok(Step::Io(Io::Unmap))
        } else {
            Ok(done(0))
        }
    }

    fn orwrite(&self, cdb: Bytes<'_>) -> CmdResult {
        let rw = RwCdb::parse(cdb);
        if rw.protect != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        self.write_protect()?;
        self.check_range(rw.lba, rw.blocks)?;
        self.check_transfer(rw.blocks, rw.len_byte)?;
        if rw.blocks == 0 {
            return Ok(done(0));
        }
        let (offset, len) = self.bytes_of(rw.lba, rw.blocks)?;
        Ok(Step::Io(Io::OrWrite {
            offset,
            len,
            fua: rw.fua,
        }))
    }

    /// READ DEFECT DATA (10)/(12): a virtual disk has no defects; the
    /// header echoes the requested lists and format with a zero length.
    fn read_defect_data(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let mut w = Writer::new(buf);
        if cdb.u8(0) == op::READ_DEFECT_DATA_10 {
            let req = cdb.u8(2) & 0x1f;
            w.u8(0);
            w.u8(req);
            w.u16(0);
            Ok(done(w.data_len(u32::from(cdb.u16(7)))))
        } else {
            let req = cdb.u8(1) & 0x1f;
            w.u8(0);
            w.u8(req);
            w.u16(0);
            w.u32(0);
            Ok(done(w.data_len(cdb.u32(6))))
        }
    }

    fn compare_and_write(&self, cdb: Bytes<'_>, expected_len: u32) -> CmdResult {
        if cdb.u8(1) >> 5 != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        let lba = cdb.u64(2);
        let blocks = u64::from(cdb.u8(13));
        self.write_protect()?;
        self.check_range(lba, blocks)?;
        if blocks > u64::from(self.cfg.max_compare_and_write_blocks) {
            return Err(bad_cdb(13, None));
        }
        let (offset, len) = self.bytes_of(lba, blocks)?;
        // The Data-Out must hold exactly the verify and write halves; an
        // initiator that meant 256 blocks wrote 0 in this one-byte field.
        if Some(expected_len) != len.checked_mul(2) {
            return Err(bad_cdb(13, None));
        }
        if blocks == 0 {
            return Ok(done(0));
        }
        Ok(Step::Io(Io::CompareAndWrite {
            offset,
            len,
            fua: cdb.bit(1, 3),
        }))
    }

    fn request_sense(&mut self, nexus: &Nexus<'_>, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let desc = cdb.bit(1, 0);
        let alloc = u32::from(cdb.u8(4));
        let mut s = self
            .take_ua(nexus.index)
            .unwrap_or_else(|| Sense::new(SenseKey::NoSense, asc::NO_ADDITIONAL_SENSE));
        s.descriptor = desc;
        let bytes = s.bytes();
        let mut w = Writer::new(buf);
        w.put(bytes.as_bytes());
        Ok(done(w.data_len(alloc)))
    }

    fn read_capacity_10(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        // PMI is obsolete; with PMI clear the LBA must be zero.
        if !cdb.bit(8, 0) && cdb.u32(2) != 0 {
            return Err(bad_cdb(2, None));
        }
        let last = self.cfg.blocks.saturating_sub(1);
        let mut w = Writer::new(buf);
        w.u32(u32::try_from(last).unwrap_or(u32::MAX));
        w.u32(self.cfg.block_size);
        Ok(done(w.data_len(8)))
    }

    fn read_capacity_16(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let alloc = cdb.u32(10);
        let mut w = Writer::new(buf);
        w.u64(self.cfg.blocks.saturating_sub(1));
        w.u32(self.cfg.block_size);
        w.u8(0); // no protection information
        w.u8(0); // one logical block per physical block
        w.u8(if self.cfg.thin_provisioning { 0xc0 } else { 0 }); // LBPME | LBPRZ
        w.u8(0);
        w.zeros(16);
        Ok(done(w.data_len(alloc)))
    }

    fn get_lba_status(&self, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
        let lba = cdb.u64(2);
        let alloc = cdb.u32(10);
        if lba >= self.cfg.blocks {
            return Err(illegal(asc::LBA_OUT_OF_RANGE));
        }
        if self.cfg.thin_provisioning {
            Ok(Step::Io(Io::LbaStatus {
                lba,
                alloc_len: alloc,
            }))
        } else {
            let r =
                self.lba_status_data(lba, self.cfg.blocks.saturating_sub(lba), false, alloc, buf);
            Ok(Step::Done(r))
        }
    }

    /// Range check: `lba .. lba + blocks` within the capacity.
    pub(crate) fn check_range(&self, lba: u64, blocks: u64) -> CmdResult<()> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.cfg.blocks => Ok(()),
            _ => Err(illegal(asc::LBA_OUT_OF_RANGE)),
        }
    }

    /// Byte offset and length of a block range (already range-checked).
    pub(crate) fn bytes_of(&self, lba: u64, blocks: u64) -> CmdResult<(u64, u32)> {
        let bs = u64::from(self.cfg.block_size);
        let off = lba.checked_mul(bs).ok_or(illegal(asc::LBA_OUT_OF_RANGE))?;
        let len = blocks
            .checked_mul(bs)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(bad_cdb(7, None))?;
        Ok((off, len))
    }

    fn check_transfer(&self, blocks: u64, len_byte: u16) -> CmdResult<()> {
        let max = u64::from(self.cfg.max_transfer_blocks);
        if max != 0 && blocks > max {
            return Err(bad_cdb(len_byte, None));
        }
        Ok(())
    }

    fn read(&self, cdb: Bytes<'_>) -> CmdResult {
        let rw = RwCdb::parse(cdb);
        if rw.protect != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        self.check_range(rw.lba, rw.blocks)?;
        self.check_transfer(rw.blocks, rw.len_byte)?;
        if rw.blocks == 0 {
            return Ok(done(0));
        }
        let (offset, len) = self.bytes_of(rw.lba, rw.blocks)?;
        Ok(Step::Io(Io::Read { offset, len }))
    }

    fn write(&self, cdb: Bytes<'_>, verify: bool) -> CmdResult {
        let rw = RwCdb::parse(cdb);
        if rw.protect != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        self.write_protect()?;
        self.check_range(rw.lba, rw.blocks)?;
        self.check_transfer(rw.blocks, rw.len_byte)?;
        if rw.blocks == 0 {
            return Ok(done(0));
        }
        let (offset, len) = self.bytes_of(rw.lba, rw.blocks)?;
        // WRITE AND VERIFY checks the medium, so the data must be on it.
        Ok(Step::Io(Io::Write {
            offset,
            len,
            fua: rw.fua || verify,
        }))
    }

    fn verify(&self, cdb: Bytes<'_>) -> CmdResult {
        let rw = RwCdb::parse(cdb);
        if rw.protect != 0 {
            return Err(bad_cdb(1, Some(7)));
        }
        let bytchk = (cdb.u8(1) >> 1) & 3;
        if bytchk == 2 {
            return Err(bad_cdb(1, Some(1)));
        }
        self.check_range(rw.lba, rw.blocks)?;
        self.check_transfer(rw.blocks, rw.len_byte)?;
        if rw.blocks == 0 {
            return Ok(done(0));
        }
        let (offset, len) = self.bytes_of(rw.lba, rw.blocks)?;
        // BYTCHK 00b still verifies the medium: the blocks must be readable.
        let data_out_len = match bytchk {
            0 => 0,
            3 => self.cfg.block_size,
            _ => len,
        };
        Ok(Step::Io(Io::Verify {
            offset,
            len,
            data_out_len,
        }))
    }

    fn sync_cache(&self, cdb: Bytes<'_>) -> CmdResult {
        let (lba, blocks) = if cdb.u8(0) == op::SYNCHRONIZE_CACHE_10 {
            (u64::from(cdb.u32(2)), u64::from(cdb.u16(7)))
        } else {
            (cdb.u64(2), u64::from(cdb.u32(10)))
        };
        self.check_range(lba, blocks)?;
        Ok(Step::Io(Io::Flush))
    }

    fn prefetch(&self, cdb: Bytes<'_>) -> CmdResult {
        let (lba, blocks) = if cdb.u8(0) == op::PRE_FETCH_10 {
            (u64::from(cdb.u32(2)), u64::from(cdb.u16(7)))
        } else {
            (cdb.u64(2), u64::from(cdb.u32(10)))
        };
        self.check_range(lba, blocks)?;
        // We keep no cache of our own, so the blocks are never "known to
        // fit": GOOD rather than CONDITION MET (SBC-3 §5.9).
        Ok(done(0))
    }

    fn reserve_spc2(&mut self, nexus: &Nexus<'_>, cdb: Bytes<'_>) -> CmdResult {
        if cdb.u8(0) == op::RESERVE_10 && cdb.u8(1) & 0x13 != 0 {
            // third-party / long id reservations are not supported
            return Err(bad_cdb(1, None));
        }
        if self.pr.active() {
            return Err(Fail::Conflict);
        }
        match self.spc2 {
            Some(h) if h != nexus.index => Err(Fail::Conflict),
            _ => {
                self.spc2 = Some(nexus.index);
                Ok(done(0))
            }
        }
    }

    fn release_spc2(&mut self, nexus: &Nexus<'_>, cdb: Bytes<'_>) -> CmdResult {
        if cdb.u8(0) == op::RELEASE_10 && cdb.u8(1) & 0x13 != 0 {
            return Err(bad_cdb(1, None));
        }
        if self.spc2 == Some(nexus.index) {
            self.spc2 = None;
        }
        Ok(done(0))
    }

    /// EXTENDED COPY's parameter list: the copy inside this logical unit as
    /// one [`Io::Copy`], after the range and write-protect checks.
    fn extended_copy_data(&mut self, nexus: &Nexus<'_>, data: &[u8]) -> CmdResult {
        let Some(seg) = xcopy::parse_list(&self.cfg, data)? else {
            return Ok(done(0));
        };
        if self.check_range(seg.src_lba, seg.blocks).is_err()
            || self.check_range(seg.dst_lba, seg.blocks).is_err()
        {
            return Err(xcopy::copy_aborted(asc::NO_ADDITIONAL_SENSE));
        }
        self.write_protect()?;
        if seg.blocks == 0 {
            xcopy::record(&mut self.copies, nexus.index, seg.list_id, true, 0);
            return Ok(done(0));
        }
        let (src_off, len) = self.bytes_of(seg.src_lba, seg.blocks)?;
        let (dst_off, _) = self.bytes_of(seg.dst_lba, seg.blocks)?;
        xcopy::copy_io(&seg, nexus.index, src_off, dst_off, len)
    }
}

/// The common fields of READ/WRITE/VERIFY/WRITE AND VERIFY CDBs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RwCdb {
    pub lba: u64,
    pub blocks: u64,
    /// RDPROTECT / WRPROTECT / VRPROTECT.
    pub protect: u8,
    pub fua: bool,
    /// CDB byte holding the transfer length (field pointers).
    pub len_byte: u16,
}

impl RwCdb {
    pub fn parse(cdb: Bytes<'_>) -> Self {
        let flags = cdb.u8(1);
        let (lba, blocks, len_byte) = match cdb.u8(0) {
            op::READ_6 | op::WRITE_6 => {
                let n = cdb.u8(4);
                (
                    u64::from(cdb.u24(1) & 0x1f_ffff),
                    if n == 0 { 256 } else { u64::from(n) },
                    4,
                )
            }
            op::READ_10 | op::WRITE_10 | op::WRITE_AND_VERIFY_10 | op::VERIFY_10 => {
                (u64::from(cdb.u32(2)), u64::from(cdb.u16(7)), 7)
            }
            op::READ_12 | op::WRITE_12 | op::WRITE_AND_VERIFY_12 | op::VERIFY_12 => {
                (u64::from(cdb.u32(2)), u64::from(cdb.u32(6)), 6)
            }
            _ => (cdb.u64(2), u64::from(cdb.u32(10)), 10),
        };
        let six = matches!(cdb.u8(0), op::READ_6 | op::WRITE_6);
        RwCdb {
            lba,
            blocks,
            protect: if six { 0 } else { flags >> 5 },
            fua: !six && flags & 0x08 != 0,
            len_byte,
        }
    }
}
