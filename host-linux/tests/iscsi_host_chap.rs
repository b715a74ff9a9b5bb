//! Per-station CHAP (`[host.chap]`), checked per initiator name as LIO's
//! per-ACL CHAP, with libiscsi's command-line tools against `sanboot serve`:
//! a station's secret opens its own target only, and a station that
//! presents another's initiator name fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::process::Command;
use std::time::Duration;

use iscsi_support::{require_tool, run_with_timeout, Sanboot};

const DISK_A: &str = "iqn.2026-12.test.sanboot:disk-a";
const DISK_B: &str = "iqn.2026-12.test.sanboot:disk-b";
const STATION_A: &str = "iqn.2026-12.test.sanboot:station-a";
const STATION_B: &str = "iqn.2026-12.test.sanboot:station-b";
const A: (&str, &str) = ("station-a", "station-a-secret");
const B: (&str, &str) = ("station-b", "station-b-secret");
/// disk-a's own secret: what initiators without a host entry prove.
const SHARED: (&str, &str) = ("anyone", "target-wide-secret");

fn config() -> String {
    format!(
        r#"
[[target]]
iqn = "{DISK_A}"
chap = {{ user = "{}", secret = "{}" }}
[[target.lun]]
id = 0
image = "a.img"
size = 8388608

[[target]]
iqn = "{DISK_B}"
[[target.lun]]
id = 0
image = "b.img"
size = 8388608

[[host]]
mac = "52:54:00:00:00:0a"
target = "{DISK_A}"
initiator_iqn = "{STATION_A}"
[host.chap]
user = "{}"
secret = "{}"
mutual_user = "sanboot-for-a"
mutual_secret = "a-target-secret"

[[host]]
mac = "52:54:00:00:00:0b"
target = "{DISK_B}"
initiator_iqn = "{STATION_B}"
[host.chap]
user = "{}"
secret = "{}"
"#,
        SHARED.0, SHARED.1, A.0, A.1, B.0, B.1
    )
}

fn start() -> Sanboot {
    require_tool("iscsi-inq", "libiscsi-bin");
    Sanboot::start(&config())
}

/// `iscsi-inq -i initiator url`: did the login (and INQUIRY) succeed?
fn inq(initiator: &str, url: &str) -> (bool, String) {
    let mut cmd = Command::new("iscsi-inq");
    cmd.args(["-i", initiator, url]);
    let (code, out) = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (code == Some(0), out)
}

#[test]
fn each_station_logs_in_with_its_own_secret_only() {
    let s = start();
    let (ok, out) = inq(STATION_A, &s.url(Some(A), DISK_A, 0, ""));
    assert!(
        ok,
        "station A with its secret:\n{out}\nsanboot:\n{}",
        s.log()
    );
    assert!(out.contains("SANBOOT"), "no INQUIRY data:\n{out}");
    // disk-b has no target secret: its station's entry is what makes it CHAP.
    let (ok, out) = inq(STATION_B, &s.url(Some(B), DISK_B, 0, ""));
    assert!(
        ok,
        "station B with its secret:\n{out}\nsanboot:\n{}",
        s.log()
    );
    let (ok, out) = inq(STATION_B, &s.url(None, DISK_B, 0, ""));
    assert!(!ok, "station B logged in without its secret:\n{out}");
    let log = s.log();
    let login = log
        .lines()
        .find(|l| l.contains("iscsi login") && l.contains(STATION_B))
        .unwrap_or_else(|| panic!("no login line for station B:\n{log}"));
    assert!(login.contains("auth=\"CHAP\""), "{login}");

    // Station B's name and secret on station A's disk: B has no entry there,
    // so disk-a's own secret is asked for and B's does not open it.
    let (ok, out) = inq(STATION_B, &s.url(Some(B), DISK_A, 0, ""));
    assert!(!ok, "station B's secret opened disk-a:\n{out}");
    // Station A may not fall back to the target-wide secret.
    let (ok, out) = inq(STATION_A, &s.url(Some(SHARED), DISK_A, 0, ""));
    assert!(!ok, "station A logged in with the target's secret:\n{out}");
    // An initiator without a host entry still proves the target's secret.
    let other = "iqn.2026-12.test.sanboot:some-tool";
    let (ok, out) = inq(other, &s.url(Some(SHARED), DISK_A, 0, ""));
    assert!(ok, "the target's own secret:\n{out}\nsanboot:\n{}", s.log());
}

#[test]
fn a_station_presenting_anothers_initiator_name_fails() {
    let s = start();
    // Station B knows its own secret and A's initiator name.
    let (ok, out) = inq(STATION_A, &s.url(Some(B), DISK_A, 0, ""));
    assert!(!ok, "B posing as A logged in:\n{out}");
    // ...or A's user name, but not A's secret.
    let forged = (A.0, B.1);
    let (ok, out) = inq(STATION_A, &s.url(Some(forged), DISK_A, 0, ""));
    assert!(!ok, "A's user name with B's secret logged in:\n{out}");
    let line = format!("CHAP authentication failed: initiator {STATION_A} target {DISK_A}");
    assert!(
        s.wait_log(&line, Duration::from_secs(5)),
        "no warning naming the initiator and target:\n{}",
        s.log()
    );
    let log = s.log();
    let warn = log.lines().find(|l| l.contains(&line)).unwrap();
    assert!(warn.contains("WARN"), "not logged at warn: {warn}");
}

#[test]
fn mutual_chap_uses_the_stations_target_credentials() {
    let s = start();
    let good = s.url(
        Some(A),
        DISK_A,
        0,
        "target_user=sanboot-for-a&target_password=a-target-secret",
    );
    let (ok, out) = inq(STATION_A, &good);
    assert!(
        ok,
        "mutual CHAP for station A:\n{out}\nsanboot:\n{}",
        s.log()
    );
    // The initiator expects another target secret: it refuses the answer.
    let wrong = s.url(
        Some(A),
        DISK_A,
        0,
        "target_user=sanboot-for-a&target_password=not-the-secret",
    );
    let (ok, out) = inq(STATION_A, &wrong);
    assert!(!ok, "initiator accepted a wrong target proof:\n{out}");
    // Station B's entry has no mutual credentials: its challenge fails.
    let b = s.url(
        Some(B),
        DISK_B,
        0,
        "target_user=sanboot-for-a&target_password=a-target-secret",
    );
    let (ok, out) = inq(STATION_B, &b);
    assert!(
        !ok,
        "mutual CHAP without mutual credentials succeeded:\n{out}"
    );
}
