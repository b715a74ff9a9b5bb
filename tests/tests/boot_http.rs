//! HTTP boot: with `[http] listen` set, a BIOS station whose NIC ROM is iPXE
//! gets `http://192.0.2.1/boot.ipxe` from sanboot's full DHCP and walks the
//! whole seed chain over sanboot's HTTP server — `boot.ipxe` →
//! `default.ipxe` → `52-54-00-e2-e0-01.ipxe` → `done-…` — and the last
//! script downloads a 16 MiB file (a stand-in for an initrd) before it
//! prints the marker. Not one TFTP request is made.
//!
//! The same in ProxyDHCP mode beside a router; and OVMF's own UEFI HTTP
//! boot fetching `ipxe.efi` from sanboot. With `[http] images`, a
//! station `sanboot`s a read-only LUN image over HTTP (iPXE's HTTP SAN reads
//! it with range requests) instead of iSCSI.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{
    disk, peers, Boot, Lab, Sanboot, Station, SERVER, STATION_MAC, STATION_MAC_HYP, TARGET_IQN,
};

const BLOB_LEN: usize = 16 << 20;

#[test]
fn bios_ipxe_fetches_its_scripts_and_a_big_file_over_http() -> Result<()> {
    chain_over_http(DhcpMode::Full, "boot_http")
}

/// The same beside a router (plain DHCP from dnsmasq): the http:// file name
/// comes in sanboot's ProxyDHCP offer.
#[test]
fn bios_ipxe_fetches_everything_over_http_via_proxy_dhcp() -> Result<()> {
    chain_over_http(DhcpMode::Proxy, "boot_http_proxy")
}

fn chain_over_http(mode: DhcpMode, name: &str) -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let mut lab = Lab::new(name)?;
    let _pcap = lab.capture()?;
    let _router = match mode {
        DhcpMode::Proxy => {
            let ns = lab.add_router(sanboot_tests::ROUTER)?;
            Some(peers::plain_dhcp(&lab, &ns)?)
        }
        DhcpMode::Full => None,
    };
    let root = sanboot::tftp_root(&lab)?;
    // The file a kernel boot would fetch; imgfetch fails unless all of it arrives.
    let blob: Vec<u8> = (0..BLOB_LEN).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("blob-16m"), &blob)?;
    // Relative names: they resolve against the script's own http:// URI.
    std::fs::write(
        root.join(format!("done-{STATION_MAC_HYP}")),
        "#!ipxe\nimgfetch blob-16m && echo E2E-CHAIN-DONE ${mac:hexhyp}\n",
    )?;
    let _ra = peers::router_advertisements(&lab)?;
    let host = format!(
        "[http]\nlisten = \"{SERVER}:80\"\n\n\
         [[host]]\nmac = \"{STATION_MAC}\"\nhostname = \"station1\"\nboot = \"chain\"\n\
         chain = \"done-${{mac:hexhyp}}\"\n"
    );
    let config = sanboot::config(&lab, mode, &host);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(120))
        .with_context(|| format!("sanboot log (last 40 lines):\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing(&format!("{name} bios-rom"), took);

    let files = [
        "boot.ipxe".to_string(),
        "default.ipxe".into(),
        format!("{STATION_MAC_HYP}.ipxe"),
        format!("done-{STATION_MAC_HYP}"),
        "blob-16m".into(),
    ];
    // iPXE's console shows each fetch as it named it: the first two as
    // absolute http:// URLs (DHCP's file, boot.ipxe's chain), the rest relative.
    let console = station.console();
    // A slow download shows progress first: `blob-16m... 55%\x08\x08\x08\x08 ok`.
    let fetched: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("... ") && l.trim_end().ends_with(" ok"))
        .collect();
    let mut rest = fetched.as_slice();
    for (i, f) in files.iter().enumerate() {
        let shown = match i {
            0 | 1 => format!("http://{SERVER}/{f}"),
            _ => f.clone(),
        };
        match rest.iter().position(|l| l.contains(&shown)) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => bail!(
                "the console shows no fetch of {shown} (in order); its fetches:\n{}",
                fetched.join("\n")
            ),
        }
    }
    // sanboot served every one of them over HTTP, in order, whole...
    let log = sanboot.log();
    let served: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HTTP GET 200 bytes 0+"))
        .collect();
    let mut rest = served.as_slice();
    for f in &files {
        let path = format!("path=/{f}");
        match rest.iter().position(|l| l.contains(&path)) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => bail!(
                "sanboot logged no HTTP GET of /{f} (in order):\n{}",
                served.join("\n")
            ),
        }
    }
    let sent = format!("HTTP GET 200 bytes 0+{BLOB_LEN} of {BLOB_LEN}");
    if !served
        .iter()
        .any(|l| l.contains(&sent) && l.contains("path=/blob-16m"))
    {
        bail!(
            "sanboot did not log {sent:?} for /blob-16m:\n{}",
            served.join("\n")
        );
    }
    // ...and nothing by TFTP.
    let tftp = sanboot.tftp_requests();
    if !tftp.is_empty() {
        bail!("TFTP requests although HTTP is on: {tftp:?}");
    }
    Ok(())
}

#[test]
fn bios_ipxe_sanboots_a_read_only_image_over_http() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("boot_http_san")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    let root = sanboot::tftp_root(&lab)?;
    let url = format!("http://{SERVER}/images/{TARGET_IQN}/0");
    std::fs::write(
        root.join("san-http.ipxe"),
        format!("#!ipxe\nsanboot {url}\n"),
    )?;
    let _ra = peers::router_advertisements(&lab)?;
    let rest = format!(
        "[http]\nlisten = \"{SERVER}:80\"\nimages = true\n\n\
         [[target]]\niqn = \"{TARGET_IQN}\"\n\n[[target.lun]]\nid = 0\nimage = \"{}\"\nread_only = true\n\n\
         [[host]]\nmac = \"{STATION_MAC}\"\nhostname = \"station1\"\nboot = \"chain\"\n\
         chain = \"san-http.ipxe\"\n",
        disk.path.display()
    );
    let config = sanboot::config(&lab, DhcpMode::Full, &rest);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::BiosRom)?;

    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| format!("sanboot log (last 40 lines):\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing("boot_http sanboot-http bios-rom", took);
    // The MBR printed what it read through INT 13h: the sectors came by HTTP.
    sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
    let log = sanboot.log();
    let ranges = log
        .lines()
        // iPXE percent-encodes the IQN's ':' (the log shows the raw path).
        .filter(|l| l.contains("HTTP GET 206") && l.contains("path=/images/iqn.2024-01.test.e2e"))
        .count();
    if ranges == 0 {
        bail!(
            "no range request for the image in sanboot's log:\n{}",
            sanboot.log_tail(40)
        );
    }
    if log.contains("iscsi login") {
        bail!("the station logged in over iSCSI although it booted over HTTP");
    }
    println!("{ranges} range requests served the HTTP SAN boot");
    Ok(())
}

/// UEFI HTTP boot: OVMF's own HTTPv4 boot option (EDK2 HttpBootDxe, after
/// its PXEv4 and PXEv6 options fail: this host's PXE file does not exist)
/// asks DHCP as `HTTPClient`, gets `http://192.0.2.1/ipxe.efi` with
/// `HTTPClient` echoed (EDK2 ignores an offer without it), downloads iPXE
/// over HTTP, and that iPXE walks the chain over HTTP too.
#[test]
fn uefi_http_boot_gets_ipxe_efi_from_sanboot() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("boot_http_uefi")?;
    let _pcap = lab.capture()?;
    let root = sanboot::tftp_root(&lab)?;
    sanboot_tests::write_done_script(&root)?;
    let _ra = peers::router_advertisements(&lab)?;
    let host = format!(
        "[http]\nlisten = \"{SERVER}:80\"\n\n\
         [[host]]\nmac = \"{STATION_MAC}\"\nhostname = \"station1\"\nboot = \"chain\"\n\
         chain = \"done-${{mac:hexhyp}}\"\nboot_file = \"no-such-file.efi\"\n"
    );
    let config = sanboot::config(&lab, DhcpMode::Full, &host);
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;

    let took = station
        .wait_for(sanboot_tests::DONE_MARKER, Duration::from_secs(300))
        .with_context(|| format!("sanboot log (last 40 lines):\n{}", sanboot.log_tail(40)))?;
    sanboot_tests::record_timing("boot_http_uefi uefi-http", took);
    // OVMF says which boot option ran and the URL DHCP gave it.
    sanboot_tests::assert_in_order(
        &station.console(),
        &[
            ">>Start HTTP Boot over IPv4".to_string(),
            format!("URI: http://{SERVER}/ipxe.efi"),
            format!("http://{SERVER}/boot.ipxe... ok"),
        ],
    )?;
    let log = sanboot.log();
    if !log
        .lines()
        .any(|l| l.contains("HTTP GET 200") && l.contains("path=/ipxe.efi"))
    {
        bail!(
            "ipxe.efi did not go out over HTTP:\n{}",
            sanboot.log_tail(40)
        );
    }
    if !log.lines().any(|l| l.contains("HTTP boot arch 16")) {
        bail!(
            "no DHCP reply to an HTTP boot client:\n{}",
            sanboot.log_tail(40)
        );
    }
    Ok(())
}
