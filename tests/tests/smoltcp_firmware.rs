//! The bare-metal firmware (`firmware/virt-aarch64`: the smoltcp appliance
//! on QEMU `-M virt` aarch64 with virtio-net) boots a second VM: the x86
//! BIOS iPXE station on the same lab bridge gets its address, its script
//! and its disk (loaded into the firmware's RAM by QEMU) from the firmware,
//! to the MBR marker `SANBOOT-OK`.
//!
//! Two QEMU machines, both TCG: the firmware's tap is `tap1` on the bridge;
//! the bridge gives 192.0.2.1 up to the firmware.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sanboot_tests::lab::{ip, BRIDGE};
use sanboot_tests::process::Stop;
use sanboot_tests::{disk, peers, Boot, Lab, Station};

const FW_TAP: &str = "tap1";
/// Where the firmware expects its RAM disk (`DISK_ADDR` in its source).
const DISK_ADDR: &str = "0x48000000";

/// `$SANBOOT_FIRMWARE_BIN` (relative to the workspace root), otherwise
/// built with `cargo build --release` in `firmware/virt-aarch64`.
fn firmware() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SANBOOT_FIRMWARE_BIN") {
        return Ok(sanboot_tests::workspace_root().join(bin));
    }
    let dir = sanboot_tests::workspace_root().join("firmware");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release"])
        .current_dir(dir.join("virt-aarch64"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .context("cannot run cargo for the firmware")?;
    ensure!(
        status.success(),
        "building firmware/virt-aarch64 failed (rustup target add aarch64-unknown-none?)"
    );
    Ok(dir.join("target/aarch64-unknown-none/release/sanboot-virt-aarch64"))
}

#[test]
fn bios_station_sanboots_from_the_aarch64_firmware() -> Result<()> {
    let mut tools = sanboot_tests::BOOT_TOOLS.to_vec();
    tools.push("qemu-system-aarch64");
    sanboot_tests::require(&tools)?;
    let fw = firmware()?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("smoltcp_firmware")?;
    let _pcap = lab.capture()?;
    // 16 MiB: the firmware's DISK_SIZE.
    let disk = disk::build(lab.dir(), 16, false)?;
    let _ra = peers::router_advertisements(&lab)?;

    let n = lab.ns();
    let server = format!("{}/24", sanboot_tests::SERVER);
    ip(&["-n", n, "addr", "del", &server, "dev", BRIDGE])?;
    ip(&["-n", n, "tuntap", "add", "dev", FW_TAP, "mode", "tap"])?;
    ip(&["-n", n, "link", "set", FW_TAP, "master", BRIDGE])?;
    ip(&["-n", n, "link", "set", FW_TAP, "up"])?;

    let serial = lab.path("firmware-serial.log");
    let argv: Vec<String> = [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "cortex-a53",
        "-m",
        "256",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        &fw.display().to_string(),
        "-netdev",
        &format!("tap,id=n0,ifname={FW_TAP},script=no,downscript=no"),
        "-device",
        "virtio-net-device,netdev=n0,mac=02:00:00:5b:00:01",
        "-device",
        &format!(
            "loader,file={},addr={DISK_ADDR},force-raw=on",
            disk.path.display()
        ),
        "-serial",
        &format!("file:{}", serial.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut qemu = lab.spawn("firmware-qemu", &argv, Stop::Kill)?;
    let read_serial = || std::fs::read_to_string(&serial).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(30);
    while !read_serial().contains("sanboot firmware serving") {
        if let Some(status) = qemu.exited() {
            bail!(
                "firmware QEMU exited ({status}):\n{}\n{}",
                qemu.log_tail(20),
                read_serial()
            );
        }
        if Instant::now() >= end {
            bail!("the firmware did not start within 30 s:\n{}", read_serial());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    let took = station
        .wait_for("SANBOOT-OK", Duration::from_secs(180))
        .with_context(|| format!("firmware serial log:\n{}", read_serial()))?;
    sanboot_tests::record_timing("smoltcp_firmware bios-rom", took);
    let console = station.console();
    sanboot_tests::assert_in_order(&console, &disk.expected_lines())?;
    let log = read_serial();
    ensure!(
        log.contains("iscsi login from"),
        "the firmware logged no iSCSI login:\n{log}"
    );
    println!("firmware log:\n{log}");
    Ok(())
}
