//! Connection-level tests: a scripted initiator against [`Connection`] with
//! the real storage path behind it: [`Driver`] over a [`scsi::Target`] and
//! RAM disks that can be told to fail.
#![allow(dead_code)]

extern crate std;

use core::cell::{Ref, RefCell, RefMut};

use std::collections::HashMap;
use std::vec;
use std::vec::Vec;

use super::pdu::*;
use super::text::pairs;
use super::*;
use crate::block::{BlockDevice, BlockError, Extent, RamDisk};
use crate::scsi::{self, LunConfig, Units};
use crate::time::Instant;

pub(crate) const BLOCK: u64 = 512;

/// A RAM disk whose chosen blocks fail, that can run out of space or fail
/// to flush, and that counts what reaches it.
pub(crate) struct TestDisk {
    pub ram: RamDisk<Vec<u8>>,
    /// Blocks (512 bytes) whose reads fail with `BlockError::Io`.
    pub bad_reads: Vec<u64>,
    /// Blocks whose writes fail with `BlockError::Io`.
    pub bad_writes: Vec<u64>,
    /// Every write (and deallocation) fails with `BlockError::NoSpace`.
    pub no_space: bool,
    /// `flush` fails with `BlockError::Io`.
    pub fail_flush: bool,
    /// `write_at` calls that stored data, and the bytes they stored.
    pub writes: usize,
    pub written: u64,
    /// `flush` calls that succeeded.
    pub flushes: usize,
    /// `deallocate` calls that succeeded.
    pub deallocations: usize,
    /// `read_at` calls, and the largest one (bytes).
    pub reads: usize,
    pub largest_read: usize,
    /// Answer `extent` from the ranges deallocated so far (else `None`,
    /// like a plain [`RamDisk`]); writes do not map them again.
    pub track_holes: bool,
    pub holes: Vec<(u64, u64)>,
}

impl TestDisk {
    /// `blocks` blocks of 512 bytes, byte `i` = `block(i) ^ i`.
    pub fn new(blocks: u64) -> Self {
        let mut disk = vec![0u8; (blocks * BLOCK) as usize];
        for (i, b) in disk.iter_mut().enumerate() {
            *b = (i / BLOCK as usize) as u8 ^ (i as u8);
        }
        TestDisk {
            ram: RamDisk(disk),
            bad_reads: Vec::new(),
            bad_writes: Vec::new(),
            no_space: false,
            fail_flush: false,
            writes: 0,
            written: 0,
            flushes: 0,
            deallocations: 0,
            reads: 0,
            largest_read: 0,
            track_holes: false,
            holes: Vec::new(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.ram.0
    }

    fn hits(bad: &[u64], offset: u64, len: u64) -> bool {
        bad.iter()
            .any(|&lba| lba * BLOCK < offset + len && offset < (lba + 1) * BLOCK)
    }
}

impl BlockDevice for TestDisk {
    fn len(&self) -> u64 {
        self.ram.len()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.reads += 1;
        self.largest_read = self.largest_read.max(buf.len());
        if Self::hits(&self.bad_reads, offset, buf.len() as u64) {
            return Err(BlockError::Io);
        }
        self.ram.read_at(offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.no_space {
            return Err(BlockError::NoSpace);
        }
        if Self::hits(&self.bad_writes, offset, data.len() as u64) {
            return Err(BlockError::Io);
        }
        self.ram.write_at(offset, data)?;
        self.writes += 1;
        self.written += data.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.fail_flush {
            return Err(BlockError::Io);
        }
        self.flushes += 1;
        Ok(())
    }

    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.no_space {
            return Err(BlockError::NoSpace);
        }
        self.ram.deallocate(offset, len)?;
        self.deallocations += 1;
        self.holes.push((offset, offset + len));
        Ok(())
    }

    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        if !self.track_holes {
            return self.ram.extent(offset);
        }
        if let Some(&(_, end)) = self.holes.iter().find(|(s, e)| *s <= offset && offset < *e) {
            return Ok(Some(Extent {
                deallocated: true,
                len: end - offset,
            }));
        }
        let next = self
            .holes
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s > offset)
            .min()
            .unwrap_or(self.ram.len());
        Ok(Some(Extent {
            deallocated: false,
            len: next - offset,
        }))
    }
}

/// A reset the SCSI layer received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    Lun(u64),
    Target,
}

/// The real SCSI target, recording the resets and nexus losses that reach it.
pub(crate) struct CountingTarget {
    pub scsi: scsi::Target<4, 4, 4>,
    pub resets: Vec<Reset>,
    /// Nexus slots reported lost.
    pub lost: Vec<u16>,
}

impl Units for CountingTarget {
    fn command(
        &mut self,
        lun: u64,
        nexus: &scsi::Nexus<'_>,
        cdb: &[u8],
        expected_len: u32,
        data_in: &mut [u8],
    ) -> scsi::Step {
        self.scsi.command(lun, nexus, cdb, expected_len, data_in)
    }
    fn data_out(
        &mut self,
        lun: u64,
        nexus: &scsi::Nexus<'_>,
        cdb: &[u8],
        data: &[u8],
        data_in: &mut [u8],
    ) -> scsi::Step {
        self.scsi.data_out(lun, nexus, cdb, data, data_in)
    }
    fn complete(
        &mut self,
        lun: u64,
        io: &scsi::Io,
        result: scsi::IoResult,
        data_in: &mut [u8],
    ) -> scsi::Response {
        self.scsi.complete(lun, io, result, data_in)
    }
    fn lun_config(&self, lun: u64) -> Option<&LunConfig> {
        Units::lun_config(&self.scsi, lun)
    }
    fn lun_reset(&mut self, lun: u64) {
        self.resets.push(Reset::Lun(lun));
        self.scsi.lun_reset(lun)
    }
    fn target_reset(&mut self) {
        self.resets.push(Reset::Target);
        self.scsi.target_reset()
    }
    fn nexus_lost(&mut self, index: u16) {
        self.lost.push(index);
        self.scsi.nexus_lost(index)
    }
    fn abort_epoch(&self, lun: u64, index: u16) -> u32 {
        self.scsi.abort_epoch(lun, index)
    }
}

/// One target (index 0) with LUNs 0 and 1, each a [`TestDisk`].
pub(crate) struct TestLuns {
    target: RefCell<CountingTarget>,
    disks: RefCell<Vec<(u64, TestDisk)>>,
}

impl TestLuns {
    /// LUNs 0 and 1 of `blocks` blocks each, configured by `cfg`.
    pub fn with(blocks: u64, cfg: impl Fn(&mut LunConfig)) -> Self {
        let mut target = CountingTarget {
            scsi: scsi::Target::new(),
            resets: Vec::new(),
            lost: Vec::new(),
        };
        let mut disks = Vec::new();
        for &lun in LUNS {
            let mut c = LunConfig::new(blocks, 0x5000_0000_0000_0000 | lun);
            cfg(&mut c);
            target.scsi.add_lun(lun, c).unwrap();
            disks.push((lun, TestDisk::new(blocks)));
        }
        TestLuns {
            target: RefCell::new(target),
            disks: RefCell::new(disks),
        }
    }

    pub fn new(blocks: u64) -> Self {
        Self::with(blocks, |_| {})
    }

    pub fn disk(&self, lun: u64) -> RefMut<'_, TestDisk> {
        RefMut::map(self.disks.borrow_mut(), |d| {
            &mut d.iter_mut().find(|(n, _)| *n == lun).unwrap().1
        })
    }

    pub fn target(&self) -> RefMut<'_, CountingTarget> {
        self.target.borrow_mut()
    }
}

impl Luns for TestLuns {
    fn units<R>(&self, target: usize, f: impl FnOnce(&mut dyn Units) -> R) -> Option<R> {
        let mut t = self.target.try_borrow_mut().ok()?;
        (target == 0).then(|| f(&mut *t))
    }

    fn device<R>(
        &self,
        target: usize,
        lun: u64,
        _access: Access,
        f: impl FnOnce(&mut dyn BlockDevice) -> R,
    ) -> Option<R> {
        if target != 0 {
            return None;
        }
        let mut disks = self.disks.try_borrow_mut().ok()?;
        let (_, d) = disks.iter_mut().find(|(n, _)| *n == lun)?;
        Some(f(d))
    }
}

/// The harness's driver: 8 tasks like its connection.
pub(crate) type TestDriver = Driver<Vec<u8>, 8>;

/// Driver buffers big enough for the default LUN limits: both halves of
/// the longest COMPARE AND WRITE (255 blocks), and a 4 KiB bounce buffer.
pub(crate) fn test_driver() -> TestDriver {
    Driver::new(vec![0u8; 2 * 255 * 512], vec![0u8; 4096])
}

pub(crate) const TARGET: &str = "iqn.2024-01.test.e2e:sanboot";

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let d: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    d.chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Split a byte stream into PDUs (no digests).
pub(crate) fn split(mut s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while s.len() >= BHS_LEN {
        let l = pdu_len(&Bhs::new_unchecked(s), Digests::default()).total_len;
        out.push(s[..l].to_vec());
        s = &s[l..];
    }
    out
}

/// A connection plus everything around it: session table, the storage
/// driver and its LUNs, clock.
pub(crate) struct Harness<'a> {
    pub conn: Connection<8, 512>,
    pub sessions: SessionTable<4>,
    pub driver: TestDriver,
    pub luns: TestLuns,
    pub targets: Targets<'a>,
    pub now: Instant,
    pub closed: bool,
    /// Perform storage requests at once, as a host does
    /// (`Bound::run_storage_with`), else keep them in `pending` until
    /// [`Harness::complete`] performs and completes them, in any order.
    pub sync_storage: bool,
    /// Each request `run_storage_with` handed over, with its "may block".
    pub seen: Vec<(StorageRequest, bool)>,
    /// Play a broken host that never runs the storage work it is handed.
    pub skip_work: bool,
    pub pending: Vec<IoId>,
    deferred: HashMap<IoId, StorageRequest>,
    /// `StorageRequest::Write`s performed: one per write command, after all
    /// its Data-Out arrived.
    pub writes: usize,
    pub rx_digests: Digests,
}

pub(crate) const LUNS: &[u64] = &[0, 1];

/// The nexus slot the harness gives its session in the SCSI layer.
pub(crate) const NEXUS_SLOT: u16 = 0;

impl<'a> Harness<'a> {
    pub fn new(targets: Targets<'a>, limits: TargetLimits) -> Self {
        Self::with_luns(targets, limits, TestLuns::new(2048), test_driver())
    }

    pub fn with_luns(
        targets: Targets<'a>,
        limits: TargetLimits,
        luns: TestLuns,
        driver: TestDriver,
    ) -> Self {
        Harness {
            conn: Connection::new(Instant::from_millis(0), 1, limits, [3; 16]),
            sessions: SessionTable::new(),
            driver,
            luns,
            targets,
            now: Instant::from_millis(0),
            closed: false,
            sync_storage: true,
            seen: Vec::new(),
            skip_work: false,
            pending: Vec::new(),
            deferred: HashMap::new(),
            writes: 0,
            rx_digests: Digests::default(),
        }
    }

    /// LUN `lun`'s bytes.
    pub fn disk(&self, lun: u64) -> Ref<'_, [u8]> {
        Ref::map(self.luns.disks.borrow(), |d| {
            d.iter().find(|(n, _)| *n == lun).unwrap().1.bytes()
        })
    }

    /// Feeds one buffer of input (whole PDUs) without draining.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.conn.handle_input(
            self.now,
            bytes,
            &self.targets,
            &mut self.driver.bind(&self.luns),
        )
    }

    /// Feed bytes; return every PDU the target sends in reaction.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 0;
        loop {
            let n = self.input(&bytes[at..]);
            if n == 0 {
                break;
            }
            at += n;
            if at >= bytes.len() {
                break;
            }
        }
        assert_eq!(at, bytes.len(), "whole PDUs must be consumed");
        self.drain()
    }

    /// Takes the power-on unit attention of every LUN, as an initiator's
    /// first REQUEST SENSE (or TEST UNIT READY) after login would, so the
    /// tests' first command is not answered with it.
    pub fn clear_unit_attentions(&mut self) {
        let nexus = scsi::Nexus {
            index: NEXUS_SLOT,
            initiator: "",
            isid: [0; 6],
        };
        let mut buf = [0u8; 64];
        for &lun in LUNS {
            let step =
                self.luns
                    .target()
                    .scsi
                    .command(lun, &nexus, &[0x03, 0, 0, 0, 18, 0], 18, &mut buf);
            assert!(matches!(step, scsi::Step::Done(r) if r.status == scsi::Status::Good));
        }
    }

    fn perform(&mut self, req: &StorageRequest) -> Result<(), scsi::IoError> {
        if matches!(req, StorageRequest::Write { .. }) {
            self.writes += 1;
        }
        self.driver.bind(&self.luns).perform(req)
    }

    fn finish(&mut self, io: IoId, r: Result<(), scsi::IoError>) {
        self.conn
            .complete_storage(self.now, io, r, &mut self.driver.bind(&self.luns));
    }

    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut idle = 0;
        loop {
            let mut progress = false;
            while let Some(ev) = self.conn.poll_event() {
                progress = true;
                match ev {
                    Event::SessionRequest(req) => {
                        let _ =
                            self.driver
                                .admit(&mut self.conn, &mut self.sessions, self.now, &req);
                    }
                    Event::LoggedIn { .. } => {}
                    Event::Close => self.closed = true,
                }
            }
            if self.sync_storage {
                let (writes, seen, skip) = (&mut self.writes, &mut self.seen, self.skip_work);
                let ran = self.driver.bind(&self.luns).run_storage_with(
                    &mut self.conn,
                    self.now,
                    |req, may_block, work| {
                        *writes += usize::from(matches!(req, StorageRequest::Write { .. }));
                        seen.push((*req, may_block));
                        if !skip {
                            work();
                        }
                    },
                );
                progress |= ran > 0;
            }
            let mut reqs = Vec::new();
            while let Some(req) = self.conn.poll_storage() {
                progress = true;
                reqs.push(req);
            }
            for req in reqs {
                let io = req.io();
                if matches!(req, StorageRequest::Release { .. }) {
                    self.driver.release(io);
                } else {
                    self.pending.push(io);
                    self.deferred.insert(io, req);
                }
            }
            let mut buf = vec![0xa5u8; 300_000];
            while let Some(n) =
                self.conn
                    .poll_transmit(self.now, &mut buf, &mut self.driver.bind(&self.luns))
            {
                progress = true;
                out.push(buf[..n].to_vec());
            }
            // An event may appear during the last poll_transmit: go round once more.
            idle = if progress { 0 } else { idle + 1 };
            if idle == 2 {
                break;
            }
        }
        out
    }

    /// Performs the deferred storage request `io` now and completes it (a
    /// repeated `io` is completed again without storage work: a stray).
    pub fn complete(&mut self, io: IoId) -> Vec<Vec<u8>> {
        let r = match self.deferred.remove(&io) {
            Some(req) => self.perform(&req),
            None => Ok(()),
        };
        self.finish(io, r);
        self.drain()
    }

    /// The connection is lost (TCP reset): abort it and run its releases.
    pub fn abort(&mut self) {
        self.conn.abort(&mut self.driver.bind(&self.luns));
        self.drain();
    }
}

pub(crate) fn targets(
    chap: Option<ChapCredentials<'static>>,
    mutual: Option<ChapCredentials<'static>>,
) -> &'static [TargetConfig<'static>] {
    let t = std::boxed::Box::new([TargetConfig {
        name: TARGET,
        initiators: &[],
        chap,
        mutual_chap: mutual,
        initiator_chap: &[],
        luns: LUNS,
        digest: crate::iscsi::DigestPolicy::Allowed,
    }]);
    std::boxed::Box::leak(t)
}

pub(crate) fn portal(t: &'static [TargetConfig<'static>]) -> Targets<'static> {
    Targets {
        targets: t,
        portal: "192.0.2.1:3260",
        portal_group_tag: 1,
    }
}

pub(crate) fn bhs(p: &[u8]) -> Bhs<&[u8]> {
    Bhs::new_checked(p).unwrap()
}

pub(crate) fn keys(p: &[u8]) -> Vec<(std::string::String, std::string::String)> {
    let l = pdu_len(&bhs(p), Digests::default());
    pairs(&p[l.data_offset..l.data_offset + l.data_len])
        .map(|kv| {
            let kv = kv.unwrap();
            (kv.key.into(), kv.value.into())
        })
        .collect()
}

pub(crate) fn key<'k>(
    k: &'k [(std::string::String, std::string::String)],
    name: &str,
) -> Option<&'k str> {
    k.iter().find(|(a, _)| a == name).map(|(_, v)| v.as_str())
}

/// Build a login request PDU.
pub(crate) fn login_pdu(
    csg: Stage,
    nsg: Stage,
    transit: bool,
    isid_q: u8,
    cmd_sn: u32,
    exp_stat_sn: u32,
    text: &str,
) -> Vec<u8> {
    let data: Vec<u8> = text.replace('\n', "\0").into_bytes();
    let mut p = vec![0u8; BHS_LEN + pad4(data.len())];
    LoginRequest {
        transit,
        cont: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x40, 0, 0x27, 0x23, 0, isid_q],
        tsih: 0,
        itt: 0x1000 + u32::from(isid_q),
        cid: 0,
        cmd_sn,
        exp_stat_sn,
        data_len: data.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + data.len()].copy_from_slice(&data);
    p
}

pub(crate) fn command(
    itt: u32,
    cmd_sn: u32,
    cdb: &[u8],
    edtl: u32,
    read: bool,
    write: bool,
    immediate: &[u8],
    final_bit: bool,
) -> Vec<u8> {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    let mut p = vec![0u8; BHS_LEN + pad4(immediate.len())];
    ScsiCommand {
        immediate: false,
        final_bit,
        read,
        write,
        attr: 1,
        lun: 1 << 48,
        itt,
        edtl,
        cmd_sn,
        exp_stat_sn: 0,
        cdb: c,
        ahs_words: 0,
        data_len: immediate.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + immediate.len()].copy_from_slice(immediate);
    p
}

pub(crate) fn data_out(
    itt: u32,
    ttt: u32,
    data_sn: u32,
    offset: u32,
    data: &[u8],
    final_bit: bool,
) -> Vec<u8> {
    let mut p = vec![0u8; BHS_LEN + pad4(data.len())];
    DataOut {
        final_bit,
        lun: 1 << 48,
        itt,
        ttt,
        exp_stat_sn: 0,
        data_sn,
        buffer_offset: offset,
        data_len: data.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p[BHS_LEN..BHS_LEN + data.len()].copy_from_slice(data);
    p
}

pub(crate) fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

pub(crate) fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

/// Log in like iPXE does (the captured bytes), return the harness.
pub(crate) fn ipxe_logged_in(limits: TargetLimits) -> Harness<'static> {
    let mut h = Harness::new(portal(targets(None, None)), limits);
    let stream = hex(include_str!("testdata/ipxe-stream.hex"));
    let pdus = split(&stream);
    let r1 = h.feed(&pdus[0]);
    let r2 = h.feed(&pdus[1]);
    assert_eq!(r1.len(), 1);
    assert_eq!(r2.len(), 1);
    assert!(h.conn.is_full_feature());
    h.clear_unit_attentions();
    h
}

mod chap_per_initiator;
mod discovery_tmf;
mod ipxe;
mod keepalive;
mod login_tests;
mod storage;
mod transfer;
