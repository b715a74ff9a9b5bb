//! sanboot on smoltcp: binds `sanboot-core`'s DHCP/ProxyDHCP, TFTP, iPXE
//! script and iSCSI machines to smoltcp sockets over any
//! `smoltcp::phy::Device`, with caller-provided buffers and no allocation.
//! Only glue lives here; the protocols are in the core.
//!
//! ```text
//! static BUFFERS: Buffers<T, TX>              // UDP byte rings + one scratch datagram (.bss)
//! static SLOTS: Slots<T>                      // UDP datagram slots
//! static ISCSI: [IscsiBytes<RX, TX>; C]       // TCP rings + PDU buffer per iSCSI connection
//! let mut sockets = socket_storage::<S>()     // S >= sockets_needed(T, C)
//! let mut app = Appliance::<Files, Disks, LEASES, T, C>::new(
//!     config, &mut device, now, files, &mut BUFFERS, &mut SLOTS, &mut sockets,
//!     IscsiParts { buffers: &mut ISCSI, scsi: &mut targets, disks })?;
//! loop {
//!     app.poll(now, &mut device, &mut |event| log(event));
//!     wait for a frame or until app.poll_at(now)
//! }
//! ```
//!
//! # Sockets
//!
//! - UDP 67: DHCP and ProxyDHCP share it (smoltcp hands a datagram to the
//!   first matching socket only); UDP 4011 in proxy mode. Replies to clients
//!   without an address are broadcast: smoltcp cannot unicast before ARP.
//! - UDP 69 plus one socket per TFTP transfer, bound to a fresh port for
//!   the transfer's life (the TID); strangers get ERROR 5.
//! - `C` TCP sockets listening on the portal port, one iSCSI connection each.
//!
//! # Capacities and what they cost
//!
//! Every capacity is a const generic or a constant; running out is a
//! refusal on the wire (TFTP ERROR "Too many transfers", a TCP reset when
//! every iSCSI socket is taken, a DHCP NAK/ignore, BUSY for SCSI), never a panic.
//! Bytes measured on `thumbv7em-none-eabihf` (32-bit):
//!
//! | capacity | where | RAM each |
//! |---|---|---|
//! | DHCP lease | `LEASES` of [`Appliance`] | 40 B (table base 1.7 KiB) |
//! | TFTP transfer | `T` of [`Appliance`], [`Buffers`], [`Slots`] | `TX` (DATA window) + 512 B ACK ring + 512 B slots + 184 B state + 336 B socket ≈ `TX` + 1.5 KiB |
//! | TFTP window | `TX / (blksize + 4) - 1`, ≤ 14 | (inside `TX`) |
//! | iSCSI connection | `C` of [`Appliance`], [`IscsiBytes`] | 30.2 KiB core `Connection<8, 1024>` + `RX` + `TX` TCP rings + 12 KiB PDU + 1 KiB collect + 2 KiB bounce + 0.3 KiB socket |
//! | iSCSI commands in flight | [`iscsi::ISCSI_TASKS`] = 8 per connection | 1 KiB scratch each (inside the 30.2 KiB) |
//! | SCSI target | [`ScsiTarget`] (4 LUNs, 8 nexus, 4 PR keys) | 6.1 KiB |
//! | fixed | DHCP 2×1472 in/out, PXE 1472 in/out, TFTP 69 rings, scratch `TX`, interface | 13 KiB + `TX` |
//!
//! The whole appliance as the size probe builds it (`firmware/probe-thumbv7em`:
//! `LEASES` 64, `T` 2 with `TX` 8 KiB, `C` 1 with 4 KiB/8 KiB TCP rings, one
//! target, a 32 KiB RAM disk), `opt-level = "s"`, fat LTO, as `cargo xtask
//! firmware` prints it: flash 124 KiB (text 123,196 with rodata and
//! vectors, + data 3,328); RAM 105 KiB static (data 3,328 + bss 104,616)
//! of which 32 KiB is the disk, plus the ≈36 KiB `Appliance` value itself:
//! ≈110 KiB apart from the disk and the call stack. The QEMU `virt`
//! firmware (`firmware/virt-aarch64`, `T` 4, `C` 2, default rings) is
//! 184 KiB of text. The Linux runner uses `LEASES` 1024,
//! `T` 16 with `TX` 16 KiB (window 10), `C` 4 with 8 KiB/16 KiB rings.
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
pub use iscsi::{
    IscsiBytes, IscsiConfig, ScsiTarget, ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS,
    ISCSI_MAX_UNMAP_DESCRIPTORS,
};
pub use sanboot_core::block::{BlockDevice, BlockError, RamDisk};
pub use storage::{Disks, Files, NoDisks, NoFiles, OneDisk, StaticFiles};
pub use tftp::TFTP_PORT;

pub use sanboot_core as core_machines;
pub use smoltcp;
