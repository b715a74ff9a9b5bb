//! Full DHCP: sanboot is the only DHCP server on the LAN. A BIOS station
//! whose NIC ROM is iPXE gets its address and `boot.ipxe` from sanboot,
//! follows the seed chain `boot.ipxe` → `default.ipxe` →
//! `52-54-00-e2-e0-01.ipxe` over sanboot's TFTP, and its generated script
//! (`boot = "chain"`) fetches `done-52-54-00-e2-e0-01`, which prints a marker.

use std::time::Duration;

use anyhow::{Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Boot, Lab, Sanboot, Station};

#[test]

fn bios_ipxe_boots_its_per_mac_script_from_full_dhcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("boot_full_dhcp")?;
    let _pcap = lab.capture()?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::chain_host());
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(90))
        .with_context(|| format!("sanboot log (last 40 lines):\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing("boot_full_dhcp bios-rom", took);

    let console = station.console();
    let address = sanboot_tests::assert_pool_address(&console)?;
    sanboot_tests::assert_seed_chain(&console)?;
    // sanboot's own log shows the same requests (one line per boot step).
    let mut files = vec!["boot.ipxe".to_string()];
    files.extend(sanboot_tests::seed_chain_files());
    sanboot.assert_tftp_requests(&files)?;
    println!(
        "station got {address}; sanboot served {:?}",
        sanboot.tftp_requests()
    );
    Ok(())
}
