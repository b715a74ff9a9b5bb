//! A station's script that carries a CHAP secret is served only to that
//! station's address: the std hosts' side of
//! `sanboot_core::ipxe::StationAddresses`, shared by the DHCP service (which
//! records what each answered exchange shows) and the TFTP service (which
//! asks before a transfer). The smoltcp appliance keeps the same core table
//! next to its own DHCP server.
//!
//! Addresses are learned from the DHCP server (`Server::poll_station`): a
//! full-mode ACK (the lease) or, in proxy mode, a booting client's REQUEST
//! to the real server (the address it asks for) or its ProxyDHCP request
//! on port 4011 (its source). With `[dhcp] mode = "off"` sanboot never sees
//! a station's address: scripts are then served to anyone, and `sanboot
//! check` says so.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, RwLock};

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
    /// Follows a reload ([`Stations::update`]): a host given a secret then
    /// is protected from that moment.
    secret: RwLock<HashSet<[u8; 6]>>,
    learns: bool,
    table: Mutex<StationAddresses<STATION_SLOTS>>,
}

fn secret_macs(config: &Config) -> HashSet<[u8; 6]> {
    config
        .hosts
        .iter()
        .filter(|h| carries_secret(config, h))
        .filter_map(|h| parse_mac(&h.mac).ok())
        .collect()
}

/// Can sanboot see station addresses with this config? Not without DHCP.
pub fn learns_addresses(config: &Config) -> bool {
    config.dhcp.mode != DhcpMode::Off
}

impl Stations {
    /// The stations of `config` whose scripts carry a secret.
    pub fn new(config: &Config) -> Stations {
        Stations {
            secret: RwLock::new(secret_macs(config)),
            learns: learns_addresses(config),
            table: Mutex::new(StationAddresses::new()),
        }
    }

    /// A reloaded `config`: which scripts carry secrets now. (Whether
    /// addresses are learned at all, the DHCP mode, needs a restart.)
    pub fn update(&self, config: &Config) {
        *self.secret.write().unwrap_or_else(|e| e.into_inner()) = secret_macs(config);
    }

    fn is_secret(&self, mac: &[u8; 6]) -> bool {
        self.secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(mac)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, StationAddresses<STATION_SLOTS>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `mac` uses `ip` (kept only for stations with secrets).
    pub fn record(&self, mac: [u8; 6], ip: Ipv4Addr) {
        if !self.is_secret(&mac) {
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

    /// May `requester` read the TFTP virtual file `path`? Only a per-MAC
    /// script that carries a secret is checked, and only when sanboot can
    /// learn addresses at all.
    pub fn check(&self, config: &Config, path: &str, requester: IpAddr) -> Result<(), Refused> {
        let Some(mac) = host_script_mac(config, path) else {
            return Ok(());
        };
        if !self.learns || !self.is_secret(&mac) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(mode: &str) -> Config {
        let text = format!(
            r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [dhcp]
            mode = "{mode}"
            pool_start = "192.0.2.100"
            pool_end = "192.0.2.150"
            [boot]
            root_path = "/scripts"
            [[target]]
            iqn = "iqn.2024-01.test:a"
            [[target.lun]]
            id = 0
            image = "/nonexistent/a.img"
            [[host]]
            mac = "52:54:00:00:00:01"
            target = "iqn.2024-01.test:a"
            [host.chap]
            user = "pc1"
            secret = "pc1-secret-123"
            [[host]]
            mac = "52:54:00:00:00:02"
            target = "iqn.2024-01.test:a"
            "#
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    const PC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const STATION: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101));
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 102));

    #[test]
    fn a_secret_script_goes_to_the_recorded_address_only() {
        let c = config("full");
        let s = Stations::new(&c);
        let path = "scripts/52-54-00-00-00-01.ipxe";
        assert_eq!(
            s.check(&c, path, STATION),
            Err(Refused {
                mac: PC1,
                expected: None
            })
        );
        s.record(PC1, Ipv4Addr::new(192, 0, 2, 101));
        assert_eq!(s.check(&c, path, STATION), Ok(()));
        assert_eq!(s.check(&c, "52-54-00-00-00-01.ipxe", STATION), Ok(()));
        let refused = s.check(&c, path, OTHER).unwrap_err();
        assert_eq!(refused.expected, Some(Ipv4Addr::new(192, 0, 2, 101)));
        assert!(
            refused.to_string().contains("52-54-00-00-00-01"),
            "{refused}"
        );
        // No secret in pc2's script, and the seed chain: anyone.
        assert_eq!(s.check(&c, "scripts/52-54-00-00-00-02.ipxe", OTHER), Ok(()));
        assert_eq!(s.check(&c, "boot.ipxe", OTHER), Ok(()));
        assert_eq!(s.check(&c, "scripts/default.ipxe", OTHER), Ok(()));
    }

    #[test]
    fn stations_without_secrets_are_not_recorded() {
        let c = config("proxy");
        let s = Stations::new(&c);
        s.record([0x52, 0x54, 0, 0, 0, 2], Ipv4Addr::new(192, 0, 2, 5));
        s.record([2, 0, 0, 0, 0, 9], Ipv4Addr::new(192, 0, 2, 6));
        assert!(s.table().is_empty());
    }

    #[test]
    fn without_dhcp_nothing_is_learned_and_scripts_go_to_anyone() {
        // `sanboot check` warns about exactly this (exposure.rs).
        let c = config("off");
        let s = Stations::new(&c);
        assert_eq!(s.check(&c, "scripts/52-54-00-00-00-01.ipxe", OTHER), Ok(()));
    }
}
