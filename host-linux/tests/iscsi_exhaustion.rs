//! Exhaustion is a refusal, not a lockout. Against `sanboot serve` on
//! loopback (other 127.0.0.x source addresses play other hosts):
//! - 1,000 idle TCP connections (100 from each of ten addresses) and 16 idle
//!   discovery sessions (the default `max_discovery_sessions`) still let a
//!   normal login in within 2 s; connections over `max_connections_per_ip`
//!   or `max_connections` are closed; the 17th discovery session is
//!   refused, not queued.
//! - Idle connections from more addresses than `max_connections` allows
//!   make room (oldest not logged in first) for a login; logged-in sessions
//!   are never the ones closed.
//! - An initiator that stops reading (zero receive window, the target stuck
//!   writing to it) neither holds up the login that reinstates its session
//!   nor sanboot's stop on SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use iscsi_support::initiator::{Initiator, LoginOptions};
use iscsi_support::{Sanboot, IQN};

const NAME: &str = "iqn.2026-12.test.sanboot:exhaustion";
const DISCOVERER: &str = "iqn.2026-12.test.sanboot:discoverer";

fn sanboot() -> Sanboot {
    Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = 67108864\n"
    ))
}

/// The test itself holds over a thousand sockets.
fn raise_fd_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )
    .unwrap();
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|n| n >= needed),
        "open file limit {now:?} < {needed}: raise the hard limit (ulimit -Hn) to run this test"
    );
}

/// A TCP connection to sanboot from `src` (any 127.0.0.0/8 address), with a
/// receive buffer of `rcvbuf` bytes if given.
fn connect_from(src: Ipv4Addr, port: u16, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(5),
    )?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// One PDU: BHS and data segment (no digests).
fn read_pdu(s: &mut TcpStream) -> io::Result<([u8; 48], Vec<u8>)> {
    let mut h = [0u8; 48];
    s.read_exact(&mut h)?;
    let dlen = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
    let mut data = vec![0u8; usize::from(h[4]) * 4 + pad4(dlen)];
    s.read_exact(&mut data)?;
    Ok((h, data))
}

/// A one-PDU login (security stage straight to full feature phase, as iPXE
/// may do) to `target`, or a discovery session when `None`; the Login
/// Response's status class and detail.
fn login(s: &mut TcpStream, initiator: &str, target: Option<&str>, isid_q: u8) -> (u8, u8) {
    let mut text = format!("InitiatorName={initiator}\0AuthMethod=None\0");
    match target {
        Some(t) => text.push_str(&format!("SessionType=Normal\0TargetName={t}\0")),
        None => text.push_str("SessionType=Discovery\0"),
    }
    let mut p = vec![0u8; 48 + pad4(text.len())];
    p[0] = 0x43; // Login Request, immediate
    p[1] = 0x83; // T, CSG 0 → NSG 3
    p[5..8].copy_from_slice(&(text.len() as u32).to_be_bytes()[1..]);
    // The ISID format of the support initiator, so both can name one session.
    p[8..14].copy_from_slice(&[0x80, 0, 0, 0x51, 0x42, isid_q]);
    p[16..20].copy_from_slice(&1u32.to_be_bytes()); // ITT
    p[48..48 + text.len()].copy_from_slice(text.as_bytes());
    s.write_all(&p).unwrap();
    let (h, _) = read_pdu(s).unwrap();
    assert_eq!(h[0] & 0x3f, 0x23, "not a Login Response");
    (h[36], h[37])
}

/// Queues `n` READ(10)s of 1 MiB each on a logged-in connection without
/// reading the answers.
fn flood_reads(s: &mut TcpStream, n: u32) {
    for i in 0..n {
        let mut p = [0u8; 48];
        p[0] = 0x01; // SCSI Command
        p[1] = 0xc1; // F, R, simple
        p[16..20].copy_from_slice(&(0x100 + i).to_be_bytes()); // ITT
        p[20..24].copy_from_slice(&(1u32 << 20).to_be_bytes()); // EDTL
        p[24..28].copy_from_slice(&(1 + i).to_be_bytes()); // CmdSN
        p[28..32].copy_from_slice(&2u32.to_be_bytes()); // ExpStatSN
        p[32] = 0x28;
        p[39..41].copy_from_slice(&2048u16.to_be_bytes()); // blocks
        s.write_all(&p).unwrap();
    }
}

/// Is the peer gone (EOF or reset) — without waiting?
fn closed_by_peer(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let gone = match (&*s).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    gone
}

#[test]
fn idle_connections_and_discovery_sessions_do_not_lock_out_a_normal_login() {
    raise_fd_limit(1500);
    let s = sanboot();
    let rss = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let rss_before = rss(s.pid());
    // 1,000 idle connections: 100 from each of 127.0.0.2 ..= 127.0.0.11.
    let mut idle = Vec::new();
    for host in 2..12u8 {
        for _ in 0..100 {
            idle.push(
                connect_from(Ipv4Addr::new(127, 0, 0, host), s.port, None)
                    .unwrap_or_else(|e| panic!("connection {} failed: {e}", idle.len() + 1)),
            );
        }
    }
    assert_eq!(idle.len(), 1000);
    // Over the per-address cap (32) or the global one (128): closed at once.
    let open_per_address = || {
        let open: Vec<usize> = idle
            .chunks(100)
            .map(|from| from.iter().filter(|c| !closed_by_peer(c)).count())
            .collect();
        open
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = loop {
        let open = open_per_address();
        let settled = open.iter().all(|&n| n <= 32) && open.iter().sum::<usize>() <= 128;
        if settled || Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        open.iter().all(|&n| n <= 32) && open.iter().sum::<usize>() <= 128,
        "idle connections left open per address: {open:?} (caps: 32 per address, 128 in all)\n{}",
        s.log()
    );
    assert!(
        s.log()
            .contains("iscsi connection refused: too many connections"),
        "refused connections are not logged:\n{}",
        s.log()
    );

    // 16 idle discovery sessions: the default max_discovery_sessions.
    let mut discovery = Vec::new();
    for q in 0..16u8 {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 12), s.port, None).unwrap();
        assert_eq!(
            login(&mut c, DISCOVERER, None, q),
            (0, 0),
            "discovery session {q} refused:\n{}",
            s.log()
        );
        discovery.push(c);
    }
    // The 17th is refused (status 3/2 out of resources), not left waiting.
    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 12), s.port, None).unwrap();
    assert_eq!(login(&mut c, DISCOVERER, None, 16), (3, 2));

    // A disk login from another host still gets in, promptly.
    let asked = Instant::now();
    let mut disk = Initiator::login(s.port, NAME, IQN, 0)
        .unwrap_or_else(|e| panic!("normal login refused under load: {e}\n{}", s.log()));
    let took = asked.elapsed();
    disk.ready().unwrap();
    assert_eq!(disk.read10(0, 1).unwrap().status, 0);
    eprintln!("normal login under 1,000 idle connections + 16 discovery sessions: {took:?}");
    eprintln!(
        "sanboot RSS: {rss_before} KiB before, {} KiB with {} idle connections and 17 sessions",
        rss(s.pid()),
        open_per_address().iter().sum::<usize>()
    );
    assert!(took < Duration::from_secs(2), "normal login took {took:?}");
    drop(idle);
    drop(discovery);
}

/// A logged-in session (ISID qualifier `q`) whose initiator asks for 32 MiB
/// and reads none of it: the target ends up blocked writing to it.
fn stuck_reader(s: &Sanboot, q: u8) -> TcpStream {
    let mut c = connect_from(Ipv4Addr::LOCALHOST, s.port, Some(4096)).unwrap();
    assert_eq!(login(&mut c, NAME, Some(IQN), q), (0, 0));
    flood_reads(&mut c, 32);
    // Let the target fill the socket buffers (a few MiB on loopback).
    std::thread::sleep(Duration::from_millis(500));
    c
}

#[test]
fn a_zero_window_initiator_blocks_neither_reinstatement_nor_stop() {
    let mut s = sanboot();
    let old = stuck_reader(&s, 1);
    // Same initiator name and ISID: reinstatement.
    let asked = Instant::now();
    let mut new = Initiator::login_with(
        s.port,
        NAME,
        IQN,
        0,
        LoginOptions {
            isid_qualifier: 1,
            ..LoginOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("reinstating login refused: {e}\n{}", s.log()));
    new.ready().unwrap();
    assert_eq!(new.read10(0, 1).unwrap().status, 0);
    // The stuck connection was torn down, not left writing forever.
    assert!(
        s.wait_log("session reinstated by a new login", Duration::from_secs(2)),
        "the zero-window connection was not closed by the reinstatement:\n{}",
        s.log()
    );
    eprintln!(
        "reinstatement of a zero-window session: {:?}",
        asked.elapsed()
    );
    drop(new);

    // Another stuck session, then SIGTERM: sanboot stops anyway.
    let _stuck = stuck_reader(&s, 2);
    let asked = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = s.wait_exit(Duration::from_secs(10));
    let log = s.log();
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(0),
        "sanboot did not stop within 10 s of SIGTERM with a zero-window initiator:\n{log}"
    );
    eprintln!("stop with a zero-window session: {:?}", asked.elapsed());
    assert!(log.contains("sanboot stopped"), "{log}");
    drop(old);
}

#[test]
fn idle_connections_from_many_addresses_make_room_for_a_login() {
    let s = sanboot()
        .with_iscsi_option("max_connections = 64")
        .with_iscsi_option("max_connections_per_ip = 4");
    let mut before = Initiator::login(s.port, NAME, IQN, 0).unwrap();
    before.ready().unwrap();
    // 200 idle connections from 50 addresses, 4 each: the per-address cap
    // lets every one in, the global one does not.
    let mut idle = Vec::new();
    for host in 1..=50u8 {
        for _ in 0..4 {
            idle.push(connect_from(Ipv4Addr::new(127, 0, 1, host), s.port, None).unwrap());
        }
    }
    let asked = Instant::now();
    let mut after = Initiator::login_with(
        s.port,
        NAME,
        IQN,
        0,
        LoginOptions {
            isid_qualifier: 2,
            ..LoginOptions::default()
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "login refused with max_connections filled by idle ones: {e}\n{}",
            s.log()
        )
    });
    let took = asked.elapsed();
    eprintln!("login with max_connections = 64 filled by 200 idle connections: {took:?}");
    assert!(took < Duration::from_secs(2), "login took {took:?}");
    after.ready().unwrap();
    assert_eq!(after.read10(0, 1).unwrap().status, 0);
    // The session from before the flood was not the one to go.
    assert_eq!(before.read10(0, 1).unwrap().status, 0);
    // At most 62 idle ones are left open (64 minus the two sessions).
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = loop {
        let open = idle.iter().filter(|c| !closed_by_peer(c)).count();
        if open <= 62 || Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        open <= 62,
        "{open} idle connections still open\n{}",
        s.log()
    );
    assert!(
        s.log()
            .contains("closed the oldest connection not logged in"),
        "evictions are not logged:\n{}",
        s.log()
    );
}

#[test]
fn max_sessions_above_the_nexus_table_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sanboot.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"127.0.0.1\"\nstate_dir = \"state\"\n\n\
             [dhcp]\nmode = \"off\"\n\n\
             [tftp]\nlisten = \"127.0.0.1:{}\"\n\n\
             [iscsi]\nlisten = \"127.0.0.1:{}\"\nmax_sessions = 65\n",
            iscsi_support::free_port(),
            iscsi_support::free_port()
        ),
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let (code, out) = iscsi_support::run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_sanboot"))
                .arg(cmd)
                .arg("--config")
                .arg(&config),
            Duration::from_secs(20),
        );
        assert_eq!(
            code,
            Some(1),
            "sanboot {cmd} accepted max_sessions = 65:\n{out}"
        );
        assert!(
            out.contains("[iscsi] max_sessions = 65: above 64, the size of the I_T nexus table"),
            "sanboot {cmd}: no clear error:\n{out}"
        );
    }
}
