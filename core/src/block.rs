//! Block devices: where a logical unit's bytes live.
//!
//! A host implements [`BlockDevice`] for what it has — an image file, a RAM
//! disk, flash, an SD card — and the iSCSI storage driver
//! ([`crate::iscsi::Driver`]) does everything else: SCSI semantics, compound
//! commands, status after I/O. The trait is blocking: each call returns when
//! the work is done (for [`BlockDevice::flush`]: when it is durable).
//!
//! Offsets and lengths are in bytes of the device; the SCSI layer has already
//! checked them against the LUN's capacity, but a device that shrank under a
//! running target (a truncated image) must still answer
//! [`BlockError::OutOfRange`] rather than invent data. [`conformance::run`]
//! checks a device does all this.

pub mod conformance;
pub mod overlay;

/// A device failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlockError {
    /// The range is (now) outside the device: a short read is never data.
    OutOfRange,
    /// The medium failed.
    Io,
    /// The backing store is full (thin image, quota).
    NoSpace,
    /// The device cannot do this (e.g. deallocate).
    Unsupported,
}

/// Allocation state of a range, for GET LBA STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Extent {
    /// The bytes read back as zeros without being stored (a hole).
    pub deallocated: bool,
    /// Bytes from the asked offset that share this state (≥ 1).
    pub len: u64,
}

/// The storage behind one LUN, addressed in bytes.
pub trait BlockDevice {
    /// Size in bytes now.
    fn len(&self) -> u64;

    /// True for a zero-sized device.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills all of `buf` with the bytes at `offset`; a short read is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Stores all of `data` at `offset` (not necessarily durably).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError>;

    /// Makes every completed write durable; returns when it is.
    fn flush(&mut self) -> Result<(), BlockError>;

    /// Deallocates a range: it reads back as zeros afterwards. Devices that
    /// cannot answer [`BlockError::Unsupported`] and the driver writes zeros.
    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        let _ = (offset, len);
        Err(BlockError::Unsupported)
    }

    /// Whether the range at `offset` is allocated, and how far that state
    /// goes. `None`: the device cannot tell (everything counts as mapped).
    fn extent(&mut self, offset: u64) -> Result<Option<Extent>, BlockError> {
        let _ = offset;
        Ok(None)
    }
}

/// A disk held in memory (or a writable copy of an image in flash).
/// Deallocated ranges are zeroed, so it can serve thin-provisioned LUNs.
#[derive(Debug)]
pub struct RamDisk<B>(pub B);

impl<B: AsRef<[u8]>> RamDisk<B> {
    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
        let start = usize::try_from(offset).map_err(|_| BlockError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(BlockError::OutOfRange)?;
        if end > self.0.as_ref().len() {
            return Err(BlockError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> BlockDevice for RamDisk<B> {
    fn len(&self) -> u64 {
        self.0.as_ref().len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let r = self.range(offset, buf.len())?;
        let src = self.0.as_ref().get(r).ok_or(BlockError::OutOfRange)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        let r = self.range(offset, data.len())?;
        let dst = self.0.as_mut().get_mut(r).ok_or(BlockError::OutOfRange)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }

    fn deallocate(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        let len = usize::try_from(len).map_err(|_| BlockError::OutOfRange)?;
        let r = self.range(offset, len)?;
        self.0
            .as_mut()
            .get_mut(r)
            .ok_or(BlockError::OutOfRange)?
            .fill(0);
        Ok(())
    }
}
