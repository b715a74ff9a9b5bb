//! sanboot's protocol core: DHCP/ProxyDHCP, TFTP, iPXE script generation and
//! the iSCSI target with its SCSI block layer, as sans-I/O state machines.
//!
//! Nothing here reads a clock, a socket, a file or a disk: time arrives as an
//! [`time::Instant`] argument, bytes arrive as slices, and everything that must
//! go out is written into caller-provided buffers. Every capacity is fixed at
//! compile time, and running out of one is a refusal on the wire, never a panic.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[macro_use]
mod fmt;
#[macro_use]
mod macros;

mod decimal;

pub mod block;
pub mod dhcp;
pub mod ipxe;
pub mod iscsi;
pub mod scsi;
pub mod tftp;
pub mod time;
pub mod timeline;
