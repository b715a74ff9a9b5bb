//! ProxyDHCP: a home router (dnsmasq in its own namespace, plain DHCP: no
//! PXE options) hands out the address; sanboot in proxy mode on the same LAN
//! adds only the boot information. The BIOS iPXE station combines both,
//! follows the seed chain over sanboot's TFTP and fetches its final file.

use std::time::Duration;

use anyhow::{Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{peers, Boot, Lab, Sanboot, Station};

#[test]

fn bios_ipxe_boots_its_per_mac_script_via_proxy_dhcp_beside_a_router() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("boot_proxy_dhcp")?;
    let _pcap = lab.capture()?;
    let router_ns = lab.add_router(sanboot_tests::ROUTER)?;
    let router = peers::plain_dhcp(&lab, &router_ns)?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Proxy, &sanboot_tests::chain_host());
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(90))
        .with_context(|| {
            format!(
                "sanboot log (last 40 lines):\n{}\nrouter dnsmasq log (last 20 lines):\n{}",
                sanboot.log_tail(40),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("boot_proxy_dhcp bios-rom", took);

    let console = station.console();
    // The address came from the router: sanboot in proxy mode has no pool.
    let address = sanboot_tests::assert_pool_address(&console)?;
    anyhow::ensure!(
        router.log().contains(&format!("DHCPACK(eth0) {address}")),
        "the router's log shows no DHCPACK of {address}:\n{}",
        router.log_tail(20)
    );
    sanboot_tests::assert_seed_chain(&console)?;
    let mut files = vec!["boot.ipxe".to_string()];
    files.extend(sanboot_tests::seed_chain_files());
    sanboot.assert_tftp_requests(&files)?;
    println!(
        "station got {address} from the router; sanboot served {:?}",
        sanboot.tftp_requests()
    );
    Ok(())
}

/// The same beside the router, for a UEFI machine: OVMF's EDK2 PXE client
/// combines the router's offer with sanboot's ProxyDHCP offer to find
/// `ipxe.efi`, and that iPXE then finds its script the same way.
#[test]
fn uefi_pxe_gets_ipxe_efi_via_proxy_dhcp_beside_a_router() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("boot_proxy_uefi")?;
    let _pcap = lab.capture()?;
    let router_ns = lab.add_router(sanboot_tests::ROUTER)?;
    let router = peers::plain_dhcp(&lab, &router_ns)?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Proxy, &sanboot_tests::chain_host());
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;

    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(180))
        .with_context(|| {
            format!(
                "sanboot log (last 40 lines):\n{}\nrouter dnsmasq log (last 20 lines):\n{}",
                sanboot.log_tail(40),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("boot_proxy_dhcp edk2-pxe", took);
    let console = station.console();
    sanboot_tests::assert_pool_address(&console)?;
    sanboot_tests::assert_seed_chain(&console)?;
    let mut files = vec!["ipxe.efi".to_string(), "boot.ipxe".to_string()];
    files.extend(sanboot_tests::seed_chain_files());
    sanboot.assert_tftp_requests(&files)?;
    Ok(())
}
