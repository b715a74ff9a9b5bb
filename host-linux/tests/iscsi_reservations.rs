//! Persistent reservations across sessions of `sanboot serve`: PREEMPT AND
//! ABORT from one initiator aborts the other's tasks, and none of the
//! preempted initiator's Data-Out reaches the image after the PR OUT status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use iscsi_support::initiator::{Initiator, ScsiResult};
use iscsi_support::{Sanboot, IQN};

const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
const REGISTER: u8 = 0x00;
const PREEMPT_AND_ABORT: u8 = 0x05;
const WRITE_EXCLUSIVE: u8 = 0x01;

/// PERSISTENT RESERVE OUT with a 24-byte parameter list.
fn pr_out(ini: &mut Initiator, action: u8, kind: u8, key: u64, sa_key: u64) -> ScsiResult {
    let mut param = [0u8; 24];
    param[..8].copy_from_slice(&key.to_be_bytes());
    param[8..16].copy_from_slice(&sa_key.to_be_bytes());
    let mut cdb = [0u8; 10];
    cdb[0] = PERSISTENT_RESERVE_OUT;
    cdb[1] = action;
    cdb[2] = kind;
    cdb[5..9].copy_from_slice(&(param.len() as u32).to_be_bytes());
    ini.command(&cdb, &param, 0).unwrap()
}

/// The first command of a session may meet the power-on unit attention.
fn settle(ini: &mut Initiator) {
    ini.ready().unwrap();
}

#[test]
fn preempt_and_abort_keeps_the_preempted_initiators_data_off_the_disk() {
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {}\n",
        8 << 20
    ));
    let mut a = Initiator::login(s.port, "iqn.2026-12.test:a", IQN, 0)
        .unwrap_or_else(|e| panic!("login a: {e}\n{}", s.log()));
    let mut b = Initiator::login(s.port, "iqn.2026-12.test:b", IQN, 0)
        .unwrap_or_else(|e| panic!("login b: {e}\n{}", s.log()));
    settle(&mut a);
    settle(&mut b);
    assert_eq!(pr_out(&mut a, REGISTER, 0, 0, 0xaaaa).status, 0);
    assert_eq!(pr_out(&mut b, REGISTER, 0, 0, 0xbbbb).status, 0);

    // B writes 2 MiB (more than FirstBurstLength); while it waits for its first R2T, A preempts B's
    // registration and aborts its tasks.
    let data = vec![0xbbu8; 2 << 20];
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[7..9].copy_from_slice(&((data.len() / 512) as u16).to_be_bytes());
    let mut preempted = None;
    let r = b
        .command_pausing(&cdb, &data, 0, &mut || {
            preempted = Some(pr_out(
                &mut a,
                PREEMPT_AND_ABORT,
                WRITE_EXCLUSIVE,
                0xaaaa,
                0xbbbb,
            ));
        })
        .unwrap();
    let preempted = preempted.unwrap_or_else(|| panic!("no R2T: {r:02x?}"));
    assert_eq!(
        preempted.status, 0,
        "PREEMPT AND ABORT: {:02x?}",
        preempted.sense
    );
    // B's write did not complete: ABORTED COMMAND / COMMANDS CLEARED BY
    // ANOTHER INITIATOR (2F/00).
    assert_eq!(r.status, 2, "the preempted write must not end GOOD");
    assert_eq!(r.sense[2] & 0x0f, 0x0b, "sense {:02x?}", r.sense);
    assert_eq!(
        (r.sense[12], r.sense[13]),
        (0x2f, 0x00),
        "sense {:02x?}",
        r.sense
    );

    // Nothing B sent after the PR OUT status is on the disk: only what rode
    // with the command itself (immediate data, before the preemption) may be.
    let back = a.read10(0, (data.len() / 512) as u16).unwrap();
    assert_eq!(back.status, 0);
    let written = back
        .data
        .iter()
        .position(|&x| x != 0xbb)
        .unwrap_or(back.data.len());
    assert!(
        back.data[written..].iter().all(|&x| x == 0),
        "bytes of the preempted write reached the disk after {written}"
    );
    assert!(
        written < data.len(),
        "the whole preempted write reached the disk"
    );
    // The image file agrees with what the target serves.
    let image = std::fs::read(s.dir().join("disk.img")).unwrap();
    assert_eq!(&image[..back.data.len()], &back.data[..]);
}
