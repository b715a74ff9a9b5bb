//! Per-station CHAP with a real iPXE in ProxyDHCP mode beside a router:
//! the station's `[host.chap]` secret reaches iPXE in its generated script,
//! which sanboot serves only to the address the station used in its
//! ProxyDHCP request on port 4011, and iPXE logs in to the target (which
//! lists only that station's initiator name) with that secret.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, peers, Boot, Lab, Sanboot, Station};

#[test]
fn bios_ipxe_sanboots_with_its_own_secret_via_proxy_dhcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("station_chap")?;
    let _pcap = lab.capture()?;
    let router_ns = lab.add_router(sanboot_tests::ROUTER)?;
    let router = peers::plain_dhcp(&lab, &router_ns)?;
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
            "iqn = \"{}\"\ninitiators = [\"{initiator}\"]\n",
            sanboot_tests::TARGET_IQN
        ),
    ) + "[host.chap]\nuser = \"station1\"\nsecret = \"station1-own-secret\"\n";
    let config = sanboot::config(&lab, DhcpMode::Proxy, &hosts);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| {
            format!(
                "sanboot log (last 60 lines):\n{}\nrouter log (last 20 lines):\n{}",
                sanboot.log_tail(60),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("station_chap bios-rom proxy", took);
    sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
    let login = sanboot.wait_log_line(&["login", &initiator], Duration::from_secs(5))?;
    ensure!(
        login.contains("CHAP"),
        "the login was not authenticated with CHAP: {login}"
    );
    // The script went to the station's address only after its 4011 request.
    let log = sanboot.log_tail(400);
    ensure!(
        !log.contains("carries a CHAP secret"),
        "sanboot refused the station its own script:\n{log}"
    );
    Ok(())
}
