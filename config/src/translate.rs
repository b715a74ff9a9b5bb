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
use sanboot_core::iscsi::{ChapCredentials, DigestPolicy, InitiatorChap, TargetConfig};

use crate::script::{host_boot, host_initiator};
use crate::{parse_mac, Chap, Config, DhcpMode, Digest, Target};

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

/// Every host's initiator IQN for the iSCSI target's per-host CHAP, in
/// config order: a host whose name cannot be built (a bad template, a chain
/// host) gets an empty name, which no login matches, so its `[host.chap]`
/// entry is left out rather than every host's.
pub fn station_initiators(config: &Config) -> Vec<InitiatorIqn> {
    config
        .hosts
        .iter()
        .map(|h| host_initiator(config, h).unwrap_or_default())
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
    /// Per target: the `[host.chap]` credentials of the hosts allowed on it.
    host_chap: Vec<Vec<InitiatorChap<'a>>>,
    targets: &'a [Target],
}

fn credentials<'c>(user: &'c str, secret: &'c str) -> ChapCredentials<'c> {
    ChapCredentials {
        user,
        secret: secret.as_bytes(),
    }
}

fn mutual(c: &Chap) -> Option<ChapCredentials<'_>> {
    Some(credentials(
        c.mutual_user.as_deref()?,
        c.mutual_secret.as_deref()?,
    ))
}

impl<'a> TargetViews<'a> {
    /// Collects the initiator names, LUN ids and per-host CHAP entries of
    /// every target. `initiators` are the hosts' names in config order
    /// ([`station_initiators`]).
    ///
    /// A host's `[host.chap]` applies on the target it boots and on every
    /// target whose `initiators` list names it: there its initiator name
    /// must prove the host's secret, and on no other target does that
    /// secret open anything.
    pub fn new(config: &'a Config, initiators: &'a [InitiatorIqn]) -> Self {
        let targets = &config.targets;
        let host_chap = targets
            .iter()
            .map(|t| {
                let mut entries: Vec<InitiatorChap<'a>> = Vec::new();
                for (host, name) in config.hosts.iter().zip(initiators) {
                    let Some(chap) = &host.chap else { continue };
                    let boots = host
                        .target
                        .as_deref()
                        .is_some_and(|i| i.eq_ignore_ascii_case(&t.iqn));
                    let listed = t.initiators.iter().any(|i| i.eq_ignore_ascii_case(name));
                    // The first host with a name wins; `check` flags shared names.
                    let seen = entries
                        .iter()
                        .any(|e| e.initiator.eq_ignore_ascii_case(name));
                    if name.is_empty() || seen || !(boots || listed) {
                        continue;
                    }
                    entries.push(InitiatorChap {
                        initiator: name,
                        chap: credentials(&chap.user, &chap.secret),
                        mutual_chap: mutual(chap),
                    });
                }
                entries
            })
            .collect();
        TargetViews {
            initiators: targets
                .iter()
                .map(|t| t.initiators.iter().map(String::as_str).collect())
                .collect(),
            luns: targets
                .iter()
                .map(|t| t.luns.iter().map(|l| l.id).collect())
                .collect(),
            host_chap,
            targets,
        }
    }

    /// One core `TargetConfig` per `[[target]]`, in config order.
    pub fn configs(&self) -> Vec<TargetConfig<'_>> {
        self.targets
            .iter()
            .zip(&self.initiators)
            .zip(&self.luns)
            .zip(&self.host_chap)
            .map(|(((t, i), l), h)| TargetConfig {
                name: &t.iqn,
                initiators: i,
                chap: t.chap.as_ref().map(|c| credentials(&c.user, &c.secret)),
                mutual_chap: t.chap.as_ref().and_then(mutual),
                initiator_chap: h,
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

    #[test]
    fn host_chap_applies_on_its_targets_only_and_goes_in_its_script() {
        let text = r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [[target]]
            iqn = "iqn.2024-01.test:boot"
            chap = { user = "all", secret = "target-secret-1" }
            [[target.lun]]
            id = 0
            image = "/nonexistent/a.img"
            [[target]]
            iqn = "iqn.2024-01.test:data"
            initiators = ["iqn.2024-01.test:pc1"]
            [[target.lun]]
            id = 0
            image = "/nonexistent/b.img"
            [[target]]
            iqn = "iqn.2024-01.test:other"
            [[target.lun]]
            id = 0
            image = "/nonexistent/c.img"
            [[host]]
            mac = "52:54:00:00:00:01"
            target = "iqn.2024-01.test:BOOT"
            initiator_iqn = "iqn.2024-01.test:pc1"
            [host.chap]
            user = "pc1"
            secret = "pc1-secret-123"
            mutual_user = "sanboot"
            mutual_secret = "pc1-target-456"
            [[host]]
            mac = "52:54:00:00:00:02"
            target = "iqn.2024-01.test:boot"
            initiator_iqn = "iqn.2024-01.test:pc2"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        let names = station_initiators(&config);
        let views = TargetViews::new(&config, &names);
        let t = views.configs();
        // The target pc1 boots and the one that lists it; not the third.
        assert_eq!(t[0].initiator_chap.len(), 1);
        assert_eq!(t[1].initiator_chap.len(), 1);
        assert!(t[2].initiator_chap.is_empty());
        let (chap, mutual) = t[0].chap_for("iqn.2024-01.test:pc1");
        assert_eq!(chap.unwrap().secret, b"pc1-secret-123");
        assert_eq!(mutual.unwrap().secret, b"pc1-target-456");
        // pc2 has no entry: the target's secret.
        assert_eq!(
            t[0].chap_for("iqn.2024-01.test:pc2").0.unwrap().secret,
            b"target-secret-1"
        );
        // pc1's script carries its own secret, pc2's the target's.
        let pc1 = crate::script::render_for_mac(&config, [0x52, 0x54, 0, 0, 0, 1]).unwrap();
        assert!(pc1.contains("set username pc1\n"), "{pc1}");
        assert!(pc1.contains("set password pc1-secret-123\n"), "{pc1}");
        assert!(
            pc1.contains("set reverse-password pc1-target-456\n"),
            "{pc1}"
        );
        let pc2 = crate::script::render_for_mac(&config, [0x52, 0x54, 0, 0, 0, 2]).unwrap();
        assert!(pc2.contains("set password target-secret-1\n"), "{pc2}");
    }

    #[test]
    fn a_chain_host_cannot_have_chap() {
        let text = r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [[host]]
            mac = "52:54:00:00:00:01"
            boot = "chain"
            chain = "http://x/"
            [host.chap]
            user = "pc1"
            secret = "pc1-secret-123"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("[host.chap] is for hosts that boot a target"),
            "{err}"
        );
    }
}
