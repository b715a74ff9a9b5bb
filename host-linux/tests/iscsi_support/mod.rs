//! Shared by the `iscsi_*` tests: `sanboot serve` on 127.0.0.1 with a random
//! free port and a temporary config, tool checks, and a small iSCSI
//! initiator for what the libiscsi tools cannot show (acknowledgement
//! order, killing the target mid-stream).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod initiator;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Target IQN used by the tests.
pub const IQN: &str = "iqn.2026-11.test.sanboot:disk1";
/// The libiscsi suite's two initiator names (not every test uses them).
#[allow(unused_imports)]
pub use sanboot_tests::libiscsi::{INITIATOR, INITIATOR_2};

/// Whether `tool` is on PATH.
pub fn has_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fails the test with a clear message when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) {
    let found = has_tool(tool);
    assert!(
        found,
        "`{tool}` is not installed: this test needs it (Debian package `{package}`; \
         CI installs it: apt-get install {package})"
    );
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `sanboot serve` on 127.0.0.1. Killed (SIGKILL, by PID) when
/// dropped.
pub struct Sanboot {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The iSCSI port.
    pub port: u16,
    /// The TFTP port (generated scripts are served there).
    pub tftp_port: u16,
    /// `[[target]]` tables (image paths relative to the temp dir).
    targets: String,
    /// Wrap the process in `strace -f -e trace=fdatasync`.
    strace: bool,
    /// `SANBOOT_LOG` for the process.
    log_filter: String,
    /// Extra lines for the `[iscsi]` table.
    iscsi_extra: String,
    /// Extra environment for the process.
    envs: Vec<(String, String)>,
    runs: u32,
    /// No run has listened yet (the port may still be changed).
    first_start: bool,
}

impl Sanboot {
    /// Starts sanboot with these `[[target]]` tables.
    pub fn start(targets: &str) -> Sanboot {
        let filter = std::env::var("SANBOOT_LOG").unwrap_or_else(|_| "info".into());
        Self::start_with(targets, false, &filter)
    }

    /// Starts sanboot with `SANBOOT_LOG=filter`; with `strace`, every
    /// `fdatasync` it makes is also logged to [`Sanboot::strace_log`].
    pub fn start_with(targets: &str, strace: bool, filter: &str) -> Sanboot {
        if strace {
            require_tool("strace", "strace");
        }
        let mut s = Sanboot {
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            port: free_port(),
            tftp_port: free_port(),
            targets: targets.to_string(),
            strace,
            iscsi_extra: String::new(),
            envs: Vec::new(),
            log_filter: filter.to_string(),
            runs: 0,
            first_start: true,
        };
        s.spawn();
        s
    }

    /// Restarts with an extra `key = value` line in `[iscsi]`.
    pub fn with_iscsi_option(mut self, line: &str) -> Sanboot {
        self.iscsi_extra.push_str(line);
        self.iscsi_extra.push('\n');
        self.stop();
        self.spawn();
        self
    }

    /// Restarts with `key=value` in the environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Sanboot {
        self.envs.push((key.into(), value.into()));
        self.stop();
        self.spawn();
        self
    }

    /// The temp directory holding the config, images and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config_text(&self) -> String {
        format!(
            "[server]\naddress = \"127.0.0.1\"\nstate_dir = \"state\"\n\n\
             [dhcp]\nmode = \"off\"\n\n\
             [tftp]\nroot = \"tftp\"\nlisten = \"127.0.0.1:{tftp}\"\n\n\
             [iscsi]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n\n{targets}",
            tftp = self.tftp_port,
            port = self.port,
            extra = self.iscsi_extra,
            targets = self.targets
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join(format!("sanboot.{}.log", self.runs))
    }

    /// The `strace` output of the current run.
    pub fn strace_log(&self) -> PathBuf {
        self.dir().join(format!("strace.{}.txt", self.runs))
    }

    fn spawn(&mut self) {
        self.runs += 1;
        std::fs::create_dir_all(self.dir().join("tftp")).expect("tftp dir");
        let config = self.dir().join("sanboot.toml");
        std::fs::write(&config, self.config_text()).expect("write config");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let bin = env!("CARGO_BIN_EXE_sanboot");
        let mut cmd = if self.strace {
            let mut c = Command::new("strace");
            c.arg("-f")
                .arg("-qq")
                .arg("-e")
                .arg("trace=fdatasync")
                .arg("-o")
                .arg(self.strace_log())
                .arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(self.dir())
            .env("SANBOOT_LOG", &self.log_filter)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn sanboot");
        self.child = Some(child);
        if let Err(log) = self.wait_listening() {
            // Another test may have taken the port between free_port() and
            // bind: a first start retries on fresh ports.
            if self.runs <= 3 && self.first_start && log.contains("cannot bind") {
                self.port = free_port();
                return self.spawn();
            }
            panic!("{log}");
        }
        self.first_start = false;
    }

    /// Waits until this process logged that it listens on our port and
    /// accepts a connection. `Err(log)` when it exited first.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ours = format!("listen=127.0.0.1:{}", self.port);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "sanboot exited before listening ({status}); log:\n{}",
                        self.log()
                    ));
                }
            }
            if self.log().contains(&ours) && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "sanboot did not listen on 127.0.0.1:{} within 20 s; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID of the sanboot process itself (under strace: its tracee).
    pub fn pid(&self) -> u32 {
        let child = self.child.as_ref().expect("sanboot is running");
        if !self.strace {
            return child.id();
        }
        let path = format!("/proc/{0}/task/{0}/children", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                return pid.parse().expect("pid");
            }
            assert!(Instant::now() < deadline, "no child of strace in {path}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the current run: SIGKILL to sanboot itself, then reap. Under
    /// strace our child is strace, and killing only it would leave sanboot
    /// running as an orphan.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if self.strace {
            let path = format!("/proc/{0}/task/{0}/children", c.id());
            let children = std::fs::read_to_string(path).unwrap_or_default();
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGKILL to the sanboot process (by PID), then reap it.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -KILL {pid} failed");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit (after a signal sent
    /// by PID); its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process after someone else killed it by PID.
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts sanboot again with the same config and images.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9");
        self.spawn();
    }

    /// sanboot's log (stderr) of the current run, without ANSI colours.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        strip_ansi(&s)
    }

    /// Waits up to `timeout` for `needle` to appear in the log (log lines
    /// about a connection may follow what its peer saw by a moment).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `iscsi://[cred@]127.0.0.1:PORT/IQN/LUN[?args]`.
    pub fn url(&self, cred: Option<(&str, &str)>, iqn: &str, lun: u64, args: &str) -> String {
        let cred = cred.map(|(u, p)| format!("{u}%{p}@")).unwrap_or_default();
        let q = if args.is_empty() {
            String::new()
        } else {
            format!("?{args}")
        };
        format!("iscsi://{cred}127.0.0.1:{}/{iqn}/{lun}{q}", self.port)
    }

    /// `iscsi://127.0.0.1:PORT` for discovery.
    pub fn portal(&self) -> String {
        format!("iscsi://127.0.0.1:{}", self.port)
    }
}

impl Drop for Sanboot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` with a hard timeout (killing it by PID on expiry); returns
/// (exit code, stdout + stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String) {
    let out_path = tempfile::NamedTempFile::new().expect("tmp");
    let f = out_path.reopen().expect("reopen");
    let f2 = f.try_clone().expect("clone");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out_path.path()).unwrap_or_default();
    (code, text)
}

/// Removes `ESC [ ... m` colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
