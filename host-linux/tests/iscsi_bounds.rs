//! Memory is bounded by configuration, never by a length on the wire:
//! `sanboot serve` advertises MAXIMUM TRANSFER LENGTH and refuses longer
//! VERIFY/ORWRITE, streams the ones it takes through fixed buffers, and an
//! aborted command leaves nothing behind — while another session reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::{Initiator, ScsiResult};
use iscsi_support::{Sanboot, IQN};

const VERIFY_16: u8 = 0x8f;
const ORWRITE_16: u8 = 0x8b;

fn cdb16(op: u8, flags: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// VERIFY(16) with BYTCHK=01b: the Data-Out is compared with the medium.
fn verify16(lba: u64, blocks: u32) -> [u8; 16] {
    cdb16(VERIFY_16, 0x02, lba, blocks)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn assert_illegal(r: &ScsiResult, what: &str) {
    assert_eq!(r.status, 2, "{what}: {r:02x?}");
    assert_eq!(r.sense[2] & 0x0f, 0x05, "{what}: sense {:02x?}", r.sense);
}

#[test]
fn long_commands_are_refused_or_streamed_and_aborts_free_everything() {
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {}\n",
        8u64 << 30
    ));
    let mut a = Initiator::login(s.port, "iqn.2026-12.test:a", IQN, 0)
        .unwrap_or_else(|e| panic!("login a: {e}\n{}", s.log()));
    let mut b = Initiator::login(s.port, "iqn.2026-12.test:b", IQN, 0)
        .unwrap_or_else(|e| panic!("login b: {e}\n{}", s.log()));
    a.ready().unwrap();
    b.ready().unwrap();

    // Block Limits VPD: the advertised MAXIMUM TRANSFER LENGTH.
    let vpd = a.command(&[0x12, 1, 0xb0, 0, 64, 0], &[], 64).unwrap();
    assert_eq!(vpd.status, 0);
    let max = u32::from_be_bytes(vpd.data[8..12].try_into().unwrap());
    assert!(max > 0, "MAXIMUM TRANSFER LENGTH must be advertised");

    // Longer than that: refused at once, whatever the initiator would send.
    for (op, name) in [(VERIFY_16, "VERIFY(16)"), (ORWRITE_16, "ORWRITE(16)")] {
        let flags = if op == VERIFY_16 { 0x02 } else { 0 };
        let r = a
            .command(&cdb16(op, flags, 0, 0xffff_ffff), &[], 0)
            .unwrap();
        assert_illegal(&r, &format!("{name} of 0xffffffff blocks"));
        let r = a.command(&cdb16(op, flags, 0, max + 1), &[], 0).unwrap();
        assert_illegal(&r, &format!("{name} of MAXIMUM TRANSFER LENGTH + 1"));
        assert_eq!(
            (r.sense[12], r.sense[13]),
            (0x24, 0x00),
            "INVALID FIELD IN CDB"
        );
    }

    // The longest allowed VERIFY and ORWRITE (zeros ORed into zeros, 4 GiB
    // in) stream: memory stays flat while their Data-Out arrives, and the
    // other session keeps reading meanwhile.
    let len = max as usize * 512;
    let zeros = vec![0u8; len];
    let mut peak = 0;
    for cdb in [verify16(0, max), cdb16(ORWRITE_16, 0, 1 << 23, max)] {
        let r = a
            .command_pausing(&cdb, &zeros, 0, &mut || {
                let rd = b.read10(1000, 256).unwrap();
                assert_eq!(rd.status, 0);
                peak = peak.max(rss_kib(s.pid()));
            })
            .unwrap();
        assert_eq!(r.status, 0, "{:02x} of {max} zero blocks: {r:02x?}", cdb[0]);
        peak = peak.max(rss_kib(s.pid()));
    }

    // ORWRITE(16) streams too: OR a pattern into blocks 16..24.
    let mut or = vec![0u8; 8 * 512];
    or.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as u8 | 1);
    let r = a.command(&cdb16(ORWRITE_16, 0, 16, 8), &or, 0).unwrap();
    assert_eq!(r.status, 0, "{r:02x?}");
    assert_eq!(b.read10(16, 8).unwrap().data, or);

    // A miscompare is reported at its byte.
    let mut want = vec![0u8; 32 * 512];
    want[16 * 512 + 3] ^= 0xff;
    let r = a.command(&verify16(0, 32), &want, 0).unwrap();
    assert_eq!(r.status, 2);
    assert_eq!(r.sense[2] & 0x0f, 0x0e, "MISCOMPARE: {:02x?}", r.sense);

    // VERIFY or ORWRITE aborted halfway through its Data-Out: everything
    // held for it is released, and the session and the other one go on.
    for cdb in [verify16(0, max), cdb16(ORWRITE_16, 0, 0, max)].repeat(2) {
        let resp = a.abort_at_first_r2t(&cdb, max * 512).unwrap();
        assert_eq!(resp, 0, "ABORT TASK of {:02x}: function complete", cdb[0]);
        let r = a.command(&verify16(0, 8), &zeros[..8 * 512], 0).unwrap();
        assert_eq!(r.status, 0, "a VERIFY after the abort: {r:02x?}");
        assert_eq!(b.read10(0, 64).unwrap().status, 0);
    }
    peak = peak.max(rss_kib(s.pid()));
    eprintln!("sanboot peak RSS {peak} KiB; MAXIMUM TRANSFER LENGTH {max} blocks");
    assert!(
        peak < 64 << 10,
        "sanboot's RSS reached {peak} KiB streaming {len} bytes"
    );
}
