//! Sessions nobody ends (issue 11): an initiator that stops answering is
//! reaped by NOP-In pings; one that answers them (libiscsi) stays up however
//! long it idles; and at `max_sessions` a rebooted station's new login takes
//! over its own abandoned session instead of being refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::process::Command;
use std::time::{Duration, Instant};

use iscsi_support::initiator::{Initiator, LoginOptions};
use iscsi_support::{require_tool, run_with_timeout, Sanboot, IQN};

const NAME: &str = "iqn.2026-11.test.sanboot:station";

fn sanboot(iscsi: &[&str]) -> Sanboot {
    let mut s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = 8388608\n"
    ));
    for line in iscsi {
        s = s.with_iscsi_option(line);
    }
    s
}

fn isid(q: u8) -> LoginOptions {
    LoginOptions {
        isid_qualifier: q,
        ..LoginOptions::default()
    }
}

/// The `key=value` number in the log line holding every one of `words`.
fn field(log: &str, words: &[&str], key: &str) -> Option<f64> {
    let line = log.lines().find(|l| words.iter().all(|w| l.contains(w)))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| c.is_whitespace())
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

#[test]
fn an_initiator_that_stops_answering_is_reaped_after_interval_plus_timeout() {
    let s = sanboot(&["nop_interval_secs = 1", "nop_timeout_secs = 2"]);
    let mut station = Initiator::login_with(s.port, NAME, IQN, 0, isid(1)).unwrap();
    station.ready().unwrap();
    let started = Instant::now();
    // From now on the station is gone: it reads, but never answers.
    let pings = station
        .silent_until_closed(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("sanboot did not close the silent session: {e}\n{}", s.log()));
    let took = started.elapsed();
    assert_eq!(pings.len(), 1, "one ping, then the close: {pings:x?}");
    let (itt, ttt) = pings[0];
    assert_eq!(itt, 0xffff_ffff, "a target ping has ITT 0xffffffff");
    assert_ne!(ttt, 0xffff_ffff, "a target ping has a valid TTT");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "closed after {took:?}, expected about 1 s + 2 s"
    );
    assert!(
        s.wait_log("peer timeout", Duration::from_secs(5)),
        "no log line names the peer timeout:\n{}",
        s.log()
    );
    let log = s.log();
    let idle = field(
        &log,
        &["session ended", "peer timeout"],
        "last_activity_secs_ago",
    )
    .unwrap_or_else(|| panic!("no last activity in the end line:\n{log}"));
    assert!(idle >= 2.9, "last activity {idle} s ago at the close");
    // Its slot is free again: a new login works.
    Initiator::login_with(s.port, NAME, IQN, 0, isid(2))
        .unwrap()
        .ready()
        .unwrap();
}

/// TCP-level dead-peer detection beside the pings: sanboot's side of an
/// idle session's socket runs the kernel's keepalive timer, first probe
/// after `nop_interval_secs` of silence.
#[test]
fn an_idle_session_socket_runs_tcp_keepalive() {
    let s = sanboot(&["nop_interval_secs = 7", "nop_timeout_secs = 30"]);
    let mut station = Initiator::login_with(s.port, NAME, IQN, 0, isid(1)).unwrap();
    station.ready().unwrap();
    // /proc/net/tcp: "sl local rem st tx:rx tr:when ...", ports in hex; timer
    // 02 is keepalive, `when` is in USER_HZ ticks (100 per second). Until
    // the initiator's (delayed) ACK of the last answer arrives, the socket's
    // timer is the retransmission one (01).
    let (local, remote) = (
        format!(":{:04X}", s.port),
        format!(":{:04X}", station.local_port()),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let (line, left) = loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let line = table
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 5 && f[1].ends_with(&local) && f[2].ends_with(&remote)
            })
            .unwrap_or_else(|| panic!("sanboot's socket is not in /proc/net/tcp:\n{table}"))
            .to_string();
        let timer = line
            .split_whitespace()
            .nth(5)
            .unwrap_or_default()
            .to_string();
        let left = match timer.split_once(':') {
            Some(("02", when)) => u64::from_str_radix(when, 16).ok().map(|t| t as f64 / 100.0),
            _ => None,
        };
        if left.is_some() || Instant::now() > deadline {
            break (line, left);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let left = left.unwrap_or_else(|| panic!("no keepalive timer on sanboot's socket: {line}"));
    assert!(
        left > 0.0 && left <= 7.0,
        "keepalive fires in {left} s, expected within nop_interval_secs = 7"
    );
}

#[test]
fn a_libiscsi_session_idle_far_longer_than_the_interval_stays_up() {
    require_tool("cc", "gcc");
    assert!(
        std::path::Path::new("/usr/include/iscsi/iscsi.h").exists(),
        "libiscsi headers missing (Debian package libiscsi-dev)"
    );
    let s = sanboot(&["nop_interval_secs = 1", "nop_timeout_secs = 2"]);
    let bin = s.dir().join("idle_session");
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/iscsi_support/idle_session.c"
    );
    let (code, out) = run_with_timeout(
        Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&bin)
            .arg(src)
            .arg("-liscsi"),
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "compiling {src}:\n{out}");

    let idle_secs = 8;
    let (code, out) = run_with_timeout(
        Command::new(&bin).args([
            &format!("127.0.0.1:{}", s.port),
            IQN,
            NAME,
            &idle_secs.to_string(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        code == Some(0) && out.contains("idle session ok"),
        "the idle libiscsi session failed ({code:?}):\n{out}\nsanboot log:\n{}",
        s.log()
    );
    assert!(s.wait_log("iscsi session ended", Duration::from_secs(5)));
    let log = s.log();
    assert!(
        !log.contains("peer timeout"),
        "a live session was reaped:\n{log}"
    );
    // It ended by its own logout, after answering several pings.
    let pings = field(&log, &["session ended", "logout"], "pings")
        .unwrap_or_else(|| panic!("no session end by logout:\n{log}"));
    assert!(
        pings >= f64::from(idle_secs / 3),
        "only {pings} pings in {idle_secs} s idle:\n{log}"
    );
}

#[test]
fn at_max_sessions_a_rebooted_station_takes_over_its_silent_session() {
    // Pings off: only the takeover can make room here.
    let s = sanboot(&["max_sessions = 2", "nop_interval_secs = 0"]);
    // Two boots of one station left their sessions behind.
    let mut first = Initiator::login_with(s.port, NAME, IQN, 0, isid(1)).unwrap();
    first.ready().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = Initiator::login_with(s.port, NAME, IQN, 0, isid(2)).unwrap();
    second.ready().unwrap();
    // Another initiator is refused: its name holds no session to take.
    let err = Initiator::login_with(s.port, "iqn.2026-11.test.sanboot:other", IQN, 0, isid(3))
        .err()
        .expect("a third initiator was admitted with max_sessions = 2");
    assert!(err.to_string().contains("status class 3"), "{err}");
    // Sessions in use right now are not taken either (TAKEOVER_MIN_IDLE_MS).
    assert!(Initiator::login_with(s.port, NAME, IQN, 0, isid(3)).is_err());

    // Both stay silent past the takeover threshold: the third boot logs in.
    std::thread::sleep(Duration::from_millis(5_500));
    let mut third = Initiator::login_with(s.port, NAME, IQN, 0, isid(3))
        .unwrap_or_else(|e| panic!("the rebooted station was refused: {e}\n{}", s.log()));
    third.ready().unwrap();
    // The longest-silent session (the first) was replaced, the other kept.
    assert!(
        first.read10(0, 1).is_err(),
        "the taken-over session still answers"
    );
    assert_eq!(second.read10(0, 1).unwrap().status, 0);
    assert_eq!(third.read10(0, 1).unwrap().status, 0);
    assert!(
        s.wait_log("taken over by a new login", Duration::from_secs(5)),
        "the replaced session's end does not say why:\n{}",
        s.log()
    );
    let log = s.log();
    let idle = field(&log, &["takes over"], "old_idle_secs")
        .unwrap_or_else(|| panic!("no takeover line with the old session's idle time:\n{log}"));
    assert!(idle >= 5.0, "took over a session silent for only {idle} s");
}
