#![no_main]
//! Login negotiation: arbitrary sequences of Login Requests (fuzzed stages,
//! T/C bits, ISID/TSIH and key text, seeded with iPXE's real login and a
//! CHAP exchange) against targets with and without CHAP never panic, and
//! every response stays within its bounds and parses.
use libfuzzer_sys::fuzz_target;
use sanboot_core::iscsi::login::{Login, LoginStep, MAX_LOGIN_RESPONSE};
use sanboot_core::iscsi::pdu::{Bhs, LoginRequest, LoginResponse, Stage, BHS_LEN};
use sanboot_core::iscsi::text;
use sanboot_core::iscsi::{ChapCredentials, InitiatorChap, TargetConfig, TargetLimits, Targets};

static TARGETS: [TargetConfig<'static>; 2] = [
    TargetConfig {
        name: "iqn.2024-01.test.e2e:sanboot",
        initiators: &[],
        chap: None,
        mutual_chap: None,
        initiator_chap: &[],
        luns: &[0, 1],
        digest: sanboot_core::iscsi::DigestPolicy::Allowed,
    },
    TargetConfig {
        name: "iqn.2024-01.test.e2e:chap",
        initiators: &["iqn.2010-04.org.ipxe:x"],
        chap: Some(ChapCredentials {
            user: "alice",
            secret: b"alice-secret-12",
        }),
        mutual_chap: Some(ChapCredentials {
            user: "tgt",
            secret: b"target-secret-1",
        }),
        // The fuzzed initiator name has its own secret here, so the
        // per-initiator lookup runs on every CHAP exchange.
        initiator_chap: &[InitiatorChap {
            initiator: "iqn.2010-04.org.ipxe:x",
            chap: ChapCredentials {
                user: "x",
                secret: b"station-x-secret",
            },
            mutual_chap: None,
        }],
        luns: &[0],
        digest: sanboot_core::iscsi::DigestPolicy::Required,
    },
];

const DICT: &[&str] = &[
    "InitiatorName=iqn.2010-04.org.ipxe:x\0TargetName=iqn.2024-01.test.e2e:sanboot\0SessionType=Normal\0AuthMethod=None\0",
    "InitiatorName=iqn.2010-04.org.ipxe:x\0TargetName=iqn.2024-01.test.e2e:chap\0AuthMethod=CHAP,None\0",
    "SessionType=Discovery\0",
    "CHAP_A=5\0",
    "CHAP_N=alice\0CHAP_R=0x00112233445566778899aabbccddeeff\0CHAP_I=3\0CHAP_C=0b3q2+7w==\0",
    "HeaderDigest=CRC32C,None\0DataDigest=None\0MaxConnections=1\0InitialR2T=Yes\0ImmediateData=No\0MaxRecvDataSegmentLength=8192\0MaxBurstLength=262144\0FirstBurstLength=65536\0DefaultTime2Wait=0\0DefaultTime2Retain=0\0MaxOutstandingR2T=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0ErrorRecoveryLevel=0\0",
    "OFMarker=Yes\0IFMarkInt=1\0X-vendor=1\0iSCSIProtocolLevel=1\0",
];

fn stage(b: u8) -> Stage {
    match b & 3 {
        0 => Stage::Security,
        1 => Stage::Operational,
        2 => Stage::Reserved,
        _ => Stage::FullFeature,
    }
}

fuzz_target!(|data: &[u8]| {
    let targets = Targets {
        targets: &TARGETS,
        portal: "192.0.2.1:3260",
        portal_group_tag: 1,
    };
    let limits = TargetLimits::default();
    let mut login = Login::new([7; 16], 31);
    let mut rest = data;
    let mut text_buf = [0u8; 1024];
    while let [flags, sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        // Either a dictionary entry (possibly with fuzz bytes appended) or raw bytes.
        let text: &[u8] = if sel & 0x80 != 0 {
            let d = DICT[usize::from(sel & 0x7f) % DICT.len()].as_bytes();
            let m = (d.len() + body.len()).min(text_buf.len());
            text_buf[..d.len()].copy_from_slice(d);
            text_buf[d.len()..m].copy_from_slice(&body[..m - d.len()]);
            &text_buf[..m]
        } else {
            body
        };
        let req = LoginRequest {
            transit: flags & 0x80 != 0,
            cont: flags & 0x40 != 0,
            csg: stage(flags >> 2),
            nsg: stage(*flags),
            version_max: 0,
            version_min: if flags & 0x20 != 0 { 1 } else { 0 },
            isid: [0x40, 0, 0x27, 0x23, 0, *sel],
            tsih: if flags & 0x10 != 0 { 5 } else { 0 },
            itt: 1,
            cid: 0,
            cmd_sn: 0,
            exp_stat_sn: 0,
            data_len: text.len() as u32,
        };
        let step = login.handle(&req, text, &targets, &limits);
        if let LoginStep::NeedSession(_) = step {
            if sel & 1 == 0 {
                login.session_granted(1);
            } else {
                login.session_refused(sanboot_core::iscsi::LoginStatus::OutOfResources);
            }
        }
        let (resp, body) = login.response();
        assert!(body.len() <= MAX_LOGIN_RESPONSE);
        let mut hdr = [0u8; BHS_LEN];
        resp.emit(&mut Bhs::new_unchecked(&mut hdr[..]));
        let back = LoginResponse::parse(&Bhs::new_unchecked(&hdr[..])).expect("parse");
        assert_eq!(back.isid, resp.isid);
        for kv in text::pairs(body) {
            assert!(kv.is_ok(), "our own response text must parse");
        }
        if matches!(step, LoginStep::Fail(_)) {
            break;
        }
    }
});
