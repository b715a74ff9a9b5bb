#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 19));
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn t(ms: u64) -> Instant {
    Instant(ms)
}

#[test]
fn offer_then_bind_keeps_the_address() {
    let mut l = LeaseTable::<16>::new(1);
    let mut cur = 0;
    let ip = l
        .offer(t(0), mac(1), None, POOL, &mut cur, SERVER, t(10_000))
        .unwrap();
    assert_eq!(ip, POOL.0);
    let g = l.generation();
    l.bind(t(5), mac(1), ip, true, t(3_600_000)).unwrap();
    assert!(l.generation() != g, "binding must mark the table dirty");
    assert_eq!(
        l.lookup_mac(t(6), &mac(1)).unwrap().state,
        LeaseState::Bound
    );
    // A second DISCOVER from the same client gets the same address.
    assert_eq!(
        l.offer(t(7), mac(1), None, POOL, &mut cur, SERVER, t(10_007)),
        Some(ip)
    );
    assert_eq!(l.bound(t(8)).count(), 1);
}

#[test]
fn an_offer_is_held_then_released_by_time() {
    let mut l = LeaseTable::<16>::new(1);
    let mut cur = 0;
    let a = l
        .offer(t(0), mac(1), None, POOL, &mut cur, SERVER, t(1000))
        .unwrap();
    let mut cur2 = 0;
    let b = l
        .offer(t(1), mac(2), Some(a), POOL, &mut cur2, SERVER, t(1001))
        .unwrap();
    assert_ne!(a, b, "an offered address must not go to a second client");
    // After the hold, another client may take it.
    let c = l
        .offer(t(2000), mac(3), Some(a), POOL, &mut cur2, SERVER, t(3000))
        .unwrap();
    assert_eq!(c, a);
}

#[test]
fn pool_exhaustion_gives_none_and_full_table_too() {
    let mut l = LeaseTable::<32>::new(7);
    let mut cur = 0;
    for i in 0..10 {
        assert!(l
            .offer(t(0), mac(i), None, POOL, &mut cur, SERVER, t(60_000))
            .is_some());
    }
    assert_eq!(
        l.offer(t(0), mac(100), None, POOL, &mut cur, SERVER, t(60_000)),
        None
    );
    let mut small = LeaseTable::<4>::new(7);
    for i in 0..4 {
        assert!(small
            .offer(t(0), mac(i), None, POOL, &mut cur, SERVER, t(60_000))
            .is_some());
    }
    assert_eq!(
        small.offer(t(0), mac(9), None, POOL, &mut cur, SERVER, t(60_000)),
        None
    );
    // Once the offers expire the sweep frees them.
    assert!(small
        .offer(t(60_000), mac(9), None, POOL, &mut cur, SERVER, t(70_000))
        .is_some());
}

#[test]
fn server_address_is_never_offered() {
    let mut l = LeaseTable::<16>::new(1);
    let mut cur = 0;
    let pool = (SERVER, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(
        l.offer(t(0), mac(1), None, pool, &mut cur, SERVER, t(1000)),
        Some(Ipv4Addr::new(10, 0, 0, 2))
    );
    assert_eq!(
        l.offer(t(0), mac(2), None, pool, &mut cur, SERVER, t(1000)),
        None
    );
}

#[test]
fn reservation_is_exclusive() {
    let mut l = LeaseTable::<16>::new(1);
    l.reserve(mac(1), Ipv4Addr::new(10, 0, 0, 10)).unwrap();
    let mut cur = 0;
    let other = l
        .offer(
            t(0),
            mac(2),
            Some(Ipv4Addr::new(10, 0, 0, 10)),
            POOL,
            &mut cur,
            SERVER,
            t(1000),
        )
        .unwrap();
    assert_ne!(other, Ipv4Addr::new(10, 0, 0, 10));
    assert_eq!(
        l.bind(t(0), mac(3), Ipv4Addr::new(10, 0, 0, 10), true, t(5000)),
        Err(TableError::Conflict)
    );
    assert_eq!(
        l.offer(t(0), mac(1), None, POOL, &mut cur, SERVER, t(1000)),
        Some(Ipv4Addr::new(10, 0, 0, 10))
    );
    l.bind(t(0), mac(1), Ipv4Addr::new(10, 0, 0, 10), true, t(5000))
        .unwrap();
    assert!(l
        .bind(t(0), mac(1), Ipv4Addr::new(10, 0, 0, 11), true, t(5000))
        .is_err());
}

#[test]
fn decline_keeps_address_out_and_release_frees() {
    let mut l = LeaseTable::<16>::new(1);
    let mut cur = 0;
    let a = l
        .offer(t(0), mac(1), None, POOL, &mut cur, SERVER, t(1000))
        .unwrap();
    l.bind(t(0), mac(1), a, true, t(100_000)).unwrap();
    assert!(l.decline(&mac(1), a, t(50_000)));
    assert!(l.lookup_mac(t(1), &mac(1)).is_none());
    assert_eq!(l.lookup_ip(t(1), a).unwrap().state, LeaseState::Declined);
    let mut cur = 0;
    assert_ne!(
        l.offer(t(1), mac(1), Some(a), POOL, &mut cur, SERVER, t(1000)),
        Some(a)
    );
    let b = l.lookup_mac(t(1), &mac(1)).unwrap().ip;
    l.bind(t(1), mac(1), b, true, t(100_000)).unwrap();
    assert!(l.release(&mac(1), b));
    assert!(l.lookup_ip(t(2), b).is_none());
}

#[test]
fn leases_expire_and_load_back() {
    let mut l = LeaseTable::<16>::new(1);
    let lease = Lease {
        mac: mac(4),
        ip: Ipv4Addr::new(10, 0, 0, 14),
        expires: t(10_000),
        state: LeaseState::Bound,
    };
    l.load(t(0), lease).unwrap();
    assert_eq!(
        l.load(
            t(0),
            Lease {
                mac: mac(5),
                ..lease
            }
        ),
        Err(TableError::Conflict)
    );
    assert_eq!(
        l.load(
            t(20_000),
            Lease {
                mac: mac(6),
                ip: Ipv4Addr::new(10, 0, 0, 15),
                ..lease
            }
        ),
        Err(TableError::Expired)
    );
    assert_eq!(l.lookup_mac(t(9_999), &mac(4)), Some(lease));
    assert_eq!(l.lookup_mac(t(10_000), &mac(4)), None);
    assert_eq!(l.sweep(t(10_000)), 1);
    assert!(l.is_empty());
}

#[test]
fn zero_capacity_table_refuses_without_panicking() {
    let mut l = LeaseTable::<0>::new(1);
    let mut cur = 0;
    assert_eq!(
        l.offer(t(0), mac(1), None, POOL, &mut cur, SERVER, t(1000)),
        None
    );
    assert!(l.bind(t(0), mac(1), POOL.0, true, t(1000)).is_err());
    assert!(l.reserve(mac(1), POOL.0).is_err());
}

/// Random operations; after each one no address is live for two MACs, no
/// MAC holds two live addresses, and the lookups agree with a full scan.
#[test]
fn property_no_address_goes_to_two_macs() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20 {
        let mut l = LeaseTable::<12>::new(round);
        let mut cur = 0u32;
        let mut now = 0u64;
        l.reserve(mac(200), Ipv4Addr::new(10, 0, 0, 12)).unwrap();
        for _ in 0..3000 {
            now += rnd() % 700;
            let now_i = t(now);
            let m = mac((rnd() % 20) as u8);
            let ip = Ipv4Addr::new(10, 0, 0, 8 + (rnd() % 14) as u8);
            match rnd() % 7 {
                0 | 1 => {
                    let req = (rnd() % 2 == 0).then_some(ip);
                    if let Some(got) = l.offer(now_i, m, req, POOL, &mut cur, SERVER, t(now + 2000))
                    {
                        assert_eq!(l.lookup_mac(now_i, &m).unwrap().ip, got);
                    }
                }
                2 | 3 => {
                    let in_pool = (10..=19).contains(&ip.octets()[3]);
                    let _ = l.bind(now_i, m, ip, in_pool, t(now + 5000));
                }
                4 => {
                    let _ = l.release(&m, ip);
                }
                5 => {
                    let _ = l.decline(&m, ip, t(now + 3000));
                }
                _ => {
                    l.cancel_offer(&m);
                    l.sweep(now_i);
                }
            }
            let live: heapless::Vec<Lease, 12> = l
                .iter()
                .filter(|x| x.state == LeaseState::Reserved || x.expires > now_i)
                .collect();
            assert_eq!(l.iter().count(), l.len());
            for (i, a) in live.iter().enumerate() {
                for b in live.iter().skip(i + 1) {
                    assert_ne!(a.ip, b.ip, "address {} live twice: {a:?} {b:?}", a.ip);
                    if a.state != LeaseState::Declined && b.state != LeaseState::Declined {
                        assert_ne!(a.mac, b.mac, "mac holds two addresses: {a:?} {b:?}");
                    }
                }
                assert_eq!(l.lookup_ip(now_i, a.ip), Some(*a));
                if a.state != LeaseState::Declined {
                    assert_eq!(l.lookup_mac(now_i, &a.mac), Some(*a));
                }
            }
            let r = l.lookup_mac(now_i, &mac(200)).unwrap();
            assert_eq!(r.ip, Ipv4Addr::new(10, 0, 0, 12));
        }
    }
}
