//! The TOML config mapped onto the core's borrowed config structs, for every
//! host (host-linux's `sanboot serve` and the smoltcp TAP runner).
//!
//! The core borrows; what it borrows that the file does not hold verbatim
//! (sorted host tables, expanded initiator names, per-target slices) is built
//! here once and owned by the caller for as long as the core config lives.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use sanboot_core::dhcp;
use sanboot_core::ipxe::{DirectEntry, InitiatorIqn};
use sanboot_core::iscsi::{ChapCredentials, DigestPolicy, TargetConfig};

use crate::script::{host_boot, host_initiator};
use crate::{parse_mac, Config, DhcpMode, Digest, Target};

/// The `[[host]]` table as the DHCP server wants it: sorted by MAC.
pub fn dhcp_hosts(config: &Config) -> Result<Vec<dhcp::Host<'_>>> {
    let mut hosts = Vec::with_capacity(config.hosts.len());
    for h in &config.hosts {
        let mac = parse_mac(&h.mac)?;
        hosts.push(dhcp::Host {
            mac,
            ip: h.ip,
            hostname: h.hostname.as_deref(),
            boot_file: h.boot_file.as_deref(),
            script: None,
        });
    }
    hosts.sort_by_key(|h| h.mac);
    Ok(hosts)
}

/// The DHCP server's config, or `None` when `[dhcp] mode = "off"`.
/// `hosts` comes from [`dhcp_hosts`]; `seed` keys the lease hash.
pub fn dhcp_config<'c>(
    config: &'c Config,
    hosts: &'c [dhcp::Host<'c>],
    seed: u64,
) -> Option<dhcp::Config<'c>> {
    let d = &config.dhcp;
    let mode = match d.mode {
        DhcpMode::Off => return None,
        DhcpMode::Full => dhcp::Mode::Full,
        DhcpMode::Proxy => dhcp::Mode::Proxy,
    };
    let mut c = dhcp::Config::new(mode, config.server.address);
    c.subnet_mask = d.netmask;
    c.router = d.router;
    c.dns = &d.dns;
    c.pool = d.pool_start.zip(d.pool_end);
    c.lease_secs = d.lease_secs;
    c.boot = dhcp::BootFiles {
        bios: &config.boot.bios,
        uefi: &config.boot.uefi,
        arm: &config.boot.arm64,
        http: config.boot.http.as_deref(),
        http_server: config.http_server(),
        script: &config.boot.script,
        root_path: config.boot.root_path.as_deref(),
    };
    c.hosts = hosts;
    c.hash_seed = seed;
    Some(c)
}

/// Every host's initiator IQN, in config order (empty for chain hosts).
pub fn initiators(config: &Config) -> Result<Vec<InitiatorIqn>> {
    config
        .hosts
        .iter()
        .map(|h| host_initiator(config, h).map_err(|e| anyhow::anyhow!("[[host]] {}: {e}", h.mac)))
        .collect()
}

/// Every host's script entry, in config order; `initiators` comes from
/// [`initiators`]. A host whose entry cannot be built is an error.
pub fn script_hosts<'c>(
    config: &'c Config,
    initiators: &'c [InitiatorIqn],
) -> Result<Vec<DirectEntry<'c>>> {
    let mut out = Vec::new();
    for (host, iqn) in config.hosts.iter().zip(initiators) {
        let boot = host_boot(config, host, iqn)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("[[host]] {}", host.mac))?;
        out.push(DirectEntry {
            mac: parse_mac(&host.mac)?,
            boot,
        });
    }
    Ok(out)
}

/// NAA designator and unit serial number of a LUN, stable across restarts:
/// FNV-1a over the target name (any case) and the LUN.
pub fn naa_and_serial(iqn: &str, lun: u64) -> (u64, String) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in iqn.to_ascii_lowercase().bytes().chain(lun.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // NAA 5 (IEEE Registered), OUI AC-DE-48 (IEEE's private-use OUI).
    let naa = (0x5u64 << 60) | (0xAC_DE48u64 << 36) | (h & 0xF_FFFF_FFFF);
    (naa, format!("{:016x}", h))
}

/// The core's borrowed view of the configured targets: owns the slices
/// each [`TargetConfig`] points into.
#[derive(Debug)]
pub struct TargetViews<'a> {
    initiators: Vec<Vec<&'a str>>,
    luns: Vec<Vec<u64>>,
    targets: &'a [Target],
}

impl<'a> TargetViews<'a> {
    /// Collects the initiator names and LUN ids of every target.
    pub fn new(targets: &'a [Target]) -> Self {
        TargetViews {
            initiators: targets
                .iter()
                .map(|t| t.initiators.iter().map(String::as_str).collect())
                .collect(),
            luns: targets
                .iter()
                .map(|t| t.luns.iter().map(|l| l.id).collect())
                .collect(),
            targets,
        }
    }

    /// One core `TargetConfig` per `[[target]]`, in config order.
    pub fn configs(&self) -> Vec<TargetConfig<'_>> {
        self.targets
            .iter()
            .zip(&self.initiators)
            .zip(&self.luns)
            .map(|((t, i), l)| TargetConfig {
                name: &t.iqn,
                initiators: i,
                chap: t.chap.as_ref().map(|c| ChapCredentials {
                    user: &c.user,
                    secret: c.secret.as_bytes(),
                }),
                mutual_chap: t.chap.as_ref().and_then(|c| {
                    Some(ChapCredentials {
                        user: c.mutual_user.as_deref()?,
                        secret: c.mutual_secret.as_deref()?.as_bytes(),
                    })
                }),
                luns: l,
                digest: match t.digest {
                    Digest::None => DigestPolicy::Never,
                    Digest::Allowed => DigestPolicy::Allowed,
                    Digest::Preferred => DigestPolicy::Preferred,
                    Digest::Required => DigestPolicy::Required,
                },
            })
            .collect()
    }
}

/// Prefix length of a netmask such as 255.255.255.0.
pub fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_hosts_are_sorted_by_mac() {
        let text = r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [dhcp]
            mode = "full"
            pool_start = "192.0.2.100"
            pool_end = "192.0.2.150"
            [[host]]
            mac = "52:54:00:00:00:02"
            ip = "192.0.2.20"
            boot = "chain"
            chain = "http://x/"
            [[host]]
            mac = "52:54:00:00:00:01"
            boot = "chain"
            chain = "http://x/"
            boot_file = "special.efi"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        let hosts = dhcp_hosts(&config).unwrap();
        let core = dhcp_config(&config, &hosts, 1).unwrap();
        assert_eq!(core.mode, dhcp::Mode::Full);
        assert_eq!(core.hosts.len(), 2);
        assert_eq!(core.hosts[0].boot_file, Some("special.efi"));
        assert!(dhcp::Server::<8>::new(core).is_ok());
        assert_eq!(core.boot.http_server, None, "HTTP is off unless asked for");

        // Before [[host]], where a table would still be top-level.
        let with_http = text.replacen("[dhcp]", "[http]\nlisten = \"0.0.0.0:8080\"\n[dhcp]", 1);
        let config: Config = toml::from_str(&with_http).unwrap();
        let hosts = dhcp_hosts(&config).unwrap();
        let core = dhcp_config(&config, &hosts, 1).unwrap();
        assert_eq!(
            core.boot.http_server,
            Some("192.0.2.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn naa_and_serial_ignore_iqn_case() {
        let (naa, serial) = naa_and_serial("iqn.2024-01.test:A", 1);
        assert_eq!(
            (naa, serial.clone()),
            naa_and_serial("iqn.2024-01.test:a", 1)
        );
        assert_ne!(naa, naa_and_serial("iqn.2024-01.test:a", 2).0);
        assert_eq!(naa >> 60, 5);
        assert_eq!(serial.len(), 16);
    }
}
