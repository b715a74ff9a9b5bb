//! TFTP files from `[tftp] root`, confined to it (`sanboot_config::files`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use sanboot_config::files::open_under;
use sanboot_core::tftp::{ReadError, Refusal};
use sanboot_smoltcp::Files;

/// A directory served read-only; `None` serves nothing but scripts.
pub struct DirFiles {
    pub root: Option<PathBuf>,
}

impl Files for DirFiles {
    type Handle = File;

    fn open(&mut self, path: &str) -> Result<(File, u64), Refusal> {
        let root = self.root.as_deref().ok_or(Refusal::NotFound)?;
        let file = open_under(root, path)?;
        let size = file.metadata().map_err(|_| Refusal::ReadError)?.len();
        Ok((file, size))
    }

    fn read_at(&mut self, file: &mut File, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadError::Truncated,
            _ => ReadError::Io,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn open_under_refuses_escapes() {
        let base =
            std::env::temp_dir().join(format!("sanboot-smoltcp-files-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        std::fs::write(root.join("ok.bin"), b"hello").unwrap();
        std::fs::write(base.join("secret"), b"no").unwrap();
        let _ = std::os::unix::fs::symlink(base.join("secret"), root.join("out"));
        let mut files = DirFiles {
            root: Some(root.clone()),
        };
        let (mut f, size) = files.open("ok.bin").unwrap();
        assert_eq!(size, 5);
        let mut buf = [0u8; 3];
        files.read_at(&mut f, 2, &mut buf).unwrap();
        assert_eq!(&buf, b"llo");
        assert_eq!(files.open("out").err(), Some(Refusal::AccessViolation));
        assert_eq!(files.open("missing").err(), Some(Refusal::NotFound));
        let _ = std::fs::remove_dir_all(&base);
    }
}
