use super::*;

/// Decode hex from the fixture files (whitespace ignored).
pub(crate) fn hex(s: &str) -> heapless::Vec<u8, 2048> {
    let mut out = heapless::Vec::new();
    let digits: heapless::Vec<u8, 4096> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    for pair in digits.chunks(2) {
        let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        out.push((v(pair[0]) << 4) | v(pair[1])).unwrap();
    }
    out
}

const LOGIN1: &str = include_str!("../testdata/ipxe-login1.hex");
const LOGIN_RESP2: &str = include_str!("../testdata/tgt-login-resp2.hex");
const READ10: &str = include_str!("../testdata/ipxe-read10.hex");
const DATA_IN: &str = include_str!("../testdata/tgt-data-in-hdr.hex");

#[test]
fn ipxe_login_security_stage() {
    let bytes = hex(LOGIN1);
    let bhs = Bhs::new_checked(&bytes[..]).unwrap();
    let req = LoginRequest::parse(&bhs).unwrap();
    assert!(req.transit && !req.cont);
    assert_eq!(req.csg, Stage::Security);
    assert_eq!(req.nsg, Stage::Operational);
    assert_eq!(req.itt, 0x18ae_0001);
    assert_eq!(&req.isid[..4], &[0x40, 0x00, 0x27, 0x23]);
    assert_eq!(req.tsih, 0);
    assert_eq!(req.cmd_sn, 0);
    let layout = pdu_len(&bhs, Digests::default());
    assert_eq!(layout.total_len, bytes.len());
    // round trip
    let mut out = [0xa5u8; BHS_LEN];
    req.emit(&mut Bhs::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &bytes[..BHS_LEN]);
}

#[test]
fn tgt_login_response_round_trip() {
    let bytes = hex(LOGIN_RESP2);
    let bhs = Bhs::new_checked(&bytes[..]).unwrap();
    let resp = LoginResponse::parse(&bhs).unwrap();
    assert!(resp.transit);
    assert_eq!(resp.csg, Stage::Operational);
    assert_eq!(resp.nsg, Stage::FullFeature);
    assert_eq!(resp.tsih, 0x0100);
    assert_eq!(resp.status_class, 0);
    let mut out = [0xa5u8; BHS_LEN];
    resp.emit(&mut Bhs::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &bytes[..BHS_LEN]);
}

#[test]
fn ipxe_read10_command() {
    let bytes = hex(READ10);
    let bhs = Bhs::new_checked(&bytes[..]).unwrap();
    let cmd = ScsiCommand::parse(&bhs).unwrap();
    assert!(cmd.final_bit && cmd.read && !cmd.write);
    assert_eq!(cmd.attr, 1);
    assert_eq!(cmd.cdb[0], 0x28);
    assert_eq!(cmd.lun, 1 << 48);
    let mut out = [0xa5u8; BHS_LEN];
    cmd.emit(&mut Bhs::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &bytes[..BHS_LEN]);
    assert!(matches!(
        InitiatorPdu::parse(&bhs),
        Ok(InitiatorPdu::ScsiCommand(_))
    ));
}

#[test]
fn tgt_data_in_round_trip() {
    let bytes = hex(DATA_IN);
    let bhs = Bhs::new_checked(&bytes[..]).unwrap();
    let d = DataIn::parse(&bhs).unwrap();
    assert!(d.final_bit);
    assert_eq!(d.status, Some(0));
    let mut out = [0xa5u8; BHS_LEN];
    d.emit(&mut Bhs::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &bytes[..BHS_LEN]);
}

#[test]
fn extended_cdb_ahs() {
    // a 32-byte CDB: 16 in the BHS, 16 in an AHS of length 17 (+1 reserved)
    let mut ahs = [0u8; 20];
    ahs[..3].copy_from_slice(&[0, 17, AHS_EXTENDED_CDB]);
    for (i, b) in ahs[4..20].iter_mut().enumerate() {
        *b = 16 + i as u8;
    }
    let bhs_cdb: [u8; 16] = core::array::from_fn(|i| i as u8);
    let mut out = [0u8; 32];
    assert_eq!(full_cdb(&bhs_cdb, &ahs, &mut out), Some(32));
    assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(full_cdb(&bhs_cdb, &ahs, &mut [0u8; 20]), None);
    assert_eq!(full_cdb(&bhs_cdb, &[], &mut out), Some(16));
    // malformed AHS lengths end the walk without a panic
    assert_eq!(ahs_segments(&[0, 200, 1, 0]).count(), 0);
}

#[test]
fn short_buffer_is_truncated() {
    assert_eq!(
        Bhs::new_checked(&[0u8; 47][..]).map(|_| ()),
        Err(WireError::Truncated)
    );
}

#[test]
fn layout_with_digests_and_padding() {
    let mut b = [0u8; BHS_LEN];
    let mut bhs = Bhs::new_unchecked(&mut b[..]);
    bhs.set_total_ahs_len(1);
    bhs.set_data_segment_len(5);
    let l = pdu_len(
        &bhs,
        Digests {
            header: true,
            data: true,
        },
    );
    assert_eq!(l.data_offset, 48 + 4 + 4);
    assert_eq!(l.total_len, 56 + 8 + 4);
}

#[test]
fn every_reply_round_trips() {
    let mut buf = [0xa5u8; BHS_LEN];
    let r2t = R2t {
        lun: 1 << 48,
        itt: 7,
        ttt: 9,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        r2t_sn: 4,
        buffer_offset: 8192,
        desired_len: 65536,
    };
    r2t.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(R2t::parse(&Bhs::new_unchecked(&buf[..])), Ok(r2t));
    let rsp = ScsiResponse {
        response: 0,
        status: 2,
        residual: Residual::Underflow(512),
        itt: 1,
        stat_sn: 2,
        exp_cmd_sn: 3,
        max_cmd_sn: 4,
        exp_data_sn: 1,
        data_len: 20,
    };
    rsp.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(ScsiResponse::parse(&Bhs::new_unchecked(&buf[..])), Ok(rsp));
    let tmf = TaskMgmtResponse {
        response: TmfResponse::NoSuchTask,
        itt: 5,
        stat_sn: 6,
        exp_cmd_sn: 7,
        max_cmd_sn: 8,
    };
    tmf.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(
        TaskMgmtResponse::parse(&Bhs::new_unchecked(&buf[..])),
        Ok(tmf)
    );
    let lo = LogoutResponse {
        response: 0,
        itt: 1,
        stat_sn: 2,
        exp_cmd_sn: 3,
        max_cmd_sn: 4,
        time2wait: 2,
        time2retain: 0,
    };
    lo.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(LogoutResponse::parse(&Bhs::new_unchecked(&buf[..])), Ok(lo));
    let rj = Reject {
        reason: RejectReason::ProtocolError,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        data_sn: 0,
        data_len: 48,
    };
    rj.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(Reject::parse(&Bhs::new_unchecked(&buf[..])), Ok(rj));
    assert_eq!(Bhs::new_unchecked(&buf[..]).itt(), RESERVED_TAG);
    let am = AsyncMessage {
        lun: 0,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        event: 1,
        vcode: 0,
        parameters: [0, 2, 0],
        data_len: 0,
    };
    am.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(AsyncMessage::parse(&Bhs::new_unchecked(&buf[..])), Ok(am));
    let nop = NopIn {
        lun: 0,
        itt: 3,
        ttt: RESERVED_TAG,
        stat_sn: 1,
        exp_cmd_sn: 2,
        max_cmd_sn: 3,
        data_len: 0,
    };
    nop.emit(&mut Bhs::new_unchecked(&mut buf[..]));
    assert_eq!(NopIn::parse(&Bhs::new_unchecked(&buf[..])), Ok(nop));
}
