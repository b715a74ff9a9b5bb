//! A diskless station: `qemu-system-x86_64 -accel tcg` on the lab's tap,
//! with its COM1 written to a file that the test polls.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::{Lab, TAP};
use crate::process::{tail, Process, Stop};
use crate::serial;

/// The station's firmware and NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// SeaBIOS, e1000 with QEMU's iPXE ROM (`pxe-e1000.rom`): the client
    /// is iPXE from the first DHCPDISCOVER.
    BiosRom,
    /// OVMF (q35), virtio-net without option ROM: OVMF's own EDK2 PXE
    /// client (a plain PXE client, arch 7) has to be given `ipxe.efi`.
    UefiPxe,
    /// OVMF with QEMU's iPXE EFI ROM on an e1000 (`efi-e1000.rom`).
    UefiIpxeRom,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Boot {
    /// Files this mode needs besides QEMU itself.
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            Boot::BiosRom => &["/usr/lib/ipxe/qemu/pxe-e1000.rom"],
            Boot::UefiPxe => &[OVMF_CODE, OVMF_VARS],
            Boot::UefiIpxeRom => &[OVMF_CODE, OVMF_VARS, "/usr/lib/ipxe/qemu/efi-e1000.rom"],
        }
    }
}

/// Which machine a station is: its NIC's MAC, the tap it plugs into, its
/// SMBIOS UUID and the name of its serial log in the lab.
#[derive(Debug, Clone)]
pub struct Identity {
    pub mac: String,
    pub tap: String,
    pub uuid: String,
    pub serial: String,
}

impl Identity {
    /// The lab's one station (`STATION_MAC` on `tap0`).
    pub fn first() -> Identity {
        Identity {
            mac: crate::STATION_MAC.into(),
            tap: TAP.into(),
            uuid: crate::STATION_UUID.into(),
            serial: "serial.log".into(),
        }
    }

    /// Station `n` (1-based; 1 is [`Identity::first`]): MAC
    /// `52:54:00:e2:e0:0n`, tap `tap<n-1>` (see `Lab::add_tap`).
    pub fn nth(n: u8) -> Identity {
        if n <= 1 {
            return Identity::first();
        }
        Identity {
            mac: format!("52:54:00:e2:e0:{n:02x}"),
            tap: format!("tap{}", n - 1),
            uuid: format!("5e2e0000-0000-4000-8000-525400e2e0{n:02x}"),
            serial: format!("serial-{n}.log"),
        }
    }
}

/// A running station. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Station {
    qemu: Process,
    serial: PathBuf,
    started: Instant,
}

impl Station {
    /// Powers the station on in `lab` (256 MiB of RAM).
    pub fn start(lab: &Lab, boot: Boot) -> Result<Station> {
        Station::start_with_memory(lab, boot, 256)
    }

    /// [`Station::start`] with `mib` MiB of RAM: a real Linux unpacks its
    /// initramfs into memory.
    pub fn start_with_memory(lab: &Lab, boot: Boot, mib: u32) -> Result<Station> {
        Station::start_as(lab, boot, mib, &Identity::first())
    }

    /// [`Station::start_with_memory`] as machine `id`: several stations at
    /// once, each on its own tap.
    pub fn start_as(lab: &Lab, boot: Boot, mib: u32, id: &Identity) -> Result<Station> {
        crate::require(&["qemu-system-x86_64"])?;
        crate::require(boot.needs())?;
        let serial = lab.path(&id.serial);
        let mac = id.mac.as_str();
        let mut args: Vec<String> = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            &mib.to_string(),
            // -nographic makes SeaBIOS mirror iPXE's text console to COM1.
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
            "-uuid",
            &id.uuid,
            "-netdev",
            &format!("tap,id=n0,ifname={},script=no,downscript=no", id.tap),
            "-serial",
            &format!("file:{}", serial.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match boot {
            Boot::BiosRom => {
                args.push("-device".into());
                args.push(format!(
                    "e1000,netdev=n0,mac={mac},romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom"
                ));
                args.push("-boot".into());
                args.push("n".into());
            }
            Boot::UefiPxe | Boot::UefiIpxeRom => {
                let vars = lab.path(&format!("OVMF_VARS-{}.fd", id.tap));
                std::fs::copy(OVMF_VARS, &vars).context("cannot copy the OVMF variable store")?;
                args.push("-machine".into());
                args.push("q35".into());
                args.push("-drive".into());
                args.push(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ));
                args.push("-drive".into());
                args.push(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
                // No PXE over IPv6: the lab has no DHCPv6 server, and OVMF
                // would wait out its solicits before an HTTP boot option.
                args.push("-fw_cfg".into());
                args.push("name=opt/org.tianocore/IPv6PXESupport,string=no".into());
                args.push("-device".into());
                args.push(if boot == Boot::UefiPxe {
                    // romfile= (empty) keeps iPXE out: EDK2's PXE does the first boot.
                    format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1")
                } else {
                    format!(
                        "e1000,netdev=n0,mac={mac},romfile=/usr/lib/ipxe/qemu/efi-e1000.rom,bootindex=1"
                    )
                });
            }
        }
        std::fs::write(
            lab.path(&format!("qemu-{}.cmdline", id.tap)),
            args.join(" "),
        )?;
        let qemu = lab.spawn("qemu", &args, Stop::Kill)?;
        Ok(Station {
            qemu,
            serial,
            started: Instant::now(),
        })
    }

    /// The serial console so far, escapes stripped.
    pub fn console(&self) -> String {
        serial::clean(&std::fs::read(&self.serial).unwrap_or_default())
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the console shows `marker` (on a complete line) and
    /// returns the time since power-on. Fails at once on a fatal console
    /// string or QEMU exiting, and after `timeout`; the error holds the
    /// console's last lines.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Duration> {
        let end = self.started + timeout;
        loop {
            let text = self.console();
            if let Some(pos) = text.find(marker) {
                if text.get(pos..).is_some_and(|rest| rest.contains('\n')) {
                    return Ok(self.started.elapsed());
                }
            }
            let why = if let Some(f) = serial::fatal_in(&text) {
                format!("the console shows {f:?}")
            } else if let Some(status) = self.qemu.exited() {
                format!("QEMU exited ({status}): {}", self.qemu.log_tail(10))
            } else if Instant::now() >= end {
                format!("no {marker:?} within {} s", timeout.as_secs())
            } else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            bail!(
                "station: {why} after {:.1} s; serial console (last 60 lines):\n{}",
                self.started.elapsed().as_secs_f64(),
                tail(&text, 60)
            );
        }
    }
}
