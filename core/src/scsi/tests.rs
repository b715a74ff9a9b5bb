//! Command-level tests: exact response bytes, error cases, and scenarios
//! that mirror libiscsi's iscsi-test-cu (including those tgt failed).
#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cloned_ref_to_slice_refs
)]

extern crate std;
use std::vec;
use std::vec::Vec;

use super::*;

const NAA: u64 = 0x5001_4050_0000_0001;
const I1: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const I2: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2";

fn n1() -> Nexus<'static> {
    Nexus {
        index: 0,
        initiator: I1,
        isid: [0x80, 0, 0, 0, 0, 1],
    }
}
fn n2() -> Nexus<'static> {
    Nexus {
        index: 1,
        initiator: I2,
        isid: [0x80, 0, 0, 0, 0, 2],
    }
}

/// A LUN with an in-memory disk that performs every [`Io`] like a host.
struct Host {
    lun: Lun<4, 4>,
    disk: Vec<u8>,
    /// Deallocated blocks (thin provisioning).
    holes: Vec<bool>,
    flushes: usize,
}

/// What the initiator sees.
#[derive(Debug)]
struct Out {
    status: Status,
    sense: Option<Sense>,
    data: Vec<u8>,
}

impl Out {
    fn good(&self) -> bool {
        self.status == Status::Good
    }
    fn sense(&self) -> (u8, u8, u8) {
        let s = self.sense.unwrap_or_else(|| panic!("no sense: {self:?}"));
        (s.key.as_u8(), s.asc, s.ascq)
    }
}

impl Host {
    fn new(cfg: LunConfig) -> Self {
        let bytes = cfg.size_bytes() as usize;
        let blocks = cfg.blocks as usize;
        let mut h = Host {
            lun: Lun::new(cfg),
            disk: vec![0; bytes],
            holes: vec![false; blocks],
            flushes: 0,
        };
        // Clear the power-on unit attention on both nexuses.
        assert_eq!(h.run(&n1(), &[0; 6], &[]).sense(), (6, 0x29, 0));
        assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x29, 0));
        h
    }

    fn disk(blocks: u64) -> Self {
        Host::new(LunConfig::new(blocks, NAA))
    }

    fn thin(blocks: u64) -> Self {
        let mut cfg = LunConfig::new(blocks, NAA);
        cfg.thin_provisioning = true;
        Host::new(cfg)
    }

    /// Runs a command with `data_out` as the initiator's Data-Out (its
    /// length is the Expected Data Transfer Length for writes).
    fn run(&mut self, n: &Nexus<'_>, cdb: &[u8], data_out: &[u8]) -> Out {
        self.run_edtl(n, cdb, data_out, data_out.len() as u32)
    }

    fn run_edtl(&mut self, n: &Nexus<'_>, cdb: &[u8], data_out: &[u8], edtl: u32) -> Out {
        let mut buf = vec![0xa5u8; 8192];
        let mut step = self.lun.command(n, cdb, edtl, &mut buf);
        loop {
            match step {
                Step::Done(r) => {
                    return Out {
                        status: r.status,
                        sense: r.sense,
                        data: buf[..r.data_len as usize].to_vec(),
                    }
                }
                Step::DataOut { len } => {
                    let got = &data_out[..(len as usize).min(data_out.len())];
                    step = self.lun.data_out(n, cdb, got, &mut buf);
                    assert!(!matches!(step, Step::DataOut { .. }));
                }
                Step::Io(io) => {
                    let (res, data) = self.perform(&io, data_out);
                    let r = self.lun.complete(&io, res, &mut buf);
                    let data = if r.status == Status::Good && matches!(io, Io::Read { .. }) {
                        data
                    } else {
                        buf[..r.data_len as usize].to_vec()
                    };
                    return Out {
                        status: r.status,
                        sense: r.sense,
                        data,
                    };
                }
            }
        }
    }

    fn bs(&self) -> usize {
        self.lun.config().block_size as usize
    }

    fn mark(&mut self, offset: u64, len: u64, hole: bool) {
        let bs = self.bs() as u64;
        for b in offset / bs..(offset + len) / bs {
            self.holes[b as usize] = hole;
        }
    }

    fn perform(&mut self, io: &Io, out: &[u8]) -> (IoResult, Vec<u8>) {
        match *io {
            Io::Read { offset, len } => {
                let o = offset as usize;
                (IoResult::Ok, self.disk[o..o + len as usize].to_vec())
            }
            Io::Write { offset, len, fua } => {
                let o = offset as usize;
                self.disk[o..o + len as usize].copy_from_slice(&out[..len as usize]);
                self.mark(offset, u64::from(len), false);
                if fua {
                    self.flushes += 1;
                }
                (IoResult::Ok, vec![])
            }
            Io::Flush => {
                self.flushes += 1;
                (IoResult::Ok, vec![])
            }
            Io::Verify {
                offset,
                len,
                data_out_len,
            } => {
                let o = offset as usize;
                let stored = &self.disk[o..o + len as usize];
                if data_out_len == 0 {
                    // BYTCHK 00b: a RAM disk is always readable.
                    return (IoResult::Ok, vec![]);
                }
                let expect: Vec<u8> = if data_out_len < len {
                    out.iter().copied().cycle().take(len as usize).collect()
                } else {
                    out.to_vec()
                };
                match first_mismatch(&expect, stored) {
                    Some(i) => (IoResult::Miscompare { offset: i as u64 }, vec![]),
                    None => (IoResult::Ok, vec![]),
                }
            }
            Io::CompareAndWrite { offset, len, .. } => {
                let (o, l) = (offset as usize, len as usize);
                if let Some(i) = first_mismatch(&out[..l], &self.disk[o..o + l]) {
                    return (IoResult::Miscompare { offset: i as u64 }, vec![]);
                }
                self.disk[o..o + l].copy_from_slice(&out[l..2 * l]);
                (IoResult::Ok, vec![])
            }
            Io::Copy { src, dst, len, .. } => {
                let (s, d, l) = (src as usize, dst as usize, len as usize);
                self.disk.copy_within(s..s + l, d);
                (IoResult::Ok, vec![])
            }
            Io::OrWrite { offset, len, .. } => {
                let (o, l) = (offset as usize, len as usize);
                for (d, s) in self.disk[o..o + l].iter_mut().zip(&out[..l]) {
                    *d |= *s;
                }
                (IoResult::Ok, vec![])
            }
            Io::WriteSame {
                offset,
                blocks,
                data_out_len,
                unmap,
            } => {
                let bs = self.bs();
                let block = if data_out_len == 0 {
                    vec![0; bs]
                } else {
                    out[..bs].to_vec()
                };
                let hole = unmap;
                let block = if hole { vec![0; bs] } else { block };
                for b in 0..blocks as usize {
                    let o = offset as usize + b * bs;
                    self.disk[o..o + bs].copy_from_slice(&block);
                }
                self.mark(offset, blocks * bs as u64, hole);
                (IoResult::Ok, vec![])
            }
            Io::Unmap => {
                let bs = self.lun.config().block_size;
                let ranges: Vec<(u64, u64)> = unmap_ranges(out, bs).collect();
                for (o, l) in ranges {
                    self.disk[o as usize..(o + l) as usize].fill(0);
                    self.mark(o, l, true);
                }
                (IoResult::Ok, vec![])
            }
            Io::LbaStatus { lba, .. } => {
                let state = self.holes[lba as usize];
                let run = self.holes[lba as usize..]
                    .iter()
                    .take_while(|&&h| h == state)
                    .count();
                (
                    IoResult::LbaStatus {
                        deallocated: state,
                        blocks: run as u64,
                    },
                    vec![],
                )
            }
        }
    }
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}
fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}
fn prin(sa: u8) -> [u8; 10] {
    [0x5e, sa, 0, 0, 0, 0, 0, 0x40, 0x00, 0]
}
fn prout(sa: u8, kind: u8) -> [u8; 10] {
    [0x5f, sa, kind, 0, 0, 0, 0, 0, 24, 0]
}
fn prout_param(rk: u64, sark: u64) -> Vec<u8> {
    let mut p = vec![0; 24];
    p[0..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p
}

// ---- sense encoding ------------------------------------------------------

#[test]
fn fixed_and_descriptor_sense_bytes() {
    let s = Sense::illegal(sense::asc::INVALID_FIELD_IN_CDB, true, 2, Some(3));
    assert_eq!(
        s.bytes().as_bytes(),
        &[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcb, 0, 2]
    );
    let mut m = Sense::new(SenseKey::Miscompare, sense::asc::MISCOMPARE_DURING_VERIFY);
    m.information = Some(0x1234);
    assert_eq!(
        m.bytes().as_bytes(),
        &[0xf0, 0, 0x0e, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x1d, 0, 0, 0, 0, 0]
    );
    m.descriptor = true;
    assert_eq!(
        m.bytes().as_bytes(),
        &[0x72, 0x0e, 0x1d, 0, 0, 0, 0, 12, 0, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]
    );
}

// ---- INQUIRY, capacity, mode pages ---------------------------------------

#[test]
fn inquiry_standard_exact_bytes() {
    let mut h = Host::disk(32768);
    let out = h.run(&n1(), &[0x12, 0, 0, 0, 255, 0], &[]);
    assert!(out.good());
    let mut want = vec![0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02];
    want.extend_from_slice(b"SANBOOT VIRTUAL-DISK    0001");
    want.extend_from_slice(&[0; 22]);
    // SAM-5, SPC-4, SBC-3, iSCSI
    want.extend_from_slice(&[0x00, 0xa0, 0x04, 0x60, 0x04, 0xc0, 0x09, 0x60]);
    want.extend_from_slice(&[0; 8 + 22]);
    assert_eq!(out.data, want);
    // ALLOCATION LENGTH truncates.
    let out = h.run(&n1(), &[0x12, 0, 0, 0, 5, 0], &[]);
    assert_eq!(out.data, want[..5]);
    // Page code without EVPD is invalid.
    let out = h.run(&n1(), &[0x12, 0, 0x80, 0, 255, 0], &[]);
    assert_eq!(out.sense(), (5, 0x24, 0));
}

#[test]
fn inquiry_vpd_pages() {
    let mut cfg = LunConfig::new(32768, NAA);
    cfg.serial = heapless::String::try_from("SN0001").unwrap();
    let mut h = Host::new(cfg);
    let out = h.run(&n1(), &[0x12, 1, 0x00, 0, 255, 0], &[]);
    assert_eq!(out.data, [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    let out = h.run(&n1(), &[0x12, 1, 0x80, 0, 255, 0], &[]);
    assert_eq!(out.data, b"\x00\x80\x00\x06SN0001");
    let out = h.run(&n1(), &[0x12, 1, 0x83, 0, 255, 0], &[]);
    let mut want = vec![0, 0x83, 0, 0];
    want.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
    want.extend_from_slice(&NAA.to_be_bytes());
    want.extend_from_slice(&[0x02, 0x01, 0x00, 14]);
    want.extend_from_slice(b"SANBOOT SN0001");
    want.extend_from_slice(&[0x51, 0x94, 0x00, 0x04, 0, 0, 0, 1]);
    want[3] = (want.len() - 4) as u8;
    assert_eq!(out.data, want);
    // Block limits: 0x3c bytes, WSNZ set, CAW length, unmap fields 0 on a thick LUN.
    let out = h.run(&n1(), &[0x12, 1, 0xb0, 0, 255, 0], &[]);
    assert_eq!(&out.data[..6], &[0, 0xb0, 0, 0x3c, 0x00, 0xff]);
    assert_eq!(&out.data[20..28], &[0; 8]);
    // Logical block provisioning: nothing on a thick LUN.
    let out = h.run(&n1(), &[0x12, 1, 0xb2, 0, 255, 0], &[]);
    assert_eq!(out.data, [0, 0xb2, 0, 4, 0, 0, 0, 0]);
    let out = h.run(&n1(), &[0x12, 1, 0x99, 0, 255, 0], &[]);
    assert_eq!(out.sense(), (5, 0x24, 0));
}

#[test]
fn thin_lun_advertises_unmap() {
    let mut h = Host::thin(1024);
    let out = h.run(&n1(), &[0x12, 1, 0xb2, 0, 255, 0], &[]);
    assert_eq!(out.data, [0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
    let out = h.run(&n1(), &[0x12, 1, 0xb0, 0, 255, 0], &[]);
    assert_eq!(&out.data[20..24], &u32::MAX.to_be_bytes());
    assert_eq!(&out.data[24..28], &64u32.to_be_bytes());
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 32;
    let out = h.run(&n1(), &cdb, &[]);
    assert_eq!(
        out.data,
        [
            0, 0, 0, 0, 0, 0, 0x03, 0xff, 0, 0, 2, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0
        ]
    );
}

#[test]
fn read_capacity_10_and_16() {
    let mut h = Host::disk(32768);
    let out = h.run(&n1(), &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(out.data, [0, 0, 0x7f, 0xff, 0, 0, 2, 0]);
    // LBA without PMI is an invalid field.
    let out = h.run(&n1(), &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]);
    assert_eq!(out.sense(), (5, 0x24, 0));
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 12;
    let out = h.run(&n1(), &cdb, &[]);
    assert_eq!(out.data, [0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0, 0, 2, 0]);
}

#[test]
fn read_capacity_10_saturates_for_big_luns() {
    // 3 TiB like the iPXE capture: READ CAPACITY(10) says 0xffffffff.
    let cfg = LunConfig::new(3 << 31, NAA);
    let mut lun: Lun<2, 2> = Lun::new(cfg);
    let mut buf = [0u8; 64];
    let _ = lun.command(&n1(), &[0; 6], 0, &mut buf);
    let step = lun.command(&n1(), &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8, &mut buf);
    assert_eq!(step, Step::Done(Response::good(8)));
    assert_eq!(&buf[..8], &[0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0]);
    // READ(16) near the end is fine, past it is not.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x88;
    cdb[2..10].copy_from_slice(&0x1_7fff_ffffu64.to_be_bytes());
    cdb[13] = 1;
    let step = lun.command(&n1(), &cdb, 512, &mut buf);
    assert_eq!(
        step,
        Step::Io(Io::Read {
            offset: 0x1_7fff_ffff * 512,
            len: 512
        })
    );
    cdb[13] = 2;
    let step = lun.command(&n1(), &cdb, 1024, &mut buf);
    assert!(matches!(step, Step::Done(r) if r.sense.unwrap().asc == 0x21));
}

#[test]
fn mode_sense_caching_page_bytes() {
    let mut h = Host::disk(32768);
    // MODE SENSE(6), DBD=0, caching page
    let out = h.run(&n1(), &[0x1a, 0, 0x08, 0, 255, 0], &[]);
    let mut want = vec![
        3 + 8 + 20,
        0,
        0x10,
        8,
        0,
        0,
        0x80,
        0,
        0,
        0,
        2,
        0,
        0x08,
        0x12,
        0x04,
    ];
    want.extend_from_slice(&[0; 17]);
    assert_eq!(out.data, want);
    // DBD=1, changeable values: nothing changeable in the caching page.
    let out = h.run(&n1(), &[0x1a, 0x08, 0x48, 0, 255, 0], &[]);
    let mut want = vec![3 + 20, 0, 0x10, 0, 0x08, 0x12];
    want.extend_from_slice(&[0; 18]);
    assert_eq!(out.data, want);
    // Saved values are not supported.
    let out = h.run(&n1(), &[0x1a, 0, 0xc8, 0, 255, 0], &[]);
    assert_eq!(out.sense(), (5, 0x39, 0));
    // All pages with MODE SENSE(10).
    let out = h.run(&n1(), &[0x5a, 0x08, 0x3f, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(out.data.len(), 8 + 20 + 12 + 12);
    assert_eq!(&out.data[..2], &[0, (out.data.len() - 2) as u8]);
    assert_eq!(&out.data[8..10], &[0x08, 0x12]);
    assert_eq!(&out.data[28..30], &[0x0a, 0x0a]);
    // Unknown page.
    let out = h.run(&n1(), &[0x1a, 0, 0x19, 0, 255, 0], &[]);
    assert_eq!(out.sense(), (5, 0x24, 0));
}

#[test]
fn write_through_lun_reports_wce_clear_and_read_only_sets_wp() {
    let mut cfg = LunConfig::new(64, NAA);
    cfg.write_cache = false;
    cfg.read_only = true;
    let mut h = Host::new(cfg);
    let out = h.run(&n1(), &[0x1a, 0x08, 0x08, 0, 255, 0], &[]);
    assert_eq!(&out.data[..6], &[23, 0, 0x90, 0, 0x08, 0x12]);
    assert_eq!(out.data[6], 0);
    let out = h.run(&n1(), &write10(0, 1), &[0; 512]);
    assert_eq!(out.sense(), (7, 0x27, 0));
    assert!(h.run(&n1(), &read10(0, 1), &[]).good());
}

#[test]
fn mode_select_sets_d_sense_and_swp() {
    let mut h = Host::disk(64);
    let control = |d_sense: bool, swp: bool| {
        let mut p = vec![0, 0, 0, 0, 0x0a, 0x0a];
        p.extend_from_slice(&[
            u8::from(d_sense) << 2,
            0x10,
            u8::from(swp) << 3,
            0,
            0,
            0,
            0xff,
            0xff,
            0,
            0,
        ]);
        p
    };
    let p = control(true, false);
    let out = h.run(&n1(), &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    assert!(out.good(), "{out:?}");
    // Errors now come in descriptor format.
    let out = h.run(&n1(), &[0xff, 0, 0, 0, 0, 0], &[]);
    assert!(out.sense.unwrap().descriptor);
    assert_eq!(out.sense(), (5, 0x20, 0));
    // The other nexus is told the mode parameters changed.
    assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x2a, 0x01));
    // SWP: reads work, writes are write protected.
    let p = control(false, true);
    assert!(h
        .run(&n1(), &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p)
        .good());
    let out = h.run(&n1(), &[0x1a, 0x08, 0x0a, 0, 255, 0], &[]);
    assert_eq!(out.data[2] & 0x80, 0x80);
    assert_eq!(out.data[4 + 4], 0x08);
    assert!(h.run(&n1(), &read10(0, 1), &[]).good());
    assert_eq!(
        h.run(&n1(), &write10(0, 1), &[0; 512]).sense(),
        (7, 0x27, 0x02)
    );
    // Changing a bit that is not changeable (QErr) is refused.
    let mut p = control(false, false);
    p[7] |= 0x02;
    let out = h.run(&n1(), &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(out.sense(), (5, 0x26, 0));
    // WCE cannot be changed either.
    let mut p = vec![0, 0, 0, 0, 0x08, 0x12, 0x00];
    p.extend_from_slice(&[0; 17]);
    let out = h.run(&n1(), &[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(out.sense(), (5, 0x26, 0));
}

// ---- block commands ------------------------------------------------------

#[test]
fn read_write_roundtrip_and_edges() {
    let mut h = Host::disk(300);
    let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    assert!(h.run(&n1(), &write10(7, 2), &data).good());
    assert_eq!(h.run(&n1(), &read10(7, 2), &[]).data, data);
    // Zero blocks: nothing happens, GOOD.
    let out = h.run(&n1(), &read10(299, 0), &[]);
    assert!(out.good() && out.data.is_empty());
    // Beyond the end and LBA wrap-around.
    assert_eq!(h.run(&n1(), &read10(299, 2), &[]).sense(), (5, 0x21, 0));
    assert_eq!(
        h.run(&n1(), &read10(u32::MAX, 1), &[]).sense(),
        (5, 0x21, 0)
    );
    // RDPROTECT without protection information.
    let mut c = read10(0, 1);
    c[1] = 0x20;
    assert_eq!(h.run(&n1(), &c, &[]).sense(), (5, 0x24, 0));
    // DPO and FUA are accepted; FUA makes the write durable.
    let mut c = write10(0, 1);
    c[1] = 0x18;
    let before = h.flushes;
    assert!(h.run(&n1(), &c, &[1; 512]).good());
    assert_eq!(h.flushes, before + 1);
    // READ(6) with length 0 means 256 blocks.
    let out = h.run(&n1(), &[0x08, 0, 0, 0, 0, 0], &[]);
    assert_eq!(out.data.len(), 256 * 512);
    // READ(6) beyond the end.
    assert_eq!(
        h.run(&n1(), &[0x08, 0, 0x01, 0x2c, 1, 0], &[]).sense(),
        (5, 0x21, 0)
    );
}

#[test]
fn unknown_and_unconfigured_opcodes_are_invalid() {
    let mut h = Host::disk(64);
    assert_eq!(
        h.run(&n1(), &[0xc0, 0, 0, 0, 0, 0], &[]).sense(),
        (5, 0x20, 0)
    );
    // UNMAP on a fully provisioned LUN: not implemented, so tests skip.
    assert_eq!(
        h.run(&n1(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &[])
            .sense(),
        (5, 0x20, 0)
    );
    // Empty CDB.
    assert_eq!(h.run(&n1(), &[], &[]).sense(), (5, 0x20, 0));
}

#[test]
fn verify_compares_and_reports_miscompare_offset() {
    let mut h = Host::disk(64);
    let data = vec![0x5a; 1024];
    assert!(h.run(&n1(), &write10(4, 2), &data).good());
    let verify = |bytchk: u8| [0x2f, bytchk << 1, 0, 0, 0, 4, 0, 0, 2, 0];
    assert!(h.run(&n1(), &verify(1), &data).good());
    let mut bad = data.clone();
    bad[700] = 0;
    let out = h.run(&n1(), &verify(1), &bad);
    assert_eq!(out.sense(), (0x0e, 0x1d, 0));
    assert_eq!(out.sense.unwrap().information, Some(700));
    // BYTCHK=0: medium verification only, no data compared.
    assert!(h.run(&n1(), &verify(0), &[]).good());
    // BYTCHK=3: one block compared with each block.
    assert!(h.run(&n1(), &verify(3), &data[..512]).good());
    // VRPROTECT without protection information.
    let mut c = verify(1);
    c[1] |= 0x20;
    assert_eq!(h.run(&n1(), &c, &data).sense(), (5, 0x24, 0));
}

#[test]
fn write_and_verify_writes_durably() {
    let mut h = Host::disk(64);
    let before = h.flushes;
    let c = [0x2e, 0x12, 0, 0, 0, 1, 0, 0, 1, 0];
    assert!(h.run(&n1(), &c, &[9; 512]).good());
    assert_eq!(h.flushes, before + 1);
    assert_eq!(h.run(&n1(), &read10(1, 1), &[]).data, vec![9; 512]);
}

#[test]
fn compare_and_write_writes_on_match_and_miscompares_otherwise() {
    let mut h = Host::disk(64);
    assert!(h.run(&n1(), &write10(3, 1), &[1; 512]).good());
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[9] = 3;
    cdb[13] = 1;
    let mut data = vec![1; 512];
    data.extend_from_slice(&[2; 512]);
    assert!(h.run(&n1(), &cdb, &data).good());
    assert_eq!(h.run(&n1(), &read10(3, 1), &[]).data, vec![2; 512]);
    // Same request again: the blocks are now 2s, so the compare fails at 0.
    let out = h.run(&n1(), &cdb, &data);
    assert_eq!(out.sense(), (0x0e, 0x1d, 0));
    assert_eq!(out.sense.unwrap().information, Some(0));
    assert_eq!(h.run(&n1(), &read10(3, 1), &[]).data, vec![2; 512]);
    // Data-Out of the wrong size (InvalidDataOutSize).
    assert_eq!(
        h.run_edtl(&n1(), &cdb, &data, 4 * 512).status,
        Status::CheckCondition
    );
    // 256 blocks does not fit the one-byte field: 0 blocks with 256 blocks
    // of Data-Out is refused (CompareAndWrite.Simple).
    cdb[13] = 0;
    assert_eq!(
        h.run(&n1(), &cdb, &vec![0; 512 * 512]).sense(),
        (5, 0x24, 0)
    );
    assert!(h.run(&n1(), &cdb, &[]).good());
    cdb[13] = 1;
    // Beyond the end.
    cdb[9] = 64;
    assert_eq!(h.run(&n1(), &cdb, &data).sense(), (5, 0x21, 0));
}

#[test]
fn write_same_and_unmap_on_thin_lun() {
    let mut h = Host::thin(1024);
    let mut ws = [0x41, 0, 0, 0, 0, 10, 0, 0, 4, 0];
    assert!(h.run(&n1(), &ws, &[7; 512]).good());
    assert_eq!(h.run(&n1(), &read10(10, 4), &[]).data, vec![7; 2048]);
    // 0 blocks (WSNZ=0): from the LBA to the last block.
    ws[8] = 0;
    assert!(h.run(&n1(), &ws, &[7; 512]).good());
    assert_eq!(h.run(&n1(), &read10(1023, 1), &[]).data, vec![7; 512]);
    // One past the end is out of range.
    let ws_end = [0x41, 0, 0, 0, 0x04, 0x01, 0, 0, 0, 0];
    assert_eq!(h.run(&n1(), &ws_end, &[7; 512]).sense(), (5, 0x21, 0));
    // Data-Out must be exactly one block.
    ws[8] = 1;
    assert_eq!(h.run(&n1(), &ws, &[7; 1024]).status, Status::CheckCondition);
    assert_eq!(h.run(&n1(), &ws, &[7; 256]).status, Status::CheckCondition);
    // WRITE SAME(16) with UNMAP and zeros deallocates.
    let mut ws16 = [0u8; 16];
    ws16[0] = 0x93;
    ws16[1] = 0x08;
    ws16[9] = 10;
    ws16[13] = 2;
    assert!(h.run(&n1(), &ws16, &[0; 512]).good());
    let mut gls = [0u8; 16];
    gls[0] = 0x9e;
    gls[1] = 0x12;
    gls[9] = 10;
    gls[13] = 24;
    let out = h.run(&n1(), &gls, &[]);
    assert_eq!(
        out.data,
        [0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 2, 1, 0, 0, 0]
    );
    // UNMAP two ranges.
    let mut p = vec![0, 38, 0, 32, 0, 0, 0, 0];
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 8, 0, 0, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert!(h.run(&n1(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0], &p).good());
    gls[9] = 100;
    let out = h.run(&n1(), &gls, &[]);
    assert_eq!(&out.data[16..21], &[0, 0, 0, 8, 1]);
    // A descriptor past the end fails the whole command.
    p[8 + 7] = 0xff;
    p[8 + 6] = 0x03;
    assert_eq!(
        h.run(&n1(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0], &p)
            .sense(),
        (5, 0x21, 0)
    );
    // Short parameter list.
    assert_eq!(
        h.run(&n1(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], &p).sense(),
        (5, 0x1a, 0)
    );
}

#[test]
fn get_lba_status_beyond_end_is_out_of_range() {
    // tgt failed GetLBAStatus.BeyondEol.
    for mut h in [Host::disk(100), Host::thin(100)] {
        let mut gls = [0u8; 16];
        gls[0] = 0x9e;
        gls[1] = 0x12;
        gls[13] = 24;
        let out = h.run(&n1(), &gls, &[]);
        assert!(out.good());
        assert_eq!(&out.data[8..21], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0]);
        gls[9] = 100;
        assert_eq!(h.run(&n1(), &gls, &[]).sense(), (5, 0x21, 0));
        gls[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(h.run(&n1(), &gls, &[]).sense(), (5, 0x21, 0));
    }
}

#[test]
fn sync_cache_flushes_and_prefetch_is_good() {
    let mut h = Host::disk(64);
    let before = h.flushes;
    assert!(h.run(&n1(), &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).good());
    assert_eq!(h.flushes, before + 1);
    assert_eq!(
        h.run(&n1(), &[0x35, 0, 0, 0, 0, 64, 0, 0, 1, 0], &[])
            .sense(),
        (5, 0x21, 0)
    );
    assert!(h
        .run(&n1(), &[0x34, 0x02, 0, 0, 0, 0, 0x03, 0, 1, 0], &[])
        .good());
    assert_eq!(
        h.run(&n1(), &[0x34, 0, 0, 0, 0, 64, 0, 0, 1, 0], &[])
            .sense(),
        (5, 0x21, 0)
    );
}

// ---- REPORT SUPPORTED OPCODES, REQUEST SENSE, REPORT LUNS ----------------

#[test]
fn report_supported_opcodes_all_and_one() {
    let mut h = Host::disk(64);
    let out = h.run(&n1(), &[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    assert!(out.good());
    let len = u32::from_be_bytes(out.data[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, out.data.len());
    let descs: Vec<&[u8]> = out.data[4..].chunks(8).collect();
    assert!(descs
        .iter()
        .any(|d| d[0] == 0x28 && d[5] == 0 && d[6..8] == [0, 10]));
    assert!(
        descs.iter().all(|d| d[0] != 0x42),
        "no UNMAP on a thick LUN"
    );
    let prin: Vec<_> = descs.iter().filter(|d| d[0] == 0x5e).collect();
    assert_eq!(prin.len(), 4);
    assert!(prin.iter().all(|d| d[5] & 1 == 1));
    // RCTD: each descriptor carries a 12-byte timeouts descriptor.
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(out.data[4 + 5] & 0x02, 0x02);
    assert_eq!(&out.data[12..14], &[0, 0x0a]);
    // One command (option 1) for READ(10).
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(&out.data[..5], &[0, 0x03, 0, 10, 0x28]);
    // Option 1 for an opcode with service actions is invalid; option 2 works.
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x01, 0x9e, 0, 0x10, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(out.sense(), (5, 0x24, 0));
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x02, 0x9e, 0, 0x10, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(&out.data[..5], &[0, 0x03, 0, 16, 0x9e]);
    // Option 2 for an opcode without service actions is invalid.
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x02, 0x28, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(out.sense(), (5, 0x24, 0));
    // Not supported: SUPPORT 001b.
    let out = h.run(
        &n1(),
        &[0xa3, 0x0c, 0x01, 0xc0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(&out.data[..4], &[0, 0x01, 0, 0]);
}

#[test]
fn request_sense_reports_and_clears_unit_attention() {
    let mut h = Host::disk(64);
    h.lun.reset();
    let out = h.run(&n1(), &[0x03, 0, 0, 0, 252, 0], &[]);
    assert!(out.good());
    assert_eq!(out.data.len(), 18);
    assert_eq!((out.data[2], out.data[12], out.data[13]), (6, 0x29, 0x03));
    let out = h.run(&n1(), &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!((out.data[2], out.data[12]), (0, 0));
    // The other nexus still has its own.
    assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x29, 0x03));
    // DESC=1 gives descriptor format.
    let out = h.run(&n1(), &[0x03, 1, 0, 0, 252, 0], &[]);
    assert_eq!(out.data[0], 0x72);
}

#[test]
fn inquiry_does_not_consume_unit_attention() {
    let mut lun: Lun<2, 2> = Lun::new(LunConfig::new(8, NAA));
    let mut buf = [0u8; 256];
    let step = lun.command(&n1(), &[0x12, 0, 0, 0, 96, 0], 96, &mut buf);
    assert_eq!(step, Step::Done(Response::good(96)));
    let step = lun.command(&n1(), &[0; 6], 0, &mut buf);
    assert!(matches!(step, Step::Done(r) if r.sense.unwrap().asc == 0x29));
}

#[test]
fn resize_raises_capacity_changed() {
    let mut h = Host::disk(64);
    h.lun.resize(128);
    assert_eq!(h.run(&n1(), &[0; 6], &[]).sense(), (6, 0x2a, 0x09));
    assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x2a, 0x09));
    let out = h.run(&n1(), &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(out.data, [0, 0, 0, 127, 0, 0, 2, 0]);
}

#[test]
fn target_reports_luns_and_answers_absent_luns() {
    let mut t: Target<4, 2, 2> = Target::new();
    t.add_lun(0, LunConfig::new(64, NAA)).unwrap();
    t.add_lun(300, LunConfig::new(64, NAA + 1)).unwrap();
    let mut buf = [0u8; 256];
    let cdb = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    let step = t.command(0, &n1(), &cdb, 256, &mut buf);
    assert_eq!(step, Step::Done(Response::good(24)));
    assert_eq!(
        &buf[..24],
        &[0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0]
    );
    // REPORT LUNS to a LUN that does not exist still works.
    let step = t.command(5, &n1(), &cdb, 256, &mut buf);
    assert_eq!(step, Step::Done(Response::good(24)));
    // INQUIRY to an absent LUN: peripheral qualifier 011b.
    let step = t.command(5, &n1(), &[0x12, 0, 0, 0, 36, 0], 36, &mut buf);
    assert_eq!(step, Step::Done(Response::good(36)));
    assert_eq!(buf[0], 0x7f);
    // Anything else: LOGICAL UNIT NOT SUPPORTED.
    let step = t.command(5, &n1(), &[0; 6], 0, &mut buf);
    assert!(matches!(step, Step::Done(r) if r.sense.unwrap().asc == 0x25));
    assert_eq!(encode_lun(1), [0, 1, 0, 0, 0, 0, 0, 0]);
}

// ---- reservations --------------------------------------------------------

#[test]
fn reserve6_two_initiators() {
    // tgt failed Reserve6.2Initiators: MODE SENSE must conflict.
    let mut h = Host::disk(64);
    let reserve = [0x16, 0, 0, 0, 0, 0];
    let release = [0x17, 0, 0, 0, 0, 0];
    let mode_sense = [0x1a, 0, 0x3f, 0, 255, 0];
    assert!(h.run(&n1(), &reserve, &[]).good());
    assert!(h.run(&n1(), &reserve, &[]).good());
    assert_eq!(
        h.run(&n2(), &reserve, &[]).status,
        Status::ReservationConflict
    );
    assert!(h.run(&n2(), &release, &[]).good());
    assert!(h.run(&n1(), &mode_sense, &[]).good());
    let out = h.run(&n2(), &mode_sense, &[]);
    assert_eq!(out.status, Status::ReservationConflict);
    assert!(out.sense.is_none());
    assert!(h.run(&n2(), &[0x12, 0, 0, 0, 36, 0], &[]).good());
    assert_eq!(
        h.run(&n2(), &reserve, &[]).status,
        Status::ReservationConflict
    );
    assert!(h.run(&n1(), &release, &[]).good());
    assert!(h.run(&n2(), &reserve, &[]).good());
    assert!(h.run(&n2(), &release, &[]).good());
}

#[test]
fn reserve6_released_by_nexus_loss_and_lun_reset() {
    let mut h = Host::disk(64);
    assert!(h.run(&n1(), &[0x16, 0, 0, 0, 0, 0], &[]).good());
    h.lun.nexus_lost(0);
    assert!(h.run(&n2(), &[0x16, 0, 0, 0, 0, 0], &[]).good());
    h.lun.reset();
    assert_eq!(h.run(&n1(), &[0; 6], &[]).sense().1, 0x29);
    assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x29, 0x03));
    assert!(h.run(&n1(), &[0x16, 0, 0, 0, 0, 0], &[]).good());
}

#[test]
fn prin_service_action_range() {
    // tgt failed PrinServiceactionRange.Range (READ FULL STATUS).
    let mut h = Host::disk(64);
    for sa in 0..=3 {
        assert!(h.run(&n1(), &prin(sa), &[]).good(), "sa {sa}");
    }
    for sa in 4..=0x1f {
        assert_eq!(
            h.run(&n1(), &prin(sa), &[]).sense(),
            (5, 0x24, 0),
            "sa {sa}"
        );
    }
}

#[test]
fn prin_read_keys_report_capabilities_full_status() {
    let mut h = Host::disk(64);
    assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, 0xabc)).good());
    assert!(h.run(&n2(), &prout(6, 0), &prout_param(0, 0xdef)).good());
    let out = h.run(&n1(), &prin(0), &[]);
    assert_eq!(&out.data[..8], &[0, 0, 0, 2, 0, 0, 0, 16]);
    assert_eq!(&out.data[8..16], &0xabcu64.to_be_bytes());
    // Truncated to the allocation length (PrinReadKeys.Truncate).
    let mut c = prin(0);
    c[8] = 12;
    c[7] = 0;
    assert_eq!(h.run(&n1(), &c, &[]).data.len(), 12);
    let out = h.run(&n1(), &prin(2), &[]);
    assert_eq!(out.data, [0, 8, 0x10, 0x80, 0xea, 0x01, 0, 0]);
    assert!(h.run(&n1(), &prout(1, 1), &prout_param(0xabc, 0)).good());
    let out = h.run(&n1(), &prin(3), &[]);
    let add = u32::from_be_bytes(out.data[4..8].try_into().unwrap()) as usize;
    assert_eq!(add + 8, out.data.len());
    let d = &out.data[8..];
    assert_eq!(&d[..8], &0xabcu64.to_be_bytes());
    assert_eq!((d[12], d[13]), (1, 1));
    assert_eq!(d[24], 0x45);
    let tid_len = u16::from_be_bytes([d[26], d[27]]) as usize;
    assert_eq!(tid_len % 4, 0);
    let name = &d[28..28 + I1.len() + 17];
    assert_eq!(
        name,
        b"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test,i,0x800000000001"
    );
}

#[test]
fn prout_register_rules() {
    let mut h = Host::disk(64);
    // REGISTER with a wrong key while unregistered conflicts.
    assert_eq!(
        h.run(&n1(), &prout(0, 0), &prout_param(5, 6)).status,
        Status::ReservationConflict
    );
    assert!(h.run(&n1(), &prout(0, 0), &prout_param(0, 6)).good());
    // Re-register with wrong key conflicts; with the right key changes it.
    assert_eq!(
        h.run(&n1(), &prout(0, 0), &prout_param(0, 7)).status,
        Status::ReservationConflict
    );
    assert!(h.run(&n1(), &prout(0, 0), &prout_param(6, 7)).good());
    let out = h.run(&n1(), &prin(0), &[]);
    assert_eq!(&out.data[8..16], &7u64.to_be_bytes());
    // Wrong parameter list length.
    let mut c = prout(0, 0);
    c[8] = 20;
    assert_eq!(h.run(&n1(), &c, &prout_param(7, 0)).sense(), (5, 0x1a, 0));
    // Unregister.
    assert!(h.run(&n1(), &prout(0, 0), &prout_param(7, 0)).good());
    assert_eq!(&h.run(&n1(), &prin(0), &[]).data[4..8], &[0, 0, 0, 0]);
    // RESERVE(6) conflicts with persistent registrations.
    assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, 1)).good());
    assert_eq!(
        h.run(&n2(), &[0x16, 0, 0, 0, 0, 0], &[]).status,
        Status::ReservationConflict
    );
}

const TYPES: [u8; 6] = [1, 3, 5, 6, 7, 8];

fn read_key_of_reservation(h: &mut Host, n: &Nexus<'_>) -> Option<(u64, u8)> {
    let out = h.run(n, &prin(1), &[]);
    assert!(out.good(), "{out:?}");
    if out.data[7] == 0 {
        return None;
    }
    Some((
        u64::from_be_bytes(out.data[8..16].try_into().unwrap()),
        out.data[21] & 0xf,
    ))
}

#[test]
fn prout_reserve_access_all_types() {
    // (type, reg I2 read, reg I2 write, unreg I2 read, unreg I2 write)
    let table = [
        (3, false, false, false, false),
        (1, true, false, true, false),
        (6, true, true, false, false),
        (5, true, true, true, false),
        (8, true, true, false, false),
        (7, true, true, true, false),
    ];
    for (kind, rr, rw, ur, uw) in table {
        let mut h = Host::disk(64);
        let (k1, k2) = (0x1111, 0x2222);
        assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, k1)).good());
        assert!(h.run(&n2(), &prout(6, 0), &prout_param(0, k2)).good());
        assert!(h.run(&n1(), &prout(1, kind), &prout_param(k1, 0)).good());
        let ar = kind >= 7;
        assert_eq!(
            read_key_of_reservation(&mut h, &n1()),
            Some((if ar { 0 } else { k1 }, kind))
        );
        assert!(h.run(&n1(), &read10(1, 1), &[]).good());
        assert!(h.run(&n1(), &write10(1, 1), &[0; 512]).good());
        let can = |h: &mut Host, w: bool| {
            let out = if w {
                h.run(&n2(), &write10(1, 1), &[0; 512])
            } else {
                h.run(&n2(), &read10(1, 1), &[])
            };
            match out.status {
                Status::Good => true,
                Status::ReservationConflict => false,
                s => panic!("type {kind}: {s:?}"),
            }
        };
        assert_eq!(can(&mut h, false), rr, "type {kind} registered read");
        assert_eq!(can(&mut h, true), rw, "type {kind} registered write");
        assert!(h.run(&n2(), &prout(0, 0), &prout_param(k2, 0)).good());
        assert_eq!(can(&mut h, false), ur, "type {kind} unregistered read");
        assert_eq!(can(&mut h, true), uw, "type {kind} unregistered write");
        assert!(h.run(&n1(), &prout(2, kind), &prout_param(k1, 0)).good());
        assert!(h.run(&n1(), &prout(0, 0), &prout_param(k1, 0)).good());
        assert!(
            h.run(&n2(), &[0; 6], &[]).good(),
            "type {kind}: no UA left for I2"
        );
    }
}

#[test]
fn prout_reserve_ownership_all_types() {
    // tgt failed Ownership{EA,WE,EARO,WERO}: the unregistering holder must
    // not see a unit attention on its next PR IN.
    for kind in TYPES {
        let mut h = Host::disk(64);
        let (k1, k2) = (0xaaaa, 0xbbbb);
        assert!(h.run(&n1(), &[0; 6], &[]).good());
        assert!(h.run(&n2(), &[0; 6], &[]).good());
        assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, k1)).good());
        assert!(h.run(&n2(), &prout(6, 0), &prout_param(0, k2)).good());
        assert!(h.run(&n1(), &prout(1, kind), &prout_param(k1, 0)).good());
        let shared = kind >= 7;
        assert_eq!(
            read_key_of_reservation(&mut h, &n1()),
            Some((if shared { 0 } else { k1 }, kind))
        );
        // Unregister I1, the holder.
        assert!(h.run(&n1(), &prout(0, 0), &prout_param(k1, 0)).good());
        if shared {
            assert_eq!(read_key_of_reservation(&mut h, &n1()), Some((0, kind)));
            assert!(h.run(&n2(), &prout(2, kind), &prout_param(k2, 0)).good());
        } else {
            assert_eq!(read_key_of_reservation(&mut h, &n1()), None, "type {kind}");
            // I2 (still registered) is told for the registrants-only types.
            let tur = h.run(&n2(), &[0; 6], &[]);
            if kind == 5 || kind == 6 {
                assert_eq!(tur.sense(), (6, 0x2a, 0x04));
            } else {
                assert!(tur.good());
            }
        }
        assert!(h.run(&n2(), &prout(0, 0), &prout_param(k2, 0)).good());
        assert_eq!(&h.run(&n1(), &prin(0), &[]).data[4..8], &[0, 0, 0, 0]);
    }
}

#[test]
fn prout_preempt_removes_registration_and_clear_resets() {
    let mut h = Host::disk(64);
    assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, 1)).good());
    assert!(h.run(&n2(), &prout(6, 0), &prout_param(0, 2)).good());
    // PREEMPT with no reservation removes the registration of key 2.
    assert!(h.run(&n1(), &prout(4, 1), &prout_param(1, 2)).good());
    let out = h.run(&n1(), &prin(0), &[]);
    assert_eq!(&out.data[4..8], &[0, 0, 0, 8]);
    assert_eq!(h.run(&n2(), &[0; 6], &[]).sense(), (6, 0x2a, 0x05));
    // Preempting a key nobody has conflicts.
    assert_eq!(
        h.run(&n1(), &prout(4, 1), &prout_param(1, 9)).status,
        Status::ReservationConflict
    );
    // I2 comes back, I1 reserves EA, I2 preempts the holder and takes over.
    assert!(h.run(&n2(), &prout(6, 0), &prout_param(0, 2)).good());
    assert!(h.run(&n1(), &prout(1, 3), &prout_param(1, 0)).good());
    assert!(h.run(&n2(), &prout(4, 1), &prout_param(2, 1)).good());
    assert_eq!(read_key_of_reservation(&mut h, &n2()), Some((2, 1)));
    assert_eq!(h.run(&n1(), &[0; 6], &[]).sense(), (6, 0x2a, 0x05));
    // CLEAR drops everything and tells the others.
    assert!(h.run(&n1(), &prout(6, 0), &prout_param(0, 1)).good());
    assert!(h.run(&n2(), &prout(3, 0), &prout_param(2, 0)).good());
    assert_eq!(read_key_of_reservation(&mut h, &n2()), None);
    assert_eq!(h.run(&n1(), &[0; 6], &[]).sense(), (6, 0x2a, 0x03));
    // Generation counted the successful changes.
    let out = h.run(&n1(), &prin(0), &[]);
    assert!(u32::from_be_bytes(out.data[..4].try_into().unwrap()) >= 6);
}

#[test]
fn registrations_are_bounded() {
    let mut lun: Lun<8, 2> = Lun::new(LunConfig::new(8, NAA));
    let mut buf = [0u8; 64];
    let names = ["iqn.a", "iqn.b", "iqn.c"];
    for (i, name) in names.iter().enumerate() {
        let n = Nexus {
            index: i as u16,
            initiator: name,
            isid: [0; 6],
        };
        let _ = lun.command(&n, &[0; 6], 0, &mut buf);
        let step = lun.command(&n, &prout(6, 0), 24, &mut buf);
        assert_eq!(step, Step::DataOut { len: 24 });
        let step = lun.data_out(&n, &prout(6, 0), &prout_param(0, 1 + i as u64), &mut buf);
        if i < 2 {
            assert_eq!(step, Step::Done(Response::good(0)));
        } else {
            assert!(matches!(step, Step::Done(r) if r.sense.unwrap().asc == 0x55));
        }
    }
}

#[test]
fn nexus_index_beyond_capacity_is_served() {
    let mut lun: Lun<2, 2> = Lun::new(LunConfig::new(8, NAA));
    let n = Nexus {
        index: 40,
        initiator: I1,
        isid: [0; 6],
    };
    let mut buf = [0u8; 64];
    assert_eq!(
        lun.command(&n, &[0; 6], 0, &mut buf),
        Step::Done(Response::good(0))
    );
}

#[test]
fn orwrite_ors_into_the_medium() {
    let mut h = Host::disk(64);
    assert!(h.run(&n1(), &write10(62, 2), &[0; 1024]).good());
    let mut cdb = [0u8; 16];
    cdb[0] = 0x8b;
    cdb[9] = 62;
    cdb[13] = 2;
    assert!(h.run(&n1(), &cdb, &[0xa5; 1024]).good());
    assert!(h.run(&n1(), &cdb, &[0x5a; 1024]).good());
    assert_eq!(h.run(&n1(), &read10(62, 2), &[]).data, vec![0xff; 1024]);
    // Beyond the end, zero blocks, ORPROTECT.
    cdb[13] = 3;
    assert_eq!(h.run(&n1(), &cdb, &[0; 1536]).sense(), (5, 0x21, 0));
    cdb[13] = 0;
    assert!(h.run(&n1(), &cdb, &[]).good());
    cdb[13] = 1;
    cdb[1] = 0x20;
    assert_eq!(h.run(&n1(), &cdb, &[0; 512]).sense(), (5, 0x24, 0));
}

#[test]
fn read_defect_data_is_empty() {
    let mut h = Host::disk(64);
    let out = h.run(&n1(), &[0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 32, 0], &[]);
    assert_eq!(out.data, [0, 0x1d, 0, 0]);
    let out = h.run(&n1(), &[0xb7, 0x05, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], &[]);
    assert_eq!(out.data, [0, 0x05, 0, 0, 0, 0, 0, 0]);
}

// ---- EXTENDED COPY / RECEIVE COPY RESULTS (libiscsi ExtendedCopy.*) -------

fn ident_desc(naa: u64, lu_id_type: u8, nul: bool) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xe4;
    d[1] = (lu_id_type << 6) | (u8::from(nul) << 5);
    d[4] = 0x01;
    d[5] = 0x03;
    d[7] = 8;
    d[8..16].copy_from_slice(&naa.to_be_bytes());
    d[29..32].copy_from_slice(&[0, 2, 0]);
    d
}

fn b2b_desc(src_idx: u16, dst_idx: u16, blocks: u16, src: u64, dst: u64) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[3] = 0x18;
    d[4..6].copy_from_slice(&src_idx.to_be_bytes());
    d[6..8].copy_from_slice(&dst_idx.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src.to_be_bytes());
    d[20..28].copy_from_slice(&dst.to_be_bytes());
    d
}

fn xcopy_list(list_id: u8, usage: u8, targets: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
    let t: Vec<u8> = targets.concat();
    let sg: Vec<u8> = segs.concat();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[1] = usage << 3;
    p[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(sg.len() as u32).to_be_bytes());
    p.extend_from_slice(&t);
    p.extend_from_slice(&sg);
    p
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr_cdb(sa: u8, list_id: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[13] = 0xff;
    c
}

#[test]
fn extended_copy_copies_inside_the_lun() {
    let mut h = Host::disk(4096);
    assert!(h.run(&n1(), &write10(0, 16), &[b'A'; 16 * 512]).good());
    let p = xcopy_list(
        1,
        0,
        &[ident_desc(NAA, 0, false)],
        &[b2b_desc(0, 0, 16, 0, 4096 - 16)],
    );
    let out = h.run(&n1(), &xcopy_cdb(p.len()), &p);
    assert!(out.good(), "{out:?}");
    assert_eq!(
        h.run(&n1(), &read10(4096 - 16, 16), &[]).data,
        vec![b'A'; 16 * 512]
    );
    // COPY STATUS for list 1: completed, one segment, 8 KiB.
    let out = h.run(&n1(), &rcr_cdb(0, 1), &[]);
    assert_eq!(out.data, [0, 0, 0, 8, 0x01, 0, 1, 0, 0, 0, 0x20, 0]);
    // Unknown list id, and other nexuses see nothing.
    assert_eq!(h.run(&n1(), &rcr_cdb(0, 2), &[]).sense(), (5, 0x24, 0));
    assert_eq!(h.run(&n2(), &rcr_cdb(0, 1), &[]).sense(), (5, 0x24, 0));
    // Parameter list length 0: nothing to do.
    assert!(h.run(&n1(), &xcopy_cdb(0), &[]).good());
}

#[test]
fn receive_copy_results_operating_parameters() {
    let mut h = Host::disk(64);
    let out = h.run(&n1(), &rcr_cdb(3, 0), &[]);
    assert!(out.good());
    let d = &out.data;
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
        d.len() - 4
    );
    assert_eq!(&d[8..12], &[0, 2, 0, 1]);
    assert_eq!(&d[12..16], &1024u32.to_be_bytes());
    assert_eq!(d[43], 2);
    assert_eq!(&d[44..46], &[0x02, 0xe4]);
    assert_eq!(h.run(&n1(), &rcr_cdb(1, 0), &[]).sense(), (5, 0x24, 0));
}

#[test]
fn extended_copy_rejects_bad_parameter_lists() {
    let mut h = Host::disk(4096);
    let t = ident_desc(NAA, 0, false);
    let seg = b2b_desc(0, 0, 16, 0, 4096 - 16);
    let full = xcopy_list(1, 0, &[t.clone()], &[seg.clone()]);
    // Truncated target / segment descriptor: PARAMETER LIST LENGTH ERROR.
    for cut in [16 + 32 - 1, 16 + 32 + 28 - 1] {
        let out = h.run(&n1(), &xcopy_cdb(cut), &full[..cut]);
        assert_eq!(out.sense(), (5, 0x1a, 0));
    }
    // Too many target descriptors, too many segment descriptors.
    let p = xcopy_list(1, 0, &[t.clone(), t.clone(), t.clone()], &[seg.clone()]);
    assert_eq!(
        h.run(&n1(), &xcopy_cdb(p.len()), &p).sense(),
        (5, 0x26, 0x06)
    );
    let p = xcopy_list(2, 0, &[t.clone()], &[seg.clone(), seg.clone()]);
    assert_eq!(
        h.run(&n1(), &xcopy_cdb(p.len()), &p).sense(),
        (5, 0x26, 0x08)
    );
    // Unsupported target (FC N_Port_Name) and segment (stream to stream) types.
    let mut fc = t.clone();
    fc[0] = 0xe0;
    let p = xcopy_list(1, 0, &[fc], &[seg.clone()]);
    assert_eq!(
        h.run(&n1(), &xcopy_cdb(p.len()), &p).sense(),
        (5, 0x26, 0x07)
    );
    let mut s2s = vec![0u8; 20];
    s2s[0] = 0x03;
    s2s[3] = 0x10;
    let p = xcopy_list(1, 0, &[t.clone()], &[s2s]);
    assert_eq!(
        h.run(&n1(), &xcopy_cdb(p.len()), &p).sense(),
        (5, 0x26, 0x09)
    );
    // LU ID TYPE and NUL are obsolete in SPC-4: ignored (libiscsi 1.19
    // ExtendedCopy.ValidTgtDescr expects GOOD from an SPC-4 device).
    let p = xcopy_list(1, 0, &[ident_desc(NAA, 3, false)], &[seg.clone()]);
    assert!(h.run(&n1(), &xcopy_cdb(p.len()), &p).good());
    let p = xcopy_list(1, 0, &[ident_desc(NAA, 0, true)], &[seg.clone()]);
    assert!(h.run(&n1(), &xcopy_cdb(p.len()), &p).good());
    // Another LUN's designator is not reachable from here.
    let p = xcopy_list(1, 0, &[ident_desc(NAA + 7, 0, false)], &[seg.clone()]);
    assert_eq!(
        h.run(&n1(), &xcopy_cdb(p.len()), &p).sense(),
        (0x0a, 0x0d, 0x02)
    );
    // Destination index out of the list; copy beyond the end.
    let p = xcopy_list(1, 0, &[t.clone()], &[b2b_desc(0, 1, 16, 0, 0)]);
    assert_eq!(h.run(&n1(), &xcopy_cdb(p.len()), &p).sense().0, 0x0a);
    let p = xcopy_list(1, 0, &[t.clone()], &[b2b_desc(0, 0, 2048, 0, 4095)]);
    assert_eq!(h.run(&n1(), &xcopy_cdb(p.len()), &p).sense().0, 0x0a);
}

#[test]
fn target_lun_reset_reaches_every_nexus() {
    // MultipathIO.Reset: after a LUN reset through one path, each path's
    // next TUR reports a unit attention.
    let mut t: Target<2, 4, 2> = Target::new();
    t.add_lun(0, LunConfig::new(64, NAA)).unwrap();
    let mut buf = [0u8; 64];
    for n in [n1(), n2()] {
        let _ = t.command(0, &n, &[0; 6], 0, &mut buf);
        assert_eq!(
            t.command(0, &n, &[0; 6], 0, &mut buf),
            Step::Done(Response::good(0))
        );
    }
    t.lun_reset(0);
    for n in [n1(), n2()] {
        let step = t.command(0, &n, &[0; 6], 0, &mut buf);
        assert!(
            matches!(step, Step::Done(r) if r.sense.unwrap().asc == 0x29),
            "{step:?}"
        );
        assert_eq!(
            t.command(0, &n, &[0; 6], 0, &mut buf),
            Step::Done(Response::good(0))
        );
    }
}

#[test]
fn write_same_unmap_deallocates_whatever_the_block_holds() {
    // SBC-4: UNMAP=1, ANCHOR=0 deallocates (WriteSame10.UnmapUntilEnd sends
    // 0xff blocks and expects zeros back with LBPRZ).
    let mut h = Host::thin(64);
    assert!(h.run(&n1(), &write10(60, 4), &[0xff; 2048]).good());
    let ws = [0x41, 0x08, 0, 0, 0, 60, 0, 0, 0, 0];
    assert!(h.run(&n1(), &ws, &[0xff; 512]).good());
    assert_eq!(h.run(&n1(), &read10(60, 4), &[]).data, vec![0; 2048]);
    // Without thin provisioning the UNMAP bit is an invalid field.
    let mut thick = Host::disk(64);
    assert_eq!(thick.run(&n1(), &ws, &[0xff; 512]).sense(), (5, 0x24, 0));
}

#[test]
fn sanitize_block_erase_deallocates_the_lun() {
    let mut h = Host::thin(64);
    assert!(h.run(&n1(), &write10(0, 64), &[b'a'; 64 * 512]).good());
    let cdb = [0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
    let o = h.run(&n1(), &cdb, &[]);
    assert!(o.good(), "{:?}", o.sense);
    assert_eq!(h.run(&n1(), &read10(0, 64), &[]).data, vec![0; 64 * 512]);
    let mut gls = [0u8; 16];
    gls[0] = 0x9e;
    gls[1] = 0x12;
    gls[13] = 24;
    let out = h.run(&n1(), &gls, &[]);
    assert_eq!(&out.data[16..21], &[0, 0, 0, 64, 1]);
    // Reserved bit, reserved bytes, a parameter list, other service actions.
    for bad in [
        [0x48, 0x42, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x48, 0x02, 0, 0, 4, 0, 0, 0, 0, 0],
        [0x48, 0x02, 0, 0, 0, 0, 0, 0, 8, 0],
        [0x48, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x48, 0x07, 0, 0, 0, 0, 0, 0, 0, 0],
    ] {
        assert_eq!(h.run(&n1(), &bad, &[]).sense(), (5, 0x24, 0), "{bad:?}");
    }
    // WABEREQ 01b in VPD B1.
    let out = h.run(&n1(), &[0x12, 1, 0xb1, 0, 255, 0], &[]);
    assert_eq!(out.data[7], 0x40);
    // A fully provisioned LUN does not offer SANITIZE.
    let mut thick = Host::disk(64);
    assert_eq!(thick.run(&n1(), &cdb, &[]).sense(), (5, 0x20, 0));
}
