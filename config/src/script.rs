//! iPXE scripts for `sanboot script`, the TFTP virtual files, and the
//! boot-time problems `sanboot check` warns about. The scripts themselves are
//! rendered by `sanboot_core::ipxe`; this module maps the config onto it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};
use sanboot_core::ipxe::{
    expand_initiator_iqn, mac_from_script_name, validate_iscsi_name, Chap, DirectEntry, HexHyp,
    HostBoot, InitiatorIqn, InitiatorIqnError, IscsiDisk, RenderError, Script, DEFAULT_SCRIPT,
};

use crate::{parse_mac, BootKind, Config, DhcpMode, Host, Target};

/// iPXE's BIOS INT 13h emulation guesses 255 heads x 63 sectors; a disk with
/// fewer blocks than one such cylinder has 0 cylinders and every CHS read
/// fails (`Boot from SAN device 0x80 failed`), even iPXE's own MBR load.
pub const MIN_BIOS_SANBOOT_SECTORS: u64 = 255 * 63;
const SECTOR: u64 = 512;

/// Why a host has no script.
#[derive(Debug)]
pub(crate) enum HostError {
    Initiator(InitiatorIqnError),
    Render(RenderError),
    Config(String),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Initiator(e) => write!(f, "initiator IQN: {e}"),
            HostError::Render(e) => write!(f, "{e}"),
            HostError::Config(e) => f.write_str(e),
        }
    }
}

/// The initiator IQN of a host: its own template or `[boot] initiator_iqn`.
fn initiator_iqn(config: &Config, host: &Host) -> Result<InitiatorIqn, HostError> {
    let template = host
        .initiator_iqn
        .as_deref()
        .unwrap_or(&config.boot.initiator_iqn);
    let mac = parse_mac(&host.mac).map_err(|e| HostError::Config(format!("mac: {e}")))?;
    expand_initiator_iqn(template, host.hostname.as_deref(), mac).map_err(HostError::Initiator)
}

fn target_of<'a>(config: &'a Config, host: &Host) -> Result<&'a Target, HostError> {
    let iqn = host
        .target
        .as_deref()
        .ok_or_else(|| HostError::Config("no target".into()))?;
    config
        .target(iqn)
        .ok_or_else(|| HostError::Config(format!("target {iqn:?} is not defined")))
}

pub(crate) fn host_boot<'a>(
    config: &'a Config,
    host: &'a Host,
    initiator: &'a str,
) -> Result<HostBoot<'a>, HostError> {
    let disk = |target: &'a Target| IscsiDisk {
        server: config.server.address,
        port: config.iscsi.listen.port(),
        lun: host.lun,
        // The host may spell the IQN in another case; the target's own
        // spelling is what it answers to.
        target_iqn: &target.iqn,
        initiator_iqn: initiator,
        // The station's own secrets when it has them (the target checks
        // them per initiator name), else the target's.
        chap: host.chap.as_ref().or(target.chap.as_ref()).map(|c| Chap {
            user: &c.user,
            secret: &c.secret,
            mutual: c.mutual_user.as_deref().zip(c.mutual_secret.as_deref()),
        }),
    };
    Ok(match host.boot {
        BootKind::Sanboot => HostBoot::Sanboot {
            disk: disk(target_of(config, host)?),
            keep_san: host.keep_san,
        },
        BootKind::Kernel => HostBoot::Kernel {
            initramfs: host.initramfs.unwrap_or_default().core(),
            disk: disk(target_of(config, host)?),
            kernel: host
                .kernel
                .as_deref()
                .ok_or_else(|| HostError::Config("boot = kernel needs `kernel`".into()))?,
            initrd: host.initrd.as_deref(),
            cmdline: &host.cmdline,
        },
        BootKind::Chain => HostBoot::Chain {
            url: host
                .chain
                .as_deref()
                .ok_or_else(|| HostError::Config("boot = chain needs `chain`".into()))?,
        },
    })
}

/// A chain host needs no initiator name, so a bad template must not stop it.
pub(crate) fn host_initiator(config: &Config, host: &Host) -> Result<InitiatorIqn, HostError> {
    match host.boot {
        BootKind::Chain => Ok(InitiatorIqn::new()),
        BootKind::Sanboot | BootKind::Kernel => initiator_iqn(config, host),
    }
}

fn to_string(script: Script<'_>) -> Result<String, RenderError> {
    let mut out = String::new();
    script.write_to(&mut out)?;
    Ok(out)
}

fn render_host(config: &Config, host: &Host) -> Result<String, HostError> {
    let initiator = host_initiator(config, host)?;
    let boot = host_boot(config, host, &initiator)?;
    to_string(Script::Host(boot)).map_err(HostError::Render)
}

/// The direct form: every host whose script renders, in config order.
fn render_direct(config: &Config) -> Result<String, RenderError> {
    let initiators: Vec<_> = config
        .hosts
        .iter()
        .map(|h| host_initiator(config, h))
        .collect();
    let entries: Vec<DirectEntry<'_>> = config
        .hosts
        .iter()
        .zip(&initiators)
        .filter_map(|(host, iqn)| {
            let iqn = iqn.as_ref().ok()?;
            let boot = host_boot(config, host, iqn).ok()?;
            // Leave out a host whose values cannot be written, not everyone.
            Script::Host(boot).validate().ok()?;
            Some(DirectEntry {
                mac: parse_mac(&host.mac).ok()?,
                boot,
            })
        })
        .collect();
    to_string(Script::Direct(&entries))
}

/// The script a machine with this MAC gets (`sanboot script --mac`).
pub fn render_for_mac(config: &Config, mac: [u8; 6]) -> Result<String> {
    let Some(host) = config.host(mac) else {
        bail!(
            "no [[host]] with mac {}: iPXE would get no {}.ipxe and {DEFAULT_SCRIPT} would say so",
            HexHyp(mac),
            HexHyp(mac)
        );
    };
    render_host(config, host).map_err(|e| anyhow!("[[host]] {}: {e}", host.mac))
}

/// The directory (no leading or trailing `/`) the chain's `default.ipxe` and
/// per-MAC scripts are requested under: `[boot] root_path`, which a relative
/// value makes relative to the directory of `[boot] script`.
fn script_dir(config: &Config) -> String {
    let boot_dir = config
        .boot
        .script
        .trim_start_matches('/')
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir);
    match config.boot.root_path.as_deref() {
        None | Some("") => boot_dir.to_string(),
        Some(rp) if rp.starts_with('/') => rp.trim_matches('/').to_string(),
        Some(rp) if boot_dir.is_empty() => rp.trim_matches('/').to_string(),
        Some(rp) => format!("{boot_dir}/{}", rp.trim_matches('/')),
    }
}

/// `boot.ipxe`: a relative chain (same server and scheme it came by), or
/// over HTTP when sanboot serves it; `dir` is [`script_dir`].
fn boot_script<'a>(config: &'a Config, dir: &'a str) -> Script<'a> {
    match config.http_server() {
        Some(server) => Script::BootOverHttp { server, dir },
        None => Script::Boot {
            root_path: config.boot.root_path.as_deref(),
        },
    }
}

/// A file TFTP (and HTTP) serves from memory instead of from its root: the seed chain
/// (`boot.ipxe`, `default.ipxe`) and each host's `<mac-hexhyp>.ipxe`.
/// `path` is the request as the client sent it, already normalised by TFTP
/// (no leading `/`, `\` turned into `/`). `None` means "not a virtual file".
///
/// `default.ipxe` and `<mac>.ipxe` are found under the root path directory
/// and at the top; names compare case-insensitively. An unknown MAC is
/// `None`, so the client gets "file not found" and `default.ipxe` explains.
pub fn virtual_file(config: &Config, path: &str) -> Option<Vec<u8>> {
    let path = path.trim_start_matches('/');
    if path.eq_ignore_ascii_case(config.boot.script.trim_start_matches('/')) {
        let rendered = if config.boot.direct {
            render_direct(config)
        } else {
            to_string(boot_script(config, &script_dir(config)))
        };
        return match rendered {
            Ok(text) => Some(text.into_bytes()),
            Err(e) => {
                log::warn!("cannot render the boot script {path}: {e}");
                None
            }
        };
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if !dir.is_empty() && !dir.eq_ignore_ascii_case(&script_dir(config)) {
        return None;
    }
    if name.eq_ignore_ascii_case(DEFAULT_SCRIPT) {
        return to_string(Script::Default).ok().map(String::into_bytes);
    }
    let mac = host_script_mac(config, path)?;
    let Some(host) = config.host(mac) else {
        log::info!("no [[host]] for MAC {}: script not found", HexHyp(mac));
        return None;
    };
    match render_host(config, host) {
        Ok(text) => Some(text.into_bytes()),
        Err(e) => {
            log::warn!("cannot render the script of MAC {}: {e}", HexHyp(mac));
            None
        }
    }
}

/// The MAC whose `<mac>.ipxe` `path` names (as [`virtual_file`] finds it:
/// in the script directory or at the top), whether or not a host has it.
pub fn host_script_mac(config: &Config, path: &str) -> Option<[u8; 6]> {
    let path = path.trim_start_matches('/');
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if !dir.is_empty() && !dir.eq_ignore_ascii_case(&script_dir(config)) {
        return None;
    }
    mac_from_script_name(name)
}

/// Does this host's script carry a CHAP secret (its own or its target's)?
pub fn carries_secret(config: &Config, host: &Host) -> bool {
    match host.boot {
        BootKind::Chain => false,
        BootKind::Sanboot | BootKind::Kernel => {
            host.chap.is_some() || target_of(config, host).is_ok_and(|t| t.chap.is_some())
        }
    }
}

/// Problems a boot would hit that the config is still valid without.
pub fn check_warnings(config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    check_boot(config, &mut w);
    check_targets(config, &mut w);
    check_hosts(config, &mut w);
    check_dhcp(config, &mut w);
    crate::exposure::script_warnings(config, &mut w);
    w
}

fn check_boot(config: &Config, w: &mut Vec<String>) {
    if let Err(e) = to_string(boot_script(config, &script_dir(config))) {
        w.push(format!("[boot] {}: {e}", config.boot.script));
    }
    if config.dhcp.mode == DhcpMode::Off {
        return;
    }
    match &config.tftp.root {
        None => w.push(
            "[tftp] root is not set: plain PXE clients cannot fetch their iPXE binary \
             (only clients already running iPXE can boot)"
                .into(),
        ),
        Some(root) if !root.is_dir() => {
            w.push(format!("[tftp] root {} is not a directory", root.display()))
        }
        Some(root) => {
            for (key, file) in [("bios", &config.boot.bios), ("uefi", &config.boot.uefi)] {
                if !root.join(file.trim_start_matches('/')).is_file() {
                    w.push(format!(
                        "[boot] {key} = {file:?}: not found in the TFTP root {}",
                        root.display()
                    ));
                }
            }
        }
    }
}

fn check_targets(config: &Config, w: &mut Vec<String>) {
    for t in &config.targets {
        if let Err(e) = validate_iscsi_name(&t.iqn) {
            w.push(format!("[[target]] iqn = {:?}: {e}", t.iqn));
        }
        for i in &t.initiators {
            if let Err(e) = validate_iscsi_name(i) {
                w.push(format!(
                    "[[target]] {}: initiators entry {i:?}: {e} (no initiator can match it)",
                    t.iqn
                ));
            }
        }
        if let Some(chap) = &t.chap {
            crate::exposure::chap_quality(&format!("[[target]] {}", t.iqn), chap, w);
        }
        for lun in &t.luns {
            // An overlay LUN has its base's size (its file is made when missing).
            let sized = lun.base.as_ref().unwrap_or(&lun.image);
            let size = match std::fs::metadata(sized) {
                Ok(meta) => meta.len(),
                Err(_) => match lun.size {
                    Some(size) => size,
                    None => {
                        w.push(format!(
                            "[[target]] {} lun {}: image {} does not exist and has no `size` \
                             to create it",
                            t.iqn,
                            lun.id,
                            lun.image.display()
                        ));
                        continue;
                    }
                },
            };
            if size % SECTOR != 0 {
                w.push(format!(
                    "[[target]] {} lun {}: size {size} is not a multiple of 512; the last \
                     {} bytes are unreachable",
                    t.iqn,
                    lun.id,
                    size % SECTOR
                ));
            }
            let sanbooted = config.hosts.iter().any(|h| {
                h.boot == BootKind::Sanboot
                    && h.lun == lun.id
                    && h.target
                        .as_deref()
                        .is_some_and(|i| i.eq_ignore_ascii_case(&t.iqn))
            });
            if sanbooted && size / SECTOR < MIN_BIOS_SANBOOT_SECTORS {
                w.push(format!(
                    "[[target]] {} lun {}: {size} bytes is smaller than {MIN_BIOS_SANBOOT_SECTORS} \
                     sectors x 512 B (7.85 MiB): iPXE's BIOS INT13 CHS geometry (255 heads x 63 \
                     sectors) gets 0 cylinders and a BIOS sanboot fails with \
                     \"Input/output error\"; use at least 8 MiB",
                    t.iqn, lun.id
                ));
            }
        }
    }
}

fn check_hosts(config: &Config, w: &mut Vec<String>) {
    let mut by_initiator: HashMap<String, Vec<&str>> = HashMap::new();
    let mut writers: HashMap<(String, u64), Vec<&str>> = HashMap::new();
    for host in &config.hosts {
        let name = host.hostname.as_deref().unwrap_or(&host.mac);
        if let Err(e) = render_host(config, host) {
            match &host.hostname {
                Some(hostname) => w.push(format!("[[host]] {hostname} ({}): {e}", host.mac)),
                None => w.push(format!("[[host]] {}: {e}", host.mac)),
            }
            continue;
        }
        if host.boot == BootKind::Chain {
            continue;
        }
        // Every initramfs flavour logs in from sanboot's keys, but which
        // device is / only the host's own root= says.
        if host.boot == BootKind::Kernel
            && !host
                .cmdline
                .split_whitespace()
                .any(|w| w.starts_with("root="))
        {
            w.push(format!(
                "[[host]] {name}: boot = kernel and cmdline has no root=: the initramfs logs in \
                 to the disk but does not know which device to mount as / \
                 (add e.g. root=LABEL=... or root=UUID=...)"
            ));
        }
        let (Ok(iqn), Ok(target)) = (initiator_iqn(config, host), target_of(config, host)) else {
            continue;
        };
        by_initiator.entry(iqn.to_string()).or_default().push(name);
        if !target.initiators.is_empty()
            && !target
                .initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(&iqn))
        {
            w.push(format!(
                "[[host]] {name}: initiator {iqn} is not in target {}'s initiators list; \
                 its login will be refused",
                target.iqn
            ));
        }
        let read_only = target.luns.iter().any(|l| l.id == host.lun && l.read_only);
        if !read_only {
            writers
                .entry((target.iqn.to_ascii_lowercase(), host.lun))
                .or_default()
                .push(name);
        }
    }
    let mut shared: Vec<_> = by_initiator
        .into_iter()
        .filter(|(_, h)| h.len() > 1)
        .collect();
    shared.sort();
    for (iqn, hosts) in shared {
        w.push(format!(
            "[[host]] {}: share the initiator name {iqn}; their sessions will replace each \
             other (use %mac% or %hostname% in the template)",
            hosts.join(", ")
        ));
    }
    let mut shared: Vec<_> = writers.into_iter().filter(|(_, h)| h.len() > 1).collect();
    shared.sort();
    for ((target, lun), hosts) in shared {
        w.push(format!(
            "[[host]] {}: boot the same writable disk {target} lun {lun}; two machines \
             writing one filesystem corrupt it (give each its own LUN or make it read_only)",
            hosts.join(", ")
        ));
    }
}

fn check_dhcp(config: &Config, w: &mut Vec<String>) {
    let reserved: Vec<(&Host, Ipv4Addr)> = config
        .hosts
        .iter()
        .filter_map(|h| h.ip.map(|ip| (h, ip)))
        .collect();
    if config.dhcp.mode != DhcpMode::Full {
        for (h, ip) in &reserved {
            w.push(format!(
                "[[host]] {}: ip = {ip} is ignored: [dhcp] mode is not \"full\"",
                h.mac
            ));
        }
        return;
    }
    let mask = u32::from(config.dhcp.netmask);
    let net = u32::from(config.server.address) & mask;
    let inside = |ip: Ipv4Addr| u32::from(ip) & mask == net;
    let subnet = format!("{}/{}", Ipv4Addr::from(net), mask.count_ones());
    for (h, ip) in &reserved {
        if !inside(*ip) {
            w.push(format!(
                "[[host]] {}: ip = {ip} is outside the server's subnet {subnet}",
                h.mac
            ));
        }
        if *ip == config.server.address {
            w.push(format!(
                "[[host]] {}: ip = {ip} is the server's own address",
                h.mac
            ));
        }
    }
    let mut seen = HashMap::new();
    for (h, ip) in &reserved {
        if let Some(other) = seen.insert(*ip, h.mac.as_str()) {
            w.push(format!(
                "[[host]] {} and {other}: both reserve ip = {ip}",
                h.mac
            ));
        }
    }
    for (key, ip) in [
        ("pool_start", config.dhcp.pool_start),
        ("pool_end", config.dhcp.pool_end),
        ("router", config.dhcp.router),
    ] {
        if let Some(ip) = ip.filter(|ip| !inside(*ip)) {
            w.push(format!(
                "[dhcp] {key} = {ip} is outside the server's subnet {subnet}"
            ));
        }
    }
    if let (Some(start), Some(end)) = (config.dhcp.pool_start, config.dhcp.pool_end) {
        let server = u32::from(config.server.address);
        if (u32::from(start)..=u32::from(end)).contains(&server) {
            w.push(format!(
                "[dhcp] the pool {start}-{end} contains the server's own address"
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [boot]
            root_path = "/scripts"
            initiator_iqn = "iqn.2007-11.ru.pp.livid:%hostname%-%mac%"
            [[target]]
            iqn = "iqn.2024-01.test.e2e:sanboot"
            [[target.lun]]
            id = 1
            image = "/nonexistent/disk.img"
            size = 16777216
            [[host]]
            mac = "52:54:00:E2:E0:01"
            hostname = "pc1"
            target = "iqn.2024-01.test.e2e:sanboot"
            lun = 1
            {extra}
            "#
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    const PC1: &str = "#!ipxe\nset initiator-iqn iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01\n\
                       sanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n";

    #[test]
    fn script_for_a_known_mac() {
        assert_eq!(render_for_mac(&config(""), MAC).unwrap(), PC1);
    }

    #[test]
    fn kernel_hosts_get_their_initramfs_keys() {
        let kernel = |initramfs: &str| {
            let c = config(&format!(
                "boot = \"kernel\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n{initramfs}"
            ));
            render_for_mac(&c, MAC).unwrap()
        };
        let iqn = "iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01";
        let target = "iqn.2024-01.test.e2e:sanboot";
        let line = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("kernel "))
                .unwrap()
                .to_string()
        };
        // Without the key: genkernel's, as before the key existed.
        assert_eq!(
            line(&kernel("")),
            format!("kernel vmlinuz iscsi_target={target} iscsi_address=192.0.2.1 iscsi_initiatorname={iqn} ip=dhcp initrd=initrd.img")
        );
        assert_eq!(
            line(&kernel("initramfs = \"initramfs-tools\"")),
            format!("kernel vmlinuz iscsi_target_name={target} iscsi_target_ip=192.0.2.1 iscsi_initiator={iqn} ip=dhcp initrd=initrd.img")
        );
        assert_eq!(
            line(&kernel("initramfs = \"dracut\"")),
            format!("kernel vmlinuz netroot=iscsi:192.0.2.1:::1:{target} rd.iscsi.initiator={iqn} ip=dhcp initrd=initrd.img")
        );
        let ibft = kernel("initramfs = \"ibft\"");
        assert!(
            ibft.contains(&format!("\nsanhook iscsi:192.0.2.1:::1:{target}\n")),
            "{ibft}"
        );
        assert_eq!(
            line(&ibft),
            "kernel vmlinuz rd.iscsi.firmware=1 iscsi_auto ip=dhcp initrd=initrd.img"
        );
    }

    #[test]
    fn unknown_mac_is_an_error_naming_it() {
        let err = render_for_mac(&config(""), [2, 0, 0, 0, 0, 9]).unwrap_err();
        assert!(err.to_string().contains("02-00-00-00-00-09"), "{err}");
    }

    fn text(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn tftp_serves_the_whole_chain() {
        let c = config("");
        assert_eq!(
            text(virtual_file(&c, "boot.ipxe")).as_deref(),
            Some("#!ipxe\nchain /scripts/default.ipxe\n")
        );
        let default = text(virtual_file(&c, "scripts/default.ipxe")).unwrap();
        assert!(default.starts_with("#!ipxe\nchain ${mac:hexhyp}.ipxe || goto failed\n"));
        assert_eq!(
            text(virtual_file(&c, "scripts/52-54-00-e2-e0-01.ipxe")).as_deref(),
            Some(PC1)
        );
        assert_eq!(
            text(virtual_file(&c, "SCRIPTS/52-54-00-E2-E0-01.IPXE")).as_deref(),
            Some(PC1)
        );
        assert_eq!(
            text(virtual_file(&c, "52-54-00-e2-e0-01.ipxe")).as_deref(),
            Some(PC1)
        );
        assert_eq!(virtual_file(&c, "scripts/52-54-00-e2-e0-02.ipxe"), None);
        assert_eq!(virtual_file(&c, "other/52-54-00-e2-e0-01.ipxe"), None);
        assert_eq!(virtual_file(&c, "undionly.kpxe"), None);
    }

    #[test]
    fn http_on_makes_the_chain_absolute() {
        let mut c = config("");
        c.http.listen = Some("0.0.0.0:80".parse().unwrap());
        assert_eq!(
            text(virtual_file(&c, "boot.ipxe")).as_deref(),
            Some("#!ipxe\nchain http://192.0.2.1/scripts/default.ipxe\n")
        );
        c.boot.script = "ipxe/boot.ipxe".into();
        c.boot.root_path = Some("hosts".into());
        c.http.listen = Some("192.0.2.9:8080".parse().unwrap());
        assert_eq!(
            text(virtual_file(&c, "ipxe/boot.ipxe")).as_deref(),
            Some("#!ipxe\nchain http://192.0.2.9:8080/ipxe/hosts/default.ipxe\n")
        );
        // default.ipxe and the host scripts stay relative: they inherit http.
        assert!(text(virtual_file(&c, "ipxe/hosts/default.ipxe"))
            .unwrap()
            .contains("chain ${mac:hexhyp}.ipxe"));
    }

    #[test]
    fn direct_mode_serves_one_file() {
        let mut c = config("");
        c.boot.direct = true;
        let boot = text(virtual_file(&c, "boot.ipxe")).unwrap();
        assert!(boot.starts_with(
            "#!ipxe\niseq ${mac:hexhyp} 52-54-00-e2-e0-01 && goto 52-54-00-e2-e0-01 ||\n"
        ));
        assert!(boot.contains("\nsanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n"));
    }

    #[test]
    fn script_dir_follows_root_path() {
        let mut c = config("");
        assert_eq!(script_dir(&c), "scripts");
        c.boot.root_path = None;
        assert_eq!(script_dir(&c), "");
        c.boot.script = "ipxe/boot.ipxe".into();
        assert_eq!(script_dir(&c), "ipxe");
        c.boot.root_path = Some("hosts/".into());
        assert_eq!(script_dir(&c), "ipxe/hosts");
    }

    #[test]
    fn clean_config_has_no_warnings() {
        let mut c = config("");
        c.dhcp.mode = DhcpMode::Off;
        assert_eq!(check_warnings(&c), Vec::<String>::new());
    }

    #[test]
    fn warnings_a_boot_would_hit() {
        let mut c = config("");
        c.dhcp.mode = DhcpMode::Off;
        c.targets[0].luns[0].size = Some(4 << 20);
        c.targets[0].initiators = vec!["iqn.2024-01.test:someone-else".into()];
        c.hosts[0].hostname = None;
        let w = check_warnings(&c).join("\n");
        assert!(w.contains("INT13"), "{w}");
        assert!(w.contains("%hostname% but the host has no hostname"), "{w}");
        c.hosts[0].hostname = Some("pc1".into());
        let w = check_warnings(&c).join("\n");
        assert!(w.contains("is not in target"), "{w}");
    }

    #[test]
    fn kernel_host_without_root_is_flagged() {
        let kernel = "boot = \"kernel\"\nkernel = \"vmlinuz\"\ninitramfs = \"initramfs-tools\"";
        let w = check_warnings(&config(kernel)).join("\n");
        assert!(w.contains("cmdline has no root="), "{w}");
        let with_root = format!("{kernel}\ncmdline = \"root=LABEL=sanroot ro\"");
        let w = check_warnings(&config(&with_root)).join("\n");
        assert!(!w.contains("root="), "{w}");
    }

    #[test]
    fn full_dhcp_reservation_outside_the_subnet() {
        let mut c = config("ip = \"198.51.100.7\"");
        c.dhcp.mode = DhcpMode::Full;
        c.dhcp.pool_start = Some("192.0.2.100".parse().unwrap());
        c.dhcp.pool_end = Some("192.0.2.150".parse().unwrap());
        let w = check_warnings(&c).join("\n");
        assert!(
            w.contains("outside the server's subnet 192.0.2.0/24"),
            "{w}"
        );
    }

    #[test]
    fn shared_disks_and_names_are_flagged() {
        let c = config(
            r#"
            [[host]]
            mac = "52:54:00:e2:e0:02"
            hostname = "pc1"
            target = "iqn.2024-01.test.e2e:sanboot"
            lun = 1
            initiator_iqn = "iqn.2007-11.ru.pp.livid:%hostname%"
            [[host]]
            mac = "52:54:00:e2:e0:03"
            hostname = "pc1"
            target = "iqn.2024-01.test.e2e:sanboot"
            lun = 1
            initiator_iqn = "iqn.2007-11.ru.pp.livid:%hostname%"
            "#,
        );
        let w = check_warnings(&c).join("\n");
        assert!(w.contains("share the initiator name"), "{w}");
        assert!(w.contains("same writable disk"), "{w}");
    }
}
