#![no_main]
//! Arbitrary CDBs and parameter lists against a SCSI logical unit: no
//! panic, every storage request stays inside the LUN, every Data-In length
//! fits the buffer, and afterwards TEST UNIT READY still answers.

use libfuzzer_sys::fuzz_target;
use sanboot_core::scsi::{
    unmap_ranges, Io, IoError, IoResult, LunConfig, Nexus, Status, Step, Target,
};

const NAMES: [&str; 3] = [
    "iqn.2026-11.fuzz:a",
    "iqn.2026-11.fuzz:b",
    "iqn.2026-11.fuzz:c",
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn nexus(i: u8) -> Nexus<'static> {
    let i = i % 5;
    Nexus {
        // slot 4 is beyond the LUN's capacity on purpose
        index: u16::from(i),
        initiator: NAMES[usize::from(i) % NAMES.len()],
        isid: [0x80, 0, 0, 0, 0, i],
    }
}

fn check_io(io: &Io, size: u64, bs: u64) {
    let end = match *io {
        Io::Read { offset, len } | Io::Write { offset, len, .. } => offset + u64::from(len),
        Io::Verify {
            offset,
            len,
            data_out_len,
        } => {
            // BYTCHK 00b (nothing), 01b (every byte) or 11b (one block).
            assert!(data_out_len == 0 || data_out_len == len || u64::from(data_out_len) == bs);
            offset + u64::from(len)
        }
        Io::CompareAndWrite { offset, len, .. } | Io::OrWrite { offset, len, .. } => {
            offset + u64::from(len)
        }
        Io::WriteSame { offset, blocks, .. } => offset + blocks * bs,
        Io::Copy { src, dst, len, .. } => src.max(dst) + u64::from(len),
        Io::Flush | Io::Unmap | Io::LbaStatus { .. } => 0,
    };
    assert!(end <= size, "{io:?} beyond {size}");
}

fn result_for(io: &Io, sel: u8) -> IoResult {
    match (io, sel % 4) {
        (_, 3) => IoResult::Error(match sel >> 4 & 3 {
            0 => IoError::Read,
            1 => IoError::Write,
            2 => IoError::NoSpace,
            _ => IoError::Other,
        }),
        (Io::Verify { .. } | Io::CompareAndWrite { .. }, 1) => IoResult::Miscompare {
            offset: u64::from(sel),
        },
        (Io::LbaStatus { .. }, 1 | 2) => IoResult::LbaStatus {
            deallocated: sel & 0x80 != 0,
            blocks: u64::from(sel) * 1000,
        },
        _ => IoResult::Ok,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let Some(mode) = inp.byte() else { return };
    let mut cfg = LunConfig::new(1 + u64::from(mode & 0x0f) * 1000, 0x5000_0000_0000_0001);
    cfg.thin_provisioning = mode & 0x10 != 0;
    cfg.read_only = mode & 0x20 != 0;
    cfg.block_size = if mode & 0x40 != 0 { 4096 } else { 512 };
    cfg.max_transfer_blocks = if mode & 0x80 != 0 { 128 } else { 0 };
    let mut second = cfg.clone();
    second.naa += 1;
    second.thin_provisioning = !cfg.thin_provisioning;
    // LUNs 0 and 5 exist; commands also go to absent LUN 7.
    let mut target: Target<2, 4, 3> = Target::new();
    assert!(target.add_lun(0, cfg).is_ok());
    assert!(target.add_lun(5, second).is_ok());
    let mut buf = [0u8; 4096];

    while let Some(op) = inp.byte() {
        match op {
            0xf0 => target.lun_reset(0),
            0xf1 => {
                let i = inp.byte().unwrap_or(0);
                target.nexus_lost(u16::from(i % 5));
            }
            0xf2 => {
                let b = inp.byte().unwrap_or(0);
                if let Some(l) = target.lun_mut(u64::from(b & 1) * 5) {
                    l.resize(1 + u64::from(b) * 100);
                }
            }
            0xf3 => target.target_reset(),
            _ => {
                let n = nexus(op);
                let cdb_len = [6usize, 10, 12, 16][usize::from(op >> 3 & 3)];
                let cdb = inp.take(cdb_len);
                let hi = inp.byte().unwrap_or(0);
                let lo = inp.byte().unwrap_or(0);
                let dout = inp.take(usize::from(u16::from_be_bytes([hi & 0x0f, lo])));
                let edtl = if op & 0x40 != 0 {
                    u32::from_be_bytes([0, hi >> 4, lo, 0])
                } else {
                    dout.len() as u32
                };
                let lun_nr = [0u64, 5, 7][usize::from(hi >> 4) % 3];
                let (size, bs) = target
                    .lun(lun_nr)
                    .map(|l| (l.config().size_bytes(), u64::from(l.config().block_size)))
                    .unwrap_or((0, 512));
                let mut step = target.command(lun_nr, &n, cdb, edtl, &mut buf);
                let mut rounds = 0;
                loop {
                    rounds += 1;
                    assert!(rounds <= 3, "a command takes at most three steps");
                    match step {
                        Step::Done(r) => {
                            assert!(r.data_len as usize <= buf.len());
                            assert_eq!(r.status == Status::CheckCondition, r.sense.is_some());
                            if let Some(s) = r.sense {
                                assert!(s.bytes().as_bytes().len() >= 8);
                            }
                            break;
                        }
                        Step::DataOut { .. } => {
                            step = target.data_out(lun_nr, &n, cdb, dout, &mut buf);
                            assert!(!matches!(step, Step::DataOut { .. }));
                        }
                        Step::Io(io) => {
                            check_io(&io, size, bs);
                            if io == Io::Unmap {
                                for (o, l) in unmap_ranges(dout, bs as u32) {
                                    assert!(o + l <= size);
                                }
                            }
                            let r = target.complete(lun_nr, &io, result_for(&io, lo), &mut buf);
                            match io {
                                Io::Read { len, .. } if r.status == Status::Good => {
                                    assert_eq!(r.data_len, len)
                                }
                                _ => assert!(r.data_len as usize <= buf.len()),
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    // The unit still answers: after draining unit attentions, TUR is GOOD
    // (or RESERVATION CONFLICT when another nexus holds RESERVE(6)).
    for (i, lun_nr) in (0..4u8).flat_map(|i| [(i, 0u64), (i, 5)]) {
        let n = nexus(i);
        let mut last = None;
        for _ in 0..16 {
            match target.command(lun_nr, &n, &[0; 6], 0, &mut buf) {
                Step::Done(r) if r.status == Status::CheckCondition => continue,
                Step::Done(r) => {
                    last = Some(r.status);
                    break;
                }
                other => panic!("TUR gave {other:?}"),
            }
        }
        assert!(
            matches!(last, Some(Status::Good | Status::ReservationConflict)),
            "TUR on nexus {i}: {last:?}"
        );
    }
});
