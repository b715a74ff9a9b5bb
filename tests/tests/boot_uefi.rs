//! UEFI: OVMF's own PXE client (EDK2, client arch 7, not iPXE) gets
//! `ipxe.efi` from sanboot (full DHCP + TFTP); that iPXE then gets the
//! script and follows the seed chain to the station's final file.

use std::time::Duration;

use anyhow::{Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Boot, Lab, Sanboot, Station};

#[test]

fn uefi_pxe_gets_ipxe_efi_then_its_per_mac_script() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("boot_uefi")?;
    let _pcap = lab.capture()?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::chain_host());
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;

    // OVMF's firmware phase alone takes 4-14 s under TCG; median boot 16 s.
    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(180))
        .with_context(|| format!("sanboot log (last 40 lines):\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing("boot_uefi edk2-pxe", took);

    let console = station.console();
    anyhow::ensure!(
        console.contains("iPXE initialising devices"),
        "ipxe.efi never started; console:\n{}",
        sanboot_tests::process::tail(&console, 40)
    );
    sanboot_tests::assert_pool_address(&console)?;
    sanboot_tests::assert_seed_chain(&console)?;
    // EDK2 fetched ipxe.efi from sanboot, then iPXE the seed chain.
    let mut files = vec!["ipxe.efi".to_string(), "boot.ipxe".to_string()];
    files.extend(sanboot_tests::seed_chain_files());
    sanboot.assert_tftp_requests(&files)?;
    Ok(())
}
