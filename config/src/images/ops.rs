//! The file operations behind `sanboot image`: reset, snapshot, rollback,
//! commit and the listing. The caller holds the station's lock
//! ([`lock_station`]): the command line when no `sanboot serve` serves the
//! station, else the server itself, which applies a request file.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};
use sanboot_core::block::BlockDevice;

use super::layout::{current_file, versions, write_atomic, Station};
use super::request::Request;
use super::sparse::{copy_sparse, used_bytes, used_bytes_in};
use crate::Config;

/// Runs the closure on a station's disk as its initiator sees it (the
/// overlay at the second path over the base at the first), for [`commit`]
/// to read. The command line opens the files; `serve` lends the device it
/// has open (a second open of the overlay would be refused by its lock).
pub type WithView<'a> = &'a dyn Fn(&Path, &Path, Merge<'_>) -> Result<u64>;
/// What [`commit`] does with the view: the bytes it changed.
pub type Merge<'a> = &'a mut dyn FnMut(&mut dyn BlockDevice) -> Result<u64>;

/// A held lock file (released on drop, or when the process dies).
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] File);

fn try_lock(path: &Path) -> Result<Option<Held>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Held(f))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("flock {}", path.display())),
    }
}

/// The station's lock (`<host>.lock`), or `None` when someone (a running
/// `sanboot serve`, another `sanboot image`) holds it. The holder writes
/// `who` into the file, so the next one can tell which ([`lock_holder`]).
pub fn lock_station(station: &Station, who: &str) -> Result<Option<Held>> {
    let Some(held) = try_lock(&station.lock_file())? else {
        return Ok(None);
    };
    held.0.set_len(0)?;
    std::os::unix::fs::FileExt::write_all_at(&held.0, format!("{who}\n").as_bytes(), 0)?;
    Ok(Some(held))
}

/// What the holder of the station's lock wrote there ("" when unknown).
pub fn lock_holder(station: &Station) -> String {
    std::fs::read_to_string(station.lock_file())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What `sanboot serve` writes into the locks of the stations it serves.
pub fn serve_holder() -> String {
    format!("sanboot serve (pid {})", std::process::id())
}

/// The image's lock (`<overlay_dir>/<image>/.lock`), waited for: held only
/// for the moment its versions change.
fn lock_image(station: &Station) -> Result<Held> {
    for _ in 0..600 {
        if let Some(h) = try_lock(&station.image_lock_file())? {
            return Ok(h);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!(
        "image {}: {} stayed locked for 60 s",
        station.image,
        station.image_lock_file().display()
    )
}

/// Applies `req` to the station's files; the caller holds its lock and
/// nothing has the overlay open. Returns a line for the user.
pub fn apply(station: &Station, req: &Request, with_view: WithView<'_>) -> Result<String> {
    req.allowed_for(&station.hostname, station.mode)?;
    match req {
        Request::Reset => reset(station),
        Request::Snapshot(name) => snapshot(station, name),
        Request::Rollback(name) => rollback(station, name),
        Request::Commit => commit(station, with_view),
    }
}

/// What can be refused before a request is handed to `serve`: the mode,
/// a snapshot name that is taken (snapshot) or unknown (rollback).
pub fn precheck(station: &Station, req: &Request) -> Result<()> {
    req.allowed_for(&station.hostname, station.mode)?;
    match req {
        Request::Snapshot(name) => {
            if snapshot_paths(station, name).1.exists() {
                bail!("{}: snapshot {name:?} exists already", station.hostname);
            }
        }
        Request::Rollback(name) => {
            if !snapshot_paths(station, name).1.exists() {
                let have = list_snapshots(station).join(", ");
                bail!(
                    "{}: no snapshot {name:?} (snapshots: {})",
                    station.hostname,
                    if have.is_empty() { "none".into() } else { have }
                );
            }
        }
        Request::Reset | Request::Commit => {}
    }
    Ok(())
}

/// Drops the overlay; the station moves to the image's current version.
pub fn reset(station: &Station) -> Result<String> {
    let freed = used_bytes(&station.overlay);
    remove_if_exists(&station.overlay)?;
    let v = station.current_version()?;
    station.set_version(v)?;
    Ok(format!(
        "{}: overlay dropped ({} freed); it now sees version {v} of {}",
        station.hostname,
        human(freed),
        station.image
    ))
}

fn snapshot_paths(station: &Station, name: &str) -> (PathBuf, PathBuf) {
    let dir = station.snapshot_dir();
    (
        dir.join(format!("{name}.ovl")),
        dir.join(format!("{name}.version")),
    )
}

/// Copies the overlay (sparse or reflinked) and its version under `name`.
pub fn snapshot(station: &Station, name: &str) -> Result<String> {
    super::request::check_snapshot_name(name)?;
    let (ovl, ver) = snapshot_paths(station, name);
    if ver.exists() {
        bail!(
            "{}: snapshot {name:?} exists already ({})",
            station.hostname,
            ver.display()
        );
    }
    std::fs::create_dir_all(station.snapshot_dir())?;
    let version = station.version()?;
    // No overlay yet is a snapshot too: the plain base version.
    let how = if station.overlay.exists() {
        match copy_sparse(&station.overlay, &ovl)? {
            super::sparse::CopyKind::Reflink => "reflinked",
            super::sparse::CopyKind::Sparse => "sparse copy",
        }
    } else {
        "empty overlay"
    };
    // The version file last: it is what makes the snapshot exist.
    write_atomic(&ver, format!("{version}\n").as_bytes())?;
    Ok(format!(
        "{}: snapshot {name} taken ({how}, {}, on version {version})",
        station.hostname,
        human(used_bytes(&ovl))
    ))
}

/// Puts snapshot `name` back: its overlay and the base version under it.
pub fn rollback(station: &Station, name: &str) -> Result<String> {
    super::request::check_snapshot_name(name)?;
    let (ovl, ver) = snapshot_paths(station, name);
    let version = std::fs::read_to_string(&ver)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            let have = list_snapshots(station).join(", ");
            anyhow::anyhow!(
                "{}: no snapshot {name:?} (snapshots: {})",
                station.hostname,
                if have.is_empty() { "none".into() } else { have }
            )
        })?;
    if ovl.exists() {
        let tmp = with_suffix(&station.overlay, ".rollback");
        remove_if_exists(&tmp)?;
        copy_sparse(&ovl, &tmp)?;
        std::fs::rename(&tmp, &station.overlay)?;
    } else {
        remove_if_exists(&station.overlay)?;
    }
    station.set_version(version)?;
    Ok(format!(
        "{}: rolled back to snapshot {name} (version {version} of {})",
        station.hostname, station.image
    ))
}

/// The names of a station's snapshots, sorted.
pub fn list_snapshots(station: &Station) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(station.snapshot_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".version")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Merges the station's disk (base + overlay) into a new version of its
/// image, makes it current, and puts the station on it with an empty
/// overlay (what it reads does not change). Other stations keep the base
/// their overlay was made on until they are reset (volatile ones: at their
/// next boot); stations without an overlay start on the new version.
pub fn commit(station: &Station, with_view: WithView<'_>) -> Result<String> {
    let _image = lock_image(station)?;
    let from = station.version()?;
    let new = versions(&station.image_file).last().copied().unwrap_or(1) + 1;
    let target = station.base_file(new);
    let tmp = with_suffix(&target, ".tmp");
    remove_if_exists(&tmp)?;
    copy_sparse(&station.base_file(from), &tmp)?;
    let changed = if station.overlay.exists() {
        with_view(&station.base_file(from), &station.overlay, &mut |view| {
            merge_changes(view, &tmp)
        })?
    } else {
        0
    };
    let f = File::open(&tmp)?;
    f.sync_all()?;
    // A version never changes once made: read-only for everyone.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
    std::fs::rename(&tmp, &target)?;
    write_atomic(
        &current_file(&station.image_file),
        format!("{new}\n").as_bytes(),
    )?;
    remove_if_exists(&station.overlay)?;
    station.set_version(new)?;
    Ok(format!(
        "{}: committed as version {new} of {} ({}, {} changed since version {from}); \
         stations move to it when reset (volatile ones at their next boot)",
        station.hostname,
        station.image,
        target.display(),
        human(changed)
    ))
}

/// Writes into `file` every chunk where `view` differs from it; bytes
/// written. Zero chunks over zeros are skipped, so holes stay holes.
fn merge_changes(view: &mut dyn BlockDevice, file: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)?;
    let len = view.len();
    if out.metadata()?.len() != len {
        bail!("the station's disk and its base differ in size");
    }
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut changed = 0u64;
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from(len - off).unwrap_or(CHUNK).min(CHUNK);
        let (Some(want), Some(have)) = (a.get_mut(..n), b.get_mut(..n)) else {
            break;
        };
        view.read_at(off, want)
            .map_err(|e| anyhow::anyhow!("reading the station's disk at {off}: {e:?}"))?;
        out.read_exact_at(have, off)?;
        if want != have {
            out.write_all_at(want, off)?;
            changed += n as u64;
        }
        off += n as u64;
    }
    Ok(changed)
}

/// One station in `sanboot image list`.
#[derive(Debug, Clone)]
pub struct StationInfo {
    pub station: Station,
    /// The base version its overlay sits on (error text if unreadable).
    pub version: Result<u32, String>,
    /// Bytes the overlay occupies on disk.
    pub overlay_used: u64,
    pub snapshots: Vec<String>,
    /// Bytes the snapshots occupy.
    pub snapshots_used: u64,
    /// A request waiting for `sanboot serve`.
    pub pending: Option<String>,
}

/// One image in `sanboot image list`.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub name: String,
    pub file: PathBuf,
    pub current: u32,
    /// (version, its file, bytes it occupies).
    pub versions: Vec<(u32, PathBuf, u64)>,
    pub stations: Vec<StationInfo>,
}

/// Every image, its versions and its stations.
pub fn list(config: &Config) -> Result<Vec<ImageInfo>> {
    let stations = super::stations(config);
    let mut out = Vec::new();
    for image in &config.images {
        let current = super::layout::current_version(&image.file)?;
        let versions = versions(&image.file)
            .into_iter()
            .map(|n| {
                let p = super::layout::version_path(&image.file, n);
                let used = used_bytes(&p);
                (n, p, used)
            })
            .collect();
        let stations = stations
            .iter()
            .filter(|s| s.image == image.name)
            .map(|s| StationInfo {
                version: s.version().map_err(|e| format!("{e:#}")),
                overlay_used: used_bytes(&s.overlay),
                snapshots: list_snapshots(s),
                snapshots_used: used_bytes_in(&s.snapshot_dir()),
                pending: std::fs::read_to_string(s.request_file())
                    .ok()
                    .map(|t| t.trim().to_string()),
                station: s.clone(),
            })
            .collect();
        out.push(ImageInfo {
            name: image.name.clone(),
            file: image.file.clone(),
            current,
            versions,
            stations,
        });
    }
    Ok(out)
}

/// Bytes for people: `0 B`, `12.0 KiB`, `3.4 MiB`, `1.2 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = "KiB";
    for u in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
