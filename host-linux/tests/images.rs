//! Golden images as a user sees them: one image, several stations on a real
//! `sanboot serve`, each logging in as its own initiator to the target
//! sanboot made for it, and `sanboot image` run beside the server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iscsi_support::initiator::Initiator;
use iscsi_support::{run_with_timeout, Sanboot};

const SIZE: usize = 32 << 20;

/// What the golden image holds in block `lba`.
fn base_block(lba: u32) -> Vec<u8> {
    vec![(lba % 251) as u8 + 1; 512]
}

fn make_golden(dir: &Path) -> PathBuf {
    let path = dir.join("golden.img");
    let mut bytes = Vec::with_capacity(SIZE);
    for lba in 0..(SIZE / 512) as u32 {
        bytes.extend_from_slice(&base_block(lba));
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Stations pc1..pc4: persistent, volatile, snapshot, persistent.
fn start(golden_dir: &Path) -> Sanboot {
    let golden = make_golden(golden_dir);
    let mut tables = format!(
        "[[image]]\nname = \"golden\"\nfile = \"{}\"\n",
        golden.display()
    );
    for (n, mode) in [
        (1, "persistent"),
        (2, "volatile"),
        (3, "snapshot"),
        (4, "persistent"),
    ] {
        tables.push_str(&format!(
            "[[host]]\nmac = \"52:54:00:00:00:0{n}\"\nhostname = \"pc{n}\"\nimage = \"golden\"\nmode = \"{mode}\"\n"
        ));
    }
    Sanboot::start(&tables)
}

fn target(n: u32) -> String {
    format!("iqn.2026-12.org.sanboot:golden:pc{n}")
}

fn initiator(n: u32) -> String {
    format!("iqn.2010-04.org.ipxe:pc{n}-52-54-00-00-00-0{n}")
}

fn login(s: &Sanboot, n: u32) -> Initiator {
    let mut ini = Initiator::login(s.port, &initiator(n), &target(n), 0)
        .unwrap_or_else(|e| panic!("pc{n} login: {e}\n{}", s.log()));
    ini.ready().unwrap();
    ini
}

fn read(ini: &mut Initiator, lba: u32) -> Vec<u8> {
    let r = ini.read10(lba, 1).unwrap();
    assert_eq!(r.status, 0, "read {lba}: {:02x?}", r.sense);
    r.data
}

fn write(ini: &mut Initiator, lba: u32, byte: u8) {
    let r = ini.write10(lba, &[byte; 512], false).unwrap();
    assert_eq!(r.status, 0, "write {lba}: {:02x?}", r.sense);
}

/// What iPXE does first at each boot: fetch `<mac>.ipxe` over TFTP.
fn fetch_script(s: &Sanboot, n: u32) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(format!("52-54-00-00-00-0{n}.ipxe\0octet\0").as_bytes());
    sock.send_to(&rrq, ("127.0.0.1", s.tftp_port)).unwrap();
    let mut script = Vec::new();
    let mut buf = [0u8; 600];
    loop {
        let (len, from) = sock.recv_from(&mut buf).expect("TFTP answer");
        assert_eq!(&buf[..2], &[0, 3], "TFTP DATA expected: {:?}", &buf[..len]);
        script.extend_from_slice(&buf[4..len]);
        sock.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
        if len < 4 + 512 {
            break;
        }
    }
    String::from_utf8(script).unwrap()
}

/// `sanboot image <args> --config <the server's file>`: (success, output).
fn image(s: &Sanboot, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sanboot"));
    cmd.arg("image")
        .args(args)
        .arg("--config")
        .arg(s.dir().join("sanboot.toml"));
    let (code, out) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    (code == Some(0), out)
}

#[test]
fn two_stations_on_one_image_each_see_their_own_disk() {
    let golden_dir = tempfile::tempdir().unwrap();
    let s = start(golden_dir.path());
    let script = fetch_script(&s, 1);
    assert!(
        script.contains(&target(1)),
        "pc1's script boots its target:\n{script}"
    );

    let mut pc1 = login(&s, 1);
    let mut pc2 = login(&s, 2);
    write(&mut pc1, 100, 0xa1);
    write(&mut pc2, 100, 0xb2);
    assert_eq!(read(&mut pc1, 100), vec![0xa1; 512]);
    assert_eq!(read(&mut pc2, 100), vec![0xb2; 512]);
    // Elsewhere both read the image, also next to a written block (the
    // rest of a copied-up granule).
    for lba in [0, 99, 101, 5000, (SIZE / 512) as u32 - 1] {
        assert_eq!(read(&mut pc1, lba), base_block(lba), "pc1 lba {lba}");
        assert_eq!(read(&mut pc2, lba), base_block(lba), "pc2 lba {lba}");
    }
    // The golden image itself is never written.
    let golden = std::fs::read(golden_dir.path().join("golden.img")).unwrap();
    assert_eq!(&golden[100 * 512..101 * 512], &base_block(100)[..]);
    // libiscsi's discovery as pc1: its own target, no other station's.
    iscsi_support::require_tool("iscsi-ls", "libiscsi-bin");
    let mut ls = Command::new("iscsi-ls");
    ls.args(["-i", &initiator(1), &s.portal()]);
    let (code, out) = run_with_timeout(&mut ls, Duration::from_secs(30));
    assert_eq!(code, Some(0), "iscsi-ls:\n{out}");
    assert!(out.contains(&target(1)), "{out}");
    assert!(
        !out.contains(&target(2)),
        "pc1 discovers pc2's disk:\n{out}"
    );
    // A station's target admits only that station's initiator.
    assert!(
        Initiator::login(s.port, &initiator(1), &target(2), 0).is_err(),
        "pc1 logged in to pc2's disk"
    );
}

#[test]
fn a_volatile_station_forgets_at_boot_a_persistent_one_keeps() {
    let golden_dir = tempfile::tempdir().unwrap();
    let s = start(golden_dir.path());
    let mut pc1 = login(&s, 1);
    let mut pc2 = login(&s, 2);
    write(&mut pc1, 7, 0x11);
    write(&mut pc2, 7, 0x22);
    drop((pc1, pc2));

    // Another login of the same boot (the initramfs, the OS after pivot):
    // nothing is reset.
    let mut pc2 = login(&s, 2);
    assert_eq!(read(&mut pc2, 7), vec![0x22; 512]);

    // A reboot: the station fetches its script, then logs in while the
    // previous boot's session is still open (a reset station never logs
    // out). That session is closed first, then the overlay dropped.
    fetch_script(&s, 2);
    let mut next = login(&s, 2);
    assert_eq!(
        read(&mut next, 7),
        base_block(7),
        "volatile write survived a boot"
    );
    assert!(
        pc2.read10(7, 1).is_err(),
        "the previous boot's session still ran after the reset"
    );
    assert!(
        s.wait_log("the station booted again", Duration::from_secs(5)),
        "{}",
        s.log()
    );

    fetch_script(&s, 1);
    let mut pc1 = login(&s, 1);
    assert_eq!(
        read(&mut pc1, 7),
        vec![0x11; 512],
        "persistent write lost at boot"
    );
}

#[test]
fn snapshot_and_rollback_restore_a_station() {
    let golden_dir = tempfile::tempdir().unwrap();
    let s = start(golden_dir.path());
    let mut pc3 = login(&s, 3);
    write(&mut pc3, 50, 0x33);
    // Taken while the station runs: its I/O is held a moment.
    let (ok, out) = image(&s, &["snapshot", "pc3", "good"]);
    assert!(ok && out.contains("snapshot good taken"), "{out}");
    write(&mut pc3, 50, 0x66);
    write(&mut pc3, 60, 0x66);
    assert_eq!(read(&mut pc3, 50), vec![0x66; 512]);

    // Rollback changes the disk: it waits for the station's next boot.
    let (ok, out) = image(&s, &["rollback", "pc3", "good", "--wait", "1"]);
    assert!(ok && out.contains("pending"), "{out}");
    assert_eq!(
        read(&mut pc3, 50),
        vec![0x66; 512],
        "rolled back under a live session"
    );
    let (_, list) = image(&s, &["list"]);
    assert!(list.contains("[pending: rollback good]"), "{list}");
    fetch_script(&s, 3);
    let mut pc3 = login(&s, 3);
    assert_eq!(read(&mut pc3, 50), vec![0x33; 512]);
    assert_eq!(read(&mut pc3, 60), base_block(60));
    let result = std::fs::read_to_string(s.dir().join("state/overlays/golden/pc3.result")).unwrap();
    assert!(result.contains("rolled back to snapshot good"), "{result}");

    // Snapshots are for snapshot stations; names are checked.
    let (ok, out) = image(&s, &["snapshot", "pc1", "x"]);
    assert!(!ok && out.contains("mode = \"persistent\""), "{out}");
    let (ok, out) = image(&s, &["rollback", "pc3", "nope"]);
    assert!(!ok && out.contains("no snapshot \"nope\""), "{out}");
    let (ok, out) = image(&s, &["reset", "pc9"]);
    assert!(!ok && out.contains("no station \"pc9\""), "{out}");
}

#[test]
fn commit_makes_a_new_base_that_fresh_stations_see() {
    let golden_dir = tempfile::tempdir().unwrap();
    let s = start(golden_dir.path());
    let mut pc3 = login(&s, 3);
    write(&mut pc3, 300, 0x03);
    let mut pc1 = login(&s, 1);
    write(&mut pc1, 300, 0xc1);
    write(&mut pc1, 301, 0xc1);

    let (ok, out) = image(&s, &["commit", "pc1"]);
    assert!(ok && out.contains("committed as version 2"), "{out}");
    // pc1's live session reads the same disk, now as version 2.
    assert_eq!(read(&mut pc1, 300), vec![0xc1; 512]);
    write(&mut pc1, 302, 0xc2);
    assert_eq!(read(&mut pc1, 302), vec![0xc2; 512]);
    let v2 = std::fs::read(golden_dir.path().join("golden.img.v2")).unwrap();
    assert_eq!(&v2[300 * 512..301 * 512], &[0xc1; 512][..]);
    assert_eq!(&v2[302 * 512..303 * 512], &base_block(302)[..]);
    assert_eq!(
        std::fs::read_to_string(golden_dir.path().join("golden.img.current")).unwrap(),
        "2\n"
    );

    // pc4 never wrote: at its next boot it starts on version 2. pc2 is
    // volatile: the same. pc3 keeps its own writes on version 1.
    for n in [4, 2] {
        fetch_script(&s, n);
        let mut ini = login(&s, n);
        assert_eq!(read(&mut ini, 300), vec![0xc1; 512], "pc{n}");
        assert_eq!(read(&mut ini, 302), base_block(302), "pc{n}");
    }
    drop(pc3);
    fetch_script(&s, 3);
    let mut pc3 = login(&s, 3);
    assert_eq!(read(&mut pc3, 300), vec![0x03; 512]);
    assert_eq!(read(&mut pc3, 301), base_block(301));
    let (_, list) = image(&s, &["list"]);
    assert!(list.contains("(current)"), "{list}");
    let version_of = |host: &str| {
        list.lines()
            .find(|l| l.trim_start().starts_with(host))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        (version_of("pc1"), version_of("pc3"), version_of("pc4")),
        ("2".into(), "1".into(), "2".into()),
        "{list}"
    );
    // Reset moves pc3 to the new version too (at its next boot).
    let (ok, out) = image(&s, &["reset", "pc3", "--wait", "1"]);
    assert!(ok && out.contains("pending"), "{out}");
    drop(pc3);
    fetch_script(&s, 3);
    let mut pc3 = login(&s, 3);
    assert_eq!(read(&mut pc3, 300), vec![0xc1; 512]);
}

#[test]
fn image_list_shows_space_per_station() {
    let golden_dir = tempfile::tempdir().unwrap();
    let s = start(golden_dir.path());
    let mut pc1 = login(&s, 1);
    // 4 MiB in 1 MiB writes.
    for i in 0..4u32 {
        let r = pc1.write10(i * 2048, &vec![0x5a; 1 << 20], false).unwrap();
        assert_eq!(r.status, 0);
    }
    pc1.sync_cache().unwrap();
    let (ok, list) = image(&s, &["list"]);
    assert!(ok, "{list}");
    assert!(list.contains("image golden"), "{list}");
    assert!(list.contains("version 1:"), "{list}");
    let used = |host: &str| -> f64 {
        let line = list
            .lines()
            .find(|l| l.trim_start().starts_with(host))
            .unwrap_or_else(|| panic!("no {host} in\n{list}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let (n, unit) = (f[3].parse::<f64>().unwrap(), f[4]);
        n * match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1048576.0,
            "GiB" => 1073741824.0,
            u => panic!("unit {u}"),
        }
    };
    let (pc1, pc2) = (used("pc1"), used("pc2"));
    assert!(pc1 >= 4.0 * 1048576.0, "pc1 overlay {pc1} B:\n{list}");
    assert!(
        pc2 < 1048576.0,
        "pc2 wrote nothing but uses {pc2} B:\n{list}"
    );
    for (host, mode) in [
        ("pc1", "persistent"),
        ("pc2", "volatile"),
        ("pc3", "snapshot"),
    ] {
        let line = list
            .lines()
            .find(|l| l.trim_start().starts_with(host))
            .unwrap();
        assert!(line.contains(mode), "{line}");
    }
}

#[test]
fn a_station_that_is_off_is_reset_at_once_and_serve_applies_what_waited() {
    let golden_dir = tempfile::tempdir().unwrap();
    let mut s = start(golden_dir.path());
    // pc4 has not been connected since serve started: nothing to wait for.
    let (ok, out) = image(&s, &["reset", "pc4"]);
    assert!(ok && out.contains("pc4: overlay dropped"), "{out}");

    // pc1 writes, so its reset waits for its next boot...
    let mut pc1 = login(&s, 1);
    write(&mut pc1, 9, 0x99);
    drop(pc1);
    let (ok, out) = image(&s, &["reset", "pc1", "--wait", "1"]);
    assert!(ok && out.contains("pending"), "{out}");
    // ...or for the next start of serve (here after a crash), which
    // applies it before serving.
    s.kill9();
    s.reap();
    s.restart();
    let mut pc1 = login(&s, 1);
    assert_eq!(read(&mut pc1, 9), base_block(9));
    let (_, list) = image(&s, &["list"]);
    assert!(!list.contains("[pending:"), "{list}");
}
