//! Per-initiator CHAP (LIO's per-ACL CHAP): the secret an initiator must
//! prove is the one configured for its InitiatorName on that target, else
//! the target's.

use super::*;

const STATION_A: &str = "iqn.2010-04.org.ipxe:station-a";
const STATION_B: &str = "iqn.2010-04.org.ipxe:station-b";
const OTHER: &str = "iqn.2024-01.test.e2e:other";

const ALICE: ChapCredentials<'static> = ChapCredentials {
    user: "alice",
    secret: b"alice-secret-12",
};
const A: ChapCredentials<'static> = ChapCredentials {
    user: "station-a",
    secret: b"station-a-secret",
};
const A_TARGET: ChapCredentials<'static> = ChapCredentials {
    user: "target-for-a",
    secret: b"a-target-secret",
};
const B: ChapCredentials<'static> = ChapCredentials {
    user: "station-b",
    secret: b"station-b-secret",
};
const CAROL: ChapCredentials<'static> = ChapCredentials {
    user: "carol",
    secret: b"carol-secret-123",
};

/// TARGET: the target's own secret (alice) plus stations A (with mutual
/// credentials) and B. OTHER: its own secret (carol) and station B only.
fn targets() -> &'static [TargetConfig<'static>] {
    static ON_TARGET: [InitiatorChap<'static>; 2] = [
        InitiatorChap {
            initiator: STATION_A,
            chap: A,
            mutual_chap: Some(A_TARGET),
        },
        InitiatorChap {
            initiator: STATION_B,
            chap: B,
            mutual_chap: None,
        },
    ];
    static ON_OTHER: [InitiatorChap<'static>; 1] = [InitiatorChap {
        initiator: STATION_B,
        chap: B,
        mutual_chap: None,
    }];
    static T: [TargetConfig<'static>; 2] = [
        TargetConfig {
            name: TARGET,
            initiators: &[],
            chap: Some(ALICE),
            mutual_chap: None,
            initiator_chap: &ON_TARGET,
            luns: LUNS,
            digest: DigestPolicy::Allowed,
        },
        TargetConfig {
            name: OTHER,
            initiators: &[],
            chap: Some(CAROL),
            mutual_chap: None,
            initiator_chap: &ON_OTHER,
            luns: LUNS,
            digest: DigestPolicy::Allowed,
        },
    ];
    &T
}

fn status(p: &[u8]) -> (u8, u8) {
    let r = LoginResponse::parse(&bhs(p)).unwrap();
    (r.status_class, r.status_detail)
}

fn hexs(b: &[u8]) -> std::string::String {
    let mut s = std::string::String::from("0x");
    for x in b {
        s.push_str(&std::format!("{x:02x}"));
    }
    s
}

/// Logs `initiator` in to `target` up to the end of the security stage,
/// proving `cred` (and challenging the target when `mutual` is set).
/// Returns the harness and the last response.
fn chap_login(
    initiator: &str,
    target: &str,
    cred: ChapCredentials<'_>,
    mutual: Option<&[u8]>,
) -> (Harness<'static>, Vec<u8>) {
    let mut h = Harness::new(portal(targets()), TargetLimits::default());
    let text = std::format!(
        "InitiatorName={initiator}\nTargetName={target}\nSessionType=Normal\nAuthMethod=CHAP,None\n"
    );
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (0, 0), "AuthMethod answer");
    assert_eq!(key(&keys(&r[0]), "AuthMethod"), Some("CHAP"));
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        false,
        1,
        0,
        1,
        "CHAP_A=5",
    ));
    let k = keys(&r[0]);
    let id: u8 = key(&k, "CHAP_I").unwrap().parse().unwrap();
    let mut c = [0u8; 64];
    let n = text::decode_binary(key(&k, "CHAP_C").unwrap(), &mut c).unwrap();
    let resp = chap::response(id, cred.secret, &c[..n]);
    let mut text = std::format!("CHAP_N={}\nCHAP_R={}", cred.user, hexs(&resp));
    if let Some(challenge) = mutual {
        text.push_str(&std::format!("\nCHAP_I=9\nCHAP_C={}", hexs(challenge)));
    }
    let mut r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        2,
        &text,
    ));
    let last = r.remove(0);
    (h, last)
}

#[test]
fn a_station_proves_its_own_secret_and_reaches_full_feature() {
    let (mut h, r) = chap_login(STATION_A, TARGET, A, None);
    assert_eq!(status(&r), (0, 0));
    assert!(LoginResponse::parse(&bhs(&r)).unwrap().transit);
    let r = h.feed(&login_pdu(
        Stage::Operational,
        Stage::FullFeature,
        true,
        1,
        0,
        3,
        "MaxRecvDataSegmentLength=8192",
    ));
    assert_eq!(status(&r[0]), (0, 0));
    assert!(h.conn.is_full_feature());
    // Initiator names compare case-insensitively (RFC 3722), the lookup too.
    let (_, r) = chap_login(&STATION_A.to_ascii_uppercase(), TARGET, A, None);
    assert_eq!(status(&r), (0, 0));
}

#[test]
fn the_station_entry_replaces_the_targets_secret() {
    // Station A may not fall back to the target's secret...
    let (h, r) = chap_login(STATION_A, TARGET, ALICE, None);
    assert_eq!(status(&r), (2, 1));
    assert!(h.closed);
    // ...while an initiator without an entry proves the target's.
    let (_, r) = chap_login("iqn.2010-04.org.ipxe:anyone", TARGET, ALICE, None);
    assert_eq!(status(&r), (0, 0));
    let (_, r) = chap_login("iqn.2010-04.org.ipxe:anyone", TARGET, A, None);
    assert_eq!(status(&r), (2, 1));
}

#[test]
fn a_stations_secret_opens_no_other_target() {
    // Station A is not listed on OTHER: its secret is not OTHER's.
    let (h, r) = chap_login(STATION_A, OTHER, A, None);
    assert_eq!(status(&r), (2, 1));
    assert_eq!(
        h.conn.close_reason(),
        Some(CloseReason::LoginFailed(LoginStatus::AuthFailure))
    );
    // Station B is, with its own secret.
    let (_, r) = chap_login(STATION_B, OTHER, B, None);
    assert_eq!(status(&r), (0, 0));
}

#[test]
fn a_station_posing_as_another_fails() {
    // Station A's credentials under station B's initiator name.
    let (_, r) = chap_login(STATION_B, TARGET, A, None);
    assert_eq!(status(&r), (2, 1));
    // B's user name with A's secret.
    let forged = ChapCredentials {
        user: B.user,
        secret: A.secret,
    };
    let (_, r) = chap_login(STATION_B, TARGET, forged, None);
    assert_eq!(status(&r), (2, 1));
}

#[test]
fn mutual_chap_answers_with_the_stations_target_credentials() {
    let challenge = [0x5au8; 16];
    let (_, r) = chap_login(STATION_A, TARGET, A, Some(&challenge));
    assert_eq!(status(&r), (0, 0));
    let k = keys(&r);
    assert_eq!(key(&k, "CHAP_N"), Some(A_TARGET.user));
    let want = chap::response(9, A_TARGET.secret, &challenge);
    assert_eq!(key(&k, "CHAP_R"), Some(hexs(&want).as_str()));
    // Station B's entry has no mutual credentials (and the target's would
    // not apply to it): its challenge cannot be answered.
    let (_, r) = chap_login(STATION_B, TARGET, B, Some(&challenge));
    assert_eq!(status(&r), (2, 1));
}
