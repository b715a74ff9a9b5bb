//! What one `[[target.lun]]` opens: a plain image file ([`Disk`]) or, with
//! `base`, a copy-on-write overlay over a golden image ([`OverlayDisk`]).
//! Both hosts hold LUNs as this, with the same surface as [`Disk`].

use std::path::Path;

use anyhow::{Context, Result};
use sanboot_core::block::{BlockDevice, BlockError, Extent};
use sanboot_core::iscsi::Access;
use sanboot_core::scsi::LunConfig;

use crate::disk::{Disk, DiskOptions};
use crate::overlay::{OverlayDisk, OverlayOptions};

/// An opened LUN.
#[derive(Debug)]
pub enum LunDevice {
    /// `image` alone.
    Disk(Disk),
    /// `base` + `image` (the overlay file); boxed, it is large.
    Overlay(Box<OverlayDisk>),
}

impl LunDevice {
    /// Opens what `lun` describes (creating its image or overlay when the
    /// config says so).
    pub fn open(lun: &crate::Lun) -> Result<LunDevice> {
        Ok(match &lun.base {
            None => LunDevice::Disk(Disk::open(&lun.image, DiskOptions::of_lun(lun))?),
            Some(base) => LunDevice::Overlay(Box::new(
                OverlayDisk::open(base, &lun.image, OverlayOptions::of_lun(lun))
                    .with_context(|| format!("overlay LUN over {}", base.display()))?,
            )),
        })
    }

    /// The image (for an overlay: the overlay file).
    pub fn path(&self) -> &Path {
        match self {
            LunDevice::Disk(d) => d.path(),
            LunDevice::Overlay(o) => o.path(),
        }
    }

    /// Capacity in whole logical blocks.
    pub fn blocks(&self) -> u64 {
        match self {
            LunDevice::Disk(d) => d.blocks(),
            LunDevice::Overlay(o) => o.blocks(),
        }
    }

    /// Completed `fdatasync` calls.
    pub fn syncs(&self) -> u64 {
        match self {
            LunDevice::Disk(d) => d.syncs(),
            LunDevice::Overlay(o) => o.syncs(),
        }
    }

    /// Makes every completed write durable.
    pub fn sync(&self) -> std::io::Result<()> {
        match self {
            LunDevice::Disk(d) => d.sync(),
            LunDevice::Overlay(o) => o.sync(),
        }
    }

    /// The SCSI description of this LUN.
    pub fn lun_config(&self, naa: u64, serial: &str) -> LunConfig {
        match self {
            LunDevice::Disk(d) => d.lun_config(naa, serial),
            LunDevice::Overlay(o) => o.lun_config(naa, serial),
        }
    }

    /// Runs `f` with the LUN as the driver's device (see [`Disk::with_device`]).
    pub fn with_device<R>(&self, access: Access, f: impl FnOnce(&mut dyn BlockDevice) -> R) -> R {
        match self {
            LunDevice::Disk(d) => d.with_device(access, f),
            LunDevice::Overlay(o) => o.with_device(access, f),
        }
    }

    fn dev(&mut self) -> &mut dyn BlockDevice {
        match self {
            LunDevice::Disk(d) => d,
            LunDevice::Overlay(o) => &mut **o,
        }
    }
}

/// An owned LUN is a device (single-threaded hosts such as the smoltcp runner).
impl BlockDevice for LunDevice {
    fn len(&self) -> u64 {
        match self {
            LunDevice::Disk(d) => BlockDevice::len(d),
            LunDevice::Overlay(o) => BlockDevice::len(&**o),
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.dev().read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.dev().write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.dev().flush()
    }
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.dev().deallocate(offset, len)
    }
    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        self.dev().extent(offset)
    }
}
