//! host-linux's TOML config mapped onto the appliance's borrowed structs.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use sanboot_core::dhcp;
use sanboot_core::ipxe::{
    expand_initiator_iqn, Chap, DirectEntry, HostBoot, InitiatorIqn, IscsiDisk,
};

use crate::config::{parse_mac, BootKind, Config, DhcpMode, Host};

/// Owned values the appliance config borrows.
pub struct Parts {
    pub dhcp_hosts: Vec<(usize, [u8; 6])>,
    pub initiators: Vec<InitiatorIqn>,
}

pub fn parts(config: &Config) -> Result<Parts> {
    let mut dhcp_hosts = Vec::new();
    let mut initiators = Vec::new();
    for (i, h) in config.hosts.iter().enumerate() {
        let mac = parse_mac(&h.mac)?;
        dhcp_hosts.push((i, mac));
        let iqn = match h.boot {
            BootKind::Chain => InitiatorIqn::new(),
            _ => {
                let template = h
                    .initiator_iqn
                    .as_deref()
                    .unwrap_or(&config.boot.initiator_iqn);
                expand_initiator_iqn(template, h.hostname.as_deref(), mac)
                    .map_err(|e| anyhow::anyhow!("[[host]] {}: initiator IQN: {e:?}", h.mac))?
            }
        };
        initiators.push(iqn);
    }
    dhcp_hosts.sort_by_key(|(_, mac)| *mac);
    Ok(Parts {
        dhcp_hosts,
        initiators,
    })
}

pub fn dhcp_hosts<'c>(config: &'c Config, parts: &Parts) -> Vec<dhcp::Host<'c>> {
    parts
        .dhcp_hosts
        .iter()
        .filter_map(|(i, mac)| {
            let h = config.hosts.get(*i)?;
            Some(dhcp::Host {
                mac: *mac,
                ip: h.ip,
                hostname: h.hostname.as_deref(),
                boot_file: h.boot_file.as_deref(),
                script: None,
            })
        })
        .collect()
}

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
        script: &config.boot.script,
        root_path: config.boot.root_path.as_deref(),
    };
    c.hosts = hosts;
    c.hash_seed = seed;
    Some(c)
}

fn host_boot<'c>(config: &'c Config, host: &'c Host, initiator: &'c str) -> Result<HostBoot<'c>> {
    let disk = || -> Result<IscsiDisk<'c>> {
        let iqn = host.target.as_deref().context("no target")?;
        let target = config.target(iqn).context("target not defined")?;
        Ok(IscsiDisk {
            server: config.server.address,
            port: config.iscsi.listen.port(),
            lun: host.lun,
            target_iqn: &target.iqn,
            initiator_iqn: initiator,
            chap: target.chap.as_ref().map(|c| Chap {
                user: &c.user,
                secret: &c.secret,
                mutual: c.mutual_user.as_deref().zip(c.mutual_secret.as_deref()),
            }),
        })
    };
    Ok(match host.boot {
        BootKind::Sanboot => HostBoot::Sanboot {
            disk: disk()?,
            keep_san: host.keep_san,
        },
        BootKind::Kernel => HostBoot::Kernel {
            initramfs: host.initramfs.unwrap_or_default().core(),
            disk: disk()?,
            kernel: host
                .kernel
                .as_deref()
                .context("boot = kernel needs `kernel`")?,
            initrd: host.initrd.as_deref(),
            cmdline: &host.cmdline,
        },
        BootKind::Chain => HostBoot::Chain {
            url: host
                .chain
                .as_deref()
                .context("boot = chain needs `chain`")?,
        },
    })
}

/// Every host's script entry, in config order.
pub fn script_hosts<'c>(config: &'c Config, parts: &'c Parts) -> Result<Vec<DirectEntry<'c>>> {
    let mut out = Vec::new();
    for (host, iqn) in config.hosts.iter().zip(&parts.initiators) {
        let boot =
            host_boot(config, host, iqn).with_context(|| format!("[[host]] {}", host.mac))?;
        out.push(DirectEntry {
            mac: parse_mac(&host.mac)?,
            boot,
        });
    }
    Ok(out)
}

/// Parses `aa:bb:cc:dd:ee:ff` for `--mac`.
pub fn mac_arg(s: &str) -> Result<[u8; 6]> {
    let mac = parse_mac(s)?;
    if mac.first().is_some_and(|b| b & 1 != 0) {
        bail!("--mac {s}: a multicast address");
    }
    Ok(mac)
}

/// Prefix length of a netmask such as 255.255.255.0.
pub fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}
