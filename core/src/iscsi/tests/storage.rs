//! The storage driver as an initiator sees it: failing and shrinking
//! devices, bounded buffering of compound commands, and everything a task
//! reserved being released however it ends.

use super::transfer::{login_with, pattern, r2ts, tmf};
use super::*;

/// Every Data-Out through R2Ts, 8 KiB Data-In PDUs.
const OPS: &str = "InitialR2T=Yes\nImmediateData=No\nMaxBurstLength=65536\nMaxOutstandingR2T=1\nMaxRecvDataSegmentLength=8192";

/// A scripted initiator: numbers its commands and answers R2Ts.
struct Ini {
    h: Harness<'static>,
    cmd_sn: u32,
    itt: u32,
}

/// How one command ended, from the PDUs the target sent for it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: u8,
    /// Sense key, ASC, ASCQ.
    sense: Option<(u8, u8, u8)>,
    /// INFORMATION field of the sense data, when valid.
    info: Option<u32>,
    /// Data-In payload, in order.
    data: Vec<u8>,
}

fn outcome(out: &[Vec<u8>], itt: u32) -> Outcome {
    let mut statuses = Vec::new();
    let mut sense = None;
    let mut info = None;
    let mut data = Vec::new();
    for p in out {
        let b = bhs(p);
        match b.opcode() {
            Opcode::DataIn => {
                let d = DataIn::parse(&b).unwrap();
                if d.itt != itt {
                    continue;
                }
                assert_eq!(d.buffer_offset as usize, data.len(), "Data-In in order");
                data.extend_from_slice(&p[48..48 + d.data_len as usize]);
                statuses.extend(d.status);
            }
            Opcode::ScsiResponse => {
                let r = ScsiResponse::parse(&b).unwrap();
                if r.itt != itt {
                    continue;
                }
                statuses.push(r.status);
                if r.data_len >= 2 {
                    let n = u16::from_be_bytes([p[48], p[49]]) as usize;
                    let s = &p[50..50 + n];
                    sense = Some((s[2] & 0x0f, s[12], s[13]));
                    if s[0] & 0x80 != 0 {
                        info = Some(u32::from_be_bytes([s[3], s[4], s[5], s[6]]));
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(statuses.len(), 1, "exactly one status for task {itt:#x}");
    Outcome {
        status: statuses[0],
        sense,
        info,
        data,
    }
}

impl Ini {
    fn new(luns: TestLuns, driver: TestDriver) -> Self {
        let h = Harness::with_luns(
            portal(targets(None, None)),
            TargetLimits::default(),
            luns,
            driver,
        );
        Ini {
            h: login_with(h, OPS),
            cmd_sn: 0,
            itt: 0x100,
        }
    }

    fn plain() -> Self {
        Self::new(TestLuns::new(2048), test_driver())
    }

    fn thin() -> Self {
        Self::new(
            TestLuns::with(2048, |c| c.thin_provisioning = true),
            test_driver(),
        )
    }

    /// Sends a command (no immediate data): its ITT and the target's answer.
    fn send(&mut self, cdb: &[u8], edtl: u32, read: bool, write: bool) -> (u32, Vec<Vec<u8>>) {
        let itt = self.itt;
        self.itt += 1;
        let sn = self.cmd_sn;
        self.cmd_sn += 1;
        (
            itt,
            self.h
                .feed(&command(itt, sn, cdb, edtl, read, write, &[], true)),
        )
    }

    /// Answers task `itt`'s R2Ts (those in `out` and any that follow) from
    /// `data` in 8 KiB Data-Out PDUs; returns all PDUs seen.
    fn answer(&mut self, itt: u32, data: &[u8], out: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut queue: Vec<R2t> = r2ts(&out).into_iter().filter(|r| r.itt == itt).collect();
        let mut all = out;
        while !queue.is_empty() {
            let r = queue.remove(0);
            let end = r.buffer_offset + r.desired_len;
            let (mut o, mut sn) = (r.buffer_offset, 0);
            while o < end {
                let n = (end - o).min(8192);
                let piece = &data[o as usize..(o + n) as usize];
                let got = self
                    .h
                    .feed(&data_out(itt, r.ttt, sn, o, piece, o + n == end));
                queue.extend(r2ts(&got).into_iter().filter(|r| r.itt == itt));
                all.extend(got);
                o += n;
                sn += 1;
            }
        }
        all
    }

    /// Runs a command to its end: `data` is its Data-Out (EDTL bytes).
    fn run(&mut self, cdb: &[u8], edtl: u32, read: bool, data: &[u8]) -> Outcome {
        let (itt, out) = self.send(cdb, edtl, read, !data.is_empty());
        let all = self.answer(itt, data, out);
        outcome(&all, itt)
    }

    fn read(&mut self, lba: u64, blocks: u32) -> Outcome {
        self.run(&read16(lba, blocks), blocks * 512, true, &[])
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Outcome {
        let blocks = (data.len() / 512) as u32;
        self.run(&rw16(0x8a, lba, blocks, 0), data.len() as u32, false, data)
    }

    fn tmf(&mut self, f: TmfFunction, ref_itt: u32) -> TmfResponse {
        let out = self
            .h
            .feed(&tmf(f, 0x9000 + self.itt, ref_itt, self.cmd_sn, 0));
        self.itt += 1;
        TaskMgmtResponse::parse(&bhs(&out[0])).unwrap().response
    }

    fn disk(&self) -> core::cell::Ref<'_, [u8]> {
        self.h.disk(1)
    }

    fn blocks(&self, lba: u64, n: u64) -> Vec<u8> {
        self.disk()[(lba * 512) as usize..((lba + n) * 512) as usize].to_vec()
    }

    fn idle(&self) -> bool {
        self.h.driver.is_idle()
    }
}

/// READ(16)-shaped CDB: `op`, flags byte, 8-byte LBA, 4-byte count.
fn rw16(op: u8, lba: u64, blocks: u32, flags: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    rw16(0x88, lba, blocks, 0)
}

/// VERIFY(16) with BYTCHK `bytchk`.
fn verify16(lba: u64, blocks: u32, bytchk: u8) -> [u8; 16] {
    rw16(0x8f, lba, blocks, bytchk << 1)
}

fn orwrite16(lba: u64, blocks: u32) -> [u8; 16] {
    rw16(0x8b, lba, blocks, 0)
}

fn compare_and_write(lba: u64, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

const SYNC_CACHE_10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];

const GOOD: u8 = 0;
const CHECK: u8 = 2;
const BUSY: u8 = 8;
const MEDIUM_READ: Option<(u8, u8, u8)> = Some((3, 0x11, 0));
const MEDIUM_WRITE: Option<(u8, u8, u8)> = Some((3, 0x0c, 0));

// ------------------------------------------------------- failing devices

#[test]
fn read_of_a_failing_block_is_medium_error_not_data() {
    let mut i = Ini::plain();
    i.h.luns.disk(1).bad_reads.push(50);
    let o = i.read(50, 1);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    assert!(o.data.is_empty(), "no byte of a failed read is sent");
    // Its neighbours still read, and the session goes on.
    let o = i.read(49, 1);
    assert_eq!(o.status, GOOD);
    assert_eq!(o.data, i.blocks(49, 1));
}

/// VERIFY with BYTCHK 00b checks the medium: blocks that cannot be read
/// fail it, blocks that can pass it, and nothing is written.
#[test]
fn verify_without_bytchk_reads_the_medium() {
    let mut i = Ini::plain();
    let verify10 = |lba: u32, blocks: u16| {
        let mut c = [0u8; 10];
        c[0] = 0x2f;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    };
    let o = i.run(&verify10(40, 32), 0, false, &[]);
    assert_eq!((o.status, o.sense), (GOOD, None));
    let reads = i.h.luns.disk(1).reads;
    assert!(reads > 0, "VERIFY must read the blocks it verifies");
    i.h.luns.disk(1).bad_reads.push(50);
    let o = i.run(&verify10(40, 32), 0, false, &[]);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    assert_eq!(i.h.luns.disk(1).writes, 0);
}

/// The read is split into 8 KiB Data-In PDUs; a failure in any of them
/// (not only the first) ends the command with MEDIUM ERROR, never GOOD,
/// and nothing of the failed piece goes out.
#[test]
fn read_failing_in_a_later_data_in_pdu() {
    // 128 blocks = 8 PDUs of 16 blocks; fail block 40 (3rd PDU) and,
    // separately, block 127 (the last PDU, which would carry GOOD).
    for (bad, sent_pdus) in [(40u64, 2usize), (127, 7), (16, 1)] {
        let mut i = Ini::plain();
        i.h.luns.disk(1).bad_reads.push(100 + bad);
        let o = i.read(100, 128);
        assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ), "bad block {bad}");
        assert_eq!(o.data.len(), sent_pdus * 8192, "bad block {bad}");
        assert_eq!(o.data, i.blocks(100, sent_pdus as u64 * 16));
        assert_eq!(i.h.conn.stats().protocol_errors, 0);
        // The task ended: its storage state is gone.
        assert!(i.idle());
    }
}

#[test]
fn write_to_a_failing_block_is_medium_error_write_error() {
    let mut i = Ini::plain();
    // 64 blocks in 8 Data-Out PDUs; block 330 is in the 4th.
    i.h.luns.disk(1).bad_writes.push(330);
    let data = pattern(64 * 512, 1);
    let o = i.write(300, &data);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    // One block on its own, and the session goes on.
    let o = i.write(330, &data[..512]);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    let o = i.write(400, &data[..4096]);
    assert_eq!(o.status, GOOD);
    assert_eq!(i.blocks(400, 8), &data[..4096]);
}

#[test]
fn full_backing_store_is_space_allocation_failed() {
    let mut i = Ini::plain();
    i.h.luns.disk(1).no_space = true;
    let before = i.blocks(10, 4);
    let o = i.write(10, &pattern(2048, 2));
    assert_eq!((o.status, o.sense), (CHECK, Some((7, 0x27, 0x07))));
    assert_eq!(i.blocks(10, 4), before);
}

#[test]
fn failing_flush_fails_synchronize_cache_and_fua_writes() {
    let mut i = Ini::plain();
    i.h.luns.disk(1).fail_flush = true;
    let o = i.run(&SYNC_CACHE_10, 0, false, &[]);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    // FUA: durable before status, so the flush error is the status.
    let data = pattern(1024, 3);
    let o = i.run(&rw16(0x8a, 7, 2, 0x08), 1024, false, &data);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    // Without FUA on a write-back LUN no flush is due: GOOD.
    assert_eq!(i.write(7, &data).status, GOOD);
    // Once the device flushes again, so does SYNCHRONIZE CACHE.
    i.h.luns.disk(1).fail_flush = false;
    assert_eq!(i.run(&SYNC_CACHE_10, 0, false, &[]).status, GOOD);
    assert_eq!(i.h.luns.disk(1).flushes, 1);

    // A LUN without a volatile write cache flushes every write.
    let mut i = Ini::new(
        TestLuns::with(2048, |c| c.write_cache = false),
        test_driver(),
    );
    i.h.luns.disk(1).fail_flush = true;
    let o = i.write(7, &data);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
}

/// The image shrank under the running target (the SCSI layer still thinks
/// it has 2048 blocks): anything past the new end is MEDIUM ERROR, never
/// zeros or stale buffer contents with GOOD.
#[test]
fn shrunk_device_reads_past_its_end_are_medium_errors() {
    let mut i = Ini::plain();
    i.h.luns.disk(1).ram.0.truncate(1024 * 512);
    for (lba, blocks) in [(1500u64, 1u32), (1020, 8), (1000, 48), (2000, 48)] {
        let o = i.read(lba, blocks);
        assert_eq!(o.status, CHECK, "read {lba}+{blocks}");
        assert_eq!(o.sense, MEDIUM_READ);
        // Only whole Data-In PDUs that lie inside the device went out.
        let inside = (1024u64.saturating_sub(lba) * 512).min(u64::from(blocks) * 512);
        assert!(o.data.len() as u64 <= inside, "read {lba}+{blocks}");
        if !o.data.is_empty() {
            assert_eq!(o.data, i.disk()[(lba * 512) as usize..][..o.data.len()]);
        }
    }
    let o = i.write(1023, &pattern(1024, 4));
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    let o = i.read(1016, 8);
    assert_eq!(o.status, GOOD);
    assert_eq!(o.data, i.blocks(1016, 8));
}

/// The compound commands fail the same way when the device does: status
/// after the I/O, the error's own sense, and nothing half-reported as GOOD.
#[test]
fn compound_commands_on_failing_blocks() {
    let mut i = small_buffers();
    i.h.luns.disk(1).bad_reads.push(120);
    i.h.luns.disk(1).bad_writes.push(700);
    // VERIFY streaming over a block that cannot be read: MEDIUM ERROR, not
    // MISCOMPARE and not GOOD.
    let data = i.blocks(100, 64);
    let o = i.run(&verify16(100, 64, 1), 64 * 512, false, &data);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    // ORWRITE reads before it writes: the unreadable block fails it.
    let o = i.run(&orwrite16(110, 16), 16 * 512, false, &pattern(16 * 512, 1));
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    // ORWRITE onto a block that cannot be written.
    let o = i.run(&orwrite16(690, 16), 16 * 512, false, &pattern(16 * 512, 1));
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    // COMPARE AND WRITE whose compare read fails writes nothing.
    let before = i.blocks(119, 2);
    let o = i.run(
        &compare_and_write(119, 2),
        2048,
        false,
        &[&before[..], &pattern(1024, 2)].concat(),
    );
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    assert_eq!(i.blocks(119, 2), before);
    // WRITE SAME over a failing block, and onto a full store.
    let o = i.run(&rw16(0x93, 650, 100, 0), 512, false, &pattern(512, 3));
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_WRITE));
    i.h.luns.disk(1).no_space = true;
    let o = i.run(&rw16(0x93, 0, 10, 0), 512, false, &pattern(512, 3));
    assert_eq!((o.status, o.sense), (CHECK, Some((7, 0x27, 0x07))));
    assert!(i.idle());
}

// --------------------------------------------- VERIFY and ORWRITE stream

/// A LUN the SCSI layer thinks is 8 GiB (16 Mi blocks) over the small test
/// disk: nothing here may touch the device anyway.
fn eight_gib() -> Ini {
    Ini::new(TestLuns::with(2048, |c| c.blocks = 16 << 20), test_driver())
}

#[test]
fn huge_verify_and_orwrite_are_refused_before_any_data() {
    let mut i = eight_gib();
    let max = LunConfig::new(1, 0).max_transfer_blocks;
    for cdb in [
        verify16(0, u32::MAX, 1),
        orwrite16(0, u32::MAX),
        verify16(0, max + 1, 1),
        orwrite16(0, max + 1),
    ] {
        let (itt, out) = i.send(&cdb, u32::MAX, false, true);
        assert!(r2ts(&out).is_empty(), "no Data-Out asked for");
        let o = outcome(&out, itt);
        assert_eq!(o.status, CHECK);
        let (key, asc, _) = o.sense.unwrap();
        assert_eq!(key, 5, "ILLEGAL REQUEST");
        // Out of range for 0xffffffff blocks, INVALID FIELD IN CDB (the
        // transfer length) for one block over MAXIMUM TRANSFER LENGTH.
        let blocks = u32::from_be_bytes(cdb[10..14].try_into().unwrap());
        assert_eq!(asc, if blocks == u32::MAX { 0x21 } else { 0x24 });
        assert!(i.idle());
    }
    assert_eq!(i.h.luns.disk(1).reads, 0);
    assert_eq!(i.h.luns.disk(1).writes, 0);
    // The session goes on.
    assert_eq!(i.read(0, 1).status, GOOD);
}

/// A driver whose collection buffer holds 8 KiB, far less than the 512 KiB
/// VERIFY/ORWRITE below: they must stream through the 4 KiB bounce buffer.
fn small_buffers() -> Ini {
    Ini::new(
        TestLuns::with(2048, |c| c.max_compare_and_write_blocks = 8),
        Driver::new(vec![0u8; 2 * 8 * 512], vec![0u8; 4096]),
    )
}

#[test]
fn verify_bytchk_streams_and_reports_the_miscompare_offset() {
    let mut i = small_buffers();
    let mut data = i.blocks(100, 1024);
    let o = i.run(&verify16(100, 1024, 1), 1024 * 512, false, &data);
    assert_eq!((o.status, o.sense), (GOOD, None));
    for at in [300_001usize, 0, 1024 * 512 - 1] {
        data[at] ^= 0x40;
        let o = i.run(&verify16(100, 1024, 1), 1024 * 512, false, &data);
        data[at] ^= 0x40;
        assert_eq!((o.status, o.sense), (CHECK, Some((0x0e, 0x1d, 0))));
        assert_eq!(o.info, Some(at as u32), "INFORMATION is the byte offset");
    }
    let d = i.h.luns.disk(1);
    assert!(d.largest_read <= 4096, "read {} at once", d.largest_read);
    assert_eq!(d.writes, 0);
    assert!(i.idle());
}

#[test]
fn verify_bytchk_one_block_against_many() {
    let mut i = small_buffers();
    // BYTCHK 11b: one block of Data-Out compared with each of 16 blocks.
    let block = pattern(512, 9);
    for lba in 600..616 {
        assert_eq!(i.write(lba, &block).status, GOOD);
    }
    let o = i.run(&verify16(600, 16, 3), 512, false, &block);
    assert_eq!((o.status, o.sense), (GOOD, None));
    let mut other = block.clone();
    other[5] ^= 1;
    assert_eq!(i.write(611, &other).status, GOOD);
    let o = i.run(&verify16(600, 16, 3), 512, false, &block);
    assert_eq!((o.status, o.sense), (CHECK, Some((0x0e, 0x1d, 0))));
    assert_eq!(o.info, Some(11 * 512 + 5));
    assert!(i.idle());
}

#[test]
fn orwrite_streams_and_ors() {
    let mut i = small_buffers();
    let old = i.blocks(500, 1024);
    let data = pattern(1024 * 512, 0x11);
    let o = i.run(&orwrite16(500, 1024), 1024 * 512, false, &data);
    assert_eq!((o.status, o.sense), (GOOD, None));
    let want: Vec<u8> = old.iter().zip(&data).map(|(a, b)| a | b).collect();
    assert_eq!(i.blocks(500, 1024), want);
    assert!(i.h.luns.disk(1).largest_read <= 4096);
    assert!(i.idle());
}

// ---------------------------------------------------- COMPARE AND WRITE

#[test]
fn compare_and_write_matches_writes_miscompare_does_not() {
    let mut i = Ini::plain();
    let old = i.blocks(20, 2);
    let new = pattern(1024, 5);
    let o = i.run(
        &compare_and_write(20, 2),
        2048,
        false,
        &[&old[..], &new].concat(),
    );
    assert_eq!((o.status, o.sense), (GOOD, None));
    assert_eq!(i.blocks(20, 2), new);
    // Compare against stale data: nothing written, offset reported.
    let mut stale = old.clone();
    stale[700] ^= 1;
    let newer = pattern(1024, 6);
    let o = i.run(
        &compare_and_write(20, 2),
        2048,
        false,
        &[&stale[..], &newer].concat(),
    );
    assert_eq!((o.status, o.sense), (CHECK, Some((0x0e, 0x1d, 0))));
    assert_eq!(o.info, Some(0), "the disk holds `new`, differing at byte 0");
    assert_eq!(i.blocks(20, 2), new);
    let mut almost = new.clone();
    almost[700] ^= 1;
    let o = i.run(
        &compare_and_write(20, 2),
        2048,
        false,
        &[&almost[..], &newer].concat(),
    );
    assert_eq!(o.info, Some(700));
    assert_eq!(i.blocks(20, 2), new);
    assert!(i.idle());
}

#[test]
fn compare_and_write_longer_than_the_limit_is_refused() {
    // The LUN's MAXIMUM COMPARE AND WRITE LENGTH.
    let mut i = small_buffers();
    let (itt, out) = i.send(&compare_and_write(0, 9), 9 * 1024, false, true);
    assert!(r2ts(&out).is_empty());
    let o = outcome(&out, itt);
    assert_eq!((o.status, o.sense), (CHECK, Some((5, 0x24, 0))));
    // A LUN allowing 255 blocks behind a driver that can hold 4 KiB: the
    // driver refuses what it cannot collect rather than cut it.
    let mut i = Ini::new(
        TestLuns::new(2048),
        Driver::new(vec![0u8; 4096], vec![0u8; 4096]),
    );
    let (itt, out) = i.send(&compare_and_write(0, 8), 8 * 1024, false, true);
    assert!(r2ts(&out).is_empty());
    let o = outcome(&out, itt);
    assert_eq!((o.status, o.sense), (CHECK, Some((5, 0x24, 0))));
    assert!(i.idle());
    let o = i.run(
        &compare_and_write(0, 4),
        4096,
        false,
        &[&i.blocks(0, 4)[..], &pattern(2048, 1)].concat(),
    );
    assert_eq!(o.status, GOOD);
}

/// Starts a COMPARE AND WRITE of 2 blocks at `lba` and leaves it waiting
/// for its Data-Out (holding the collection buffer): ITT, TTT, its data.
fn start_caw(i: &mut Ini, lba: u64) -> (u32, u32, Vec<u8>) {
    let data = [&i.blocks(lba, 2)[..], &pattern(1024, lba as u8)].concat();
    let (itt, out) = i.send(&compare_and_write(lba, 2), 2048, false, true);
    let r = r2ts(&out);
    assert_eq!(r.len(), 1, "the first collecting command gets its R2T");
    (itt, r[0].ttt, data)
}

fn second_is_busy(i: &mut Ini) {
    let (itt, out) = i.send(&compare_and_write(40, 2), 2048, false, true);
    assert!(r2ts(&out).is_empty());
    assert_eq!(outcome(&out, itt).status, BUSY);
}

/// After the holder of the collection buffer ended some way: the next
/// COMPARE AND WRITE collects and completes.
fn buffer_free_again(i: &mut Ini) {
    assert!(i.idle(), "the driver still holds state for an ended task");
    let data = [&i.blocks(60, 2)[..], &pattern(1024, 60)].concat();
    let o = i.run(&compare_and_write(60, 2), 2048, false, &data);
    assert_eq!((o.status, o.sense), (GOOD, None));
    assert_eq!(i.blocks(60, 2), &data[1024..]);
}

#[test]
fn second_collecting_command_is_busy_until_abort_task() {
    let mut i = Ini::plain();
    let (first, _, _) = start_caw(&mut i, 20);
    second_is_busy(&mut i);
    assert_eq!(i.tmf(TmfFunction::AbortTask, first), TmfResponse::Complete);
    buffer_free_again(&mut i);
}

#[test]
fn collection_buffer_is_released_by_lun_reset() {
    let mut i = Ini::plain();
    start_caw(&mut i, 20);
    assert_eq!(
        i.tmf(TmfFunction::LogicalUnitReset, RESERVED_TAG),
        TmfResponse::Complete
    );
    i.h.clear_unit_attentions();
    buffer_free_again(&mut i);
}

#[test]
fn collection_buffer_is_released_by_target_warm_reset() {
    let mut i = Ini::plain();
    start_caw(&mut i, 20);
    assert_eq!(
        i.tmf(TmfFunction::TargetWarmReset, RESERVED_TAG),
        TmfResponse::Complete
    );
    i.h.clear_unit_attentions();
    buffer_free_again(&mut i);
}

#[test]
fn collection_buffer_is_released_by_a_bad_data_out() {
    let mut i = Ini::plain();
    let (itt, ttt, data) = start_caw(&mut i, 20);
    // The Data-Out claims DataSN 5: the command fails, the session goes on.
    let out = i.h.feed(&data_out(itt, ttt, 5, 0, &data[..512], false));
    let o = outcome(&out, itt);
    assert_eq!((o.status, o.sense), (CHECK, Some((0x0b, 0x4b, 0))));
    buffer_free_again(&mut i);
}

#[test]
fn collection_buffer_is_released_when_the_connection_is_lost() {
    let mut i = Ini::plain();
    let (itt, ttt, data) = start_caw(&mut i, 20);
    // Half the Data-Out arrived, then the TCP connection is gone.
    assert!(i
        .h
        .feed(&data_out(itt, ttt, 0, 0, &data[..1024], false))
        .is_empty());
    i.h.abort();
    assert!(i.idle());
    assert_eq!(i.h.luns.target().lost, [NEXUS_SLOT]);
}

/// The initiator ends more tasks than there are task slots within one
/// batch of input (no storage polled in between): a collecting command
/// aborted first, then immediate writes with data, each aborted. The first
/// command's Release must still reach the driver.
#[test]
fn releases_are_not_lost_when_many_tasks_end_in_one_batch() {
    let h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let mut h = login_with(
        h,
        "InitialR2T=No\nImmediateData=Yes\nFirstBurstLength=65536\nMaxBurstLength=65536",
    );
    let old = h.disk(1)[20 * 512..22 * 512].to_vec();
    let mut batch = Vec::new();
    // COMPARE AND WRITE with part of its data, F=0: it holds the buffer.
    batch.push(command(
        1,
        0,
        &compare_and_write(20, 2),
        2048,
        false,
        true,
        &old[..512],
        false,
    ));
    batch.push(tmf(TmfFunction::AbortTask, 0x500, 1, 1, 0).to_vec());
    for k in 0..12u32 {
        let itt = 10 + k;
        let mut p = command(
            itt,
            1,
            &write10(200, 2),
            1024,
            false,
            true,
            &[7; 512],
            false,
        );
        p[0] |= 0x40; // immediate: outside the CmdSN window
        batch.push(p);
        batch.push(tmf(TmfFunction::AbortTask, 0x600 + k, itt, 1, 0).to_vec());
    }
    for p in &batch {
        assert_eq!(h.input(p), p.len());
    }
    h.drain();
    assert!(h.driver.is_idle(), "a Release was dropped");
    // The collection buffer is free: the next COMPARE AND WRITE collects.
    let out = h.feed(&command(
        2,
        1,
        &compare_and_write(60, 2),
        2048,
        false,
        true,
        &[],
        true,
    ));
    assert_eq!(
        r2ts(&out).len(),
        1,
        "{:?}",
        out.iter().map(|p| bhs(p).opcode()).collect::<Vec<_>>()
    );
}

// ---------------------------------------- WRITE SAME, UNMAP, LBA STATUS

#[test]
fn write_same_pattern_ndob_and_unmap() {
    let mut i = Ini::thin();
    let before = i.blocks(0, 2048);
    // A pattern block written 100 times.
    let block = pattern(512, 0x33);
    let o = i.run(&rw16(0x93, 10, 100, 0), 512, false, &block);
    assert_eq!((o.status, o.sense), (GOOD, None));
    for lba in 10..110 {
        assert_eq!(i.blocks(lba, 1), block, "block {lba}");
    }
    assert_eq!(i.blocks(9, 1), &before[9 * 512..10 * 512]);
    assert_eq!(i.blocks(110, 1), &before[110 * 512..111 * 512]);
    // NDOB: zeros without a Data-Out.
    let o = i.run(&rw16(0x93, 200, 50, 0x01), 0, false, &[]);
    assert_eq!((o.status, o.sense), (GOOD, None));
    assert!(i.blocks(200, 50).iter().all(|&b| b == 0));
    assert_eq!(i.blocks(250, 1), &before[250 * 512..251 * 512]);
    // UNMAP bit: deallocated whatever the block holds; reads back zeros.
    let dealloc = i.h.luns.disk(1).deallocations;
    let o = i.run(&rw16(0x93, 300, 40, 0x08), 512, false, &block);
    assert_eq!((o.status, o.sense), (GOOD, None));
    assert!(i.h.luns.disk(1).deallocations > dealloc);
    assert!(i.read(300, 40).data.iter().all(|&b| b == 0));
    assert_eq!(i.blocks(340, 1), &before[340 * 512..341 * 512]);
    assert!(i.idle());
    // The UNMAP bit on a fully provisioned LUN is refused.
    let mut i = Ini::plain();
    let o = i.run(&rw16(0x93, 300, 40, 0x08), 512, false, &block);
    assert_eq!((o.status, o.sense.map(|s| s.0)), (CHECK, Some(5)));
    assert_eq!(i.h.luns.disk(1).writes, 0);
}

fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    p[0..2].copy_from_slice(&((6 + 16 * ranges.len()) as u16).to_be_bytes());
    p[2..4].copy_from_slice(&((16 * ranges.len()) as u16).to_be_bytes());
    for &(lba, n) in ranges {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

fn unmap_cdb(len: usize) -> [u8; 10] {
    let l = (len as u16).to_be_bytes();
    [0x42, 0, 0, 0, 0, 0, 0, l[0], l[1], 0]
}

fn lba_status(lba: u64) -> [u8; 16] {
    let mut c = rw16(0x9e, lba, 24, 0);
    c[1] = 0x12;
    c
}

#[test]
fn unmap_ranges_read_back_as_zeros() {
    let mut i = Ini::thin();
    let before = i.blocks(0, 2048);
    let list = unmap_list(&[(100, 8), (500, 33)]);
    let o = i.run(&unmap_cdb(list.len()), list.len() as u32, false, &list);
    assert_eq!((o.status, o.sense), (GOOD, None));
    for (lba, n) in [(100u64, 8u32), (500, 33)] {
        let o = i.read(lba, n);
        assert_eq!(o.status, GOOD);
        assert!(o.data.iter().all(|&b| b == 0), "{lba}+{n} reads zeros");
        assert_eq!(
            i.blocks(lba - 1, 1),
            &before[(lba as usize - 1) * 512..][..512]
        );
        let end = (lba + u64::from(n)) as usize;
        assert_eq!(i.blocks(end as u64, 1), &before[end * 512..][..512]);
    }
    assert!(i.idle());
}

/// GET LBA STATUS: one descriptor (LBA, blocks, provisioning status).
fn lba_status_of(o: &Outcome) -> (u64, u32, u8) {
    assert_eq!(o.status, GOOD, "{o:?}");
    let d = &o.data[8..24];
    (
        u64::from_be_bytes(d[..8].try_into().unwrap()),
        u32::from_be_bytes(d[8..12].try_into().unwrap()),
        d[12] & 0x0f,
    )
}

#[test]
fn get_lba_status_on_a_ram_disk() {
    // A plain RamDisk cannot tell holes: everything counts as mapped.
    let mut i = Ini::thin();
    let list = unmap_list(&[(100, 8)]);
    assert_eq!(
        i.run(&unmap_cdb(list.len()), list.len() as u32, false, &list)
            .status,
        GOOD
    );
    let o = i.run(&lba_status(100), 24, true, &[]);
    assert_eq!(lba_status_of(&o), (100, 2048 - 100, 0));
    // A device that tracks its holes: the driver reports them in blocks.
    let mut i = Ini::thin();
    i.h.luns.disk(1).track_holes = true;
    assert_eq!(
        i.run(&unmap_cdb(list.len()), list.len() as u32, false, &list)
            .status,
        GOOD
    );
    let o = i.run(&lba_status(100), 24, true, &[]);
    assert_eq!(lba_status_of(&o), (100, 8, 1));
    let o = i.run(&lba_status(104), 24, true, &[]);
    assert_eq!(lba_status_of(&o), (104, 4, 1));
    let o = i.run(&lba_status(50), 24, true, &[]);
    assert_eq!(lba_status_of(&o), (50, 50, 0));
    assert!(i.idle());
}

// ---------------------------------------------------------- EXTENDED COPY

/// LID1 parameter list: LUN 1 as the only copy target, one block-to-block
/// segment of `blocks` from `src` to `dst`.
fn xcopy_list(src: u64, dst: u64, blocks: u16) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[0] = 1; // LIST IDENTIFIER
    p[2..4].copy_from_slice(&32u16.to_be_bytes());
    p[8..12].copy_from_slice(&28u32.to_be_bytes());
    let mut t = [0u8; 32];
    t[0] = 0xe4;
    t[4] = 0x01; // binary
    t[5] = 0x03; // NAA, logical unit
    t[7] = 8;
    t[8..16].copy_from_slice(&(0x5000_0000_0000_0000u64 | 1).to_be_bytes());
    t[29..32].copy_from_slice(&[0, 2, 0]);
    p.extend_from_slice(&t);
    let mut s = [0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&24u16.to_be_bytes());
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&src.to_be_bytes());
    s[20..28].copy_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(&s);
    p
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

#[test]
fn extended_copy_overlapping_both_ways() {
    // 32 blocks (16 KiB) through a 4 KiB bounce buffer, overlapping by 27.
    for (src, dst) in [(100u64, 105u64), (200, 195), (300, 300), (400, 1000)] {
        let mut i = Ini::plain();
        let before = i.blocks(0, 2048);
        let list = xcopy_list(src, dst, 32);
        let o = i.run(&xcopy_cdb(list.len()), list.len() as u32, false, &list);
        assert_eq!((o.status, o.sense), (GOOD, None), "{src} -> {dst}");
        let mut want = before.clone();
        let (s, d) = (src as usize * 512, dst as usize * 512);
        want.copy_within(s..s + 32 * 512, d);
        assert!(
            *i.disk() == want[..],
            "{src} -> {dst}: as if through a buffer"
        );
        assert!(i.idle());
    }
}

#[test]
fn extended_copy_from_a_failing_block() {
    let mut i = Ini::plain();
    i.h.luns.disk(1).bad_reads.push(110);
    let list = xcopy_list(100, 500, 32);
    let o = i.run(&xcopy_cdb(list.len()), list.len() as u32, false, &list);
    assert_eq!((o.status, o.sense), (CHECK, MEDIUM_READ));
    assert!(i.idle());
}

// ------------------------------------------------------- the host's share

/// What a host learns from `run_storage_with`: a read or a write into the
/// volatile cache runs in place, a FUA write or a cache flush may block (an
/// event-loop host moves it off its loop).
#[test]
fn host_is_told_which_storage_work_may_block() {
    let mut i = Ini::plain();
    let may_block = |i: &mut Ini, f: fn(&StorageRequest) -> bool| -> Vec<bool> {
        let seen = core::mem::take(&mut i.h.seen);
        seen.into_iter()
            .filter(|(r, _)| f(r))
            .map(|(_, b)| b)
            .collect()
    };
    assert_eq!(i.read(10, 4).status, GOOD);
    let reads = may_block(&mut i, |r| matches!(r, StorageRequest::Read { .. }));
    assert_eq!(reads, [false]);
    assert_eq!(i.write(10, &pattern(2048, 1)).status, GOOD);
    let writes = may_block(&mut i, |r| matches!(r, StorageRequest::Write { .. }));
    assert_eq!(writes, [false], "the LUN has a write-back cache");
    let fua = rw16(0x8a, 10, 4, 0x08);
    assert_eq!(i.run(&fua, 2048, false, &pattern(2048, 2)).status, GOOD);
    let writes = may_block(&mut i, |r| matches!(r, StorageRequest::Write { .. }));
    assert_eq!(writes, [true], "FUA: durable before the status");
    assert_eq!(i.run(&SYNC_CACHE_10, 0, false, &[]).status, GOOD);
    let other = may_block(&mut i, |r| !matches!(r, StorageRequest::Release { .. }));
    assert_eq!(other, [true], "a flush may block");
}

/// A host that drops the work it was handed does not turn it into GOOD:
/// the command fails (HARDWARE ERROR) and no read data is sent. (A plain
/// write's data reached the device as it arrived; the dropped work is the
/// step that decides its status.)
#[test]
fn storage_work_the_host_never_ran_is_not_good() {
    let mut i = Ini::plain();
    i.h.skip_work = true;
    let o = i.write(20, &pattern(2048, 3));
    assert_eq!((o.status, o.sense), (CHECK, Some((4, 0x44, 0))));
    let o = i.read(20, 4);
    assert_eq!((o.status, o.sense), (CHECK, Some((4, 0x44, 0))));
    assert!(o.data.is_empty());
    i.h.skip_work = false;
    assert_eq!(i.read(20, 4).status, GOOD, "the session goes on");
    assert!(i.idle());
}
