//! DHCP and ProxyDHCP (RFC 2131/2132, PXE 2.1): wire format and server machine.

pub mod wire;

pub use wire::{Error, MessageType, Op, Packet, Repr};
