#![no_main]
//! Arbitrary datagrams to the listener and to up to four transfers, with time
//! moving forward. Nothing panics, every datagram the server emits is a valid
//! TFTP packet within the negotiated sizes, and afterwards the listener still
//! turns a valid RRQ into a transfer that sends its first packet.
use sanboot_core::tftp::wire::Repr;
use sanboot_core::tftp::{
    Listener, ListenerEvent, ReadAt, ReadError, Refusal, Transfer, TransferConfig,
};
use sanboot_core::time::{Duration, Instant};

struct Pattern(u64);

impl ReadAt for Pattern {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        // Fail now and then, as a shrinking file would.
        if offset.saturating_add(buf.len() as u64) > self.0 {
            return Err(ReadError::Truncated);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (offset as usize + i) as u8;
        }
        Ok(())
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn drain(t: &mut Transfer, now: Instant, file: &mut Pattern, config: &TransferConfig) {
    let mut buf = vec![0u8; t.required_buffer_len()];
    for _ in 0..200 {
        match t.poll_transmit(now, &mut buf, file) {
            Ok(Some(tx)) => {
                let repr = Repr::parse_bytes(&buf[..tx.len]).expect("server emits valid packets");
                match repr {
                    Repr::Data { data, .. } => assert!(data.len() <= usize::from(t.blksize())),
                    Repr::Oack { options } => {
                        assert!(options.blksize.is_none_or(|b| (8..=65464).contains(&b)));
                        let max_window = u64::from(config.max_windowsize.max(1));
                        assert!(options
                            .windowsize
                            .is_none_or(|w| (1..=max_window).contains(&w)));
                        assert_eq!(options.blksize.unwrap_or(512), u64::from(t.blksize()));
                        assert!(options.timeout.is_none_or(|s| (1..=255).contains(&s)));
                    }
                    Repr::Error { .. } => assert!(t.outcome().is_some()),
                    other => panic!("server sent {other:?}"),
                }
            }
            Ok(None) => return,
            Err(e) => panic!("buffer of required_buffer_len refused: {e:?}"),
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = TransferConfig {
        max_blksize: input.u16().unwrap_or(1468),
        max_windowsize: u16::from(input.byte().unwrap_or(64) % 80),
        timeout: Duration::from_millis(u64::from(input.u16().unwrap_or(1000))),
        max_retries: input.byte().unwrap_or(5) % 8,
    };
    let mut listener = Listener::new();
    let mut transfers: Vec<(Transfer, Pattern)> = Vec::new();
    let mut now = Instant::from_millis(0);
    let mut out = [0u8; 64];
    while let Some(op) = input.byte() {
        match op % 5 {
            0 => {
                let len = usize::from(input.byte().unwrap_or(0));
                let d = input.bytes(len);
                if let Some(ListenerEvent::Incoming(inc)) = listener.handle(d, &mut out) {
                    assert!(!inc.path().is_empty());
                    let size =
                        u64::from(input.u16().unwrap_or(0)) * u64::from(input.byte().unwrap_or(1));
                    if transfers.len() < 4 {
                        let t = inc.accept(now, size, &config);
                        // The host's file is sometimes shorter than it said.
                        let real = if op & 0x80 != 0 { size / 2 } else { size };
                        transfers.push((t, Pattern(real)));
                    } else {
                        let tx = inc.refuse(Refusal::Busy, &mut out).expect("fits 64 bytes");
                        assert!(matches!(
                            Repr::parse_bytes(&out[..tx.len]),
                            Ok(Repr::Error { .. })
                        ));
                    }
                }
            }
            1 => {
                let i = usize::from(input.byte().unwrap_or(0));
                let len = usize::from(input.byte().unwrap_or(0));
                let d = input.bytes(len);
                if let Some((t, _)) = transfers.get_mut(i % 4) {
                    t.handle_datagram(now, d);
                }
            }
            2 => {
                // A plausible ACK, so runs get deep into transfers.
                let i = usize::from(input.byte().unwrap_or(0));
                let block = input.u16().unwrap_or(0);
                if let Some((t, _)) = transfers.get_mut(i % 4) {
                    let b = block.to_be_bytes();
                    t.handle_datagram(now, &[0, 4, b[0], b[1]]);
                }
            }
            3 => {
                now = now + Duration::from_millis(u64::from(input.u16().unwrap_or(0)));
                for (t, _) in &mut transfers {
                    t.handle_timeout(now);
                    if let Some(d) = t.poll_timeout() {
                        assert!(d > now, "timer at or before now after handle_timeout");
                    }
                }
            }
            _ => {}
        }
        for (t, file) in &mut transfers {
            drain(t, now, file, &config);
        }
        transfers.retain(|(t, _)| !t.is_finished());
    }
    // Still serving: a valid RRQ is accepted and starts sending.
    let Some(ListenerEvent::Incoming(inc)) = listener.handle(
        b"\x00\x01boot.ipxe\x00octet\x00blksize\x001432\x00tsize\x000\x00",
        &mut out,
    ) else {
        panic!("valid RRQ not accepted after fuzzing");
    };
    assert_eq!(inc.path(), "boot.ipxe");
    let mut t = inc.accept(now, 5000, &config);
    let mut buf = vec![0u8; t.required_buffer_len()];
    let tx = t.poll_transmit(now, &mut buf, &mut Pattern(5000)).unwrap();
    assert!(tx.is_some());
});
