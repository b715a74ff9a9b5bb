//! Golden images (issue 9): two Debian stations boot one golden image at
//! the same time, each through its own copy-on-write overlay, twice.
//!
//! Station "keeper" is `persistent`, station "cafe" is `volatile`. Each
//! boot's init counts the boot on its root and leaves a file named after
//! its station (`sanboot.mark=` on the kernel command line), then lists
//! every such file it finds. So:
//! - boot 1: each counts 1 and sees only its own file (neither sees the
//!   other's writes, though both wrote to "the same" image at once);
//! - boot 2: keeper counts 2 (its overlay was kept), cafe counts 1 again
//!   (its overlay was discarded when it booted anew);
//! - the golden image's bytes never change.
//!
//! The stations boot the `kernel` form (Debian's initramfs-tools keys on the
//! command line): the disk's own GRUB configuration names one fixed target,
//! while each station of an image has a target of its own.
//!
//! Ignored by `cargo test` like the other Linux stations: `cargo xtask e2e
//! linux` runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sanboot_tests::linux_disk::{self, Spec, MARKER};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Identity, Lab, Sanboot, Station};

const CMDLINE: &str = "root=LABEL=sanroot ro console=ttyS0,115200 init=/sbin/sanboot-init";

/// (hostname, mode, what boot 2 must count)
const STATIONS: [(&str, &str, u32); 2] = [("keeper", "persistent", 2), ("cafe", "volatile", 1)];

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[test]
#[ignore = "builds a Debian disk image and boots two Linux stations twice under TCG; cargo xtask e2e linux"]
fn two_stations_boot_one_golden_image_each_on_its_own_overlay() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["mmdebstrap", "mkfs.ext4", "sfdisk", "sha256sum"])?;
    let linux = linux_disk::cached(&Spec::lab())?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("golden_image")?;
    lab.add_tap("tap1")?;
    let _pcap = lab.capture()?;
    let _ra = peers::router_advertisements(&lab)?;
    let tftp = sanboot::tftp_root(&lab)?;
    std::fs::copy(&linux.kernel, tftp.join("vmlinuz"))?;
    std::fs::copy(&linux.initrd, tftp.join("initrd.img"))?;
    let golden = lab.path("golden.img");
    std::fs::copy(&linux.image, &golden).context("cannot copy the cached Linux disk")?;
    let golden_sum = sha256(&golden)?;

    let server = sanboot_tests::SERVER;
    let mut rest = format!(
        "[[image]]\nname = \"debian\"\nfile = \"{}\"\n",
        golden.display()
    );
    for (i, (name, mode, _)) in STATIONS.iter().enumerate() {
        let id = Identity::nth(i as u8 + 1);
        rest.push_str(&format!(
            "\n[[host]]\nmac = \"{}\"\nhostname = \"{name}\"\nimage = \"debian\"\nmode = \"{mode}\"\n\
             boot = \"kernel\"\ninitramfs = \"initramfs-tools\"\n\
             kernel = \"tftp://{server}/vmlinuz\"\ninitrd = \"tftp://{server}/initrd.img\"\n\
             cmdline = \"{CMDLINE} sanboot.mark={name}\"\n",
            id.mac
        ));
    }
    let config = sanboot::config(&lab, DhcpMode::Full, &rest);
    let sanboot = Sanboot::start(&lab, &config)?;

    for boot in 1..=2u32 {
        // Both power on together: the boot storm in miniature.
        let mut stations = Vec::new();
        for i in 0..STATIONS.len() {
            let id = Identity::nth(i as u8 + 1);
            stations.push(Station::start_as(
                &lab,
                sanboot_tests::Boot::BiosRom,
                512,
                &id,
            )?);
        }
        for (station, (name, _, second)) in stations.iter_mut().zip(STATIONS) {
            let count = if boot == 1 { 1 } else { second };
            let took = station
                .wait_for(&format!("{MARKER} {count}:"), Duration::from_secs(600))
                .with_context(|| {
                    format!(
                        "{name}, boot {boot}; sanboot log:\n{}",
                        sanboot.log_tail(40)
                    )
                })?;
            sanboot_tests::record_timing(&format!("golden_image {name} boot {boot}"), took);
            let console = station.console();
            std::fs::write(lab.path(&format!("serial-{name}-boot{boot}.log")), &console)?;
            // Only its own file: the other station's writes went to the
            // other overlay, and a volatile station's old ones are gone.
            let marks = format!("SANBOOT-LINUX marks: {name}.");
            ensure!(
                console.contains(&marks),
                "{name}, boot {boot}: expected {marks:?} on the console:\n{console}"
            );
            ensure!(
                console.contains("iSCSI Initiator over TCP/IP"),
                "{name}, boot {boot}: the kernel never logged in over iSCSI:\n{console}"
            );
        }
        drop(stations);
    }
    drop(sanboot);
    ensure!(
        sha256(&golden)? == golden_sum,
        "the golden image changed while stations wrote to their overlays"
    );
    Ok(())
}
