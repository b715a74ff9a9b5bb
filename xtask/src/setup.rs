//! `cargo xtask setup`: makes sure this machine has what `demo` and `ci`
//! need, and installs what is missing. Both commands run it first.
//!
//! Packages are chosen by the tool or file that is missing, never as a
//! blanket list: a package already present in a newer version (say
//! `qemu-utils` 10 from bookworm-backports on a Debian 12 image) is never
//! named, so apt is never asked to downgrade it; packages of the same
//! family as such a newer one are taken from its release (see
//! [`keep_newer`]). As root the missing packages are installed
//! non-interactively (one `apt-get update`, then `apt-get install`, with
//! package scripts kept from starting daemons); as another user the exact
//! commands are printed. A second run finds everything and does nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util;

/// What `demo` and `ci` use, each with the Debian package that provides
/// it: a tool name is looked up on `PATH`, an absolute path must exist.
/// This is the one list of prerequisites; `.ci/run` and the README defer
/// to it.
const NEEDS: &[(&str, &str)] = &[
    // the namespace lab
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("setpriv", "util-linux"),
    ("/etc/ssl/certs/ca-certificates.crt", "ca-certificates"),
    // stations
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
    ("/usr/lib/ipxe/qemu/pxe-e1000.rom", "ipxe-qemu"),
    ("/usr/lib/ipxe/qemu/efi-e1000.rom", "ipxe-qemu"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
    // test disks
    ("nasm", "nasm"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    // peers the tests and benchmarks compare against
    ("dnsmasq", "dnsmasq-base"),
    ("tftp", "tftp-hpa"),
    ("in.tftpd", "tftpd-hpa"),
    ("atftp", "atftp"),
    ("curl", "curl"),
    // bench http's peer (the bench skips it when missing)
    ("nginx", "nginx-light"),
    // the status page e2e opens it in a headless browser
    ("chromium", "chromium"),
    ("tgtd", "tgt"),
    ("tgtadm", "tgt"),
    ("iscsi-test-cu", "libiscsi-bin"),
    ("iscsi-inq", "libiscsi-bin"),
    ("iscsi-perf", "libiscsi-bin"),
    ("iscsi-ls", "libiscsi-bin"),
    ("iscsi-readcapacity16", "libiscsi-bin"),
    ("/usr/include/iscsi/iscsi.h", "libiscsi-dev"),
    ("kea-dhcp4", "kea-dhcp4-server"),
    ("perfdhcp", "kea-admin"),
    ("fio", "fio"),
    // packet captures of every e2e lab
    ("tshark", "tshark"),
    // the durability test counts sanboot's fdatasync calls
    ("strace", "strace"),
    // cargo-fuzz's libFuzzer is C++
    ("c++", "g++"),
    // the real Linux station's disk (sanboot_tests::linux_disk), built
    // without loop devices, and its check after the e2e boots
    ("mmdebstrap", "mmdebstrap"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
];

/// Rust targets: the embedded builds (core, host-smoltcp) and the aarch64 firmware.
const RUST_TARGETS: &[&str] = &["thumbv7em-none-eabihf", "aarch64-unknown-none"];
/// Rust components `ci` runs.
const RUST_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

/// Directories with daemons (tgtd, in.tftpd, kea-dhcp4) that a non-login
/// root shell may lack on `PATH`.
const SBIN: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// `cargo xtask setup`.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("cargo xtask setup takes no arguments (got {a:?})");
    }
    ensure()
}

/// Packages, then rust targets and components (what `ci` needs). Both
/// are tried even if the first fails, so one run says everything missing.
pub fn ensure() -> Result<()> {
    let packages = ensure_packages();
    // After the packages: rustup verifies the toolchain server against
    // the system's CA certificates, which may have just been installed.
    let rust = ensure_rust();
    packages.and(rust)
}

/// Checks every tool and file and installs what is missing (as root), or
/// prints the command that would (otherwise). Errors when something is
/// still missing afterwards.
pub fn ensure_packages() -> Result<()> {
    let needs = NEEDS;
    add_sbin_to_path();
    let packages = missing_packages(needs);
    if packages.is_empty() {
        println!(
            "setup: all {} prerequisites present, nothing to install",
            needs.len()
        );
        return Ok(());
    }
    println!("setup: missing (tool or file: package):");
    for (what, package) in missing_needs(needs) {
        println!("  {what}: {package}");
    }
    if !is_root() {
        println!("setup: not root, so nothing was installed; as root run:");
        println!("  sudo apt-get update");
        // Planned the same way as a root install (apt can simulate as
        // any user), so the commands keep newer packages too.
        let plan = keep_newer(&packages).unwrap_or_else(|_| vec![Transaction::plain(&packages)]);
        for t in plan {
            println!("  {}", t.shell_command());
        }
        bail!("prerequisites missing (commands above)");
    }
    install(&packages)?;
    let still: Vec<String> = missing_needs(needs)
        .iter()
        .map(|(what, package)| format!("{what} ({package})"))
        .collect();
    if !still.is_empty() {
        bail!("still missing after install: {}", still.join(", "));
    }
    println!("setup: every prerequisite is present now");
    Ok(())
}

/// The tests look daemons up on `PATH`; children inherit this.
fn add_sbin_to_path() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    for d in SBIN {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
    }
}

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(what).is_file())
}

fn missing_needs(needs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    needs
        .iter()
        .copied()
        .filter(|(what, _)| !present(what))
        .collect()
}

/// The packages to install, each once, in list order.
fn missing_packages(needs: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    missing_needs(needs)
        .into_iter()
        .map(|(_, package)| package)
        .filter(|p| seen.insert(*p))
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get` with no questions: no debconf prompts, keep changed config files.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    cmd
}

fn install(packages: &[&str]) -> Result<()> {
    let _no_daemons = NoDaemons::new()?;
    util::run(apt_get().arg("update"))?;
    if packages.contains(&"tshark") {
        // tshark's package asks whether non-root users may capture; we run as root.
        let mut c = Command::new("debconf-set-selections");
        c.stdin(Stdio::piped());
        let mut child = c.spawn().context("cannot run debconf-set-selections")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
        }
        child.wait()?;
    }
    for t in keep_newer(packages)? {
        match &t.release {
            Some(r) => println!("setup: installing from {r}: {}", t.packages.join(" ")),
            None => println!("setup: installing {}", t.packages.join(" ")),
        }
        util::run(&mut t.command(&["install", "-y", "--no-install-recommends"]))?;
    }
    Ok(())
}

/// One `apt-get install`: some packages, optionally with `-t RELEASE`
/// (which lets apt take their dependencies from that release too).
#[derive(Debug, Clone, PartialEq)]
struct Transaction {
    release: Option<String>,
    packages: Vec<String>,
}

impl Transaction {
    fn plain(packages: &[&str]) -> Transaction {
        Transaction {
            release: None,
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The install as a user would type it.
    fn shell_command(&self) -> String {
        let release = self
            .release
            .as_ref()
            .map(|r| format!("-t {r} "))
            .unwrap_or_default();
        format!(
            "sudo DEBIAN_FRONTEND=noninteractive apt-get {release}install -y --no-install-recommends {}",
            self.packages.join(" ")
        )
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = apt_get();
        if let Some(r) = &self.release {
            cmd.args(["-t", r]);
        }
        cmd.args(args).args(&self.packages);
        cmd
    }

    /// What `apt-get install -s` says it would remove: (package, installed version).
    fn planned_removals(&self) -> Result<Vec<(String, String)>> {
        let out = self
            .command(&["install", "-s", "--no-install-recommends"])
            .output()
            .context("cannot run apt-get install -s")?;
        if !out.status.success() {
            bail!(
                "apt-get cannot plan installing {}:\n{}",
                self.packages.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(parse_removals(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// `Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]` lines of a simulation.
fn parse_removals(simulation: &str) -> Vec<(String, String)> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| {
            let (name, tail) = rest.split_once(' ')?;
            let version = tail.strip_prefix('[')?.split(']').next()?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// The installs for `packages` that keep newer packages already installed.
///
/// A package from another release (qemu-utils 10 from bookworm-backports)
/// may break the one this release would install beside it
/// (qemu-system-common 7.2). apt then either cannot plan at all
/// ("pkgProblemResolver::Resolve generated breaks", when that release is
/// still configured) or plans to remove the newer package. Either way,
/// each package we install that is available in the very version of an
/// installed package (binary packages of one source share their version)
/// is installed from that version's release first, with `-t RELEASE` so
/// its dependencies follow (`-t bookworm-backports qemu-system-x86`), and
/// the rest from the default release. When no configured release has that
/// version, a planned removal is said out loud and goes ahead: nothing
/// here needs the removed package, and everything that is needed is
/// checked again after the install.
fn keep_newer(packages: &[&str]) -> Result<Vec<Transaction>> {
    let plain = Transaction::plain(packages);
    let plan = plain.planned_removals();
    if plan.as_ref().is_ok_and(|r| r.is_empty()) {
        return Ok(vec![plain]);
    }
    let installed = installed_versions();
    let mut split: Vec<Transaction> = Vec::new();
    let mut rest = Vec::new();
    for p in packages {
        match release_of_installed_version(p, &installed) {
            Some(release) => match split
                .iter_mut()
                .find(|t| t.release.as_ref() == Some(&release))
            {
                Some(t) => t.packages.push(p.to_string()),
                None => split.push(Transaction {
                    release: Some(release),
                    packages: vec![p.to_string()],
                }),
            },
            None => rest.push(p.to_string()),
        }
    }
    if !split.is_empty() {
        if !rest.is_empty() {
            split.push(Transaction {
                release: None,
                packages: rest,
            });
        }
        // The later transactions are planned before the earlier ones are
        // installed; they hold none of the pinned family, so that is enough.
        if split
            .iter()
            .all(|t| t.planned_removals().is_ok_and(|r| r.is_empty()))
        {
            return Ok(split);
        }
        println!("setup: installing from the installed versions' releases does not avoid removals");
    }
    for (name, version) in plan? {
        println!(
            "setup: apt will remove {name} {version}: it conflicts with this release's packages \
             and no configured release has a matching version (sanboot does not use it)"
        );
    }
    Ok(vec![plain])
}

/// Every installed package's version.
fn installed_versions() -> BTreeSet<String> {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}\\n"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The release (e.g. `bookworm-backports`) from which apt can install
/// `package` in a version an installed package has: the binary packages
/// of one source share its version string.
fn release_of_installed_version(package: &str, installed: &BTreeSet<String>) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["madison", package])
        .output()
        .ok()?;
    let madison = String::from_utf8_lossy(&out.stdout);
    let candidate = candidate_version(package)?;
    installed
        .iter()
        .filter(|v| **v != candidate)
        .find_map(|version| parse_madison(&madison, version))
}

/// The version `apt-get install package` would take (`apt-cache policy`).
fn candidate_version(package: &str) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
}

/// ` qemu-system-x86 | 1:10.0.2+ds-2~bpo12+1 | http://… bookworm-backports/main amd64 Packages`
fn parse_madison(madison: &str, version: &str) -> Option<String> {
    madison.lines().find_map(|line| {
        let mut cols = line.split('|').map(str::trim);
        let (_name, v, source) = (cols.next()?, cols.next()?, cols.next()?);
        if v != version {
            return None;
        }
        let suite = source.split_whitespace().nth(1)?;
        Some(suite.split('/').next()?.to_string())
    })
}

/// Keeps package scripts from starting daemons (tgtd, kea, tftpd) on the
/// machine's own interfaces while we install: the tests start their own
/// inside namespaces. Removes the policy file it wrote when dropped.
struct NoDaemons {
    wrote: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoDaemons {
    fn new() -> Result<NoDaemons> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoDaemons { wrote: false });
        }
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        util::run(Command::new("chmod").args(["+x", POLICY_RC_D]))?;
        Ok(NoDaemons { wrote: true })
    }
}

impl Drop for NoDaemons {
    fn drop(&mut self) {
        if self.wrote {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Adds the rustup targets and components `ci` builds with. Without rustup
/// (a distribution's Rust) it only says what must be there. If the
/// toolchain server cannot be reached the error names what is missing.
pub fn ensure_rust() -> Result<()> {
    let listed = |what: &str| -> Option<String> {
        let out = Command::new("rustup")
            .args([what, "list", "--installed"])
            .current_dir(util::root())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (Some(targets), Some(components)) = (listed("target"), listed("component")) else {
        println!(
            "setup: no rustup; the toolchain must have the targets {} and the components {}",
            RUST_TARGETS.join(" "),
            RUST_COMPONENTS.join(" ")
        );
        return Ok(());
    };
    let targets: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !targets.lines().any(|l| l.trim() == *t))
        .collect();
    // Installed components are listed with the host triple: `clippy-x86_64-unknown-linux-gnu`.
    let components: Vec<&str> = RUST_COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !components
                .lines()
                .any(|l| l.trim() == *c || l.trim().starts_with(&format!("{c}-")))
        })
        .collect();
    if !targets.is_empty() {
        println!("setup: adding rust targets {}", targets.join(" "));
        util::run(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&targets)
                .current_dir(util::root()),
        )
        .context(rustup_hint())?;
    }
    if !components.is_empty() {
        println!("setup: adding rust components {}", components.join(" "));
        util::run(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&components)
                .current_dir(util::root()),
        )
        .context(rustup_hint())?;
    }
    if targets.is_empty() && components.is_empty() {
        println!(
            "setup: rust targets {} and components {} present",
            RUST_TARGETS.join(" "),
            RUST_COMPONENTS.join(" ")
        );
    }
    Ok(())
}

/// rustup checks the toolchain server's certificate against the system's
/// CA certificates; without them every download fails with "UnknownIssuer".
fn rustup_hint() -> &'static str {
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        "rustup could not add what ci needs (is the toolchain server reachable?)"
    } else {
        "rustup could not add what ci needs: this machine has no CA certificates \
         (package ca-certificates), so rustup cannot verify the toolchain server"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_removals_from_an_apt_simulation() {
        // Cut from `apt-get install -s qemu-system-x86` on Debian 12 with
        // qemu-utils 10 from bookworm-backports installed.
        let sim = "\
The following packages will be REMOVED:
  qemu-utils
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst qemu-system-common (1:7.2+dfsg-7+deb12u18+b2 Debian:12.14/oldstable [amd64])
Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b2 Debian:12.14/oldstable [amd64])
";
        assert_eq!(
            parse_removals(sim),
            vec![(
                "qemu-utils".to_string(),
                "1:10.0.2+ds-2+deb13u1~bpo12+1".to_string()
            )]
        );
        assert!(parse_removals("Inst a (1 x [amd64])\nConf a (1 x [amd64])\n").is_empty());
    }

    #[test]
    fn finds_the_release_holding_an_exact_version() {
        let madison = "\
qemu-system-x86 | 1:10.0.2+ds-2+deb13u1~bpo12+1 | http://mirror/debian bookworm-backports/main amd64 Packages
qemu-system-x86 | 1:7.2+dfsg-7+deb12u18+b2 | http://mirror/debian bookworm/main amd64 Packages
";
        assert_eq!(
            parse_madison(madison, "1:10.0.2+ds-2+deb13u1~bpo12+1").as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(
            parse_madison(madison, "1:7.2+dfsg-7+deb12u18+b2").as_deref(),
            Some("bookworm")
        );
        assert_eq!(parse_madison(madison, "1:9.0"), None);
    }

    #[test]
    fn never_names_qemu_utils() {
        // qemu-img is not a prerequisite: naming qemu-utils is what asked
        // apt to downgrade the backports one and broke the install.
        assert!(NEEDS.iter().all(|(_, p)| *p != "qemu-utils"));
    }
}
