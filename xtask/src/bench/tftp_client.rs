//! The TFTP load client of `cargo xtask bench tftp`: N concurrent downloads
//! of one file over one poll loop (one UDP socket per transfer), with the
//! RFC 2347 options blksize (2348), tsize (2349) and windowsize (7440).
//!
//! Every byte received is compared with the reference copy of the file at its
//! offset, and the total length with the reference length: a transfer counts
//! only if its content is identical. The run is bounded by `--timeout`.
//!
//! Run by the bench inside the client namespace as
//! `xtask bench tftp-client --server IP:69 --file NAME --ref PATH [--blksize B]
//!  [--window W] [--count N] [--timeout SECS]`; prints one `key=value` line.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token};

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
/// Resend the last ACK (or the RRQ) after this much silence.
const RETRANSMIT: Duration = Duration::from_millis(500);
const MAX_RETRIES: u32 = 10;

#[derive(Debug, PartialEq)]
enum State {
    /// RRQ sent, nothing back yet.
    Requested,
    Receiving,
    Done,
    Failed(String),
}

#[derive(Debug)]
struct Transfer {
    sock: MioUdp,
    /// The server's transfer port, learnt from its first reply.
    peer: Option<SocketAddr>,
    state: State,
    blksize: usize,
    window: u16,
    /// Block number expected next (wraps to 0 after 65535).
    next_block: u16,
    /// In-order blocks since the last ACK.
    in_window: u16,
    last_ack: Option<u16>,
    last_ack_at: Instant,
    received: usize,
    last_heard: Instant,
    retries: u32,
    started: Instant,
    finished: Option<Instant>,
}

#[derive(Debug)]
struct Args {
    server: SocketAddr,
    file: String,
    reference: Vec<u8>,
    blksize: usize,
    window: u16,
    count: usize,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut server = None;
    let mut file = None;
    let mut reference = None;
    let (mut blksize, mut window, mut count, mut timeout) = (512usize, 1u16, 1usize, 120u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--server" => server = Some(v.parse().context("--server")?),
            "--file" => file = Some(v.clone()),
            "--ref" => reference = Some(std::fs::read(v).with_context(|| format!("reading {v}"))?),
            "--blksize" => blksize = v.parse().context("--blksize")?,
            "--window" => window = v.parse().context("--window")?,
            "--count" => count = v.parse().context("--count")?,
            "--timeout" => timeout = v.parse().context("--timeout")?,
            _ => bail!("unknown option {a}"),
        }
    }
    if !(8..=65464).contains(&blksize)
        || window == 0
        || !(1..=1000).contains(&count)
        || !(1..=600).contains(&timeout)
    {
        bail!("bad --blksize/--window/--count/--timeout");
    }
    Ok(Args {
        server: server.context("--server")?,
        file: file.context("--file")?,
        reference: reference.context("--ref")?,
        blksize,
        window,
        count,
        timeout: Duration::from_secs(timeout),
    })
}

fn rrq(a: &Args) -> Vec<u8> {
    let mut p = OP_RRQ.to_be_bytes().to_vec();
    let mut field = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    field(&a.file);
    field("octet");
    if a.blksize != 512 {
        field("blksize");
        field(&a.blksize.to_string());
    }
    field("tsize");
    field("0");
    if a.window != 1 {
        field("windowsize");
        field(&a.window.to_string());
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let [a, b] = OP_ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// OACK body: NUL-terminated name/value pairs.
fn parse_oack(body: &[u8]) -> Vec<(String, String)> {
    let parts: Vec<String> = body
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    parts
        .chunks(2)
        .filter_map(|c| match c {
            [k, v] if !k.is_empty() => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

impl Transfer {
    fn send(&mut self, pkt: &[u8], to: SocketAddr) {
        // A full send queue is a lost packet: the retransmit timer recovers it.
        let _ = self.sock.send_to(pkt, to);
    }

    fn fail(&mut self, why: String) {
        if matches!(self.state, State::Requested | State::Receiving) {
            self.state = State::Failed(why);
            self.finished = Some(Instant::now());
        }
    }

    fn send_ack(&mut self, block: u16) {
        if let Some(peer) = self.peer {
            self.send(&ack(block), peer);
            self.last_ack = Some(block);
            self.last_ack_at = Instant::now();
            self.in_window = 0;
        }
    }

    fn on_packet(&mut self, pkt: &[u8], from: SocketAddr, a: &Args) {
        match self.peer {
            // Lock onto the first reply: a server may answer from another
            // of its addresses than the one asked (the port is the TID).
            None => self.peer = Some(from),
            Some(p) if p == from => {}
            // Someone else's packet (or a stray server process): not ours.
            _ => return,
        }
        let Some((op, body)) = pkt.split_at_checked(2) else {
            return;
        };
        let op = u16::from_be_bytes([
            op.first().copied().unwrap_or(0),
            op.get(1).copied().unwrap_or(0),
        ]);
        self.last_heard = Instant::now();
        self.retries = 0;
        match op {
            OP_OACK if self.state == State::Requested => {
                self.blksize = 512;
                self.window = 1;
                for (k, v) in parse_oack(body) {
                    match k.as_str() {
                        "blksize" => self.blksize = v.parse().unwrap_or(0),
                        "windowsize" => self.window = v.parse().unwrap_or(0),
                        "tsize" if v.parse::<usize>().ok() != Some(a.reference.len()) => {
                            return self
                                .fail(format!("OACK tsize {v}, file has {}", a.reference.len()));
                        }
                        _ => {}
                    }
                }
                if !(8..=a.blksize).contains(&self.blksize)
                    || !(1..=a.window).contains(&self.window)
                {
                    return self.fail(format!(
                        "OACK grants blksize {} window {}: not what was asked",
                        self.blksize, self.window
                    ));
                }
                self.state = State::Receiving;
                self.send_ack(0);
            }
            OP_DATA => {
                if self.state == State::Requested {
                    // The server ignored every option: RFC 1350 defaults.
                    self.blksize = 512;
                    self.window = 1;
                    self.state = State::Receiving;
                }
                if self.state != State::Receiving {
                    return;
                }
                let Some((blk, data)) = body.split_at_checked(2) else {
                    return;
                };
                let block = u16::from_be_bytes([
                    blk.first().copied().unwrap_or(0),
                    blk.get(1).copied().unwrap_or(0),
                ]);
                if block != self.next_block {
                    // A gap: ask again from the first missing block, once per
                    // position. A repeat of blocks already taken means our ACK
                    // was lost: repeat it, at most every 50 ms (no Sorcerer's
                    // Apprentice storm).
                    let last_good = self.next_block.wrapping_sub(1);
                    let behind = self.next_block.wrapping_sub(block) <= self.window.max(1);
                    if self.last_ack != Some(last_good)
                        || (behind && self.last_ack_at.elapsed() >= Duration::from_millis(50))
                    {
                        self.send_ack(last_good);
                    }
                    return;
                }
                let end = self.received + data.len();
                if data.len() > self.blksize || a.reference.get(self.received..end) != Some(data) {
                    return self.fail(format!(
                        "content differs from the original at byte {}",
                        self.received
                    ));
                }
                self.received = end;
                self.next_block = self.next_block.wrapping_add(1);
                self.in_window += 1;
                if data.len() < self.blksize {
                    self.send_ack(block);
                    if self.received == a.reference.len() {
                        self.state = State::Done;
                        self.finished = Some(Instant::now());
                    } else {
                        self.fail(format!(
                            "short: {} of {} bytes",
                            self.received,
                            a.reference.len()
                        ));
                    }
                } else if self.in_window >= self.window {
                    self.send_ack(block);
                }
            }
            OP_ERROR => {
                let msg = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
                self.fail(format!("server error: {}", msg.trim_end_matches('\0')));
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, now: Instant, a: &Args, rrq: &[u8]) {
        if !matches!(self.state, State::Requested | State::Receiving)
            || now - self.last_heard < RETRANSMIT
        {
            return;
        }
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            return self.fail(format!("timeout at byte {}", self.received));
        }
        self.last_heard = now;
        match (self.peer, self.last_ack) {
            (Some(_), Some(b)) => self.send_ack(b),
            _ => self.send(rrq, a.server),
        }
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let a = parse_args(args)?;
    let rrq = rrq(&a);
    let mut poll = Poll::new()?;
    let mut xfers = Vec::with_capacity(a.count);
    let t0 = Instant::now();
    for i in 0..a.count {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Room for a whole window of 64 x 64 KiB blocks on a busy client core.
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
        s.set_nonblocking(true)?;
        let mut sock = MioUdp::from_std(UdpSocket::from(s));
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        let now = Instant::now();
        let mut x = Transfer {
            sock,
            peer: None,
            state: State::Requested,
            blksize: 512,
            window: 1,
            next_block: 1,
            in_window: 0,
            last_ack: None,
            last_ack_at: now,
            received: 0,
            last_heard: now,
            retries: 0,
            started: now,
            finished: None,
        };
        x.send(&rrq, a.server);
        xfers.push(x);
    }
    let deadline = t0 + a.timeout;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65536];
    let mut last_tick = Instant::now();
    loop {
        let active = xfers
            .iter()
            .filter(|x| matches!(x.state, State::Requested | State::Receiving))
            .count();
        let now = Instant::now();
        if active == 0 {
            break;
        }
        if now >= deadline {
            for x in xfers.iter_mut() {
                x.fail(format!("run timeout at byte {}", x.received));
            }
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let Some(x) = xfers.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match x.sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if let Some(pkt) = buf.get(..n) {
                            x.on_packet(pkt, from, &a);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP port unreachable and the like: the timer decides.
                    Err(_) => break,
                }
            }
        }
        let now = Instant::now();
        if now - last_tick >= Duration::from_millis(50) {
            last_tick = now;
            for x in xfers.iter_mut() {
                x.on_tick(now, &a, &rrq);
            }
        }
    }
    let end = xfers.iter().filter_map(|x| x.finished).max().unwrap_or(t0);
    let wall = end.duration_since(t0).as_secs_f64();
    let ok: Vec<&Transfer> = xfers.iter().filter(|x| x.state == State::Done).collect();
    let mut secs: Vec<f64> = ok
        .iter()
        .filter_map(|x| {
            x.finished
                .map(|f| f.duration_since(x.started).as_secs_f64())
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let med = secs.get(secs.len() / 2).copied().unwrap_or(0.0);
    let max = secs.last().copied().unwrap_or(0.0);
    let bytes = ok.len() * a.reference.len();
    let first_err = xfers.iter().find_map(|x| match &x.state {
        State::Failed(e) => Some(e.clone()),
        _ => None,
    });
    let (blk, win) = xfers
        .first()
        .map(|x| (x.blksize, x.window))
        .unwrap_or((0, 0));
    println!(
        "ok={} failed={} bytes={bytes} wall_s={wall:.4} agg_mibs={:.2} xfer_med_s={med:.4} xfer_max_s={max:.4} blksize={blk} window={win} error={}",
        ok.len(),
        xfers.len() - ok.len(),
        if wall > 0.0 { bytes as f64 / wall / 1048576.0 } else { 0.0 },
        first_err.unwrap_or_else(|| "-".into()).replace(' ', "_"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oack_pairs() {
        let o = parse_oack(b"blksize\x001428\x00tsize\x004194304\x00windowsize\x008\x00");
        assert_eq!(
            o,
            vec![
                ("blksize".into(), "1428".into()),
                ("tsize".into(), "4194304".into()),
                ("windowsize".into(), "8".into())
            ]
        );
    }
}
