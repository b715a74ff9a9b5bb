//! `sanboot script` and `sanboot check` as a user runs them: the built
//! binary on a config file in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = r#"
[server]
address = "192.0.2.1"
interface = "e2epbbr0"

[dhcp]
mode = "off"

[boot]
root_path = "/scripts"
initiator_iqn = "iqn.2007-11.ru.pp.livid:%hostname%-%mac%"

[[target]]
iqn = "iqn.2024-01.test.e2e:sanboot"
[[target.lun]]
id = 1
image = "disk.img"
size = 16777216

[[host]]
mac = "52:54:00:e2:e0:01"
hostname = "pc1"
target = "iqn.2024-01.test.e2e:sanboot"
lun = 1
"#;

fn sanboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sanboot"))
        .args(args)
        .env("SANBOOT_LOG", "warn")
        .output()
        .expect("run sanboot")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("sanboot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn script_prints_the_machines_sanboot_script() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    // Upper-case MAC on the command line, lower-case in the config.
    let out = sanboot(&[
        "script",
        "--config",
        config.to_str().unwrap(),
        "--mac",
        "52:54:00:E2:E0:01",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "#!ipxe\n\
         set initiator-iqn iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01\n\
         sanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n"
    );
}

#[test]
fn script_for_an_unknown_mac_fails_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let out = sanboot(&[
        "script",
        "--config",
        config.to_str().unwrap(),
        "--mac",
        "52:54:00:e2:e0:99",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("52-54-00-e2-e0-99"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn check_names_the_line_of_a_toml_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    // Line 3: an unquoted address.
    let config = write_config(
        dir.path(),
        "[server]\ninterface = \"br0\"\naddress = 192.0.2.1\n",
    );
    let out = sanboot(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("sanboot.toml"), "{err}");
}

#[test]
fn check_warns_about_a_lun_too_small_for_bios_int13() {
    let dir = tempfile::tempdir().unwrap();
    let image = std::fs::File::create(dir.path().join("disk.img")).unwrap();
    image.set_len(4 << 20).unwrap();
    let config = write_config(dir.path(), CONFIG);
    let out = sanboot(&["check", "--config", config.to_str().unwrap()]);
    // A warning, not an error: the config is valid, a BIOS boot would fail.
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("warning:"), "{text}");
    assert!(text.contains("4194304 bytes"), "{text}");
    assert!(text.contains("INT13"), "{text}");
}

#[test]
fn check_is_quiet_on_a_sound_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let out = sanboot(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("warning:"), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 warnings"), "{}", stdout(&out));
}

#[test]
fn check_warns_about_an_initiator_outside_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG.replace(
        "iqn = \"iqn.2024-01.test.e2e:sanboot\"\n[[target.lun]]",
        "iqn = \"iqn.2024-01.test.e2e:sanboot\"\n\
         initiators = [\"iqn.2007-11.ru.pp.livid:pc2-52-54-00-e2-e0-02\"]\n[[target.lun]]",
    );
    let config = write_config(dir.path(), &text);
    let out = sanboot(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("pc1-52-54-00-e2-e0-01 is not in target"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn example_config_passes_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sanboot.toml");
    let out = sanboot(&["check", "--config", example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ok (2 hosts, 1 targets"), "{text}");
    // Only the TFTP files the user has to provide may be missing, and a
    // checkout leaves the file (which holds CHAP secrets) readable by all.
    for line in text.lines().filter(|l| l.starts_with("warning:")) {
        assert!(
            line.contains("[tftp]")
                || line.contains("[boot] bios")
                || line.contains("[boot] uefi")
                || line.contains("holds CHAP secrets and is readable"),
            "{line}"
        );
    }
    let mode = std::fs::metadata(&example).unwrap().permissions();
    if std::os::unix::fs::PermissionsExt::mode(&mode) & 0o044 != 0 {
        assert!(text.contains("chmod 600"), "{text}");
    }
    let out = sanboot(&[
        "script",
        "--config",
        example.to_str().unwrap(),
        "--mac",
        "52-54-00-12-34-01",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(
        script.ends_with("sanboot iscsi:192.168.1.10::::iqn.2024-01.lan.example:diskless\n"),
        "{script}"
    );
    // pc1's own [host.chap], not the target's.
    assert!(
        script.contains("set password pc1-own-secret-9\n"),
        "{script}"
    );
}

#[test]
fn example_golden_image_passes_check_once_the_image_exists() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sanboot.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let start = text
        .find("#[[image]]")
        .expect("the example has an [[image]]");
    let (head, tail) = text.split_at(start);
    let tail: String = tail
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{head}{tail}"));
    let c = config.to_str().unwrap();
    // Without the base: a clear error.
    let out = sanboot(&["check", "--config", c]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[[image]] debian12: file")
            && stderr(&out).contains("cannot be read"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    let img = std::fs::File::create(dir.path().join("images/debian12.img")).unwrap();
    img.set_len(64 << 20).unwrap();
    let out = sanboot(&["check", "--config", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ok (4 hosts, 3 targets"),
        "{}",
        stdout(&out)
    );
    let out = sanboot(&["script", "--config", c, "--mac", "52:54:00:12:34:12"]);
    assert!(
        stdout(&out).contains("iqn.2026-12.org.sanboot:debian12:kiosk1"),
        "{}",
        stdout(&out)
    );
    // No serve running: `image` changes the files itself.
    let out = sanboot(&["image", "list", "--config", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert!(
        list.contains("version 1:") && list.contains("(current)"),
        "{list}"
    );
    assert!(
        list.contains("kiosk1") && list.contains("volatile"),
        "{list}"
    );
    let out = sanboot(&["image", "reset", "lab1", "--config", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("lab1: overlay dropped"),
        "{}",
        stdout(&out)
    );
    let version = dir.path().join("state/overlays/debian12/lab1.version");
    assert_eq!(std::fs::read_to_string(version).unwrap(), "1\n");
    let out = sanboot(&["image", "snapshot", "lab1", "x", "--config", c]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("mode = \"persistent\""),
        "{}",
        stderr(&out)
    );
}
