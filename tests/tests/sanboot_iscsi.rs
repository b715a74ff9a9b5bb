//! A station boots from sanboot alone: its DHCP, TFTP, generated script and
//! its own iSCSI target. The disk's boot code (tests/assets/mbr.asm) reads
//! sectors through iPXE's INT 13h emulation (8 at once, the last LBA, a CHS
//! read) and prints what it read, then `SANBOOT-OK`; under UEFI,
//! `\EFI\BOOT\BOOTX64.EFI` on the same disk prints `SANBOOT-OK (UEFI)`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, peers, Boot, Lab, Sanboot, Station};

/// Logs shown when a boot fails: sanboot's, with its iSCSI lines.
fn sanboot_context(sanboot: &Sanboot) -> String {
    format!("sanboot log (last 60 lines):\n{}", sanboot.log_tail(60))
}

#[test]
fn bios_rom_sanboots_the_test_disk() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_bios_rom")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &sanboot_tests::sanboot_host(&disk.path),
    );
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| sanboot_context(&sanboot))?;
    sanboot_tests::record_timing("sanboot_iscsi bios-rom", took);
    let console = station.console();
    sanboot_tests::assert_in_order(&console, &disk.expected_lines())?;
    ensure!(
        console.contains(&format!("e2e-mbr sectors=0x{:016x}", disk.sectors)),
        "INT 13h AH=48h did not report {} sectors",
        disk.sectors
    );
    Ok(())
}

#[test]
fn bios_undionly_chain_sanboots_the_test_disk() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_bios_chain")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    let root = sanboot::tftp_root(&lab)?;
    // QEMU's BIOS NIC ROM is already iPXE, so sanboot rightly gives it the
    // script, never undionly.kpxe; and undionly.kpxe is the same iPXE build,
    // byte-identical in its DHCP options. The step script tells them apart
    // by driver: the ROM drives the e1000 itself ("82540em"), the chained
    // undionly.kpxe goes through the ROM's PXE API ("undionly").
    std::fs::write(
        root.join("chain-step.ipxe"),
        format!(
            "#!ipxe\n\
             iseq ${{net0/chip}} undionly && goto undi ||\n\
             chain tftp://{server}/undionly.kpxe\n\
             echo E2E-CHAIN-RETURNED\n\
             exit 1\n\
             :undi\n\
             sanboot iscsi:{server}::::{iqn}\n",
            server = sanboot_tests::SERVER,
            iqn = sanboot_tests::TARGET_IQN
        ),
    )?;
    let hosts = sanboot_tests::sanboot_host(&disk.path).replace(
        "boot = \"sanboot\"",
        &format!(
            "boot = \"chain\"\nchain = \"tftp://{}/chain-step.ipxe\"",
            sanboot_tests::SERVER
        ),
    );
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &hosts);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(120))
        .with_context(|| sanboot_context(&sanboot))?;
    sanboot_tests::record_timing("sanboot_iscsi bios-chain", took);
    let console = station.console();
    ensure!(
        console.contains("using undionly on"),
        "the disk was not booted by the chained undionly.kpxe; console:\n{}",
        sanboot_tests::process::tail(&console, 40)
    );
    ensure!(
        console.contains(&format!("tftp://{}/undionly.kpxe", sanboot_tests::SERVER)),
        "undionly.kpxe was not fetched from sanboot"
    );
    sanboot_tests::assert_in_order(&console, &disk.expected_lines())?;
    Ok(())
}

#[test]
fn uefi_pxe_sanboots_the_hybrid_disk() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["mkfs.vfat", "mmd", "mcopy"])?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_uefi")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, true)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &sanboot_tests::sanboot_host(&disk.path),
    );
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;

    let took = station
        .wait_for("SANBOOT-OK (UEFI)", Duration::from_secs(180))
        .with_context(|| sanboot_context(&sanboot))?;
    sanboot_tests::record_timing("sanboot_iscsi uefi edk2-pxe", took);
    Ok(())
}

/// The same BIOS boot with the target locked down: mutual CHAP (iPXE
/// proves itself with the secret its generated script sets, sanboot proves
/// itself back) and an initiator allow-list holding exactly the name the
/// script gives the station.
#[test]
fn bios_rom_sanboots_with_mutual_chap_and_an_allow_list() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_chap")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let initiator = format!(
        "iqn.2010-04.org.ipxe:station1-{}",
        sanboot_tests::STATION_MAC_HYP
    );
    let hosts = sanboot_tests::sanboot_host(&disk.path).replace(
        &format!("iqn = \"{}\"\n", sanboot_tests::TARGET_IQN),
        &format!(
            "iqn = \"{}\"\ninitiators = [\"{initiator}\"]\n\
             chap = {{ user = \"station1\", secret = \"e2e-secret-0123\", \
             mutual_user = \"sanboot\", mutual_secret = \"e2e-mutual-4567\" }}\n",
            sanboot_tests::TARGET_IQN
        ),
    );
    let config = sanboot::config(&lab, DhcpMode::Full, &hosts);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| sanboot_context(&sanboot))?;
    sanboot_tests::record_timing("sanboot_iscsi bios-rom mutual-chap", took);
    sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
    let login = sanboot.wait_log_line(&["login", &initiator], Duration::from_secs(5))?;
    ensure!(
        login.contains("CHAP"),
        "the login was not authenticated with CHAP: {login}"
    );
    Ok(())
}

/// A station that knows the wrong CHAP secret does not get the disk: iPXE
/// reports that it cannot open the SAN device, and the MBR never runs.
#[test]
fn bios_rom_with_a_wrong_chap_secret_is_refused() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_chap_refused")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    let root = sanboot::tftp_root(&lab)?;
    std::fs::write(
        root.join("wrong-secret.ipxe"),
        format!(
            "#!ipxe\nset username station1\nset password not-the-secret-9\n\
             sanboot iscsi:{}::::{}\n",
            sanboot_tests::SERVER,
            sanboot_tests::TARGET_IQN
        ),
    )?;
    let _ra = peers::router_advertisements(&lab)?;
    let hosts = sanboot_tests::sanboot_host(&disk.path)
        .replace(
            &format!("iqn = \"{}\"\n", sanboot_tests::TARGET_IQN),
            &format!(
                "iqn = \"{}\"\nchap = {{ user = \"station1\", secret = \"e2e-secret-0123\" }}\n",
                sanboot_tests::TARGET_IQN
            ),
        )
        .replace(
            "boot = \"sanboot\"",
            &format!(
                "boot = \"chain\"\nchain = \"tftp://{}/wrong-secret.ipxe\"",
                sanboot_tests::SERVER
            ),
        );
    let config = sanboot::config(&lab, DhcpMode::Full, &hosts);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let outcome = station.wait_for("SANBOOT-OK", Duration::from_secs(90));
    let console = station.console();
    ensure!(
        outcome.is_err() && !console.contains("SANBOOT-OK"),
        "the station booted the disk with a wrong CHAP secret"
    );
    ensure!(
        console.contains("Could not open SAN device"),
        "iPXE did not report the refused login; console:\n{}\n{}",
        sanboot_tests::process::tail(&console, 30),
        sanboot_context(&sanboot)
    );
    Ok(())
}

/// A 3 TiB (sparse) disk: more than 2^32 sectors, so iPXE has to use READ
/// CAPACITY(16) and READ(16), and the MBR's read of the last LBA goes
/// through INT 13h with a 64-bit sector number.
#[test]
fn bios_rom_sanboots_a_3_tib_disk() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_3tib")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 3 * 1024 * 1024, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &sanboot_tests::sanboot_host(&disk.path),
    );
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| sanboot_context(&sanboot))?;
    sanboot_tests::record_timing("sanboot_iscsi bios-rom 3-TiB", took);
    let console = station.console();
    sanboot_tests::assert_in_order(&console, &disk.expected_lines())?;
    ensure!(
        console.contains("e2e-mbr sectors=0x0000000180000000"),
        "INT 13h AH=48h did not report 0x180000000 sectors"
    );
    drop(station);
    drop(sanboot);
    // Sparse (12 KiB on disk), but its 3 TiB apparent size surprises tools.
    std::fs::remove_file(&disk.path)?;
    Ok(())
}
