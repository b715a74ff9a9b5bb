//! `sanboot serve` with `[http]` on 127.0.0.1, fetched with curl as a user
//! (or iPXE) would: whole files, byte ranges, HEAD, the generated scripts,
//! read-only LUN images, and every way out of the root we could think of.
//! curl must be installed (`apt-get install curl`); a missing one fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IQN: &str = "iqn.2024-01.test.http:ro";
const MAC: &str = "52-54-00-e2-e0-01";

struct Server {
    child: Child,
    port: u16,
    iscsi: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, iscsi) = (free(), free());
        let config = format!(
            r#"
[server]
address = "127.0.0.1"
[dhcp]
mode = "off"
[tftp]
listen = "127.0.0.1:0"
root = "root"
[iscsi]
listen = "127.0.0.1:{iscsi}"
[http]
listen = "127.0.0.1:{port}"
{extra}
[[target]]
iqn = "{IQN}"
[[target.lun]]
id = 1
image = "ro.img"
read_only = true
[[target.lun]]
id = 2
image = "rw.img"
size = 1048576
[[host]]
mac = "52:54:00:e2:e0:01"
hostname = "pc1"
target = "{IQN}"
lun = 1
"#
        );
        std::fs::write(dir.path().join("ro.img"), contents(1 << 20, 7)).unwrap();
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
            iscsi,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.log_text().contains("HTTP boot serving") {
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// curl with `args` on `path`; returns (status, headers, body).
    fn curl(&self, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
        let out_dir = tempfile::tempdir().unwrap();
        let headers = out_dir.path().join("headers");
        let body = out_dir.path().join("body");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--path-as-is", "-D"])
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(self.url(path))
            .output()
            .expect("curl must be installed");
        let code = String::from_utf8_lossy(&out.stdout);
        let code = code
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {path}: {out:?}"));
        (
            code,
            std::fs::read_to_string(&headers)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            std::fs::read(&body).unwrap_or_default(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn whole_files_ranges_and_head() {
    let s = Server::start("");
    // Larger than several read chunks and not a multiple of any.
    let data = contents(3 * 1024 * 1024 + 12_345, 1);
    std::fs::create_dir(s.root().join("boot")).unwrap();
    std::fs::write(s.root().join("boot/vmlinuz"), &data).unwrap();

    let (code, h, body) = s.curl(&[], "/boot/vmlinuz");
    assert_eq!(code, 200);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "whole file differs");
    assert_eq!(header(&h, "content-length"), Some(&*data.len().to_string()));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));

    let (code, h, body) = s.curl(&["-r", "1000000-1999999"], "/boot/vmlinuz");
    assert_eq!(code, 206);
    assert!(body == data[1_000_000..2_000_000], "range differs");
    assert_eq!(
        header(&h, "content-range"),
        Some(&*format!("bytes 1000000-1999999/{}", data.len()))
    );

    let (code, _, body) = s.curl(&["-r", "-100"], "/boot/vmlinuz");
    assert_eq!(code, 206);
    assert!(body == data[data.len() - 100..]);
    let (code, _, body) = s.curl(&["-r", "3000000-"], "/boot/vmlinuz");
    assert_eq!(code, 206);
    assert!(body == data[3_000_000..]);

    let (code, h, body) = s.curl(&["-r", "99999999-"], "/boot/vmlinuz");
    assert_eq!(code, 416);
    assert_eq!(
        header(&h, "content-range"),
        Some(&*format!("bytes */{}", data.len()))
    );
    assert!(!body.windows(16).any(|w| data.windows(16).next() == Some(w)));

    // Several ranges are allowed to be ignored: the whole file, 200.
    let (code, _, body) = s.curl(&["-r", "0-9,20-29"], "/boot/vmlinuz");
    assert_eq!(code, 200);
    assert!(body == data);

    // With -I curl writes the headers where the body would go.
    let (code, h, body) = s.curl(&["-I"], "/boot/vmlinuz");
    assert_eq!(code, 200);
    assert!(body.len() < 1000, "HEAD sent a body");
    assert_eq!(header(&h, "content-length"), Some(&*data.len().to_string()));

    let (code, _, _) = s.curl(&[], "/boot/missing");
    assert_eq!(code, 404);
    let (code, _, _) = s.curl(&["-X", "POST"], "/boot/vmlinuz");
    assert_eq!(code, 405);
    // A directory is not a file.
    let (code, _, _) = s.curl(&[], "/boot");
    assert_eq!(code, 404);
}

#[test]
fn nothing_outside_the_root_is_reachable() {
    let s = Server::start("");
    let secret = b"top secret, outside the root";
    std::fs::write(s.dir.path().join("secret"), secret).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("secret"), s.root().join("link-out")).unwrap();
    std::fs::write(s.root().join("ok"), b"fine").unwrap();
    assert_eq!(s.curl(&[], "/ok").0, 200, "the control request works");
    for path in [
        "/../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/%2e%2e%2fsecret",
        "/ok/../../secret",
        "/..%5csecret",
        "//..//secret",
        "/link-out",
        "/sanboot.toml",
        "/%00secret",
        &format!("/{}", s.dir.path().join("secret").display()),
        "//etc/passwd",
        "/C:/secret",
    ] {
        let (code, _, body) = s.curl(&[], path);
        assert!(
            code == 403 || code == 404,
            "{path}: {code} {:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !body.windows(secret.len()).any(|w| w == secret),
            "{path} leaked the secret"
        );
    }
    assert!(s.log_text().contains("resolves outside the root"));
}

#[test]
fn scripts_chain_over_http_and_images_need_opting_in() {
    let s = Server::start("images = true");
    let (code, h, body) = s.curl(&[], "/boot.ipxe");
    assert_eq!(code, 200);
    assert_eq!(header(&h, "content-type"), Some("text/plain"));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("#!ipxe\nchain http://127.0.0.1:{}/default.ipxe\n", s.port)
    );
    let (code, _, body) = s.curl(&[], &format!("/{MAC}.ipxe"));
    assert_eq!(code, 200, "{}", s.log_text());
    assert!(String::from_utf8(body)
        .unwrap()
        .contains(&format!("sanboot iscsi:127.0.0.1::{}:1:{IQN}", s.iscsi)));
    // The scripts honour ranges like files.
    let (code, _, body) = s.curl(&["-r", "0-5"], "/boot.ipxe");
    assert_eq!((code, &body[..]), (206, &b"#!ipxe"[..]));

    // The read-only LUN, whole and by range; the writable one is not served.
    let image = contents(1 << 20, 7);
    let (code, _, body) = s.curl(&[], &format!("/images/{IQN}/1"));
    assert_eq!(code, 200, "{}", s.log_text());
    assert!(body == image);
    let (code, _, body) = s.curl(&["-r", "512-1023"], &format!("/images/{IQN}/1"));
    assert_eq!(code, 206);
    assert!(body == image[512..1024]);
    assert_eq!(s.curl(&[], &format!("/images/{IQN}/2")).0, 404);
    assert_eq!(s.curl(&[], &format!("/images/{IQN}/9")).0, 404);

    let s = Server::start("");
    assert_eq!(s.curl(&[], &format!("/images/{IQN}/1")).0, 404);
}

#[test]
fn sigterm_stops_serve_during_a_slow_download() {
    let mut s = Server::start("");
    std::fs::write(s.root().join("big"), contents(8 << 20, 3)).unwrap();
    // A client that reads slowly keeps a response (and its reader) busy.
    let mut slow = Command::new("curl")
        .args(["-sS", "--limit-rate", "200k", "-o", "/dev/null"])
        .arg(s.url("/big"))
        .spawn()
        .expect("curl must be installed");
    let started = Instant::now();
    while !s.log_text().contains("path=/big") {
        assert!(started.elapsed() < Duration::from_secs(10), "no request");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let since = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "sanboot still running 5 s after SIGTERM:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}: {}", s.log_text());
    let _ = slow.kill();
    let _ = slow.wait();
}
