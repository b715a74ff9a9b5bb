//! The smoltcp appliance (`sanboot-smoltcp --tap`) serves the same boot as
//! `sanboot serve`: a BIOS iPXE station on the lab bridge gets its address
//! (full DHCP) and follows the seed chain `boot.ipxe` → `default.ipxe` →
//! `52-54-00-e2-e0-01.ipxe` → `done-…` over smoltcp's TFTP.
//!
//! smoltcp owns 192.0.2.1 on its own tap (`tap1`, enslaved to the bridge),
//! so the lab's bridge gives that address up first; the kernel's stack takes
//! no part in the boot. The second test boots the station's disk from
//! smoltcp's iSCSI target to the MBR marker.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sanboot_tests::lab::{ip, BRIDGE};
use sanboot_tests::process::{Process, Stop};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, peers, Boot, Lab, Station};

const SMOLTCP_TAP: &str = "tap1";

/// `$SANBOOT_SMOLTCP_BIN` (relative to the workspace root), otherwise
/// built once with `cargo build -p sanboot-smoltcp-tap`.
fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SANBOOT_SMOLTCP_BIN") {
        return Ok(sanboot_tests::workspace_root().join(bin));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "sanboot-smoltcp-tap",
                    "--bin",
                    "sanboot-smoltcp",
                ])
                .current_dir(sanboot_tests::workspace_root())
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("cargo build -p sanboot-smoltcp-tap failed".into());
            }
            Ok(sanboot_tests::target_dir()
                .join("debug")
                .join("sanboot-smoltcp"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Moves 192.0.2.1 from the lab bridge to smoltcp: a tap on the bridge
/// with `sanboot-smoltcp` behind it, started from `config_toml`.
fn start_smoltcp(lab: &Lab, config_toml: &str) -> Result<Process> {
    let bin = binary()?;
    let n = lab.ns();
    let server = format!("{}/24", sanboot_tests::SERVER);
    ip(&["-n", n, "addr", "del", &server, "dev", BRIDGE])?;
    ip(&["-n", n, "tuntap", "add", "dev", SMOLTCP_TAP, "mode", "tap"])?;
    ip(&["-n", n, "link", "set", SMOLTCP_TAP, "master", BRIDGE])?;
    ip(&["-n", n, "link", "set", SMOLTCP_TAP, "up"])?;
    let config_path = lab.path("sanboot.toml");
    std::fs::write(&config_path, config_toml)?;
    let argv = [
        bin.display().to_string(),
        "--tap".into(),
        SMOLTCP_TAP.into(),
        "--config".into(),
        config_path.display().to_string(),
    ];
    let mut server = lab.spawn("sanboot-smoltcp", &argv, Stop::Term)?;
    let end = Instant::now() + Duration::from_secs(15);
    while !server.log().contains("sanboot-smoltcp serving") {
        if let Some(status) = server.exited() {
            bail!(
                "sanboot-smoltcp exited at start ({status}):\n{}",
                server.log_tail(40)
            );
        }
        if Instant::now() >= end {
            bail!("sanboot-smoltcp did not start:\n{}", server.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

#[test]
fn bios_ipxe_boots_its_per_mac_script_from_smoltcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("smoltcp_boot")?;
    let _pcap = lab.capture()?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::chain_host());
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(90))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}",
                server.log_tail(40)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_boot bios-rom", took);

    let console = station.console();
    let address = sanboot_tests::assert_pool_address(&console)?;
    sanboot_tests::assert_seed_chain(&console)?;
    let requests = sanboot::tftp_requests(&server.log());
    let mut want = vec!["boot.ipxe".to_string()];
    want.extend(sanboot_tests::seed_chain_files());
    sanboot::assert_requests_in_order("sanboot-smoltcp", &requests, &want)?;
    println!("station got {address} from smoltcp; it served {requests:?}");
    Ok(())
}

/// ProxyDHCP beside a home router: the router hands out the address,
/// smoltcp answers on 67 and 4011 with the boot file, then serves the chain.
#[test]
fn bios_ipxe_boots_its_per_mac_script_via_smoltcp_proxy_dhcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("smoltcp_proxy")?;
    let _pcap = lab.capture()?;
    let router_ns = lab.add_router(sanboot_tests::ROUTER)?;
    let router = peers::plain_dhcp(&lab, &router_ns)?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Proxy, &sanboot_tests::chain_host());
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(90))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}\nrouter log:\n{}",
                server.log_tail(40),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_proxy bios-rom", took);
    let console = station.console();
    let address = sanboot_tests::assert_pool_address(&console)?;
    ensure!(
        router.log().contains(&format!("DHCPACK(eth0) {address}")),
        "the router's log shows no DHCPACK of {address}:\n{}",
        router.log_tail(20)
    );
    sanboot_tests::assert_seed_chain(&console)?;
    ensure!(
        server.log().contains("ProxyDHCP"),
        "sanboot-smoltcp logged no ProxyDHCP reply:\n{}",
        server.log_tail(40)
    );
    Ok(())
}

/// EDK2's PXE client beside a router: it takes its address from the
/// router, asks smoltcp's ProxyDHCP on 4011 (a unicast reply, after ARP)
/// and fetches `ipxe.efi`, then iPXE walks the chain.
#[test]
fn uefi_pxe_gets_ipxe_efi_via_smoltcp_proxy_dhcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("smoltcp_proxy_uefi")?;
    let _pcap = lab.capture()?;
    let router_ns = lab.add_router(sanboot_tests::ROUTER)?;
    let router = peers::plain_dhcp(&lab, &router_ns)?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Proxy, &sanboot_tests::chain_host());
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::UefiPxe)?;
    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(180))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}\nrouter log:\n{}",
                server.log_tail(40),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_proxy edk2-pxe", took);
    let console = station.console();
    sanboot_tests::assert_pool_address(&console)?;
    sanboot_tests::assert_seed_chain(&console)?;
    let requests = sanboot::tftp_requests(&server.log());
    ensure!(
        requests.first().is_some_and(|r| r.ends_with("ipxe.efi")),
        "the first RRQ was not ipxe.efi: {requests:?}"
    );
    Ok(())
}

/// OVMF's own PXE client (a plain PXE client) gets `ipxe.efi` (about a
/// megabyte, real TFTP windows and block sizes) from smoltcp, then iPXE
/// walks the seed chain.
#[test]
fn uefi_pxe_gets_ipxe_efi_then_its_script_from_smoltcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("smoltcp_uefi")?;
    let _pcap = lab.capture()?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::chain_host());
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::UefiPxe)?;
    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(180))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}",
                server.log_tail(40)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_uefi edk2-pxe", took);
    let console = station.console();
    sanboot_tests::assert_seed_chain(&console)?;
    let requests = sanboot::tftp_requests(&server.log());
    ensure!(
        requests.first().is_some_and(|r| r.ends_with("ipxe.efi")),
        "the first RRQ was not ipxe.efi: {requests:?}"
    );
    let log = server.log();
    ensure!(
        log.lines().any(|l| l.contains("ended: Some(Complete)")
            && l.contains("bytes acked")
            && !l.contains(" 0 of ")),
        "no completed transfer in the log:\n{}",
        server.log_tail(40)
    );
    Ok(())
}

/// The whole boot from smoltcp: DHCP, the seed chain, and `sanboot` from
/// smoltcp's iSCSI target; the disk's MBR reads sectors through iPXE's
/// INT 13h and prints them, then `SANBOOT-OK`.
#[test]
fn bios_ipxe_sanboots_the_test_disk_from_smoltcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("smoltcp_iscsi")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &sanboot_tests::sanboot_host(&disk.path),
    );
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(120))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}",
                server.log_tail(40)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_iscsi bios-rom", took);
    let console = station.console();
    sanboot_tests::assert_in_order(&console, &disk.expected_lines())?;
    ensure!(
        console.contains(&format!("e2e-mbr sectors=0x{:016x}", disk.sectors)),
        "INT 13h AH=48h did not report {} sectors",
        disk.sectors
    );
    ensure!(
        server.log().contains("iscsi login from"),
        "sanboot-smoltcp logged no iSCSI login:\n{}",
        server.log_tail(40)
    );
    Ok(())
}

/// Per-station CHAP on smoltcp, in proxy mode beside the "home router":
/// the appliance learns the station's address from its DHCPREQUEST to the
/// router, serves it (only) its script with its own `[host.chap]` secret,
/// and the station logs in to a target that lists only its initiator name.
#[test]
fn bios_ipxe_sanboots_with_its_own_secret_from_smoltcp_via_proxy_dhcp() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new("smoltcp_station_chap")?;
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
    let server = start_smoltcp(&lab, &config)?;

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(120))
        .with_context(|| {
            format!(
                "sanboot-smoltcp log (last 40 lines):\n{}\nrouter log:\n{}",
                server.log_tail(40),
                router.log_tail(20)
            )
        })?;
    sanboot_tests::record_timing("smoltcp_station_chap bios-rom proxy", took);
    sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
    let log = server.log();
    ensure!(
        log.contains("DHCP: station 52:54:00:e2:e0:01 takes"),
        "the appliance did not learn the station's address:\n{}",
        server.log_tail(40)
    );
    ensure!(
        !log.contains("carries a CHAP secret"),
        "the station was refused its own script:\n{}",
        server.log_tail(40)
    );
    ensure!(
        log.lines().any(|l| l.contains("iscsi login from")
            && l.contains(&initiator)
            && l.ends_with("auth=CHAP")),
        "the login was not authenticated with the station's CHAP:\n{}",
        server.log_tail(40)
    );
    Ok(())
}
