//! `dist/sanboot.service` is a unit systemd accepts: `systemd-analyze
//! verify` on it (with the built binary in place of /usr/local/bin/sanboot,
//! since verify checks that ExecStart= is executable) exits 0 and says
//! nothing about it: an unknown or misspelt key is only a warning there, so
//! any output naming the unit fails the test too. Skipped, saying so, where
//! systemd-analyze is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
