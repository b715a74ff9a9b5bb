//! Peer daemons the labs need besides sanboot, all dnsmasq with DNS off
//! (`--port=0`), an explicit empty config file (so `/etc/dnsmasq.conf` is
//! never read) and everything it writes inside the lab's work directory.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::lab::{Lab, BRIDGE, ROUTER_IF};
use crate::process::{Process, Stop};

fn dnsmasq_base(lab: &Lab, name: &str, interface: &str) -> Result<Vec<String>> {
    crate::require(&["dnsmasq"])?;
    let conf = lab.path(&format!("{name}.conf"));
    std::fs::write(&conf, "# empty: every option is on the command line\n")?;
    Ok(vec![
        "dnsmasq".into(),
        "--keep-in-foreground".into(),
        format!("--conf-file={}", conf.display()),
        format!("--pid-file={}", lab.path(&format!("{name}.pid")).display()),
        format!(
            "--dhcp-leasefile={}",
            lab.path(&format!("{name}.leases")).display()
        ),
        "--log-facility=-".into(),
        "--user=root".into(),
        "--port=0".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--interface={interface}"),
        "--bind-interfaces".into(),
    ])
}

fn started(mut p: Process) -> Result<Process> {
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = p.exited() {
        bail!(
            "{} exited at start ({status}):\n{}",
            p.name(),
            p.log_tail(20)
        );
    }
    Ok(p)
}

/// Router advertisements only (no DHCP): iPXE waits for every configurator,
/// and without an RA its IPv6 autoconfiguration adds about 16 s to each boot.
pub fn router_advertisements(lab: &Lab) -> Result<Process> {
    let mut argv = dnsmasq_base(lab, "ra", BRIDGE)?;
    argv.push("--enable-ra".into());
    argv.push("--dhcp-range=fd00:e2e::,ra-only,64".into());
    started(lab.spawn("ra", &argv, Stop::Term)?)
}

/// The home router of the ProxyDHCP tests: plain DHCP in namespace `ns`
/// (from [`Lab::add_router`]), addresses only, no PXE options, no ping
/// before offering (which would delay each OFFER by about 3 s).
pub fn plain_dhcp(lab: &Lab, ns: &str) -> Result<Process> {
    let mut argv = dnsmasq_base(lab, "router-dhcp", ROUTER_IF)?;
    argv.extend([
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,10m".to_string(),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--log-dhcp".into(),
    ]);
    started(lab.spawn_in(ns, "router-dhcp", &argv, Stop::Term)?)
}

/// The reference setup of `shared/peers/ipxe-boot`: dnsmasq as full DHCP +
/// TFTP server (with RAs) on the lab bridge. Plain PXE clients get
/// `undionly.kpxe` or `ipxe.efi`, iPXE gets `boot.ipxe` from `tftp_root`.
/// Used to check the harness itself against known-good peers.
pub fn reference_dhcp_tftp(lab: &Lab, tftp_root: &std::path::Path) -> Result<Process> {
    let mut argv = dnsmasq_base(lab, "ref-dnsmasq", BRIDGE)?;
    argv.extend([
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,10m".to_string(),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        "--log-dhcp".into(),
        "--enable-ra".into(),
        "--dhcp-range=fd00:e2e::,ra-only,64".into(),
        "--enable-tftp".into(),
        format!("--tftp-root={}", tftp_root.display()),
        "--dhcp-userclass=set:ipxe,iPXE".into(),
        "--dhcp-match=set:efi64,option:client-arch,7".into(),
        "--dhcp-match=set:efi64,option:client-arch,9".into(),
        "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe".into(),
        "--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi".into(),
        "--dhcp-boot=tag:ipxe,boot.ipxe".into(),
        "--dhcp-option=tag:ipxe,encap:175,176,1b".into(),
    ]);
    started(lab.spawn("ref-dnsmasq", &argv, Stop::Term)?)
}

/// tgtd serving `image` as LUN 1 of [`crate::TARGET_IQN`] (tgt's LUN 0 is
/// its controller). Dropping it kills tgtd (it ignores SIGTERM while a
/// session is open) and removes its control socket.
#[derive(Debug)]
pub struct Tgt {
    process: Process,
    port: u16,
}

impl Tgt {
    /// Starts tgtd in the lab on 192.0.2.1:3260 and configures the target.
    pub fn start(lab: &Lab, image: &std::path::Path) -> Result<Tgt> {
        crate::require(&["tgtd", "tgtadm"])?;
        std::fs::create_dir_all("/var/run/tgtd")?;
        // A control port of our own: another tgtd may run on this machine.
        let port = 4700 + (std::process::id() % 200) as u16;
        let portal = format!("portal={}:3260", crate::SERVER);
        let argv = ["tgtd", "-f", "-C", &port.to_string(), "--iscsi", &portal];
        let process = lab.spawn("tgtd", &argv, Stop::Kill)?;
        let tgt = Tgt { process, port };
        let socket = format!("/var/run/tgtd/socket.{port}");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&socket).exists() {
            if std::time::Instant::now() >= end {
                bail!("tgtd did not start:\n{}", tgt.process.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let image = image.display().to_string();
        tgt.adm(&[
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            "1",
            "-T",
            crate::TARGET_IQN,
        ])?;
        tgt.adm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &image,
        ])?;
        tgt.adm(&[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ])?;
        Ok(tgt)
    }

    fn adm(&self, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new("tgtadm")
            .args(["-C", &self.port.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "tgtadm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        self.process.stop();
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.port));
        }
    }
}
