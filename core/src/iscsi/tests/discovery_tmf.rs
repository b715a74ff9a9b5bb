//! Task management belongs to normal sessions: a discovery session has no
//! target, so its Task Management Function Requests are rejected and reach
//! no LUN (before, they reset target 0).

use super::*;

const INITIATOR: &str = "iqn.2026-12.test.sanboot:discovery";

fn discovery_logged_in() -> Harness<'static> {
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
    let l = LoginResponse::parse(&bhs(&r[0])).unwrap();
    assert_eq!((l.status_class, l.status_detail), (0, 0));
    assert!(h.conn.is_full_feature());
    h
}

fn tmf(function: TmfFunction, itt: u32, cmd_sn: u32) -> [u8; 48] {
    let mut t = [0u8; 48];
    TaskMgmtRequest {
        immediate: true,
        function,
        lun: 0,
        itt,
        ref_task_tag: RESERVED_TAG,
        cmd_sn,
        exp_stat_sn: 1,
        ref_cmd_sn: cmd_sn,
        exp_data_sn: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut t[..]));
    t
}

#[test]
fn discovery_session_task_management_is_rejected_and_resets_nothing() {
    let mut h = discovery_logged_in();
    let functions = [
        TmfFunction::AbortTask,
        TmfFunction::AbortTaskSet,
        TmfFunction::ClearTaskSet,
        TmfFunction::LogicalUnitReset,
        TmfFunction::TargetWarmReset,
        TmfFunction::TargetColdReset,
    ];
    for (i, f) in functions.into_iter().enumerate() {
        let out = h.feed(&tmf(f, 0x20 + i as u32, 0));
        assert_eq!(out.len(), 1, "{f:?}: one answer");
        let b = bhs(&out[0]);
        assert_eq!(b.opcode(), Opcode::Reject, "{f:?} was not rejected");
        assert_eq!(
            Reject::parse(&b).unwrap().reason,
            RejectReason::ProtocolError
        );
        assert!(!h.closed, "{f:?} closed the discovery session");
    }
    assert!(
        h.luns.target().resets.is_empty(),
        "task management reached the SCSI layer: {:?}",
        h.luns.target().resets
    );
    assert!(h.conn.is_full_feature());
    // The session still works for what discovery is for.
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
    assert_eq!(key(&keys(&r[0]), "TargetName"), Some(TARGET));
}

#[test]
fn normal_session_task_management_still_reaches_its_target() {
    let mut h = ipxe_logged_in(TargetLimits::default());
    let out = h.feed(&tmf(TmfFunction::LogicalUnitReset, 0x30, 2));
    let r = TaskMgmtResponse::parse(&bhs(&out[0])).unwrap();
    assert_eq!(r.response, TmfResponse::Complete);
    assert!(
        matches!(h.luns.target().resets[..], [Reset::Lun(_)]),
        "the LUN reset reaches the SCSI layer: {:?}",
        h.luns.target().resets
    );
}
