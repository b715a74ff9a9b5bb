//! The network namespace a test runs in: a bridge with sanboot's address and
//! a tap for QEMU, optionally a second namespace (a "home router") joined to
//! the bridge by a veth pair. Nothing is ever created in the caller's own
//! network namespace. `Drop` deletes the namespaces, which removes every
//! interface in them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{Process, Stop};

/// The bridge inside the lab namespace.
pub const BRIDGE: &str = "br0";
/// The tap QEMU opens (enslaved to the bridge).
pub const TAP: &str = "tap0";
/// The router namespace's end of the veth pair.
pub const ROUTER_IF: &str = "eth0";

const NS_PREFIX: &str = "sb-e2e-";

/// A lab: namespace `sb-e2e-<test>-<pid>` and the work directory
/// `target/e2e/<test>/` (emptied at start, kept afterwards for inspection).
#[derive(Debug)]
pub struct Lab {
    test: String,
    ns: String,
    dir: PathBuf,
    routers: Vec<String>,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        bail!(
            "ip {} failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// Creates the namespace, the bridge (192.0.2.1/24 and fd00:e2e::1/64 so
    /// that router advertisements can be answered) and the tap.
    pub fn new(test: &str) -> Result<Lab> {
        crate::require(&["ip", "setpriv"])?;
        remove_stale_namespaces();
        let ns = format!("{NS_PREFIX}{test}-{}", std::process::id());
        let dir = crate::target_dir().join("e2e").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        ip(&["netns", "add", &ns])?;
        let lab = Lab {
            test: test.to_string(),
            ns,
            dir,
            routers: Vec::new(),
        };
        let n = lab.ns.as_str();
        let server = format!("{}/24", crate::SERVER);
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            n,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", n, "addr", "add", &server, "dev", BRIDGE])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            "fd00:e2e::1/64",
            "dev",
            BRIDGE,
            "nodad",
        ])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ip(&["-n", n, "link", "set", TAP, "master", BRIDGE])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        ip(&["-n", n, "link", "set", BRIDGE, "up"])?;
        Ok(lab)
    }

    /// One more tap on the bridge, for a second station (see
    /// `station::Identity::nth`).
    pub fn add_tap(&self, name: &str) -> Result<()> {
        let n = self.ns.as_str();
        ip(&["-n", n, "tuntap", "add", "dev", name, "mode", "tap"])?;
        ip(&["-n", n, "link", "set", name, "master", BRIDGE])?;
        ip(&["-n", n, "link", "set", name, "up"])
    }

    /// The lab's namespace name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The test name the lab was created for.
    pub fn test(&self) -> &str {
        &self.test
    }

    /// The work directory (configs, logs, disk image, TFTP root).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the work directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Adds namespace `<ns>-r` joined to the bridge by a veth pair, with
    /// `address`/24 on its `eth0`: the home router of the ProxyDHCP tests.
    /// Returns the new namespace's name.
    pub fn add_router(&mut self, address: &str) -> Result<String> {
        let r = format!("{}-r", self.ns);
        ip(&["netns", "add", &r])?;
        self.routers.push(r.clone());
        let n = self.ns.as_str();
        ip(&["-n", &r, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", n, "link", "add", "vr0", "type", "veth", "peer", "name", ROUTER_IF, "netns", &r,
        ])?;
        ip(&["-n", n, "link", "set", "vr0", "master", BRIDGE])?;
        ip(&["-n", n, "link", "set", "vr0", "up"])?;
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            ROUTER_IF,
        ])?;
        ip(&["-n", &r, "link", "set", ROUTER_IF, "up"])?;
        Ok(r)
    }

    /// With `SANBOOT_E2E_PCAP=1` in the environment: tshark capturing the
    /// bridge into `<dir>/capture.pcap` until dropped. Otherwise `None`.
    pub fn capture(&self) -> Result<Option<Process>> {
        if std::env::var_os("SANBOOT_E2E_PCAP").is_none_or(|v| v == "0") {
            return Ok(None);
        }
        crate::require(&["tshark"])?;
        let pcap = self.path("capture.pcap").display().to_string();
        let argv = ["tshark", "-q", "-i", BRIDGE, "-F", "pcap", "-w", &pcap];
        let tshark = self.spawn("tshark", &argv, Stop::Term)?;
        // Packets sent before tshark says "Capturing on" are lost.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !tshark.log().contains("Capturing on") {
            if std::time::Instant::now() >= end {
                bail!("tshark did not start:\n{}", tshark.log_tail(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Some(tshark))
    }

    /// Starts `argv` inside the lab namespace; output goes to `<dir>/<name>.log`.
    pub fn spawn<S: AsRef<OsStr>>(&self, name: &str, argv: &[S], stop: Stop) -> Result<Process> {
        self.spawn_in(&self.ns.clone(), name, argv, stop)
    }

    /// Starts `argv` inside namespace `ns` (the lab's or one of its routers).
    pub fn spawn_in<S: AsRef<OsStr>>(
        &self,
        ns: &str,
        name: &str,
        argv: &[S],
        stop: Stop,
    ) -> Result<Process> {
        Process::spawn(ns, name, argv, &self.path(&format!("{name}.log")), stop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for r in self.routers.drain(..) {
            let _ = ip(&["netns", "del", &r]);
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Deletes `sb-e2e-*-<pid>` namespaces whose creating process is gone
/// (a test run that was killed before its guards could drop).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let rest = rest.strip_suffix("-r").unwrap_or(rest);
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
