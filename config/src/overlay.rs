//! Copy-on-write LUNs: a golden base image, read-only and shared, plus one
//! overlay file per station that holds what the station changed
//! (`sanboot_core::block::overlay` has the format, the crash contract and
//! all the mapping logic; this is the files around it).
//!
//! The base is opened read-only with a shared image lock (any number of
//! overlays and read-only LUNs may use it; a writable LUN on it is
//! refused), the overlay file read-write with an exclusive lock. The map is
//! loaded into a `Vec` at open. Reads take a shared lock and go straight to
//! the base or the overlay file (`pread`), so stations read concurrently;
//! writes, flushes and deallocates take the overlay exclusively.
//!
//! An overlay records which base it was made for: the base's size and a
//! 16-byte id, by default [`base_identity`] (size, modification time and
//! sampled content). Opening it over another base is refused, naming both
//! files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use sanboot_core::block::overlay::{
    Header, MapStore, Overlay, OverlayError, OverlayStats, Source, DEFAULT_GRANULARITY,
};
use sanboot_core::block::{BlockDevice, BlockError, Extent};
use sanboot_core::iscsi::Access;
use sanboot_core::scsi::LunConfig;

use crate::disk::{Disk, DiskOptions};

/// Map changes and freed slots that may wait for a checkpoint: 4096
/// granules of 64 KiB is 256 MiB of new data between two `fdatasync` pairs.
const PENDING: usize = 4096;
/// Copy-up and map I/O buffer (one 64 KiB granule is one read and one
/// write; at open, one pass over the map finds free slots among 8 M).
const SCRATCH: usize = 1 << 20;

type Inner = Overlay<Disk, OverlayFile, VecMap, Vec<u8>, PENDING>;

/// The overlay file as the core's raw device: a [`Disk`] (pwrite extends
/// it), whose holes are found with `SEEK_DATA`/`SEEK_HOLE` up to the file's
/// current end rather than its size at open.
#[derive(Debug)]
pub struct OverlayFile {
    disk: Disk,
    /// A second descriptor for seeking and growing the file (the `Disk`
    /// keeps its own private).
    seek: std::fs::File,
}

impl OverlayFile {
    fn open(path: &Path, opts: DiskOptions) -> Result<OverlayFile> {
        let disk = Disk::open(path, opts)?;
        let seek = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(OverlayFile { disk, seek })
    }

    fn hole_at(&self, offset: u64) -> std::io::Result<(bool, u64)> {
        use rustix::fs::{seek, SeekFrom};
        match seek(&self.seek, SeekFrom::Data(offset)) {
            Ok(data) if data == offset => {
                let hole = seek(&self.seek, SeekFrom::Hole(offset))?;
                Ok((false, hole.saturating_sub(offset).max(1)))
            }
            Ok(data) => Ok((true, data - offset)),
            // No data after `offset`: a hole as far as anyone asks.
            Err(rustix::io::Errno::NXIO) => Ok((true, u64::MAX / 2)),
            Err(e) => Err(e.into()),
        }
    }
}

impl BlockDevice for OverlayFile {
    fn len(&self) -> u64 {
        u64::MAX / 2
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.disk.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.disk.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.disk.flush()
    }
    /// A hole punch keeps the file's size; a range past the end is then
    /// made part of the file (sparse), so it reads back as zeros rather than
    /// as a short read.
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.disk.deallocate(offset, len)?;
        let end = offset.checked_add(len).ok_or(BlockError::OutOfRange)?;
        let grow = || -> std::io::Result<()> {
            if self.seek.metadata()?.len() < end {
                self.seek.set_len(end)?;
            }
            Ok(())
        };
        grow().map_err(|e| {
            log::warn!(target: "sanboot::disk", "{}: cannot extend to {end}: {e}", self.disk.path().display());
            BlockError::Io
        })
    }
    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        let (deallocated, len) = self.hole_at(offset).map_err(|e| {
            log::warn!(target: "sanboot::disk", "{}: SEEK_DATA at {offset}: {e}", self.disk.path().display());
            BlockError::Io
        })?;
        Ok(Some(Extent { deallocated, len }))
    }
}

/// The map in memory, with an unbounded free-slot stack.
#[derive(Debug, Default)]
pub struct VecMap {
    entries: Vec<u32>,
    free: Vec<u32>,
}

impl VecMap {
    /// A map of `entries` zero entries.
    pub fn new(entries: u32) -> Self {
        VecMap {
            entries: vec![0; entries as usize],
            free: Vec::new(),
        }
    }
}

impl MapStore for VecMap {
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
        self.free.push(slot);
        true
    }
    fn pop_free(&mut self) -> Option<u32> {
        self.free.pop()
    }
}

/// How an overlay LUN is made and presented.
#[derive(Debug, Clone)]
pub struct OverlayOptions {
    /// Granularity of a new overlay (a power of two, 4 KiB..=1 MiB); an
    /// existing overlay keeps its own.
    pub granularity: u32,
    /// The base's id; `None`: [`base_identity`] of the base file.
    pub base_id: Option<[u8; 16]>,
    /// UNMAP and WRITE SAME with UNMAP give space back and GET LBA STATUS
    /// reports it.
    pub thin: bool,
    /// Writes are acknowledged before they are durable (WCE=1).
    pub write_cache: bool,
    /// Logical block length in bytes.
    pub block_size: u32,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            granularity: DEFAULT_GRANULARITY,
            base_id: None,
            thin: true,
            write_cache: true,
            block_size: 512,
        }
    }
}

impl OverlayOptions {
    /// The options a `[[target.lun]]` with `base` asks for.
    pub fn of_lun(lun: &crate::Lun) -> Self {
        OverlayOptions {
            thin: lun.thin,
            write_cache: lun.write_cache,
            ..OverlayOptions::default()
        }
    }
}

/// The identity an overlay records for its base: MD5 over the base's
/// size, modification time and 64 samples of 4 KiB spread over it (the
/// first and last included). Changing the base (even `touch`) changes it;
/// copying it with its times (`cp -a`, `rsync -a`) does not.
pub fn base_identity(base: &Path) -> Result<[u8; 16]> {
    let f = std::fs::File::open(base)
        .with_context(|| format!("cannot open base image {}", base.display()))?;
    let meta = f.metadata()?;
    let size = meta.len();
    let mut h = Md5::new();
    h.update(b"sanboot base v1");
    h.update(size.to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    for i in 0..64u64 {
        let at = (size.saturating_sub(4096)) / 63 * i;
        let mut buf = vec![0u8; (size - at.min(size)).min(4096) as usize];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut buf, at)
            .with_context(|| format!("cannot read base image {}", base.display()))?;
        h.update(&buf);
    }
    Ok(h.finalize().into())
}

/// The header of the overlay file at `path`, read without opening or
/// locking it (for listings: which base, what size, what granularity).
pub fn read_header(path: &Path) -> Result<Header> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open overlay {}", path.display()))?;
    let mut first = [0u8; 512];
    f.read_exact_at(&mut first, 0)
        .with_context(|| format!("overlay {}: cannot read its header", path.display()))?;
    Header::parse(&first)
        .map_err(|e| anyhow::anyhow!("{}: not a valid overlay file: {e:?}", path.display()))
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// An opened overlay LUN: base + overlay file.
#[derive(Debug)]
pub struct OverlayDisk {
    base_path: PathBuf,
    path: PathBuf,
    opts: OverlayOptions,
    /// COMPARE AND WRITE holds this exclusively, every other access shared
    /// (as [`Disk::with_device`]).
    lock: RwLock<()>,
    inner: RwLock<Inner>,
}

fn io_error(e: BlockError) -> std::io::Error {
    std::io::Error::other(format!("overlay: {e:?}"))
}

impl OverlayDisk {
    /// Opens the overlay at `path` over `base`, creating it (sparse, with
    /// the base's size) when it does not exist.
    pub fn open(base: &Path, path: &Path, opts: OverlayOptions) -> Result<OverlayDisk> {
        if opts.block_size == 0 || !opts.block_size.is_power_of_two() {
            bail!(
                "{}: block size {} is not a power of two",
                path.display(),
                opts.block_size
            );
        }
        let base_id = match opts.base_id {
            Some(id) => id,
            None => base_identity(base)?,
        };
        let base_disk = Disk::open(
            base,
            DiskOptions {
                read_only: true,
                thin: false,
                ..DiskOptions::default()
            },
        )
        .with_context(|| format!("base image {}", base.display()))?;
        let base_len = base_disk.len();
        if base_len % u64::from(opts.block_size) != 0 {
            bail!(
                "base image {}: {base_len} bytes is not a whole number of {}-byte blocks",
                base.display(),
                opts.block_size
            );
        }
        let inner = if path.exists() {
            Self::open_existing(base_disk, base, path, base_id)?
        } else {
            Self::create(base_disk, base, path, base_id, opts.granularity)?
        };
        Ok(OverlayDisk {
            base_path: base.to_path_buf(),
            path: path.to_path_buf(),
            opts,
            lock: RwLock::new(()),
            inner: RwLock::new(inner),
        })
    }

    fn open_existing(
        base_disk: Disk,
        base: &Path,
        path: &Path,
        base_id: [u8; 16],
    ) -> Result<Inner> {
        let file = OverlayFile::open(path, DiskOptions::default())
            .with_context(|| format!("overlay {}", path.display()))?;
        let mut first = [0u8; 512];
        file.disk
            .read(0, &mut first)
            .with_context(|| format!("overlay {}: cannot read its header", path.display()))?;
        let header = Header::parse(&first).map_err(|e| {
            anyhow::anyhow!(
                "overlay {}: not a valid overlay file: {e:?}",
                path.display()
            )
        })?;
        if header.base_size != base_disk.len() || header.base_id != base_id {
            bail!(
                "overlay {} was made for another base than {}: it records a base of {} bytes \
                 with id {}, and {} has {} bytes and id {} (changed since?). Point `base` at \
                 the image it was made for, or remove the overlay to start over from this base",
                path.display(),
                base.display(),
                header.base_size,
                hex(&header.base_id),
                base.display(),
                base_disk.len(),
                hex(&base_id),
            );
        }
        let map = VecMap::new(header.entries);
        Overlay::open(base_disk, file, map, vec![0u8; SCRATCH], base_id)
            .map_err(|e| anyhow::anyhow!("overlay {}: {}", path.display(), describe(e)))
    }

    /// Formats a new overlay beside `path`, makes it durable, then renames
    /// it into place: a crash never leaves a half-made overlay.
    fn create(
        base_disk: Disk,
        base: &Path,
        path: &Path,
        base_id: [u8; 16],
        granularity: u32,
    ) -> Result<Inner> {
        let header = Header::new(base_disk.len(), base_id, granularity).ok_or_else(|| {
            anyhow::anyhow!(
                "base image {}: {} bytes with granularity {granularity} cannot have an overlay",
                base.display(),
                base_disk.len()
            )
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let file = OverlayFile::open(
            &tmp,
            DiskOptions {
                create_size: Some(header.data_offset),
                ..DiskOptions::default()
            },
        )
        .with_context(|| format!("cannot create overlay {}", path.display()))?;
        let map = VecMap::new(header.entries);
        let inner = Overlay::create(
            base_disk,
            file,
            map,
            vec![0u8; SCRATCH],
            base_id,
            granularity,
        )
        .map_err(|e| anyhow::anyhow!("overlay {}: {}", path.display(), describe(e)))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(inner)
    }

    /// The overlay file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base image.
    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    /// Capacity in whole logical blocks.
    pub fn blocks(&self) -> u64 {
        self.read_inner().header().virtual_size / u64::from(self.opts.block_size)
    }

    /// Completed `fdatasync` calls on the overlay file.
    pub fn syncs(&self) -> u64 {
        self.read_inner().file().disk.syncs()
    }

    /// Counters of the overlay machine.
    pub fn stats(&self) -> OverlayStats {
        self.read_inner().stats()
    }

    /// Bytes the overlay file occupies on disk (`st_blocks`).
    pub fn allocated_bytes(&self) -> Result<u64> {
        let meta = std::fs::metadata(&self.path)
            .with_context(|| format!("overlay {}", self.path.display()))?;
        Ok(meta.blocks() * 512)
    }

    /// Bytes of station data the overlay holds (granules with a slot).
    pub fn data_bytes(&self) -> u64 {
        self.read_inner().data_bytes()
    }

    /// Flushes: every completed write is durable when this returns.
    pub fn sync(&self) -> std::io::Result<()> {
        self.write_inner().flush().map_err(io_error)
    }

    /// Discards everything the station wrote: the LUN reads as the base
    /// again, durably (volatile mode: call it when the station boots or
    /// its session ends).
    pub fn reset(&self) -> Result<()> {
        let _g = self.lock.write().unwrap_or_else(|e| e.into_inner());
        self.write_inner()
            .reset()
            .map_err(|e| anyhow::anyhow!("overlay {}: reset failed: {e:?}", self.path.display()))
    }

    /// The SCSI description of this LUN.
    pub fn lun_config(&self, naa: u64, serial: &str) -> LunConfig {
        let mut cfg = LunConfig::new(self.blocks(), naa);
        cfg.block_size = self.opts.block_size;
        cfg.read_only = false;
        cfg.write_cache = self.opts.write_cache;
        cfg.thin_provisioning = self.opts.thin;
        cfg.max_transfer_blocks = LunConfig::DEFAULT_MAX_TRANSFER_BYTES / self.opts.block_size;
        for c in serial.chars().take(32) {
            let _ = cfg.serial.push(c);
        }
        cfg
    }

    /// Runs `f` with this overlay as the driver's [`BlockDevice`]; see
    /// [`Disk::with_device`] for `access`.
    pub fn with_device<R>(&self, access: Access, f: impl FnOnce(&mut dyn BlockDevice) -> R) -> R {
        let _guard = match access {
            Access::Shared => Ok(self.lock.read().unwrap_or_else(|e| e.into_inner())),
            Access::Exclusive => Err(self.lock.write().unwrap_or_else(|e| e.into_inner())),
        };
        f(&mut OverlayIo(self))
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn describe(e: OverlayError) -> String {
    match e {
        OverlayError::Format(f) => format!("not a valid overlay file ({f:?})"),
        OverlayError::BaseMismatch => "made for another base".into(),
        OverlayError::BadSize => "the base's size cannot have an overlay".into(),
        OverlayError::MapTooSmall { required } => format!("map needs {required} entries"),
        OverlayError::ScratchTooSmall => "scratch buffer too small".into(),
        OverlayError::CorruptMap { granule } => {
            format!("damaged map: entry {granule} names a slot out of range or twice")
        }
        OverlayError::Device(e) => format!("I/O error {e:?}"),
    }
}

/// An [`OverlayDisk`] as the storage driver sees it.
struct OverlayIo<'a>(&'a OverlayDisk);

impl BlockDevice for OverlayIo<'_> {
    fn len(&self) -> u64 {
        self.0.read_inner().header().virtual_size
    }

    /// Under the shared lock: where each run lives is the core's answer
    /// ([`Overlay::locate`]); the bytes come straight from the files.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let inner = self.0.read_inner();
        let mut done = 0usize;
        while done < buf.len() {
            let run = inner.locate(offset + done as u64, (buf.len() - done) as u64)?;
            let n = run.len as usize;
            let part = buf.get_mut(done..done + n).ok_or(BlockError::Io)?;
            let r = match run.source {
                Source::Base(o) => inner.base().read(o, part),
                Source::Zeros => {
                    part.fill(0);
                    Ok(())
                }
                Source::File(o) => inner.file().disk.read(o, part),
            };
            if let Err(e) = r {
                log::warn!(
                    target: "sanboot::disk",
                    "overlay {}: read at {offset} failed: {e}",
                    self.0.path.display()
                );
                return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    BlockError::OutOfRange
                } else {
                    BlockError::Io
                });
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.0.write_inner().write_at(offset, data)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.write_inner().flush()
    }

    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if !self.0.opts.thin {
            return Err(BlockError::Unsupported);
        }
        self.0.write_inner().deallocate(offset, len)
    }

    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        self.0.write_inner().extent(offset)
    }
}

/// An owned overlay is a device too (single-threaded hosts).
impl BlockDevice for OverlayDisk {
    fn len(&self) -> u64 {
        OverlayIo(self).len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        OverlayIo(self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        OverlayIo(self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        OverlayIo(self).flush()
    }
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        OverlayIo(self).deallocate(offset, len)
    }
    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        OverlayIo(self).extent(offset)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
