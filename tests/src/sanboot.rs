//! sanboot itself, started inside the lab from a generated config file.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::{Lab, BRIDGE};
use crate::process::{Process, Stop};

/// How the lab's sanboot hands out DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// The only DHCP server: pool 192.0.2.100–150.
    Full,
    /// ProxyDHCP beside another server.
    Proxy,
}

/// The `sanboot` binary: `$SANBOOT_BIN` (set by `cargo xtask`; relative to
/// the workspace root), otherwise
/// built once with `cargo build -p sanboot-linux`.
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SANBOOT_BIN") {
        // Relative to the workspace root (test binaries run in tests/).
        return Ok(crate::workspace_root().join(bin));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let status = Command::new(cargo)
                .args(["build", "-p", "sanboot-linux", "--bin", "sanboot"])
                .current_dir(crate::workspace_root())
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("cargo build -p sanboot-linux failed".into());
            }
            Ok(crate::target_dir().join("debug").join("sanboot"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The config every lab shares: server 192.0.2.1 on the bridge, state and
/// TFTP root in the work directory; `rest` adds `[boot]`, targets and hosts.
pub fn config(lab: &Lab, mode: DhcpMode, rest: &str) -> String {
    let dhcp = match mode {
        DhcpMode::Full => {
            "[dhcp]\nmode = \"full\"\npool_start = \"192.0.2.100\"\npool_end = \"192.0.2.150\"\n"
        }
        DhcpMode::Proxy => "[dhcp]\nmode = \"proxy\"\n",
    };
    format!(
        "[server]\naddress = \"{server}\"\ninterface = \"{BRIDGE}\"\nstate_dir = \"{state}\"\n\n\
         {dhcp}\n[tftp]\nroot = \"{tftp}\"\n\n{rest}",
        server = crate::SERVER,
        state = lab.path("state").display(),
        tftp = lab.path("tftp").display(),
    )
}

/// The TFTP root of `lab` (created), with `undionly.kpxe` and `ipxe.efi`
/// from Debian's `ipxe` package.
pub fn tftp_root(lab: &Lab) -> Result<PathBuf> {
    let root = lab.path("tftp");
    std::fs::create_dir_all(&root)?;
    for f in ["undionly.kpxe", "ipxe.efi"] {
        let from = PathBuf::from("/usr/lib/ipxe").join(f);
        crate::require(&[&from.to_string_lossy()])?;
        std::fs::copy(&from, root.join(f))
            .with_context(|| format!("cannot copy {}", from.display()))?;
    }
    Ok(root)
}

/// A running `sanboot serve`; dropping it sends SIGTERM.
#[derive(Debug)]
pub struct Sanboot {
    process: Process,
}

impl Sanboot {
    /// Writes `config_toml` to `<dir>/sanboot.toml`, starts
    /// `sanboot serve` in the lab namespace and waits until it says it serves.
    pub fn start(lab: &Lab, config_toml: &str) -> Result<Sanboot> {
        let bin = binary()?;
        let config = lab.path("sanboot.toml");
        std::fs::write(&config, config_toml)?;
        std::fs::create_dir_all(lab.path("state"))?;
        let argv = [
            "env".to_string(),
            format!(
                "SANBOOT_LOG={}",
                std::env::var("SANBOOT_LOG").unwrap_or_else(|_| "debug".into())
            ),
            "NO_COLOR=1".into(),
            bin.display().to_string(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        let mut process = lab.spawn("sanboot", &argv, Stop::Term)?;
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = process.exited() {
                bail!(
                    "sanboot exited at start ({status}):\n{}",
                    process.log_tail(40)
                );
            }
            if process.log().contains("sanboot serving") {
                // The services bind their sockets right after this line.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(Sanboot { process });
            }
            if Instant::now() >= end {
                bail!(
                    "sanboot did not start within 15 s:\n{}",
                    process.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far (tracing output, ANSI colours off).
    pub fn log(&self) -> String {
        crate::serial::clean(self.process.log().as_bytes())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.log(), lines)
    }

    /// `Some(status)` if sanboot has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    /// The paths of the TFTP read requests sanboot logged (the word after
    /// `RRQ`), in order.
    pub fn tftp_requests(&self) -> Vec<String> {
        tftp_requests(&self.log())
    }

    /// Fails unless sanboot logged TFTP read requests for `files`, in this
    /// order (other requests may come between).
    pub fn assert_tftp_requests(&self, files: &[String]) -> Result<()> {
        assert_requests_in_order("sanboot", &self.tftp_requests(), files)
    }

    /// Waits up to `timeout` for a log line containing every one of `words`
    /// (compared case-insensitively).
    pub fn wait_log_line(&self, words: &[&str], timeout: Duration) -> Result<String> {
        let end = Instant::now() + timeout;
        loop {
            let log = self.log();
            let found = log.lines().find(|l| {
                let l = l.to_ascii_lowercase();
                words.iter().all(|w| l.contains(&w.to_ascii_lowercase()))
            });
            if let Some(line) = found {
                return Ok(line.to_string());
            }
            if Instant::now() >= end {
                bail!(
                    "no sanboot log line with {words:?} within {} s; log (last 40 lines):\n{}",
                    timeout.as_secs(),
                    crate::process::tail(&log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The RRQ paths in a server log: both hosts log `TFTP RRQ <path> from …`.
pub fn tftp_requests(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "RRQ")?;
            words.next().map(str::to_string)
        })
        .collect()
}

/// Fails unless `requests` holds `files` in this order (other requests may
/// come between); `server` names who logged them.
pub fn assert_requests_in_order(server: &str, requests: &[String], files: &[String]) -> Result<()> {
    let mut rest = requests;
    for f in files {
        match rest.iter().position(|r| r.ends_with(f.as_str())) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => {
                bail!("{server} logged no TFTP RRQ for {f:?} (in order); it logged {requests:?}")
            }
        }
    }
    Ok(())
}
