//! File-backed logical units: the host side of [`sanboot_core::scsi::Io`].
//!
//! One [`Disk`] per `[[target.lun]]`: an image file read and written with
//! positional I/O (`pread`/`pwrite`, so any number of threads share one
//! descriptor without seeking), made durable with `fdatasync`, thinned with
//! `fallocate(PUNCH_HOLE)` and inspected with `SEEK_DATA`/`SEEK_HOLE`.
//!
//! # Durability contract
//!
//! Every method that makes data durable ([`Disk::sync`], and [`Disk::write`]
//! / [`Disk::perform`] with `fua`) returns only after `fdatasync` returned.
//! The iSCSI binding sends a command's status only after the method returned,
//! so an acknowledged FUA write or SYNCHRONIZE CACHE is on stable storage.
//! [`Disk::syncs`] counts completed `fdatasync` calls, and each one is
//! logged at trace level (`SANBOOT_LOG=sanboot::disk=trace`) so tests can
//! see it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use rustix::fs::{FallocateFlags, SeekFrom};
use sanboot_core::scsi::{self, Io, IoError, IoResult, LunConfig};

/// Largest scratch buffer used for VERIFY / WRITE SAME loops.
const CHUNK: usize = 1 << 20;

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
    /// COMPARE AND WRITE holds this exclusively; every other write holds it
    /// shared, so the compare and the write are atomic against other writes.
    caw: RwLock<()>,
    syncs: AtomicU64,
}

fn map_err(e: &io::Error, write: bool) -> IoError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => IoError::NoSpace,
        _ if write => IoError::Write,
        _ => IoError::Read,
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
            caw: RwLock::new(()),
            syncs: AtomicU64::new(0),
        })
    }

    /// The open image (for `sendfile`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity in whole logical blocks.
    pub fn blocks(&self) -> u64 {
        self.size / u64::from(self.opts.block_size)
    }

    /// Logical block length.
    pub fn block_size(&self) -> u32 {
        self.opts.block_size
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DiskOptions {
        &self.opts
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
        for c in serial.chars().take(32) {
            let _ = cfg.serial.push(c);
        }
        cfg
    }

    /// Reads `buf.len()` bytes at `offset` straight into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `data` at `offset`; durable before returning when `fua` (or
    /// when the disk has no write cache).
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        {
            let _shared = self.caw.read().unwrap_or_else(|e| e.into_inner());
            self.file.write_all_at(data, offset)?;
        }
        if fua || !self.opts.write_cache {
            self.sync()?;
        }
        Ok(())
    }

    /// `fdatasync`: every write that returned before is on stable storage
    /// when this returns `Ok`.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        // Written after fdatasync returned and before any status that
        // depends on it: the durability test counts these lines.
        tracing::trace!(image = %self.path.display(), n, "fdatasync done");
        Ok(())
    }

    /// Deallocates `len` bytes at `offset` (they read back as zeros).
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let _shared = self.caw.read().unwrap_or_else(|e| e.into_inner());
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

    /// Performs a storage operation that needs no Data-In buffer: `data_out`
    /// holds the Data-Out the [`Io`] asked for (for [`Io::Unmap`], the UNMAP
    /// parameter list). [`Io::Read`] is served by [`Disk::read`] instead.
    /// Returns after the data is durable when the operation asks for it.
    pub fn perform(&self, io: &Io, data_out: &[u8]) -> IoResult {
        match self.perform_inner(io, data_out) {
            Ok(r) => r,
            Err((e, write)) => {
                tracing::warn!(image = %self.path.display(), ?io, "storage error: {e}");
                IoResult::Error(map_err(&e, write))
            }
        }
    }

    fn perform_inner(&self, io: &Io, data_out: &[u8]) -> Result<IoResult, (io::Error, bool)> {
        let w = |e| (e, true);
        let r = |e| (e, false);
        match *io {
            Io::Read { offset, len } => {
                // Callers normally read into their transmit buffer; this
                // path only proves the range is readable.
                let mut buf = vec![0u8; (len as usize).min(CHUNK)];
                self.read(offset, &mut buf).map_err(r)?;
                Ok(IoResult::Ok)
            }
            Io::Write { offset, len, fua } => {
                let data = data_out.get(..len as usize).unwrap_or(data_out);
                self.write(offset, data, fua).map_err(w)?;
                Ok(IoResult::Ok)
            }
            Io::Flush => {
                self.sync().map_err(w)?;
                Ok(IoResult::Ok)
            }
            Io::Verify {
                offset,
                len,
                data_out_len,
            } => self
                .verify(
                    offset,
                    len,
                    data_out.get(..data_out_len as usize).unwrap_or(data_out),
                )
                .map_err(r),
            Io::CompareAndWrite { offset, len, fua } => {
                let (cmp, new) = data_out.split_at(data_out.len().min(len as usize));
                let _excl = self.caw.write().unwrap_or_else(|e| e.into_inner());
                let mut cur = vec![0u8; cmp.len()];
                self.file.read_exact_at(&mut cur, offset).map_err(r)?;
                if let Some(at) = scsi::first_mismatch(&cur, cmp) {
                    return Ok(IoResult::Miscompare { offset: at as u64 });
                }
                self.file.write_all_at(new, offset).map_err(w)?;
                drop(_excl);
                if fua || !self.opts.write_cache {
                    self.sync().map_err(w)?;
                }
                Ok(IoResult::Ok)
            }
            Io::OrWrite { offset, len, fua } => {
                let data = data_out.get(..len as usize).unwrap_or(data_out);
                let _excl = self.caw.write().unwrap_or_else(|e| e.into_inner());
                let mut cur = vec![0u8; data.len()];
                self.file.read_exact_at(&mut cur, offset).map_err(r)?;
                for (c, d) in cur.iter_mut().zip(data) {
                    *c |= *d;
                }
                self.file.write_all_at(&cur, offset).map_err(w)?;
                drop(_excl);
                if fua || !self.opts.write_cache {
                    self.sync().map_err(w)?;
                }
                Ok(IoResult::Ok)
            }
            Io::Copy { src, dst, len, .. } => {
                self.copy(src, dst, u64::from(len)).map_err(w)?;
                if !self.opts.write_cache {
                    self.sync().map_err(w)?;
                }
                Ok(IoResult::Ok)
            }
            Io::WriteSame {
                offset,
                blocks,
                data_out_len: _,
                unmap,
            } => {
                let bs = self.opts.block_size as usize;
                let zeros;
                let block = if data_out.is_empty() {
                    zeros = vec![0u8; bs];
                    zeros.as_slice()
                } else {
                    data_out
                };
                let total = blocks.saturating_mul(bs as u64);
                // UNMAP=1 deallocates whatever the block holds (SBC-4; the
                // SCSI layer sets it on thin LUNs only); a zero block on a
                // thin LUN may be punched too.
                if self.opts.thin && (unmap || scsi::write_same_may_unmap(block)) {
                    self.punch_hole(offset, total).map_err(w)?;
                } else {
                    self.write_same(offset, blocks, block).map_err(w)?;
                }
                if !self.opts.write_cache {
                    self.sync().map_err(w)?;
                }
                Ok(IoResult::Ok)
            }
            Io::Unmap => {
                for (off, len) in scsi::unmap_ranges(data_out, self.opts.block_size) {
                    self.punch_hole(off, len).map_err(w)?;
                }
                if !self.opts.write_cache {
                    self.sync().map_err(w)?;
                }
                Ok(IoResult::Ok)
            }
            Io::LbaStatus { lba, .. } => {
                if !self.opts.thin {
                    return Ok(IoResult::Ok);
                }
                let (deallocated, blocks) = self.lba_status(lba).map_err(r)?;
                Ok(IoResult::LbaStatus {
                    deallocated,
                    blocks,
                })
            }
        }
    }

    fn verify(&self, offset: u64, len: u32, expect: &[u8]) -> io::Result<IoResult> {
        let len = len as usize;
        // BYTCHK 11b: one block compared with every block of the range.
        let repeat = expect.len() < len;
        let step = if repeat {
            expect.len().max(1) * (CHUNK / expect.len().max(1)).max(1)
        } else {
            CHUNK
        };
        let mut buf = vec![0u8; step.min(len)];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(buf.len());
            let chunk = buf.get_mut(..n).unwrap_or_default();
            self.file.read_exact_at(chunk, offset + done as u64)?;
            let mismatch = if repeat {
                chunk
                    .chunks(expect.len().max(1))
                    .enumerate()
                    .find_map(|(i, blk)| {
                        let want = expect.get(..blk.len()).unwrap_or(expect);
                        scsi::first_mismatch(blk, want).map(|at| i * expect.len() + at)
                    })
            } else {
                let want = expect.get(done..done + n).unwrap_or_default();
                scsi::first_mismatch(chunk, want)
            };
            if let Some(at) = mismatch {
                return Ok(IoResult::Miscompare {
                    offset: (done + at) as u64,
                });
            }
            done += n;
        }
        Ok(IoResult::Ok)
    }

    /// Copies `len` bytes from `src` to `dst` as if through one buffer
    /// (overlapping ranges copy backwards when `dst > src`).
    fn copy(&self, src: u64, dst: u64, len: u64) -> io::Result<()> {
        let _shared = self.caw.read().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let backwards = dst > src && dst < src.saturating_add(len);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64);
            let at = if backwards { len - done - n } else { done };
            let chunk = buf.get_mut(..n as usize).unwrap_or_default();
            self.file.read_exact_at(chunk, src + at)?;
            self.file.write_all_at(chunk, dst + at)?;
            done += n;
        }
        Ok(())
    }

    fn write_same(&self, offset: u64, blocks: u64, block: &[u8]) -> io::Result<()> {
        let bs = block.len().max(1);
        let per_chunk = (CHUNK / bs).max(1) as u64;
        let pattern: Vec<u8> = block
            .iter()
            .copied()
            .cycle()
            .take(bs * per_chunk.min(blocks.max(1)) as usize)
            .collect();
        let _shared = self.caw.read().unwrap_or_else(|e| e.into_inner());
        let mut left = blocks;
        let mut at = offset;
        while left > 0 {
            let n = left.min(per_chunk);
            let bytes = pattern.get(..(n as usize) * bs).unwrap_or(&pattern);
            self.file.write_all_at(bytes, at)?;
            at += bytes.len() as u64;
            left -= n;
        }
        Ok(())
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

    #[test]
    fn write_fua_syncs_before_returning_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        let data = vec![0x5a; 4096];
        let r = d.perform(
            &Io::Write {
                offset: 8192,
                len: 4096,
                fua: true,
            },
            &data,
        );
        assert_eq!(r, IoResult::Ok);
        assert_eq!(d.syncs(), 1);
        let mut back = vec![0; 4096];
        d.read(8192, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(d.perform(&Io::Flush, &[]), IoResult::Ok);
        assert_eq!(d.syncs(), 2);
        // 8 blocks mapped at LBA 16; before that a hole.
        assert_eq!(d.lba_status(0).unwrap(), (true, 16));
        assert_eq!(d.lba_status(16).unwrap(), (false, 8));
    }

    #[test]
    fn unmap_punches_holes_that_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        d.write(0, &vec![1u8; 64 << 10], false).unwrap();
        // UNMAP parameter list: one descriptor, LBA 8, 16 blocks.
        let mut param = vec![0u8; 24];
        param[1] = 22;
        param[3] = 16;
        param[8 + 7] = 8;
        param[8 + 11] = 16;
        assert_eq!(d.perform(&Io::Unmap, &param), IoResult::Ok);
        let mut back = vec![9u8; 8192];
        d.read(4096, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        assert_eq!(d.lba_status(8).unwrap(), (true, 16));
        assert_eq!(d.lba_status(0).unwrap(), (false, 8));
    }

    #[test]
    fn write_same_writes_or_unmaps() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        let block = vec![0xabu8; 512];
        let io = Io::WriteSame {
            offset: 512,
            blocks: 3000,
            data_out_len: 512,
            unmap: false,
        };
        assert_eq!(d.perform(&io, &block), IoResult::Ok);
        let mut back = vec![0u8; 3000 * 512];
        d.read(512, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0xab));
        // UNMAP=1 deallocates whatever the block holds; the range reads as zeros.
        let io = Io::WriteSame {
            offset: 0,
            blocks: 2048,
            data_out_len: 512,
            unmap: true,
        };
        assert_eq!(d.perform(&io, &block), IoResult::Ok);
        assert_eq!(d.lba_status(0).unwrap(), (true, 2048));
        // UNMAP=1 deallocates even when the block is not zeros.
        let io = Io::WriteSame {
            offset: 512,
            blocks: 3000,
            data_out_len: 512,
            unmap: true,
        };
        assert_eq!(d.perform(&io, &block), IoResult::Ok);
        d.read(512, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
    }

    #[test]
    fn verify_and_compare_and_write_report_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        d.write(0, &[7u8; 2048], false).unwrap();
        let verify = |data: &[u8], len| {
            d.perform(
                &Io::Verify {
                    offset: 0,
                    len,
                    data_out_len: data.len() as u32,
                },
                data,
            )
        };
        assert_eq!(verify(&[7u8; 2048], 2048), IoResult::Ok);
        assert_eq!(verify(&[7u8; 512], 2048), IoResult::Ok);
        let mut bad = vec![7u8; 2048];
        bad[1500] = 0;
        assert_eq!(verify(&bad, 2048), IoResult::Miscompare { offset: 1500 });
        let mut blk = vec![7u8; 512];
        blk[3] = 1;
        assert_eq!(verify(&blk, 2048), IoResult::Miscompare { offset: 3 });

        let caw = Io::CompareAndWrite {
            offset: 0,
            len: 512,
            fua: true,
        };
        let mut both = vec![7u8; 512];
        both.extend_from_slice(&[9u8; 512]);
        assert_eq!(d.perform(&caw, &both), IoResult::Ok);
        assert_eq!(d.syncs(), 1);
        assert_eq!(d.perform(&caw, &both), IoResult::Miscompare { offset: 0 });
        let mut back = [0u8; 512];
        d.read(0, &mut back).unwrap();
        assert_eq!(back, [9u8; 512]);
    }

    #[test]
    fn without_write_cache_every_write_is_synced_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let d = Disk::open(
            &dir.path().join("d.img"),
            DiskOptions {
                create_size: Some(1 << 20),
                write_cache: false,
                ..DiskOptions::default()
            },
        )
        .unwrap();
        assert!(!d.lun_config(1, "x").write_cache);
        d.write(0, &[1u8; 512], false).unwrap();
        d.write(512, &[2u8; 512], false).unwrap();
        assert_eq!(d.syncs(), 2);
    }

    #[test]
    fn extended_copy_handles_overlapping_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path(), 1 << 20);
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        d.write(0, &data, false).unwrap();
        let copy = |src, dst| Io::Copy {
            src,
            dst,
            len: 4096,
            nexus: 0,
            list_id: None,
        };
        // Forward overlap: destination after the source.
        assert_eq!(d.perform(&copy(0, 1024), &[]), IoResult::Ok);
        let mut back = vec![0u8; 4096];
        d.read(1024, &mut back).unwrap();
        assert_eq!(back, data);
        // ORWRITE ors the Data-Out in.
        let or = Io::OrWrite {
            offset: 1024,
            len: 4,
            fua: false,
        };
        assert_eq!(d.perform(&or, &[0xf0; 4]), IoResult::Ok);
        let mut head = [0u8; 4];
        d.read(1024, &mut head).unwrap();
        assert_eq!(head, [0xf0, 0xf1, 0xf2, 0xf3]);
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
        assert!(matches!(
            d.perform(
                &Io::Write {
                    offset: 0,
                    len: 512,
                    fua: false
                },
                &[0u8; 512]
            ),
            IoResult::Error(IoError::Write)
        ));
    }
}
