#![no_main]
//! The whole storage path: `Connection` + the real storage `Driver` + a
//! real `scsi::Target` + RAM disks that fail some blocks, run out of
//! space, fail flushes and shrink, after iPXE's real login.
//!
//! The input after the first byte is a list of operations: raw bytes fed
//! as they are, and well-formed SCSI commands (READ/WRITE/VERIFY/ORWRITE/
//! COMPARE AND WRITE/WRITE SAME/UNMAP/GET LBA STATUS/EXTENDED COPY/...)
//! with fuzzed fields, their Data-Out (answering the target's R2Ts, right
//! or wrong), task management, storage completions in any order, and
//! device changes. It must never panic; every Data-In that goes out with
//! data of a READ must be what the disk holds; a READ touching a failing
//! or missing block never ends GOOD; and after the connection is aborted
//! and its outstanding storage finished, the driver holds nothing.
use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sanboot_core::block::{BlockDevice, BlockError, RamDisk};
use sanboot_core::iscsi::pdu::*;
use sanboot_core::iscsi::*;
use sanboot_core::scsi::{self, LunConfig, Units};
use sanboot_core::time::Instant;

const BLOCKS: u64 = 256;
const LOGIN: &[u8] = include_bytes!("../../core/src/iscsi/testdata/ipxe-login.bin");
const TASKS: usize = 8;
/// MAXIMUM COMPARE AND WRITE LENGTH of the LUNs; the driver collects twice that.
const MAX_CAW: u8 = 16;

/// A RAM disk whose bad blocks fail, which can be full, fail flushes, shrink.
struct Flaky {
    ram: RamDisk<Vec<u8>>,
    seed: u8,
    no_space: bool,
    fail_flush: bool,
}

impl Flaky {
    fn bad_read(&self, lba: u64) -> bool {
        (lba.wrapping_mul(37) ^ u64::from(self.seed)).is_multiple_of(41)
    }
    fn bad_write(&self, lba: u64) -> bool {
        (lba.wrapping_mul(53) ^ u64::from(self.seed)).is_multiple_of(43)
    }
    fn any(offset: u64, len: u64, bad: impl Fn(u64) -> bool) -> bool {
        len > 0 && (offset / 512..=(offset + len - 1) / 512).any(bad)
    }
}

impl BlockDevice for Flaky {
    fn len(&self) -> u64 {
        self.ram.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        if Self::any(offset, buf.len() as u64, |l| self.bad_read(l)) {
            return Err(BlockError::Io);
        }
        self.ram.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.no_space {
            return Err(BlockError::NoSpace);
        }
        if Self::any(offset, data.len() as u64, |l| self.bad_write(l)) {
            return Err(BlockError::Io);
        }
        self.ram.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.fail_flush {
            return Err(BlockError::Io);
        }
        Ok(())
    }
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.seed & 0x80 != 0 {
            // Some devices cannot: the driver writes zeros instead.
            return Err(BlockError::Unsupported);
        }
        self.ram.deallocate(offset, len)
    }
}

struct Luns {
    target: RefCell<scsi::Target<2, 4, 4>>,
    disks: RefCell<[Flaky; 2]>,
}

impl sanboot_core::iscsi::Luns for Luns {
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
        Some(f(disks.get_mut(usize::try_from(lun).ok()?)?))
    }
}

static TARGETS: [TargetConfig<'static>; 1] = [TargetConfig {
    name: "iqn.2024-01.test.e2e:sanboot",
    initiators: &[],
    chap: None,
    mutual_chap: None,
    initiator_chap: &[],
    luns: &[0, 1],
    digest: sanboot_core::iscsi::DigestPolicy::Allowed,
}];

/// Reads the input a byte at a time (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// What the initiator sent as a READ, to check what comes back.
#[derive(Clone, Copy)]
struct ReadCmd {
    lun: u64,
    lba: u64,
}

struct Task {
    /// Data-Out to send when the target asks for it.
    payload: Vec<u8>,
    read: Option<ReadCmd>,
    /// Data-In bytes received so far.
    received: u32,
}

struct R2tWant {
    itt: u32,
    ttt: u32,
    offset: u32,
    len: u32,
}

struct World {
    conn: Connection<TASKS, 512>,
    sessions: SessionTable<2>,
    driver: Driver<Vec<u8>, TASKS>,
    luns: Luns,
    deferred: Vec<(IoId, StorageRequest)>,
    sync: bool,
    tasks: HashMap<u32, Task>,
    r2ts: Vec<R2tWant>,
    tx: Vec<u8>,
    now: u64,
    /// Only this harness's own commands were sent (no raw bytes that could
    /// reuse their task tags): the READ data checks apply.
    strict: bool,
    /// Input held back to be fed in one go, without polling storage or
    /// output in between (as a host does with one large read).
    batch: Option<Vec<u8>>,
}

impl World {
    fn feed(&mut self, bytes: &[u8], targets: &Targets<'_>) {
        if let Some(b) = &mut self.batch {
            b.extend_from_slice(bytes);
            return;
        }
        let mut at = 0;
        while at < bytes.len() {
            let n = self.conn.handle_input(
                Instant::from_millis(self.now),
                &bytes[at..],
                targets,
                &mut self.driver.bind(&self.luns),
            );
            if n == 0 {
                break;
            }
            at += n;
        }
        self.drain();
    }

    fn finish(&mut self, io: IoId, req: &StorageRequest) {
        let r = self.driver.bind(&self.luns).perform(req);
        self.conn.complete_storage(
            Instant::from_millis(self.now),
            io,
            r,
            &mut self.driver.bind(&self.luns),
        );
    }

    fn drain(&mut self) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(ev) = self.conn.poll_event() {
                progress = true;
                if let Event::SessionRequest(req) = ev {
                    let now = Instant::from_millis(self.now);
                    let _ = self
                        .driver
                        .admit(&mut self.conn, &mut self.sessions, now, &req);
                }
            }
            let mut reqs = Vec::new();
            while let Some(req) = self.conn.poll_storage() {
                progress = true;
                reqs.push(req);
            }
            for req in reqs {
                match req {
                    StorageRequest::Release { io } => self.driver.release(io),
                    r if self.sync => self.finish(r.io(), &r),
                    r => self.deferred.push((r.io(), r)),
                }
            }
            while let Some(n) = self.conn.poll_transmit(
                Instant::from_millis(self.now),
                &mut self.tx,
                &mut self.driver.bind(&self.luns),
            ) {
                progress = true;
                self.check_output(n);
            }
            if !progress {
                return;
            }
        }
    }

    /// Checks one PDU the target sent, and notes its R2Ts.
    fn check_output(&mut self, n: usize) {
        assert!(n >= BHS_LEN && n <= self.tx.len());
        let pdu = self.tx[..n].to_vec();
        let bhs = Bhs::new_checked(&pdu[..]).expect("our PDU has a BHS");
        let full = self.conn.is_full_feature();
        let digests = Digests {
            header: full && self.conn.params().header_digest,
            data: full && self.conn.params().data_digest,
        };
        let l = pdu_len(&bhs, digests);
        assert_eq!(l.total_len, n, "the PDU is as long as it says");
        match bhs.opcode() {
            Opcode::R2t => {
                let r = R2t::parse(&bhs).expect("R2T parses");
                self.r2ts.push(R2tWant {
                    itt: r.itt,
                    ttt: r.ttt,
                    offset: r.buffer_offset,
                    len: r.desired_len,
                });
            }
            Opcode::DataIn => {
                let d = DataIn::parse(&bhs).expect("Data-In parses");
                let data = &pdu[l.data_offset..l.data_offset + l.data_len];
                if let Some(t) = self.tasks.get_mut(&d.itt).filter(|_| self.strict) {
                    assert_eq!(d.buffer_offset, t.received, "Data-In in order");
                    t.received += data.len() as u32;
                    if let Some(rd) = t.read {
                        // A READ's data is exactly the disk's bytes now,
                        // and none of it comes from a failing block.
                        let disks = self.luns.disks.borrow();
                        let disk = &disks[rd.lun as usize];
                        let at = rd.lba * 512 + u64::from(d.buffer_offset);
                        let want = disk.ram.0.get(at as usize..at as usize + data.len());
                        assert_eq!(Some(data), want, "READ data is what the disk holds");
                        assert!(
                            !Flaky::any(at, data.len() as u64, |b| disk.bad_read(b)),
                            "data of a failing block was sent"
                        );
                    }
                }
                if d.status.is_some() {
                    self.tasks.remove(&d.itt);
                }
            }
            Opcode::ScsiResponse => {
                let r = ScsiResponse::parse(&bhs).expect("SCSI Response parses");
                self.tasks.remove(&r.itt);
                self.r2ts.retain(|w| w.itt != r.itt);
            }
            _ => {}
        }
    }

    /// Answers the oldest R2T with its Data-Out (maybe wrong).
    fn data_out(&mut self, inp: &mut Input<'_>, targets: &Targets<'_>) {
        if self.r2ts.is_empty() {
            return;
        }
        let pick = usize::from(inp.u8()) % self.r2ts.len();
        let w = self.r2ts.remove(pick);
        let flags = inp.u8();
        let payload = self
            .tasks
            .get(&w.itt)
            .map(|t| t.payload.clone())
            .unwrap_or_default();
        let mut offset = w.offset;
        let end = w.offset + w.len;
        let mut sn = 0u32;
        let mut bytes = Vec::new();
        while offset < end {
            let n = (end - offset).min(8192);
            let mut data: Vec<u8> = (offset..offset + n)
                .map(|i| payload.get(i as usize).copied().unwrap_or(i as u8))
                .collect();
            // Now and then a wrong DataSN, offset or length.
            let (mut dsn, mut off) = (sn, offset);
            match flags & 0x1f {
                1 => dsn = sn.wrapping_add(3),
                2 => off = offset.wrapping_add(512),
                3 => data.truncate(data.len() / 2),
                _ => {}
            }
            let last = offset + n == end;
            let mut p = vec![0u8; BHS_LEN + ((data.len() + 3) & !3)];
            DataOut {
                final_bit: last,
                lun: 1 << 48,
                itt: w.itt,
                ttt: w.ttt,
                exp_stat_sn: 0,
                data_sn: dsn,
                buffer_offset: off,
                data_len: data.len() as u32,
            }
            .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
            p[BHS_LEN..BHS_LEN + data.len()].copy_from_slice(&data);
            bytes.extend_from_slice(&p);
            offset += n;
            sn += 1;
            // Feed in pieces: the target may answer in between.
            if flags & 0x20 != 0 || last {
                self.feed(&std::mem::take(&mut bytes), targets);
            }
        }
    }

    /// Finishes some deferred storage, in an input-chosen order.
    fn complete(&mut self, inp: &mut Input<'_>) {
        let mut k = usize::from(inp.u8() % 4) + 1;
        while k > 0 && !self.deferred.is_empty() {
            let i = usize::from(inp.u8()) % self.deferred.len();
            let (io, req) = self.deferred.swap_remove(i);
            self.finish(io, &req);
            self.drain();
            k -= 1;
        }
    }
}

fn be(c: &mut [u8], at: usize, v: &[u8]) {
    c[at..at + v.len()].copy_from_slice(v);
}

fn unmap_list(inp: &mut Input<'_>) -> Vec<u8> {
    let n = usize::from(inp.u8() % 4);
    let mut p = vec![0u8; 8];
    be(&mut p, 0, &((6 + 16 * n) as u16).to_be_bytes());
    be(&mut p, 2, &((16 * n) as u16).to_be_bytes());
    for _ in 0..n {
        p.extend_from_slice(&u64::from(inp.u8()).to_be_bytes());
        p.extend_from_slice(&u32::from(inp.u8() % 64).to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

fn xcopy_list(lun: u64, inp: &mut Input<'_>) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[0] = inp.u8();
    be(&mut p, 2, &32u16.to_be_bytes());
    be(&mut p, 8, &28u32.to_be_bytes());
    let mut t = [0u8; 32];
    t[0] = 0xe4;
    t[4] = 0x01;
    t[5] = 0x03;
    t[7] = 8;
    be(&mut t, 8, &(0x5000_0000_0000_0000u64 | lun).to_be_bytes());
    be(&mut t, 29, &[0, 2, 0]);
    p.extend_from_slice(&t);
    let mut s = [0u8; 28];
    s[0] = 0x02;
    be(&mut s, 2, &24u16.to_be_bytes());
    be(&mut s, 10, &u16::from(inp.u8() % 80).to_be_bytes());
    be(&mut s, 12, &u64::from(inp.u8()).to_be_bytes());
    be(&mut s, 20, &u64::from(inp.u8()).to_be_bytes());
    p.extend_from_slice(&s);
    p
}

/// Builds one SCSI command from the input; returns the PDU.
fn scsi_command(w: &mut World, inp: &mut Input<'_>, itt: u32, cmd_sn: u32) -> Vec<u8> {
    let kind = inp.u8();
    let lba = u64::from(inp.u8());
    let flags = inp.u8();
    let mut blocks = u32::from(inp.u8() % 48);
    if flags & 0xc0 == 0xc0 {
        // Far more than MAXIMUM TRANSFER LENGTH, or than the LUN.
        blocks = if flags & 1 != 0 { u32::MAX } else { 0x1_0000 };
    }
    let lun: u64 = match flags & 0x30 {
        0x30 => 5, // no such LUN
        0x20 => 0,
        _ => 1,
    };
    let disks = w.luns.disks.borrow();
    let disk = disks.get(lun as usize);
    let current = |n: u64| -> Vec<u8> {
        let at = (lba * 512) as usize;
        disk.and_then(|d| d.ram.0.get(at..at + n as usize))
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| vec![0; n as usize])
    };
    let mut cdb = [0u8; 16];
    let rw16 = |cdb: &mut [u8; 16], op: u8, f: u8, n: u32| {
        cdb[0] = op;
        cdb[1] = f;
        be(cdb, 2, &lba.to_be_bytes());
        be(cdb, 10, &n.to_be_bytes());
    };
    let bytes = u64::from(blocks) * 512;
    let small = bytes.min(1 << 20) as usize;
    let mut read = None;
    let (edtl, r, wr, payload): (u64, bool, bool, Vec<u8>) = match kind % 14 {
        0 => {
            rw16(&mut cdb, 0x88, flags & 0x08, blocks);
            read = Some(ReadCmd { lun, lba });
            (bytes, true, false, Vec::new())
        }
        1 | 2 => {
            rw16(
                &mut cdb,
                if kind % 14 == 1 { 0x8a } else { 0x8e },
                flags & 0x08,
                blocks,
            );
            let p = (0..small).map(|i| (i as u8) ^ kind).collect();
            (bytes, false, true, p)
        }
        3 => {
            // VERIFY BYTCHK 0/1/3, data matching the disk or not.
            let bytchk = [0u8, 1, 3, 1][usize::from(flags & 3)];
            rw16(&mut cdb, 0x8f, bytchk << 1, blocks);
            let n = if bytchk == 3 { 512 } else { small as u64 };
            let mut p = current(n);
            if flags & 0x04 != 0 {
                if let Some(b) = p.get_mut(usize::from(inp.u8()) * 3) {
                    *b ^= 1;
                }
            }
            let edtl = if bytchk == 0 { 0 } else { n };
            (edtl, false, bytchk != 0, p)
        }
        4 => {
            rw16(&mut cdb, 0x8b, flags & 0x08, blocks);
            (bytes, false, true, vec![inp.u8(); small])
        }
        5 => {
            // COMPARE AND WRITE, the compare half matching the disk or not.
            let n = (blocks % u32::from(MAX_CAW + 2)) as u8;
            cdb[0] = 0x89;
            cdb[1] = flags & 0x08;
            be(&mut cdb, 2, &lba.to_be_bytes());
            cdb[13] = n;
            let len = u64::from(n) * 512;
            let mut p = current(len);
            if flags & 0x04 != 0 {
                if let Some(b) = p.get_mut(usize::from(inp.u8())) {
                    *b ^= 0x80;
                }
            }
            p.extend((0..len).map(|i| i as u8 ^ 0x5a));
            (2 * len, false, true, p)
        }
        6 => {
            // WRITE SAME(16): UNMAP / NDOB bits from the flags.
            rw16(&mut cdb, 0x93, flags & 0x09, blocks);
            let ndob = flags & 0x01 != 0;
            let p = vec![if flags & 2 != 0 { 0 } else { inp.u8() }; 512];
            if ndob {
                (0, false, false, Vec::new())
            } else {
                (512, false, true, p)
            }
        }
        7 => {
            let p = unmap_list(inp);
            cdb[0] = 0x42;
            be(&mut cdb, 7, &(p.len() as u16).to_be_bytes());
            (p.len() as u64, false, true, p)
        }
        8 => {
            rw16(&mut cdb, 0x91, 0, blocks);
            (0, false, false, Vec::new())
        }
        9 => {
            rw16(&mut cdb, 0x9e, 0x12, 24);
            (24, true, false, Vec::new())
        }
        10 => {
            let p = xcopy_list(lun, inp);
            cdb[0] = 0x83;
            be(&mut cdb, 10, &(p.len() as u32).to_be_bytes());
            (p.len() as u64, false, true, p)
        }
        11 => {
            // READ CAPACITY(16)
            cdb[0] = 0x9e;
            cdb[1] = 0x10;
            be(&mut cdb, 10, &32u32.to_be_bytes());
            (32, true, false, Vec::new())
        }
        12 => {
            // RESERVE(6) / RELEASE(6) / TEST UNIT READY / REQUEST SENSE
            cdb[0] = [0x16, 0x17, 0x00, 0x03][usize::from(flags & 3)];
            cdb[4] = 18;
            (
                u64::from(cdb[0] == 0x03) * 18,
                cdb[0] == 0x03,
                false,
                Vec::new(),
            )
        }
        _ => {
            // Any CDB at all.
            cdb.copy_from_slice(&{
                let mut c = [0u8; 16];
                let b = inp.bytes(16);
                c[..b.len()].copy_from_slice(b);
                c
            });
            (
                u64::from(inp.u8()) * 64,
                flags & 2 != 0,
                flags & 4 != 0,
                Vec::new(),
            )
        }
    };
    // Now and then an EDTL that does not match the command.
    let mut edtl = u32::try_from(edtl).unwrap_or(u32::MAX);
    if flags & 0xc0 == 0x40 {
        edtl = edtl
            .wrapping_add(u32::from(inp.u8()) * 16)
            .wrapping_sub(512);
    }
    w.tasks.insert(
        itt,
        Task {
            payload,
            read,
            received: 0,
        },
    );
    let mut p = vec![0u8; BHS_LEN];
    ScsiCommand {
        immediate: flags & 0xc0 == 0x80,
        final_bit: true,
        read: r,
        write: wr,
        attr: 1,
        lun: lun << 48,
        itt,
        edtl,
        cmd_sn,
        exp_stat_sn: 0,
        cdb,
        ahs_words: 0,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..BHS_LEN]));
    p
}

fn tmf(function: TmfFunction, itt: u32, ref_itt: u32, cmd_sn: u32) -> Vec<u8> {
    let mut t = vec![0u8; BHS_LEN];
    TaskMgmtRequest {
        immediate: true,
        function,
        lun: 1 << 48,
        itt,
        ref_task_tag: ref_itt,
        cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn: cmd_sn.wrapping_sub(1),
        exp_data_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut t[..]));
    t
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mode = inp.u8();
    let targets = Targets {
        targets: &TARGETS,
        portal: "192.0.2.1:3260",
        portal_group_tag: 1,
    };
    let mut target = scsi::Target::new();
    for lun in 0..2u64 {
        let mut c = LunConfig::new(BLOCKS, 0x5000_0000_0000_0000 | lun);
        c.thin_provisioning = lun == 0 || mode & 0x10 != 0;
        c.write_cache = mode & 0x20 == 0;
        c.max_compare_and_write_blocks = MAX_CAW;
        c.max_transfer_blocks = 128;
        c.max_write_same_blocks = BLOCKS;
        target.add_lun(lun, c).expect("two LUNs fit");
    }
    let disk = |seed: u8| Flaky {
        ram: RamDisk(
            (0..BLOCKS as usize * 512)
                .map(|i| (i / 512) as u8 ^ i as u8)
                .collect(),
        ),
        seed,
        no_space: false,
        fail_flush: false,
    };
    let mut w = World {
        conn: Connection::new(Instant::from_millis(0), 1, TargetLimits::default(), [9; 16]),
        sessions: SessionTable::new(),
        driver: Driver::new(
            vec![0u8; 2 * usize::from(MAX_CAW) * 512],
            vec![0u8; 1024 << (mode & 3)],
        ),
        luns: Luns {
            target: RefCell::new(target),
            disks: RefCell::new([disk(mode), disk(mode.wrapping_mul(3))]),
        },
        deferred: Vec::new(),
        sync: mode & 0x40 == 0,
        tasks: HashMap::new(),
        r2ts: Vec::new(),
        tx: vec![0u8; 70_000],
        now: 0,
        strict: true,
        batch: None,
    };
    if mode & 0x80 == 0 {
        w.feed(LOGIN, &targets);
        if mode & 0x08 == 0 {
            // Take each LUN's power-on unit attention as an initiator's first
            // REQUEST SENSE would, so commands reach storage from the start.
            let nexus = scsi::Nexus {
                index: 0,
                initiator: "",
                isid: [0; 6],
            };
            for lun in 0..2 {
                let mut buf = [0u8; 32];
                let _ = w.luns.target.borrow_mut().command(
                    lun,
                    &nexus,
                    &[0x03, 0, 0, 0, 18, 0],
                    18,
                    &mut buf,
                );
            }
        }
    }
    let mut itt = 0x100u32;
    let mut cmd_sn = 0u32;
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 2_000 && !w.conn.is_closed() {
        steps += 1;
        match inp.u8() % 10 {
            0 => {
                // Raw bytes, as they come.
                let n = usize::from(inp.u8()) * 4;
                let raw = inp.bytes(n).to_vec();
                w.strict = false;
                w.feed(&raw, &targets);
            }
            1..=4 => {
                let p = scsi_command(&mut w, &mut inp, itt, cmd_sn);
                if p[0] & 0x40 == 0 {
                    cmd_sn = cmd_sn.wrapping_add(1);
                }
                itt += 1;
                w.feed(&p, &targets);
            }
            5 | 6 => w.data_out(&mut inp, &targets),
            7 => w.complete(&mut inp),
            8 => {
                let f = match inp.u8() % 6 {
                    0 | 1 => TmfFunction::AbortTask,
                    2 => TmfFunction::AbortTaskSet,
                    3 => TmfFunction::LogicalUnitReset,
                    4 => TmfFunction::ClearTaskSet,
                    _ => TmfFunction::TargetWarmReset,
                };
                let back = u32::from(inp.u8() % 8) + 1;
                let p = tmf(f, 0x8000_0000 | itt, itt.wrapping_sub(back), cmd_sn);
                itt += 1;
                w.feed(&p, &targets);
            }
            _ => {
                // The devices change under the running target.
                let b = inp.u8();
                let which = usize::from(b & 1);
                match (b >> 1) % 5 {
                    0 => {
                        let d = &mut w.luns.disks.borrow_mut()[which];
                        d.no_space = !d.no_space;
                    }
                    1 => {
                        let d = &mut w.luns.disks.borrow_mut()[which];
                        d.fail_flush = !d.fail_flush;
                    }
                    2 => {
                        let d = &mut w.luns.disks.borrow_mut()[which];
                        let keep = d.ram.0.len() * usize::from(inp.u8()) / 256;
                        d.ram.0.truncate(keep & !511);
                    }
                    3 => match w.batch.take() {
                        // Start holding input back, or feed what was held.
                        None => w.batch = Some(Vec::new()),
                        Some(held) => w.feed(&held, &targets),
                    },
                    _ => w.now += 1000,
                }
            }
        }
    }
    if let Some(held) = w.batch.take() {
        w.feed(&held, &targets);
    }
    // The connection is lost: every task ends, storage still in flight is
    // finished by the host, and the driver must hold nothing afterwards.
    w.conn.abort(&mut w.driver.bind(&w.luns));
    while let Some((io, req)) = w.deferred.pop() {
        w.finish(io, &req);
    }
    while let Some(req) = w.conn.poll_storage() {
        match req {
            StorageRequest::Release { io } => w.driver.release(io),
            r => panic!("storage request {r:?} after abort"),
        }
    }
    assert!(w.conn.is_closed());
    assert!(
        w.driver.is_idle(),
        "the driver holds state after the connection ended"
    );
});
