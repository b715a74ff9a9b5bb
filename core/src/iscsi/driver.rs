//! The storage driver: joins one [`Connection`] to the SCSI layer
//! ([`scsi::Units`]) and to [`BlockDevice`]s. It is the only
//! implementation of [`Backend`] a host needs: every compound command
//! (VERIFY with BYTCHK, COMPARE AND WRITE, ORWRITE, WRITE SAME, UNMAP,
//! GET LBA STATUS, EXTENDED COPY) is done here, once, for every host.
//!
//! # Memory
//!
//! The driver owns no buffer whose size comes from the wire. Plain writes go
//! from the receive buffer straight to the device, reads from the device
//! straight into the transmit buffer. Data-Out that is not written as is
//! streams through the caller's *bounce* buffer: ORWRITE reads, ORs and
//! writes each piece; VERIFY (BYTCHK 01b) compares each piece as it arrives.
//! Only what must be whole before anything is done goes into the caller's
//! *collection* buffer, one command at a time: COMPARE AND WRITE (both
//! halves, at most [`scsi::LunConfig::max_compare_and_write_blocks`]), the
//! one block of WRITE SAME and VERIFY (BYTCHK 11b), an UNMAP parameter list.
//! A command that does not fit gets CHECK CONDITION, one that finds the
//! collection buffer taken gets BUSY; the connection goes on either way.
//! Everything kept for a task is dropped when the connection says it ended
//! ([`Driver::release`]) — done, aborted, reset, or the connection lost.
//!
//! # Status after I/O
//!
//! A read's data is pulled from the device into the transmit buffer one
//! Data-In PDU at a time ([`Backend::read_data`]); a failed or short read
//! fails the command with MEDIUM ERROR instead of sending what is in the
//! buffer. A write's status is decided only after every piece was stored and,
//! for FUA or a LUN without a volatile write cache, after the device's flush
//! returned.
//!
//! # Host loop
//!
//! The order is the core's; a host only moves bytes and decides where work
//! that may block runs:
//! 1. feed input to [`Connection::handle_input`];
//! 2. answer a [`super::Event::SessionRequest`] with [`Driver::admit`];
//! 3. run the storage requests with [`Bound::run_storage`] (in place), or
//!    [`Bound::run_storage_with`] when a flush must not block the host's
//!    event loop: it says which requests may block and lets the host run
//!    each where it wants, then completes it;
//! 4. only then [`Connection::poll_transmit`]: a status can leave only after
//!    the storage work it reports on returned;
//! 5. when the connection ends for any reason, [`Bound::end`].
//!
//! [`Connection`]: super::Connection

use heapless::String;

use super::backend::{
    Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageRequest, TmfOutcome, WriteChunk,
};
use super::login::MAX_NAME_LEN;
use super::pdu::TmfFunction;
use super::session::{Admission, SessionTable};
use super::{Connection, LoginStatus, SessionRequest};
use crate::block::{BlockDevice, BlockError};
use crate::scsi::{self, asc, Io, IoError, IoResult, Response, Sense, SenseKey, Step, Units};
use crate::time::Instant;

/// How a device is used for one step: COMPARE AND WRITE needs it to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Access {
    /// Any number of users at once (reads, writes, flushes).
    Shared,
    /// No other command may read or write the device meanwhile.
    Exclusive,
}

/// The host's targets as the driver sees them: the SCSI state of each
/// (locked while `f` runs, if connections share it) and the device of each
/// LUN. `target` is an index into the configured targets.
///
/// Shared state needs interior mutability (a mutex, a `RefCell`): the
/// driver calls `units` from inside a `device` closure (a write checks,
/// under the device lock, that its command was not aborted meanwhile), never
/// the other way round.
pub trait Luns {
    /// Runs `f` on the SCSI state of `target`; `None` if there is no such
    /// target (or it is busy, for a single-threaded host).
    fn units<R>(&self, target: usize, f: impl FnOnce(&mut dyn Units) -> R) -> Option<R>;

    /// Runs `f` on the device of LUN `lun` of `target`; `None` if absent.
    fn device<R>(
        &self,
        target: usize,
        lun: u64,
        access: Access,
        f: impl FnOnce(&mut dyn BlockDevice) -> R,
    ) -> Option<R>;
}

/// Who this connection's session is, as the SCSI layer sees it.
#[derive(Debug, Clone)]
struct NexusInfo {
    id: u64,
    index: u16,
    initiator: String<MAX_NAME_LEN>,
    isid: [u8; 6],
    target: Option<usize>,
}

/// What a command's plan needs of its LUN, read under the same lock as the
/// SCSI layer's step (one lock per command).
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    /// The LUN reports a volatile write cache (WCE=1).
    write_back: bool,
    /// The nexus's abort epoch on the LUN (see [`Pending::epoch`]).
    epoch: u32,
}

impl Facts {
    fn of(t: &dyn Units, lun: u64, index: u16) -> Self {
        Facts {
            write_back: t.lun_config(lun).is_some_and(|c| c.write_cache),
            epoch: t.abort_epoch(lun, index),
        }
    }
}

/// Storage work of one command, kept from its plan to its release.
#[derive(Debug, Clone, Copy)]
struct Pending {
    io_id: IoId,
    target: usize,
    lun: u64,
    op: Io,
    /// The LUN acknowledges writes from a volatile cache (WCE=1): plain
    /// writes are flushed only for FUA.
    write_back: bool,
    /// Data-Out goes to the collection buffer.
    collects: bool,
    /// First differing byte seen while streaming (VERIFY).
    miscompare: Option<u64>,
    /// A streamed piece failed.
    failed: Option<IoError>,
    /// How the operation ended, once done.
    result: Option<IoResult>,
    /// The LUN's abort epoch for this nexus when the command started: if it
    /// moved, another initiator's PREEMPT AND ABORT ended the command.
    epoch: u32,
}

/// One connection's storage state; see the module docs. [`Driver::bind`]
/// joins it to the host's [`Luns`] for the calls that need them: the
/// [`Bound`] driver is the connection's [`Backend`].
///
/// `TASKS` must be the connection's `TASKS`. `B` is a byte buffer
/// (`[u8; N]`, `&mut [u8]`, `Vec<u8>`): `bounce` for streamed pieces
/// (any size ≥ one block; larger is faster), `collect` for whole
/// collections (≥ `2 × max_compare_and_write_blocks × block size`, and ≥
/// the largest UNMAP parameter list, `8 + 16 × max_unmap_descriptors`).
#[derive(Debug)]
pub struct Driver<B, const TASKS: usize> {
    nexus: Option<NexusInfo>,
    pending: [Option<Pending>; TASKS],
    /// The command whose Data-Out is in `collect`, and how much arrived.
    collector: Option<IoId>,
    collected: usize,
    collect: B,
    bounce: B,
}

fn read_error(e: BlockError) -> IoError {
    match e {
        BlockError::OutOfRange | BlockError::Io => IoError::Read,
        BlockError::NoSpace => IoError::NoSpace,
        BlockError::Unsupported => IoError::Other,
    }
}

fn write_error(e: BlockError) -> IoError {
    match e {
        BlockError::OutOfRange | BlockError::Io => IoError::Write,
        BlockError::NoSpace => IoError::NoSpace,
        BlockError::Unsupported => IoError::Other,
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

fn check(key: SenseKey, code: (u8, u8), buf: &mut [u8]) -> Plan {
    complete(Response::check(Sense::new(key, code)), buf)
}

fn busy() -> Plan {
    Plan::Complete {
        status: scsi::Status::Busy.as_u8(),
        data_len: 0,
        sense_len: 0,
    }
}

fn scsi_nexus(nexus: Option<&NexusInfo>) -> scsi::Nexus<'_> {
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

/// False once another initiator's PREEMPT AND ABORT ended command `p` of
/// nexus slot `index` (call under the device lock, before touching it).
fn still_current<L: Luns>(luns: &L, p: &Pending, index: u16) -> bool {
    luns.units(p.target, |t| t.abort_epoch(p.lun, index)) == Some(p.epoch)
}

/// Runs `f(device offset, piece length, offset from start)` over
/// `[offset, offset + len)` in pieces of at most `piece` bytes.
fn pieces(
    offset: u64,
    len: u64,
    piece: usize,
    mut f: impl FnMut(u64, usize, u64) -> Result<(), IoError>,
) -> Result<(), IoError> {
    if piece == 0 {
        return Err(IoError::Other);
    }
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(piece as u64) as usize;
        f(offset.saturating_add(done), n, done)?;
        done = done.saturating_add(n as u64);
    }
    Ok(())
}

/// Compares the device at `at` with `want`, piece by piece through
/// `bounce`; `Ok(Some(i))` is the first differing byte from `at`.
fn compare(
    dev: &mut dyn BlockDevice,
    bounce: &mut [u8],
    at: u64,
    want: &[u8],
) -> Result<Option<u64>, IoError> {
    if bounce.is_empty() {
        return Err(IoError::Other);
    }
    for (i, w) in want.chunks(bounce.len()).enumerate() {
        let done = (i * bounce.len()) as u64;
        let b = bounce.get_mut(..w.len()).ok_or(IoError::Other)?;
        dev.read_at(at.saturating_add(done), b)
            .map_err(read_error)?;
        if let Some(j) = scsi::first_mismatch(b, w) {
            return Ok(Some(done + j as u64));
        }
    }
    Ok(None)
}

/// Writes `block` repeatedly over `[offset, offset + len)`, filling the
/// bounce buffer with copies of it so each device write is large.
fn fill(
    dev: &mut dyn BlockDevice,
    bounce: &mut [u8],
    offset: u64,
    len: u64,
    block: &[u8],
) -> Result<(), IoError> {
    let bs = block.len();
    let per = bounce.len().checked_div(bs).unwrap_or(0) * bs;
    let b = bounce.get_mut(..per).ok_or(IoError::Other)?;
    for c in b.chunks_exact_mut(bs.max(1)) {
        c.copy_from_slice(block);
    }
    pieces(offset, len, per, |off, n, _| {
        dev.write_at(off, b.get(..n).ok_or(IoError::Other)?)
            .map_err(write_error)
    })
}

/// Deallocates a range, or writes zeros where the device cannot.
fn deallocate(
    dev: &mut dyn BlockDevice,
    bounce: &mut [u8],
    offset: u64,
    len: u64,
) -> Result<(), IoError> {
    match dev.deallocate(offset, len) {
        Ok(()) => Ok(()),
        // Zeros need no block alignment: any piece size will do.
        Err(BlockError::Unsupported) => fill(dev, bounce, offset, len, &[0u8; 512]),
        Err(e) => Err(write_error(e)),
    }
}

/// EXTENDED COPY inside one device (backwards when the destination
/// overlaps the source's tail, as if through a buffer).
fn copy(
    dev: &mut dyn BlockDevice,
    bounce: &mut [u8],
    src: u64,
    dst: u64,
    len: u64,
) -> Result<(), IoError> {
    let piece = bounce.len() as u64;
    if piece == 0 {
        return Err(IoError::Other);
    }
    let backwards = dst > src && dst < src.saturating_add(len);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(piece);
        let at = if backwards { len - done - n } else { done };
        let b = bounce.get_mut(..n as usize).ok_or(IoError::Other)?;
        dev.read_at(src.saturating_add(at), b).map_err(read_error)?;
        dev.write_at(dst.saturating_add(at), b)
            .map_err(write_error)?;
        done += n;
    }
    Ok(())
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const TASKS: usize> Driver<B, TASKS> {
    /// The storage state of one new connection.
    pub fn new(collect: B, bounce: B) -> Self {
        Driver {
            nexus: None,
            pending: [None; TASKS],
            collector: None,
            collected: 0,
            collect,
            bounce,
        }
    }

    /// This driver working on the host's `luns`: the connection's [`Backend`].
    pub fn bind<'a, L: Luns>(&'a mut self, luns: &'a L) -> Bound<'a, L, B, TASKS> {
        Bound { d: self, luns }
    }

    /// The connection's session was admitted as I_T nexus `id` (from
    /// [`super::Admission::nexus`]) in the SCSI layer's slot `index`
    /// (`< N` of the targets' [`scsi::Target`]; a slot beyond it is served
    /// without unit attentions or reservations). Call before feeding
    /// commands.
    pub fn set_nexus(
        &mut self,
        id: u64,
        index: u16,
        initiator: &str,
        isid: [u8; 6],
        target: Option<usize>,
    ) {
        let mut name = String::new();
        // Login already limited the name to MAX_NAME_LEN.
        let _ = name.push_str(initiator);
        self.nexus = Some(NexusInfo {
            id,
            index,
            initiator: name,
            isid,
            target,
        });
    }

    /// Answers `conn`'s [`super::Event::SessionRequest`] `req` from the
    /// host's session `table`: admitted, the driver takes the new I_T nexus
    /// and the connection goes on to full feature phase; refused, the
    /// connection sends the status and closes. Returns what the table
    /// decided: an admission may name a connection the host must close now
    /// ([`Admission::reinstated`]).
    pub fn admit<const N: usize, const S: usize>(
        &mut self,
        conn: &mut Connection<TASKS, S>,
        table: &mut SessionTable<N>,
        now: Instant,
        req: &SessionRequest,
    ) -> Result<Admission, LoginStatus> {
        let result = table.admit_at(now, conn.initiator_name(), req, conn.token());
        match &result {
            Ok(adm) => {
                self.set_nexus(
                    adm.nexus,
                    adm.slot,
                    conn.initiator_name(),
                    req.isid,
                    req.target,
                );
                conn.session_admitted(adm);
            }
            Err(status) => conn.session_refused(*status),
        }
        result
    }

    fn pending_mut(&mut self, io: IoId) -> Option<&mut Pending> {
        self.pending
            .get_mut(io.slot())?
            .as_mut()
            .filter(|p| p.io_id == io)
    }

    /// The task using `io` is over (done, aborted, or the connection
    /// closed): forget everything kept for it.
    pub fn release(&mut self, io: IoId) {
        if self.collector == Some(io) {
            self.collector = None;
            self.collected = 0;
        }
        if let Some(slot) = self.pending.get_mut(io.slot()) {
            if slot.is_some_and(|p| p.io_id == io) {
                *slot = None;
            }
        }
    }

    /// True when the driver keeps nothing for any task: no pending
    /// operation and a free collection buffer. After the connection is
    /// aborted and its `Release`s are run this must hold (fuzzing and
    /// tests check it).
    #[doc(hidden)]
    pub fn is_idle(&self) -> bool {
        self.collector.is_none() && self.pending.iter().all(Option::is_none)
    }

    /// Whether `req` may block for long (a flush, a large fill or copy):
    /// what [`Bound::run_storage_with`] tells the host, which may run such
    /// work off its event loop.
    fn may_block(&self, req: &StorageRequest) -> bool {
        let p = self
            .pending
            .get(req.io().slot())
            .and_then(|p| p.as_ref())
            .filter(|p| p.io_id == req.io());
        match (req, p) {
            (StorageRequest::Read { .. } | StorageRequest::Release { .. }, _) => false,
            (StorageRequest::Write { fua, .. }, Some(p)) if matches!(p.op, Io::Write { .. }) => {
                *fua || !p.write_back
            }
            _ => true,
        }
    }
}

/// A [`Driver`] bound to the host's [`Luns`]: the connection's [`Backend`].
#[derive(Debug)]
pub struct Bound<'a, L, B, const TASKS: usize> {
    d: &'a mut Driver<B, TASKS>,
    luns: &'a L,
}

impl<L: Luns, B: AsRef<[u8]> + AsMut<[u8]>, const TASKS: usize> Bound<'_, L, B, TASKS> {
    fn nexus_index(&self) -> u16 {
        self.d.nexus.as_ref().map_or(u16::MAX, |n| n.index)
    }

    /// After a PREEMPT AND ABORT: wait until no write of a preempted
    /// command is still under way on the LUN. Every later write checks its
    /// epoch under the device lock first, so none reaches the medium after
    /// this command's status.
    fn abort_barrier(&self, req: &ScsiRequest<'_>) {
        const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
        const PREEMPT_AND_ABORT: u8 = 0x05;
        let cdb = req.cdb;
        if cdb.first() == Some(&PERSISTENT_RESERVE_OUT)
            && cdb.get(1).map(|b| b & 0x1f) == Some(PREEMPT_AND_ABORT)
        {
            let _ = self
                .luns
                .device(req.target, req.lun, Access::Exclusive, |_| ());
        }
    }

    fn command_step(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> (Step, Facts) {
        let Bound { d, luns } = self;
        let nexus = &d.nexus;
        if nexus.is_none() {
            return (scsi::lun_absent_command(req.cdb, buf), Facts::default());
        }
        let nexus = scsi_nexus(nexus.as_ref());
        luns.units(req.target, |t| {
            let step = t.command(req.lun, &nexus, req.cdb, req.edtl, buf);
            (step, Facts::of(t, req.lun, nexus.index))
        })
        .unwrap_or_else(|| (scsi::lun_absent_command(req.cdb, buf), Facts::default()))
    }

    /// Continues a command with its parameter list `params`; an UNMAP list
    /// is kept in the collection buffer for when the deallocation runs.
    fn data_out_step(
        &mut self,
        req: &ScsiRequest<'_>,
        params: &[u8],
        buf: &mut [u8],
    ) -> (Step, Facts) {
        let Bound { d, luns } = self;
        let nexus = scsi_nexus(d.nexus.as_ref());
        let (step, facts) = luns
            .units(req.target, |t| {
                let step = t.data_out(req.lun, &nexus, req.cdb, params, buf);
                (step, Facts::of(t, req.lun, nexus.index))
            })
            .unwrap_or_else(|| (scsi::lun_absent_command(req.cdb, buf), Facts::default()));
        if let Step::Done(Response {
            status: scsi::Status::Good,
            ..
        }) = step
        {
            self.abort_barrier(req);
        }
        if step != Step::Io(Io::Unmap) {
            return (step, facts);
        }
        if self.d.collector.is_some() {
            let busy = Response {
                status: scsi::Status::Busy,
                data_len: 0,
                sense: None,
            };
            return (Step::Done(busy), facts);
        }
        let Some(dst) = self.d.collect.as_mut().get_mut(..params.len()) else {
            let too_long = Sense::new(SenseKey::IllegalRequest, asc::PARAMETER_LIST_LENGTH_ERROR);
            return (Step::Done(Response::check(too_long)), facts);
        };
        dst.copy_from_slice(params);
        self.d.collector = Some(req.io);
        self.d.collected = params.len();
        (step, facts)
    }

    fn plan(
        &mut self,
        req: &ScsiRequest<'_>,
        (step, facts): (Step, Facts),
        buf: &mut [u8],
    ) -> Plan {
        let op = match step {
            Step::Done(resp) => return complete(resp, buf),
            Step::DataOut { len } => {
                // Parameter lists land in the task's scratch buffer; one
                // longer than that is refused rather than cut.
                if len as usize > buf.len() {
                    return check(
                        SenseKey::IllegalRequest,
                        asc::PARAMETER_LIST_LENGTH_ERROR,
                        buf,
                    );
                }
                return Plan::ReceiveParameters { len };
            }
            Step::Io(io) => io,
        };
        let Facts { write_back, epoch } = facts;
        let (plan, collect_len) = match op {
            Io::Read { offset, len } => (Plan::Read { offset, len }, None),
            Io::Write { offset, len, fua } => (Plan::Write { offset, len, fua }, None),
            Io::Flush | Io::LbaStatus { .. } | Io::Copy { .. } => (Plan::Flush, None),
            // BYTCHK 00b: nothing to receive, the medium is read in `finish`.
            Io::Verify {
                data_out_len: 0, ..
            } => (Plan::Flush, None),
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
                // BYTCHK 11b: one block compared with every block, kept whole.
                (data_out_len < len).then_some(data_out_len),
            ),
            Io::CompareAndWrite { offset, len, .. } => {
                let both = len.saturating_mul(2);
                (
                    Plan::Write {
                        offset,
                        len: both,
                        fua: false,
                    },
                    Some(both),
                )
            }
            Io::OrWrite { offset, len, .. } => (
                Plan::Write {
                    offset,
                    len,
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
            Io::WriteSame { .. } => (Plan::Flush, None),
            // The parameter list was put in `collect` by `scsi_resume`.
            Io::Unmap => (Plan::Flush, None),
        };
        let mut collects = false;
        if let Some(n) = collect_len {
            if n as usize > self.d.collect.as_ref().len() {
                return check(SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB, buf);
            }
            if self.d.collector.is_some() {
                return busy();
            }
            self.d.collector = Some(req.io);
            self.d.collected = 0;
            collects = true;
        }
        let entry = Pending {
            io_id: req.io,
            target: req.target,
            lun: req.lun,
            op,
            write_back,
            collects,
            miscompare: None,
            failed: None,
            result: None,
            epoch,
        };
        match self.d.pending.get_mut(req.io.slot()) {
            Some(slot) => *slot = Some(entry),
            None => {
                self.d.release(req.io);
                return busy();
            }
        }
        plan
    }

    /// Runs every storage request the connection has queued, in place, and
    /// completes each (see the module docs). Returns how many there were.
    pub fn run_storage<const S: usize>(
        &mut self,
        conn: &mut Connection<TASKS, S>,
        now: Instant,
    ) -> usize {
        self.run_storage_with(conn, now, |_, _, work| work())
    }

    /// [`Bound::run_storage`] for a host that must not block its event loop:
    /// for each request, `run(request, may_block, work)` must call `work`
    /// once (in place, or where blocking is allowed when `may_block`: a
    /// flush, a FUA write, a fill or copy) and may look at the request
    /// (metrics). The request is completed after `work` returned.
    pub fn run_storage_with<const S: usize>(
        &mut self,
        conn: &mut Connection<TASKS, S>,
        now: Instant,
        mut run: impl FnMut(&StorageRequest, bool, &mut dyn FnMut()),
    ) -> usize {
        let mut n = 0;
        while let Some(req) = conn.poll_storage() {
            n += 1;
            let io = req.io();
            let may_block = self.d.may_block(&req);
            // A host that fails to call `work` must not turn into a GOOD
            // status: the request fails unless the work ran.
            let mut result = Err(IoError::Other);
            run(&req, may_block, &mut || result = self.perform(&req));
            if !matches!(req, StorageRequest::Release { .. }) {
                conn.complete_storage(now, io, result, self);
            }
        }
        n
    }

    /// The connection ended (logout, protocol error, TCP loss, reinstated,
    /// shut down): abort what is still open and drop everything the driver
    /// kept for its tasks. The host then releases the session
    /// ([`SessionTable::release`]).
    pub fn end<const S: usize>(&mut self, conn: &mut Connection<TASKS, S>) {
        if !conn.is_closed() {
            conn.abort(self);
        }
        while let Some(req) = conn.poll_storage() {
            if let StorageRequest::Release { io } = req {
                self.d.release(io);
            }
        }
    }

    /// Runs one storage request to its end (blocking); hand the result to
    /// [`Connection::complete_storage`]. A `Release` is [`Driver::release`].
    pub fn perform(&mut self, req: &StorageRequest) -> Result<(), IoError> {
        let io = req.io();
        if let StorageRequest::Release { .. } = req {
            self.d.release(io);
            return Ok(());
        }
        let Some(p) = self.d.pending_mut(io).copied() else {
            return self.direct(req);
        };
        let outcome = match (*req, p.op) {
            // Data is pulled by `read_data` straight into the transmit buffer.
            (StorageRequest::Read { .. }, _) => return Ok(()),
            (StorageRequest::Write { fua, .. }, Io::Write { .. }) => {
                if let Some(e) = p.failed {
                    return Err(e);
                }
                if fua || !p.write_back {
                    return self.flush(p.target, p.lun);
                }
                return Ok(());
            }
            (_, op) => self.finish(&p, op),
        };
        if let Some(slot) = self.d.pending_mut(io) {
            slot.result = Some(outcome);
        }
        Ok(())
    }

    fn flush(&mut self, target: usize, lun: u64) -> Result<(), IoError> {
        self.luns
            .device(target, lun, Access::Shared, |d| {
                d.flush().map_err(write_error)
            })
            .unwrap_or(Err(IoError::Other))
    }

    /// Finishes an operation whose Data-Out (if any) all arrived.
    fn finish(&mut self, p: &Pending, op: Io) -> IoResult {
        let index = self.nexus_index();
        let collected = self.d.collected.min(self.d.collect.as_ref().len());
        let data = match self.d.collect.as_ref().get(..collected) {
            Some(d) if self.d.collector == Some(p.io_id) => d,
            _ => &[],
        };
        let bounce = self.d.bounce.as_mut();
        let (block_size, thin) = self
            .luns
            .units(p.target, |t| {
                t.lun_config(p.lun)
                    .map(|c| (c.block_size as usize, c.thin_provisioning))
            })
            .flatten()
            .unwrap_or((512, false));
        // Without a volatile write cache every change is durable before status.
        let write_back = p.write_back;
        let durable = move |dev: &mut dyn BlockDevice| -> Result<IoResult, IoError> {
            if !write_back {
                dev.flush().map_err(write_error)?;
            }
            Ok(IoResult::Ok)
        };
        let access = if matches!(op, Io::CompareAndWrite { .. }) {
            Access::Exclusive
        } else {
            Access::Shared
        };
        let luns = self.luns;
        let writes = !matches!(
            op,
            Io::Flush | Io::Verify { .. } | Io::LbaStatus { .. } | Io::Read { .. }
        );
        let r = luns.device(
            p.target,
            p.lun,
            access,
            |dev| -> Result<IoResult, IoError> {
                if writes && !still_current(luns, p, index) {
                    return Err(IoError::Aborted);
                }
                match op {
                    Io::Flush => dev.flush().map_err(write_error).map(|()| IoResult::Ok),
                    Io::Verify {
                        offset,
                        len,
                        data_out_len,
                    } => {
                        if let Some(e) = p.failed {
                            return Err(e);
                        }
                        if data_out_len == 0 {
                            // BYTCHK 00b: readable is all that is asked.
                            pieces(offset, u64::from(len), bounce.len(), |off, n, _| {
                                let b = bounce.get_mut(..n).ok_or(IoError::Other)?;
                                dev.read_at(off, b).map_err(read_error)
                            })?;
                            return Ok(IoResult::Ok);
                        }
                        if data_out_len >= len {
                            // Streamed as it arrived.
                            return Ok(p
                                .miscompare
                                .map_or(IoResult::Ok, |offset| IoResult::Miscompare { offset }));
                        }
                        // BYTCHK 11b: the one block against every block.
                        let block = data.get(..data_out_len as usize).ok_or(IoError::Other)?;
                        if block.is_empty() {
                            return Err(IoError::Other);
                        }
                        let mut at = 0u64;
                        while at < u64::from(len) {
                            if let Some(i) = compare(dev, bounce, offset.saturating_add(at), block)?
                            {
                                return Ok(IoResult::Miscompare { offset: at + i });
                            }
                            at += block.len() as u64;
                        }
                        Ok(IoResult::Ok)
                    }
                    Io::CompareAndWrite { offset, len, fua } => {
                        let (old, new) =
                            data.split_at_checked(len as usize).ok_or(IoError::Other)?;
                        if new.len() != len as usize {
                            return Err(IoError::Other);
                        }
                        if let Some(i) = compare(dev, bounce, offset, old)? {
                            return Ok(IoResult::Miscompare { offset: i });
                        }
                        dev.write_at(offset, new).map_err(write_error)?;
                        if fua {
                            dev.flush().map_err(write_error)?;
                        }
                        durable(dev)
                    }
                    Io::OrWrite { fua, .. } => {
                        if let Some(e) = p.failed {
                            return Err(e);
                        }
                        if fua {
                            dev.flush().map_err(write_error)?;
                        }
                        durable(dev)
                    }
                    Io::WriteSame {
                        offset,
                        blocks,
                        data_out_len,
                        unmap,
                    } => {
                        let len = blocks.saturating_mul(block_size as u64);
                        let block = match data_out_len {
                            0 => None, // NDOB: a block of zeros
                            n => Some(data.get(..n as usize).ok_or(IoError::Other)?),
                        };
                        // On a thin LUN, UNMAP=1 deallocates whatever the block
                        // holds, and zeros may be deallocated too (LBPRZ=1).
                        let zeros = block.is_none_or(scsi::write_same_may_unmap);
                        match block {
                            _ if thin && (unmap || zeros) => deallocate(dev, bounce, offset, len)?,
                            Some(b) => fill(dev, bounce, offset, len, b)?,
                            None => fill(dev, bounce, offset, len, &[0u8; 512])?,
                        }
                        durable(dev)
                    }
                    Io::Unmap => {
                        for (off, n) in scsi::unmap_ranges(data, block_size as u32) {
                            deallocate(dev, bounce, off, n)?;
                        }
                        durable(dev)
                    }
                    Io::LbaStatus { lba, .. } => {
                        let at = lba.saturating_mul(block_size as u64);
                        match dev.extent(at).map_err(read_error)? {
                            Some(e) => Ok(IoResult::LbaStatus {
                                deallocated: e.deallocated,
                                blocks: (e.len / block_size as u64).max(1),
                            }),
                            None => Ok(IoResult::Ok),
                        }
                    }
                    Io::Copy { src, dst, len, .. } => {
                        copy(dev, bounce, src, dst, u64::from(len))?;
                        durable(dev)
                    }
                    // Reads and plain writes are done in `perform`.
                    Io::Read { .. } | Io::Write { .. } => Ok(IoResult::Ok),
                }
            },
        );
        match r {
            Some(Ok(result)) => result,
            Some(Err(e)) => IoResult::Error(e),
            None => IoResult::Error(IoError::Other),
        }
    }

    /// A storage request from a plan this driver did not make (a connection
    /// driven by another backend before): only flushes make sense.
    fn direct(&mut self, req: &StorageRequest) -> Result<(), IoError> {
        match *req {
            StorageRequest::Flush { target, lun, .. } => self.flush(target, lun),
            _ => Err(IoError::Other),
        }
    }

    /// Handles one piece of a streamed operation's Data-Out at absolute
    /// offset `at`.
    fn stream(&mut self, io: IoId, target: usize, lun: u64, at: u64, data: &[u8]) {
        let Some(p) = self.d.pending_mut(io).copied() else {
            return;
        };
        if p.failed.is_some() {
            return;
        }
        if p.collects {
            if self.d.collector == Some(io) {
                let from = self.d.collected;
                let end = from.saturating_add(data.len());
                if let Some(dst) = self.d.collect.as_mut().get_mut(from..end) {
                    dst.copy_from_slice(data);
                    self.d.collected = end;
                }
            }
            return;
        }
        let index = self.nexus_index();
        let luns = self.luns;
        let bounce = self.d.bounce.as_mut();
        let r = luns.device(target, lun, Access::Shared, |dev| {
            if !still_current(luns, &p, index) {
                return Err(IoError::Aborted);
            }
            match p.op {
                Io::Write { .. } => dev.write_at(at, data).map(|()| None).map_err(write_error),
                Io::OrWrite { .. } => {
                    pieces(at, data.len() as u64, bounce.len(), |off, n, done| {
                        let b = bounce.get_mut(..n).ok_or(IoError::Other)?;
                        dev.read_at(off, b).map_err(read_error)?;
                        let src = data
                            .get(done as usize..done as usize + n)
                            .ok_or(IoError::Other)?;
                        for (x, y) in b.iter_mut().zip(src) {
                            *x |= *y;
                        }
                        dev.write_at(off, b).map_err(write_error)
                    })
                    .map(|()| None)
                }
                Io::Verify { offset, .. } => {
                    if p.miscompare.is_some() {
                        return Ok(None);
                    }
                    compare(dev, bounce, at, data)
                        .map(|found| found.map(|i| at.saturating_sub(offset) + i))
                }
                _ => Ok(None),
            }
        });
        let Some(slot) = self.d.pending_mut(io) else {
            return;
        };
        match r {
            Some(Ok(found)) => slot.miscompare = slot.miscompare.or(found),
            Some(Err(e)) => slot.failed = Some(e),
            None => slot.failed = Some(IoError::Other),
        }
    }
}

impl<L: Luns, B: AsRef<[u8]> + AsMut<[u8]>, const TASKS: usize> Backend for Bound<'_, L, B, TASKS> {
    fn scsi_command(&mut self, req: &ScsiRequest<'_>, buf: &mut [u8]) -> Plan {
        let step = self.command_step(req, buf);
        self.plan(req, step, buf)
    }

    fn scsi_resume(&mut self, req: &ScsiRequest<'_>, why: Resume, buf: &mut [u8]) -> Plan {
        match why {
            Resume::Parameters { len } => {
                // The list is at the start of the task's scratch buffer,
                // which is also where the answer goes: parse a copy.
                let n = (len as usize).min(buf.len());
                let mut copy = [0u8; PARAMS_MAX];
                let (Some(params), Some(src)) = (copy.get_mut(..n), buf.get(..n)) else {
                    return check(
                        SenseKey::IllegalRequest,
                        asc::PARAMETER_LIST_LENGTH_ERROR,
                        buf,
                    );
                };
                params.copy_from_slice(src);
                let step = self.data_out_step(req, params, buf);
                self.plan(req, step, buf)
            }
            Resume::Storage(result) => {
                let Some(p) = self.d.pending_mut(req.io).copied() else {
                    return check(SenseKey::HardwareError, asc::INTERNAL_TARGET_FAILURE, buf);
                };
                let outcome = match result {
                    Err(e) => IoResult::Error(e),
                    Ok(()) => p.result.unwrap_or(IoResult::Ok),
                };
                let resp = self
                    .luns
                    .units(p.target, |t| t.complete(p.lun, &p.op, outcome, buf))
                    .unwrap_or_else(|| {
                        Response::check(Sense::new(
                            SenseKey::IllegalRequest,
                            asc::LOGICAL_UNIT_NOT_SUPPORTED,
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
        self.luns
            .units(target, |t| match function {
                TmfFunction::LogicalUnitReset => {
                    if t.lun_config(lun).is_none() {
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
            })
            .unwrap_or(TmfOutcome::NoSuchLun)
    }

    fn nexus_lost(&mut self, nexus: u64) {
        let Some(info) = self.d.nexus.take_if(|n| n.id == nexus) else {
            return;
        };
        if let Some(target) = info.target {
            let _ = self.luns.units(target, |t| t.nexus_lost(info.index));
        }
    }

    fn write_data(&mut self, chunk: WriteChunk<'_>) {
        self.stream(chunk.io, chunk.target, chunk.lun, chunk.offset, chunk.data);
    }

    fn read_data(&mut self, chunk: ReadChunk<'_>) -> Result<(), IoError> {
        self.luns
            .device(chunk.target, chunk.lun, Access::Shared, |d| {
                d.read_at(chunk.offset, chunk.dst).map_err(read_error)
            })
            .unwrap_or(Err(IoError::Other))
    }
}

/// Longest parameter list parsed (PERSISTENT RESERVE OUT, MODE SELECT,
/// UNMAP with 256 descriptors): the scratch buffer caps it anyway.
const PARAMS_MAX: usize = 8 + 16 * scsi::LunConfig::MAX_UNMAP_DESCRIPTORS as usize;
