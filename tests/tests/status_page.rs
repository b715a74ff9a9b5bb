//! A station boots from sanboot (DHCP, its generated script, iSCSI); then
//! what an administrator looks at must tell that boot: `/api/stations`
//! lists the station with every stage in order, `/metrics` counted the
//! packets, transfers and commands, `sanboot status` prints the station,
//! and the status page, opened in a real headless Chromium, shows it
//! after its JavaScript ran. Everything runs inside the lab namespace; the
//! web listener is on the namespace's own loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sanboot_tests::process::Stop;
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, peers, Boot, Lab, Sanboot, Station};
use serde_json::Value;

const WEB: &str = "127.0.0.1:8080";

/// The stages a BIOS boot through QEMU's iPXE ROM takes, in order (the ROM
/// is already iPXE: no PXE binary, the script comes first).
const STAGES: [&str; 7] = [
    "dhcp_discover",
    "dhcp_offer",
    "dhcp_request",
    "dhcp_ack",
    "script",
    "iscsi_login",
    "first_read",
];

/// A JSON object's field (`Null` when absent).
fn f<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// Runs `argv` in the lab namespace to its end (at most `limit`) and
/// returns what it printed (stdout and stderr).
fn run_in_lab(lab: &Lab, name: &str, argv: &[String], limit: Duration) -> Result<String> {
    let mut p = lab.spawn(name, argv, Stop::Kill)?;
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = p.exited() {
            let out = p.log();
            ensure!(
                status.success(),
                "{name} failed ({status}):\n{}",
                p.log_tail(30)
            );
            return Ok(out);
        }
        if Instant::now() >= end {
            bail!(
                "{name} did not finish within {} s:\n{}",
                limit.as_secs(),
                p.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl(lab: &Lab, path: &str) -> Result<String> {
    let argv = [
        "curl".to_string(),
        "-sS".into(),
        "--fail".into(),
        "--max-time".into(),
        "10".into(),
        format!("http://{WEB}{path}"),
    ];
    run_in_lab(lab, "curl", &argv, Duration::from_secs(15))
}

/// The value of one sample line of the Prometheus text, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample of a family whose labels contain `label`.
fn metric_sum(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn chromium(lab: &Lab, name: &str, extra: &[String]) -> Result<String> {
    let profile = lab.path(&format!("{name}-profile"));
    let _ = std::fs::remove_dir_all(&profile);
    let mut argv: Vec<String> = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Let the page's fetch of /api/stations finish before the dump.
        "--virtual-time-budget=5000",
        "--window-size=1400,700",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(format!("--user-data-dir={}", profile.display()));
    argv.extend_from_slice(extra);
    argv.push(format!("http://{WEB}/"));
    run_in_lab(lab, name, &argv, Duration::from_secs(90))
}

#[test]
fn status_shows_a_real_boot_stage_by_stage() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["curl", "chromium"])?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("status_page")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let hosts = sanboot_tests::sanboot_host(&disk.path);
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &format!("[web]\nlisten = \"{WEB}\"\n\n{hosts}"),
    );
    let sanboot = Sanboot::start(&lab, &config)?;
    // Nothing booted yet: the counters the boot must move start at zero.
    let before = curl(&lab, "/metrics")?;
    ensure!(
        metric(
            &before,
            r#"sanboot_dhcp_packets_total{direction="in",type="discover"}"#
        ) == 0.0,
        "DISCOVERs counted before any station ran:\n{before}"
    );

    let mut station = Station::start(&lab, Boot::BiosRom)?;
    station
        .wait_for("SANBOOT-OK", Duration::from_secs(90))
        .with_context(|| sanboot.log_tail(60))?;

    // /api/stations: the station, every stage of this boot in order.
    let json: Value =
        serde_json::from_str(&curl(&lab, "/api/stations")?).context("/api/stations is not JSON")?;
    let stations = f(&json, "stations")
        .as_array()
        .context("no stations array")?;
    let st = stations
        .iter()
        .find(|s| f(s, "id") == sanboot_tests::STATION_MAC)
        .with_context(|| format!("{} not listed: {json:#}", sanboot_tests::STATION_MAC))?;
    ensure!(
        f(st, "hostname") == "station1",
        "hostname: {}",
        f(st, "hostname")
    );
    ensure!(f(st, "boot") == 1, "one boot, got {}", f(st, "boot"));
    let stages: Vec<&str> = f(st, "stages")
        .as_array()
        .context("no stages")?
        .iter()
        .filter_map(|t| f(t, "stage").as_str())
        .collect();
    let mut rest = stages.as_slice();
    for want in STAGES {
        match rest.iter().position(|s| *s == want) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => bail!("stage {want} missing or out of order in {stages:?}"),
        }
    }
    let times: Vec<u64> = f(st, "stages")
        .as_array()
        .context("no stages")?
        .iter()
        .filter_map(|t| f(t, "at_ms").as_u64())
        .collect();
    ensure!(
        times.windows(2).all(|w| w.first() <= w.get(1)),
        "stage times go backwards: {times:?}"
    );
    ensure!(
        f(st, "bytes_read").as_u64().unwrap_or(0) > 0,
        "no bytes read: {st:#}"
    );
    let session = f(&json, "sessions")
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|x| f(x, "station") == sanboot_tests::STATION_MAC)
        })
        .with_context(|| format!("no session of the station: {json:#}"))?;
    ensure!(
        f(session, "target") == sanboot_tests::TARGET_IQN,
        "session: {session:#}"
    );
    ensure!(
        json.pointer("/disks/0/size").and_then(Value::as_u64) == Some(disk.sectors * 512),
        "disks: {}",
        f(&json, "disks")
    );
    println!("/api/stations stages: {stages:?}, times {times:?} ms");

    // /metrics: the boot moved the counters.
    // (The lease gauge follows the lease table once a second.)
    let mut m = curl(&lab, "/metrics")?;
    for _ in 0..30 {
        if metric(&m, "sanboot_dhcp_leases") > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        m = curl(&lab, "/metrics")?;
    }
    for (series, why) in [
        (
            r#"sanboot_dhcp_packets_total{direction="in",type="discover"}"#,
            "DISCOVER in",
        ),
        (
            r#"sanboot_dhcp_packets_total{direction="out",type="ack"}"#,
            "ACK out",
        ),
        ("sanboot_dhcp_leases", "a bound lease"),
        (
            r#"sanboot_fetches_total{protocol="tftp",kind="script",result="complete"}"#,
            "a script over TFTP",
        ),
        (
            r#"sanboot_fetch_bytes_total{protocol="tftp"}"#,
            "TFTP bytes",
        ),
        ("sanboot_iscsi_sessions", "an open session"),
        ("sanboot_iscsi_logins_total", "a login"),
        (
            r#"sanboot_iscsi_bytes_total{direction="read"}"#,
            "bytes read",
        ),
        ("sanboot_iscsi_command_seconds_count", "command latencies"),
        (
            r#"sanboot_boot_stages_total{stage="first_read"}"#,
            "the first READ stage",
        ),
    ] {
        ensure!(metric(&m, series) > 0.0, "{why}: {series} is 0 in\n{m}");
    }
    ensure!(
        metric_sum(&m, "sanboot_iscsi_commands_total", "name=\"read_") > 0.0,
        "no READ commands by opcode:\n{m}"
    );
    ensure!(
        metric(&m, "sanboot_iscsi_chap_failures_total") == 0.0,
        "CHAP failures without CHAP"
    );

    // `sanboot status` reads the same API through the config's address.
    let argv = [
        sanboot::binary()?.display().to_string(),
        "status".into(),
        "--config".into(),
        lab.path("sanboot.toml").display().to_string(),
    ];
    let table = run_in_lab(&lab, "sanboot-status", &argv, Duration::from_secs(15))?;
    println!("sanboot status:\n{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(sanboot_tests::STATION_MAC))
        .with_context(|| format!("station missing from `sanboot status`:\n{table}"))?;
    ensure!(
        line.contains("station1") && line.contains("first_read"),
        "{line}"
    );

    // The page, in a real browser, after its JavaScript ran.
    let dom = chromium(&lab, "chromium-dom", &["--dump-dom".into()])?;
    ensure!(
        dom.contains(&format!("data-station=\"{}\"", sanboot_tests::STATION_MAC)),
        "the page does not list the station:\n{}",
        sanboot_tests::process::tail(&dom, 40)
    );
    for s in STAGES {
        ensure!(
            dom.contains(&format!("data-stage=\"{s}\"")),
            "the page does not show stage {s}"
        );
    }
    ensure!(
        dom.contains(sanboot_tests::TARGET_IQN),
        "the page shows no session/disk"
    );
    let shot = sanboot_tests::target_dir()
        .join("e2e")
        .join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &lab,
        "chromium-shot",
        &[format!("--screenshot={}", shot.display())],
    )?;
    let png = std::fs::read(&shot).with_context(|| format!("no screenshot {}", shot.display()))?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot is not a PNG of a page"
    );
    println!("status page screenshot: {}", shot.display());
    Ok(())
}

/// A plain PXE client (OVMF's EDK2) first gets `ipxe.efi` over TFTP, and
/// that iPXE asks DHCP again: one boot, with the binary fetch as its own
/// stage between the firmware's DHCP and iPXE's script.
#[test]
fn uefi_pxe_chain_is_one_boot_with_its_binary_fetch() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    sanboot_tests::require(&["curl"])?;
    sanboot_tests::require(Boot::UefiPxe.needs())?;
    sanboot_tests::require(&["mkfs.vfat", "mmd", "mcopy"])?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("status_uefi")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, true)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let hosts = sanboot_tests::sanboot_host(&disk.path);
    let config = sanboot::config(
        &lab,
        DhcpMode::Full,
        &format!("[web]\nlisten = \"{WEB}\"\n\n{hosts}"),
    );
    let sanboot = Sanboot::start(&lab, &config)?;
    let mut station = Station::start(&lab, Boot::UefiPxe)?;
    station
        .wait_for("SANBOOT-OK (UEFI)", Duration::from_secs(180))
        .with_context(|| sanboot.log_tail(60))?;

    let json: Value =
        serde_json::from_str(&curl(&lab, "/api/stations")?).context("/api/stations is not JSON")?;
    let st = f(&json, "stations")
        .as_array()
        .and_then(|a| a.iter().find(|s| f(s, "id") == sanboot_tests::STATION_MAC))
        .with_context(|| format!("station missing: {json:#}"))?;
    ensure!(
        f(st, "boot") == 1,
        "iPXE's DHCP after the PXE ROM's started a new boot: {st:#}"
    );
    let stages: Vec<&str> = f(st, "stages")
        .as_array()
        .context("no stages")?
        .iter()
        .filter_map(|t| f(t, "stage").as_str())
        .collect();
    // EDK2 asks for ipxe.efi's size first and ends that transfer itself:
    // no error of the boot.
    ensure!(
        !stages.contains(&"error"),
        "the size probe showed as an error: {stages:?}"
    );
    let want = [
        "dhcp_discover",
        "dhcp_ack",
        "boot_file",
        "script",
        "iscsi_login",
        "first_read",
    ];
    let mut rest = stages.as_slice();
    for w in want {
        match rest.iter().position(|s| *s == w) {
            Some(i) => rest = rest.get(i + 1..).unwrap_or_default(),
            None => bail!("stage {w} missing or out of order in {stages:?}"),
        }
    }
    let events: Vec<&str> = f(st, "events")
        .as_array()
        .context("no events")?
        .iter()
        .filter_map(|e| f(e, "detail").as_str())
        .collect();
    ensure!(
        events.iter().any(|d| d.starts_with("TFTP ipxe.efi")),
        "no ipxe.efi fetch among {events:?}"
    );
    let m = curl(&lab, "/metrics")?;
    ensure!(
        metric(
            &m,
            r#"sanboot_fetches_total{protocol="tftp",kind="boot_file",result="complete"}"#
        ) >= 1.0,
        "no completed boot file fetch:\n{m}"
    );
    println!("UEFI PXE stages: {stages:?}");
    Ok(())
}
