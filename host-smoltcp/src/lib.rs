//! sanboot on smoltcp: binds `sanboot-core`'s DHCP/ProxyDHCP, TFTP and iPXE
//! script machines to smoltcp sockets over any `smoltcp::phy::Device`, with
//! caller-provided buffers and no allocation. Only glue lives here; the
//! protocols are in the core.
//!
//! ```text
//! static BUFFERS: Buffers<T, TX>          // socket rings + one scratch datagram
//! let mut sockets = socket_storage::<S>() // S >= sockets_needed(T)
//! let mut app = Appliance::<Files, LEASES, T>::new(config, &mut device, now, files, &mut buffers, &mut sockets)?;
//! loop {
//!     app.poll(now, &mut device, &mut |event| log(event));
//!     wait for a frame or until app.poll_at(now)
//! }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod appliance;
mod buffers;
mod config;
mod dhcp;
mod event;
pub mod iscsi;
pub mod script;
mod storage;
mod tftp;

pub use appliance::{core_instant, Appliance, Error, IscsiParts, Stats};
pub use buffers::{
    socket_storage, sockets_needed, Buffers, Slots, UdpBytes, UdpSlots, DHCP_PAYLOAD,
    TRANSFER_PACKETS, TRANSFER_RX,
};
pub use config::{Config, Scripts};
pub use event::Event;
pub use iscsi::{backend::ScsiTarget, IscsiBytes, IscsiConfig};
pub use storage::{
    BlockDevice, DiskError, Disks, Files, NoDisks, NoFiles, OneDisk, RamDisk, StaticFiles,
};
pub use tftp::TFTP_PORT;

pub use sanboot_core as core_machines;
pub use smoltcp;
