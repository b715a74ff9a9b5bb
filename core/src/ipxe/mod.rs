//! iPXE scripts: the seed chain every machine walks (`boot.ipxe` →
//! `default.ipxe` → `${mac:hexhyp}.ipxe`), each machine's own script
//! (sanboot, kernel or chain), a single-file direct form, and the names they
//! depend on: MACs in `hexhyp` form and RFC 3720 iSCSI names.
//!
//! Scripts are rendered into a caller's buffer ([`Script::render`]) or any
//! `core::fmt::Write` sink ([`Script::write_to`]); nothing allocates.
//! Configuration values are refused, never escaped, when they could add
//! commands to a script ([`ValueError`]).
//!
//! ```
//! use core::net::Ipv4Addr;
//! use sanboot_core::ipxe::{HostBoot, IscsiDisk, Script};
//!
//! let disk = IscsiDisk {
//!     server: Ipv4Addr::new(192, 0, 2, 1),
//!     port: 3260,
//!     lun: 1,
//!     target_iqn: "iqn.2024-01.test.e2e:sanboot",
//!     initiator_iqn: "iqn.2010-04.org.ipxe:pc1",
//!     chap: None,
//! };
//! let mut buf = [0u8; 256];
//! let len = Script::Host(HostBoot::Sanboot { disk, keep_san: false }).render(&mut buf).unwrap();
//! assert_eq!(
//!     &buf[..len],
//!     b"#!ipxe\nset initiator-iqn iqn.2010-04.org.ipxe:pc1\n\
//!       sanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n"
//! );
//! ```

mod iscsi_name;
mod mac;
mod script;
mod station;
mod value;
mod writer;

pub use iscsi_name::{
    expand_initiator_iqn, validate_iscsi_name, InitiatorIqn, InitiatorIqnError, IscsiNameError,
    MAX_ISCSI_NAME_LEN,
};
pub use mac::{mac_from_script_name, parse_hexhyp, HexHyp, HEXHYP_LEN, SCRIPT_SUFFIX};
pub use script::{
    Chap, DirectEntry, Field, HostBoot, Initramfs, IscsiDisk, RenderError, Script, DEFAULT_SCRIPT,
    ISCSI_DEFAULT_PORT, MAX_LUN,
};
pub use station::{ScriptAccess, StationAddresses};
pub use value::ValueError;
pub use writer::SliceWriter;

#[cfg(test)]
mod initramfs_tests;
#[cfg(test)]
mod tests;
