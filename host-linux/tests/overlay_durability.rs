//! Overlay LUNs (`base` + `image`) under SIGKILL: an initiator writes,
//! unmaps and syncs (SYNCHRONIZE CACHE, FUA) on a copy-on-write LUN over a
//! golden image with known content, sanboot is killed at a random moment,
//! restarted, and every block is checked: each reads as the version it had
//! at the last acknowledged sync or one written (or unmapped) after it;
//! blocks never written read the base; nothing else. Many rounds on the
//! same overlay, each starting from what the previous crash left.
//!
//! Also: UNMAP gives the overlay file's space back, and the base is never
//! written.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iscsi_support::initiator::Initiator;
use iscsi_support::{Sanboot, IQN};

const BASE_SIZE: usize = 16 << 20;
const BLOCKS: usize = BASE_SIZE / 512;
const INITIATOR: &str = "iqn.2026-12.test.sanboot:overlay";
const ROUNDS: u32 = 30;
/// The whole test stops starting rounds after this (it still needs
/// `MIN_ROUNDS`).
const TIME_BUDGET: Duration = Duration::from_secs(150);
const MIN_ROUNDS: u32 = 10;

/// xorshift64*, seeded per run from the clock (printed, to replay).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Block `lba` at version `v`: 0 the base, 1 zeros (unmapped), else the
/// data of write `v`.
fn block(v: u32, lba: usize) -> [u8; 512] {
    let mut b = [0u8; 512];
    match v {
        0 => {
            b[..8].copy_from_slice(b"GOLDBASE");
            b[8..12].copy_from_slice(&(lba as u32).to_le_bytes());
            for (i, x) in b[12..].iter_mut().enumerate() {
                *x = (lba * 3 + i) as u8;
            }
        }
        1 => {}
        _ => {
            b[..8].copy_from_slice(b"STATION!");
            b[8..12].copy_from_slice(&v.to_le_bytes());
            b[12..16].copy_from_slice(&(lba as u32).to_le_bytes());
            for (i, x) in b[16..].iter_mut().enumerate() {
                *x = (v as usize * 5 + lba + i) as u8;
            }
        }
    }
    b
}

fn write_base(path: &Path) {
    let mut data = Vec::with_capacity(BASE_SIZE);
    for lba in 0..BLOCKS {
        data.extend_from_slice(&block(0, lba));
    }
    std::fs::write(path, data).unwrap();
}

fn targets(base: &Path) -> String {
    format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nbase = \"{}\"\nimage = \"station.ovl\"\n",
        base.display()
    )
}

/// Per block: its version at the last acknowledged sync, and the versions
/// written since (any may have survived).
struct Model {
    durable: Vec<u32>,
    since: Vec<Vec<u32>>,
}

impl Model {
    fn wrote(&mut self, lba: usize, n: usize, v: u32) {
        for b in lba..lba + n {
            self.since[b].push(v);
        }
    }
    fn synced(&mut self) {
        for (b, s) in self.since.iter_mut().enumerate() {
            if let Some(&v) = s.last() {
                self.durable[b] = v;
            }
            s.clear();
        }
    }
}

fn unmap(ini: &mut Initiator, lba: u64, blocks: u32) -> std::io::Result<u8> {
    let mut param = vec![0u8; 24];
    param[0..2].copy_from_slice(&22u16.to_be_bytes());
    param[2..4].copy_from_slice(&16u16.to_be_bytes());
    param[8..16].copy_from_slice(&lba.to_be_bytes());
    param[16..20].copy_from_slice(&blocks.to_be_bytes());
    let mut cdb = [0u8; 10];
    cdb[0] = 0x42;
    cdb[7..9].copy_from_slice(&24u16.to_be_bytes());
    Ok(ini.command(&cdb, &param, 0)?.status)
}

#[derive(Debug, Default)]
struct Counts {
    rounds: u32,
    acked_writes: u64,
    acked_unmaps: u64,
    sync_points: u64,
    blocks_checked: u64,
    newer_than_sync: u64,
    lost_unsynced: u64,
    base_blocks: u64,
}

/// One round: write until SIGKILL, restart, check, adopt what survived.
fn round(
    sanboot: &mut Sanboot,
    model: &mut Model,
    rng: &mut Rng,
    next_v: &mut u32,
    c: &mut Counts,
) {
    let mut ini = Initiator::login(sanboot.port, INITIATOR, IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}; log:\n{}", sanboot.log()));
    ini.ready().unwrap();
    let pid = sanboot.pid();
    let (arm, armed) = mpsc::channel::<u64>();
    let killer = std::thread::spawn(move || {
        if let Ok(delay_us) = armed.recv() {
            std::thread::sleep(Duration::from_micros(delay_us));
            let st = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(st.success(), "kill -KILL {pid}");
        }
    });
    let arm_after = 20 + rng.below(150);
    let mut ops = 0u64;
    let mut armed_at = None;
    // Bounded: the killer fires within 30 ms of arming.
    for _ in 0..100_000 {
        let kind = rng.below(20);
        let r = if kind < 14 {
            // 4 KiB or 64 KiB, at any 4 KiB boundary.
            let n = if rng.below(4) == 0 { 128 } else { 8 };
            let lba = (rng.below((BLOCKS - n) as u64 / 8) * 8) as usize;
            let v = *next_v;
            *next_v += 1;
            let mut data = Vec::with_capacity(n * 512);
            for b in lba..lba + n {
                data.extend_from_slice(&block(v, b));
            }
            model.wrote(lba, n, v);
            let fua = rng.below(6) == 0;
            ini.write10(lba as u32, &data, fua).map(|r| {
                assert_eq!(
                    r.status,
                    0,
                    "write: sense {:02x?}; log:\n{}",
                    r.sense,
                    sanboot.log()
                );
                c.acked_writes += 1;
                if fua {
                    // FUA makes this write durable, and it replaced
                    // whatever these blocks held before.
                    for b in lba..lba + n {
                        model.durable[b] = v;
                        model.since[b].clear();
                    }
                }
            })
        } else if kind < 16 {
            let n = 128 * (1 + rng.below(4) as usize);
            let lba = (rng.below((BLOCKS - n) as u64 / 128) * 128) as usize;
            model.wrote(lba, n, 1);
            unmap(&mut ini, lba as u64, n as u32).map(|s| {
                assert_eq!(s, 0, "UNMAP failed");
                c.acked_unmaps += 1;
            })
        } else {
            ini.sync_cache().map(|r| {
                assert_eq!(r.status, 0);
                model.synced();
                c.sync_points += 1;
            })
        };
        if let Err(e) = r {
            assert!(
                armed_at.is_some(),
                "the connection failed before the killer was armed: {e}; log:\n{}",
                sanboot.log()
            );
            break;
        }
        ops += 1;
        if ops == arm_after {
            arm.send(rng.below(30_000)).unwrap();
            armed_at = Some(ops);
        }
    }
    assert!(
        armed_at.is_some(),
        "the round ended before the killer was armed"
    );
    drop(arm);
    killer.join().unwrap();
    sanboot.reap();
    sanboot.restart();

    let mut ini = Initiator::login(sanboot.port, INITIATOR, IQN, 0)
        .unwrap_or_else(|e| panic!("login after restart: {e}; log:\n{}", sanboot.log()));
    ini.ready().unwrap();
    let per_read = 128;
    for start in (0..BLOCKS).step_by(per_read) {
        let r = ini.read10(start as u32, per_read as u16).unwrap();
        assert_eq!(
            r.status,
            0,
            "read of {start} after restart: sense {:02x?}; log:\n{}",
            r.sense,
            sanboot.log()
        );
        for (k, got) in r.data.chunks(512).enumerate() {
            let b = start + k;
            let found = std::iter::once(&model.durable[b])
                .chain(&model.since[b])
                .copied()
                .find(|&v| block(v, b)[..] == *got);
            let Some(v) = found else {
                panic!(
                    "round {}: block {b} is neither its synced version {} nor one written since \
                     {:?}; it starts {:02x?}",
                    c.rounds,
                    model.durable[b],
                    model.since[b],
                    &got[..16]
                );
            };
            c.blocks_checked += 1;
            if v != model.durable[b] {
                c.newer_than_sync += 1;
            } else if model.since[b].last().is_some_and(|&l| l != v) {
                c.lost_unsynced += 1;
            }
            if v == 0 {
                c.base_blocks += 1;
            }
            model.durable[b] = v;
            model.since[b].clear();
        }
    }
    c.rounds += 1;
}

#[test]
fn synced_writes_on_an_overlay_survive_sigkill_and_the_rest_reads_the_base() {
    let golden = tempfile::tempdir().unwrap();
    let base = golden.path().join("golden.img");
    write_base(&base);
    let base_before = std::fs::read(&base).unwrap();
    let mut sanboot = Sanboot::start_with(&targets(&base), false, "info");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut model = Model {
        durable: vec![0; BLOCKS],
        since: vec![Vec::new(); BLOCKS],
    };
    let mut next_v = 2;
    let mut c = Counts::default();
    let start = Instant::now();
    while c.rounds < ROUNDS && (c.rounds < MIN_ROUNDS || start.elapsed() < TIME_BUDGET) {
        round(&mut sanboot, &mut model, &mut rng, &mut next_v, &mut c);
    }
    eprintln!("{c:?} in {:.1} s", start.elapsed().as_secs_f64());
    assert!(c.sync_points > 0 && c.acked_writes > 0 && c.acked_unmaps > 0);
    assert!(
        c.base_blocks > 0,
        "some blocks were never written and read the base"
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "the base image was written"
    );
}

#[test]
fn unmap_on_an_overlay_gives_the_space_back() {
    let golden = tempfile::tempdir().unwrap();
    let base = golden.path().join("golden.img");
    write_base(&base);
    let sanboot = Sanboot::start(&targets(&base));
    let overlay = sanboot.dir().join("station.ovl");
    let allocated = || std::fs::metadata(&overlay).unwrap().blocks() * 512;
    let mut ini = Initiator::login(sanboot.port, INITIATOR, IQN, 0).unwrap();
    ini.ready().unwrap();
    let empty = allocated();
    let data: Vec<u8> = (0..128).flat_map(|b| block(7, b)).collect();
    for i in 0..64u32 {
        assert_eq!(ini.write10(i * 128, &data, false).unwrap().status, 0);
    }
    assert_eq!(ini.sync_cache().unwrap().status, 0);
    let written = allocated();
    assert!(written >= empty + (4 << 20), "{empty} -> {written}");
    assert_eq!(unmap(&mut ini, 0, 64 * 128).unwrap(), 0);
    assert_eq!(ini.sync_cache().unwrap().status, 0);
    let after = allocated();
    assert!(
        after <= empty + (128 << 10),
        "{empty} -> {written} -> {after}"
    );
    // Unmapped blocks read zeros; the rest still reads the base.
    let r = ini.read10(100, 8).unwrap();
    assert!(r.data.iter().all(|&b| b == 0));
    let r = ini.read10(64 * 128, 1).unwrap();
    assert_eq!(r.data, block(0, 64 * 128));
    eprintln!("overlay file: {empty} bytes empty, {written} after 4 MiB, {after} after UNMAP");
}
