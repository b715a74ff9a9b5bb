//! A child process started inside a namespace and stopped by PID on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How a [`Process`] is asked to stop when dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then SIGKILL if it is still there after 3 s (daemons that
    /// flush state on exit).
    Term,
    /// SIGKILL at once (QEMU: nothing to save).
    Kill,
}

/// A running child. Its stdout and stderr go to one log file.
///
/// It runs as `ip netns exec NS setpriv --pdeathsig KILL -- ARGV`: `ip` and
/// `setpriv` exec in place, so the PID we hold is the program's own, and the
/// kernel kills it if the thread that started it dies without dropping us.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    stop: Stop,
}

impl Process {
    /// Starts `argv` inside network namespace `ns`, logging to `log`.
    pub fn spawn<S: AsRef<OsStr>>(
        ns: &str,
        name: &str,
        argv: &[S],
        log: &Path,
        stop: Stop,
    ) -> Result<Process> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "setpriv", "--pdeathsig", "KILL", "--"]);
        cmd.args(argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stop,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far, lossily decoded.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the process the way its [`Stop`] says and reaps it.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.stop == Stop::Term {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(3)) {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all.get(from..).unwrap_or_default().join("\n")
}
