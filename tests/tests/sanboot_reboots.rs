//! Sessions nobody ends (issue 11). One station reboots again and again
//! with `[iscsi] max_sessions = 2`, and an initiator vanishes in the middle
//! of a read.
//!
//! The reboots: Every boot leaves its iPXE session behind: the guest is
//! powered off (QEMU killed) without a logout, and the next boot's iPXE uses
//! a new random ISID, so it cannot reinstate it. Before dead-peer detection
//! and takeover the third boot was refused (`OutOfResources`, "Could not
//! open SAN device"). Now each boot succeeds: a full table lets the new
//! login take over the station's longest-silent session, and dead-peer
//! detection reaps what is left; after the last boot the table empties by
//! itself.
//!
//! How a powered-off iPXE session is reaped: iPXE acknowledges TCP data only
//! while it runs, so the last Data-In of a boot stays unacknowledged and
//! `TCP_USER_TIMEOUT` (= `nop_timeout_secs`) ends the socket that long after
//! it; a session whose data was all acknowledged gets a NOP-In ping after
//! `nop_interval_secs` of silence and is closed `nop_timeout_secs` later.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sanboot_tests::lab::{ip, ROUTER_IF};
use sanboot_tests::process::Stop;
use sanboot_tests::sanboot::{self, DhcpMode};
use sanboot_tests::{disk, peers, Boot, Lab, Sanboot, Station};

const BOOTS: usize = 4;
/// Timers short enough to keep the test fast (defaults: 15 s + 30 s), long
/// enough that a boot (about 5 s in TCG) usually finds the session of the
/// boot before last still there and has to take it over.
const NOP_INTERVAL_SECS: u64 = 15;
const NOP_TIMEOUT_SECS: u64 = 15;

#[test]
fn one_station_boots_four_times_with_max_sessions_2() -> Result<()> {
    sanboot_tests::require(sanboot_tests::BOOT_TOOLS)?;
    let _one = sanboot_tests::one_station_at_a_time();
    let lab = Lab::new("iscsi_reboots")?;
    let _pcap = lab.capture()?;
    let disk = disk::build(lab.dir(), 16, false)?;
    sanboot::tftp_root(&lab)?;
    let _ra = peers::router_advertisements(&lab)?;
    let rest = format!(
        "[iscsi]\nmax_sessions = 2\nnop_interval_secs = {NOP_INTERVAL_SECS}\n\
         nop_timeout_secs = {NOP_TIMEOUT_SECS}\n\n{}",
        sanboot_tests::sanboot_host(&disk.path)
    );
    let config = sanboot::config(&lab, DhcpMode::Full, &rest);
    let sanboot = Sanboot::start(&lab, &config)?;

    for boot in 1..=BOOTS {
        // A fresh console file: the last boot's marker must not count.
        let _ = std::fs::remove_file(lab.path("serial.log"));
        let mut station = Station::start(&lab, Boot::BiosRom)?;
        let took = station
            .wait_for("SANBOOT-OK", Duration::from_secs(90))
            .with_context(|| {
                format!(
                    "boot {boot} of {BOOTS} failed; sanboot log (last 60 lines):\n{}",
                    sanboot.log_tail(60)
                )
            })?;
        sanboot_tests::record_timing(&format!("sanboot_reboots boot {boot}"), took);
        sanboot_tests::assert_in_order(&station.console(), &disk.expected_lines())?;
        // Power off: no logout, no FIN, the session is simply abandoned.
        drop(station);
    }

    let log = sanboot.log();
    ensure!(
        !log.contains("login refused"),
        "a login was refused:\n{}",
        sanboot.log_tail(60)
    );
    let logins = log
        .lines()
        .filter(|l| l.contains("iscsi login") && l.contains(sanboot_tests::TARGET_IQN))
        .count();
    ensure!(logins >= BOOTS, "{logins} logins logged for {BOOTS} boots");

    // The last station is gone too: its session is pinged and closed.
    let start = Instant::now();
    let bound = Duration::from_secs(NOP_INTERVAL_SECS + NOP_TIMEOUT_SECS + 10);
    let ended = |log: &str| {
        log.lines()
            .filter(|l| l.contains("iscsi session ended"))
            .count()
    };
    while ended(&sanboot.log()) < logins {
        ensure!(
            start.elapsed() < bound,
            "{} of {logins} sessions ended {} s after the last power-off; log:\n{}",
            ended(&sanboot.log()),
            bound.as_secs(),
            sanboot.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sanboot.log();
    let taken_over = log
        .lines()
        .filter(|l| l.contains("taken over by a new login"))
        .count();
    let nop = log
        .lines()
        .filter(|l| l.contains("reason=\"peer timeout"))
        .count();
    // TCP_USER_TIMEOUT ends the socket with ETIMEDOUT, or with the soft
    // error of the last retransmission (EHOSTUNREACH once ARP fails).
    let tcp = log
        .lines()
        .filter(|l| l.contains("session ended") && l.contains("reason=\"read: "))
        .count();
    println!(
        "{BOOTS} boots, {logins} logins: {taken_over} sessions taken over by a later boot, \
         {nop} reaped by an unanswered NOP-In, {tcp} by a TCP error (user timeout); the table was \
         empty {:.1} s after the last power-off",
        start.elapsed().as_secs_f64()
    );
    ensure!(
        taken_over + nop + tcp == logins,
        "sessions ended some other way:\n{}",
        log.lines()
            .filter(|l| l.contains("session ended"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        log.lines()
            .filter(|l| l.contains("session ended"))
            .all(|l| l.contains("last_activity_secs_ago=")),
        "session end lines do not show the last activity"
    );
    Ok(())
}

/// libiscsi's `iscsi-perf` streams reads from a second namespace; it stops
/// reading (SIGSTOP: its receive window fills, sanboot's connection task
/// blocks in a write with Data-In queued), then its link goes down, so
/// nothing sanboot sends is acknowledged any more. `TCP_USER_TIMEOUT`
/// (= `nop_timeout_secs`, 3 s here) fails the socket under the blocked
/// write, long before the NOP-In interval (60 s here) or the kernel's ~15
/// minutes of retries.
#[test]
fn an_initiator_that_vanishes_mid_read_is_reaped_by_the_tcp_user_timeout() -> Result<()> {
    sanboot_tests::require(&["iscsi-perf", "ip"])?;
    let mut lab = Lab::new("iscsi_vanish")?;
    let disk = disk::build(lab.dir(), 64, false)?;
    sanboot::tftp_root(&lab)?;
    let rest = format!(
        "[iscsi]\nnop_interval_secs = 60\nnop_timeout_secs = 3\n\n{}",
        sanboot_tests::sanboot_host(&disk.path)
    );
    let sanboot = Sanboot::start(&lab, &sanboot::config(&lab, DhcpMode::Full, &rest))?;
    let router = lab.add_router(sanboot_tests::ROUTER)?;
    let initiator = "iqn.2024-01.test.e2e:vanishing";
    let url = format!(
        "iscsi://{}/{}/0",
        sanboot_tests::SERVER,
        sanboot_tests::TARGET_IQN
    );
    let perf = lab.spawn_in(
        &router,
        "iscsi-perf",
        &[
            "iscsi-perf",
            "-i",
            initiator,
            "-x",
            "0",
            "-m",
            "32",
            "-b",
            "2048",
            &url,
        ],
        Stop::Kill,
    )?;
    sanboot.wait_log_line(&["iscsi login", initiator], Duration::from_secs(10))?;
    // Let the reads stream, freeze the initiator, then pull the cable.
    std::thread::sleep(Duration::from_secs(2));
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &perf.pid().to_string()])
        .status()?;
    ensure!(stopped.success(), "cannot stop iscsi-perf");
    std::thread::sleep(Duration::from_secs(1));
    ip(&["-n", &router, "link", "set", ROUTER_IF, "down"])?;
    let cut = Instant::now();
    let line = sanboot.wait_log_line(&["session ended", initiator], Duration::from_secs(20))?;
    let took = cut.elapsed();
    println!("reaped {:.1} s after the cut: {line}", took.as_secs_f64());
    ensure!(
        line.contains("timed out") || line.contains("No route to host"),
        "the session ended otherwise: {line}"
    );
    // The user timeout runs from the last acknowledgement (probes were still
    // answered while the initiator was only frozen), so this is at most 3 s
    // plus the probe timer's granularity.
    ensure!(
        took < Duration::from_secs(15),
        "reaped {:.1} s after the cut, expected about 3 s",
        took.as_secs_f64()
    );
    Ok(())
}
