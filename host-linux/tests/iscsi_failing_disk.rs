//! A failing disk is an error on the wire, never data and never a crash:
//! an image truncated under a running `sanboot serve` reads as MEDIUM
//! ERROR, and a full file system fails writes with SPACE ALLOCATION FAILED
//! while the target keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::process::Command;

use iscsi_support::initiator::{Initiator, ScsiResult};
use iscsi_support::{Sanboot, IQN};

fn sense_of(r: &ScsiResult) -> (u8, u8, u8) {
    assert_eq!(r.status, 2, "CHECK CONDITION expected: {r:02x?}");
    r.sense_code()
        .unwrap_or_else(|| panic!("no sense data: {r:02x?}"))
}

#[test]
fn an_image_truncated_under_the_target_reads_as_medium_error() {
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {}\n",
        8 << 20
    ));
    let mut ini = Initiator::login(s.port, "iqn.2026-12.test:trunc", IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}\n{}", s.log()));
    ini.ready().unwrap();
    let data = vec![0x5au8; 64 << 10];
    for lba in [0u32, 4096, 16000] {
        assert_eq!(ini.write10(lba, &data, false).unwrap().status, 0);
    }
    // Someone truncates the image to 1 MiB while the target serves it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.dir().join("disk.img"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    // Inside what is left: the data.
    let r = ini.read10(0, 128).unwrap();
    assert_eq!(r.status, 0);
    assert_eq!(r.data, data);
    // Past the end, and across it: MEDIUM ERROR / UNRECOVERED READ ERROR,
    // not zeros with GOOD; a long read fails even after good Data-In PDUs.
    for (lba, blocks) in [(4096u32, 128u16), (1536, 2048)] {
        let r = ini.read10(lba, blocks).unwrap();
        assert_eq!(sense_of(&r), (0x03, 0x11, 0x00), "READ at {lba}");
    }
    // The session goes on.
    assert_eq!(ini.read10(8, 8).unwrap().status, 0);
}

/// A tmpfs of `size` bytes mounted at `dir` for the test's lifetime.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_fails_writes_with_space_allocation_failed() {
    let dir = std::env::temp_dir().join(format!("sanboot-enospc-{}", std::process::id()));
    let Some(fs) = Tmpfs::mount(&dir, "1m") else {
        panic!(
            "cannot mount a tmpfs at {} (tests run as root)",
            dir.display()
        );
    };
    let image = fs.0.join("thin.img");
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"{}\"\nsize = {}\n",
        image.display(),
        8 << 20
    ));
    let mut ini = Initiator::login(s.port, "iqn.2026-12.test:enospc", IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}\n{}", s.log()));
    ini.ready().unwrap();
    // The sparse 8 MiB image lives on 1 MiB: fill it until a write fails.
    let data = vec![0xa5u8; 256 << 10];
    let mut failed = None;
    for i in 0..32u32 {
        let r = ini.write10(i * 512, &data, false).unwrap();
        if r.status != 0 {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("writing 8 MiB into a 1 MiB file system must fail");
    // DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (27/07).
    assert_eq!(sense_of(&r), (0x07, 0x27, 0x07), "{r:02x?}");
    // sanboot is still there and still reads what fit.
    let back = ini.read10(0, 512).unwrap();
    assert_eq!(back.status, 0);
    assert_eq!(back.data, data);
    drop(ini);
    drop(s);
    drop(fs);
    let _ = std::fs::remove_dir(&dir);
}
