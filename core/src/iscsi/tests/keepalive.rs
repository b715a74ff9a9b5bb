//! Dead-peer detection: NOP-In pings after an idle interval, the connection
//! closed when nothing answers (RFC 7143 §11.18/§11.19), driven with fake time.

use super::*;

const INTERVAL: u64 = 10_000;
const TIMEOUT: u64 = 5_000;

fn limits() -> TargetLimits {
    TargetLimits {
        nop_in_interval_ms: INTERVAL,
        nop_in_timeout_ms: TIMEOUT,
        ..TargetLimits::default()
    }
}

/// Jump to `t`, run the timers, return what the target sends.
fn at(h: &mut Harness<'_>, t: u64) -> Vec<Vec<u8>> {
    h.now = Instant::from_millis(t);
    h.conn.handle_timeout(h.now);
    h.drain()
}

/// The one NOP-In ping in `out`.
fn ping(out: &[Vec<u8>]) -> NopIn {
    assert_eq!(out.len(), 1, "one PDU expected");
    NopIn::parse(&bhs(&out[0])).unwrap()
}

/// The initiator's answer to a ping: ITT 0xffffffff, the ping's TTT, I=1.
fn answer(ttt: u32, exp_stat_sn: u32) -> [u8; 48] {
    let mut p = [0u8; 48];
    NopOut {
        immediate: true,
        lun: 0,
        itt: RESERVED_TAG,
        ttt,
        cmd_sn: 0,
        exp_stat_sn,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..]));
    p
}

#[test]
fn a_peer_that_stops_answering_is_closed_after_interval_plus_timeout() {
    let mut h = ipxe_logged_in(limits());
    assert_eq!(h.conn.poll_timeout(), Some(Instant::from_millis(INTERVAL)));
    assert!(at(&mut h, INTERVAL - 1).is_empty());

    let p = ping(&at(&mut h, INTERVAL));
    assert_eq!(p.itt, RESERVED_TAG, "a target ping has ITT 0xffffffff");
    assert_ne!(p.ttt, RESERVED_TAG, "a ping needs a valid TTT");
    assert_eq!(h.conn.stats().pings, 1);
    // Idempotent: the same instant again sends nothing more.
    assert!(at(&mut h, INTERVAL).is_empty());
    assert_eq!(
        h.conn.poll_timeout(),
        Some(Instant::from_millis(INTERVAL + TIMEOUT))
    );
    assert!(at(&mut h, INTERVAL + TIMEOUT - 1).is_empty());
    assert!(!h.closed);

    assert!(at(&mut h, INTERVAL + TIMEOUT).is_empty());
    assert!(h.closed, "Event::Close after the unanswered ping");
    assert_eq!(h.conn.close_reason(), Some(CloseReason::PeerTimeout));
    assert_eq!(
        h.luns.target().lost.len(),
        1,
        "the SCSI layer forgets the nexus"
    );
    assert_eq!(h.conn.poll_timeout(), None);
    assert_eq!(h.conn.last_activity(), Instant::from_millis(0));
}

#[test]
fn a_peer_that_answers_pings_stays_up_for_hours() {
    let mut h = ipxe_logged_in(limits());
    // StatSN the next response will carry: pings must not advance it.
    let mut n = [0u8; 48];
    NopOut {
        immediate: true,
        lun: 0,
        itt: 0x42,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut n[..]));
    let before = NopIn::parse(&bhs(&h.feed(&n)[0])).unwrap().stat_sn;

    let mut t = 0;
    let mut ttts = Vec::new();
    for _ in 0..720 {
        // Run the clock to the next timer, like a host loop would.
        t = h.conn.poll_timeout().unwrap().millis();
        let p = ping(&at(&mut h, t));
        assert_eq!(
            p.stat_sn,
            before + 1,
            "a ping carries, not advances, StatSN"
        );
        ttts.push(p.ttt);
        // The initiator answers 200 ms later.
        h.now = Instant::from_millis(t + 200);
        assert!(h.feed(&answer(p.ttt, p.stat_sn)).is_empty());
        assert!(!h.closed);
    }
    assert!(t >= 2 * 3600 * 1000, "ran {t} ms");
    assert_eq!(h.conn.close_reason(), None);
    assert!(h.conn.is_full_feature());
    assert_eq!(h.conn.stats().pings, 720);
    ttts.dedup();
    assert_eq!(ttts.len(), 720, "each ping has its own TTT");
    // The session still serves commands, StatSN in sequence.
    let out = h.feed(&command(
        0x50,
        0,
        &read10(0, 1),
        512,
        true,
        false,
        &[],
        true,
    ));
    let d = DataIn::parse(&bhs(&out[0])).unwrap();
    assert_eq!(d.stat_sn, before + 1);
}

#[test]
fn any_pdu_counts_as_life_and_restarts_the_idle_interval() {
    let mut h = ipxe_logged_in(limits());
    // Traffic every 9 s: no ping is ever needed.
    for i in 1..=20u32 {
        h.now = Instant::from_millis(u64::from(i) * 9_000);
        h.conn.handle_timeout(h.now);
        let out = h.feed(&command(
            0x100 + i,
            i - 1,
            &read10(0, 1),
            512,
            true,
            false,
            &[],
            true,
        ));
        assert!(out.iter().all(|p| bhs(p).opcode() != Opcode::NopIn));
    }
    assert_eq!(h.conn.stats().pings, 0);
    assert_eq!(h.conn.last_activity(), Instant::from_millis(180_000));
    // A command (not the NOP-Out answer) also ends a ping in flight.
    let p = ping(&at(&mut h, 190_000));
    h.now = Instant::from_millis(194_000);
    h.feed(&command(
        0x200,
        20,
        &read10(0, 1),
        512,
        true,
        false,
        &[],
        true,
    ));
    assert!(at(&mut h, 195_000).is_empty());
    assert!(!h.closed);
    // A late answer to that ping is accepted quietly.
    assert!(h.feed(&answer(p.ttt, p.stat_sn)).is_empty());
    assert_eq!(h.conn.stats().rejects, 0);
}

#[test]
fn interval_zero_sends_no_pings() {
    let mut h = ipxe_logged_in(TargetLimits {
        nop_in_interval_ms: 0,
        ..TargetLimits::default()
    });
    assert_eq!(h.conn.poll_timeout(), None);
    assert!(at(&mut h, 24 * 3600 * 1000).is_empty());
    assert!(!h.closed);
}

#[test]
fn default_timings_reap_a_dead_station_within_a_minute() {
    let d = TargetLimits::default();
    assert!(d.nop_in_interval_ms > 0);
    assert!(d.nop_in_interval_ms + d.nop_in_timeout_ms <= 60_000);
    let mut h = ipxe_logged_in(d);
    let mut t = 0;
    while !h.closed {
        t = h.conn.poll_timeout().unwrap().millis();
        at(&mut h, t);
    }
    assert_eq!(t, d.nop_in_interval_ms + d.nop_in_timeout_ms);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::PeerTimeout));
}
