//! Harness for sanboot's end-to-end tests: network namespaces, QEMU
//! stations, peer daemons and sanboot itself, each started by PID and torn
//! down by its guard's `Drop`.
//!
//! A test builds a [`Lab`] (namespace + bridge + tap), starts [`Sanboot`]
//! and the peers it needs inside it, then a [`Station`], and waits for a
//! marker on the station's serial console. Guards drop in reverse order of
//! declaration, so declare the lab first.
//!
//! These tests need root, QEMU and the Debian packages `.ci/run` installs;
//! when something is missing they fail with a message saying what.

pub mod disk;
pub mod lab;
pub mod libiscsi;
pub mod linux_disk;
pub mod peers;
pub mod process;
pub mod sanboot;
pub mod serial;
pub mod station;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Result};

pub use disk::TestDisk;
pub use lab::Lab;
pub use process::Process;
pub use sanboot::Sanboot;
pub use station::{Boot, Identity, Station};

/// sanboot's address on the lab bridge (TEST-NET-1, never routed).
pub const SERVER: &str = "192.0.2.1";
/// The "home router" of the ProxyDHCP tests.
pub const ROUTER: &str = "192.0.2.254";
/// The station's MAC address.
pub const STATION_MAC: &str = "52:54:00:e2:e0:01";
/// The same MAC as iPXE's `${mac:hexhyp}` prints it.
pub const STATION_MAC_HYP: &str = "52-54-00-e2-e0-01";
/// SMBIOS UUID of the station (DHCP option 97, iPXE's default initiator name).
pub const STATION_UUID: &str = "5e2e0000-0000-4000-8000-525400e2e001";
/// The iSCSI target the station boots from.
pub const TARGET_IQN: &str = "iqn.2024-01.test.e2e:sanboot";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory (e2e work directories live under `e2e/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Fails unless we are root and every tool is on `PATH` (or is an existing path).
pub fn require(tools: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    let uid = Command::new("id").arg("-u").output();
    let root = uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        missing.push("root (network namespaces and tap devices)".to_string());
    }
    for tool in tools {
        let found = if tool.starts_with('/') {
            std::path::Path::new(tool).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found {
            missing.push((*tool).to_string());
        }
    }
    if !missing.is_empty() {
        bail!(
            "e2e prerequisites missing: {} (run as root on a machine prepared by .ci/run)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Tools every QEMU boot test needs.
pub const BOOT_TOOLS: &[&str] = &[
    "ip",
    "setpriv",
    "qemu-system-x86_64",
    "dnsmasq",
    "nasm",
    "/usr/lib/ipxe/qemu/pxe-e1000.rom",
];

/// One QEMU station at a time per test binary: TCG is CPU-bound and the
/// CI machine has two cores, so parallel boots only make every timeout tight.
pub fn one_station_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Appends `name seconds` to `target/e2e/timings.txt` and prints it.
pub fn record_timing(name: &str, took: Duration) {
    let line = format!("{name} {:.2}", took.as_secs_f64());
    println!("e2e timing: {line} s");
    let dir = target_dir().join("e2e");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("timings.txt");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&line);
    text.push('\n');
    let _ = std::fs::write(path, text);
}

/// Fails unless every one of `lines` appears in `text`, in this order.
pub fn assert_in_order(text: &str, lines: &[String]) -> Result<()> {
    let mut rest = text;
    for line in lines {
        match rest.find(line.as_str()) {
            Some(pos) => rest = rest.get(pos + line.len()..).unwrap_or_default(),
            None => bail!(
                "expected {line:?} (in order) on the console; console:\n{}",
                process::tail(text, 40)
            ),
        }
    }
    Ok(())
}

/// What the station prints when its chain reaches the end: the `done-…`
/// file of [`write_done_script`] runs `echo` with iPXE's `${mac:hexhyp}`.
pub const DONE_MARKER: &str = "E2E-CHAIN-DONE 52-54-00-e2-e0-01";

/// Writes `done-52-54-00-e2-e0-01` into the TFTP root: the file the
/// per-MAC script of [`chain_host`] chains to.
pub fn write_done_script(tftp_root: &std::path::Path) -> Result<()> {
    std::fs::write(
        tftp_root.join(format!("done-{STATION_MAC_HYP}")),
        "#!ipxe\necho E2E-CHAIN-DONE ${mac:hexhyp}\n",
    )?;
    Ok(())
}

/// The `[[host]]` of the DHCP tests: the station's generated script chains
/// to `tftp://192.0.2.1/done-${mac:hexhyp}`.
pub fn chain_host() -> String {
    format!(
        "[[host]]\nmac = \"{STATION_MAC}\"\nhostname = \"station1\"\nboot = \"chain\"\n\
         chain = \"tftp://{SERVER}/done-${{mac:hexhyp}}\"\n"
    )
}

/// The iSCSI target of the SAN boot tests: `image` as LUN 0 (the LUN the
/// seed's `iscsi:<ip>::::<iqn>` form means), and the station booting it.
pub fn sanboot_host(image: &std::path::Path) -> String {
    format!(
        "[[target]]\niqn = \"{TARGET_IQN}\"\n\n[[target.lun]]\nid = 0\nimage = \"{}\"\n\n\
         [[host]]\nmac = \"{STATION_MAC}\"\nhostname = \"station1\"\nboot = \"sanboot\"\n\
         target = \"{TARGET_IQN}\"\nlun = 0\n",
        image.display()
    )
}

/// The files of the seed chain after `boot.ipxe`, in the order the station
/// fetches them: `default.ipxe`, its per-MAC script, the final `done-…`.
pub fn seed_chain_files() -> Vec<String> {
    vec![
        "default.ipxe".into(),
        format!("{STATION_MAC_HYP}.ipxe"),
        format!("done-{STATION_MAC_HYP}"),
    ]
}

/// Fails unless iPXE reports each file of [`seed_chain_files`] fetched
/// (`<url>... ok` on its console), in order.
pub fn assert_seed_chain(console: &str) -> Result<()> {
    let fetched: Vec<&str> = console
        .lines()
        .filter(|l| l.trim_end().ends_with("... ok"))
        .collect();
    let mut rest = fetched.as_slice();
    for f in seed_chain_files() {
        match rest.iter().position(|l| l.contains(f.as_str())) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => bail!(
                "the console shows no fetch of {f:?} (in order); its fetches:\n{}",
                fetched.join("\n")
            ),
        }
    }
    Ok(())
}

/// Fails unless the console shows an address from the lab's pool
/// (192.0.2.100–150) configured on net0.
pub fn assert_pool_address(console: &str) -> Result<String> {
    for line in console.lines() {
        if let Some(rest) = line.trim().strip_prefix("net0: 192.0.2.") {
            let host: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if host.parse::<u8>().is_ok_and(|h| (100..=150).contains(&h)) {
                return Ok(format!("192.0.2.{host}"));
            }
        }
    }
    bail!("the console shows no net0 address from 192.0.2.100-150")
}
