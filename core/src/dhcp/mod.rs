//! DHCP and ProxyDHCP (RFC 2131/2132, PXE 2.1): wire format and server machine.
//!
//! - [`wire`]: [`Packet`] view and [`Repr`] (parse/emit), RFC 3396 long options.
//! - [`boot`]: which boot file a client gets (iPXE → script, PXE → iPXE binary by arch).
//! - [`leases`]: the fixed-capacity lease table.
//! - [`server`]: the sans-I/O [`Server`] (full DHCP or ProxyDHCP).

pub mod boot;
pub mod leases;
pub mod probe;
pub mod server;
pub mod wire;

pub use boot::{BootChoice, BootFile, BootFiles, ClientKind, Host};
pub use leases::{Lease, LeaseState, LeaseTable};
pub use probe::ProbeResult;
pub use server::{Config, ConfigError, Mode, Received, Server, Stats, Transmit};
pub use wire::{Error, MessageType, Op, Packet, Repr};
