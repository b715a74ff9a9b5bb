//! LUNs backed by image files (pread/pwrite, fdatasync on flush), and the
//! SCSI targets and core target views built from the config.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use sanboot_core::iscsi::{ChapCredentials, DigestPolicy, TargetConfig};
use sanboot_core::scsi::LunConfig;
use sanboot_smoltcp::{BlockDevice, DiskError, Disks, ScsiTarget};

use crate::config::{Config, Lun};

/// One image file.
pub struct FileDisk {
    file: File,
    len: u64,
}

impl BlockDevice for FileDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|_| DiskError::Io)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|_| DiskError::Io)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(|_| DiskError::Io)
    }
}

fn open(lun: &Lun) -> Result<FileDisk> {
    let path = &lun.image;
    if !path.exists() {
        let Some(size) = lun.size else {
            bail!(
                "{}: image does not exist and no `size` is given to create it",
                path.display()
            );
        };
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create image {}", path.display()))?;
        f.set_len(size)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!lun.read_only)
        .open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    let len = file.metadata()?.len();
    Ok(FileDisk { file, len })
}

/// Every configured LUN: `(target index, lun, disk)`.
pub struct FileDisks(pub Vec<(usize, u64, FileDisk)>);

impl Disks for FileDisks {
    fn disk(&mut self, target: usize, lun: u64) -> Option<&mut dyn BlockDevice> {
        self.0
            .iter_mut()
            .find(|(t, l, _)| *t == target && *l == lun)
            .map(|(_, _, d)| d as &mut dyn BlockDevice)
    }
}

/// NAA and serial stable across restarts (FNV-1a of the IQN and LUN, as on Linux).
fn naa_and_serial(iqn: &str, lun: u64) -> (u64, String) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in iqn.to_ascii_lowercase().bytes().chain(lun.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let naa = (0x5u64 << 60) | (0xAC_DE48u64 << 36) | (h & 0xF_FFFF_FFFF);
    (naa, format!("{h:016x}"))
}

/// Opens every image and builds each target's SCSI state.
pub fn open_all(config: &Config) -> Result<(Vec<ScsiTarget>, FileDisks)> {
    let mut targets = Vec::new();
    let mut disks = Vec::new();
    for (ti, t) in config.targets.iter().enumerate() {
        let mut scsi = ScsiTarget::new();
        for l in &t.luns {
            let disk = open(l).with_context(|| format!("[[target]] {} lun {}", t.iqn, l.id))?;
            let (naa, serial) = naa_and_serial(&t.iqn, l.id);
            let mut cfg = LunConfig::new(disk.len / 512, naa);
            cfg.read_only = l.read_only;
            for c in serial.chars().take(32) {
                let _ = cfg.serial.push(c);
            }
            scsi.add_lun(l.id, cfg)
                .map_err(|_| anyhow::anyhow!("[[target]] {}: more than 4 LUNs", t.iqn))?;
            println!(
                "iscsi LUN {} of {}: {} ({} blocks)",
                l.id,
                t.iqn,
                l.image.display(),
                disk.len / 512
            );
            disks.push((ti, l.id, disk));
        }
        targets.push(scsi);
    }
    Ok((targets, FileDisks(disks)))
}

/// Owned slices the core's `TargetConfig`s borrow.
pub struct Views<'c> {
    initiators: Vec<Vec<&'c str>>,
    luns: Vec<Vec<u64>>,
    config: &'c Config,
}

impl<'c> Views<'c> {
    pub fn new(config: &'c Config) -> Self {
        Views {
            initiators: config
                .targets
                .iter()
                .map(|t| t.initiators.iter().map(String::as_str).collect())
                .collect(),
            luns: config
                .targets
                .iter()
                .map(|t| t.luns.iter().map(|l| l.id).collect())
                .collect(),
            config,
        }
    }

    pub fn configs(&self) -> Vec<TargetConfig<'_>> {
        self.config
            .targets
            .iter()
            .zip(&self.initiators)
            .zip(&self.luns)
            .map(|((t, i), l)| TargetConfig {
                name: &t.iqn,
                initiators: i,
                chap: t.chap.as_ref().map(|c| ChapCredentials {
                    user: &c.user,
                    secret: c.secret.as_bytes(),
                }),
                mutual_chap: t.chap.as_ref().and_then(|c| {
                    Some(ChapCredentials {
                        user: c.mutual_user.as_deref()?,
                        secret: c.mutual_secret.as_deref()?.as_bytes(),
                    })
                }),
                luns: l,
                digest: match t.digest {
                    crate::config::Digest::None => DigestPolicy::Never,
                    crate::config::Digest::Allowed => DigestPolicy::Allowed,
                    crate::config::Digest::Preferred => DigestPolicy::Preferred,
                    crate::config::Digest::Required => DigestPolicy::Required,
                },
            })
            .collect()
    }
}
