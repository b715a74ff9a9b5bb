//! Golden images: one read-only system image, many stations, each booting
//! it through its own copy-on-write overlay (issue 9).
//!
//! A `[[host]]` with `image = "<name>"` gets a disk without a
//! `[[target]]` in the file: [`expand`] adds, per such station, a target
//! named `<image iqn>:<hostname>` (default image iqn
//! `iqn.2026-12.org.sanboot:<image>`) whose only initiator is the host's
//! own initiator name and whose LUN 0 is an overlay over the image's
//! current base version, kept in `<overlay_dir>/<image>/<hostname>.ovl`.
//! The host's script then boots that target like any other.
//!
//! Files (see [`layout`]):
//!
//! ```text
//! <file>                         version 1: the golden base as configured, never written
//! <file>.v2, <file>.v3, ...      versions made by `sanboot image commit` (read-only)
//! <file>.current                 the current version number (absent: 1)
//! <overlay_dir>/<image>/<host>.ovl           the station's overlay
//! <overlay_dir>/<image>/<host>.version       the base version that overlay was made on
//! <overlay_dir>/<image>/<host>.snapshots/    snapshots: <name>.ovl + <name>.version
//! <overlay_dir>/<image>/<host>.request       an operation waiting for `sanboot serve`
//! <overlay_dir>/<image>/<host>.lock          flock'ed by the `sanboot serve` that serves the station
//! ```
//!
//! A station stays on the version its overlay was made on until the overlay
//! is dropped (a reset, each boot of a volatile station) or replaced (a
//! rollback): an overlay only means something over the base it was written
//! on. A station without an overlay starts on the current version.

pub mod layout;
pub mod ops;
pub mod request;
pub mod sparse;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::{BootKind, Config, Host, Image, Lun, StationMode, Target};
pub use layout::Station;

/// The default station target prefix of an image.
pub fn default_iqn(image: &str) -> String {
    format!("iqn.2026-12.org.sanboot:{image}")
}

fn valid_image_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// An RFC 1123 label: a hostname that is safe as a file name and, lowered,
/// as the last part of an IQN.
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Checks `[[image]]` tables and the hosts that use them, then adds each
/// station's target to `config.targets` and points the host at it (LUN 0).
/// Runs in [`Config::load`] before the general validation; reads (never
/// writes) the version files. Errors name the table and key.
pub fn expand(config: &mut Config) -> Result<()> {
    let mut names = HashMap::new();
    for image in &config.images {
        check_image(image)?;
        if names.insert(image.name.clone(), ()).is_some() {
            bail!("[[image]] name = {:?}: defined twice", image.name);
        }
    }
    let mut hostnames: HashMap<String, &str> = HashMap::new();
    let mut targets = Vec::new();
    let mut bindings = Vec::new();
    for (index, host) in config.hosts.iter().enumerate() {
        let Some(image_name) = &host.image else {
            if host.mode.is_some() {
                bail!(
                    "[[host]] {}: `mode` is for hosts that boot an `image`",
                    host.mac
                );
            }
            continue;
        };
        let image = config
            .images
            .iter()
            .find(|i| &i.name == image_name)
            .ok_or_else(|| {
                let known: Vec<_> = config.images.iter().map(|i| i.name.as_str()).collect();
                anyhow::anyhow!(
                    "[[host]] {}: image {image_name:?} is not defined (defined [[image]] names: {})",
                    host.mac,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            })?;
        let hostname = check_station_host(config, host)?;
        if let Some(other) = hostnames.insert(hostname.to_ascii_lowercase(), &host.mac) {
            bail!(
                "[[host]] {} and {other}: both have hostname {hostname:?}; a station of an \
                 image is named by its hostname (its target, its overlay file, `sanboot image \
                 <command> {hostname}`), so it must be unique",
                host.mac
            );
        }
        let station = Station::new(config, image, host, hostname);
        let initiator = crate::script::host_initiator(config, host)
            .map_err(|e| anyhow::anyhow!("[[host]] {}: {e}", host.mac))?;
        if config
            .targets
            .iter()
            .any(|t| t.iqn.eq_ignore_ascii_case(&station.target_iqn))
        {
            bail!(
                "[[host]] {hostname}: its station target {} is also a [[target]] in the file; \
                 rename one (or set [[image]] iqn)",
                station.target_iqn
            );
        }
        if let Err(e) = sanboot_core::ipxe::validate_iscsi_name(&station.target_iqn) {
            bail!(
                "[[host]] {hostname}: station target name {:?}: {e} (check [[image]] {} iqn)",
                station.target_iqn,
                image.name
            );
        }
        let version = station
            .version()
            .with_context(|| format!("[[host]] {hostname}"))?;
        let base = station.base_file(version);
        if !base.is_file() {
            bail!(
                "[[host]] {hostname}: base version {version} of image {}, {}, does not exist",
                image.name,
                base.display()
            );
        }
        targets.push(Target {
            iqn: station.target_iqn.clone(),
            initiators: vec![initiator.to_string()],
            chap: None,
            digest: crate::Digest::default(),
            luns: vec![station_lun(&station, base)],
        });
        bindings.push((index, station.target_iqn.clone()));
    }
    for (index, iqn) in bindings {
        if let Some(host) = config.hosts.get_mut(index) {
            host.target = Some(iqn);
            host.lun = 0;
        }
    }
    config.targets.extend(targets);
    Ok(())
}

/// LUN 0 of a station's target: its overlay file over the base version
/// it sits on. (`serve` opens it with [`open_station`], which reads the
/// version again: a pending request applied at start may have moved it.)
fn station_lun(station: &Station, base: PathBuf) -> Lun {
    Lun {
        id: 0,
        image: station.overlay.clone(),
        base: Some(base),
        size: None,
        read_only: false,
        thin: true,
        write_cache: true,
    }
}

fn check_image(image: &Image) -> Result<()> {
    if !valid_image_name(&image.name) {
        bail!(
            "[[image]] name = {:?}: use lower-case letters, digits, '.', '_' and '-' \
             (it names a directory and a target)",
            image.name
        );
    }
    let meta = std::fs::metadata(&image.file).with_context(|| {
        format!(
            "[[image]] {}: file {} (the golden base) cannot be read",
            image.name,
            image.file.display()
        )
    })?;
    if !meta.is_file() {
        bail!(
            "[[image]] {}: file {} is not a regular file",
            image.name,
            image.file.display()
        );
    }
    if meta.len() < 512 || meta.len() % 512 != 0 {
        bail!(
            "[[image]] {}: file {} is {} bytes; a disk image is a non-zero multiple of 512",
            image.name,
            image.file.display(),
            meta.len()
        );
    }
    if let Some(g) = image.granularity {
        if !g.is_power_of_two() || !(4096..=1 << 20).contains(&g) {
            bail!(
                "[[image]] {}: granularity = {g}: a power of two from 4096 to 1048576 bytes",
                image.name
            );
        }
    }
    if let Some(iqn) = &image.iqn {
        if let Err(e) = sanboot_core::ipxe::validate_iscsi_name(iqn) {
            bail!("[[image]] {}: iqn = {iqn:?}: {e}", image.name);
        }
    }
    Ok(())
}

/// The rules of a host that boots an image; its hostname.
fn check_station_host<'h>(config: &Config, host: &'h Host) -> Result<&'h str> {
    let Some(hostname) = host.hostname.as_deref() else {
        bail!(
            "[[host]] {}: a host with `image` needs `hostname` (it names the station's \
             target and overlay)",
            host.mac
        );
    };
    if !valid_hostname(hostname) {
        bail!(
            "[[host]] {}: hostname = {hostname:?}: use letters, digits and '-' (at most 63)",
            host.mac
        );
    }
    if host.target.is_some() {
        bail!(
            "[[host]] {hostname}: `image` and `target` exclude each other (the image's \
             station target is made for it)"
        );
    }
    if host.boot == BootKind::Chain {
        bail!("[[host]] {hostname}: boot = chain boots no disk; `image` needs sanboot or kernel");
    }
    if host.mode == Some(StationMode::Volatile) && config.boot.direct {
        bail!(
            "[[host]] {hostname}: mode = \"volatile\" needs the per-MAC script chain: \
             fetching `<mac>.ipxe` marks the start of a boot, and [boot] direct = true \
             serves one script to everyone"
        );
    }
    Ok(hostname)
}

/// The stations of every image, in config order.
pub fn stations(config: &Config) -> Vec<Station> {
    config
        .hosts
        .iter()
        .filter_map(|host| {
            let image = config
                .images
                .iter()
                .find(|i| Some(&i.name) == host.image.as_ref())?;
            Some(Station::new(config, image, host, host.hostname.as_deref()?))
        })
        .collect()
}

/// The station with this hostname (any case), or an error listing them.
pub fn station(config: &Config, hostname: &str) -> Result<Station> {
    let all = stations(config);
    let names: Vec<String> = all.iter().map(|s| s.hostname.clone()).collect();
    all.into_iter()
        .find(|s| s.hostname.eq_ignore_ascii_case(hostname))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no station {hostname:?}: stations are [[host]]s with `image` ({})",
                if names.is_empty() {
                    "none in this file".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
}

/// The images' own paths resolved: `overlay_dir` defaults to
/// `<state_dir>/overlays`.
pub fn overlay_root(config: &Config, image: &Image) -> PathBuf {
    image
        .overlay_dir
        .clone()
        .unwrap_or_else(|| config.server.state_dir.join("overlays"))
        .join(&image.name)
}

/// Opens a station's LUN: its overlay (created when missing, with the
/// image's granularity) over the base version it sits on now.
pub fn open_station(station: &Station) -> Result<crate::lun_device::LunDevice> {
    let base = station.base_file(station.version()?);
    Ok(crate::lun_device::LunDevice::Overlay(Box::new(
        open_overlay(station, &base)?,
    )))
}

fn open_overlay(station: &Station, base: &std::path::Path) -> Result<crate::overlay::OverlayDisk> {
    let mut opts = crate::overlay::OverlayOptions::default();
    if let Some(g) = station.granularity.and_then(|g| u32::try_from(g).ok()) {
        opts.granularity = g;
    }
    crate::overlay::OverlayDisk::open(base, &station.overlay, opts).with_context(|| {
        format!(
            "station {}: overlay over {}",
            station.hostname,
            base.display()
        )
    })
}

/// [`ops::WithView`] for the command line (no `serve` holds the station):
/// opens the overlay over its base.
pub fn with_view(
    base: &std::path::Path,
    overlay: &std::path::Path,
    merge: ops::Merge<'_>,
) -> Result<u64> {
    let disk =
        crate::overlay::OverlayDisk::open(base, overlay, crate::overlay::OverlayOptions::default())
            .with_context(|| format!("overlay {} over {}", overlay.display(), base.display()))?;
    disk.with_device(sanboot_core::iscsi::Access::Shared, |d| merge(d))
}

#[cfg(test)]
mod tests;
