//! What every [`BlockDevice`] must do, as one check each host runs against
//! its own devices (a RAM disk, an image file, flash): the storage driver
//! relies on exactly these behaviours.
//!
//! [`run`] overwrites the device's first 64 KiB and its last block.

use super::{BlockDevice, BlockError};

/// The first check a device failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What was checked.
    pub check: &'static str,
    /// The error the device returned, if the failure was an error.
    pub error: Option<BlockError>,
}

fn fail(check: &'static str) -> Failure {
    Failure { check, error: None }
}

fn op(check: &'static str, r: Result<(), BlockError>) -> Result<(), Failure> {
    r.map_err(|e| Failure {
        check,
        error: Some(e),
    })
}

/// A byte pattern that differs per offset and per `seed`.
fn pattern(buf: &mut [u8], offset: u64, seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset.wrapping_add(i as u64);
        *b = (at as u8) ^ ((at >> 9) as u8) ^ seed;
    }
}

fn write_and_check(
    dev: &mut dyn BlockDevice,
    offset: u64,
    buf: &mut [u8],
    seed: u8,
    check: &'static str,
) -> Result<(), Failure> {
    pattern(buf, offset, seed);
    op(check, dev.write_at(offset, buf))?;
    buf.fill(0);
    op(check, dev.read_at(offset, buf))?;
    let mut want = [0u8; 1];
    for (i, b) in buf.iter().enumerate() {
        pattern(&mut want, offset + i as u64, seed);
        if *b != want[0] {
            return Err(fail(check));
        }
    }
    Ok(())
}

/// Runs every check; `Ok` when the device conforms. The device must be at
/// least 64 KiB and a whole number of 512-byte blocks.
pub fn run(dev: &mut dyn BlockDevice) -> Result<(), Failure> {
    let len = dev.len();
    if len < 64 << 10 || len & 511 != 0 {
        return Err(fail("len() is at least 64 KiB, in whole 512-byte blocks"));
    }
    let mut buf = [0u8; 8192];
    write_and_check(
        dev,
        0,
        &mut buf,
        1,
        "what write_at stored at 0 is what read_at returns",
    )?;
    let (_, odd) = buf.split_at_mut(7000);
    write_and_check(dev, 513, odd, 2, "unaligned offsets and lengths read back")?;
    let last = buf.get_mut(..512).ok_or(fail("buffer"))?;
    write_and_check(dev, len - 512, last, 3, "the last block reads back")?;
    op("an empty write succeeds", dev.write_at(0, &[]))?;
    op("flush succeeds", dev.flush())?;

    // A read that does not fit is an error: a short read is never data.
    let mut tail = [0u8; 1024];
    if dev.read_at(len - 512, &mut tail).is_ok() {
        return Err(fail("a read crossing the end is an error"));
    }
    if dev.read_at(len, &mut tail).is_ok() {
        return Err(fail("a read past the end is an error"));
    }
    if dev.read_at(u64::MAX - 100, &mut tail).is_ok() {
        return Err(fail("a read at an offset near u64::MAX is an error"));
    }

    // Deallocated ranges read back as zeros; a device that cannot
    // deallocate says so and keeps the data.
    let mut chunk = [0u8; 8192];
    pattern(&mut chunk, 16384, 4);
    op("write before deallocate", dev.write_at(16384, &chunk))?;
    match dev.deallocate(16384, 8192) {
        Ok(()) => {
            op("read after deallocate", dev.read_at(16384, &mut chunk))?;
            if chunk.iter().any(|&b| b != 0) {
                return Err(fail("deallocated blocks read back as zeros"));
            }
            if let Some(e) = dev.extent(16384).map_err(|e| Failure {
                check: "extent after deallocate",
                error: Some(e),
            })? {
                if !e.deallocated {
                    return Err(fail("extent reports a deallocated range as such"));
                }
            }
        }
        Err(BlockError::Unsupported) => {
            let mut back = [0u8; 8192];
            op(
                "read after refused deallocate",
                dev.read_at(16384, &mut back),
            )?;
            if back != chunk {
                return Err(fail("a refused deallocate leaves the data alone"));
            }
        }
        Err(e) => {
            return Err(Failure {
                check: "deallocate succeeds or is Unsupported",
                error: Some(e),
            })
        }
    }
    match dev.extent(0) {
        Ok(Some(e)) if e.deallocated || e.len == 0 => {
            Err(fail("extent reports written data as mapped, len >= 1"))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(Failure {
            check: "extent of written data",
            error: Some(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::block::RamDisk;

    #[test]
    fn ram_disk_conforms() {
        let mut bytes = [0u8; 64 << 10];
        assert_eq!(run(&mut RamDisk(&mut bytes[..])), Ok(()));
    }

    #[test]
    fn a_device_that_returns_short_reads_as_data_does_not() {
        /// Zero-fills past its end instead of failing.
        struct Lenient([u8; 64 << 10]);
        impl BlockDevice for Lenient {
            fn len(&self) -> u64 {
                self.0.len() as u64
            }
            fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = usize::try_from(offset)
                        .ok()
                        .and_then(|o| self.0.get(o + i))
                        .copied()
                        .unwrap_or(0);
                }
                Ok(())
            }
            fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
                RamDisk(&mut self.0[..]).write_at(offset, data)
            }
            fn flush(&mut self) -> Result<(), BlockError> {
                Ok(())
            }
        }
        let r = run(&mut Lenient([0; 64 << 10]));
        assert_eq!(r.unwrap_err().check, "a read crossing the end is an error");
    }
}
