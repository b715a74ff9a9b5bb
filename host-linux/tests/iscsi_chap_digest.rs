//! CHAP, mutual CHAP, CRC32C header digests and the initiator allow-list,
//! exercised with libiscsi's command-line tools against `sanboot serve`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::{Initiator, LoginOptions};

use std::process::Command;
use std::time::Duration;

use iscsi_support::{require_tool, run_with_timeout, Sanboot};

const CHAP_IQN: &str = "iqn.2026-11.test.sanboot:chap";
const MUTUAL_IQN: &str = "iqn.2026-11.test.sanboot:mutual";
const ACL_IQN: &str = "iqn.2026-11.test.sanboot:acl";
const OPEN_IQN: &str = "iqn.2026-11.test.sanboot:open";
const DIGEST_IQN: &str = "iqn.2026-11.test.sanboot:chap-digest";
const REQUIRED_IQN: &str = "iqn.2026-11.test.sanboot:digest-required";
const ALLOWED: &str = "iqn.2026-11.test.sanboot:allowed-initiator";

fn targets() -> String {
    format!(
        r#"
[[target]]
iqn = "{CHAP_IQN}"
chap = {{ user = "alice", secret = "alice-secret-12" }}
[[target.lun]]
id = 0
image = "chap.img"
size = 8388608

[[target]]
iqn = "{MUTUAL_IQN}"
chap = {{ user = "bob", secret = "bob-secret-1234", mutual_user = "sanboot", mutual_secret = "target-secret-99" }}
[[target.lun]]
id = 0
image = "mutual.img"
size = 8388608

[[target]]
iqn = "{ACL_IQN}"
initiators = ["{ALLOWED}"]
[[target.lun]]
id = 0
image = "acl.img"
size = 8388608

[[target]]
iqn = "{OPEN_IQN}"
[[target.lun]]
id = 0
image = "open.img"
size = 8388608

[[target]]
iqn = "{DIGEST_IQN}"
chap = {{ user = "carol", secret = "carol-secret-123" }}
digest = "preferred"
[[target.lun]]
id = 0
image = "digest.img"
size = 8388608

[[target]]
iqn = "{REQUIRED_IQN}"
digest = "required"
[[target.lun]]
id = 0
image = "required.img"
size = 8388608
"#
    )
}

fn tool(name: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(name);
    cmd.args(args);
    let (code, out) = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (code == Some(0), out)
}

fn start() -> Sanboot {
    require_tool("iscsi-inq", "libiscsi-bin");
    require_tool("iscsi-readcapacity16", "libiscsi-bin");
    require_tool("iscsi-ls", "libiscsi-bin");
    Sanboot::start(&targets())
}

#[test]
fn chap_right_secret_logs_in_and_wrong_or_missing_secret_is_refused() {
    let s = start();
    let good = s.url(Some(("alice", "alice-secret-12")), CHAP_IQN, 0, "");
    let (ok, out) = tool("iscsi-inq", &[&good]);
    assert!(
        ok,
        "CHAP login with the right secret failed:\n{out}\nsanboot:\n{}",
        s.log()
    );
    assert!(
        out.contains("SANBOOT"),
        "INQUIRY output lacks the vendor:\n{out}"
    );

    let bad = s.url(Some(("alice", "wrong-secret-00")), CHAP_IQN, 0, "");
    let (ok, out) = tool("iscsi-inq", &[&bad]);
    assert!(!ok, "CHAP login with a wrong secret succeeded:\n{out}");

    let none = s.url(None, CHAP_IQN, 0, "");
    let (ok, out) = tool("iscsi-inq", &[&none]);
    assert!(!ok, "login without CHAP to a CHAP target succeeded:\n{out}");

    let log = s.log();
    assert!(
        log.contains("auth=\"CHAP\""),
        "no login line names the authentication:\n{log}"
    );
    assert!(
        s.wait_log(
            "login refused: AuthFailure",
            std::time::Duration::from_secs(5)
        ),
        "refused logins are not logged:\n{log}"
    );
}

/// libiscsi 1.19 offers `HeaderDigest=None,CRC32C` (it ignores the
/// `?header_digest=crc32c` URL argument); a target with
/// `digest = "preferred"` answers CRC32C, so this CHAP login runs with CRC32C
/// header digests on every PDU.
#[test]
fn chap_with_crc32c_header_digest_reads_capacity() {
    let s = start();
    let url = s.url(
        Some(("carol", "carol-secret-123")),
        DIGEST_IQN,
        0,
        "header_digest=crc32c",
    );
    let (ok, out) = tool("iscsi-readcapacity16", &[&url]);
    assert!(
        ok,
        "READ CAPACITY(16) over CHAP + CRC32C failed:\n{out}\nsanboot:\n{}",
        s.log()
    );
    // 8 MiB of 512-byte blocks: last LBA 16383.
    assert!(out.contains("16383"), "unexpected capacity:\n{out}");
    let (ok, out) = tool("iscsi-inq", &[&url]);
    assert!(ok, "INQUIRY over CHAP + CRC32C failed:\n{out}");
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("iscsi login") && l.contains(DIGEST_IQN))
        .unwrap_or_else(|| panic!("no login line for {DIGEST_IQN}:\n{log}"));
    assert!(
        line.contains("auth=\"CHAP\"") && line.contains("header_digest=\"CRC32C\""),
        "login was not CHAP + CRC32C: {line}"
    );
    // A wrong secret is still refused on the digest target.
    let bad = s.url(Some(("carol", "not-carols-secret")), DIGEST_IQN, 0, "");
    assert!(!tool("iscsi-inq", &[&bad]).0, "wrong secret accepted");
}

/// `digest = "required"`: libiscsi 1.19 (DataDigest=None only) is refused;
/// our initiator offering CRC32C for both digests gets in.
#[test]
fn required_digests_refuse_initiators_without_them() {
    let s = start();
    let url = s.url(None, REQUIRED_IQN, 0, "");
    let (ok, out) = tool("iscsi-inq", &[&url]);
    assert!(
        !ok,
        "libiscsi without data digests logged in to a digest-required target:\n{out}"
    );
    let both = LoginOptions {
        header_digest: true,
        data_digest: true,
        ..LoginOptions::default()
    };
    let mut ini = Initiator::login_with(
        s.port,
        "iqn.2026-11.test.sanboot:crc",
        REQUIRED_IQN,
        0,
        both,
    )
    .unwrap_or_else(|e| panic!("CRC32C login refused: {e}\n{}", s.log()));
    ini.ready().unwrap();
    assert!(Initiator::login(s.port, "iqn.2026-11.test.sanboot:plain", REQUIRED_IQN, 0).is_err());
}

#[test]
fn mutual_chap_proves_the_target_too() {
    let s = start();
    let good = s.url(
        Some(("bob", "bob-secret-1234")),
        MUTUAL_IQN,
        0,
        "target_user=sanboot&target_password=target-secret-99",
    );
    let (ok, out) = tool("iscsi-inq", &[&good]);
    assert!(
        ok,
        "mutual CHAP login failed:\n{out}\nsanboot:\n{}",
        s.log()
    );

    // The initiator expects a different target secret: it must refuse the
    // target's answer.
    let wrong = s.url(
        Some(("bob", "bob-secret-1234")),
        MUTUAL_IQN,
        0,
        "target_user=sanboot&target_password=not-the-secret",
    );
    let (ok, out) = tool("iscsi-inq", &[&wrong]);
    assert!(
        !ok,
        "initiator accepted a target that proved the wrong secret:\n{out}"
    );
}

#[test]
fn allow_list_refuses_other_initiators() {
    let s = start();
    let url = s.url(None, ACL_IQN, 0, "");
    let (ok, out) = tool("iscsi-inq", &["-i", ALLOWED, &url]);
    assert!(
        ok,
        "listed initiator was refused:\n{out}\nsanboot:\n{}",
        s.log()
    );
    let (ok, out) = tool(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test.sanboot:intruder", &url],
    );
    assert!(!ok, "unlisted initiator logged in:\n{out}");
}

#[test]
fn discovery_lists_the_targets() {
    let s = start();
    let (ok, out) = tool("iscsi-ls", &["-i", ALLOWED, &s.portal()]);
    assert!(ok, "iscsi-ls failed:\n{out}\nsanboot:\n{}", s.log());
    assert!(out.contains(ACL_IQN), "SendTargets lacks {ACL_IQN}:\n{out}");
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8)
        .collect()
}

/// Our own initiator offers only CRC32C for both digests: every PDU after
/// login carries them, and reads and writes spanning many PDUs (R2T, Data-Out,
/// Data-In split at 256 KiB) come back intact.
#[test]
fn crc32c_header_and_data_digests_carry_reads_and_writes() {
    let s = Sanboot::start(&targets());
    let both = LoginOptions {
        header_digest: true,
        data_digest: true,
        ..LoginOptions::default()
    };
    let name = "iqn.2026-11.test.sanboot:digest";
    let mut ini = Initiator::login_with(s.port, name, OPEN_IQN, 0, both)
        .unwrap_or_else(|e| panic!("login with digests: {e}\nsanboot:\n{}", s.log()));
    ini.ready().unwrap();
    for (i, (lba, blocks)) in [(0u32, 1u16), (8, 64), (1000, 1024), (5000, 2047)]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i as u32, usize::from(blocks) * 512);
        let w = ini.write10(lba, &data, i % 2 == 0).unwrap();
        assert_eq!(
            w.status, 0,
            "write {blocks} blocks at {lba}: sense {:02x?}",
            w.sense
        );
        let r = ini.read10(lba, blocks).unwrap();
        assert_eq!(r.status, 0);
        assert!(
            r.data == data,
            "{blocks} blocks at {lba} read back differently"
        );
    }
    let log = s.log();
    assert!(
        log.contains(name)
            && log.contains("header_digest=\"CRC32C\"")
            && log.contains("data_digest=\"CRC32C\""),
        "the login line does not show CRC32C digests:\n{log}"
    );

    // A PDU whose data digest is wrong is rejected (Reject PDU, 0x3f).
    ini.corrupt_next_data = true;
    let err = ini.write10(0, &[0x11; 512], false).unwrap_err().to_string();
    assert!(
        err.contains("0x3f"),
        "bad data digest was not rejected: {err}"
    );

    // A PDU whose header digest is wrong cannot be trusted: the connection ends.
    let mut ini = Initiator::login_with(s.port, name, OPEN_IQN, 0, both).unwrap();
    ini.corrupt_next_header = true;
    assert!(
        ini.read10(0, 1).is_err(),
        "a PDU with a bad header digest was answered"
    );
}
