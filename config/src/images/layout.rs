//! Where an image's versions and a station's overlay, snapshots and
//! pending request live, and the small text files that record versions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{Config, Host, Image, StationMode};

/// One `[[host]]` that boots an image, with every path that belongs to it.
#[derive(Debug, Clone)]
pub struct Station {
    pub hostname: String,
    pub mac: String,
    pub mode: StationMode,
    pub image: String,
    /// The image's version 1 (`[[image]] file`).
    pub image_file: PathBuf,
    /// `[[image]] granularity`.
    pub granularity: Option<u64>,
    /// The station's target: `<image iqn>:<hostname, lower case>`.
    pub target_iqn: String,
    /// `<overlay_dir>/<image>/`: this image's overlays (and its `.lock`).
    pub dir: PathBuf,
    /// `<dir>/<hostname>.ovl`
    pub overlay: PathBuf,
}

impl Station {
    pub(crate) fn new(config: &Config, image: &Image, host: &Host, hostname: &str) -> Station {
        let prefix = image
            .iqn
            .clone()
            .unwrap_or_else(|| super::default_iqn(&image.name));
        let dir = super::overlay_root(config, image);
        Station {
            hostname: hostname.to_string(),
            mac: host.mac.clone(),
            mode: host.mode.unwrap_or_default(),
            image: image.name.clone(),
            image_file: image.file.clone(),
            granularity: image.granularity,
            target_iqn: format!("{prefix}:{}", hostname.to_ascii_lowercase()),
            overlay: dir.join(format!("{hostname}.ovl")),
            dir,
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.hostname))
    }

    /// `<host>.version`: the base version the overlay was made on.
    pub fn version_file(&self) -> PathBuf {
        self.sibling(".version")
    }

    /// `<host>.snapshots/`
    pub fn snapshot_dir(&self) -> PathBuf {
        self.sibling(".snapshots")
    }

    /// `<host>.request`: an operation `sanboot serve` has yet to apply.
    pub fn request_file(&self) -> PathBuf {
        self.sibling(".request")
    }

    /// `<host>.result`: what `sanboot serve` made of the last request.
    pub fn result_file(&self) -> PathBuf {
        self.sibling(".result")
    }

    /// `<host>.lock`: held (flock) by the `sanboot serve` serving the station.
    pub fn lock_file(&self) -> PathBuf {
        self.sibling(".lock")
    }

    /// `<dir>/.lock`: held while an image's versions change (commit).
    pub fn image_lock_file(&self) -> PathBuf {
        self.dir.join(".lock")
    }

    /// The file of base version `n` of this station's image.
    pub fn base_file(&self, n: u32) -> PathBuf {
        version_path(&self.image_file, n)
    }

    /// The image's current version (`<file>.current`, absent: 1).
    pub fn current_version(&self) -> Result<u32> {
        current_version(&self.image_file)
    }

    /// The version this station's overlay sits on. With no overlay yet it
    /// starts on the image's current version; an overlay without a
    /// recorded version is refused rather than put over a guessed base.
    pub fn version(&self) -> Result<u32> {
        match read_number(&self.version_file())? {
            Some(n) => Ok(n),
            None if self.overlay.exists() => bail!(
                "overlay {} has no {}: cannot tell which base version it was made on \
                 (write the version number into that file, or `sanboot image reset`)",
                self.overlay.display(),
                self.version_file().display()
            ),
            None => self.current_version(),
        }
    }

    /// Records `n` as the version the overlay sits on.
    pub fn set_version(&self, n: u32) -> Result<()> {
        write_atomic(&self.version_file(), format!("{n}\n").as_bytes())
    }
}

/// `<file>` for version 1, `<file>.v<n>` after it.
pub fn version_path(file: &Path, n: u32) -> PathBuf {
    if n <= 1 {
        return file.to_path_buf();
    }
    let mut name = file.as_os_str().to_os_string();
    name.push(format!(".v{n}"));
    PathBuf::from(name)
}

/// `<file>.current`
pub fn current_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".current");
    PathBuf::from(name)
}

/// The current version of the image whose version 1 is `file`.
pub fn current_version(file: &Path) -> Result<u32> {
    Ok(read_number(&current_file(file))?.unwrap_or(1))
}

/// Every version of the image that exists, ascending (1 first).
pub fn versions(file: &Path) -> Vec<u32> {
    let mut out = vec![1];
    let mut n = 2;
    // Versions are made in order; stop at the first gap.
    while version_path(file, n).is_file() {
        out.push(n);
        n += 1;
    }
    out
}

/// A small file holding one decimal number; `None` when it is absent.
fn read_number(path: &Path) -> Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .with_context(|| {
                format!(
                    "{}: expected a version number (1, 2, ...), found {:?}",
                    path.display(),
                    text.trim()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
