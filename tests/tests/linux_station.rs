//! A real Linux station (issue 8): Debian 12 with its root on sanboot's
//! target, booted three ways, each twice. The boot counter the station's
//! init keeps on its root must read 1, then 2 (a write made on boot 1 is
//! read on boot 2), the kernel's own initiator must have logged in, and
//! the file system must be clean afterwards (`e2fsck -n`).
//!
//! - GRUB on the disk: iPXE `sanboot`s it, GRUB loads kernel and initrd
//!   through iPXE's INT 13h, the initramfs (initramfs-tools + open-iscsi)
//!   logs in again with the keys in `grub.cfg`.
//! - `boot = "kernel"`, `initramfs = "initramfs-tools"`: kernel and initrd
//!   over TFTP, the disk on the command line in Debian's keys as sanboot
//!   writes them.
//! - `initramfs = "ibft"`: iPXE `sanhook`s the disk, publishing it in the
//!   iBFT, and Debian's initramfs (`iscsi_auto`) logs in from the table.
//!
//! A fourth test runs the seed's install step from the booted guest with
//! the kernel's initiator: discovery, login to a second target that
//! requires CHAP and CRC32C digests, `iscsiadm -m session -P3`,
//! `mkfs.ext4`, a checksum written and read back, `e2fsck -n`.
//!
//! Ignored by `cargo test`: the first run builds the disk image
//! (`sanboot_tests::linux_disk`, minutes and ~200 MB of Debian packages)
//! and each boot takes about a minute under TCG. `cargo xtask e2e linux`
//! runs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sanboot_tests::linux_disk::{self, LinuxDisk, Spec, MARKER};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Boot, Lab, Sanboot, Station};

/// The kernel command line a `kernel` host adds after sanboot's keys.
const CMDLINE: &str = "root=LABEL=sanroot ro console=ttyS0,115200 init=/sbin/sanboot-init";

fn prerequisites() -> Result<LinuxDisk> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["mmdebstrap", "mkfs.ext4", "sfdisk", "e2fsck"])?;
    linux_disk::cached(&Spec::lab())
}

/// The `[[target]]` with `image` as LUN 0 and the station's `[[host]]`
/// with `host_keys`.
fn host_toml(image: &Path, host_keys: &str) -> String {
    let iqn = sanboot_tests::TARGET_IQN;
    format!(
        "[[target]]\niqn = \"{iqn}\"\n\n[[target.lun]]\nid = 0\nimage = \"{}\"\n\n\
         [[host]]\nmac = \"{}\"\nhostname = \"station1\"\ntarget = \"{iqn}\"\nlun = 0\n{host_keys}\n",
        image.display(),
        sanboot_tests::STATION_MAC,
    )
}

/// A `kernel` host for `initramfs`, its kernel and initrd in the TFTP root.
fn kernel_host(lab: &Lab, linux: &LinuxDisk, image: &Path, initramfs: &str) -> Result<String> {
    let tftp = sanboot::tftp_root(lab)?;
    std::fs::copy(&linux.kernel, tftp.join("vmlinuz"))?;
    std::fs::copy(&linux.initrd, tftp.join("initrd.img"))?;
    let server = sanboot_tests::SERVER;
    Ok(host_toml(
        image,
        &format!(
            "boot = \"kernel\"\ninitramfs = \"{initramfs}\"\n\
             kernel = \"tftp://{server}/vmlinuz\"\ninitrd = \"tftp://{server}/initrd.img\"\n\
             cmdline = \"{CMDLINE}\"\n"
        ),
    ))
}

/// Boots the station twice with `host` and checks both boots and the disk.
fn boot_twice(lab: &Lab, image: &Path, host: &str) -> Result<()> {
    let _ra = peers::router_advertisements(lab)?;
    let config = sanboot::config(lab, DhcpMode::Full, host);
    let sanboot = Sanboot::start(lab, &config)?;
    for boot in 1..=2 {
        let mut station = Station::start_with_memory(lab, Boot::BiosRom, 512)?;
        let took = station
            .wait_for(&format!("{MARKER} {boot}:"), Duration::from_secs(400))
            .with_context(|| format!("boot {boot}; sanboot log:\n{}", sanboot.log_tail(40)))?;
        sanboot_tests::record_timing(&format!("{} boot {boot}", lab.test()), took);
        let console = station.console();
        std::fs::write(lab.path(&format!("serial-boot{boot}.log")), &console)?;
        // The kernel's own initiator made the disk (the station has no
        // other): iscsi_tcp names its host when iscsistart logs in.
        ensure!(
            console.contains("iSCSI Initiator over TCP/IP"),
            "boot {boot}: the kernel never logged in over iSCSI:\n{console}"
        );
        drop(station);
    }
    drop(sanboot);
    // The init left the root read-only before the station was killed.
    let out = Command::new("e2fsck")
        .arg("-n")
        .arg(format!("{}?offset=1048576", image.display()))
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

/// A fresh copy of the cached disk in the lab.
fn disk_copy(lab: &Lab, linux: &LinuxDisk) -> Result<std::path::PathBuf> {
    let image = lab.path("linux.img");
    std::fs::copy(&linux.image, &image).context("cannot copy the cached Linux disk")?;
    Ok(image)
}

#[test]
#[ignore = "builds a Debian disk image and boots Linux twice under TCG; cargo xtask e2e linux"]
fn debian_boots_twice_from_grub_on_the_iscsi_disk() -> Result<()> {
    let linux = prerequisites()?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_grub")?;
    let _pcap = lab.capture()?;
    let image = disk_copy(&lab, &linux)?;
    sanboot::tftp_root(&lab)?;
    boot_twice(&lab, &image, &host_toml(&image, "boot = \"sanboot\"\n"))
}

#[test]
#[ignore = "builds a Debian disk image and boots Linux twice under TCG; cargo xtask e2e linux"]
fn debian_boots_twice_from_the_kernel_form_with_initramfs_tools_keys() -> Result<()> {
    let linux = prerequisites()?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_kernel")?;
    let _pcap = lab.capture()?;
    let image = disk_copy(&lab, &linux)?;
    let host = kernel_host(&lab, &linux, &image, "initramfs-tools")?;
    boot_twice(&lab, &image, &host)
}

#[test]
#[ignore = "builds a Debian disk image and boots Linux twice under TCG; cargo xtask e2e linux"]
fn debian_boots_twice_from_the_ibft_ipxe_publishes() -> Result<()> {
    let linux = prerequisites()?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_ibft")?;
    let _pcap = lab.capture()?;
    let image = disk_copy(&lab, &linux)?;
    let host = kernel_host(&lab, &linux, &image, "ibft")?;
    boot_twice(&lab, &image, &host)
}

/// The target the install step formats: CHAP and CRC32C digests required.
const INSTALL_IQN: &str = "iqn.2024-01.test.e2e:install";
const INSTALL_USER: &str = "installer";
const INSTALL_SECRET: &str = "install-secret-16";

#[test]
#[ignore = "builds a Debian disk image and boots Linux under TCG; cargo xtask e2e linux"]
fn linux_initiator_installs_onto_a_chap_target_with_digests() -> Result<()> {
    let linux = prerequisites()?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_install")?;
    let _pcap = lab.capture()?;
    let image = disk_copy(&lab, &linux)?;
    let server = sanboot_tests::SERVER;
    let host = kernel_host(&lab, &linux, &image, "initramfs-tools")?.replace(
        CMDLINE,
        &format!(
            "{CMDLINE} sanboot.install={server},{INSTALL_IQN},{INSTALL_USER},{INSTALL_SECRET}"
        ),
    );
    let install = format!(
        "[[target]]\niqn = \"{INSTALL_IQN}\"\ndigest = \"required\"\n\
         chap = {{ user = \"{INSTALL_USER}\", secret = \"{INSTALL_SECRET}\" }}\n\n\
         [[target.lun]]\nid = 0\nimage = \"{}\"\nsize = 67108864\n\n",
        lab.path("install.img").display()
    );
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &format!("{install}{host}"));
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start_with_memory(&lab, Boot::BiosRom, 512)?;
    let took = station
        .wait_for("SANBOOT-INSTALL written", Duration::from_secs(500))
        .with_context(|| format!("sanboot log:\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing("linux_install", took);
    let console = station.console();
    std::fs::write(lab.path("serial-install.log"), &console)?;
    ensure!(
        !console.contains("SANBOOT-INSTALL FAILED"),
        "a step of the install failed:\n{console}"
    );
    // iscsiadm -m session -P3: the negotiated digests and the disk.
    for want in [
        INSTALL_IQN,
        "HeaderDigest: CRC32C",
        "DataDigest: CRC32C",
        "Attached scsi disk sdb",
    ] {
        ensure!(
            console.contains(want),
            "no {want:?} on the console:\n{console}"
        );
    }
    let line = console
        .lines()
        .find(|l| l.contains("SANBOOT-INSTALL written"))
        .context("no install line")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let (written, read) = (field("written"), field("read"));
    ensure!(
        written.is_some_and(|w| w.len() == 64) && written == read,
        "the checksum read back differs from the one written: {line}"
    );
    ensure!(
        field("fsck") == Some("clean"),
        "e2fsck -n in the guest: {line}"
    );
    Ok(())
}

/// The GRUB flow against the reference peers (dnsmasq for DHCP and TFTP,
/// tgt for iSCSI, the image on tgt's LUN 1), for a side-by-side time; the
/// root is found by its label, so tgt's controller LUN 0 does not matter.
#[test]
#[ignore = "builds a Debian disk image and boots Linux under TCG; cargo xtask e2e linux"]
fn debian_boots_from_grub_on_tgt_for_comparison() -> Result<()> {
    let linux = prerequisites()?;
    sanboot_tests::require(&["tgtd", "tgtadm"])?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("linux_grub_tgt")?;
    let _pcap = lab.capture()?;
    let image = disk_copy(&lab, &linux)?;
    let root = sanboot::tftp_root(&lab)?;
    std::fs::write(
        root.join("boot.ipxe"),
        format!(
            "#!ipxe\nsanboot iscsi:{}:::1:{}\n",
            sanboot_tests::SERVER,
            sanboot_tests::TARGET_IQN
        ),
    )?;
    let _ra = peers::router_advertisements(&lab)?;
    let _tgt = peers::Tgt::start(&lab, &image)?;
    let dnsmasq = peers::reference_dhcp_tftp(&lab, &root)?;
    let mut station = Station::start_with_memory(&lab, Boot::BiosRom, 512)?;
    let took = station
        .wait_for(&format!("{MARKER} 1:"), Duration::from_secs(400))
        .with_context(|| format!("dnsmasq log:\n{}", dnsmasq.log_tail(30)))?;
    sanboot_tests::record_timing("linux_grub_tgt boot 1", took);
    std::fs::write(lab.path("serial-boot1.log"), station.console())?;
    Ok(())
}
