//! What the appliance reads and writes besides the network: boot files for
//! TFTP ([`Files`]) and the disks behind iSCSI LUNs ([`Disks`] of the core's
//! [`BlockDevice`]s).

use sanboot_core::block::BlockDevice;
use sanboot_core::tftp::{ReadError, Refusal};

/// A read-only tree of boot files (iPXE binaries, kernels, chained scripts).
///
/// `path` is already normalised and confined by the core (relative, `/`
/// separated, no `..`). A handle lives from `open` to `close`, one per
/// running transfer.
pub trait Files {
    /// An open file.
    type Handle;
    /// Opens `path`, returning the handle and the file's size in bytes.
    fn open(&mut self, path: &str) -> Result<(Self::Handle, u64), Refusal>;
    /// Fills all of `buf` with the bytes at `offset`.
    fn read_at(
        &mut self,
        handle: &mut Self::Handle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ReadError>;
    /// The transfer using `handle` is over.
    fn close(&mut self, handle: Self::Handle) {
        let _ = handle;
    }
}

/// Files compiled into the image: `(name, bytes)` pairs, names compared
/// case-insensitively (TFTP clients are not consistent about case).
#[derive(Debug, Clone, Copy)]
pub struct StaticFiles<'a>(pub &'a [(&'a str, &'a [u8])]);

impl<'a> Files for StaticFiles<'a> {
    type Handle = &'a [u8];

    fn open(&mut self, path: &str) -> Result<(&'a [u8], u64), Refusal> {
        self.0
            .iter()
            .find(|(name, _)| name.trim_start_matches('/').eq_ignore_ascii_case(path))
            .map(|(_, bytes)| (*bytes, bytes.len() as u64))
            .ok_or(Refusal::NotFound)
    }

    fn read_at(
        &mut self,
        handle: &mut &'a [u8],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ReadError> {
        sanboot_core::tftp::ReadAt::read_exact_at(handle, offset, buf)
    }
}

/// No files at all: only generated scripts are served.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl Files for NoFiles {
    type Handle = ();

    fn open(&mut self, _path: &str) -> Result<((), u64), Refusal> {
        Err(Refusal::NotFound)
    }

    fn read_at(&mut self, _: &mut (), _: u64, _: &mut [u8]) -> Result<(), ReadError> {
        Err(ReadError::Io)
    }
}

/// The disks behind the iSCSI targets: `(target index, LUN)` → device.
pub trait Disks {
    /// The device of LUN `lun` of target `target` (index into the config's targets).
    fn disk(&mut self, target: usize, lun: u64) -> Option<&mut dyn BlockDevice>;
}

/// No iSCSI disks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDisks;

impl Disks for NoDisks {
    fn disk(&mut self, _: usize, _: u64) -> Option<&mut dyn BlockDevice> {
        None
    }
}

/// One disk: LUN 0 of the first target.
#[derive(Debug)]
pub struct OneDisk<B>(pub B);

impl<B: BlockDevice> Disks for OneDisk<B> {
    fn disk(&mut self, target: usize, lun: u64) -> Option<&mut dyn BlockDevice> {
        (target == 0 && lun == 0).then_some(&mut self.0 as &mut dyn BlockDevice)
    }
}
