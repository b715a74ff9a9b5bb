//! Reloading the configuration while serving (SIGHUP and `sanboot reload`):
//! a session reading its disk keeps reading across the reload, a changed
//! host script is served from the next TFTP request, a new target is
//! discoverable and usable; a broken config, a changed LUN and a
//! restart-only key are refused and everything keeps working; a removed
//! target's session is closed.
//!
//! Needs curl (TFTP) and libiscsi-bin (`iscsi-ls`, `iscsi-inq`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod iscsi_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_support::initiator::Initiator;
use iscsi_support::{free_port, require_tool, strip_ansi, INITIATOR};

const IQN_A: &str = "iqn.2026-12.test.sanboot:a";
const IQN_B: &str = "iqn.2026-12.test.sanboot:b";
const MAC: &str = "52:54:00:12:34:56";
const SCRIPT: &str = "52-54-00-12-34-56.ipxe";
const PERF_INITIATOR: &str = "iqn.2026-12.test.sanboot:perf";

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    tftp: u16,
    iscsi: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target(iqn: &str, image: &str) -> String {
    format!(
        "[[target]]\niqn = \"{iqn}\"\n[[target.lun]]\nid = 0\nimage = \"{image}\"\nsize = 4194304\n"
    )
}

fn host(iqn: &str) -> String {
    format!("[[host]]\nmac = \"{MAC}\"\nhostname = \"station1\"\ntarget = \"{iqn}\"\n")
}

impl Server {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sanboot.toml")
    }

    fn write_config(&self, tables: &str) {
        let text = format!(
            "[server]\naddress = \"127.0.0.1\"\nstate_dir = \"state\"\n\n\
             [dhcp]\nmode = \"off\"\n\n\
             [tftp]\nlisten = \"127.0.0.1:{}\"\n\n\
             [iscsi]\nlisten = \"127.0.0.1:{}\"\n\n{tables}",
            self.tftp, self.iscsi
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn start(tables: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server {
            child: Command::new("true").spawn().unwrap(),
            dir,
            tftp: free_port(),
            iscsi: free_port(),
        };
        s.write_config(tables);
        let log = std::fs::File::create(s.dir.path().join("sanboot.log")).unwrap();
        s.child = Command::new(env!("CARGO_BIN_EXE_sanboot"))
            .args(["serve", "--config"])
            .arg(s.config_path())
            .env("SANBOOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            s.wait_log("iscsi target listening", 1) && s.wait_log("TFTP listening", 1),
            "sanboot did not start; log:\n{}",
            s.log()
        );
        s
    }

    fn log(&self) -> String {
        strip_ansi(
            &std::fs::read_to_string(self.dir.path().join("sanboot.log")).unwrap_or_default(),
        )
    }

    /// Waits up to 20 s until `needle` appears `count` times in the log.
    fn wait_log(&self, needle: &str, count: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn sighup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// `sanboot reload --config …`: (exit success, stdout + stderr).
    fn reload_cli(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_sanboot"))
            .args(["reload", "--config"])
            .arg(self.config_path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The host's script over TFTP (curl).
    fn script(&self) -> String {
        let local = self.dir.path().join("fetched.ipxe");
        let _ = std::fs::remove_file(&local);
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "-o"])
            .arg(&local)
            .arg(format!("tftp://127.0.0.1:{}/{SCRIPT}", self.tftp))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&local).unwrap()
    }

    fn libiscsi(&self, tool: &str, url: &str) -> (bool, String) {
        let out = Command::new(tool)
            .args(["-i", INITIATOR, url])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn discovered(&self) -> String {
        let (ok, out) = self.libiscsi("iscsi-ls", &format!("iscsi://127.0.0.1:{}", self.iscsi));
        assert!(ok, "iscsi-ls: {out}");
        out
    }
}

/// Reads block 0 over one session until told to stop; counts good reads
/// and records the first failure.
struct Reader {
    stop: Arc<AtomicBool>,
    good: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl Reader {
    fn start(port: u16, iqn: &str, expect: Vec<u8>) -> Reader {
        let mut session = Initiator::login(port, INITIATOR, iqn, 0).unwrap();
        session.ready().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let good = Arc::new(AtomicU64::new(0));
        let (s, g) = (stop.clone(), good.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match session.read10(0, 1) {
                    Ok(r) if r.status == 0 && r.data == expect => {
                        g.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => return Some(format!("read status {} sense {:x?}", r.status, r.sense)),
                    Err(e) => return Some(format!("read: {e}")),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        });
        Reader {
            stop,
            good,
            thread: Some(thread),
        }
    }

    fn good(&self) -> u64 {
        self.good.load(Ordering::Relaxed)
    }

    /// Waits until `n` more reads succeeded (or the reader failed).
    fn wait_more(&self, n: u64) -> bool {
        let want = self.good() + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.good() >= want {
                return true;
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Stops it; `Some(error)` if a read failed.
    fn finish(mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn write_pattern(path: &Path) -> Vec<u8> {
    let block: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut image = block.clone();
    image.resize(4 << 20, 0);
    std::fs::write(path, image).unwrap();
    block
}

#[test]
fn reload_keeps_sessions_and_applies_hosts_and_targets() {
    require_tool("curl", "curl");
    require_tool("iscsi-ls", "libiscsi-bin");
    require_tool("iscsi-inq", "libiscsi-bin");
    require_tool("iscsi-perf", "libiscsi-bin");
    let s = Server::start(&format!("{}{}", target(IQN_A, "a.img"), host(IQN_A)));
    let pattern = write_pattern(&s.dir.path().join("a.img"));
    assert!(s.script().contains(IQN_A));
    assert!(!s.discovered().contains(IQN_B));

    let reader = Reader::start(s.iscsi, IQN_A, pattern);
    assert!(reader.wait_more(20), "no reads before the reload");
    // And libiscsi reading as fast as it can across the reload, with no
    // reconnect allowed (-x 0).
    let perf = Command::new("iscsi-perf")
        .args([
            "-i",
            PERF_INITIATOR,
            "-t",
            "4",
            "-x",
            "0",
            "-m",
            "4",
            "-b",
            "8",
        ])
        .arg(format!("iscsi://127.0.0.1:{}/{IQN_A}/0", s.iscsi))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(s.wait_log(&format!("initiator={PERF_INITIATOR} target={IQN_A}"), 1));

    // The host now boots from a new target: SIGHUP.
    s.write_config(&format!(
        "{}{}{}",
        target(IQN_A, "a.img"),
        target(IQN_B, "b.img"),
        host(IQN_B)
    ));
    s.sighup();
    assert!(
        s.wait_log("configuration reloaded", 1),
        "no reload; log:\n{}",
        s.log()
    );
    assert!(
        s.log().contains("2 targets: 1 kept, 1 added, 0 removed"),
        "{}",
        s.log()
    );
    assert!(reader.wait_more(20), "reads stopped after the reload");
    let script = s.script();
    assert!(
        script.contains(IQN_B) && !script.contains(IQN_A),
        "script: {script}"
    );
    let found = s.discovered();
    assert!(found.contains(IQN_A) && found.contains(IQN_B), "{found}");
    let (ok, out) = s.libiscsi(
        "iscsi-inq",
        &format!("iscsi://127.0.0.1:{}/{IQN_B}/0", s.iscsi),
    );
    assert!(ok, "new target: {out}");
    // iscsi-perf ran through the reload on its one session.
    let perf = perf.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&perf.stdout).to_string() + &String::from_utf8_lossy(&perf.stderr);
    assert!(
        perf.status.success() && said.contains("finished."),
        "iscsi-perf: {said}"
    );
    // Its one session ended by its own logout (the line may follow its exit).
    let ended = format!("initiator={PERF_INITIATOR} target={IQN_A} reason=\"logout\"");
    assert!(s.wait_log(&ended, 1), "{}", s.log());
    let log = s.log();
    let perf_logins = log
        .lines()
        .filter(|l| l.contains("iscsi login peer=") && l.contains(PERF_INITIATOR))
        .count();
    assert_eq!(perf_logins, 1, "iscsi-perf logged in again:\n{log}");

    // The same through the CLI: reports success.
    let (ok, out) = s.reload_cli();
    assert!(ok && out.contains("reloaded:"), "{out}");

    // Broken: a syntax error, a changed LUN, a restart-only key. Each is
    // refused with its reason, and nothing changes.
    let good = std::fs::read_to_string(s.config_path()).unwrap();
    let broken = [
        (
            format!("{good}\n[[host]\nmac = \"nonsense\"\n"),
            "sanboot.toml",
        ),
        (
            good.replace("image = \"b.img\"", "image = \"c.img\""),
            "its LUNs changed",
        ),
        (
            good.replace(
                &format!("listen = \"127.0.0.1:{}\"", s.tftp),
                "listen = \"127.0.0.1:1\"",
            ),
            "[tftp] changed",
        ),
    ];
    for (i, (text, why)) in broken.iter().enumerate() {
        std::fs::write(s.config_path(), text).unwrap();
        let (ok, out) = s.reload_cli();
        assert!(!ok, "broken config {i} accepted: {out}");
        assert!(out.contains(why), "config {i}: no reason {why:?} in: {out}");
        assert!(s.wait_log("configuration reload REFUSED", i + 1));
    }
    s.sighup();
    assert!(s.wait_log("configuration reload REFUSED", broken.len() + 1));
    assert!(reader.wait_more(20), "reads stopped after refused reloads");
    assert!(s.script().contains(IQN_B));
    let (ok, out) = s.libiscsi(
        "iscsi-inq",
        &format!("iscsi://127.0.0.1:{}/{IQN_B}/0", s.iscsi),
    );
    assert!(ok, "{out}");
    let before = reader.good();
    assert!(before > 60);

    // Removing the reader's target closes its session; a session on the
    // other target (after it in the list) goes on.
    let reader_b = Reader::start(s.iscsi, IQN_B, vec![0u8; 512]);
    assert!(reader_b.wait_more(10));
    std::fs::write(s.config_path(), &good).unwrap();
    s.write_config(&format!("{}{}", target(IQN_B, "b.img"), host(IQN_B)));
    let (ok, out) = s.reload_cli();
    assert!(
        ok && out.contains("1 targets: 1 kept, 0 added, 1 removed"),
        "{out}"
    );
    let failure = {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reader.thread.as_ref().unwrap().is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.finish()
    };
    assert!(
        failure.is_some(),
        "the removed target's session kept working"
    );
    assert!(s.wait_log("target removed by a configuration reload", 1));
    assert!(reader_b.wait_more(20), "the kept target's session stopped");
    let found = s.discovered();
    assert!(
        found.contains(IQN_B) && !found.contains(IQN_A) && !found.contains("retired"),
        "{found}"
    );
    let (ok, out) = s.libiscsi(
        "iscsi-inq",
        &format!("iscsi://127.0.0.1:{}/{IQN_B}/0", s.iscsi),
    );
    assert!(ok, "{out}");
    // The index A left is held by a placeholder nobody can log in to.
    let (ok, out) = s.libiscsi(
        "iscsi-inq",
        &format!(
            "iscsi://127.0.0.1:{}/iqn.2026-12.invalid.sanboot:retired-0/0",
            s.iscsi
        ),
    );
    assert!(!ok, "logged in to a retired placeholder: {out}");

    // A back: a fresh target in the hole, usable; B's session untouched.
    s.write_config(&format!(
        "{}{}{}",
        target(IQN_A, "a.img"),
        target(IQN_B, "b.img"),
        host(IQN_B)
    ));
    let (ok, out) = s.reload_cli();
    assert!(
        ok && out.contains("2 targets: 1 kept, 1 added, 0 removed"),
        "{out}"
    );
    let (ok, out) = s.libiscsi(
        "iscsi-inq",
        &format!("iscsi://127.0.0.1:{}/{IQN_A}/0", s.iscsi),
    );
    assert!(ok, "{out}");
    assert!(reader_b.wait_more(20), "the kept target's session stopped");
    assert_eq!(reader_b.finish(), None);
}
