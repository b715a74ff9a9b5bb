//! Login: CHAP, discovery and SendTargets, failures, C bit, reinstatement, timeout.

use super::*;

const INITIATOR: &str = "iqn.2010-04.org.ipxe:5e2e0000-0000-4000-8000-525400e2e001";

fn status(p: &[u8]) -> (u8, u8) {
    let r = LoginResponse::parse(&bhs(p)).unwrap();
    (r.status_class, r.status_detail)
}

fn first(h: &mut Harness<'_>, extra: &str) -> Vec<u8> {
    let text = std::format!(
        "InitiatorName={INITIATOR}\nTargetName={TARGET}\nSessionType=Normal\n{extra}\n"
    );
    let mut r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(r.len(), 1);
    r.remove(0)
}

fn chap_harness() -> Harness<'static> {
    let chap = ChapCredentials {
        user: "alice",
        secret: b"alice-secret-12",
    };
    let mutual = ChapCredentials {
        user: "target-user",
        secret: b"target-secret-1",
    };
    Harness::new(
        portal(targets(Some(chap), Some(mutual))),
        TargetLimits::default(),
    )
}

/// Run the CHAP exchange up to the challenge; returns (id, challenge).
fn chap_challenge(h: &mut Harness<'_>) -> (u8, Vec<u8>) {
    let r = first(h, "AuthMethod=CHAP,None");
    assert_eq!(status(&r), (0, 0));
    let k = keys(&r);
    assert_eq!(key(&k, "AuthMethod"), Some("CHAP"));
    assert!(!LoginResponse::parse(&bhs(&r)).unwrap().transit);
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        false,
        1,
        0,
        1,
        "CHAP_A=7,5",
    ));
    let k = keys(&r[0]);
    assert_eq!(key(&k, "CHAP_A"), Some("5"));
    let id: u8 = key(&k, "CHAP_I").unwrap().parse().unwrap();
    let mut c = [0u8; 64];
    let n = text::decode_binary(key(&k, "CHAP_C").unwrap(), &mut c).unwrap();
    assert_eq!(n, 16);
    (id, c[..n].to_vec())
}

fn hexs(b: &[u8]) -> std::string::String {
    let mut s = std::string::String::from("0x");
    for x in b {
        s.push_str(&std::format!("{x:02x}"));
    }
    s
}

#[test]
fn chap_one_way() {
    let mut h = chap_harness();
    let (id, c) = chap_challenge(&mut h);
    let resp = chap::response(id, b"alice-secret-12", &c);
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        2,
        &std::format!("CHAP_N=alice\nCHAP_R={}", hexs(&resp)),
    ));
    assert_eq!(status(&r[0]), (0, 0));
    let l = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert!(l.transit);
    assert_eq!(l.nsg, Stage::Operational);
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
}

#[test]
fn chap_base64_response_and_mutual() {
    let mut h = chap_harness();
    let (id, c) = chap_challenge(&mut h);
    let resp = chap::response(id, b"alice-secret-12", &c);
    // base64 of the 16-byte response
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = std::string::String::from("0b");
    for chunk in resp.chunks(3) {
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    // Mutual: the initiator challenges the target.
    let ichal = [0x11u8; 16];
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        2,
        &std::format!(
            "CHAP_N=alice\nCHAP_R={b64}\nCHAP_I=77\nCHAP_C={}",
            hexs(&ichal)
        ),
    ));
    assert_eq!(status(&r[0]), (0, 0));
    let k = keys(&r[0]);
    assert_eq!(key(&k, "CHAP_N"), Some("target-user"));
    let want = chap::response(77, b"target-secret-1", &ichal);
    assert_eq!(key(&k, "CHAP_R"), Some(hexs(&want).as_str()));
}

#[test]
fn chap_failures() {
    // wrong secret
    let mut h = chap_harness();
    let (id, c) = chap_challenge(&mut h);
    let bad = chap::response(id, b"wrong", &c);
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        2,
        &std::format!("CHAP_N=alice\nCHAP_R={}", hexs(&bad)),
    ));
    assert_eq!(status(&r[0]), (2, 1));
    assert!(h.closed);
    assert_eq!(
        h.conn.close_reason(),
        Some(CloseReason::LoginFailed(LoginStatus::AuthFailure))
    );
    // reflected challenge in mutual CHAP
    let mut h = chap_harness();
    let (id, c) = chap_challenge(&mut h);
    let good = chap::response(id, b"alice-secret-12", &c);
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        2,
        &std::format!(
            "CHAP_N=alice\nCHAP_R={}\nCHAP_I=1\nCHAP_C={}",
            hexs(&good),
            hexs(&c)
        ),
    ));
    assert_eq!(status(&r[0]), (2, 1));
    // AuthMethod=None when the target requires CHAP
    let mut h = chap_harness();
    assert_eq!(status(&first(&mut h, "AuthMethod=None")), (2, 1));
    // skipping the security stage when CHAP is required
    let mut h = chap_harness();
    let text = std::format!("InitiatorName={INITIATOR}\nTargetName={TARGET}\n");
    let r = h.feed(&login_pdu(
        Stage::Operational,
        Stage::FullFeature,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (2, 1));
}

#[test]
fn login_failures() {
    let t = targets(None, None);
    // unknown target
    let mut h = Harness::new(portal(t), TargetLimits::default());
    let text = std::format!("InitiatorName={INITIATOR}\nTargetName=iqn.nope\n");
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (2, 3));
    assert!(h.closed);
    // missing InitiatorName
    let mut h = Harness::new(portal(t), TargetLimits::default());
    let text = std::format!("TargetName={TARGET}\n");
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (2, 7));
    // initiator not on the allow-list
    let allow: &'static [TargetConfig<'static>] =
        std::boxed::Box::leak(std::boxed::Box::new([TargetConfig {
            name: TARGET,
            initiators: &["iqn.someone-else"],
            chap: None,
            mutual_chap: None,
            initiator_chap: &[],
            luns: LUNS,
            digest: crate::iscsi::DigestPolicy::Allowed,
        }]));
    let mut h = Harness::new(portal(allow), TargetLimits::default());
    let r = first(&mut h, "AuthMethod=None");
    assert_eq!(status(&r), (2, 2));
    // unsupported version
    let mut h = Harness::new(portal(t), TargetLimits::default());
    let mut p = login_pdu(
        Stage::Security,
        Stage::Operational,
        true,
        1,
        0,
        0,
        "InitiatorName=x\n",
    );
    p[3] = 2;
    assert_eq!(status(&h.feed(&p)[0]), (2, 5));
    // a SCSI command before login: dropped
    let mut h = Harness::new(portal(t), TargetLimits::default());
    h.feed(&command(1, 0, &[0u8; 6], 0, false, false, &[], true));
    assert!(h.closed);
}

#[test]
fn unknown_keys_and_continue_bit() {
    let mut h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let text = std::format!(
        "InitiatorName={INITIATOR}\nTargetName={TARGET}\nAuthMethod=None\nX-com.example.Thing=1\nIFMarker=Yes\n"
    );
    let data = text.replace('\n', "\0");
    let (a, b) = data.as_bytes().split_at(30);
    // first half with C=1: an empty response, no transit
    let mut p1 = vec![0u8; 48 + pad4(a.len())];
    LoginRequest {
        transit: false,
        cont: true,
        csg: Stage::Security,
        nsg: Stage::Security,
        version_max: 0,
        version_min: 0,
        isid: [0x40, 0, 0x27, 0x23, 0, 9],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data_len: a.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p1[..48]));
    p1[48..48 + a.len()].copy_from_slice(a);
    let r = h.feed(&p1);
    let l = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!((l.data_len, l.transit, l.status_class), (0, false, 0));
    let mut p2 = vec![0u8; 48 + pad4(b.len())];
    LoginRequest {
        transit: true,
        cont: false,
        csg: Stage::Security,
        nsg: Stage::FullFeature,
        version_max: 0,
        version_min: 0,
        isid: [0x40, 0, 0x27, 0x23, 0, 9],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 1,
        data_len: b.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p2[..48]));
    p2[48..48 + b.len()].copy_from_slice(b);
    let r = h.feed(&p2);
    assert_eq!(status(&r[0]), (0, 0));
    let k = keys(&r[0]);
    assert_eq!(key(&k, "X-com.example.Thing"), Some("NotUnderstood"));
    assert_eq!(key(&k, "IFMarker"), Some("No"));
    // security → full feature directly, as iPXE may do
    assert!(h.conn.is_full_feature());
}

#[test]
fn discovery_send_targets() {
    let mut h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let text = std::format!("InitiatorName={INITIATOR}\nSessionType=Discovery\nAuthMethod=None\n");
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::FullFeature,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (0, 0));
    assert!(h.conn.is_full_feature());
    let body = b"SendTargets=All\0";
    let mut p = vec![0u8; 48 + pad4(body.len())];
    TextRequest {
        immediate: true,
        final_bit: true,
        cont: false,
        lun: 0,
        itt: 5,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 1,
        data_len: body.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..48]));
    p[48..48 + body.len()].copy_from_slice(body);
    let r = h.feed(&p);
    let t = TextResponse::parse(&bhs(&r[0])).unwrap();
    assert!(t.final_bit && !t.cont);
    let k = keys(&r[0]);
    assert_eq!(key(&k, "TargetName"), Some(TARGET));
    assert_eq!(key(&k, "TargetAddress"), Some("192.0.2.1:3260,1"));
    // SCSI commands are not allowed in a discovery session
    let r = h.feed(&command(1, 0, &[0u8; 6], 0, false, false, &[], true));
    assert_eq!(bhs(&r[0]).opcode(), Opcode::Reject);
}

#[test]
fn session_reinstatement_and_limit() {
    let t = portal(targets(None, None));
    let mut sessions = SessionTable::<1>::new();
    let luns = TestLuns::new(16);
    let mut driver = test_driver();
    let text = std::format!("InitiatorName={INITIATOR}\nTargetName={TARGET}\nAuthMethod=None\n");
    let login = login_pdu(Stage::Security, Stage::FullFeature, true, 1, 0, 0, &text);
    let mut conns = Vec::new();
    for token in [10u64, 11] {
        let mut c: Connection<8, 512> = Connection::new(
            Instant::from_millis(0),
            token,
            TargetLimits::default(),
            [1; 16],
        );
        assert_eq!(
            c.handle_input(Instant::from_millis(0), &login, &t, &mut driver.bind(&luns)),
            login.len()
        );
        let Some(Event::SessionRequest(req)) = c.poll_event() else {
            panic!("no session request");
        };
        let adm = sessions.admit(c.initiator_name(), &req, token).unwrap();
        if token == 11 {
            assert_eq!(
                adm.reinstated,
                Some(10),
                "same ISID + name: the old session is replaced"
            );
        }
        c.session_admitted(&adm);
        conns.push(c);
    }
    // the host closes the old connection
    conns[0].abort(&mut driver.bind(&luns));
    assert!(conns[0].is_closed());
    sessions.release(10);
    assert_eq!(sessions.len(), 1);
    // a different ISID needs a new slot: refused with out of resources
    let other = login_pdu(Stage::Security, Stage::FullFeature, true, 2, 0, 0, &text);
    let mut c: Connection<8, 512> = Connection::new(
        Instant::from_millis(0),
        12,
        TargetLimits::default(),
        [1; 16],
    );
    let consumed = c.handle_input(Instant::from_millis(0), &other, &t, &mut driver.bind(&luns));
    assert_eq!(consumed, other.len());
    let Some(Event::SessionRequest(req)) = c.poll_event() else {
        panic!("no session request");
    };
    let err = sessions.admit(c.initiator_name(), &req, 12).unwrap_err();
    c.session_refused(err);
    let mut buf = [0u8; 1024];
    let n = c
        .poll_transmit(Instant::from_millis(0), &mut buf, &mut driver.bind(&luns))
        .unwrap();
    assert_eq!(status(&buf[..n]), (3, 2));
}

#[test]
fn login_timeout() {
    let mut h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let deadline = h.conn.poll_timeout().unwrap();
    h.conn.handle_timeout(Instant::from_millis(1));
    assert!(h.drain().is_empty());
    assert!(!h.closed);
    assert_eq!(h.conn.close_reason(), None);
    h.conn.handle_timeout(deadline);
    h.drain();
    assert!(h.closed);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::LoginTimeout));
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn long_send_targets_response_is_continued() {
    let names: Vec<&'static str> = (0..40)
        .map(|i| {
            &*std::boxed::Box::leak(
                std::format!("iqn.2024-01.test.e2e:a-rather-long-target-name-{i:03}")
                    .into_boxed_str(),
            )
        })
        .collect();
    let list: Vec<TargetConfig<'static>> = names
        .iter()
        .map(|n| TargetConfig {
            name: n,
            initiators: &[],
            chap: None,
            mutual_chap: None,
            initiator_chap: &[],
            luns: LUNS,
            digest: crate::iscsi::DigestPolicy::Allowed,
        })
        .collect();
    let list: &'static [TargetConfig<'static>] = std::boxed::Box::leak(list.into_boxed_slice());
    let mut h = Harness::new(portal(list), TargetLimits::default());
    let text = std::format!(
        "InitiatorName={INITIATOR}\nSessionType=Discovery\nAuthMethod=None\nMaxRecvDataSegmentLength=512\n"
    );
    let r = h.feed(&login_pdu(
        Stage::Security,
        Stage::FullFeature,
        true,
        1,
        0,
        0,
        &text,
    ));
    assert_eq!(status(&r[0]), (0, 0));
    let text_req = |ttt: u32, body: &[u8]| {
        let mut p = vec![0u8; 48 + pad4(body.len())];
        TextRequest {
            immediate: true,
            final_bit: true,
            cont: false,
            lun: 0,
            itt: 5,
            ttt,
            cmd_sn: 0,
            exp_stat_sn: 1,
            data_len: body.len() as u32,
        }
        .emit(&mut Bhs::new_unchecked(&mut p[..48]));
        p[48..48 + body.len()].copy_from_slice(body);
        p
    };
    let mut all = Vec::new();
    let mut r = h.feed(&text_req(RESERVED_TAG, b"SendTargets=All\0"));
    let mut pieces = 0;
    loop {
        pieces += 1;
        let t = TextResponse::parse(&bhs(&r[0])).unwrap();
        assert!(t.data_len <= 512);
        all.extend_from_slice(&r[0][48..48 + t.data_len as usize]);
        if t.final_bit {
            assert!(!t.cont);
            assert_eq!(t.ttt, RESERVED_TAG);
            break;
        }
        assert!(t.cont && t.ttt != RESERVED_TAG);
        r = h.feed(&text_req(t.ttt, b""));
    }
    assert!(pieces > 5);
    let got: Vec<_> = text::pairs(&all)
        .map(|p| p.unwrap())
        .filter(|p| p.key == "TargetName")
        .map(|p| p.value)
        .collect();
    assert_eq!(got.len(), 40);
    assert_eq!(got[39], names[39]);
}

#[test]
fn required_digests_refuse_a_login_without_them() {
    let required: &'static [TargetConfig<'static>] =
        std::boxed::Box::leak(std::boxed::Box::new([TargetConfig {
            name: TARGET,
            initiators: &[],
            chap: None,
            mutual_chap: None,
            initiator_chap: &[],
            luns: LUNS,
            digest: crate::iscsi::DigestPolicy::Required,
        }]));
    for op_keys in [
        "HeaderDigest=None,CRC32C\nDataDigest=None\n",
        "MaxConnections=1\n",
    ] {
        let mut h = Harness::new(portal(required), TargetLimits::default());
        let r = first(&mut h, "AuthMethod=None");
        assert_eq!(status(&r), (0, 0));
        let r = h.feed(&login_pdu(
            Stage::Operational,
            Stage::FullFeature,
            true,
            1,
            0,
            0,
            op_keys,
        ));
        assert_eq!(status(&r[0]), (2, 0), "{op_keys:?}");
    }
}
