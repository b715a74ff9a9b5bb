//! One read transfer, from the OACK (if any) to the last ACK.
//!
//! # Where the bytes come from
//!
//! The transfer never holds file contents. When it is time to send a DATA
//! packet, [`Transfer::poll_transmit`] writes the 4-byte header into the
//! caller's buffer and asks the caller's [`ReadAt`] to fill the bytes right
//! behind it, at the block's file offset. A Linux host passes a `pread` on the
//! open file, a firmware host a flash read, a generated script a `&[u8]`: one
//! copy from the source into the datagram buffer, no allocation, and nothing
//! kept between calls. The file size is fixed at [`Incoming::accept`]; a source
//! that cannot deliver a block (file shrank, I/O error) ends the transfer with
//! ERROR 0.
//!
//! # Driving it
//!
//! After `accept` and after every [`Transfer::handle_datagram`] or
//! [`Transfer::handle_timeout`], drain [`Transfer::poll_transmit`] until it
//! returns `None`, sending each datagram to the client; then wait for a
//! datagram or until [`Transfer::poll_timeout`]. When
//! [`Transfer::is_finished`] turns true, close the transfer's socket and read
//! [`Transfer::outcome`].
//!
//! # Protocol
//!
//! - Options (RFC 2347) are answered with an OACK only when the client asked
//!   for at least one the server grants; data then starts after ACK 0.
//!   Otherwise DATA 1 goes out at once (RFC 1350).
//! - `blksize` (RFC 2348): 8..=65464, clamped to the host's maximum (derived
//!   from the MTU). A value below 8 is ignored (not granted), so the client
//!   falls back to 512 — friendlier than ERROR 8 for a transfer that can work.
//! - `tsize` (RFC 2349): answered with the file size. `timeout`: 1..=255 s is
//!   granted and used as the retransmission timeout; others are ignored.
//! - `windowsize` (RFC 7440): 1.. clamped to the host's maximum (default 64).
//!   Up to that many blocks go out before an ACK is awaited; an ACK of a block
//!   inside the window restarts the window right after it.
//! - Block numbers are 16-bit on the wire and wrap to 0 after 65535; the
//!   transfer counts blocks in 64 bits, so files of any size work.
//! - An ACK that acknowledges nothing new (a duplicate or an old one) is
//!   ignored: only the timer retransmits, which avoids the Sorcerer's
//!   Apprentice syndrome.
//! - On timeout everything unacknowledged is sent again, up to
//!   `max_retries` times in a row, then the transfer gives up silently.
//! - An ERROR from the client ends the transfer (EDK2 sends ERROR 8 once it
//!   has the tsize it wanted).
//!
//! [`Incoming::accept`]: super::Incoming::accept

use super::transmit::Transmit;
use super::wire::{
    self, ErrorCode, Options, Repr, DEFAULT_BLKSIZE, HEADER_LEN, MAX_BLKSIZE, MIN_BLKSIZE,
};
use crate::time::{Duration, Instant};

const READ_ERROR: &[u8] = b"Read error";

/// Limits and defaults the host sets for every transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransferConfig {
    /// Largest blksize granted (an Ethernet MTU of 1500 minus IP/UDP/TFTP headers = 1468).
    pub max_blksize: u16,
    /// Largest windowsize granted.
    pub max_windowsize: u16,
    /// Retransmission timeout when the client did not negotiate one.
    pub timeout: Duration,
    /// Retransmissions in a row without progress before giving up.
    pub max_retries: u8,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// A source of file bytes addressed by offset.
pub trait ReadAt {
    /// Fills all of `buf` with the bytes at `offset`, or fails.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError>;
}

/// The source could not deliver the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReadError {
    /// Fewer bytes than the size announced at accept.
    Truncated,
    /// Anything else the storage reported.
    Io,
}

impl ReadAt for &[u8] {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let start = usize::try_from(offset).map_err(|_| ReadError::Truncated)?;
        let end = start.checked_add(buf.len()).ok_or(ReadError::Truncated)?;
        let src = self.get(start..end).ok_or(ReadError::Truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The last block was acknowledged.
    Complete,
    /// The client sent ERROR with this code.
    PeerError(ErrorCode),
    /// `max_retries` retransmissions in a row went unanswered.
    TimedOut,
    /// The [`ReadAt`] source failed; ERROR 0 was sent.
    ReadFailed(ReadError),
}

/// Counters of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransferStats {
    /// DATA packets sent, retransmissions included.
    pub data_sent: u64,
    /// DATA packets (and OACKs) sent again.
    pub retransmitted: u64,
    /// ACKs that acknowledged nothing new.
    pub duplicate_acks: u64,
    /// Timer expiries that caused a retransmission.
    pub timeouts: u64,
    /// Datagrams that were not ACK/ERROR or did not parse.
    pub ignored: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK to send (`sent == false`) or sent and waiting for ACK 0.
    Oack {
        sent: bool,
    },
    Data,
}

/// The server side of one read transfer; see the module docs for the poll order.
#[derive(Debug, Clone)]
pub struct Transfer {
    size: u64,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    max_retries: u8,
    granted: Options,
    phase: Phase,
    /// Highest block index (1-based, 64-bit) the client acknowledged.
    acked: u64,
    /// Next block index to send.
    next: u64,
    /// Highest block index sent so far.
    sent_max: u64,
    /// Index of the last block (the first one shorter than blksize).
    last: u64,
    retries: u8,
    deadline: Option<Instant>,
    outcome: Option<Outcome>,
    /// An ERROR still to be sent before the transfer is finished.
    pending_error: bool,
    stats: TransferStats,
}

impl Transfer {
    pub(super) fn new(
        now: Instant,
        size: u64,
        asked: &Options,
        config: &TransferConfig,
    ) -> Transfer {
        let max_blksize = config.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
        let blksize = asked
            .blksize
            .filter(|&b| b >= u64::from(MIN_BLKSIZE))
            .map(|b| u16::try_from(b).unwrap_or(u16::MAX).min(max_blksize));
        let timeout = asked.timeout.filter(|t| (1..=255).contains(t));
        let windowsize = asked.windowsize.filter(|&w| w >= 1).map(|w| {
            u16::try_from(w)
                .unwrap_or(u16::MAX)
                .min(config.max_windowsize.max(1))
        });
        let granted = Options {
            blksize: blksize.map(u64::from),
            tsize: asked.tsize.map(|_| size),
            timeout,
            windowsize: windowsize.map(u64::from),
        };
        let blksize = blksize.unwrap_or(DEFAULT_BLKSIZE);
        let timeout_used = timeout
            .map_or(config.timeout, Duration::from_secs)
            .max(Duration::from_millis(1));
        let phase = if granted.is_empty() {
            Phase::Data
        } else {
            Phase::Oack { sent: false }
        };
        Transfer {
            size,
            blksize,
            windowsize: windowsize.unwrap_or(1),
            // A zero timeout would retransmit in a busy loop.
            timeout: timeout_used,
            max_retries: config.max_retries,
            granted,
            phase,
            acked: 0,
            next: 1,
            sent_max: 0,
            last: (size / u64::from(blksize)).saturating_add(1),
            retries: 0,
            deadline: Some(now + timeout_used),
            outcome: None,
            pending_error: false,
            stats: TransferStats::default(),
        }
    }

    /// Size of the file being sent.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block size in use (512 unless negotiated).
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Window size in use (1 unless negotiated).
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// Retransmission timeout in use.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The options granted in the OACK (empty: no OACK, plain RFC 1350).
    pub fn granted(&self) -> Options {
        self.granted
    }

    /// Smallest buffer [`Transfer::poll_transmit`] accepts: blksize + 4, or
    /// more when the OACK or an ERROR is longer than a (tiny) DATA packet.
    pub fn required_buffer_len(&self) -> usize {
        let oack = Repr::Oack {
            options: self.granted,
        }
        .buffer_len();
        let error = Repr::Error {
            code: ErrorCode::NotDefined,
            message: READ_ERROR,
        }
        .buffer_len();
        usize::from(self.blksize)
            .saturating_add(HEADER_LEN)
            .max(oack)
            .max(error)
    }

    /// Counters so far.
    pub fn stats(&self) -> TransferStats {
        self.stats
    }

    /// File bytes the client has acknowledged.
    pub fn bytes_acked(&self) -> u64 {
        self.acked
            .saturating_mul(u64::from(self.blksize))
            .min(self.size)
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// True once the transfer has ended and has nothing left to send.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some() && !self.pending_error
    }

    /// When [`Transfer::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Handles a datagram that came from the client's transfer ID.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.outcome.is_some() {
            return;
        }
        match Repr::parse_bytes(datagram) {
            Ok(Repr::Ack { block }) => self.handle_ack(now, block),
            Ok(Repr::Error { code, .. }) => {
                debug!("tftp: client sent ERROR {}", u16::from(code));
                self.finish(Outcome::PeerError(code));
            }
            _ => self.stats.ignored = self.stats.ignored.saturating_add(1),
        }
    }

    fn handle_ack(&mut self, now: Instant, block: u16) {
        match self.phase {
            Phase::Oack { sent: true } if block == 0 => {
                self.phase = Phase::Data;
                self.progress(now);
            }
            Phase::Oack { .. } => self.stats.ignored = self.stats.ignored.saturating_add(1),
            Phase::Data => {
                // The block numbers in flight are acked+1 ..= sent_max; at most
                // a window (≤ 65535) of them, so the 16-bit distance is unambiguous.
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                let in_flight = self.sent_max.saturating_sub(self.acked);
                if ahead == 0 || ahead > in_flight {
                    self.stats.duplicate_acks = self.stats.duplicate_acks.saturating_add(1);
                    return;
                }
                self.acked = self.acked.saturating_add(ahead);
                if self.acked >= self.last {
                    self.finish(Outcome::Complete);
                    return;
                }
                // RFC 7440: the next window starts right after the acknowledged block,
                // which also resends whatever of the old window the client missed.
                self.next = self.acked.saturating_add(1);
                self.progress(now);
            }
        }
    }

    /// The client made progress: reset the retry budget and the timer.
    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.deadline = Some(now + self.timeout);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.deadline = None;
    }

    /// Retransmits after the timer expired; does nothing before the deadline,
    /// so calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if self.outcome.is_some() || now < deadline {
            return;
        }
        self.retries = self.retries.saturating_add(1);
        if self.retries > self.max_retries {
            self.finish(Outcome::TimedOut);
            return;
        }
        self.stats.timeouts = self.stats.timeouts.saturating_add(1);
        match self.phase {
            Phase::Oack { .. } => {
                self.stats.retransmitted = self.stats.retransmitted.saturating_add(1);
                self.phase = Phase::Oack { sent: false };
            }
            Phase::Data => self.next = self.acked.saturating_add(1),
        }
        self.deadline = Some(now + self.timeout);
    }

    /// Writes the next datagram into `buf`, reading DATA contents from `source`.
    ///
    /// `Err` only when `buf` is shorter than [`Transfer::required_buffer_len`].
    #[must_use = "a datagram written into `buf` is lost unless it is sent"]
    pub fn poll_transmit<R: ReadAt + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        source: &mut R,
    ) -> Result<Option<Transmit>, wire::Error> {
        if self.pending_error {
            let len = (Repr::Error {
                code: ErrorCode::NotDefined,
                message: READ_ERROR,
            })
            .emit(buf)?;
            self.pending_error = false;
            return Ok(Some(Transmit { len }));
        }
        if self.outcome.is_some() {
            return Ok(None);
        }
        match self.phase {
            Phase::Oack { sent: true } => Ok(None),
            Phase::Oack { sent: false } => {
                let len = (Repr::Oack {
                    options: self.granted,
                })
                .emit(buf)?;
                self.phase = Phase::Oack { sent: true };
                self.deadline = Some(now + self.timeout);
                Ok(Some(Transmit { len }))
            }
            Phase::Data => self.transmit_data(now, buf, source),
        }
    }

    fn transmit_data<R: ReadAt + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        source: &mut R,
    ) -> Result<Option<Transmit>, wire::Error> {
        let window_end = self
            .acked
            .saturating_add(u64::from(self.windowsize))
            .min(self.last);
        if self.next > window_end {
            return Ok(None);
        }
        let required = self.required_buffer_len();
        if buf.len() < required {
            return Err(wire::Error::InsufficientSize { required });
        }
        let index = self.next;
        let offset = index
            .saturating_sub(1)
            .saturating_mul(u64::from(self.blksize));
        let len = self
            .size
            .saturating_sub(offset)
            .min(u64::from(self.blksize));
        // `len` ≤ blksize, a u16.
        let len = usize::from(u16::try_from(len).unwrap_or(self.blksize));
        // Only the low 16 bits go on the wire; the count wraps 65535 → 0.
        wire::emit_data_header(index as u16, buf)?;
        let end = HEADER_LEN.saturating_add(len);
        let Some(data) = buf.get_mut(HEADER_LEN..end) else {
            return Err(wire::Error::InsufficientSize { required: end });
        };
        if let Err(e) = source.read_exact_at(offset, data) {
            warn!("tftp: read failed at offset {}", offset);
            self.finish(Outcome::ReadFailed(e));
            self.pending_error = true;
            return self.poll_transmit(now, buf, source);
        }
        self.stats.data_sent = self.stats.data_sent.saturating_add(1);
        if index <= self.sent_max {
            self.stats.retransmitted = self.stats.retransmitted.saturating_add(1);
        }
        self.sent_max = self.sent_max.max(index);
        self.next = index.saturating_add(1);
        self.deadline = Some(now + self.timeout);
        Ok(Some(Transmit { len: end }))
    }
}
