//! A script that carries a CHAP secret goes only to its station's address.
//!
//! sanboot runs in ProxyDHCP mode inside a network namespace this test
//! creates (and removes), on its loopback device. A "station" in that
//! namespace sends iPXE's ProxyDHCP request to port 4011 from 127.0.0.2;
//! sanboot answers and so learns that address for the station's MAC. The
//! station's `<mac>.ipxe` is then served to 127.0.0.2 only: 127.0.0.1 gets
//! "file not found", and the log names the requester and the MAC. When the
//! station's next DHCPREQUEST to the router (heard on port 67, not
//! answered) asks for 127.0.0.3, the script follows it. A chain host's
//! script (no secret) goes to anyone.
//!
//! The client side runs in the namespace by re-running this test binary
//! under `ip netns exec` (the `station_helper` test, inert without its
//! environment variables).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
const CHAIN_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0c];
const STATION: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SECRET: &str = "station-a-secret";

fn hexhyp(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// A network namespace with loopback up, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("sbchap-{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `sanboot serve` inside the namespace; killed by PID on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(ns: &Netns) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
[server]
address = "127.0.0.1"
interface = "lo"
state_dir = "state"
[dhcp]
mode = "proxy"
[tftp]
listen = "127.0.0.1:69"
[iscsi]
listen = "127.0.0.1:3260"

[[target]]
iqn = "iqn.2026-12.test.sanboot:disk-a"
[[target.lun]]
id = 0
image = "a.img"
size = 8388608

[[host]]
mac = "{}"
target = "iqn.2026-12.test.sanboot:disk-a"
initiator_iqn = "iqn.2026-12.test.sanboot:station-a"
[host.chap]
user = "station-a"
secret = "{SECRET}"

[[host]]
mac = "{}"
boot = "chain"
chain = "http://192.0.2.9/menu.ipxe"
"#,
            hexhyp(SECRET_MAC),
            hexhyp(CHAIN_MAC)
        );
        let path = dir.path().join("sanboot.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("sanboot.log")).unwrap();
        // `ip netns exec` execs sanboot in place: the child's PID is sanboot's.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_sanboot")])
            .args(["serve", "--config"])
            .arg(&path)
            .env("SANBOOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Server { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(s.log().contains("TFTP listening") && s.log().contains("DHCP listening")) {
            assert!(
                Instant::now() < deadline,
                "sanboot did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sanboot.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one client action inside the namespace; returns its RESULT line.
fn in_ns(ns: &Netns, action: &str, src: Ipv4Addr, arg: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["station_helper", "--exact", "--ignored", "--nocapture"])
        .env("STATION_ACTION", action)
        .env("STATION_SRC", src.to_string())
        .env("STATION_ARG", arg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT: "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "helper gave no result:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn a_secret_script_goes_only_to_the_address_its_station_used() {
    let ns = Netns::new();
    let s = Server::start(&ns);
    let secret = format!("{}.ipxe", hexhyp(SECRET_MAC));
    let chain = format!("{}.ipxe", hexhyp(CHAIN_MAC));

    // Before the station did DHCP with sanboot, nobody gets it.
    let r = in_ns(&ns, "tftp", STATION, &secret);
    assert!(
        r.starts_with("ERROR 1"),
        "served before DHCP: {r}\n{}",
        s.log()
    );

    // The station's ProxyDHCP request on 4011 from 127.0.0.2.
    let r = in_ns(&ns, "dhcp4011", STATION, &hexhyp(SECRET_MAC));
    assert!(r.starts_with("ACK"), "no ProxyDHCP ACK: {r}\n{}", s.log());

    let r = in_ns(&ns, "tftp", STATION, &secret);
    assert!(
        r.starts_with("DATA") && r.contains(SECRET),
        "the station's own address was refused: {r}\n{}",
        s.log()
    );
    let r = in_ns(&ns, "tftp", OTHER, &secret);
    assert!(
        r.starts_with("ERROR 1") && !r.contains(SECRET),
        "another address got the script: {r}"
    );
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused") && l.contains(&format!("from {OTHER}")))
        .unwrap_or_else(|| panic!("no refusal line for {OTHER}:\n{log}"));
    assert!(
        line.contains(&hexhyp(SECRET_MAC)) && line.contains(&STATION.to_string()),
        "the refusal does not name the MAC and the station's address: {line}"
    );

    // The station reboots and asks the router for another address: its
    // DHCPREQUEST on port 67 (which a proxy does not answer) names it, and
    // the script follows it (QEMU's iPXE never asks 4011 at all).
    let moved = Ipv4Addr::new(127, 0, 0, 3);
    let r = in_ns(&ns, "request67", moved, &hexhyp(SECRET_MAC));
    assert_eq!(r, "SENT");
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = in_ns(&ns, "tftp", moved, &secret);
        if r.starts_with("DATA") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        r.contains(SECRET),
        "the new address was refused: {r}\n{}",
        s.log()
    );
    let r = in_ns(&ns, "tftp", STATION, &secret);
    assert!(
        r.starts_with("ERROR 1"),
        "the old address still got it: {r}"
    );

    // A script without a secret still goes to anyone.
    let r = in_ns(&ns, "tftp", OTHER, &chain);
    assert!(
        r.starts_with("DATA") && r.contains("chain http://192.0.2.9/menu.ipxe"),
        "the chain host's script was refused: {r}"
    );
}

// ---- the client side, run inside the namespace ----

fn dhcp_request(mac: [u8; 6], ciaddr: Ipv4Addr, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&0x5eed_0001u32.to_be_bytes());
    p[12..16].copy_from_slice(&ciaddr.octets());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 3]); // DHCPREQUEST
    p.extend_from_slice(&[54, 4, 127, 0, 0, 1]); // server id
    if let Some(ip) = requested {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
    }
    let vc = b"PXEClient:Arch:00000:UNDI:002001";
    p.extend_from_slice(&[60, vc.len() as u8]);
    p.extend_from_slice(vc);
    p.extend_from_slice(&[77, 4]);
    p.extend_from_slice(b"iPXE");
    p.push(255);
    p
}

fn helper_dhcp(src: Ipv4Addr, mac: &str) -> String {
    let mac: Vec<u8> = mac
        .split('-')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let sock = UdpSocket::bind(SocketAddrV4::new(src, 68)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let req = dhcp_request(mac.try_into().unwrap(), src, None);
    sock.send_to(&req, "127.0.0.1:4011").unwrap();
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        // Option 53 = 5 (ACK) follows the cookie in sanboot's replies.
        Ok((n, from)) if n > 242 && buf[240..243] == [53, 1, 5] => format!("ACK from {from}"),
        Ok((n, from)) => format!("OTHER {n} bytes from {from}"),
        Err(e) => format!("TIMEOUT {e}"),
    }
}

/// iPXE's DHCPREQUEST to the router (from 0.0.0.0, option 50 = `want`),
/// which sanboot in proxy mode hears on port 67 but does not answer.
fn helper_request67(want: Ipv4Addr, mac: &str) -> String {
    let mac: Vec<u8> = mac
        .split('-')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let sock = UdpSocket::bind("0.0.0.0:68").unwrap();
    let req = dhcp_request(mac.try_into().unwrap(), Ipv4Addr::UNSPECIFIED, Some(want));
    sock.send_to(&req, "127.0.0.1:67").unwrap();
    "SENT".into()
}

fn helper_tftp(src: Ipv4Addr, file: &str) -> String {
    let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    sock.send_to(&rrq, "127.0.0.1:69").unwrap();
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) if n >= 4 && buf[1] == 3 => {
            // Scripts are one block: acknowledge it so the transfer ends.
            let _ = sock.send_to(&[0, 4, buf[2], buf[3]], from);
            let text = String::from_utf8_lossy(&buf[4..n]).replace('\n', "\\n");
            format!("DATA {text}")
        }
        Ok((n, _)) if n >= 4 && buf[1] == 5 => format!(
            "ERROR {} {}",
            u16::from_be_bytes([buf[2], buf[3]]),
            String::from_utf8_lossy(&buf[4..n - 1])
        ),
        Ok((n, _)) => format!("OTHER {n} bytes"),
        Err(e) => format!("TIMEOUT {e}"),
    }
}

/// Not a test of its own: the client side of the test above, run by it
/// inside the namespace. Does nothing without `STATION_ACTION`.
#[test]
#[ignore = "run by a_secret_script_goes_only_to_the_address_its_station_used"]
fn station_helper() {
    let Ok(action) = std::env::var("STATION_ACTION") else {
        return;
    };
    let src: Ipv4Addr = std::env::var("STATION_SRC").unwrap().parse().unwrap();
    let arg = std::env::var("STATION_ARG").unwrap();
    let result = match action.as_str() {
        "dhcp4011" => helper_dhcp(src, &arg),
        "tftp" => helper_tftp(src, &arg),
        "request67" => helper_request67(src, &arg),
        other => panic!("unknown action {other}"),
    };
    println!("RESULT: {result}");
}
