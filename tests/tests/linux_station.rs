//! A real Linux station (issue 8): Debian 12 with its root on sanboot's
//! target. iPXE `sanboot`s the disk, GRUB on the disk loads the kernel and
//! initrd through iPXE's INT 13h, the initramfs (initramfs-tools +
//! open-iscsi) logs in to sanboot again and mounts the root from it. The
//! station boots twice: the boot counter its init keeps on the root must
//! say 1, then 2, and the file system must be clean afterwards.
//!
//! Ignored by `cargo test`: the first run builds the disk image
//! (`sanboot_tests::linux_disk`, minutes and ~200 MB of Debian packages)
//! and each boot takes about a minute under TCG. `cargo xtask e2e linux`
//! runs it.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sanboot_tests::linux_disk::{self, Spec, MARKER};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Boot, Lab, Sanboot, Station};

#[test]
#[ignore = "builds a Debian disk image and boots Linux twice under TCG; cargo xtask e2e linux"]
fn debian_boots_twice_from_grub_on_the_iscsi_disk() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["mmdebstrap", "mkfs.ext4", "sfdisk", "e2fsck"])?;
    let image = linux_disk::cached(&Spec::lab())?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_station")?;
    let _pcap = lab.capture()?;
    let disk = lab.path("linux.img");
    std::fs::copy(&image, &disk).context("cannot copy the cached Linux disk")?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::sanboot_host(&disk));
    let sanboot = Sanboot::start(&lab, &config)?;

    for boot in 1..=2 {
        let mut station = Station::start_with_memory(&lab, Boot::BiosRom, 512)?;
        let took = station
            .wait_for(&format!("{MARKER} {boot}:"), Duration::from_secs(400))
            .with_context(|| format!("boot {boot}; sanboot log:\n{}", sanboot.log_tail(40)))?;
        sanboot_tests::record_timing(&format!("linux_station boot {boot}"), took);
        let console = station.console();
        // The kernel's own initiator made the disk (the station has no
        // other): iscsi_tcp names its host when iscsistart logs in.
        ensure!(
            console.contains("iSCSI Initiator over TCP/IP"),
            "boot {boot}: the kernel never logged in over iSCSI:\n{console}"
        );
        std::fs::write(lab.path(&format!("serial-boot{boot}.log")), &console)?;
        drop(station);
    }
    drop(sanboot);

    // The init left the root read-only before the station was killed.
    let out = Command::new("e2fsck")
        .arg("-n")
        .arg(format!("{}?offset=1048576", disk.display()))
        .output()
        .context("cannot run e2fsck")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("clean"),
        "e2fsck -n after two boots: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
