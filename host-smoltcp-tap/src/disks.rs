//! LUNs backed by image files (pread/pwrite, fdatasync on flush), and the
//! SCSI targets built from the config.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use sanboot_core::scsi::LunConfig;
use sanboot_smoltcp::{
    BlockDevice, BlockError, Disks, ScsiTarget, ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS,
};

use crate::config::translate::naa_and_serial;
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

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                // The image shrank under us: no data there.
                std::io::ErrorKind::UnexpectedEof => BlockError::OutOfRange,
                _ => BlockError::Io,
            })
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    BlockError::NoSpace
                }
                _ => BlockError::Io,
            })
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Io)
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
    crate::config::image_lock::lock_image(&file, path, lun.read_only)?;
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
            cfg.max_compare_and_write_blocks = ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS;
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
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn image_files_pass_the_block_device_conformance_suite() {
        let dir = std::env::temp_dir().join(format!("sanboot-smoltcp-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.img");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(1 << 20).unwrap();
        let mut disk = FileDisk { file, len: 1 << 20 };
        let r = sanboot_core::block::conformance::run(&mut disk);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r, Ok(()));
    }
}
