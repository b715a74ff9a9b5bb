//! Session rules on the wire: ERL 0 session reinstatement (same initiator
//! name and ISID replaces the old session and closes its connection) and
//! the `[iscsi] max_sessions` bound (a login beyond it is refused).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::{Initiator, LoginOptions};
use iscsi_support::{Sanboot, IQN};

fn sanboot(max_sessions: usize) -> Sanboot {
    Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = 8388608\n"
    ))
    .with_iscsi_option(&format!("max_sessions = {max_sessions}"))
}

fn isid(q: u8) -> LoginOptions {
    LoginOptions {
        isid_qualifier: q,
        ..LoginOptions::default()
    }
}

const NAME: &str = "iqn.2026-11.test.sanboot:sessions";

#[test]
fn a_second_login_with_the_same_isid_reinstates_the_session() {
    let s = sanboot(4);
    let mut old = Initiator::login_with(s.port, NAME, IQN, 0, isid(1)).unwrap();
    old.ready().unwrap();
    let mut new = Initiator::login_with(s.port, NAME, IQN, 0, isid(1))
        .unwrap_or_else(|e| panic!("reinstating login refused: {e}\n{}", s.log()));
    new.ready().unwrap();
    assert!(
        old.read10(0, 1).is_err(),
        "the reinstated session's connection still answers"
    );
    assert_eq!(new.read10(0, 1).unwrap().status, 0);
    assert!(
        s.wait_log("session reinstated", std::time::Duration::from_secs(5)),
        "no log line for the reinstatement:\n{}",
        s.log()
    );
}

#[test]
fn logins_beyond_max_sessions_are_refused() {
    let s = sanboot(2);
    let mut a = Initiator::login_with(s.port, NAME, IQN, 0, isid(1)).unwrap();
    let mut b = Initiator::login_with(s.port, NAME, IQN, 0, isid(2)).unwrap();
    let err = Initiator::login_with(s.port, NAME, IQN, 0, isid(3))
        .err()
        .expect("a third session was admitted with max_sessions = 2");
    assert!(
        err.to_string().contains("status class 3"),
        "expected a target error (out of resources): {err}"
    );
    // The two admitted sessions still work, and a slot frees up on logout.
    a.ready().unwrap();
    b.ready().unwrap();
    drop(a);
    let mut c = None;
    for _ in 0..50 {
        if let Ok(i) = Initiator::login_with(s.port, NAME, IQN, 0, isid(3)) {
            c = Some(i);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.expect("a slot did not free up after a connection closed")
        .ready()
        .unwrap();
}
