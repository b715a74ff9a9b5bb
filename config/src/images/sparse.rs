//! Copies that keep holes: an overlay or a golden image is mostly holes,
//! and a snapshot or a new base version must not cost its full size.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::SeekFrom;

/// How a copy was made (for the command's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// `FICLONE`: the file system shares the blocks (btrfs, XFS reflink).
    Reflink,
    /// Data ranges found with `SEEK_DATA`/`SEEK_HOLE`, copied with
    /// `copy_file_range`; holes stay holes.
    Sparse,
}

/// Copies `src` to a new file `dst` (which must not exist), sparse.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<CopyKind> {
    let from = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    let kind = if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        CopyKind::Reflink
    } else {
        copy_data_ranges(&from, &to)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        CopyKind::Sparse
    };
    to.set_len(from.metadata()?.len())?;
    to.sync_all()?;
    Ok(kind)
}

fn copy_data_ranges(from: &File, to: &File) -> Result<()> {
    let len = from.metadata()?.len();
    let mut off = 0u64;
    while off < len {
        let start = match rustix::fs::seek(from, SeekFrom::Data(off)) {
            Ok(s) => s,
            // No data after `off`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let end = rustix::fs::seek(from, SeekFrom::Hole(start)).map_err(std::io::Error::from)?;
        let mut pos = start;
        while pos < end {
            let (mut a, mut b) = (pos, pos);
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = rustix::fs::copy_file_range(from, Some(&mut a), to, Some(&mut b), want)
                .map_err(std::io::Error::from)?;
            if n == 0 {
                anyhow::bail!("source ended early at byte {pos}");
            }
            pos += n as u64;
        }
        off = end;
    }
    Ok(())
}

/// Bytes a file really occupies on disk (allocated blocks, not its length);
/// 0 when it does not exist.
pub fn used_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// [`used_bytes`] of every file in a directory (not recursive).
pub fn used_bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| used_bytes(&e.path()))
            .sum()
    })
}
