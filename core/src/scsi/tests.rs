//! Command-level tests: exact response bytes and libiscsi-like scenarios.

#![allow(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used)]

use super::*;

const NAA: u64 = 0x5001_4050_0000_0001;

fn nexus(index: u16, name: &str) -> Nexus<'_> {
    Nexus {
        index,
        initiator: name,
        isid: [0x80, 0, 0, 0, 0, index as u8],
    }
}

const I1: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";

fn lun(blocks: u64) -> Lun<4, 4> {
    Lun::new(LunConfig::new(blocks, NAA))
}

/// Runs a command, clearing the power-on unit attention first.
fn run(l: &mut Lun<4, 4>, n: &Nexus<'_>, cdb: &[u8], buf: &mut [u8]) -> Step {
    l.command(n, cdb, 0, buf)
}

fn sense_of(step: Step) -> (u8, u8, u8) {
    match step {
        Step::Done(Response {
            status: Status::CheckCondition,
            sense: Some(s),
            ..
        }) => (s.key.as_u8(), s.asc, s.ascq),
        other => panic!("expected CHECK CONDITION, got {other:?}"),
    }
}

#[test]
fn power_on_unit_attention_then_tur_good() {
    let mut l = lun(32768);
    let n = nexus(0, I1);
    let mut buf = [0u8; 512];
    assert_eq!(
        sense_of(run(&mut l, &n, &[0; 6], &mut buf)),
        (6, 0x29, 0x00)
    );
    assert_eq!(
        run(&mut l, &n, &[0; 6], &mut buf),
        Step::Done(Response::good(0))
    );
}

#[test]
fn read_capacity_10_bytes() {
    let mut l = lun(32768);
    let n = nexus(0, I1);
    let mut buf = [0u8; 512];
    let _ = run(&mut l, &n, &[0; 6], &mut buf);
    let step = run(&mut l, &n, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut buf);
    assert_eq!(step, Step::Done(Response::good(8)));
    assert_eq!(&buf[..8], &[0, 0, 0x7f, 0xff, 0, 0, 2, 0]);
}

#[test]
fn read10_beyond_end_is_lba_out_of_range() {
    let mut l = lun(100);
    let n = nexus(0, I1);
    let mut buf = [0u8; 512];
    let _ = run(&mut l, &n, &[0; 6], &mut buf);
    let step = run(&mut l, &n, &[0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0], &mut buf);
    assert_eq!(sense_of(step), (5, 0x21, 0x00));
    let step = run(&mut l, &n, &[0x28, 0, 0, 0, 0, 98, 0, 0, 2, 0], &mut buf);
    assert_eq!(
        step,
        Step::Io(Io::Read {
            offset: 98 * 512,
            len: 1024
        })
    );
}
