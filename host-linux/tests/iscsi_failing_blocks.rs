//! Issue 7: "a failed or short read is never data: an I/O error becomes
//! CHECK CONDITION MEDIUM ERROR; same for writes (WRITE ERROR)", against
//! the real `sanboot serve` and a real `EIO` from the kernel.
//!
//! The LUN's image lives on a FUSE file system served by this test
//! (`fuse_disk`), which answers `EIO` for reads or writes touching chosen
//! 512-byte blocks and, on demand, for `fdatasync`. The file is opened with
//! direct I/O, so each `pread`/`pwrite` sanboot makes reaches the file
//! system and fails right there: a write error is the WRITE's own status,
//! with or without FUA, not something left for a later flush.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod fuse_disk;
mod iscsi_support;

use std::time::Duration;

use fuse_disk::FuseDisk;
use iscsi_support::initiator::{Initiator, ScsiResult};
use iscsi_support::{Sanboot, IQN};

/// 16 MiB.
const BLOCKS: u64 = 32768;
const BAD_READ: u32 = 1000;
const BAD_WRITE: u32 = 3000;

/// What block `lba` holds at first: its LBA, then a byte that differs
/// between neighbours and is never zero (zeros passed off as data show).
fn block(lba: u64) -> Vec<u8> {
    let mut b = vec![(lba % 251) as u8 + 1; 512];
    b[..8].copy_from_slice(&lba.to_be_bytes());
    b
}

fn blocks(first: u32, n: u32) -> Vec<u8> {
    (u64::from(first)..u64::from(first) + u64::from(n))
        .flat_map(block)
        .collect()
}

/// The sense key, ASC and ASCQ of a CHECK CONDITION sent as a SCSI
/// Response (not as status on a Data-In PDU).
fn sense_of(r: &ScsiResult, what: &str) -> (u8, u8, u8) {
    assert_eq!(r.status, 2, "{what}: CHECK CONDITION expected: {r:02x?}");
    assert_eq!(r.response, 0, "{what}: {r:02x?}");
    r.sense_code()
        .unwrap_or_else(|| panic!("{what}: no sense data: {r:02x?}"))
}

const READ_ERROR: (u8, u8, u8) = (0x03, 0x11, 0x00);
const WRITE_ERROR: (u8, u8, u8) = (0x03, 0x0c, 0x00);

/// A READ that fails: MEDIUM ERROR / UNRECOVERED READ ERROR, and whatever
/// Data-In came before the status stops short of the bad block and is the
/// disk's real bytes.
fn assert_read_fails(ini: &mut Initiator, lba: u32, n: u16) {
    let r = ini.read10(lba, n).unwrap();
    let what = format!("READ(10) {lba}+{n}");
    assert_eq!(sense_of(&r, &what), READ_ERROR, "{what}");
    let good = ((BAD_READ - lba) * 512) as usize;
    assert!(
        r.data.len() <= good,
        "READ(10) {lba}+{n}: {} bytes of Data-In reach the bad block at {BAD_READ}",
        r.data.len()
    );
    assert!(
        r.data == blocks(lba, BAD_READ - lba)[..r.data.len()],
        "READ(10) {lba}+{n}: Data-In before the error is not the disk's bytes"
    );
}

fn assert_reads(ini: &mut Initiator, lba: u32, n: u16) {
    let r = ini.read10(lba, n).unwrap();
    assert_eq!(r.status, 0, "READ(10) {lba}+{n}: {r:02x?}");
    assert!(
        r.data == blocks(lba, u32::from(n)),
        "READ(10) {lba}+{n}: wrong bytes"
    );
}

#[test]
fn blocks_that_fail_with_eio_are_medium_errors_and_the_session_goes_on() {
    let disk = FuseDisk::mount(blocks(0, BLOCKS as u32)).unwrap_or_else(|e| {
        panic!("cannot mount the test's FUSE file system (needs root and /dev/fuse): {e}")
    });
    let mut s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"{}\"\n",
        disk.path().display()
    ));
    let mut ini = Initiator::login(s.port, "iqn.2026-12.test:eio", IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}\n{}", s.log()));
    ini.ready().unwrap();

    // Before anything goes bad, the blocks read fine (with a page cache
    // these pages would now be cached and hide the errors below).
    assert_reads(&mut ini, BAD_READ - 8, 16);

    // Reads: the bad block alone, 16 blocks across it, and 1 MiB whose
    // bad block is 500 KiB in (sanboot streams it: 256 KiB of good
    // Data-In go out before the status).
    disk.set_bad_reads(&[u64::from(BAD_READ)]);
    assert_read_fails(&mut ini, BAD_READ, 1);
    assert_read_fails(&mut ini, BAD_READ - 8, 16);
    assert_read_fails(&mut ini, 0, 2048);
    let failed_reads = disk.stats().failed_reads;
    assert!(failed_reads >= 3, "{:?}", disk.stats());
    // Its neighbours read fine, alone and in runs up to it and from it.
    assert_reads(&mut ini, BAD_READ - 1, 1);
    assert_reads(&mut ini, BAD_READ + 1, 1);
    assert_reads(&mut ini, BAD_READ - 64, 64);
    assert_reads(&mut ini, BAD_READ + 1, 128);

    // Writes: without FUA and with FUA, the WRITE itself fails.
    disk.set_bad_writes(&[u64::from(BAD_WRITE)]);
    let new = vec![0xc3u8; 8 * 512];
    let r = ini.write10(BAD_WRITE, &new[..512], false).unwrap();
    let what = "WRITE(10) of the bad block";
    assert_eq!(sense_of(&r, what), WRITE_ERROR, "{what}");
    let r = ini.write10(BAD_WRITE - 4, &new, true).unwrap();
    let what = "WRITE(10) FUA across the bad block";
    assert_eq!(sense_of(&r, what), WRITE_ERROR, "{what}");
    assert!(disk.stats().failed_writes >= 2, "{:?}", disk.stats());
    // Its neighbours take writes, and they land in the file.
    let r = ini.write10(BAD_WRITE + 1, &new, true).unwrap();
    assert_eq!(r.status, 0, "WRITE(10) FUA after the bad block: {r:02x?}");
    let r = ini.write10(BAD_WRITE - 8, &new, false).unwrap();
    assert_eq!(r.status, 0, "WRITE(10) before the bad block: {r:02x?}");
    assert_eq!(
        disk.contents(u64::from(BAD_WRITE + 1) * 512, new.len()),
        new
    );
    assert_eq!(
        disk.contents(u64::from(BAD_WRITE - 8) * 512, new.len()),
        new
    );
    let back = ini.read10(BAD_WRITE - 8, 17).unwrap();
    assert_eq!(back.status, 0);
    assert!(back.data[..4096] == new[..] && back.data[4608..] == new[..]);
    // The bad block still holds what it held: the failed writes changed
    // nothing in it.
    assert!(back.data[4096..4608] == block(u64::from(BAD_WRITE))[..]);

    // A flush that fails: SYNCHRONIZE CACHE, and then a FUA write, are
    // WRITE ERRORs too.
    assert_eq!(ini.sync_cache().unwrap().status, 0);
    disk.set_fail_fsync(true);
    let r = ini.sync_cache().unwrap();
    assert_eq!(sense_of(&r, "SYNCHRONIZE CACHE"), WRITE_ERROR);
    let r = ini.write10(8000, &new, true).unwrap();
    let what = "WRITE(10) FUA, fdatasync failing";
    assert_eq!(sense_of(&r, what), WRITE_ERROR, "{what}");
    let fsyncs_failed = disk.stats().failed_fsyncs;
    assert!(fsyncs_failed >= 1, "{:?}", disk.stats());
    // Once fdatasync failed, a later one that succeeds proves nothing
    // (Linux may have dropped the pages it could not write): every flush
    // of this image keeps failing while sanboot has it open.
    disk.set_fail_fsync(false);
    let r = ini.sync_cache().unwrap();
    assert_eq!(
        sense_of(&r, "SYNCHRONIZE CACHE after a failed flush"),
        WRITE_ERROR
    );
    let r = ini.write10(8000, &new, true).unwrap();
    let what = "WRITE(10) FUA after a failed flush";
    assert_eq!(sense_of(&r, what), WRITE_ERROR, "{what}");
    assert!(
        s.log().contains("every later flush"),
        "sanboot says why flushes keep failing:\n{}",
        s.log()
    );

    // The session goes on and sanboot is still running.
    assert_reads(&mut ini, 64, 8);
    assert_eq!(s.wait_exit(Duration::ZERO), None, "sanboot exited");

    // The same LBAs work once the blocks are good again.
    disk.set_bad_reads(&[]);
    disk.set_bad_writes(&[]);
    assert_reads(&mut ini, BAD_READ, 1);
    assert_reads(&mut ini, BAD_READ - 512, 1024);
    let r = ini.write10(BAD_WRITE, &new[..512], false).unwrap();
    assert_eq!(r.status, 0, "WRITE(10) of the healed block: {r:02x?}");
    assert_eq!(disk.contents(u64::from(BAD_WRITE) * 512, 512), new[..512]);
    assert_eq!(
        disk.stats().failed_reads,
        failed_reads,
        "{:?}",
        disk.stats()
    );
    assert!(
        s.log().contains("failed: Input/output error"),
        "sanboot logs the I/O errors:\n{}",
        s.log()
    );

    // Opened again (a restart), the image flushes again.
    drop(ini);
    s.kill9();
    s.restart();
    let mut ini = Initiator::login(s.port, "iqn.2026-12.test:eio", IQN, 0)
        .unwrap_or_else(|e| panic!("login after restart: {e}\n{}", s.log()));
    ini.ready().unwrap();
    assert_eq!(ini.sync_cache().unwrap().status, 0);
    let r = ini.write10(8000, &new, true).unwrap();
    assert_eq!(r.status, 0, "WRITE(10) FUA after the restart: {r:02x?}");
    assert_eq!(disk.stats().failed_fsyncs, fsyncs_failed);
    drop(ini);
    drop(s);
    drop(disk);
}
