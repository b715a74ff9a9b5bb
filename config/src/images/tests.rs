#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use super::ops;
use super::request::Request;
use super::*;

const HEAD: &str = r#"
[server]
address = "192.0.2.1"
interface = "br0"
state_dir = "state"
"#;

const MAC1: &str = "52:54:00:00:00:01";

/// A config file in a fresh directory holding a 1 MiB golden image.
fn load(dir: &Path, body: &str) -> Result<Config> {
    let golden = dir.join("golden.img");
    if !golden.exists() {
        std::fs::write(&golden, vec![0x11u8; 1 << 20]).unwrap();
    }
    let path = dir.join("sanboot.toml");
    std::fs::write(&path, format!("{HEAD}\n{body}")).unwrap();
    Config::load(&path)
}

fn err(dir: &Path, body: &str) -> String {
    format!("{:#}", load(dir, body).unwrap_err())
}

const IMAGE: &str = "[[image]]\nname = \"golden\"\nfile = \"golden.img\"\n";

fn host(mac: &str, hostname: &str, extra: &str) -> String {
    format!("[[host]]\nmac = \"{mac}\"\nhostname = \"{hostname}\"\nimage = \"golden\"\n{extra}\n")
}

#[test]
fn a_station_gets_its_own_target_overlay_and_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(dir.path(), &format!("{IMAGE}{}", host(MAC1, "pc1", ""))).unwrap();
    let t = c.target("iqn.2026-12.org.sanboot:golden:pc1").unwrap();
    // The host's own initiator name, and no one else.
    assert_eq!(
        t.initiators,
        vec!["iqn.2010-04.org.ipxe:pc1-52-54-00-00-00-01".to_string()]
    );
    assert_eq!(t.luns.len(), 1);
    assert_eq!(t.luns[0].id, 0);
    assert_eq!(
        t.luns[0].image,
        dir.path().join("state/overlays/golden/pc1.ovl")
    );
    let h = &c.hosts[0];
    assert_eq!(
        (h.target.as_deref(), h.lun),
        (Some("iqn.2026-12.org.sanboot:golden:pc1"), 0)
    );
    // The script boots it.
    let script = crate::script::render_for_mac(&c, parse(MAC1)).unwrap();
    assert!(
        script.contains("iscsi:192.0.2.1::::iqn.2026-12.org.sanboot:golden:pc1"),
        "{script}"
    );
    let s = station(&c, "PC1").unwrap();
    assert_eq!(s.mode, StationMode::Persistent);
    assert_eq!(s.version().unwrap(), 1);
    assert_eq!(s.base_file(1), dir.path().join("golden.img"));
}

fn parse(mac: &str) -> [u8; 6] {
    crate::parse_mac(mac).unwrap()
}

#[test]
fn image_keys_set_prefix_and_overlay_dir() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[image]]\nname = \"golden\"\nfile = \"golden.img\"\niqn = \"iqn.2024-01.lan.example:golden\"\n\
         overlay_dir = \"/srv/ovl\"\ngranularity = 65536\n{}",
        host(MAC1, "Lab-PC1", "mode = \"snapshot\"")
    );
    let c = load(dir.path(), &body).unwrap();
    let s = station(&c, "lab-pc1").unwrap();
    assert_eq!(s.target_iqn, "iqn.2024-01.lan.example:golden:lab-pc1");
    assert_eq!(s.overlay, Path::new("/srv/ovl/golden/Lab-PC1.ovl"));
    assert_eq!(s.mode, StationMode::Snapshot);
    assert_eq!(s.granularity, Some(65536));
    assert!(c.target("iqn.2024-01.lan.example:golden:lab-pc1").is_some());
}

#[test]
fn check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(String, &str)> = vec![
        (
            host(MAC1, "pc1", ""),
            "image \"golden\" is not defined (defined [[image]] names: none)",
        ),
        (
            "[[image]]\nname = \"golden\"\nfile = \"missing.img\"\n".to_string(),
            "[[image]] golden: file",
        ),
        (
            format!(
                "{IMAGE}{}{}",
                host(MAC1, "pc1", ""),
                host("52:54:00:00:00:02", "PC1", "")
            ),
            "both have hostname \"PC1\"",
        ),
        (
            format!("{IMAGE}[[host]]\nmac = \"{MAC1}\"\nimage = \"golden\"\n"),
            "a host with `image` needs `hostname`",
        ),
        (
            format!("{IMAGE}{}", host(MAC1, "pc1", "target = \"iqn.2024-01.x:y\"")),
            "`image` and `target` exclude each other",
        ),
        (
            format!("[[host]]\nmac = \"{MAC1}\"\nboot = \"chain\"\nchain = \"http://x/\"\nmode = \"volatile\"\n"),
            "`mode` is for hosts that boot an `image`",
        ),
        (
            format!("[boot]\ndirect = true\n{IMAGE}{}", host(MAC1, "pc1", "mode = \"volatile\"")),
            "mode = \"volatile\" needs the per-MAC script chain",
        ),
        (
            format!("{IMAGE}granularity = 1000\n"),
            "granularity = 1000: a power of two",
        ),
        (format!("{IMAGE}{IMAGE}"), "name = \"golden\": defined twice"),
        (
            "[[image]]\nname = \"Golden Image\"\nfile = \"golden.img\"\n".into(),
            "use lower-case letters",
        ),
        (
            format!("{IMAGE}{}", host(MAC1, "pc/1", "")),
            "hostname = \"pc/1\": use letters, digits and '-'",
        ),
        (
            format!(
                "{IMAGE}{}[[target]]\niqn = \"iqn.2026-12.org.sanboot:golden:pc1\"\n",
                host(MAC1, "pc1", "")
            ),
            "is also a [[target]] in the file",
        ),
        (
            format!("{IMAGE}{}", host(MAC1, "pc1", "mode = \"sometimes\"")),
            "unknown variant `sometimes`",
        ),
    ];
    for (body, want) in cases {
        let e = err(d, &body);
        assert!(
            e.contains(want),
            "want {want:?} in: {e}\n--- config:\n{body}"
        );
    }
}

#[test]
fn a_base_version_that_is_gone_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("golden.img.current"), "3\n").unwrap();
    let e = err(dir.path(), &format!("{IMAGE}{}", host(MAC1, "pc1", "")));
    assert!(e.contains("base version 3 of image golden"), "{e}");
    assert!(e.contains("golden.img.v3"), "{e}");
}

#[test]
fn an_overlay_without_its_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ovl = dir.path().join("state/overlays/golden");
    std::fs::create_dir_all(&ovl).unwrap();
    std::fs::write(ovl.join("pc1.ovl"), b"x").unwrap();
    let e = err(dir.path(), &format!("{IMAGE}{}", host(MAC1, "pc1", "")));
    assert!(e.contains("cannot tell which base version"), "{e}");
}

/// What a station reads: its base with the overlay file's bytes on top —
/// a stand-in for the real overlay, enough for `commit`'s merge.
#[derive(Debug)]
struct PlainView(Vec<u8>);
impl sanboot_core::block::BlockDevice for PlainView {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(
        &mut self,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), sanboot_core::block::BlockError> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), sanboot_core::block::BlockError> {
        Err(sanboot_core::block::BlockError::Io)
    }
    fn flush(&mut self) -> Result<(), sanboot_core::block::BlockError> {
        Ok(())
    }
}

/// The stand-in overlay file: `<offset> <byte>` lines, each one 4 KiB block.
fn plain_view(base: &Path, overlay: &Path, merge: ops::Merge<'_>) -> Result<u64> {
    let mut bytes = std::fs::read(base)?;
    for line in std::fs::read_to_string(overlay)?.lines() {
        let (off, b) = line.split_once(' ').unwrap();
        let off: usize = off.parse().unwrap();
        bytes[off..off + 4096].fill(b.parse().unwrap());
    }
    merge(&mut PlainView(bytes))
}

#[test]
fn snapshot_rollback_reset_and_commit_move_files_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{IMAGE}{}{}",
        host(MAC1, "pc1", "mode = \"snapshot\""),
        host("52:54:00:00:00:02", "pc2", "")
    );
    let c = load(dir.path(), &body).unwrap();
    let pc1 = station(&c, "pc1").unwrap();
    let pc2 = station(&c, "pc2").unwrap();
    std::fs::create_dir_all(&pc1.dir).unwrap();
    pc1.set_version(1).unwrap();
    std::fs::write(&pc1.overlay, "0 170\n").unwrap();

    let _lock = ops::lock_station(&pc1, "test").unwrap().unwrap();
    // A second holder is told no (as the CLI is while `serve` runs), and who.
    assert!(ops::lock_station(&pc1, "other").unwrap().is_none());
    assert_eq!(ops::lock_holder(&pc1), "test");

    ops::apply(&pc1, &Request::Snapshot("before".into()), &plain_view).unwrap();
    std::fs::write(&pc1.overlay, "0 187\n8192 1\n").unwrap();
    assert!(
        ops::apply(&pc1, &Request::Snapshot("before".into()), &plain_view)
            .unwrap_err()
            .to_string()
            .contains("exists already")
    );
    ops::apply(&pc1, &Request::Rollback("before".into()), &plain_view).unwrap();
    assert_eq!(std::fs::read_to_string(&pc1.overlay).unwrap(), "0 170\n");
    let e = ops::apply(&pc1, &Request::Rollback("nope".into()), &plain_view).unwrap_err();
    assert!(e.to_string().contains("(snapshots: before)"), "{e}");
    // Snapshots belong to snapshot stations.
    let e = ops::apply(&pc2, &Request::Snapshot("x".into()), &plain_view).unwrap_err();
    assert!(e.to_string().contains("mode = \"persistent\""), "{e}");

    // Commit: a new version with pc1's block, pc1 on it with no overlay.
    let msg = ops::apply(&pc1, &Request::Commit, &plain_view).unwrap();
    assert!(msg.contains("version 2"), "{msg}");
    let v2 = std::fs::read(dir.path().join("golden.img.v2")).unwrap();
    assert!(v2[..4096].iter().all(|b| *b == 170));
    assert!(v2[4096..].iter().all(|b| *b == 0x11));
    assert_eq!(
        std::fs::read(dir.path().join("golden.img")).unwrap()[0],
        0x11
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("golden.img.current")).unwrap(),
        "2\n"
    );
    assert!(!pc1.overlay.exists());
    assert_eq!(pc1.version().unwrap(), 2);
    // pc2 has no overlay yet: it starts on the new version. Had it one, it
    // would stay on 1 until reset.
    assert_eq!(pc2.version().unwrap(), 2);
    pc2.set_version(1).unwrap();
    std::fs::write(&pc2.overlay, "0 5\n").unwrap();
    assert_eq!(pc2.version().unwrap(), 1);
    ops::reset(&pc2).unwrap();
    assert!(!pc2.overlay.exists());
    assert_eq!(pc2.version().unwrap(), 2);
    // Rolling back to a snapshot taken on version 1 puts pc1 back on it.
    ops::apply(&pc1, &Request::Rollback("before".into()), &plain_view).unwrap();
    assert_eq!(pc1.version().unwrap(), 1);

    // A reloaded config binds pc1's LUN to its recorded base.
    let c = load(dir.path(), &body).unwrap();
    let info = ops::list(&c).unwrap();
    assert_eq!(info[0].current, 2);
    assert_eq!(
        info[0].versions.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let pc1 = &info[0].stations[0];
    assert_eq!(pc1.version, Ok(1));
    assert_eq!(pc1.snapshots, vec!["before".to_string()]);
    assert!(pc1.overlay_used > 0);
}

#[test]
fn requests_round_trip() {
    for r in [
        Request::Reset,
        Request::Commit,
        Request::Snapshot("a-1".into()),
        Request::Rollback("b.2".into()),
    ] {
        assert_eq!(Request::parse(&r.to_string()).unwrap(), r);
    }
    assert!(Request::parse("snapshot ../x").is_err());
    assert!(Request::parse("reset now").is_err());
    assert!(Request::parse("format").is_err());
}

#[test]
fn sparse_copy_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 4096], 32 << 20).unwrap();
    drop(f);
    let dst = dir.path().join("b");
    super::sparse::copy_sparse(&src, &dst).unwrap();
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    // 64 MiB long, a few KiB used.
    assert!(super::sparse::used_bytes(&dst) < 1 << 20);
}
