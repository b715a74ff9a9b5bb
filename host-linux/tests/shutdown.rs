//! `sanboot serve` stops cleanly on SIGTERM and SIGINT: exit status 0 within
//! a few seconds, with every service's closing line in the log, even with
//! DHCP off (a service with nothing to do) and an initiator still connected;
//! a service that cannot start ends the process with status 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a clean stop may take.
const STOP_WITHIN: Duration = Duration::from_secs(10);

fn config(dir: &Path, tftp_port: u16, iscsi_port: u16) -> String {
    format!(
        r#"
[server]
address = "127.0.0.1"
state_dir = "{state}"

[dhcp]
mode = "off"

[tftp]
listen = "127.0.0.1:{tftp_port}"

[iscsi]
listen = "127.0.0.1:{iscsi_port}"

[[target]]
iqn = "iqn.2024-01.test.shutdown:disk"
[[target.lun]]
id = 0
image = "{image}"
size = 1048576
"#,
        state = dir.join("state").display(),
        image = dir.join("disk.img").display(),
    )
}

fn free_ports() -> (u16, u16) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        udp.local_addr().unwrap().port(),
        tcp.local_addr().unwrap().port(),
    )
}

struct Serving {
    child: Child,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
    iscsi_port: u16,
}

impl Serving {
    /// Waits for a log line containing `needle`; `None` if the process
    /// ended (or went quiet past the deadline) first.
    fn wait_for(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Everything the process logged, once it has exited (its stderr closes).
    fn rest_of_log(&mut self) -> String {
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(2)) {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }

    fn log_text(&mut self) -> String {
        self.lines.extend(self.log.try_iter());
        self.lines.join("\n")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sanboot serve` on a config with these ports; its log lines arrive
/// on `Serving::log`.
fn spawn(dir: &Path, tftp_port: u16, iscsi_port: u16) -> Serving {
    let path = dir.join("sanboot.toml");
    std::fs::write(&path, config(dir, tftp_port, iscsi_port)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sanboot"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("SANBOOT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sanboot serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serving {
        child,
        log,
        lines: Vec::new(),
        iscsi_port,
    }
}

/// Starts `sanboot serve` and waits until TFTP and iSCSI listen. A start
/// that lost a port to another process between probe and bind retries on
/// fresh ports.
fn start(dir: &Path) -> Serving {
    for _ in 0..3 {
        let (tftp_port, iscsi_port) = free_ports();
        let mut s = spawn(dir, tftp_port, iscsi_port);
        if s.wait_for("TFTP listening", STOP_WITHIN).is_some()
            && s.wait_for("iscsi target listening", STOP_WITHIN).is_some()
        {
            return s;
        }
        let log = s.log_text();
        assert!(log.contains("cannot bind"), "sanboot did not start:\n{log}");
    }
    panic!("no free ports after 3 tries");
}

/// Waits for the process to exit, at most [`STOP_WITHIN`] after `since`.
fn exit_status(s: &mut Serving, since: Instant, what: &str) -> std::process::ExitStatus {
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st;
        }
        assert!(
            since.elapsed() < STOP_WITHIN,
            "still running {STOP_WITHIN:?} after {what}:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, name: &str) {
    let st = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{name} {pid}");
}

/// Sends `sig` and checks the process exits 0 within [`STOP_WITHIN`] and
/// says in its log that it stopped, and why.
fn stops_cleanly_on(sig: &str, announced: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    // An initiator that connected and sits idle must not hold the stop up.
    let idle = TcpStream::connect(("127.0.0.1", s.iscsi_port)).unwrap();

    let asked = Instant::now();
    signal(s.child.id(), sig);
    let status = exit_status(&mut s, asked, &format!("SIG{sig}"));
    drop(idle);
    let log = s.rest_of_log();
    assert_eq!(status.code(), Some(0), "exit status after SIG{sig}:\n{log}");
    for line in [
        announced,
        "TFTP stopped",
        "iscsi LUN closed",
        "sanboot stopped",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
    assert!(
        !log.contains("stopped unexpectedly") && !log.contains("while stopping"),
        "{log}"
    );
}

#[test]
fn sigterm_stops_serve_cleanly() {
    stops_cleanly_on("TERM", "SIGTERM: shutting down");
}

#[test]
fn sigint_stops_serve_cleanly() {
    stops_cleanly_on("INT", "SIGINT: shutting down");
}

/// A service that cannot start stops the others and the process: exit
/// status 1, the port named on stderr.
#[test]
fn a_taken_port_fails_serve_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tftp_port = taken.local_addr().unwrap().port();
    let (_, iscsi_port) = free_ports();
    let started = Instant::now();
    let mut s = spawn(dir.path(), tftp_port, iscsi_port);
    let status = exit_status(&mut s, started, "a failed bind");
    let log = s.rest_of_log();
    assert_eq!(status.code(), Some(1), "{log}");
    let want = format!("[tftp] listen = 127.0.0.1:{tftp_port}: cannot bind");
    assert!(log.contains(&want), "no {want:?} in:\n{log}");
    drop(taken);
}
