//! `sanboot serve` on 127.0.0.1 against the real TFTP clients: tftp-hpa,
//! curl (which always sends tsize/blksize/timeout) and atftp (blksize +
//! windowsize). Every download is compared byte for byte with the file.
//! A missing client binary fails the test: CI installs them
//! (`apt-get install tftp-hpa curl atftp`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    /// Starts sanboot with DHCP off and TFTP on a free loopback port.
    /// `with_root` gives it a `root/` directory; `extra` is appended to `[tftp]`.
    fn start(with_root: bool, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let root_line = if with_root {
            std::fs::create_dir(dir.path().join("root")).unwrap();
            "root = \"root\"\n"
        } else {
            ""
        };
        let config = format!(
            "[server]\naddress = \"127.0.0.1\"\n\
             [dhcp]\nmode = \"off\"\n\
             [iscsi]\nlisten = \"127.0.0.1:0\"\n\
             [tftp]\nlisten = \"127.0.0.1:{port}\"\n{root_line}{extra}\n"
        );
        let config_path = dir.path().join("sanboot.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("sanboot.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sanboot"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("SANBOOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            port,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.log_text().contains("TFTP listening") {
            assert!(
                Instant::now() < deadline,
                "sanboot did not start:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Deterministic pseudo-random contents (xorshift), so a wrong offset shows.
fn contents(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn client(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "TFTP client `{name}` is not installed; these interop tests need it \
         (Debian: apt-get install tftp-hpa curl atftp)"
    );
    let mut c = Command::new(name);
    c.stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("{c:?} did not finish in 120 s: {err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tftp_hpa(s: &Server, remote: &str, local: &Path) -> Output {
    let mut c = client("tftp");
    c.args([
        "-m",
        "binary",
        "127.0.0.1",
        &s.port.to_string(),
        "-c",
        "get",
        remote,
    ])
    .arg(local);
    run(c)
}

fn curl(s: &Server, remote: &str, local: &Path, extra: &[&str]) -> Output {
    let mut c = client("curl");
    c.args(["-sS", "--fail", "--path-as-is", "--max-time", "100"])
        .args(extra)
        .arg("-o")
        .arg(local)
        .arg(format!("tftp://127.0.0.1:{}/{remote}", s.port));
    run(c)
}

fn atftp(s: &Server, remote: &str, local: &Path, options: &[&str]) -> Output {
    let mut c = client("atftp");
    for o in options {
        c.args(["--option", o]);
    }
    c.args(["--tftp-timeout", "2", "-g", "-r", remote, "-l"])
        .arg(local)
        .args(["127.0.0.1", &s.port.to_string()]);
    run(c)
}

#[track_caller]
fn assert_downloaded(s: &Server, out: &Output, local: &Path, want: &[u8]) {
    assert!(
        out.status.success(),
        "client failed: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log_text()
    );
    let got = std::fs::read(local).unwrap();
    assert_eq!(got.len(), want.len(), "length");
    assert!(got == want, "contents differ");
}

/// tftp-hpa "succeeds" even on an ERROR (prints it, exit code 0), so refusals
/// are judged by what it wrote and said.
#[track_caller]
fn assert_refused(out: &Output, local: &Path, secret: &[u8]) {
    let got = std::fs::read(local).unwrap_or_default();
    assert!(
        !got.windows(secret.len()).any(|w| w == secret),
        "secret leaked: {:?}",
        String::from_utf8_lossy(&got)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || said.to_ascii_lowercase().contains("error"),
        "no error reported: status {:?}, output {said}",
        out.status
    );
}

#[test]
fn tftp_hpa_plain_rfc1350() {
    let s = Server::start(true, "");
    // 3 full 512-byte blocks: the transfer ends with an empty DATA 4.
    for (name, len) in [("exact.bin", 1536), ("odd.bin", 300_001), ("empty.bin", 0)] {
        let data = contents(len, len as u64);
        std::fs::write(s.root().join(name), &data).unwrap();
        let local = s.out(name);
        let out = tftp_hpa(&s, name, &local);
        assert_downloaded(&s, &out, &local, &data);
    }
    assert!(s
        .log_text()
        .contains("TFTP RRQ odd.bin from 127.0.0.1 blksize=512"));
    assert!(s
        .log_text()
        .contains("TFTP done odd.bin to 127.0.0.1: 300001 bytes"));
}

#[test]
fn tftp_hpa_block_number_wraps_past_32_mib() {
    let s = Server::start(true, "");
    // 67 585 blocks of 512: the 16-bit block number wraps once.
    let data = contents(33 * 1024 * 1024 + 100, 5);
    std::fs::create_dir(s.root().join("big")).unwrap();
    std::fs::write(s.root().join("big/wrap.bin"), &data).unwrap();
    let local = s.out("wrap.bin");
    let out = tftp_hpa(&s, "/big/wrap.bin", &local);
    assert_downloaded(&s, &out, &local, &data);
}

#[test]
fn curl_with_tsize_blksize_timeout() {
    let s = Server::start(true, "");
    let data = contents(1_000_003, 9);
    std::fs::create_dir(s.root().join("sub")).unwrap();
    std::fs::write(s.root().join("sub/ipxe.efi"), &data).unwrap();
    let local = s.out("a");
    let out = curl(&s, "sub/ipxe.efi", &local, &[]);
    assert_downloaded(&s, &out, &local, &data);
    let local = s.out("b");
    let out = curl(&s, "sub/ipxe.efi", &local, &["--tftp-blksize", "1428"]);
    assert_downloaded(&s, &out, &local, &data);
    let local = s.out("c");
    let out = curl(&s, "sub/ipxe.efi", &local, &["--tftp-no-options"]);
    assert_downloaded(&s, &out, &local, &data);
    // A blksize above the configured maximum is clamped, and curl copes.
    let local = s.out("d");
    let out = curl(&s, "sub/ipxe.efi", &local, &["--tftp-blksize", "65464"]);
    assert_downloaded(&s, &out, &local, &data);
    let log = s.log_text();
    assert!(log.contains("TFTP RRQ sub/ipxe.efi from 127.0.0.1 blksize=1428 windowsize=1 tsize"));
    assert!(log.contains("blksize=1468"), "{log}");
}

#[test]
fn atftp_with_windowsize() {
    let s = Server::start(true, "");
    let data = contents(4 * 1024 * 1024 + 17, 3);
    std::fs::write(s.root().join("small.bin"), &data).unwrap();
    for (i, opts) in [
        &["blksize 1428", "windowsize 8"][..],
        &["blksize 1428", "windowsize 64"],
        &["blksize 8192", "windowsize 4", "tsize enable"],
        &[],
    ]
    .into_iter()
    .enumerate()
    {
        let local = s.out(&format!("w{i}"));
        let out = atftp(&s, "small.bin", &local, opts);
        assert_downloaded(&s, &out, &local, &data);
    }
    let log = s.log_text();
    assert!(log.contains("blksize=1428 windowsize=8"), "{log}");
    assert!(log.contains("blksize=1428 windowsize=64"), "{log}");
    assert!(log.contains("blksize=1468 windowsize=4 tsize"), "{log}");
}

#[test]
fn parallel_downloads() {
    let s = Server::start(true, "");
    let data = contents(2 * 1024 * 1024, 11);
    std::fs::write(s.root().join("p.bin"), &data).unwrap();
    let children: Vec<_> = (0..12)
        .map(|i| {
            let local = s.out(&format!("p{i}"));
            let mut c = client("atftp");
            c.args(["--option", "blksize 1428", "--option", "windowsize 16"])
                .args(["--tftp-timeout", "2", "-g", "-r", "p.bin", "-l"])
                .arg(&local)
                .args(["127.0.0.1", &s.port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (local, c.spawn().unwrap())
        })
        .collect();
    for (local, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_downloaded(&s, &out, &local, &data);
    }
}

#[test]
fn traversal_is_refused_for_every_client() {
    let s = Server::start(true, "");
    let secret = b"TOP-SECRET-DO-NOT-SERVE";
    std::fs::write(s.dir.path().join("secret"), secret).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("secret"), s.root().join("link")).unwrap();
    let names = [
        "../secret",
        "..\\secret",
        "a/../../secret",
        "/../secret",
        "link",
        "sanboot.toml",
        "C:\\secret",
    ];
    for (i, name) in names.iter().enumerate() {
        let local = s.out(&format!("hpa{i}"));
        assert_refused(&tftp_hpa(&s, name, &local), &local, secret);
        let local = s.out(&format!("atftp{i}"));
        assert_refused(&atftp(&s, name, &local, &[]), &local, secret);
        if !name.contains('\\') {
            let local = s.out(&format!("curl{i}"));
            assert_refused(&curl(&s, name, &local, &[]), &local, secret);
        }
    }
    assert!(s.log_text().contains("resolves outside the root"));
}

#[test]
fn virtual_files_without_a_root() {
    let s = Server::start(false, "");
    let local = s.out("boot.ipxe");
    let out = curl(&s, "boot.ipxe", &local, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log_text()
    );
    let script = std::fs::read(&local).unwrap();
    assert!(
        script.starts_with(b"#!ipxe"),
        "{}",
        String::from_utf8_lossy(&script)
    );
    // Same bytes through tftp-hpa (no options: served lock-step at 512).
    let local2 = s.out("boot2.ipxe");
    let out = tftp_hpa(&s, "/boot.ipxe", &local2);
    assert_downloaded(&s, &out, &local2, &script);
    // With no root, nothing else exists.
    let local = s.out("nope");
    let out = curl(&s, "undionly.kpxe", &local, &[]);
    assert!(!out.status.success());
}

/// Raw-socket checks of what clients cannot easily provoke: WRQ, a busy
/// server, a repeated RRQ and garbage on the listening port.
#[test]
fn raw_protocol_edges() {
    let s = Server::start(true, "max_transfers = 1\n");
    std::fs::write(s.root().join("f"), contents(100_000, 1)).unwrap();
    let server = format!("127.0.0.1:{}", s.port);
    let sock = || {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u
    };
    let recv = |u: &UdpSocket| {
        let mut buf = [0u8; 2048];
        let (n, from) = u.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    };

    let w = sock();
    w.send_to(b"\x00\x02up.bin\x00octet\x00", &server).unwrap();
    let (reply, _) = recv(&w);
    assert_eq!(&reply[..4], b"\x00\x05\x00\x02", "WRQ → ERROR 2");

    // Garbage gets no answer and breaks nothing.
    w.send_to(b"\x00\x09garbage", &server).unwrap();
    w.send_to(b"\x00", &server).unwrap();

    // First client takes the only slot and sits on DATA 1 without ACKing.
    let a = sock();
    a.send_to(b"\x00\x01f\x00octet\x00", &server).unwrap();
    let (data1, transfer_port) = recv(&a);
    assert_eq!(&data1[..4], b"\x00\x03\x00\x01");
    assert_ne!(transfer_port.port(), s.port, "a transfer gets its own port");
    // Its repeated RRQ is not a second transfer (no second DATA 1 from a new port).
    a.send_to(b"\x00\x01f\x00octet\x00", &server).unwrap();
    // A second client is refused while the first runs.
    let b = sock();
    b.send_to(b"\x00\x01f\x00octet\x00", &server).unwrap();
    let (reply, _) = recv(&b);
    assert_eq!(&reply[..4], b"\x00\x05\x00\x00");
    assert!(reply.windows(18).any(|w| w == b"Too many transfers"));
    // The first transfer carries on.
    a.send_to(b"\x00\x04\x00\x01", transfer_port).unwrap();
    let (data2, from) = recv(&a);
    assert_eq!(
        (&data2[..4], from),
        (&b"\x00\x03\x00\x02"[..], transfer_port)
    );
    // Whatever reaches `a` now is from the transfer port: the repeated RRQ made nothing new.
    a.send_to(b"\x00\x05\x00\x00bye\x00", transfer_port)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The slot is free again.
    b.send_to(b"\x00\x01f\x00octet\x00", &server).unwrap();
    let (reply, _) = recv(&b);
    assert_eq!(&reply[..4], b"\x00\x03\x00\x01");
}
