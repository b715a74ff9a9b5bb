//! `cargo xtask linux-disk`: builds (or finds cached) the real Linux
//! station's disk image (`sanboot_tests::linux_disk`) and prints its path.
//! A first step towards booting a real OS from sanboot in the demo and in
//! CI; nothing boots it yet.

use anyhow::{bail, Result};
use sanboot_tests::linux_disk;

use crate::setup;

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("cargo xtask linux-disk takes no arguments (got {a:?})");
    }
    setup::ensure_packages()?;
    let spec = linux_disk::Spec::lab();
    let disk = linux_disk::cached(&spec)?;
    println!(
        "linux disk: {} (root on LUN 0 of {} at {}, initiator {}); kernel {}, initrd {}",
        disk.image.display(),
        spec.target_iqn,
        spec.server,
        spec.initiator_iqn,
        disk.kernel.display(),
        disk.initrd.display()
    );
    Ok(())
}
