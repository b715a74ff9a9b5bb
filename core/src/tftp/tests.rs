//! Listener + transfer driven together with fake time and a scripted client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::wire::{ErrorCode, Options, Repr};
use super::*;
use crate::time::{Duration, Instant};

const IPXE_RRQ: &[u8] = include_bytes!("testdata/ipxe_rrq_boot.bin");
const IPXE_OACK: &[u8] = include_bytes!("testdata/ipxe_oack_boot.bin");
const IPXE_ACK0: &[u8] = include_bytes!("testdata/ipxe_ack0.bin");
const IPXE_ACK1: &[u8] = include_bytes!("testdata/ipxe_ack1.bin");
const IPXE_DATA1: &[u8] = include_bytes!("testdata/ipxe_data1_boot.bin");
const EDK2_RRQ_TSIZE: &[u8] = include_bytes!("testdata/edk2_rrq_tsize.bin");
const EDK2_ERROR8: &[u8] = include_bytes!("testdata/edk2_error8.bin");
const EDK2_RRQ: &[u8] = include_bytes!("testdata/edk2_rrq.bin");

/// File contents derived from the offset, so big files need no memory.
fn pattern(offset: u64) -> u8 {
    (offset ^ (offset >> 8) ^ (offset >> 17).wrapping_mul(31)) as u8
}

struct PatternFile {
    size: u64,
}

impl ReadAt for PatternFile {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if offset + buf.len() as u64 > self.size {
            return Err(ReadError::Truncated);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern(offset + i as u64);
        }
        Ok(())
    }
}

fn incoming(rrq: &[u8]) -> Incoming {
    let mut out = [0u8; 64];
    match Listener::new().handle(rrq, &mut out) {
        Some(ListenerEvent::Incoming(inc)) => inc,
        other => panic!("{other:?}"),
    }
}

fn rrq(name: &str, options: Options) -> std::vec::Vec<u8> {
    let repr = Repr::Rrq(wire::Request {
        filename: name.as_bytes(),
        mode: b"octet",
        options,
    });
    let mut v = std::vec![0u8; repr.buffer_len()];
    repr.emit(&mut v).unwrap();
    v
}

extern crate std;

/// Deterministic loss: xorshift64*, drops `percent` of datagrams.
struct Loss {
    state: u64,
    percent: u64,
}

impl Loss {
    fn drop(&mut self) -> bool {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % 100 < self.percent
    }
}

/// An RFC 7440 receiver: ACKs every `windowsize` in-order blocks, the last
/// block, and re-ACKs its last good block on anything out of order or on its
/// own timeout. Checks every byte against `pattern`.
struct Client {
    blksize: u64,
    windowsize: u64,
    /// 64-bit index of the next block expected.
    expected: u64,
    in_window: u64,
    received: u64,
    done: bool,
    oack: Option<Options>,
    wire_blocks_seen_wrap: bool,
    last_progress: Instant,
    timeout: Duration,
}

impl Client {
    fn new(now: Instant) -> Client {
        Client {
            blksize: 512,
            windowsize: 1,
            expected: 1,
            in_window: 0,
            received: 0,
            done: false,
            oack: None,
            wire_blocks_seen_wrap: false,
            last_progress: now,
            timeout: Duration::from_millis(1500),
        }
    }

    fn ack(&self) -> [u8; 4] {
        let b = (self.expected - 1) as u16;
        [0, 4, (b >> 8) as u8, b as u8]
    }

    /// Returns the ACK to send, if any.
    fn receive(&mut self, now: Instant, datagram: &[u8]) -> Option<[u8; 4]> {
        match Repr::parse_bytes(datagram).unwrap() {
            Repr::Oack { options } => {
                if self.expected == 1 {
                    self.oack = Some(options);
                    self.blksize = options.blksize.unwrap_or(512);
                    self.windowsize = options.windowsize.unwrap_or(1);
                    self.last_progress = now;
                }
                (self.expected == 1).then_some([0, 4, 0, 0])
            }
            Repr::Data { block, data } => {
                if block != self.expected as u16 || self.done {
                    self.in_window = 0;
                    return Some(self.ack());
                }
                if block == 0 {
                    self.wire_blocks_seen_wrap = true;
                }
                let offset = (self.expected - 1) * self.blksize;
                for (i, b) in data.iter().enumerate() {
                    assert_eq!(*b, pattern(offset + i as u64), "byte {}", offset + i as u64);
                }
                assert!(data.len() as u64 <= self.blksize);
                self.received += data.len() as u64;
                self.expected += 1;
                self.in_window += 1;
                self.last_progress = now;
                if (data.len() as u64) < self.blksize {
                    self.done = true;
                }
                if self.done || self.in_window >= self.windowsize {
                    self.in_window = 0;
                    return Some(self.ack());
                }
                None
            }
            other => panic!("client got {other:?}"),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.last_progress + self.timeout)
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<[u8; 4]> {
        if self.done || now < self.last_progress + self.timeout {
            return None;
        }
        self.last_progress = now;
        if self.oack.is_none() && self.expected == 1 {
            // Nothing heard yet: a real client would repeat its RRQ.
            return None;
        }
        self.in_window = 0;
        Some(self.ack())
    }
}

struct Run {
    client: Client,
    transfer: Transfer,
    now: Instant,
    /// Datagrams the server put on the wire.
    sent: u64,
}

/// Runs a transfer to its end, dropping datagrams in both directions.
fn run(size: u64, options: Options, config: &TransferConfig, loss_percent: u64, seed: u64) -> Run {
    let mut now = Instant::from_millis(1_000);
    let inc = incoming(&rrq("f", options));
    let mut transfer = inc.accept(now, size, config);
    let mut client = Client::new(now);
    let mut file = PatternFile { size };
    let mut loss = Loss {
        state: seed | 1,
        percent: loss_percent,
    };
    let mut buf = std::vec![0xa5u8; transfer.required_buffer_len()];
    let mut sent = 0u64;
    let mut to_server: std::vec::Vec<[u8; 4]> = std::vec::Vec::new();
    for _ in 0..10_000_000u64 {
        while let Some(t) = transfer.poll_transmit(now, &mut buf, &mut file).unwrap() {
            sent += 1;
            if !loss.drop() {
                if let Some(ack) = client.receive(now, &buf[..t.len]) {
                    to_server.push(ack);
                }
            }
        }
        if transfer.is_finished() {
            return Run {
                client,
                transfer,
                now,
                sent,
            };
        }
        if !to_server.is_empty() {
            for ack in core::mem::take(&mut to_server) {
                if !loss.drop() {
                    transfer.handle_datagram(now, &ack);
                }
            }
            continue;
        }
        // Nothing in flight: jump to the earliest timer.
        let next = [transfer.poll_timeout(), client.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("someone must have a timer");
        now = next;
        transfer.handle_timeout(now);
        if let Some(ack) = client.handle_timeout(now) {
            to_server.push(ack);
        }
    }
    panic!("transfer did not end");
}

fn opts(blksize: Option<u64>, windowsize: Option<u64>) -> Options {
    Options {
        blksize,
        windowsize,
        ..Options::default()
    }
}

#[test]
fn ipxe_exchange_matches_the_capture() {
    // The same answers dnsmasq gave iPXE, byte for byte, when serving the same file.
    let script = &IPXE_DATA1[4..];
    let inc = incoming(IPXE_RRQ);
    assert_eq!(inc.path(), "boot.ipxe");
    let now = Instant::from_millis(0);
    let mut t = inc.accept(now, script.len() as u64, &TransferConfig::default());
    let mut src = script;
    let mut buf = [0xa5u8; 1500];
    let tx = t.poll_transmit(now, &mut buf, &mut src).unwrap().unwrap();
    assert_eq!(&buf[..tx.len], IPXE_OACK);
    assert_eq!(t.poll_transmit(now, &mut buf, &mut src).unwrap(), None);
    t.handle_datagram(now, IPXE_ACK0);
    let tx = t.poll_transmit(now, &mut buf, &mut src).unwrap().unwrap();
    assert_eq!(&buf[..tx.len], IPXE_DATA1);
    assert_eq!(t.poll_transmit(now, &mut buf, &mut src).unwrap(), None);
    assert!(!t.is_finished());
    t.handle_datagram(now, IPXE_ACK1);
    assert_eq!(t.outcome(), Some(Outcome::Complete));
    assert!(t.is_finished());
    assert_eq!(t.poll_timeout(), None);
    assert_eq!(t.bytes_acked(), 122);
}

#[test]
fn edk2_asks_tsize_then_aborts_with_error_8() {
    let now = Instant::from_millis(0);
    let inc = incoming(EDK2_RRQ_TSIZE);
    let mut t = inc.accept(now, 850_528, &TransferConfig::default());
    let mut file = PatternFile { size: 850_528 };
    let mut buf = [0u8; 1500];
    let tx = t.poll_transmit(now, &mut buf, &mut file).unwrap().unwrap();
    assert_eq!(
        Repr::parse_bytes(&buf[..tx.len]).unwrap(),
        Repr::Oack {
            options: Options {
                blksize: Some(1468),
                tsize: Some(850_528),
                timeout: None,
                windowsize: Some(4),
            }
        }
    );
    t.handle_datagram(now, EDK2_ERROR8);
    assert_eq!(
        t.outcome(),
        Some(Outcome::PeerError(ErrorCode::OptionNegotiation))
    );
    assert!(t.is_finished());
    assert_eq!(t.poll_transmit(now, &mut buf, &mut file).unwrap(), None);

    // Its second RRQ (no tsize) then downloads with windowsize 4.
    let inc = incoming(EDK2_RRQ);
    assert_eq!(inc.path(), "ipxe.efi");
    let r = run(850_528, inc.options(), &TransferConfig::default(), 0, 1);
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    assert_eq!((r.transfer.blksize(), r.transfer.windowsize()), (1468, 4));
    assert_eq!(r.client.received, 850_528);
    assert_eq!(r.client.oack.unwrap().tsize, None);
}

#[test]
fn plain_rfc1350_lock_step_without_options() {
    // 3 full blocks, so a final empty DATA 4 ends the transfer.
    let r = run(1536, Options::default(), &TransferConfig::default(), 0, 1);
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    assert_eq!(r.client.oack, None, "no options asked: no OACK");
    assert_eq!(r.client.received, 1536);
    assert_eq!(r.client.expected, 5);
    assert_eq!(r.sent, 4);
    let r = run(0, Options::default(), &TransferConfig::default(), 0, 1);
    assert_eq!((r.client.received, r.sent), (0, 1));
}

#[test]
fn first_packet_without_options_is_data_1() {
    let now = Instant::from_millis(0);
    let mut t = incoming(&rrq("f", Options::default())).accept(now, 10, &TransferConfig::default());
    let mut buf = [0u8; 600];
    let mut src: &[u8] = b"0123456789";
    let tx = t.poll_transmit(now, &mut buf, &mut src).unwrap().unwrap();
    assert_eq!(&buf[..tx.len], b"\x00\x03\x00\x010123456789");
}

#[test]
fn windowed_transfer_sends_a_window_per_ack() {
    let size = 1428 * 640 + 7;
    let r = run(
        size,
        opts(Some(1428), Some(64)),
        &TransferConfig::default(),
        0,
        1,
    );
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    assert_eq!(r.client.received, size);
    assert_eq!(r.transfer.windowsize(), 64);
    // 641 DATA + 1 OACK, no retransmissions.
    assert_eq!(r.sent, 642);
    assert_eq!(r.transfer.stats().retransmitted, 0);

    // Exactly one window leaves before an ACK is needed.
    let now = Instant::from_millis(0);
    let mut t = incoming(&rrq("f", opts(Some(512), Some(8)))).accept(
        now,
        100_000,
        &TransferConfig::default(),
    );
    let mut file = PatternFile { size: 100_000 };
    let mut buf = [0u8; 600];
    let _oack = t.poll_transmit(now, &mut buf, &mut file).unwrap().unwrap();
    t.handle_datagram(now, b"\x00\x04\x00\x00");
    let mut n = 0;
    while t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 8);
    // An ACK in the middle of the window (block 5 of 8 arrived last) restarts at 6.
    t.handle_datagram(now, b"\x00\x04\x00\x05");
    let tx = t.poll_transmit(now, &mut buf, &mut file).unwrap().unwrap();
    assert_eq!(&buf[..4], b"\x00\x03\x00\x06");
    assert_eq!(tx.len, 516);
    let mut n = 1;
    while t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 8, "blocks 6..=13");
    assert_eq!(t.stats().retransmitted, 3, "6, 7, 8 went twice");
}

#[test]
fn lossy_links_still_deliver_every_byte() {
    for (windowsize, loss, seed) in [
        (1, 10, 7),
        (8, 10, 11),
        (64, 5, 13),
        (4, 30, 17),
        (1, 30, 19),
    ] {
        let size = 300_000;
        let config = TransferConfig {
            max_retries: 50,
            ..TransferConfig::default()
        };
        let r = run(
            size,
            opts(Some(1432), Some(windowsize)),
            &config,
            loss,
            seed,
        );
        assert_eq!(
            r.transfer.outcome(),
            Some(Outcome::Complete),
            "window {windowsize} loss {loss}%"
        );
        assert_eq!(r.client.received, size);
        assert!(r.client.done);
        assert!(r.transfer.stats().retransmitted > 0);
    }
}

#[test]
fn duplicate_acks_do_not_trigger_retransmission() {
    let now = Instant::from_millis(0);
    let mut t =
        incoming(&rrq("f", Options::default())).accept(now, 5000, &TransferConfig::default());
    let mut file = PatternFile { size: 5000 };
    let mut buf = [0u8; 600];
    assert!(t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some());
    t.handle_datagram(now, b"\x00\x04\x00\x01");
    let tx = t.poll_transmit(now, &mut buf, &mut file).unwrap().unwrap();
    assert_eq!(&buf[..4], b"\x00\x03\x00\x02");
    assert_eq!(tx.len, 516);
    // A delayed duplicate of ACK 1 (the Sorcerer's Apprentice trigger) and an old ACK 0.
    for _ in 0..3 {
        t.handle_datagram(now, b"\x00\x04\x00\x01");
        t.handle_datagram(now, b"\x00\x04\x00\x00");
        assert_eq!(t.poll_transmit(now, &mut buf, &mut file).unwrap(), None);
    }
    // An ACK for a block never sent is ignored too.
    t.handle_datagram(now, b"\x00\x04\x00\x09");
    assert_eq!(t.poll_transmit(now, &mut buf, &mut file).unwrap(), None);
    assert_eq!(t.stats().duplicate_acks, 7);
    assert_eq!(t.stats().data_sent, 2);
    // Garbage and stray packets are counted and ignored.
    for d in [
        &b""[..],
        b"\x00\x03\x00\x01xx",
        b"\x00\x01f\x00octet\x00",
        b"\x00\x06",
    ] {
        t.handle_datagram(now, d);
    }
    assert_eq!(t.stats().ignored, 4);
    assert_eq!(t.outcome(), None);
}

#[test]
fn retransmits_on_timeout_then_gives_up() {
    let config = TransferConfig {
        timeout: Duration::from_millis(1000),
        max_retries: 3,
        ..TransferConfig::default()
    };
    let start = Instant::from_millis(0);
    let mut t = incoming(&rrq("f", Options::default())).accept(start, 5000, &config);
    let mut file = PatternFile { size: 5000 };
    let mut buf = [0u8; 600];
    let mut now = start;
    let mut sends = 0;
    while !t.is_finished() {
        while t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some() {
            assert_eq!(&buf[..4], b"\x00\x03\x00\x01");
            sends += 1;
        }
        let Some(deadline) = t.poll_timeout() else {
            break;
        };
        assert_eq!(deadline, now + Duration::from_millis(1000));
        // Early and repeated calls do nothing.
        t.handle_timeout(Instant::from_millis(deadline.millis() - 1));
        assert_eq!(t.poll_transmit(now, &mut buf, &mut file).unwrap(), None);
        now = deadline;
        t.handle_timeout(now);
        t.handle_timeout(now);
    }
    assert_eq!(sends, 4, "first send + 3 retries");
    assert_eq!(t.outcome(), Some(Outcome::TimedOut));
    assert_eq!(now, Instant::from_millis(4000));
}

#[test]
fn lost_oack_and_lost_ack0_are_recovered() {
    let now = Instant::from_millis(0);
    let mut t =
        incoming(&rrq("f", opts(Some(1024), None))).accept(now, 3000, &TransferConfig::default());
    let mut file = PatternFile { size: 3000 };
    let mut buf = [0u8; 1100];
    assert!(t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some());
    // OACK lost: the server resends it on timeout.
    let later = t.poll_timeout().unwrap();
    t.handle_timeout(later);
    let tx = t
        .poll_transmit(later, &mut buf, &mut file)
        .unwrap()
        .unwrap();
    assert!(matches!(
        Repr::parse_bytes(&buf[..tx.len]).unwrap(),
        Repr::Oack { .. }
    ));
    // ACK for a DATA block before ACK 0 means nothing.
    t.handle_datagram(later, b"\x00\x04\x00\x01");
    assert_eq!(t.poll_transmit(later, &mut buf, &mut file).unwrap(), None);
    t.handle_datagram(later, b"\x00\x04\x00\x00");
    let tx = t
        .poll_transmit(later, &mut buf, &mut file)
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..4], tx.len), (&b"\x00\x03\x00\x01"[..], 1028));
    assert_eq!(t.stats().retransmitted, 1);
}

#[test]
fn block_numbers_wrap_after_65535() {
    // > 32 MiB at 512 bytes: 67 586 blocks, so the 16-bit number wraps once.
    let size = 33 * 1024 * 1024 + 333;
    let r = run(size, Options::default(), &TransferConfig::default(), 0, 1);
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    assert_eq!(r.client.received, size);
    assert!(r.client.wire_blocks_seen_wrap);
    assert_eq!(r.sent, size / 512 + 1);
    assert_eq!(r.transfer.bytes_acked(), size);
    // Windowed and lossy across the wrap as well.
    let size = 40 * 1024 * 1024;
    let config = TransferConfig {
        max_retries: 50,
        ..TransferConfig::default()
    };
    let r = run(size, opts(Some(512), Some(64)), &config, 2, 5);
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    assert_eq!(r.client.received, size);
    assert!(r.client.wire_blocks_seen_wrap);
}

#[test]
fn options_are_clamped_or_ignored() {
    let now = Instant::from_millis(0);
    let config = TransferConfig {
        max_blksize: 1468,
        max_windowsize: 64,
        ..TransferConfig::default()
    };
    let accept = |o: Options| incoming(&rrq("f", o)).accept(now, 1000, &config);
    let t = accept(opts(Some(65464), Some(1000)));
    assert_eq!((t.blksize(), t.windowsize()), (1468, 64));
    assert_eq!(t.granted(), opts(Some(1468), Some(64)));
    let t = accept(opts(Some(u64::MAX), None));
    assert_eq!(t.blksize(), 1468);
    let t = accept(opts(Some(8), Some(1)));
    assert_eq!((t.blksize(), t.windowsize()), (8, 1));
    // blksize below 8 and windowsize 0 are not granted: no OACK at all then.
    let t = accept(opts(Some(7), Some(0)));
    assert_eq!((t.blksize(), t.windowsize()), (512, 1));
    assert!(t.granted().is_empty());
    for (asked, granted) in [(0, None), (256, None), (1, Some(1)), (255, Some(255))] {
        let t = accept(Options {
            timeout: Some(asked),
            ..Options::default()
        });
        assert_eq!(t.granted().timeout, granted, "timeout {asked}");
        let want = granted.map_or(config.timeout, Duration::from_secs);
        assert_eq!(t.timeout(), want);
        assert_eq!(t.poll_timeout(), Some(now + want));
    }
    // tsize always answers with the real size, whatever the client wrote.
    let t = accept(Options {
        tsize: Some(12345),
        ..Options::default()
    });
    assert_eq!(t.granted().tsize, Some(1000));
    // A host maximum outside 8..=65464 is clamped.
    let big = TransferConfig {
        max_blksize: u16::MAX,
        ..config
    };
    let t = incoming(&rrq("f", opts(Some(65535), None))).accept(now, 1, &big);
    assert_eq!(t.blksize(), 65464);
    let tiny = TransferConfig {
        max_blksize: 0,
        max_windowsize: 0,
        ..config
    };
    let t = incoming(&rrq("f", opts(Some(1000), Some(5)))).accept(now, 1, &tiny);
    assert_eq!((t.blksize(), t.windowsize()), (8, 1));
}

#[test]
fn negotiated_timeout_drives_retransmission() {
    let r = run(
        10_000,
        Options {
            timeout: Some(3),
            ..Options::default()
        },
        &TransferConfig::default(),
        0,
        1,
    );
    assert_eq!(r.transfer.outcome(), Some(Outcome::Complete));
    let now = Instant::from_millis(0);
    let mut t = incoming(&rrq(
        "f",
        Options {
            timeout: Some(3),
            ..Options::default()
        },
    ))
    .accept(now, 10, &TransferConfig::default());
    let mut buf = [0u8; 600];
    let mut src: &[u8] = b"0123456789";
    let _ = t.poll_transmit(now, &mut buf, &mut src).unwrap();
    assert_eq!(t.poll_timeout(), Some(Instant::from_millis(3000)));
    assert!(r.now > Instant::from_millis(0));
}

#[test]
fn read_failure_sends_error_0_and_ends() {
    let now = Instant::from_millis(0);
    // The host said 2000 bytes but the source holds only 700.
    let mut t =
        incoming(&rrq("f", Options::default())).accept(now, 2000, &TransferConfig::default());
    let data = [7u8; 700];
    let mut src: &[u8] = &data;
    let mut buf = [0u8; 600];
    assert!(t.poll_transmit(now, &mut buf, &mut src).unwrap().is_some());
    t.handle_datagram(now, b"\x00\x04\x00\x01");
    let tx = t.poll_transmit(now, &mut buf, &mut src).unwrap().unwrap();
    assert_eq!(
        Repr::parse_bytes(&buf[..tx.len]).unwrap(),
        Repr::Error {
            code: ErrorCode::NotDefined,
            message: b"Read error"
        }
    );
    assert_eq!(t.outcome(), Some(Outcome::ReadFailed(ReadError::Truncated)));
    assert!(t.is_finished());
    assert_eq!(t.poll_transmit(now, &mut buf, &mut src).unwrap(), None);
}

#[test]
fn small_buffer_is_an_error_not_a_panic() {
    let now = Instant::from_millis(0);
    let mut t =
        incoming(&rrq("f", opts(Some(1432), None))).accept(now, 5000, &TransferConfig::default());
    let mut file = PatternFile { size: 5000 };
    let mut small = [0u8; 10];
    assert!(matches!(
        t.poll_transmit(now, &mut small, &mut file),
        Err(wire::Error::InsufficientSize { .. })
    ));
    let mut buf = [0u8; 1436];
    assert_eq!(t.required_buffer_len(), 1436);
    // With a tiny blksize the OACK is the longest datagram.
    let tiny = incoming(&rrq(
        "f",
        Options {
            blksize: Some(8),
            tsize: Some(0),
            ..Options::default()
        },
    ))
    .accept(now, 1 << 40, &TransferConfig::default());
    assert_eq!(
        tiny.required_buffer_len(),
        2 + 10 + 6 + 14,
        "OACK blksize 8, tsize 2^40"
    );
    assert!(t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some());
    t.handle_datagram(now, b"\x00\x04\x00\x00");
    assert_eq!(
        t.poll_transmit(now, &mut small, &mut file),
        Err(wire::Error::InsufficientSize { required: 1436 })
    );
    // The transfer is still usable with a proper buffer.
    assert!(t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some());
}

#[test]
fn client_error_mid_transfer_ends_it() {
    let now = Instant::from_millis(0);
    let mut t =
        incoming(&rrq("f", Options::default())).accept(now, 5000, &TransferConfig::default());
    let mut file = PatternFile { size: 5000 };
    let mut buf = [0u8; 600];
    assert!(t.poll_transmit(now, &mut buf, &mut file).unwrap().is_some());
    t.handle_datagram(now, b"\x00\x05\x00\x03Disk full\x00");
    assert_eq!(t.outcome(), Some(Outcome::PeerError(ErrorCode::DiskFull)));
    assert_eq!(t.poll_timeout(), None);
    t.handle_timeout(Instant::from_millis(1_000_000));
    t.handle_datagram(now, b"\x00\x04\x00\x01");
    assert_eq!(t.poll_transmit(now, &mut buf, &mut file).unwrap(), None);
}
