//! The overlay against models: the conformance suite, random operations
//! against a plain disk, reopen, refusals, and a power-cut simulator.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;
use crate::block::conformance;
use crate::block::RamDisk;

/// xorshift64*: deterministic, seeded.
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
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A map store on the heap, as a host keeps one.
#[derive(Debug, Default)]
struct VecMap {
    entries: Vec<u32>,
    free: Vec<u32>,
}

impl VecMap {
    fn new(n: u32) -> Self {
        VecMap {
            entries: vec![0; n as usize],
            free: Vec::new(),
        }
    }
}

impl MapStore for VecMap {
    fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }
    fn get(&self, g: u32) -> u32 {
        self.entries.get(g as usize).copied().unwrap_or(0)
    }
    fn set(&mut self, g: u32, e: u32) {
        if let Some(x) = self.entries.get_mut(g as usize) {
            *x = e;
        }
    }
    fn push_free(&mut self, slot: u32) -> bool {
        self.free.push(slot);
        true
    }
    fn pop_free(&mut self) -> Option<u32> {
        self.free.pop()
    }
}

/// The overlay file in RAM: what a flush made durable, what was written
/// since (in order), and an optional budget of operations after which it
/// "loses power" and fails everything.
#[derive(Debug, Default)]
struct SimFile {
    now: Vec<u8>,
    synced: Vec<u8>,
    since: Vec<(u64, Vec<u8>)>,
    budget: Option<u32>,
    flushes: u32,
}

impl SimFile {
    fn with(image: Vec<u8>) -> Self {
        SimFile {
            synced: image.clone(),
            now: image,
            ..SimFile::default()
        }
    }

    fn spend(&mut self) -> Result<(), BlockError> {
        match &mut self.budget {
            Some(0) => Err(BlockError::Io),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn put(img: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if img.len() < end {
            img.resize(end, 0);
        }
        img[offset as usize..end].copy_from_slice(data);
    }

    /// The bytes a crash leaves, under one of three models.
    fn crash(&self, model: Crash, rng: &mut Rng) -> Vec<u8> {
        match model {
            Crash::Kill => self.now.clone(),
            Crash::FsyncOnly => self.synced.clone(),
            Crash::Sectors => {
                let mut img = self.synced.clone();
                for (off, data) in &self.since {
                    // Each 512-byte sector of the file independently.
                    let mut at = *off;
                    let end = off + data.len() as u64;
                    while at < end {
                        let next = ((at / 512) + 1) * 512;
                        let n = next.min(end) - at;
                        if rng.chance(50) {
                            let s = (at - off) as usize;
                            Self::put(&mut img, at, &data[s..s + n as usize]);
                        }
                        at += n;
                    }
                }
                img
            }
        }
    }
}

impl BlockDevice for SimFile {
    fn len(&self) -> u64 {
        u64::MAX / 2
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let end = offset as usize + buf.len();
        let src = self
            .now
            .get(offset as usize..end)
            .ok_or(BlockError::OutOfRange)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.spend()?;
        Self::put(&mut self.now, offset, data);
        self.since.push((offset, data.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.spend()?;
        self.synced.clone_from(&self.now);
        self.since.clear();
        self.flushes += 1;
        Ok(())
    }
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        // A hole punch reaches the disk like a write of zeros.
        self.write_at(offset, &vec![0; len as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// Process kill: everything written reached the page cache.
    Kill,
    /// Power cut on a disk that keeps only what was flushed.
    FsyncOnly,
    /// Power cut that kept a random subset of the unflushed sectors.
    Sectors,
}

type SimOverlay = Overlay<RamDisk<Vec<u8>>, SimFile, VecMap, Vec<u8>, 8>;

fn base_image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 9) as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn id(n: u8) -> [u8; 16] {
    [n; 16]
}

fn create(base: Vec<u8>, gran: u32, scratch: usize) -> SimOverlay {
    let entries = (base.len() as u64).div_ceil(u64::from(gran)) as u32;
    Overlay::create(
        RamDisk(base),
        SimFile::default(),
        VecMap::new(entries),
        vec![0; scratch],
        id(1),
        gran,
    )
    .unwrap()
}

fn reopen(base: Vec<u8>, image: Vec<u8>, scratch: usize) -> Result<SimOverlay, OverlayError> {
    let h = Header::parse(&image).unwrap();
    Overlay::open(
        RamDisk(base),
        SimFile::with(image),
        VecMap::new(h.entries),
        vec![0; scratch],
        id(1),
    )
}

#[test]
fn conforms_over_ram_disks() {
    // Whole 4 KiB granules: the suite's 8 KiB deallocate covers two.
    let base = base_image(256 << 10, 3);
    let mut file = vec![0u8; 1 << 20];
    let mut entries = [0u32; 64];
    let mut free = [0u32; 16];
    let mut scratch = [0u8; 512];
    let mut o: Overlay<_, _, _, _> = Overlay::create(
        RamDisk(base),
        RamDisk(&mut file[..]),
        SliceMap::new(&mut entries, &mut free),
        &mut scratch[..],
        id(1),
        4096,
    )
    .unwrap();
    assert_eq!(conformance::run(&mut o), Ok(()));
}

#[test]
fn unwritten_blocks_read_the_base_and_writes_copy_up() {
    let base = base_image(1 << 20, 9);
    let mut o = create(base.clone(), 64 << 10, 4096);
    let mut buf = vec![0u8; 3000];
    o.read_at(70_000, &mut buf).unwrap();
    assert_eq!(buf, base[70_000..73_000]);
    assert_eq!(o.used_slots(), 0);
    // A 512-byte write in the middle of a granule copies the rest up.
    o.write_at(65536 + 1024, &[0xee; 512]).unwrap();
    assert_eq!(o.used_slots(), 1);
    let mut g = vec![0u8; 65536];
    o.read_at(65536, &mut g).unwrap();
    let mut want = base[65536..131072].to_vec();
    want[1024..1536].fill(0xee);
    assert_eq!(g, want);
    // The base is untouched.
    assert_eq!(o.base().0, base);
}

/// Random unaligned reads, writes and deallocates give the same bytes as a
/// plain RAM disk that started as a copy of the base.
#[test]
fn random_operations_match_a_plain_disk() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed * 0x9e37_79b9);
        let gran = 4096u32 << rng.below(3);
        let scratch = 512 * (1 + rng.below(16) as usize);
        let len = (64 << 10) * (1 + rng.below(6) as usize) + 512 * rng.below(8) as usize;
        let base = base_image(len, seed as u8);
        let mut model = base.clone();
        let mut o = create(base.clone(), gran, scratch);
        for step in 0..300 {
            let off = rng.below(len as u64) as usize;
            let n = (rng.below(20_000) as usize).min(len - off);
            match rng.below(10) {
                0..=4 => {
                    let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    o.write_at(off as u64, &data).unwrap();
                    model[off..off + n].copy_from_slice(&data);
                }
                5 | 6 => {
                    o.deallocate(off as u64, n as u64).unwrap();
                    model[off..off + n].fill(0);
                }
                7 => o.flush().unwrap(),
                _ => {
                    let mut buf = vec![0u8; n];
                    o.read_at(off as u64, &mut buf).unwrap();
                    assert!(buf == model[off..off + n], "seed {seed} step {step}");
                }
            }
        }
        let mut all = vec![0u8; len];
        o.read_at(0, &mut all).unwrap();
        assert!(all == model, "seed {seed}");
        // Flushed and reopened: the same bytes, and writes keep working.
        o.flush().unwrap();
        let (_, file, _, _) = o.into_parts();
        let mut o = reopen(base.clone(), file.now, scratch).unwrap();
        o.read_at(0, &mut all).unwrap();
        assert!(all == model, "seed {seed} after reopen");
        o.write_at(0, &[7; 512]).unwrap();
        model[..512].fill(7);
        o.read_at(0, &mut all).unwrap();
        assert!(all == model, "seed {seed} write after reopen");
    }
}

#[test]
fn whole_granule_deallocate_frees_the_slot_for_reuse_after_a_flush() {
    let base = base_image(256 << 10, 1);
    let mut o = create(base.clone(), 4096, 4096);
    o.write_at(0, &[1; 8192]).unwrap();
    assert_eq!(o.used_slots(), 2);
    o.flush().unwrap();
    o.deallocate(0, 4096).unwrap();
    assert_eq!(o.used_slots(), 1);
    assert_eq!(
        o.extent(0).unwrap(),
        Some(Extent {
            deallocated: true,
            len: 4096
        })
    );
    // Not reused before the map that frees it is durable: a new slot.
    o.write_at(8192, &[2; 4096]).unwrap();
    assert_eq!(o.next_slot(), 3);
    o.flush().unwrap();
    o.write_at(16384, &[3; 4096]).unwrap();
    assert_eq!(o.next_slot(), 3, "the freed slot 0 was reused");
    // After a reopen, unreferenced slots below the highest are free again.
    o.deallocate(4096, 4096).unwrap();
    o.flush().unwrap();
    let (_, file, _, _) = o.into_parts();
    let mut o = reopen(base, file.now, 512).unwrap();
    assert_eq!(o.used_slots(), 2);
    o.write_at(65536, &[4; 512]).unwrap();
    assert_eq!(o.next_slot(), 3, "slot 1 was found free at open");
}

#[test]
fn refuses_another_base_and_damaged_maps() {
    let base = base_image(64 << 10, 1);
    let mut o = create(base.clone(), 4096, 4096);
    o.write_at(0, &[1; 8192]).unwrap();
    o.flush().unwrap();
    let image = o.into_parts().1.now;
    let open_with = |b: Vec<u8>, id: [u8; 16], img: Vec<u8>| {
        Overlay::<_, _, _, _>::open(
            RamDisk(b),
            SimFile::with(img),
            VecMap::new(16),
            vec![0u8; 512],
            id,
        )
        .map(|_| ())
    };
    assert_eq!(
        open_with(base.clone(), id(2), image.clone()),
        Err(OverlayError::BaseMismatch)
    );
    assert_eq!(
        open_with(base_image(128 << 10, 1), id(1), image.clone()),
        Err(OverlayError::BaseMismatch)
    );
    // Two granules naming one slot.
    let h = Header::parse(&image).unwrap();
    let mut dup = image.clone();
    let m = h.map_offset as usize;
    dup[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        open_with(base.clone(), id(1), dup),
        Err(OverlayError::CorruptMap { granule: 1 })
    );
    let mut far = image.clone();
    far[m + 8..m + 12].copy_from_slice(&(2 + 2 * 16u32).to_le_bytes());
    assert_eq!(
        open_with(base.clone(), id(1), far),
        Err(OverlayError::CorruptMap { granule: 2 })
    );
    let mut bad = image;
    bad[3] ^= 1;
    assert_eq!(
        open_with(base, id(1), bad),
        Err(OverlayError::Format(FormatError::BadMagic))
    );
}

#[test]
fn reset_discards_everything() {
    let base = base_image(128 << 10, 5);
    let mut o = create(base.clone(), 4096, 4096);
    o.write_at(4096, &[9; 20_000]).unwrap();
    o.flush().unwrap();
    o.reset().unwrap();
    assert_eq!(o.used_slots(), 0);
    let mut all = vec![0u8; 128 << 10];
    o.read_at(0, &mut all).unwrap();
    assert!(all == base);
    let (_, file, _, _) = o.into_parts();
    let mut o = reopen(base.clone(), file.synced, 512).unwrap();
    o.read_at(0, &mut all).unwrap();
    assert!(all == base, "the reset is durable");
}

// ---- power cuts ----

const BLOCK: usize = 512;

/// What block `b` holds at version `v`: 0 the base, 1 zeros, else the
/// data of write `v` (its number and the block in the first 16 bytes).
fn content(base: &[u8], v: u32, b: usize) -> Vec<u8> {
    match v {
        0 => base[b * BLOCK..(b + 1) * BLOCK].to_vec(),
        1 => vec![0; BLOCK],
        _ => {
            let mut s = vec![0u8; BLOCK];
            s[..8].copy_from_slice(&u64::from(v).to_le_bytes());
            s[8..16].copy_from_slice(&(b as u64).to_le_bytes());
            for (i, x) in s[16..].iter_mut().enumerate() {
                *x = (v as usize * 7 + b * 13 + i) as u8;
            }
            s
        }
    }
}

/// `content(base, v, b) == got`, without building it.
fn is_content(base: &[u8], v: u32, b: usize, got: &[u8]) -> bool {
    match v {
        0 => base[b * BLOCK..(b + 1) * BLOCK] == *got,
        1 => got.iter().all(|&x| x == 0),
        _ => {
            got[..8] == u64::from(v).to_le_bytes()
                && got[8..16] == (b as u64).to_le_bytes()
                && got[16..]
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (v as usize * 7 + b * 13 + i) as u8)
        }
    }
}

/// Per block: the version at the last completed flush and every version
/// written since (any of them may survive a crash).
struct Model {
    durable: Vec<u32>,
    since: Vec<Vec<u32>>,
    latest: Vec<u32>,
}

impl Model {
    fn new(blocks: usize) -> Self {
        Model {
            durable: vec![0; blocks],
            since: vec![Vec::new(); blocks],
            latest: vec![0; blocks],
        }
    }
    fn wrote(&mut self, b: usize, v: u32) {
        self.since[b].push(v);
        self.latest[b] = v;
    }
    fn flushed(&mut self) {
        self.durable.clone_from(&self.latest);
        for s in &mut self.since {
            s.clear();
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    crashes: [u32; 3],
    mid_operation: u32,
    blocks_checked: u64,
    blocks_newer_than_flush: u64,
    blocks_lost_after_flush: u64,
}

/// Runs random operations, crashes (between or inside an operation),
/// reopens from what survived and checks every block; several crashes in a
/// row on the same overlay.
fn crash_scenario(seed: u64, counts: &mut Counts) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let gran = 4096u32 << rng.below(3);
    let blocks = 256 + rng.below(256) as usize;
    let base = base_image(blocks * BLOCK, seed as u8);
    let scratch = 512 * (1 + rng.below(8) as usize);
    let mut o = create(base.clone(), gran, scratch);
    let mut model = Model::new(blocks);
    let mut version = 2u32;
    for _cycle in 0..4 {
        let ops = 1 + rng.below(120);
        // Sometimes the power goes inside an operation.
        if rng.chance(40) {
            o.file_mut().budget = Some(rng.below(200) as u32);
        }
        let mut died = false;
        for _ in 0..ops {
            let b = rng.below(blocks as u64) as usize;
            let n = (1 + rng.below(24) as usize).min(blocks - b);
            let r = match rng.below(10) {
                0..=5 => {
                    let mut data = Vec::with_capacity(n * BLOCK);
                    for k in b..b + n {
                        data.extend(content(&base, version, k));
                        model.wrote(k, version);
                    }
                    version += 1;
                    o.write_at((b * BLOCK) as u64, &data)
                }
                6 | 7 => {
                    for k in b..b + n {
                        model.wrote(k, 1);
                    }
                    o.deallocate((b * BLOCK) as u64, (n * BLOCK) as u64)
                }
                _ => {
                    // Often the power goes inside the checkpoint itself:
                    // between its flushes and map writes.
                    if o.file().budget.is_none() && rng.chance(25) {
                        o.file_mut().budget = Some(rng.below(5) as u32);
                    }
                    let r = o.flush();
                    if r.is_ok() {
                        model.flushed();
                    }
                    r
                }
            };
            if r.is_err() {
                assert_eq!(
                    o.file().budget,
                    Some(0),
                    "seed {seed}: {r:?} without a power cut"
                );
                died = true;
                break;
            }
        }
        if died {
            counts.mid_operation += 1;
        }
        let crash = [Crash::Kill, Crash::FsyncOnly, Crash::Sectors][rng.below(3) as usize];
        counts.crashes[crash as usize] += 1;
        let image = o.file().crash(crash, &mut rng);
        o = reopen(base.clone(), image, scratch)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after {crash:?}: {e:?}"));
        let mut all = vec![0u8; blocks * BLOCK];
        o.read_at(0, &mut all).unwrap();
        for (b, got) in all.chunks(BLOCK).enumerate() {
            let ok = core::iter::once(&model.durable[b])
                .chain(&model.since[b])
                .find(|&&v| is_content(&base, v, b, got));
            let Some(&v) = ok else {
                panic!(
                    "seed {seed}: block {b} after {crash:?} is neither its flushed version {} \
                     nor one written since {:?}; first bytes {:02x?}",
                    model.durable[b],
                    model.since[b],
                    &got[..16]
                );
            };
            counts.blocks_checked += 1;
            if v != model.durable[b] {
                counts.blocks_newer_than_flush += 1;
            } else if model.latest[b] != v {
                counts.blocks_lost_after_flush += 1;
            }
            // What survived is the new starting point.
            model.durable[b] = v;
            model.latest[b] = v;
            model.since[b].clear();
        }
    }
}

impl SimOverlay {
    fn file_mut(&mut self) -> &mut SimFile {
        &mut self.file
    }
}

/// Scenarios of four crashes each.
const SCENARIOS: u64 = 1000;

#[test]
fn every_flushed_write_survives_power_cuts_and_kills() {
    let mut counts = Counts::default();
    for seed in 0..SCENARIOS {
        crash_scenario(seed, &mut counts);
    }
    std::eprintln!(
        "overlay crash simulation: {} crashes (kill {}, fsync-only {}, random sectors {}), \
         {} inside an operation; {} blocks checked, {} read a version newer than the last \
         flush, {} lost unflushed writes, 0 wrong",
        counts.crashes.iter().sum::<u32>(),
        counts.crashes[0],
        counts.crashes[1],
        counts.crashes[2],
        counts.mid_operation,
        counts.blocks_checked,
        counts.blocks_newer_than_flush,
        counts.blocks_lost_after_flush,
    );
    // The simulator really crashed in every way, and both outcomes of an
    // unflushed write happened (so the check could have failed).
    assert!(counts.crashes.iter().all(|&c| c > SCENARIOS as u32));
    assert!(counts.mid_operation > SCENARIOS as u32 / 2);
    assert!(counts.blocks_newer_than_flush > 0 && counts.blocks_lost_after_flush > 0);
}
