//! iSCSI target (RFC 7143, error recovery level 0) as a sans-I/O machine.
//!
//! # Layers
//!
//! - [`pdu`]: the wire format: a zero-copy [`pdu::Bhs`] view over the 48-byte
//!   Basic Header Segment and one `Repr` per opcode; [`pdu::pdu_len`] gives a
//!   PDU's full length (AHS, padding, digests).
//! - [`text`]: `key=value` text (login, Text Request), numbers and binary values.
//! - [`crc32c`]: software CRC32C for header/data digests, replaceable by a
//!   hardware one through [`Connection::set_crc32c`].
//! - [`login`], [`params`], [`chap`]: the login phase and key negotiation.
//! - [`session`]: the target-wide [`SessionTable`] (TSIH, limits, reinstatement,
//!   takeover of a rebooted station's abandoned session).
//! - [`Connection`]: one TCP connection from accept to close.
//! - [`backend`]: what the connection needs from the host: the SCSI layer
//!   ([`Backend::scsi_command`]) and storage ([`StorageRequest`]).
//!
//! # Configuration (no allocation)
//!
//! The host owns its configuration and lends it per call as [`Targets`]:
//! a slice of [`TargetConfig`] (name, allowed initiator names, CHAP
//! credentials for one-way and mutual CHAP, LUN numbers), the portal address
//! reported by SendTargets (`"192.0.2.1:3260"`) and the portal group tag.
//! Limits we negotiate with ([`TargetLimits`]) are given to
//! [`Connection::new`] together with a random seed for CHAP challenges.
//!
//! # Host loop
//!
//! ```text
//! let mut conn = Connection::<32, 1024>::new(now, token, limits, seed);
//! loop {
//!     // 1. input: feed whole PDUs; 0 = need more bytes
//!     while let n @ 1.. = conn.handle_input(now, &rx[start..end], &targets, &mut backend) {
//!         start += n;
//!     }
//!     // 2. events
//!     while let Some(ev) = conn.poll_event() {
//!         match ev {
//!             Event::SessionRequest(req) => match sessions.admit_at(now, conn.initiator_name(), &req, token) {
//!                 Ok(adm) => { if let Some(old) = adm.reinstated { /* close that connection */ }
//!                              conn.session_admitted(&adm) }
//!                 Err(status) => conn.session_refused(status),
//!             },
//!             Event::LoggedIn { .. } => {}
//!             Event::Close => { /* after sending what is queued: close TCP, sessions.release(token) */ }
//!         }
//!     }
//!     // 3. storage: start each request; complete it now or later, any order
//!     while let Some(req) = conn.poll_storage() {
//!         // Read/Write/Flush -> conn.complete_storage(now, req.io(), result, &mut backend)
//!         // Release -> free buffers kept for that io
//!     }
//!     // 4. output: one PDU per call into the tx buffer
//!     while let Some(n) = conn.poll_transmit(now, &mut tx, &mut backend) { send(&tx[..n]) }
//!     // 5. time (login deadline, NOP-In pings); now and then, for takeovers:
//!     // sessions.touch(token, conn.last_activity())
//!     if let Some(t) = conn.poll_timeout() { /* wake at t, then conn.handle_timeout(t) */ }
//! }
//! ```
//!
//! `Connection<32, 1024>` is about 62 KiB (mostly the per-task scratch
//! buffers and the 8 KiB login text buffer): box it on hosts, shrink the
//! const generics on small boards. Login processing uses ~12 KiB of stack.
//!
//! Repeat 2–4 after every `complete_storage` too. The receive buffer must
//! hold [`Connection::max_pdu_len`] bytes; the transmit buffer should hold
//! 56 bytes plus the initiator's MaxRecvDataSegmentLength (iPXE: 8192).
//!
//! # Storage contract
//!
//! - Write payload reaches the host through [`Backend::write_data`] straight
//!   from the receive buffer (no copy in the core), in order, before the
//!   [`StorageRequest::Write`] that commits it (durably if `fua`).
//! - A [`StorageRequest::Read`] is completed when the data is available; the
//!   connection then pulls it with [`Backend::read_data`] directly into the
//!   transmit buffer, one Data-In PDU at a time. A synchronous host can
//!   complete reads at once and `pread` inside `read_data`.
//! - [`StorageRequest::Release`] says the task is over (done, aborted, or the
//!   connection closed): free buffers kept for that [`IoId`].
//! - Completions may arrive in any order; a completion for an aborted task
//!   is accepted and ignored.
//!
//! # Transport rules the connection applies
//!
//! - CmdSN: a non-immediate request outside `[ExpCmdSN, MaxCmdSN]` is
//!   silently ignored (RFC 7143 §4.2.2.1); MaxCmdSN advertises free task
//!   slots (one is kept for immediate commands) and never moves backwards.
//! - Residuals: Data-In carries `min(EDTL, SPDTL)` bytes; a write with
//!   SPDTL > EDTL collects and writes only EDTL bytes (GOOD, overflow
//!   residual), with SPDTL < EDTL extra Data-Out is accepted and dropped
//!   (underflow residual).
//! - A Data-Out with a wrong DataSN, buffer offset, TTT or length fails only
//!   its command (CHECK CONDITION, ABORTED COMMAND 4B/00); later Data-Out for
//!   it is ignored. A bad header digest, an oversized data segment or a
//!   non-login PDU before login closes the connection (ERL 0); a bad data
//!   digest or an unknown opcode gets a Reject.
//! - Not implemented: multi-connection sessions (MaxConnections=1), ERL > 0
//!   (SNACK is rejected), CDBs longer than 32 bytes (an Extended CDB AHS up
//!   to 32 is passed on), bidirectional commands, multi-PDU Text Requests (C bit from the
//!   initiator; long Text Responses are continued correctly).
//!
//! # What is sent to iPXE
//!
//! GOOD status rides in the last Data-In (S bit); any other status comes in
//! its own SCSI Response. The target sends no Asynchronous Messages, and
//! Reject only for malformed PDUs.
//!
//! # Dead peers
//!
//! After [`TargetLimits::nop_in_interval_ms`] without a PDU, a full-feature
//! connection sends a NOP-In ping (valid TTT, ITT 0xffffffff, StatSN not
//! advanced); if nothing at all arrives within
//! [`TargetLimits::nop_in_timeout_ms`] it closes with
//! [`CloseReason::PeerTimeout`]. Both timers come out of `poll_timeout`.
//! Linux and Windows initiators answer pings; iPXE ignores them, so an
//! idle iPXE session is closed too (iPXE logs in again when it next reads).

pub mod backend;
pub mod chap;
pub mod config;
pub mod connection;
pub mod crc32c;
mod driver;
pub mod login;
pub mod params;
pub mod pdu;
pub mod session;
mod task;
pub mod text;

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::too_many_arguments,
    clippy::expect_used
)]
mod tests;

pub use backend::{
    Backend, IoId, Plan, ReadChunk, Resume, ScsiRequest, StorageRequest, TmfOutcome, WriteChunk,
};
pub use config::{
    ChapCredentials, DigestPolicy, InitiatorChap, TargetConfig, TargetLimits, Targets,
};
pub use connection::{CloseReason, Connection, Event, Stats};
pub use driver::{Access, Bound, Driver, Luns};
pub use login::{LoginStatus, SessionRequest};
pub use params::SessionParams;
pub use session::{Admission, SessionTable, Takeover, TAKEOVER_MIN_IDLE_MS};
