//! Task management reaches only the target a normal session logged in to:
//! a discovery session asking for a LUN or target reset is rejected and
//! resets nothing (before, it reached target 0's LUNs), while the same
//! request from a normal session does reset (the check below sees it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::{Initiator, LoginOptions, TmfAnswer};
use iscsi_support::{Sanboot, IQN};

const LUN_RESET: u8 = 5;
const TARGET_WARM_RESET: u8 = 6;
const TARGET_COLD_RESET: u8 = 7;

/// TEST UNIT READY from `a`: `None` when GOOD, else the sense's
/// (key, ASC, ASCQ) — a reset shows as UNIT ATTENTION 06/29/xx.
fn unit_attention(a: &mut Initiator) -> Option<(u8, u8, u8)> {
    let r = a.command(&[0u8; 6], &[], 0).unwrap();
    (r.status != 0).then(|| {
        r.sense_code()
            .unwrap_or_else(|| panic!("no sense data: {r:02x?}"))
    })
}

#[test]
fn discovery_sessions_reset_nothing() {
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {}\n",
        16u64 << 20
    ));
    let mut a = Initiator::login(s.port, "iqn.2026-12.test:a", IQN, 0)
        .unwrap_or_else(|e| panic!("login a: {e}\n{}", s.log()));
    a.ready().unwrap();
    assert_eq!(unit_attention(&mut a), None);

    let discovery = LoginOptions {
        discovery: true,
        ..LoginOptions::default()
    };
    let mut d = Initiator::login_with(s.port, "iqn.2026-12.test:d", "", 0, discovery)
        .unwrap_or_else(|e| panic!("discovery login: {e}\n{}", s.log()));
    for f in [LUN_RESET, TARGET_WARM_RESET, TARGET_COLD_RESET] {
        let answer = d.task_management(f).unwrap();
        assert!(
            matches!(answer, TmfAnswer::Reject(_) | TmfAnswer::Response(255)),
            "function {f} in a discovery session: {answer:?}"
        );
    }
    // Nothing was reset: no unit attention, and the normal session (a
    // cold reset would have closed it) still reads.
    assert_eq!(
        unit_attention(&mut a),
        None,
        "a discovery TMF reset the LUN"
    );
    assert_eq!(a.read10(0, 8).unwrap().status, 0);

    // The same LOGICAL UNIT RESET from a normal session is carried out:
    // the other nexus sees the unit attention.
    let mut b = Initiator::login(s.port, "iqn.2026-12.test:b", IQN, 0).unwrap();
    b.ready().unwrap();
    assert_eq!(
        b.task_management(LUN_RESET).unwrap(),
        TmfAnswer::Response(0)
    );
    assert_eq!(
        unit_attention(&mut a).map(|(k, asc, _)| (k, asc)),
        Some((6, 0x29))
    );
}

/// A normal session's reset reaches only the target it logged in to: a
/// LOGICAL UNIT RESET and a TARGET WARM RESET on target B leave target A's
/// LUN 0 (same LUN number, other target) without a unit attention.
#[test]
fn a_reset_stays_within_the_sessions_own_target() {
    let other = "iqn.2026-12.test.sanboot:other";
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"a.img\"\nsize = {size}\n\
         [[target]]\niqn = \"{other}\"\n[[target.lun]]\nid = 0\nimage = \"b.img\"\nsize = {size}\n",
        size = 16u64 << 20
    ));
    let mut a = Initiator::login(s.port, "iqn.2026-12.test:a", IQN, 0)
        .unwrap_or_else(|e| panic!("login a: {e}\n{}", s.log()));
    a.ready().unwrap();
    let mut b1 = Initiator::login(s.port, "iqn.2026-12.test:b1", other, 0).unwrap();
    b1.ready().unwrap();
    let mut b2 = Initiator::login(s.port, "iqn.2026-12.test:b2", other, 0).unwrap();
    b2.ready().unwrap();
    for f in [LUN_RESET, TARGET_WARM_RESET] {
        assert_eq!(b1.task_management(f).unwrap(), TmfAnswer::Response(0));
        // The other session on B sees it ...
        assert_eq!(
            unit_attention(&mut b2).map(|(k, asc, _)| (k, asc)),
            Some((6, 0x29)),
            "function {f} did not reset target B"
        );
        // ... the session on A does not.
        assert_eq!(unit_attention(&mut a), None, "function {f} on B reset A");
    }
}
