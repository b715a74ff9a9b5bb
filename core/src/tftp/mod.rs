//! TFTP server (RFC 1350, 2347, 2348, 2349, 7440): wire format, filename
//! confinement and the server state machines.
//!
//! - [`wire`]: `Packet`/`Repr` for RRQ, WRQ, DATA, ACK, ERROR and OACK.
//! - [`path`]: requested filename → relative path that cannot leave the root.

pub mod path;
pub mod wire;
