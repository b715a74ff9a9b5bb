//! One writable image, one user: every LUN image is `flock`ed when opened.
//!
//! A writable LUN takes an exclusive lock, a read-only LUN a shared one. So
//! two read-only LUNs (or two sanboot processes exporting the same golden
//! image read-only) may share an image, since neither can change what the
//! other serves; but a writable LUN and anything else on the same file is
//! refused: two writers corrupt the file system inside it, and a reader
//! beside a writer serves blocks that change under its initiator without a
//! unit attention. `flock` locks belong to the open file, so the rule holds
//! between LUNs of one process as well as between processes, and the kernel
//! drops them when the process dies (a `kill -9` leaves no stale lock).
//!
//! Advisory only: tools that do not `flock` (dd, qemu-img without locking)
//! are not stopped.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};

/// Locks `file` (the image at `path`) for a LUN; a clear error naming the
/// image and, when `/proc/locks` tells, the process that holds it.
pub fn lock_image(file: &File, path: &Path, read_only: bool) -> Result<()> {
    let op = if read_only {
        FlockOperation::NonBlockingLockShared
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    match flock(file, op) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = file
                .metadata()
                .ok()
                .and_then(|m| holder(m.dev(), m.ino()))
                .unwrap_or_else(|| "another process or LUN".to_string());
            let wanted = if read_only {
                "a read-only LUN can share an image only with other read-only LUNs"
            } else {
                "a writable LUN needs the image to itself"
            };
            bail!(
                "image {} is already in use by {holder}: {wanted} (flock)",
                path.display()
            )
        }
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("cannot lock image {}", path.display())),
    }
}

/// Who holds a lock on the file `(dev, ino)`, from `/proc/locks`.
fn holder(dev: u64, ino: u64) -> Option<String> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // glibc's major()/minor() encoding of st_dev.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let ours = format!("{major:02x}:{minor:02x}:{ino}");
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
    let pid: u32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields.iter().position(|f| *f == ours)?;
        fields.get(at.checked_sub(1)?)?.parse().ok()
    })?;
    if pid == std::process::id() {
        return Some("another LUN of this sanboot (the same image twice in the config?)".into());
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(if cmdline.is_empty() {
        format!("process {pid}")
    } else {
        format!("process {pid} ({})", cmdline.join(" "))
    })
}
