//! `cargo xtask demo [linux|bios|uefi] [--timeout S]`: the whole appliance
//! in a namespace lab. sanboot serves full DHCP, TFTP, the generated script
//! and the iSCSI disk; a QEMU station boots from it while its serial
//! console is streamed here, until the disk says it is up, or Ctrl-C.
//! `linux` (the default) boots Debian 12 from GRUB on the iSCSI disk with
//! its root on sanboot (`sanboot_tests::linux_disk`, built and cached on
//! first use); `bios` and `uefi` boot the small marker disk of the tests.
//! Everything (processes, namespace) is removed on the way out.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, linux_disk, peers, serial, Boot, Lab, Sanboot, Station};

use crate::{setup, util};

pub fn run(args: &[String]) -> Result<()> {
    let mut uefi = false;
    let mut linux = true;
    let mut timeout = 300u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "linux" => linux = true,
            "bios" => (uefi, linux) = (false, false),
            "uefi" => (uefi, linux) = (true, false),
            "--timeout" => {
                timeout = match it.next().map(|s| s.parse()) {
                    Some(Ok(n)) => n,
                    _ => bail!("--timeout needs a number of seconds"),
                }
            }
            other => {
                bail!("cargo xtask demo: unknown argument {other:?} (linux|bios|uefi|--timeout S)")
            }
        }
    }
    // The demo needs the packages only, not ci's rust targets.
    setup::ensure_packages()?;
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let linux_disk = if linux {
        println!("demo: the Debian station's disk (built once, a few minutes, then cached)");
        Some(linux_disk::cached(&linux_disk::Spec::lab())?)
    } else {
        None
    };
    let bin = util::build_sanboot()?;
    std::env::set_var("SANBOOT_BIN", &bin);
    if std::env::var_os("SANBOOT_LOG").is_none() {
        std::env::set_var("SANBOOT_LOG", "info");
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())
                .context("cannot install the Ctrl-C handler")?;
        }
    }

    let lab = Lab::new("demo")?;

    let _pcap = lab.capture()?;
    let image = match &linux_disk {
        Some(l) => {
            let image = lab.path("linux.img");
            std::fs::copy(&l.image, &image).context("cannot copy the Debian disk")?;
            image
        }
        None => disk::build(lab.dir(), 16, uefi)?.path,
    };
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let config = sanboot::config(&lab, DhcpMode::Full, &sanboot_tests::sanboot_host(&image));
    let sanboot = Sanboot::start(&lab, &config)?;
    println!(
        "demo: namespace {} (bridge br0 192.0.2.1/24), sanboot serving full DHCP, TFTP, scripts and iSCSI",
        lab.ns()
    );
    println!("demo: config and logs in {}", lab.dir().display());
    println!("demo: sanboot script for the station:");
    if let Ok(out) = std::process::Command::new(&bin)
        .args(["script", "--config"])
        .arg(lab.path("sanboot.toml"))
        .args(["--mac", sanboot_tests::STATION_MAC])
        .output()
    {
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let boot = if uefi { Boot::UefiPxe } else { Boot::BiosRom };
    let marker = if linux {
        linux_disk::MARKER
    } else if uefi {
        "SANBOOT-OK (UEFI)"
    } else {
        "SANBOOT-OK"
    };
    println!(
        "demo: powering on station {} ({}); its serial console follows. Ctrl-C stops.\n",
        sanboot_tests::STATION_MAC,
        if uefi {
            "OVMF, EDK2 PXE"
        } else if linux {
            "SeaBIOS, iPXE ROM -> GRUB on the iSCSI disk -> Debian 12, root on sanboot"
        } else {
            "SeaBIOS, iPXE ROM"
        }
    );
    // A real Linux unpacks its initramfs into RAM.
    let station = Station::start_with_memory(&lab, boot, if linux { 512 } else { 256 })?;

    let outcome = stream_console(&lab, &station, marker, &stop, Duration::from_secs(timeout));
    println!();
    match &outcome {
        Ok(took) => {
            println!(
            "demo: the station booted its disk from sanboot in {:.1} s (power-on to {marker:?}{})",
            took.as_secs_f64(),
            if linux { ", a shell on its console" } else { "" }
        )
        }
        Err(e) => println!("demo: {e:#}\nsanboot log:\n{}", sanboot.log_tail(30)),
    }
    println!("demo: tearing down");
    drop(station);
    drop(sanboot);
    drop(lab);
    outcome.map(|_| ())
}

/// Copies the serial log to stdout as it grows, until the marker, a fatal
/// console message, QEMU's exit, Ctrl-C or the timeout.
fn stream_console(
    lab: &Lab,
    station: &Station,
    marker: &str,
    stop: &AtomicBool,
    timeout: Duration,
) -> Result<Duration> {
    let path = lab.path("serial.log");
    let start = Instant::now();
    let mut offset = 0u64;
    let mut seen = Vec::new();
    let mut out = std::io::stdout();
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
            seen.extend_from_slice(&buf);
        }
        let text = serial::clean(&seen);
        // The marker's whole line has arrived.
        if text
            .find(marker)
            .and_then(|at| text.get(at..))
            .is_some_and(|rest| rest.contains('\n'))
        {
            return Ok(station.uptime());
        }
        if let Some(f) = serial::fatal_in(&text) {
            bail!("the boot failed: the console shows {f:?}");
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if start.elapsed() > timeout {
            bail!("no {marker:?} within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
