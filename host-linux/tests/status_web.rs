//! The `[web]` listener of `sanboot serve`, driven as an administrator
//! would: iSCSI logins (one with a wrong CHAP secret) and reads, then
//! `/metrics`, `/api/stations`, the page and `sanboot status` must tell
//! what happened. (The full boot timeline with DHCP and TFTP is the QEMU
//! e2e `tests/tests/status_page.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::process::Command;
use std::time::Duration;

use iscsi_support::initiator::Initiator;
use iscsi_support::{free_port, require_tool, run_with_timeout, Sanboot};
use serde_json::Value;

const CHAP_IQN: &str = "iqn.2026-12.test.sanboot:chap";
const OPEN_IQN: &str = "iqn.2026-12.test.sanboot:open";
const INITIATOR: &str = "iqn.2026-12.test.sanboot:reader";

fn get(web: u16, path: &str) -> (u16, String, String) {
    let mut r = ureq::get(&format!("http://127.0.0.1:{web}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("GET");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, r.body_mut().read_to_string().unwrap())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

#[test]
fn metrics_api_page_and_status_cli_show_logins_chap_failures_and_reads() {
    require_tool("iscsi-inq", "libiscsi-bin");
    let web = free_port();
    let config = format!(
        r#"
[web]
listen = "127.0.0.1:{web}"

[[target]]
iqn = "{CHAP_IQN}"
chap = {{ user = "alice", secret = "alice-secret-12" }}
[[target.lun]]
id = 0
image = "chap.img"
size = 8388608

[[target]]
iqn = "{OPEN_IQN}"
[[target.lun]]
id = 0
image = "open.img"
size = 8388608
"#
    );
    let s = Sanboot::start(&config);
    assert!(
        s.wait_log("status page listening", Duration::from_secs(10)),
        "{}",
        s.log()
    );

    // One refused CHAP login, one good one, and a session that reads.
    let bad = s.url(Some(("alice", "wrong-secret-00")), CHAP_IQN, 0, "");
    let (code, _) = run_with_timeout(Command::new("iscsi-inq").arg(&bad), Duration::from_secs(30));
    assert_ne!(code, Some(0), "a wrong CHAP secret logged in");
    let good = s.url(Some(("alice", "alice-secret-12")), CHAP_IQN, 0, "");
    let (code, out) = run_with_timeout(
        Command::new("iscsi-inq").arg(&good),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{out}");
    let mut reader = Initiator::login(s.port, INITIATOR, OPEN_IQN, 0).unwrap();
    // (Clears the power-on unit attention with TEST UNIT READY.)
    reader.ready().unwrap();
    for lba in 0..4 {
        let r = reader.read10(lba * 8, 8).unwrap();
        assert_eq!(r.status, 0);
    }
    assert!(s.wait_log("iscsi login failed", Duration::from_secs(5)));

    // /metrics: Prometheus text with what just happened.
    let (status, ctype, m) = get(web, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert_eq!(metric(&m, "sanboot_iscsi_chap_failures_total"), 1.0);
    assert_eq!(metric(&m, "sanboot_iscsi_login_failures_total"), 1.0);
    assert_eq!(metric(&m, "sanboot_iscsi_logins_total"), 2.0);
    // The reader is still logged in; iscsi-inq has logged out.
    assert_eq!(metric(&m, "sanboot_iscsi_sessions"), 1.0);
    assert_eq!(
        metric(
            &m,
            r#"sanboot_iscsi_commands_total{opcode="0x28",name="read_10"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(&m, r#"sanboot_iscsi_bytes_total{direction="read"}"#),
        4.0 * 8.0 * 512.0
    );
    assert!(metric(&m, "sanboot_iscsi_command_seconds_count") >= 4.0);
    assert_eq!(
        metric(&m, r#"sanboot_boot_stages_total{stage="first_read"}"#),
        1.0
    );

    // /api/stations: no DHCP here, so the station is known by its address.
    let (status, ctype, body) = get(web, "/api/stations");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let st = json["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("no station 127.0.0.1: {json:#}"));
    assert_eq!(st["errors"], 1, "{st:#}");
    assert_eq!(st["bytes_read"], 4 * 8 * 512, "{st:#}");
    let details: Vec<&str> = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("failed") && d.contains("AuthFailure")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains(CHAP_IQN) && d.contains("CHAP: verified")),
        "{details:?}"
    );
    let sessions = json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["initiator"], INITIATOR);
    assert_eq!(sessions[0]["target"], OPEN_IQN);
    let disks = json["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert!(disks.iter().all(|d| d["size"] == 8_388_608), "{disks:?}");

    // The page is served; unknown paths are 404, not the token check's 403.
    let (status, ctype, page) = get(web, "/");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(page.contains("/api/stations"));
    assert_eq!(get(web, "/nothing").0, 404);

    // `sanboot status` finds the listener through the same config.
    let out = Command::new(env!("CARGO_BIN_EXE_sanboot"))
        .args(["status", "--config"])
        .arg(s.dir().join("sanboot.toml"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("127.0.0.1"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("first_read"), "{line}");
    assert!(line.contains(INITIATOR), "{line}");
    drop(reader);
}

/// A web client that never finishes its request does not hold up a stop.
#[test]
fn a_stuck_web_client_does_not_delay_sigterm() {
    use std::io::Write;
    let web = free_port();
    let mut s = Sanboot::start(&format!("[web]\nlisten = \"127.0.0.1:{web}\"\n"));
    assert!(
        s.wait_log("status page listening", Duration::from_secs(10)),
        "{}",
        s.log()
    );
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", web)).unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = s.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|st| st.success()),
        "sanboot did not stop cleanly within 10 s ({status:?}):\n{}",
        s.log()
    );
    drop(stuck);
}
