//! LUNs backed by image files or overlays (the same [`LunDevice`] as `sanboot serve`:
//! pread/pwrite, fdatasync, hole punching, an image lock), and the SCSI
//! targets built from the config.

use anyhow::{Context, Result};
use sanboot_smoltcp::{
    BlockDevice, Disks, ScsiTarget, ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS, ISCSI_MAX_UNMAP_DESCRIPTORS,
};

use crate::config::lun_device::LunDevice;
use crate::config::translate::naa_and_serial;
use crate::config::Config;

/// Every configured LUN: `(target index, lun, disk)`.
pub struct FileDisks(pub Vec<(usize, u64, LunDevice)>);

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
            let disk =
                LunDevice::open(l).with_context(|| format!("[[target]] {} lun {}", t.iqn, l.id))?;
            let (naa, serial) = naa_and_serial(&t.iqn, l.id);
            let mut cfg = disk.lun_config(naa, &serial);
            // What the driver's collection buffer holds whole.
            cfg.max_compare_and_write_blocks = ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS;
            cfg.max_unmap_descriptors = ISCSI_MAX_UNMAP_DESCRIPTORS;
            scsi.add_lun(l.id, cfg)
                .map_err(|_| anyhow::anyhow!("[[target]] {}: more than 4 LUNs", t.iqn))?;
            println!(
                "iscsi LUN {} of {}: {} ({} blocks)",
                l.id,
                t.iqn,
                l.image.display(),
                disk.blocks()
            );
            disks.push((ti, l.id, disk));
        }
        targets.push(scsi);
    }
    Ok((targets, FileDisks(disks)))
}
