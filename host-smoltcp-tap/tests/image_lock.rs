//! The TAP runner locks LUN images like `sanboot serve`: an image that
//! another LUN or another process holds is refused, with the holder named,
//! before the runner touches the network (so no TAP device is needed here).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

fn lun(iqn: &str, image: &Path) -> String {
    format!(
        "[[target]]\niqn = \"{iqn}\"\n[[target.lun]]\nid = 0\nimage = \"{}\"\nsize = 1048576\n",
        image.display()
    )
}

/// Runs the runner on a config with these targets (DHCP off; it fails
/// before opening its TAP device).
fn run(dir: &Path, targets: &str) -> Output {
    let config = dir.join("sanboot.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\naddress = \"192.0.2.1\"\nstate_dir = \"state\"\n\n[dhcp]\nmode = \"off\"\n\n{targets}"
        ),
    )
    .unwrap();
    // In a network namespace of its own: should the runner get past its
    // disks, its TAP device appears there, not on this machine.
    Command::new("unshare")
        .arg("--net")
        .arg(env!("CARGO_BIN_EXE_sanboot-smoltcp"))
        .args(["--tap", "sbtest0", "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

#[test]
fn an_image_held_by_another_lun_or_process_is_refused() {
    let dir = std::env::temp_dir().join(format!("sanboot-smoltcp-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let link = dir.join("alias.img");
    std::fs::hard_link(&img, &link).unwrap();

    let out = run(
        &dir,
        &(lun("iqn.2026-12.test:a", &img) + &lun("iqn.2026-12.test:b", &link)),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "image {} is already in use by another LUN of this sanboot",
            link.display()
        )),
        "{err}"
    );

    // This test process holds the image, as another sanboot would.
    let held = std::fs::File::open(&img).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let out = run(&dir, &lun("iqn.2026-12.test:a", &img));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "image {} is already in use by process {} (",
            img.display(),
            std::process::id()
        )),
        "{err}"
    );
    drop(held);
    std::fs::remove_dir_all(&dir).unwrap();
}
