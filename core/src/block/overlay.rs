//! A copy-on-write overlay: a writable disk made of a read-only base image
//! and a per-station overlay file that holds only what the station changed.
//!
//! [`Overlay`] is a [`BlockDevice`] stacked on two others: the base (`B`,
//! never written) and the overlay file as a raw device (`F`). Its map lives
//! in a [`MapStore`] the host provides (a `Vec` on Linux; a firmware could
//! page it), and copy-up goes through a caller-provided scratch buffer, so
//! nothing here allocates.
//!
//! # On-disk format, version 1 (all integers little-endian)
//!
//! ```text
//! 0       header block (4 KiB; the fields below, then zeros)
//!           0  magic "SANBOVLY"            8 bytes
//!           8  version = 1                 u32
//!          12  granularity                 u32  power of two, 4 KiB..=1 MiB (default 64 KiB)
//!          16  virtual size                u64  bytes, multiple of 512
//!          24  base size                   u64  bytes, <= virtual size
//!          32  base id                     16 bytes, chosen by the host
//!          48  map offset                  u64  multiple of 512, >= 4096
//!          56  entry count                 u32  = ceil(virtual size / granularity)
//!          60  reserved = 0                u32
//!          64  data offset                 u64  multiple of granularity, >= map end
//!          72  crc32c of bytes 0..72       u32
//! map     entry count x u32, one per granule:
//!           0      never written here: read the base (zeros past the base's end)
//!           1      deallocated: reads as zeros
//!           n >= 2 data in slot n-2, at data offset + (n-2) * granularity
//! data    slots of one granule each; slot numbers stay below 2 x entry count
//! ```
//!
//! The header is written once, when the overlay is created, and never
//! changes. A new overlay has the map right after the header block and its
//! data at the first granule boundary after the map. Past the slots in use
//! the file is sparse, and slots freed by a deallocate are hole-punched
//! (`F::deallocate`), so the file holds about what the station wrote.
//! [`Header::parse`] refuses anything inconsistent without panicking (it
//! has a fuzz target); [`Overlay::open`] also refuses a map entry that
//! names a slot out of range or a slot two granules share.
//!
//! # Crash contract
//!
//! The overlay behaves like a disk with a volatile write cache:
//! - every write (and deallocate) completed before a completed
//!   [`BlockDevice::flush`] survives any crash, process kill or power cut;
//! - writes after the last completed flush may be lost, wholly or in part
//!   (per 512-byte sector);
//! - a block never reads as anything but the base's data, zeros after a
//!   deallocate, or data written to that block.
//!
//! This needs `F::flush` to be a real barrier (`fdatasync`) and 512-byte
//! sector writes of `F` not to tear, as for any disk. `F` is addressed past
//! its current end (writes grow it), and its `deallocate`, when supported,
//! must leave the range reading as zeros even past that end (a file's hole
//! punch does not grow the file: the host's device extends it).
//!
//! How: a granule's first write (copy-up) allocates a slot and writes the
//! whole granule there at once (the base's bytes around the new ones), but
//! its map entry reaches the file only at the next checkpoint, after the
//! slot's data is durable: a checkpoint is `F::flush`, then the dirty map
//! sectors, then `F::flush` again. [`BlockDevice::flush`] is a checkpoint
//! (just one `F::flush` when no entry changed); a checkpoint also runs
//! when `PENDING` entries have changed or `PENDING` slots have been freed
//! since the last one. A crash before the map write leaves the old entry
//! (base, zeros or the old slot), and the new slot unreferenced. Writes to
//! a granule that already has a slot go straight to the slot; those are the
//! only in-place updates, and a torn one mixes old and new sectors of that
//! block's own data. A slot freed by a deallocate is reused only after the
//! checkpoint that frees it on disk, so no map entry on disk ever points at
//! a slot that holds another granule's data.
//!
//! # Slot allocation, bounded and without allocation
//!
//! Slots in use are those the map references; `next_slot` is one past the
//! highest slot ever handed out. A new slot is a reusable free slot from the
//! [`MapStore`]'s free stack, else `next_slot`. Slots freed since the last
//! checkpoint wait in a fixed array of `PENDING` and move to the free stack
//! when the checkpoint is durable; a free stack that is full drops the slot
//! (it stays unused until the next open). At open the map is read and the
//! free stack rebuilt: `next_slot` is one past the highest referenced slot,
//! and every unreferenced slot below it is free — found with a bitmap in
//! the scratch buffer, one pass over the map per `8 x scratch.len()` slots.
//! Slot data past `next_slot` left by writes that a crash cut off before
//! their checkpoint is never read: a slot is always written whole before a
//! map entry names it.

pub mod format;
#[cfg(test)]
mod tests;

use super::{BlockDevice, BlockError, Extent};
pub use format::{FormatError, Header, DEFAULT_GRANULARITY};
use format::{ENTRY_BASE, ENTRY_ZERO};

/// Where the overlay keeps its map in memory: one `u32` entry per granule
/// (see the module docs for their meaning), and a stack of free slots.
pub trait MapStore {
    /// How many entries it holds.
    fn capacity(&self) -> u32;
    /// Entry `granule`; 0 (read the base) past the end.
    fn get(&self, granule: u32) -> u32;
    /// Sets entry `granule`; ignored past the end (the overlay checks the
    /// capacity when it opens).
    fn set(&mut self, granule: u32, entry: u32);
    /// Remembers that `slot` may be reused; `false` when there is no room
    /// (the slot then stays unused until the overlay is opened again).
    fn push_free(&mut self, slot: u32) -> bool;
    /// A slot that may be reused, if any.
    fn pop_free(&mut self) -> Option<u32>;
}

/// A [`MapStore`] over caller-provided slices: `entries` (one per granule)
/// and `free` (room for free slots; any size, 0 included).
#[derive(Debug)]
pub struct SliceMap<'a> {
    entries: &'a mut [u32],
    free: &'a mut [u32],
    free_len: usize,
}

impl<'a> SliceMap<'a> {
    /// A store over `entries` and `free`.
    pub fn new(entries: &'a mut [u32], free: &'a mut [u32]) -> Self {
        SliceMap {
            entries,
            free,
            free_len: 0,
        }
    }
}

impl MapStore for SliceMap<'_> {
    fn capacity(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }
    fn get(&self, granule: u32) -> u32 {
        self.entries.get(granule as usize).copied().unwrap_or(0)
    }
    fn set(&mut self, granule: u32, entry: u32) {
        if let Some(e) = self.entries.get_mut(granule as usize) {
            *e = entry;
        }
    }
    fn push_free(&mut self, slot: u32) -> bool {
        match self.free.get_mut(self.free_len) {
            Some(f) => {
                *f = slot;
                self.free_len += 1;
                true
            }
            None => false,
        }
    }
    fn pop_free(&mut self) -> Option<u32> {
        self.free_len = self.free_len.checked_sub(1)?;
        self.free.get(self.free_len).copied()
    }
}

/// Why an overlay could not be created or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OverlayError {
    /// The header is not a valid version 1 header.
    Format(FormatError),
    /// The overlay was made for another base (its size or id differ); the
    /// header says which (see [`Header::parse`]).
    BaseMismatch,
    /// The base's size cannot be an overlay's (0, not whole 512-byte
    /// blocks, too many granules) or the granularity is out of range.
    BadSize,
    /// The [`MapStore`] holds fewer entries than the overlay has.
    MapTooSmall {
        /// Entries needed.
        required: u32,
    },
    /// The scratch buffer is smaller than 512 bytes.
    ScratchTooSmall,
    /// A map entry names a slot out of range, or one another entry names.
    CorruptMap {
        /// The first granule found wrong.
        granule: u32,
    },
    /// The base or the overlay file failed.
    Device(BlockError),
}

impl From<BlockError> for OverlayError {
    fn from(e: BlockError) -> Self {
        OverlayError::Device(e)
    }
}

/// Counters for tests and status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Granules that got a slot (first write or partial deallocate).
    pub copy_ups: u64,
    /// Checkpoints that wrote map entries.
    pub checkpoints: u64,
    /// Freed slots the free stack had no room for (unused until reopened).
    pub dropped_free_slots: u64,
}

/// What a range of the overlay reads from: see [`Overlay::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The base, at this byte offset.
    Base(u64),
    /// Zeros (deallocated, or past the base's end).
    Zeros,
    /// The overlay file, at this byte offset.
    File(u64),
}

/// The first run of a range that reads from one contiguous source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Where its bytes are.
    pub source: Source,
    /// Its length in bytes (at least 1, at most what was asked).
    pub len: u64,
}

/// A copy-on-write disk: base `B` (read-only), overlay file `F`, map `M`,
/// scratch buffer `S` (any size from 512 bytes; larger is fewer I/Os). At
/// most `PENDING` map changes and freed slots wait for a checkpoint.
#[derive(Debug)]
pub struct Overlay<B, F, M, S, const PENDING: usize = 256> {
    base: B,
    file: F,
    map: M,
    scratch: S,
    header: Header,
    next_slot: u32,
    used_slots: u32,
    /// Granules whose entry changed since the last checkpoint.
    dirty: heapless::Vec<u32, PENDING>,
    /// Slots freed since the last checkpoint: not reusable yet.
    freed: heapless::Vec<u32, PENDING>,
    stats: OverlayStats,
}

/// One granule's part of a range: `[at, at + len)` inside granule `g`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    g: u32,
    at: u64,
    len: u64,
    /// The granule's length (the last one may be short).
    glen: u64,
}

impl<B, F, M, S, const PENDING: usize> Overlay<B, F, M, S, PENDING>
where
    B: BlockDevice,
    F: BlockDevice,
    M: MapStore,
    S: AsMut<[u8]>,
{
    /// Formats `file` as a new, empty overlay over `base` (identified by
    /// `base_id`) and opens it. `file` should be empty or sparse: the header
    /// and the map are written, and flushed, before this returns.
    pub fn create(
        base: B,
        mut file: F,
        map: M,
        mut scratch: S,
        base_id: [u8; 16],
        granularity: u32,
    ) -> Result<Self, OverlayError> {
        let header = Header::new(base.len(), base_id, granularity).ok_or(OverlayError::BadSize)?;
        let buf = scratch.as_mut();
        let block = buf.get_mut(..512).ok_or(OverlayError::ScratchTooSmall)?;
        header.emit(block);
        file.write_at(0, block)?;
        let mut o = Overlay::new(base, file, map, scratch, header)?;
        for g in 0..header.entries {
            o.map.set(g, ENTRY_BASE);
        }
        o.drain_free();
        o.zero_file(header.map_offset, o.map_len())?;
        o.file.flush()?;
        Ok(o)
    }

    /// Opens an existing overlay of `base`; refuses one made for another
    /// base ([`OverlayError::BaseMismatch`]) and a damaged one.
    pub fn open(
        base: B,
        mut file: F,
        map: M,
        mut scratch: S,
        base_id: [u8; 16],
    ) -> Result<Self, OverlayError> {
        let block = scratch
            .as_mut()
            .get_mut(..512)
            .ok_or(OverlayError::ScratchTooSmall)?;
        file.read_at(0, block)?;
        let header = Header::parse(block).map_err(OverlayError::Format)?;
        if header.base_size != base.len() || header.base_id != base_id {
            return Err(OverlayError::BaseMismatch);
        }
        let mut o = Overlay::new(base, file, map, scratch, header)?;
        o.load_map()?;
        o.rebuild_free()?;
        Ok(o)
    }

    fn new(base: B, file: F, map: M, mut scratch: S, header: Header) -> Result<Self, OverlayError> {
        if scratch.as_mut().len() < 512 {
            return Err(OverlayError::ScratchTooSmall);
        }
        if map.capacity() < header.entries {
            return Err(OverlayError::MapTooSmall {
                required: header.entries,
            });
        }
        Ok(Overlay {
            base,
            file,
            map,
            scratch,
            header,
            next_slot: 0,
            used_slots: 0,
            dirty: heapless::Vec::new(),
            freed: heapless::Vec::new(),
            stats: OverlayStats::default(),
        })
    }

    /// The header (geometry, base identity).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Counters.
    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// Slots that hold data now.
    pub fn used_slots(&self) -> u32 {
        self.used_slots
    }

    /// Bytes of data the overlay holds (slots in use × granularity).
    pub fn data_bytes(&self) -> u64 {
        u64::from(self.used_slots) * u64::from(self.header.granularity)
    }

    /// One past the highest slot handed out: the file needs no bytes past
    /// `header().slot_offset(next_slot())` (a host may truncate there).
    pub fn next_slot(&self) -> u32 {
        self.next_slot
    }

    /// The overlay file device.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The base device.
    pub fn base(&self) -> &B {
        &self.base
    }

    /// Takes the overlay apart (nothing is flushed).
    pub fn into_parts(self) -> (B, F, M, S) {
        (self.base, self.file, self.map, self.scratch)
    }

    fn map_len(&self) -> u64 {
        (u64::from(self.header.entries) * 4).next_multiple_of(512)
    }

    fn drain_free(&mut self) {
        for _ in 0..self.header.max_slots() {
            if self.map.pop_free().is_none() {
                break;
            }
        }
    }

    fn load_map(&mut self) -> Result<(), OverlayError> {
        let h = self.header;
        let buf = self.scratch.as_mut();
        let chunk = buf.len() / 512 * 512;
        let total = u64::from(h.entries) * 4;
        let mut g = 0u32;
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(chunk as u64) as usize;
            let b = buf.get_mut(..n).ok_or(OverlayError::ScratchTooSmall)?;
            self.file.read_at(h.map_offset + done, b)?;
            for e in b.chunks_exact(4) {
                let e = u32::from_le_bytes(e.try_into().unwrap_or([0; 4]));
                if e >= 2 {
                    let slot = e - 2;
                    if slot >= h.max_slots() {
                        return Err(OverlayError::CorruptMap { granule: g });
                    }
                    self.next_slot = self.next_slot.max(slot + 1);
                    self.used_slots += 1;
                }
                self.map.set(g, e);
                g += 1;
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Pushes every slot below `next_slot` that no entry names onto the free
    /// stack, a window of `8 × scratch.len()` slots per pass over the map.
    fn rebuild_free(&mut self) -> Result<(), OverlayError> {
        self.drain_free();
        let bits = (self.scratch.as_mut().len() as u64 * 8).min(u64::from(u32::MAX)) as u32;
        let mut window = 0u32;
        while window < self.next_slot {
            let end = window.saturating_add(bits).min(self.next_slot);
            let bitmap = self.scratch.as_mut();
            bitmap.fill(0);
            for g in 0..self.header.entries {
                let e = self.map.get(g);
                if e < 2 || !(window..end).contains(&(e - 2)) {
                    continue;
                }
                let i = (e - 2 - window) as usize;
                let byte = bitmap
                    .get_mut(i / 8)
                    .ok_or(OverlayError::CorruptMap { granule: g })?;
                if *byte & (1 << (i % 8)) != 0 {
                    return Err(OverlayError::CorruptMap { granule: g });
                }
                *byte |= 1 << (i % 8);
            }
            // Highest first, so the stack hands out low slots first.
            for slot in (window..end).rev() {
                let i = (slot - window) as usize;
                let used = bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
                if !used && !self.map.push_free(slot) {
                    self.stats.dropped_free_slots += 1;
                }
            }
            window = end;
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.header.virtual_size => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }

    fn piece(&self, offset: u64, len: u64) -> Piece {
        let gsize = u64::from(self.header.granularity);
        let g = offset / gsize;
        let start = g * gsize;
        let glen = (self.header.virtual_size - start).min(gsize);
        let at = offset - start;
        Piece {
            g: g as u32,
            at,
            len: len.min(glen - at),
            glen,
        }
    }

    /// Where the byte at `offset` reads from, and for how long the range
    /// `[offset, offset + len)` continues in the same contiguous source.
    /// A host may use this to read without holding the overlay mutably
    /// (the storage semantics stay here). `len` must be at least 1.
    pub fn locate(&self, offset: u64, len: u64) -> Result<Run, BlockError> {
        if len == 0 {
            return Err(BlockError::OutOfRange);
        }
        self.check_range(offset, len)?;
        let (source, mut run) = self.source_of(offset, len);
        while run < len {
            let (next, n) = self.source_of(offset + run, len - run);
            let contiguous = match (source, next) {
                (Source::Base(a), Source::Base(b)) | (Source::File(a), Source::File(b)) => {
                    a + run == b
                }
                (Source::Zeros, Source::Zeros) => true,
                _ => false,
            };
            if !contiguous {
                break;
            }
            run += n;
        }
        Ok(Run { source, len: run })
    }

    /// The source of the first piece of `[offset, offset + len)` inside one
    /// granule, and that piece's length.
    fn source_of(&self, offset: u64, len: u64) -> (Source, u64) {
        let p = self.piece(offset, len);
        match self.map.get(p.g) {
            ENTRY_BASE if offset >= self.header.base_size => (Source::Zeros, p.len),
            ENTRY_BASE => (
                Source::Base(offset),
                p.len.min(self.header.base_size - offset),
            ),
            ENTRY_ZERO => (Source::Zeros, p.len),
            e => (Source::File(self.header.slot_offset(e - 2) + p.at), p.len),
        }
    }

    /// Writes zeros to `[offset, offset + len)` of the file: a hole when the
    /// file can punch one, else zero bytes from the scratch buffer.
    fn zero_file(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        match self.file.deallocate(offset, len) {
            Err(BlockError::Unsupported) => {}
            r => return r,
        }
        let buf = self.scratch.as_mut();
        buf.fill(0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let b = buf.get(..n).ok_or(BlockError::Io)?;
            self.file.write_at(offset + done, b)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copies `[from, to)` of granule `g` (currently reading from the base,
    /// or zeros when `entry` is [`ENTRY_ZERO`]) into the slot at `slot_off`.
    fn copy_into_slot(
        &mut self,
        g: u32,
        entry: u32,
        slot_off: u64,
        from: u64,
        to: u64,
    ) -> Result<(), BlockError> {
        let start = u64::from(g) * u64::from(self.header.granularity);
        // Bytes of this part that come from the base; the rest are zeros.
        let base_end = if entry == ENTRY_BASE {
            self.header.base_size.saturating_sub(start).clamp(from, to)
        } else {
            from
        };
        let mut at = from;
        while at < base_end {
            let buf = self.scratch.as_mut();
            let n = (base_end - at).min(buf.len() as u64) as usize;
            let b = buf.get_mut(..n).ok_or(BlockError::Io)?;
            self.base.read_at(start + at, b)?;
            self.file.write_at(slot_off + at, b)?;
            at += n as u64;
        }
        self.zero_file(slot_off + base_end, to - base_end)
    }

    fn alloc_slot(&mut self) -> Result<u32, BlockError> {
        if let Some(s) = self.map.pop_free() {
            if s < self.header.max_slots() {
                return Ok(s);
            }
        }
        if self.next_slot >= self.header.max_slots() {
            return Err(BlockError::NoSpace);
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    fn release_unreferenced(&mut self, slot: u32) {
        if !self.map.push_free(slot) {
            self.stats.dropped_free_slots += 1;
        }
    }

    /// Gives granule `p.g` (base or zeros) a slot: the granule around
    /// `[p.at, p.at + p.len)` is copied from its current source, and the
    /// middle is `data`, or zeros when `data` is `None`. The map entry is
    /// set after the whole slot is written.
    fn copy_up(&mut self, p: Piece, data: Option<&[u8]>) -> Result<(), BlockError> {
        if self.dirty.is_full() {
            self.checkpoint()?;
        }
        let entry = self.map.get(p.g);
        let slot = self.alloc_slot()?;
        let off = self.header.slot_offset(slot);
        let r = (|| {
            self.copy_into_slot(p.g, entry, off, 0, p.at)?;
            match data {
                Some(d) => self.file.write_at(off + p.at, d)?,
                None => self.zero_file(off + p.at, p.len)?,
            }
            self.copy_into_slot(p.g, entry, off, p.at + p.len, p.glen)
        })();
        if let Err(e) = r {
            // Nothing on disk or in memory names it.
            self.release_unreferenced(slot);
            return Err(e);
        }
        self.map.set(p.g, slot + 2);
        // `dirty` had room: checked above, and nothing since pushed.
        let _ = self.dirty.push(p.g);
        self.used_slots += 1;
        self.stats.copy_ups += 1;
        Ok(())
    }

    /// Makes everything written so far durable and writes the changed map
    /// entries: `F::flush`, dirty map sectors, `F::flush`. Then the slots
    /// freed since the last checkpoint may be reused.
    fn checkpoint(&mut self) -> Result<(), BlockError> {
        self.file.flush()?;
        if self.dirty.is_empty() && self.freed.is_empty() {
            return Ok(());
        }
        self.dirty.sort_unstable();
        let per_sector = 128u32;
        let max_sectors = (self.scratch.as_mut().len() / 512) as u32;
        let mut i = 0;
        while let Some(&g) = self.dirty.get(i) {
            // A run of sectors with a dirty entry each, as far as the
            // scratch buffer holds.
            let first = g / per_sector;
            let mut last = first;
            while let Some(&next) = self.dirty.get(i) {
                let s = next / per_sector;
                if s > last + 1 || s - first >= max_sectors {
                    break;
                }
                last = s;
                i += 1;
            }
            let n = ((last - first + 1) * 512) as usize;
            let h = self.header;
            let buf = self.scratch.as_mut().get_mut(..n).ok_or(BlockError::Io)?;
            for (k, e) in buf.chunks_exact_mut(4).enumerate() {
                let granule = first * per_sector + k as u32;
                let v = if granule < h.entries {
                    self.map.get(granule)
                } else {
                    0
                };
                e.copy_from_slice(&v.to_le_bytes());
            }
            self.file
                .write_at(h.map_offset + u64::from(first) * 512, buf)?;
        }
        self.file.flush()?;
        self.dirty.clear();
        for k in 0..self.freed.len() {
            if let Some(&s) = self.freed.get(k) {
                self.release_unreferenced(s);
            }
        }
        self.freed.clear();
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Discards everything the overlay holds: every block reads the base
    /// again (a station in volatile mode starts from the golden image). The
    /// empty map is durable when this returns.
    pub fn reset(&mut self) -> Result<(), BlockError> {
        for g in 0..self.header.entries {
            self.map.set(g, ENTRY_BASE);
        }
        self.drain_free();
        self.dirty.clear();
        self.freed.clear();
        self.zero_file(self.header.map_offset, self.map_len())?;
        self.file.flush()?;
        // No entry names a slot now: give the space back.
        let data = u64::from(self.next_slot) * u64::from(self.header.granularity);
        match self.file.deallocate(self.header.data_offset, data) {
            Ok(()) | Err(BlockError::Unsupported) => {}
            Err(e) => return Err(e),
        }
        self.next_slot = 0;
        self.used_slots = 0;
        Ok(())
    }

    /// Deallocates one granule's piece.
    fn deallocate_piece(&mut self, p: Piece) -> Result<(), BlockError> {
        let entry = self.map.get(p.g);
        let start = u64::from(p.g) * u64::from(self.header.granularity);
        let reads_zeros =
            entry == ENTRY_ZERO || (entry == ENTRY_BASE && start + p.at >= self.header.base_size);
        if reads_zeros {
            return Ok(());
        }
        if p.at == 0 && p.len == p.glen {
            if self.dirty.is_full() || self.freed.is_full() {
                self.checkpoint()?;
            }
            if entry >= 2 {
                let slot = entry - 2;
                let off = self.header.slot_offset(slot);
                match self.file.deallocate(off, p.glen) {
                    Ok(()) | Err(BlockError::Unsupported) => {}
                    Err(e) => return Err(e),
                }
                // Reusable once the map that frees it is durable.
                let _ = self.freed.push(slot);
                self.used_slots -= 1;
            }
            self.map.set(p.g, ENTRY_ZERO);
            let _ = self.dirty.push(p.g);
            return Ok(());
        }
        if entry >= 2 {
            let off = self.header.slot_offset(entry - 2) + p.at;
            return self.zero_file(off, p.len);
        }
        self.copy_up(p, None)
    }
}

impl<B, F, M, S, const PENDING: usize> BlockDevice for Overlay<B, F, M, S, PENDING>
where
    B: BlockDevice,
    F: BlockDevice,
    M: MapStore,
    S: AsMut<[u8]>,
{
    fn len(&self) -> u64 {
        self.header.virtual_size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let run = self.locate(at, (buf.len() - done) as u64)?;
            let n = run.len as usize;
            let part = buf.get_mut(done..done + n).ok_or(BlockError::Io)?;
            match run.source {
                Source::Base(o) => self.base.read_at(o, part)?,
                Source::Zeros => part.fill(0),
                Source::File(o) => self.file.read_at(o, part)?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.check_range(offset, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let rest = (data.len() - done) as u64;
            let run = self.locate(at, rest)?;
            if let Source::File(o) = run.source {
                let n = run.len as usize;
                let part = data.get(done..done + n).ok_or(BlockError::Io)?;
                self.file.write_at(o, part)?;
                done += n;
                continue;
            }
            let p = self.piece(at, rest);
            let n = p.len as usize;
            let part = data.get(done..done + n).ok_or(BlockError::Io)?;
            self.copy_up(p, Some(part))?;
            done += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.checkpoint()
    }

    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.check_range(offset, len)?;
        let mut done = 0u64;
        while done < len {
            let p = self.piece(offset + done, len - done);
            self.deallocate_piece(p)?;
            done += p.len;
        }
        Ok(())
    }

    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        if offset >= self.header.virtual_size {
            return Err(BlockError::OutOfRange);
        }
        let first = self.piece(offset, u64::MAX);
        let (deallocated, mut len) = self.granule_state(first)?;
        let mut next = offset + first.len;
        // Whole granules in the same state extend the extent; bounded so
        // one call stays short (the caller asks again from where it ends).
        let mut granules = 0;
        while len == next - offset && next < self.header.virtual_size && granules < 1024 {
            let p = self.piece(next, u64::MAX);
            let (d, n) = self.granule_state(p)?;
            if d != deallocated {
                break;
            }
            len += n;
            if n < p.len {
                break;
            }
            next += p.len;
            granules += 1;
        }
        Ok(Some(Extent { deallocated, len }))
    }
}

impl<B, F, M, S, const PENDING: usize> Overlay<B, F, M, S, PENDING>
where
    B: BlockDevice,
    F: BlockDevice,
    M: MapStore,
    S: AsMut<[u8]>,
{
    /// Whether piece `p` starts deallocated, and for how many of its bytes.
    fn granule_state(&mut self, p: Piece) -> Result<(bool, u64), BlockError> {
        match self.map.get(p.g) {
            ENTRY_BASE => Ok((false, p.len)),
            ENTRY_ZERO => Ok((true, p.len)),
            e => {
                let off = self.header.slot_offset(e - 2) + p.at;
                Ok(match self.file.extent(off)? {
                    Some(x) => (x.deallocated, x.len.clamp(1, p.len)),
                    None => (false, p.len),
                })
            }
        }
    }
}
