//! iPXE's exact session (bytes from peer-boot.pcap) against our target.

use super::*;

#[test]
fn ipxe_boot_session_from_capture() {
    let mut h = Harness::new(portal(targets(None, None)), TargetLimits::default());
    let stream = hex(include_str!("../testdata/ipxe-stream.hex"));
    let pdus = split(&stream);
    assert_eq!(pdus.len(), 11);

    // Security stage: T=1 to operational, TargetPortalGroupTag first.
    let r = h.feed(&pdus[0]);
    assert_eq!(r.len(), 1);
    let resp = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!((resp.status_class, resp.status_detail), (0, 0));
    assert!(resp.transit);
    assert_eq!((resp.csg, resp.nsg), (Stage::Security, Stage::Operational));
    assert_eq!(resp.itt, 0x18ae_0001);
    let k = keys(&r[0]);
    assert_eq!(k[0].0, "TargetPortalGroupTag");
    assert_eq!(key(&k, "TargetPortalGroupTag"), Some("1"));
    assert_eq!(key(&k, "AuthMethod"), Some("None"));

    // Operational stage straight to full feature phase.
    let r = h.feed(&pdus[1]);
    assert_eq!(r.len(), 1);
    let resp = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!((resp.status_class, resp.status_detail), (0, 0));
    assert!(resp.transit);
    assert_eq!(resp.nsg, Stage::FullFeature);
    assert_ne!(resp.tsih, 0);
    assert_eq!(resp.stat_sn, 1);
    assert_eq!(resp.exp_cmd_sn, 0);
    let k = keys(&r[0]);
    assert_eq!(key(&k, "ImmediateData"), Some("No"));
    assert_eq!(key(&k, "InitialR2T"), Some("Yes"));
    assert_eq!(key(&k, "HeaderDigest"), Some("None"));
    assert_eq!(key(&k, "MaxRecvDataSegmentLength"), Some("262144"));
    assert!(h.conn.is_full_feature());
    assert_eq!(h.conn.params().initiator_mrdsl, 8192);

    // TUR x2: StatSN 2, 3; ExpCmdSN follows CmdSN. The first reports the
    // new nexus's UNIT ATTENTION / POWER ON OCCURRED (29/00), which is why
    // iPXE sends a second one; that one is GOOD.
    for (i, p) in pdus[2..4].iter().enumerate() {
        let r = h.feed(p);
        assert_eq!(r.len(), 1);
        let s = ScsiResponse::parse(&bhs(&r[0])).unwrap();
        if i == 0 {
            assert_eq!(s.status, 2);
            assert_eq!((r[0][50 + 2], r[0][50 + 12], r[0][50 + 13]), (6, 0x29, 0));
        } else {
            assert_eq!(s.status, 0);
        }
        assert_eq!(s.stat_sn, 2 + i as u32);
        assert_eq!(s.exp_cmd_sn, 1 + i as u32);
        assert!(s.max_cmd_sn >= s.exp_cmd_sn);
    }

    // READ CAPACITY(10): one Data-In with F|S and the status.
    let r = h.feed(&pdus[4]);
    assert_eq!(r.len(), 1);
    let d = DataIn::parse(&bhs(&r[0])).unwrap();
    assert!(d.final_bit);
    assert_eq!(d.status, Some(0));
    assert_eq!(d.data_len, 8);
    assert_eq!(&r[0][48..52], &2047u32.to_be_bytes());
    assert_eq!(r[0][0x01] & 0x81, 0x81);

    // The READ(10)s: LBA 64 x4, 0, 0, 1 x8, 0x7fff x1 (beyond our 2048 blocks), 2.
    let r = h.feed(&pdus[5]);
    assert_eq!(r.len(), 1);
    let d = DataIn::parse(&bhs(&r[0])).unwrap();
    assert_eq!(d.data_len, 2048);
    assert_eq!(d.status, Some(0));
    assert_eq!(&r[0][48..48 + 2048], &h.disk(1)[64 * 512..68 * 512]);
    for p in &pdus[6..9] {
        let r = h.feed(p);
        assert_eq!(r.len(), 1);
        assert_eq!(DataIn::parse(&bhs(&r[0])).unwrap().status, Some(0));
    }
    // LBA 0x7fff is past our small disk: CHECK CONDITION in a SCSI Response.
    let r = h.feed(&pdus[9]);
    assert_eq!(r.len(), 1);
    let s = ScsiResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!(s.status, 2);
    assert_eq!(&r[0][48..50], &18u16.to_be_bytes());
    assert_eq!(r[0][50 + 2], 5);
    let r = h.feed(&pdus[10]);
    assert_eq!(DataIn::parse(&bhs(&r[0])).unwrap().status, Some(0));
    assert_eq!(h.conn.stats().protocol_errors, 0);
    assert_eq!(h.conn.stats().rejects, 0);
}

#[test]
fn read_64k_is_eight_data_in_with_status_on_last() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    let r = h.feed(&command(
        0x18ae_0100,
        0,
        &read10(100, 128),
        65536,
        true,
        false,
        &[],
        true,
    ));
    assert_eq!(r.len(), 8);
    for (i, p) in r.iter().enumerate() {
        let d = DataIn::parse(&bhs(p)).unwrap();
        assert_eq!(d.data_len, 8192);
        assert_eq!(d.data_sn, i as u32);
        assert_eq!(d.buffer_offset, 8192 * i as u32);
        let last = i == 7;
        assert_eq!(d.final_bit, last);
        assert_eq!(d.status.is_some(), last);
        let off = 100 * 512 + 8192 * i;
        assert_eq!(&p[48..48 + 8192], &h.disk(1)[off..off + 8192]);
    }
    let d = DataIn::parse(&bhs(&r[7])).unwrap();
    assert_eq!(d.residual, Residual::None);
    assert_eq!(d.stat_sn, 2);
}
