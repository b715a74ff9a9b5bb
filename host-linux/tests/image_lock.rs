//! One image file, one writable LUN: `sanboot serve` refuses a config with
//! two LUNs on one image (by path in the config, or by a hard link that only
//! the `flock` on the open file can see) and a second sanboot process on an
//! image the first one serves, each with an error naming the image and who
//! holds it. Read-only LUNs may share an image.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iscsi_support::initiator::Initiator;
use iscsi_support::{free_port, run_with_timeout, Sanboot, IQN};

const IQN_2: &str = "iqn.2026-11.test.sanboot:disk2";

fn lun(iqn: &str, id: u64, image: &Path, read_only: bool) -> String {
    format!(
        "[[target]]\niqn = \"{iqn}\"\n[[target.lun]]\nid = {id}\nimage = \"{}\"\nsize = 1048576\nread_only = {read_only}\n",
        image.display()
    )
}

/// Writes a config with these `[[target]]` tables into `dir`.
fn config(dir: &Path, targets: &str) -> PathBuf {
    let text = format!(
        "[server]\naddress = \"127.0.0.1\"\nstate_dir = \"state\"\n\n\
         [dhcp]\nmode = \"off\"\n\n\
         [tftp]\nroot = \"tftp\"\nlisten = \"127.0.0.1:{}\"\n\n\
         [iscsi]\nlisten = \"127.0.0.1:{}\"\n\n{targets}",
        free_port(),
        free_port()
    );
    std::fs::create_dir_all(dir.join("tftp")).unwrap();
    let path = dir.join("sanboot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sanboot <cmd> --config <path>`: must fail within 20 s; its output.
fn fails(cmd: &str, config: &Path) -> String {
    let (code, out) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_sanboot"))
            .arg(cmd)
            .arg("--config")
            .arg(config)
            .env("SANBOOT_LOG", "info"),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "sanboot {cmd} did not fail:\n{out}");
    out
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    p
}

#[test]
fn two_luns_on_one_image_are_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img");
    let cfg = config(
        dir.path(),
        &(lun(IQN, 0, &img, false) + &lun(IQN_2, 0, &img, true)),
    );
    for cmd in ["check", "serve"] {
        let out = fails(cmd, &cfg);
        assert!(
            out.contains(&format!(
                "image {} is also lun 0 of [[target]] {IQN}",
                img.display()
            )),
            "sanboot {cmd}: no clear error:\n{out}"
        );
    }
}

#[test]
fn a_hard_link_to_a_served_image_is_refused_by_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img");
    let link = dir.path().join("alias.img");
    std::fs::hard_link(&img, &link).unwrap();
    let cfg = config(
        dir.path(),
        &(lun(IQN, 0, &img, false) + &lun(IQN_2, 0, &link, false)),
    );
    let out = fails("serve", &cfg);
    assert!(
        out.contains(&format!(
            "image {} is already in use by another LUN of this sanboot",
            link.display()
        )),
        "no clear error:\n{out}"
    );
}

#[test]
fn a_second_sanboot_on_a_served_image_is_refused_and_names_the_first() {
    let first = Sanboot::start(&lun(IQN, 0, Path::new("disk.img"), false));
    let img = first.dir().join("disk.img");
    let dir = tempfile::tempdir().unwrap();
    for read_only in [false, true] {
        let cfg = config(dir.path(), &lun(IQN, 0, &img, read_only));
        let out = fails("serve", &cfg);
        assert!(
            out.contains(&format!(
                "image {} is already in use by process {} (",
                img.display(),
                first.pid()
            )),
            "read_only = {read_only}: no clear error naming the first sanboot:\n{out}"
        );
    }
    // The first one still serves its image.
    let mut i = Initiator::login(first.port, "iqn.2026-12.test.sanboot:lock", IQN, 0).unwrap();
    i.ready().unwrap();
    assert_eq!(i.read10(0, 1).unwrap().status, 0);
}

#[test]
fn read_only_luns_may_share_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "golden.img");
    let s = Sanboot::start(&(lun(IQN, 0, &img, true) + &lun(IQN_2, 0, &img, true)));
    for iqn in [IQN, IQN_2] {
        let mut i = Initiator::login(s.port, "iqn.2026-12.test.sanboot:ro", iqn, 0).unwrap();
        i.ready().unwrap();
        assert_eq!(i.read10(0, 1).unwrap().status, 0, "{iqn}");
    }
}
