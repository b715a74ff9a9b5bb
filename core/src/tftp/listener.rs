//! The well-known-port side of the server: RRQ in, [`Incoming`] out.
//!
//! Like quinn's `Incoming`, a read request is not a transfer yet: the host
//! looks the file up, then either [`Incoming::accept`]s it (and binds a fresh
//! UDP port for the [`Transfer`] — the server's transfer ID) or
//! [`Incoming::refuse`]s it, which writes the ERROR to send back from the
//! listening socket. How many transfers may run at once is the host's
//! capacity; running out is `refuse(Refusal::Busy, ..)`, an ERROR on the wire.

use super::path::{self, PathError};
use super::transfer::{Transfer, TransferConfig};
pub use super::transmit::Transmit;
use super::wire::{self, ErrorCode, Mode, Options, Repr};
use crate::time::Instant;

/// Longest normalised path an [`Incoming`] holds, in bytes.
pub const PATH_CAPACITY: usize = 256;

/// Output buffer size that always holds any reply the listener writes.
pub const MIN_REPLY_LEN: usize = 64;

/// What a datagram on the listening port turned into.
// No alloc to box the path into; the event lives on the stack only briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerEvent {
    /// A well-formed read request for the host to accept or refuse.
    Incoming(Incoming),
    /// Send this ERROR back to the datagram's source (WRQ, bad path, bad mode).
    Respond(Transmit),
}

/// Why the host refuses a read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// ERROR 1: no such file (or not a regular file).
    NotFound,
    /// ERROR 2: the host's own root check failed (e.g. a symlink pointing out).
    AccessViolation,
    /// ERROR 0 "too many transfers": the host is at capacity.
    Busy,
    /// ERROR 0 "read error": the file exists but cannot be read.
    ReadError,
}

impl Refusal {
    fn code_and_message(self) -> (ErrorCode, &'static [u8]) {
        match self {
            Refusal::NotFound => (ErrorCode::FileNotFound, b"File not found"),
            Refusal::AccessViolation => (ErrorCode::AccessViolation, b"Access violation"),
            Refusal::Busy => (ErrorCode::NotDefined, b"Too many transfers"),
            Refusal::ReadError => (ErrorCode::NotDefined, b"Read error"),
        }
    }
}

/// Counters of what the listener saw; bad input is counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListenerStats {
    /// Read requests handed to the host as [`Incoming`].
    pub read_requests: u64,
    /// WRQs refused (the server is read-only).
    pub write_requests: u64,
    /// RRQs refused for their filename.
    pub bad_paths: u64,
    /// RRQs refused for their mode (`mail` or unknown).
    pub bad_modes: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// DATA/ACK/ERROR/OACK sent to the listening port (dropped silently).
    pub ignored: u64,
    /// Replies dropped because the caller's buffer was under [`MIN_REPLY_LEN`].
    pub unanswered: u64,
}

/// Turns datagrams on the listening port into [`ListenerEvent`]s.
///
/// Stateless apart from its counters: a client that repeats its RRQ (because
/// the first answer was lost) produces a second `Incoming`; hosts that want to
/// ignore it check whether a transfer to that source address is running.
#[derive(Debug, Clone, Default)]
pub struct Listener {
    stats: ListenerStats,
}

impl Listener {
    /// A listener with zeroed counters.
    pub fn new() -> Listener {
        Listener::default()
    }

    /// What the listener has seen so far.
    pub fn stats(&self) -> ListenerStats {
        self.stats
    }

    /// Handles one datagram from the listening socket. A `Respond` reply is
    /// written into `out` (at least [`MIN_REPLY_LEN`] bytes, or it is dropped
    /// and counted). Garbage and non-request packets give `None`.
    #[must_use]
    pub fn handle(&mut self, datagram: &[u8], out: &mut [u8]) -> Option<ListenerEvent> {
        let request = match Repr::parse_bytes(datagram) {
            Ok(Repr::Rrq(r)) => r,
            Ok(Repr::Wrq(_)) => {
                self.stats.write_requests = self.stats.write_requests.saturating_add(1);
                return self.respond(ErrorCode::AccessViolation, b"Read-only server", out);
            }
            Ok(_) => {
                self.stats.ignored = self.stats.ignored.saturating_add(1);
                return None;
            }
            Err(_) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return None;
            }
        };
        let mode = request.mode_kind();
        if !matches!(mode, Mode::Octet | Mode::Netascii) {
            self.stats.bad_modes = self.stats.bad_modes.saturating_add(1);
            return self.respond(ErrorCode::IllegalOperation, b"Unsupported mode", out);
        }
        let path = match path::normalize::<PATH_CAPACITY>(request.filename) {
            Ok(p) => p,
            Err(e) => {
                self.stats.bad_paths = self.stats.bad_paths.saturating_add(1);
                debug!("tftp: refused filename: {}", e);
                let (code, msg): (_, &[u8]) = match e {
                    PathError::Empty => (ErrorCode::FileNotFound, b"File not found"),
                    _ => (ErrorCode::AccessViolation, b"Access violation"),
                };
                return self.respond(code, msg, out);
            }
        };
        self.stats.read_requests = self.stats.read_requests.saturating_add(1);
        Some(ListenerEvent::Incoming(Incoming {
            path,
            mode,
            options: request.options,
        }))
    }

    fn respond(
        &mut self,
        code: ErrorCode,
        message: &[u8],
        out: &mut [u8],
    ) -> Option<ListenerEvent> {
        match (Repr::Error { code, message }).emit(out) {
            Ok(len) => Some(ListenerEvent::Respond(Transmit { len })),
            Err(_) => {
                self.stats.unanswered = self.stats.unanswered.saturating_add(1);
                None
            }
        }
    }
}

/// A read request waiting for the host's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    path: heapless::String<PATH_CAPACITY>,
    mode: Mode,
    options: Options,
}

impl Incoming {
    /// The requested file as a relative path under the root (`a/b`, see [`path::normalize`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The transfer mode. Netascii is served byte for byte like octet: boot
    /// files are binary and iPXE reads scripts with either line ending.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The options the client asked for, as sent.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Starts the transfer of a file of `size` bytes. The host sends the
    /// transfer's datagrams from a new UDP port, connected to the requester.
    pub fn accept(self, now: Instant, size: u64, config: &TransferConfig) -> Transfer {
        Transfer::new(now, size, &self.options, config)
    }

    /// Writes the ERROR for `reason` into `out`, to be sent from the listening socket.
    pub fn refuse(self, reason: Refusal, out: &mut [u8]) -> Result<Transmit, wire::Error> {
        let (code, message) = reason.code_and_message();
        let len = (Repr::Error { code, message }).emit(out)?;
        Ok(Transmit { len })
    }
}

/// Writes ERROR 5 (unknown transfer ID) for a datagram that reached a
/// transfer's port from a source other than its client (RFC 1350 §4).
pub fn unknown_tid(out: &mut [u8]) -> Result<Transmit, wire::Error> {
    let len = (Repr::Error {
        code: ErrorCode::UnknownTid,
        message: b"Unknown transfer ID",
    })
    .emit(out)?;
    Ok(Transmit { len })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    fn error_of(out: &[u8], ev: Option<ListenerEvent>) -> (ErrorCode, &[u8]) {
        let Some(ListenerEvent::Respond(t)) = ev else {
            panic!("expected an ERROR reply, got {ev:?}")
        };
        match Repr::parse_bytes(&out[..t.len]).unwrap() {
            Repr::Error { code, message } => (code, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipxe_rrq_becomes_incoming() {
        let mut l = Listener::new();
        let mut out = [0u8; 64];
        let ev = l.handle(include_bytes!("testdata/ipxe_rrq_mac_script.bin"), &mut out);
        let Some(ListenerEvent::Incoming(inc)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(inc.path(), "scripts/52-54-00-e2-e0-01.ipxe");
        assert_eq!(inc.mode(), Mode::Octet);
        assert_eq!(inc.options().blksize, Some(1432));
        assert_eq!(l.stats().read_requests, 1);
    }

    #[test]
    fn wrq_is_refused_read_only() {
        let mut l = Listener::new();
        let mut out = [0u8; 64];
        let ev = l.handle(b"\x00\x02upload.bin\x00octet\x00", &mut out);
        assert_eq!(
            error_of(&out, ev),
            (ErrorCode::AccessViolation, &b"Read-only server"[..])
        );
        assert_eq!(l.stats().write_requests, 1);
    }

    #[test]
    fn traversal_and_bad_modes_are_refused_on_the_wire() {
        let mut l = Listener::new();
        let mut out = [0u8; 64];
        for name in [
            &b"../etc/passwd"[..],
            b"..\\..\\x",
            b"a/../../b",
            b"C:\\x",
            b"\xc3",
        ] {
            let mut rrq = b"\x00\x01".to_vec();
            rrq.extend_from_slice(name);
            rrq.extend_from_slice(b"\x00octet\x00");
            let ev = l.handle(&rrq, &mut out);
            assert_eq!(error_of(&out, ev).0, ErrorCode::AccessViolation, "{name:?}");
        }
        let ev = l.handle(b"\x00\x01/\x00octet\x00", &mut out);
        assert_eq!(error_of(&out, ev).0, ErrorCode::FileNotFound);
        let ev = l.handle(b"\x00\x01f\x00mail\x00", &mut out);
        assert_eq!(error_of(&out, ev).0, ErrorCode::IllegalOperation);
        let ev = l.handle(b"\x00\x01f\x00binary\x00", &mut out);
        assert_eq!(error_of(&out, ev).0, ErrorCode::IllegalOperation);
        let s = l.stats();
        assert_eq!((s.bad_paths, s.bad_modes, s.read_requests), (6, 2, 0));
    }

    #[test]
    fn garbage_and_stray_packets_get_no_reply() {
        let mut l = Listener::new();
        let mut out = [0u8; 64];
        for d in [&b""[..], b"\x00", b"\x00\x07zz", b"\x00\x01nonul"] {
            assert_eq!(l.handle(d, &mut out), None);
        }
        for d in [
            &b"\x00\x04\x00\x01"[..],
            b"\x00\x05\x00\x00x\x00",
            b"\x00\x03\x00\x01abc",
        ] {
            assert_eq!(l.handle(d, &mut out), None);
        }
        assert_eq!((l.stats().malformed, l.stats().ignored), (4, 3));
        // A too-small reply buffer drops the reply instead of panicking.
        assert_eq!(l.handle(b"\x00\x02f\x00octet\x00", &mut out[..4]), None);
        assert_eq!(l.stats().unanswered, 1);
    }

    #[test]
    fn refusals_carry_their_codes() {
        let mut l = Listener::new();
        let mut out = [0u8; 64];
        for (reason, code) in [
            (Refusal::NotFound, ErrorCode::FileNotFound),
            (Refusal::AccessViolation, ErrorCode::AccessViolation),
            (Refusal::Busy, ErrorCode::NotDefined),
            (Refusal::ReadError, ErrorCode::NotDefined),
        ] {
            let Some(ListenerEvent::Incoming(inc)) = l.handle(b"\x00\x01f\x00octet\x00", &mut out)
            else {
                panic!()
            };
            let t = inc.refuse(reason, &mut out).unwrap();
            let Repr::Error { code: c, message } = Repr::parse_bytes(&out[..t.len]).unwrap() else {
                panic!()
            };
            assert_eq!(c, code);
            if reason == Refusal::Busy {
                assert_eq!(message, b"Too many transfers");
            }
        }
        let t = unknown_tid(&mut out).unwrap();
        assert_eq!(
            Packet::new_checked(&out[..t.len]).unwrap().error_code(),
            ErrorCode::UnknownTid
        );
    }

    use super::super::wire::Packet;
}
