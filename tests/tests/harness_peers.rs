//! The harness checked against the reference peers of
//! `shared/peers/ipxe-boot` (dnsmasq for DHCP and TFTP, tgt for iSCSI):
//! if this passes while a sanboot test fails, the fault is in sanboot.

use std::time::Duration;

use anyhow::{Context, Result};
use sanboot_tests::{disk, one_station_at_a_time, peers, sanboot, Boot, Lab, Station};

#[test]
fn bios_station_boots_the_test_disk_from_dnsmasq_and_tgt() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = one_station_at_a_time();
    let lab = Lab::new("harness_peers")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    let root = sanboot::tftp_root(&lab)?;
    std::fs::write(
        root.join("boot.ipxe"),
        format!(
            "#!ipxe\nsanboot iscsi:{}:::1:{}\n",
            sanboot_tests::SERVER,
            sanboot_tests::TARGET_IQN
        ),
    )?;
    let _tgt = peers::Tgt::start(&lab, &disk.path)?;
    let dnsmasq = peers::reference_dhcp_tftp(&lab, &root)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(60))
        .with_context(|| format!("dnsmasq log:\n{}", dnsmasq.log_tail(30)))?;
    sanboot_tests::record_timing("harness_peers bios-rom", took);
    sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
    Ok(())
}

#[test]
fn uefi_station_boots_the_hybrid_disk_from_dnsmasq_and_tgt() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["mkfs.vfat", "mcopy", "/usr/share/OVMF/OVMF_CODE_4M.fd"])?;
    let _one = one_station_at_a_time();
    let lab = Lab::new("harness_peers_uefi")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, true)?;
    let root = sanboot::tftp_root(&lab)?;
    std::fs::write(
        root.join("boot.ipxe"),
        format!(
            "#!ipxe\nsanboot iscsi:{}:::1:{}\n",
            sanboot_tests::SERVER,
            sanboot_tests::TARGET_IQN
        ),
    )?;
    let _tgt = peers::Tgt::start(&lab, &disk.path)?;
    let dnsmasq = peers::reference_dhcp_tftp(&lab, &root)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;
    let took = station
        .wait_for("SANBOOT-OK (UEFI)", Duration::from_secs(180))
        .with_context(|| format!("dnsmasq log:\n{}", dnsmasq.log_tail(30)))?;
    sanboot_tests::record_timing("harness_peers uefi edk2-pxe", took);
    Ok(())
}
