//! TFTP server (RFC 1350, 2347, 2348, 2349, 7440): wire format, filename
//! confinement and the server state machines.
//!
//! - [`wire`]: `Packet`/`Repr` for RRQ, WRQ, DATA, ACK, ERROR and OACK.
//! - [`path`]: requested filename → relative path that cannot leave the root.
//! - [`Listener`]: datagrams on port 69 → [`Incoming`] read requests, which
//!   the host [`Incoming::accept`]s (binding a new port) or
//!   [`Incoming::refuse`]s (an ERROR on the wire). Write requests are refused:
//!   the server is read-only.
//! - [`Transfer`]: one read transfer, lock-step or windowed, asking the host
//!   for file bytes by offset through [`ReadAt`] (see [`transfer`] for why).
//!
//! A host's loop, in short:
//!
//! ```text
//! listen socket:   match listener.handle(datagram, &mut out) {
//!                      Some(Incoming(inc)) => open inc.path() under the root, then
//!                          inc.accept(now, size, &config) on a new socket, or
//!                          inc.refuse(Refusal::NotFound, &mut out) → send out
//!                      Some(Respond(t)) => send out[..t.len] back
//!                      None => {}
//!                  }
//! transfer socket: transfer.handle_datagram(now, bytes) / handle_timeout(now);
//!                  while let Some(t) = transfer.poll_transmit(now, &mut buf, &mut file)? { send }
//!                  sleep until poll_timeout(); stop when is_finished()
//! ```

pub mod listener;
pub mod path;
pub mod transfer;
mod transmit;
pub mod wire;

#[cfg(test)]
mod tests;

pub use listener::{Incoming, Listener, ListenerEvent, ListenerStats, Refusal, Transmit};
pub use transfer::{Outcome, ReadAt, ReadError, Transfer, TransferConfig, TransferStats};
