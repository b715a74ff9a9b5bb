//! A station's script that carries a CHAP secret is served only to that
//! station's address: the std hosts' side of
//! `sanboot_core::ipxe::StationAddresses`, shared by the DHCP service (which
//! records what each answered exchange shows) and the TFTP service (which
//! asks before a transfer). The smoltcp appliance keeps the same core table
//! next to its own DHCP server.
//!
//! Addresses are learned only from exchanges sanboot answers: a full-mode
//! ACK (the lease) or, in proxy mode, iPXE's ProxyDHCP request on port 4011
//! (its source). With `[dhcp] mode = "off"`, or proxy mode without the 4011
//! port, sanboot never sees a station's address: scripts are then served to
//! anyone, and `sanboot check` says so.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use sanboot_core::dhcp::Transmit;
use sanboot_core::ipxe::{HexHyp, ScriptAccess, StationAddresses};

use crate::script::{carries_secret, host_script_mac};
use crate::{parse_mac, Config, DhcpMode};

/// Stations whose addresses are remembered (only those with secrets).
pub const STATION_SLOTS: usize = 1024;

/// Why a script was refused: the line the TFTP log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The MAC whose script was asked for.
    pub mac: [u8; 6],
    /// The address the station was seen with, if any.
    pub expected: Option<Ipv4Addr>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the script of {} carries a CHAP secret and ",
            HexHyp(self.mac)
        )?;
        match self.expected {
            Some(ip) => write!(f, "goes only to that station's address {ip}"),
            None => f.write_str("that station has not done DHCP with sanboot yet"),
        }
    }
}

/// MAC → address of every station whose script carries a secret.
#[derive(Debug)]
pub struct Stations {
    secret: HashSet<[u8; 6]>,
    learns: bool,
    table: Mutex<StationAddresses<STATION_SLOTS>>,
}

/// Can sanboot see station addresses with this config?
pub fn learns_addresses(config: &Config) -> bool {
    match config.dhcp.mode {
        DhcpMode::Full => true,
        DhcpMode::Proxy => config.dhcp.pxe_port,
        DhcpMode::Off => false,
    }
}

impl Stations {
    /// The stations of `config` whose scripts carry a secret.
    pub fn new(config: &Config) -> Stations {
        Stations {
            secret: config
                .hosts
                .iter()
                .filter(|h| carries_secret(config, h))
                .filter_map(|h| parse_mac(&h.mac).ok())
                .collect(),
            learns: learns_addresses(config),
            table: Mutex::new(StationAddresses::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, StationAddresses<STATION_SLOTS>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `mac` uses `ip` (kept only for stations with secrets).
    pub fn record(&self, mac: [u8; 6], ip: Ipv4Addr) {
        if !self.secret.contains(&mac) {
            return;
        }
        if !self.table().record(mac, ip) {
            log::warn!(
                "more than {STATION_SLOTS} stations with secrets: {} at {ip} not recorded, \
                 its script will be refused",
                HexHyp(mac)
            );
        }
    }

    /// A DHCP reply went out: remember the address it shows, if any.
    pub fn dhcp_reply(&self, t: &Transmit<'_>) {
        if let Some(ip) = t.station_address() {
            self.record(t.mac, ip);
        }
    }

    /// May `requester` read the TFTP virtual file `path`? Only a per-MAC
    /// script that carries a secret is checked, and only when sanboot can
    /// learn addresses at all.
    pub fn check(&self, config: &Config, path: &str, requester: IpAddr) -> Result<(), Refused> {
        let Some(mac) = host_script_mac(config, path) else {
            return Ok(());
        };
        if !self.learns || !self.secret.contains(&mac) {
            return Ok(());
        }
        let access = match requester {
            IpAddr::V4(ip) => self.table().check(mac, ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => self.table().check(mac, ip),
                None => ScriptAccess::Unknown,
            },
        };
        match access {
            ScriptAccess::Allowed => Ok(()),
            ScriptAccess::Unknown => Err(Refused {
                mac,
                expected: None,
            }),
            ScriptAccess::OtherAddress { expected } => Err(Refused {
                mac,
                expected: Some(expected),
            }),
        }
    }
}
