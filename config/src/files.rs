//! Path confinement for `[tftp] root`: nothing outside the canonical root is
//! ever opened, whichever host serves the files.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sanboot_core::tftp::Refusal;

use crate::Config;

/// `[tftp] root` made canonical once at start, so [`open_under`] compares
/// against the real directory; `None` when no root is configured.
pub fn tftp_root(config: &Config) -> Result<Option<PathBuf>> {
    config
        .tftp
        .root
        .as_ref()
        .map(|r| {
            std::fs::canonicalize(r)
                .with_context(|| format!("[tftp] root = {}: not accessible", r.display()))
        })
        .transpose()
}

/// Opens `root/path` read-only, refusing anything that resolves outside `root`
/// (a symlink pointing out) and anything that is not a regular file. `root`
/// must be canonical ([`tftp_root`]).
///
/// Between the check and the open only the last component is guarded
/// (`O_NOFOLLOW`): a directory inside the root swapped for a symlink in that
/// window would be followed. The root belongs to the administrator, so this
/// is not defended further (`openat2` with `RESOLVE_BENEATH` would be).
pub fn open_under(root: &Path, path: &str) -> Result<File, Refusal> {
    let joined = root.join(path);
    let real = std::fs::canonicalize(&joined).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Refusal::AccessViolation,
        _ => Refusal::NotFound,
    })?;
    if !real.starts_with(root) {
        log::warn!(
            "TFTP path {path:?} resolves outside the root (to {})",
            real.display()
        );
        return Err(Refusal::AccessViolation);
    }
    // O_NOFOLLOW: the canonical path ends in no symlink; if one appeared there since, refuse.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => Refusal::AccessViolation,
            std::io::ErrorKind::NotFound => Refusal::NotFound,
            _ => Refusal::AccessViolation,
        })?;
    let meta = file.metadata().map_err(|_| Refusal::ReadError)?;
    if !meta.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn open_under_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.bin"), b"hello").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("ok.bin", root.join("in")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        assert!(open_under(&root, "ok.bin").is_ok());
        assert!(
            open_under(&root, "in").is_ok(),
            "a symlink inside the root is fine"
        );
        assert_eq!(
            open_under(&root, "out").unwrap_err(),
            Refusal::AccessViolation
        );
        assert_eq!(open_under(&root, "missing").unwrap_err(), Refusal::NotFound);
        assert_eq!(open_under(&root, "sub").unwrap_err(), Refusal::NotFound);
    }
}
