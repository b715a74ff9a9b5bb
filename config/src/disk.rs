//! File-backed logical units: the [`BlockDevice`] the core's storage
//! driver reads and writes.
//!
//! One [`Disk`] per `[[target.lun]]`: an image file read and written with
//! positional I/O (`pread`/`pwrite`, so any number of threads share one
//! descriptor without seeking), made durable with `fdatasync`, thinned with
//! `fallocate(PUNCH_HOLE)` and inspected with `SEEK_DATA`/`SEEK_HOLE`.
//!
//! # Durability contract
//!
//! [`Disk::sync`] (the device's flush) returns only after `fdatasync`
//! returned. The core's driver flushes for FUA, SYNCHRONIZE CACHE and LUNs
//! without a write cache before it lets the command's status go out, so an
//! acknowledged FUA write or SYNCHRONIZE CACHE is on stable storage.
//! [`Disk::syncs`] counts completed `fdatasync` calls, and each one is
//! logged at trace level (`SANBOOT_LOG=sanboot::disk=trace`) so tests can
//! see it.
//!
//! A failed `fdatasync` is final for the open image: Linux reports a
//! writeback error to one `fdatasync` and may drop the dirty pages it could
//! not write, so a later call that returns 0 does not mean the writes
//! acknowledged from the cache before it are stored. Every later flush of
//! this [`Disk`] fails too (FUA writes and SYNCHRONIZE CACHE get WRITE
//! ERROR), until sanboot opens the image again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use rustix::fs::{FallocateFlags, SeekFrom};
use sanboot_core::block::{BlockDevice, BlockError, Extent};
use sanboot_core::iscsi::Access;
use sanboot_core::scsi::LunConfig;

/// How a LUN image is opened and presented.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Create the file (sparse) with this many bytes when it does not exist.
    pub create_size: Option<u64>,
    /// Open read-only and refuse every write.
    pub read_only: bool,
    /// Holes may be punched (UNMAP, WRITE SAME with UNMAP) and are reported.
    pub thin: bool,
    /// Writes are acknowledged from the page cache (WCE=1); when false every
    /// write is followed by `fdatasync` before its status.
    pub write_cache: bool,
    /// Logical block length in bytes.
    pub block_size: u32,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            create_size: None,
            read_only: false,
            thin: true,
            write_cache: true,
            block_size: 512,
        }
    }
}

/// An opened LUN image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    size: u64,
    opts: DiskOptions,
    /// COMPARE AND WRITE holds this exclusively; every other access holds
    /// it shared (see [`Disk::with_device`]).
    lock: RwLock<()>,
    syncs: AtomicU64,
    /// An `fdatasync` failed: no later flush may claim durability.
    flush_failed: AtomicBool,
}

fn block_error(e: &io::Error) -> BlockError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => BlockError::NoSpace,
        _ if e.kind() == io::ErrorKind::UnexpectedEof => BlockError::OutOfRange,
        _ => BlockError::Io,
    }
}

impl DiskOptions {
    /// The options a `[[target.lun]]` asks for.
    pub fn of_lun(lun: &crate::Lun) -> Self {
        DiskOptions {
            create_size: lun.size,
            read_only: lun.read_only,
            thin: lun.thin,
            write_cache: lun.write_cache,
            block_size: 512,
        }
    }
}

impl Disk {
    /// Opens (or creates, sparse, when `opts.create_size` is set) the image.
    pub fn open(path: &Path, opts: DiskOptions) -> Result<Disk> {
        if opts.block_size == 0 || !opts.block_size.is_power_of_two() {
            bail!(
                "{}: block size {} is not a power of two",
                path.display(),
                opts.block_size
            );
        }
        let exists = path.exists();
        if !exists {
            let Some(size) = opts.create_size else {
                bail!(
                    "{}: image does not exist and no `size` is given to create it",
                    path.display()
                );
            };
            if opts.read_only {
                bail!("{}: read-only image does not exist", path.display());
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("cannot create image {}", path.display()))?;
            f.set_len(size)
                .with_context(|| format!("cannot size image {}", path.display()))?;
            f.sync_all()?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?;
        crate::image_lock::lock_image(&file, path, opts.read_only)?;
        let size = file.metadata()?.len();
        if size < u64::from(opts.block_size) {
            bail!("{}: image is smaller than one block", path.display());
        }
        Ok(Disk {
            file,
            path: path.to_path_buf(),
            size,
            opts,
            lock: RwLock::new(()),
            syncs: AtomicU64::new(0),
            flush_failed: AtomicBool::new(false),
        })
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity in whole logical blocks.
    pub fn blocks(&self) -> u64 {
        self.size / u64::from(self.opts.block_size)
    }

    /// Number of `fdatasync` calls that completed.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The SCSI description of this disk (`naa`/`serial` identify it).
    pub fn lun_config(&self, naa: u64, serial: &str) -> LunConfig {
        let mut cfg = LunConfig::new(self.blocks(), naa);
        cfg.block_size = self.opts.block_size;
        cfg.read_only = self.opts.read_only;
        cfg.write_cache = self.opts.write_cache;
        cfg.thin_provisioning = self.opts.thin;
        cfg.max_transfer_blocks = LunConfig::DEFAULT_MAX_TRANSFER_BYTES / self.opts.block_size;
        for c in serial.chars().take(32) {
            let _ = cfg.serial.push(c);
        }
        cfg
    }

    /// Reads `buf.len()` bytes at `offset` straight into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `data` at `offset` (durable only after [`Disk::sync`]).
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// `fdatasync`: every write that returned before is on stable storage
    /// when this returns `Ok`. Once it failed, it fails for good (see the
    /// module docs).
    pub fn sync(&self) -> io::Result<()> {
        if self.flush_failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier fdatasync of this image failed: writes acknowledged before it may be lost; \
                 every flush fails until sanboot opens the image again",
            ));
        }
        if let Err(e) = self.file.sync_data() {
            self.flush_failed.store(true, Ordering::Release);
            log::error!(
                "{}: fdatasync failed ({e}): writes acknowledged from the page cache may be lost; \
                 every later flush (SYNCHRONIZE CACHE, FUA) of this image fails until sanboot opens it again",
                self.path.display()
            );
            return Err(e);
        }
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        // Written after fdatasync returned and before any status that
        // depends on it: the durability test counts these lines.
        log::trace!(target: "sanboot::disk", "{}: fdatasync done ({n})", self.path.display());
        Ok(())
    }

    /// Deallocates `len` bytes at `offset` (they read back as zeros).
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(io::Error::from)
    }

    /// Whether block `lba` is a hole, and how many blocks from it share that
    /// state (at least 1, at most to the end of the disk).
    pub fn lba_status(&self, lba: u64) -> io::Result<(bool, u64)> {
        let bs = u64::from(self.opts.block_size);
        let end = self.blocks().saturating_mul(bs);
        let off = lba.saturating_mul(bs);
        if off >= end {
            return Ok((false, 1));
        }
        let blocks = |to: u64| (to.min(end).saturating_sub(off) / bs).max(1);
        match rustix::fs::seek(&self.file, SeekFrom::Data(off)) {
            Ok(data) if data == off => {
                let hole =
                    rustix::fs::seek(&self.file, SeekFrom::Hole(off)).map_err(io::Error::from)?;
                Ok((false, blocks(hole)))
            }
            // The next data is further on: a hole until then.
            Ok(data) => Ok((true, blocks(data))),
            // No data after `off`: a hole to the end.
            Err(rustix::io::Errno::NXIO) => Ok((true, blocks(end))),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `f` with this disk as the driver's [`BlockDevice`]. COMPARE AND
    /// WRITE asks for [`Access::Exclusive`]: every other access shares the
    /// lock, so its compare and write are atomic against other commands.
    pub fn with_device<R>(&self, access: Access, f: impl FnOnce(&mut dyn BlockDevice) -> R) -> R {
        let _guard = match access {
            Access::Shared => Guard::Shared(self.lock.read().unwrap_or_else(|e| e.into_inner())),
            Access::Exclusive => {
                Guard::Exclusive(self.lock.write().unwrap_or_else(|e| e.into_inner()))
            }
        };
        f(&mut DiskIo(self))
    }

    fn failed<T>(&self, what: &str, offset: u64, r: io::Result<T>) -> Result<T, BlockError> {
        r.map_err(|e| {
            log::warn!(
                target: "sanboot::disk",
                "{}: {what} at offset {offset} failed: {e}",
                self.path.display()
            );
            block_error(&e)
        })
    }
}

/// Holds [`Disk::with_device`]'s lock while the device is in use.
#[allow(dead_code)]
enum Guard<'a> {
    Shared(std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(std::sync::RwLockWriteGuard<'a, ()>),
}

/// A [`Disk`] as the core's storage driver sees it, borrowed from a shared
/// handle ([`Disk::with_device`]).
struct DiskIo<'a>(&'a Disk);

/// An owned [`Disk`] is a device too (a single-threaded host, such as the
/// smoltcp runner, needs no lock).
impl BlockDevice for Disk {
    fn len(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        DiskIo(self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        DiskIo(self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        DiskIo(self).flush()
    }
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        DiskIo(self).deallocate(offset, len)
    }
    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        DiskIo(self).extent(offset)
    }
}

impl BlockDevice for DiskIo<'_> {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        // A short read (the image was truncated) is UnexpectedEof: an error.
        self.0.failed("read", offset, self.0.read(offset, buf))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.0.failed("write", offset, self.0.write(offset, data))
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.failed("fdatasync", 0, self.0.sync())
    }

    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if !self.0.opts.thin {
            return Err(BlockError::Unsupported);
        }
        self.0
            .failed("hole punch", offset, self.0.punch_hole(offset, len))
    }

    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        let bs = u64::from(self.0.opts.block_size);
        let r = self.0.lba_status(offset / bs);
        let (deallocated, blocks) = self.0.failed("SEEK_DATA", offset, r)?;
        Ok(Some(Extent {
            deallocated,
            len: blocks.saturating_mul(bs),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn disk(dir: &Path, size: u64) -> Disk {
        Disk::open(
            &dir.join("d.img"),
            DiskOptions {
                create_size: Some(size),
                ..DiskOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn creates_sparse_image_of_the_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 8 << 20);
        assert_eq!(d.blocks(), 16384);
        let meta = std::fs::metadata(d.path()).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "image is not sparse");
        assert_eq!(d.lba_status(0).unwrap(), (true, 16384));
    }

    #[test]
    fn missing_image_without_size_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Disk::open(&dir.path().join("x.img"), DiskOptions::default()).unwrap_err();
        assert!(err.to_string().contains("x.img"), "{err}");
    }

    fn io<R>(d: &Disk, f: impl FnOnce(&mut dyn BlockDevice) -> R) -> R {
        d.with_device(Access::Shared, f)
    }

    #[test]
    fn image_files_pass_the_block_device_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        for thin in [true, false] {
            let d = Disk::open(
                &dir.path().join(format!("thin-{thin}.img")),
                DiskOptions {
                    create_size: Some(1 << 20),
                    thin,
                    ..DiskOptions::default()
                },
            )
            .unwrap();
            let r = io(&d, sanboot_core::block::conformance::run);
            assert_eq!(r, Ok(()), "thin = {thin}");
        }
    }

    #[test]
    fn flush_is_fdatasync_and_writes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        let data = vec![0x5a; 4096];
        io(&d, |dev| dev.write_at(8192, &data)).unwrap();
        assert_eq!(d.syncs(), 0, "a write alone is not synced");
        io(&d, |dev| dev.flush()).unwrap();
        assert_eq!(d.syncs(), 1);
        let mut back = vec![0; 4096];
        io(&d, |dev| dev.read_at(8192, &mut back)).unwrap();
        assert_eq!(back, data);
        // 8 blocks mapped at LBA 16; before that a hole.
        let ext = |off| io(&d, |dev| dev.extent(off)).unwrap().unwrap();
        assert_eq!(
            ext(0),
            Extent {
                deallocated: true,
                len: 16 * 512
            }
        );
        assert_eq!(
            ext(16 * 512),
            Extent {
                deallocated: false,
                len: 8 * 512
            }
        );
    }

    #[test]
    fn deallocate_punches_holes_that_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        d.write(0, &vec![1u8; 64 << 10]).unwrap();
        io(&d, |dev| dev.deallocate(4096, 8192)).unwrap();
        let mut back = vec![9u8; 8192];
        d.read(4096, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        assert_eq!(d.lba_status(8).unwrap(), (true, 16));
        assert_eq!(d.lba_status(0).unwrap(), (false, 8));
    }

    #[test]
    fn a_fully_provisioned_disk_does_not_deallocate() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::open(
            &dir.path().join("d.img"),
            DiskOptions {
                create_size: Some(1 << 20),
                thin: false,
                ..DiskOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            io(&d, |dev| dev.deallocate(0, 4096)),
            Err(BlockError::Unsupported)
        );
    }

    #[test]
    fn a_truncated_image_reads_as_an_error_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.path())
            .unwrap()
            .set_len(4096)
            .unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            io(&d, |dev| dev.read_at(2048, &mut buf)),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(io(&d, |dev| dev.read_at(0, &mut buf)), Ok(()));
    }

    #[test]
    fn read_only_disk_refuses_writes_at_the_os_level() {
        let dir = tempfile::tempdir().unwrap();
        drop(disk(dir.path(), 1 << 20));
        let d = Disk::open(
            &dir.path().join("d.img"),
            DiskOptions {
                read_only: true,
                ..DiskOptions::default()
            },
        )
        .unwrap();
        assert!(d.lun_config(1, "x").read_only);
        assert_eq!(
            io(&d, |dev| dev.write_at(0, &[0u8; 512])),
            Err(BlockError::Io)
        );
    }
}
