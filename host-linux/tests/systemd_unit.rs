//! `dist/sanboot.service` is a unit systemd accepts: `systemd-analyze
//! verify` on it (with the built binary in place of /usr/local/bin/sanboot,
//! since verify checks that ExecStart= is executable) exits 0 and says
//! nothing about it: an unknown or misspelt key is only a warning there, so
//! any output naming the unit fails the test too. Skipped, saying so, where
//! systemd-analyze is not installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(version.status.success());
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/sanboot.service");
    let text = std::fs::read_to_string(unit).unwrap();
    for line in ["ExecStart=", "ExecReload=", "ExecStartPre="] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && l.contains("/usr/local/bin/sanboot")),
            "{line} should run /usr/local/bin/sanboot"
        );
    }
    assert!(text.contains("ExecReload=/usr/local/bin/sanboot reload"));
    assert!(text.contains("Type=notify"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sanboot.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/sanboot", env!("CARGO_BIN_EXE_sanboot")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    let about_us: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("sanboot.service"))
        .collect();
    assert!(about_us.is_empty(), "systemd-analyze verify warns:\n{said}");
}

/// `Type=notify`: `sanboot serve` sends READY=1 to `$NOTIFY_SOCKET` once it
/// serves, and STOPPING=1 on SIGTERM.
#[test]
fn serve_notifies_readiness_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let config = dir.path().join("sanboot.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"127.0.0.1\"\n[dhcp]\nmode = \"off\"\n\
             [tftp]\nlisten = \"127.0.0.1:{}\"\n[iscsi]\nlisten = \"127.0.0.1:{}\"\n",
            free(),
            free()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sanboot"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let got = sock.recv(&mut buf);
    let ready = got
        .as_ref()
        .map(|n| String::from_utf8_lossy(&buf[..*n]).to_string());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = sock
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).to_string());
    let status = child.wait().unwrap();
    assert_eq!(ready.unwrap(), "READY=1");
    assert_eq!(stopping.unwrap(), "STOPPING=1");
    assert!(status.success(), "{status}");
}
