//! A target's logical units, REPORT LUNS, and commands to absent LUNs.

use super::cdb::{opcode as op, Bytes, Writer};
use super::sense::{asc, Sense, SenseKey};
use super::status::{bad_cdb, done, illegal, CmdResult, Fail};
use super::{Io, IoResult, Lun, LunConfig, Nexus, Response, Step};

/// The LUN table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFull;

/// The logical units of one iSCSI target, by LUN number.
///
/// `L` LUNs at most; `N` and `R` as in [`Lun`].
#[derive(Debug, Clone)]
pub struct Target<const L: usize = 8, const N: usize = 16, const R: usize = 8> {
    luns: heapless::Vec<(u64, Lun<N, R>), L>,
}

impl<const L: usize, const N: usize, const R: usize> Default for Target<L, N, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const L: usize, const N: usize, const R: usize> Target<L, N, R> {
    /// A target with no LUNs.
    pub const fn new() -> Self {
        Target {
            luns: heapless::Vec::new(),
        }
    }

    /// Adds (or replaces) LUN `number`. Other LUNs' nexuses see REPORTED
    /// LUNS DATA HAS CHANGED.
    pub fn add_lun(&mut self, number: u64, cfg: LunConfig) -> Result<(), TargetFull> {
        if let Some((_, lun)) = self.luns.iter_mut().find(|(n, _)| *n == number) {
            *lun = Lun::new(cfg);
            return Ok(());
        }
        let had = !self.luns.is_empty();
        self.luns
            .push((number, Lun::new(cfg)))
            .map_err(|_| TargetFull)?;
        self.luns.sort_unstable_by_key(|(n, _)| *n);
        if had {
            for (n, lun) in self.luns.iter_mut() {
                if *n != number {
                    lun.raise_all(super::status::ua::LUNS_CHANGED, None);
                }
            }
        }
        Ok(())
    }

    /// LUN `number`, if configured.
    pub fn lun(&self, number: u64) -> Option<&Lun<N, R>> {
        self.luns.iter().find(|(n, _)| *n == number).map(|(_, l)| l)
    }

    /// LUN `number`, if configured.
    pub fn lun_mut(&mut self, number: u64) -> Option<&mut Lun<N, R>> {
        self.luns
            .iter_mut()
            .find(|(n, _)| *n == number)
            .map(|(_, l)| l)
    }

    /// Configured LUN numbers, ascending.
    pub fn lun_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.luns.iter().map(|(n, _)| *n)
    }

    /// Starts a command for LUN `lun` (see [`Lun::command`]). REPORT LUNS is
    /// answered for any LUN number; other commands to an absent LUN get
    /// [`lun_absent_command`]'s answer.
    pub fn command(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        expected_len: u32,
        data_in: &mut [u8],
    ) -> Step {
        if cdb.first() == Some(&op::REPORT_LUNS) {
            let numbers = self.luns.iter().map(|(n, _)| *n);
            let r = report_luns(numbers, Bytes(cdb), data_in);
            return match self.lun_mut(lun) {
                Some(l) => l.finish_public(r),
                None => finish_absent(r),
            };
        }
        match self.lun_mut(lun) {
            Some(l) => l.command(nexus, cdb, expected_len, data_in),
            None => lun_absent_command(cdb, data_in),
        }
    }

    /// Continues a command that asked for Data-Out (see [`Lun::data_out`]).
    pub fn data_out(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        data: &[u8],
        data_in: &mut [u8],
    ) -> Step {
        match self.lun_mut(lun) {
            Some(l) => l.data_out(nexus, cdb, data, data_in),
            None => lun_absent_command(cdb, data_in),
        }
    }

    /// Finishes a command's [`Io`] (see [`Lun::complete`]).
    pub fn complete(
        &mut self,
        lun: u64,
        io: &Io,
        result: IoResult,
        data_in: &mut [u8],
    ) -> Response {
        match self.lun_mut(lun) {
            Some(l) => l.complete(io, result, data_in),
            None => Response::check(Sense::new(
                SenseKey::IllegalRequest,
                asc::LOGICAL_UNIT_NOT_SUPPORTED,
            )),
        }
    }

    /// LOGICAL UNIT RESET task management function.
    pub fn lun_reset(&mut self, lun: u64) {
        if let Some(l) = self.lun_mut(lun) {
            l.reset();
        }
    }

    /// TARGET WARM RESET / TARGET COLD RESET: every LUN is reset.
    pub fn target_reset(&mut self) {
        for (_, l) in self.luns.iter_mut() {
            l.reset();
        }
    }

    /// The I_T nexus in slot `index` ended (logout, connection loss,
    /// session reinstatement).
    pub fn nexus_lost(&mut self, index: u16) {
        for (_, l) in self.luns.iter_mut() {
            l.nexus_lost(index);
        }
    }
}

/// A target's SCSI state as the storage driver ([`crate::iscsi::Driver`])
/// uses it, whatever the capacities of the [`Target`] behind it.
pub trait Units {
    /// See [`Target::command`].
    fn command(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        expected_len: u32,
        data_in: &mut [u8],
    ) -> Step;
    /// See [`Target::data_out`].
    fn data_out(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        data: &[u8],
        data_in: &mut [u8],
    ) -> Step;
    /// See [`Target::complete`].
    fn complete(&mut self, lun: u64, io: &Io, result: IoResult, data_in: &mut [u8]) -> Response;
    /// The configuration of LUN `lun`, if it exists.
    fn lun_config(&self, lun: u64) -> Option<&LunConfig>;
    /// See [`Target::lun_reset`].
    fn lun_reset(&mut self, lun: u64);
    /// See [`Target::target_reset`].
    fn target_reset(&mut self);
    /// See [`Target::nexus_lost`].
    fn nexus_lost(&mut self, index: u16);
    /// See [`Lun::abort_epoch`] (0 for an absent LUN).
    fn abort_epoch(&self, lun: u64, index: u16) -> u32;
}

impl<const L: usize, const N: usize, const R: usize> Units for Target<L, N, R> {
    fn command(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        expected_len: u32,
        data_in: &mut [u8],
    ) -> Step {
        Target::command(self, lun, nexus, cdb, expected_len, data_in)
    }
    fn data_out(
        &mut self,
        lun: u64,
        nexus: &Nexus<'_>,
        cdb: &[u8],
        data: &[u8],
        data_in: &mut [u8],
    ) -> Step {
        Target::data_out(self, lun, nexus, cdb, data, data_in)
    }
    fn complete(&mut self, lun: u64, io: &Io, result: IoResult, data_in: &mut [u8]) -> Response {
        Target::complete(self, lun, io, result, data_in)
    }
    fn lun_config(&self, lun: u64) -> Option<&LunConfig> {
        self.lun(lun).map(|l| l.config())
    }
    fn lun_reset(&mut self, lun: u64) {
        Target::lun_reset(self, lun)
    }
    fn target_reset(&mut self) {
        Target::target_reset(self)
    }
    fn nexus_lost(&mut self, index: u16) {
        Target::nexus_lost(self, index)
    }
    fn abort_epoch(&self, lun: u64, index: u16) -> u32 {
        self.lun(lun).map_or(0, |l| l.abort_epoch(index))
    }
}

fn finish_absent(r: CmdResult) -> Step {
    match r {
        Ok(s) => s,
        Err(Fail::Check(s)) => Step::Done(Response::check(s)),
        Err(Fail::Conflict) => Step::Done(Response::conflict()),
    }
}

/// Answers a command addressed to a LUN that does not exist (SPC-4
/// §4.6.? / SAM-5): INQUIRY returns peripheral qualifier 011b, REQUEST
/// SENSE reports LOGICAL UNIT NOT SUPPORTED as data, REPORT LUNS lists
/// nothing, everything else is ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED.
pub fn lun_absent_command(cdb: &[u8], data_in: &mut [u8]) -> Step {
    let cdb = Bytes(cdb);
    let r = match cdb.u8(0) {
        op::INQUIRY => {
            if cdb.bit(1, 0) || cdb.u8(2) != 0 {
                Err(bad_cdb(1, None))
            } else {
                let alloc = u32::from(cdb.u16(3));
                let mut w = Writer::new(data_in);
                w.u8(0x7f); // qualifier 011b, type 1Fh: no logical unit here
                w.zeros(1);
                w.u8(0x06);
                w.u8(0x12);
                w.u8(31);
                w.zeros(31);
                Ok(done(w.data_len(alloc)))
            }
        }
        op::REQUEST_SENSE => {
            let mut s = Sense::new(SenseKey::IllegalRequest, asc::LOGICAL_UNIT_NOT_SUPPORTED);
            s.descriptor = cdb.bit(1, 0);
            let mut w = Writer::new(data_in);
            w.put(s.bytes().as_bytes());
            Ok(done(w.data_len(u32::from(cdb.u8(4)))))
        }
        op::REPORT_LUNS => report_luns(core::iter::empty(), cdb, data_in),
        _ => Err(illegal(asc::LOGICAL_UNIT_NOT_SUPPORTED)),
    };
    finish_absent(r)
}

/// The 8-byte LUN field for `number` (SAM-5 §4.7): peripheral device
/// addressing below 256, flat space addressing below 16384.
pub fn encode_lun(number: u64) -> [u8; 8] {
    let [hi, lo] = if number < 256 {
        [0, number as u8]
    } else {
        (0x4000 | (number & 0x3fff) as u16).to_be_bytes()
    };
    [hi, lo, 0, 0, 0, 0, 0, 0]
}

fn report_luns(numbers: impl Iterator<Item = u64>, cdb: Bytes<'_>, buf: &mut [u8]) -> CmdResult {
    let select = cdb.u8(2);
    let alloc = cdb.u32(6);
    if alloc < 16 {
        return Err(bad_cdb(6, None));
    }
    if !matches!(select, 0x00 | 0x01 | 0x02 | 0x10 | 0x11 | 0x12) {
        return Err(bad_cdb(2, None));
    }
    let mut w = Writer::new(buf);
    w.u32(0);
    w.zeros(4);
    // We have no well-known LUNs; select 01h reports only those.
    if select != 0x01 {
        for n in numbers {
            w.put(&encode_lun(n));
        }
    }
    let len = u32::try_from(w.pos().saturating_sub(8)).unwrap_or(0);
    w.patch(0, &len.to_be_bytes());
    Ok(done(w.data_len(alloc)))
}
