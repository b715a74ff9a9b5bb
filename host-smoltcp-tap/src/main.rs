//! `sanboot-smoltcp --tap NAME --config F`: the smoltcp appliance on a Linux
//! TAP device, reading the same TOML file as `sanboot serve`.
//!
//! smoltcp owns its own Ethernet and IP address on the tap (`--mac`,
//! `[server] address`); the kernel's stack is not involved, so the tap's
//! bridge may carry another address or none. `[server] interface` is
//! ignored. Leases are kept in memory only.

mod disks;
mod files;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use sanboot_config as config;
use sanboot_config::translate;
use sanboot_core::dhcp::{BootChoice, ClientKind, MessageType};
use sanboot_core::iscsi::{TargetConfig, Targets};
use sanboot_core::tftp::TransferConfig;
use sanboot_smoltcp::smoltcp::phy::{wait, Medium, TunTapInterface};
use sanboot_smoltcp::smoltcp::time::{Duration, Instant};
use sanboot_smoltcp::{
    socket_storage, sockets_needed, Appliance, Buffers, Event, IscsiBytes, IscsiConfig, IscsiParts,
    Scripts, Slots,
};

/// Lease slots (32 bytes each).
const LEASES: usize = 1024;
/// TFTP transfers at once.
const TRANSFERS: usize = 16;
/// Bytes queued per transfer socket: a window of 10 blocks of 1468.
const TX: usize = 16 * 1024;
/// iSCSI connections at once.
const CONNECTIONS: usize = 4;
/// Scratch per iSCSI command: 4 KiB holds every answer the SCSI layer
/// builds (REPORT SUPPORTED OPERATION CODES with command timeouts is the
/// longest), as host-linux has.
const SCRATCH: usize = 4096;
const SOCKETS: usize = sockets_needed(TRANSFERS, CONNECTIONS);

#[derive(Parser)]
#[command(
    name = "sanboot-smoltcp",
    version,
    about = "sanboot's appliance on smoltcp over a Linux TAP device"
)]
struct Cli {
    /// The TAP device (created if missing; needs CAP_NET_ADMIN).
    #[arg(long)]
    tap: String,
    /// The sanboot TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
    /// The appliance's own Ethernet address.
    #[arg(long, default_value = "02:00:00:5b:00:01")]
    mac: String,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn run(cli: Cli) -> Result<()> {
    let config = config::Config::load(&cli.config)?;
    for w in compiled_limits(&config) {
        println!("warning: {w}");
    }
    let mac = mac_arg(&cli.mac)?;
    let initiators = translate::initiators(&config)?;
    let dhcp_hosts = translate::dhcp_hosts(&config)?;
    let seed = unix_millis() ^ u64::from(std::process::id()).rotate_left(32);
    let mut dhcp = translate::dhcp_config(&config, &dhcp_hosts, seed);
    if let Some(d) = dhcp.as_mut() {
        // No HTTP server here: everything goes by TFTP.
        d.boot.http_server = None;
    }
    let script_hosts = translate::script_hosts(&config, &initiators)?;
    let (scsi, disks) = disks::open_all(&config)?;
    let scsi: &'static mut [sanboot_smoltcp::ScsiTarget] = scsi.leak();
    let station_initiators = translate::station_initiators(&config);
    let views = translate::TargetViews::new(&config, &station_initiators);
    let target_configs = views.configs();
    let port = config.iscsi.listen.port();
    let portal = config
        .iscsi
        .portal
        .clone()
        .unwrap_or_else(|| format!("{}:{port}", config.server.address));
    let nop = config.iscsi.target_limits();
    let iscsi = (!config.targets.is_empty()).then(|| IscsiConfig {
        port,
        targets: Targets {
            targets: &target_configs,
            portal: &portal,
            portal_group_tag: 1,
        },
        nop_in_interval_ms: nop.nop_in_interval_ms,
        nop_in_timeout_ms: nop.nop_in_timeout_ms,
    });
    let app_config = sanboot_smoltcp::Config {
        mac,
        address: config.server.address,
        prefix_len: translate::prefix_len(config.dhcp.netmask),
        gateway: config.dhcp.router,
        dhcp,
        pxe_port: config.dhcp.pxe_port,
        tftp: TransferConfig {
            max_blksize: config.tftp.max_blksize,
            ..TransferConfig::default()
        },
        scripts: Scripts {
            boot: &config.boot.script,
            root_path: config.boot.root_path.as_deref(),
            direct: config.boot.direct,
            hosts: &script_hosts,
        },
        random_seed: seed,
        iscsi,
    };
    let root = config::files::tftp_root(&config)?;
    let files = files::DirFiles { root };

    let mut device = TunTapInterface::new(&cli.tap, Medium::Ethernet)
        .with_context(|| format!("cannot open tap {}", cli.tap))?;
    let fd = device.as_raw_fd();
    let epoch = std::time::Instant::now();
    let now =
        || Instant::from_millis(i64::try_from(epoch.elapsed().as_millis()).unwrap_or(i64::MAX));

    // Leaked once: the appliance borrows its buffers for the process's life.
    let buffers: &'static mut Buffers<TRANSFERS, TX> = Box::leak(Box::default());
    let slots: &'static mut Slots<TRANSFERS> = Box::leak(Box::default());
    let sockets = Box::leak(Box::new(socket_storage::<SOCKETS>()));
    let iscsi_buffers: &'static mut [IscsiBytes; CONNECTIONS] =
        Box::leak(Box::new([const { IscsiBytes::new() }; CONNECTIONS]));
    let mut app: Box<
        Appliance<'_, files::DirFiles, disks::FileDisks, LEASES, TRANSFERS, CONNECTIONS, SCRATCH>,
    > = Box::new(
        Appliance::new(
            app_config,
            &mut device,
            now(),
            files,
            buffers,
            slots,
            &mut sockets[..],
            IscsiParts {
                buffers: iscsi_buffers,
                scsi,
                disks,
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot start: {e:?}"))?,
    );
    println!(
        "sanboot-smoltcp serving on {} as {} ({}), dhcp={:?}, tftp windowsize<={}",
        cli.tap,
        config.server.address,
        cli.mac,
        config.dhcp.mode,
        app.config().tftp.max_windowsize
    );
    let mut on_event = |e: Event<'_>| log_event(&e, &target_configs);
    loop {
        let t = now();
        app.poll(t, &mut device, &mut on_event);
        let delay = app
            .poll_at(t)
            .map(|at| if at > t { at - t } else { Duration::ZERO })
            .map(|d| d.min(Duration::from_millis(1000)));
        wait(fd, delay.or(Some(Duration::from_millis(1000)))).context("waiting for the tap")?;
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` for `--mac`.
fn mac_arg(s: &str) -> Result<[u8; 6]> {
    let mac = config::parse_mac(s)?;
    if mac.first().is_some_and(|b| b & 1 != 0) {
        anyhow::bail!("--mac {s}: a multicast address");
    }
    Ok(mac)
}

/// Config values this runner cannot follow: its capacities and ports are
/// compiled in, like a firmware's.
fn compiled_limits(config: &config::Config) -> Vec<String> {
    let mut w = Vec::new();
    if config.tftp.max_transfers != TRANSFERS {
        w.push(format!(
            "[tftp] max_transfers = {}: this runner has {TRANSFERS} transfer sockets",
            config.tftp.max_transfers
        ));
    }
    if config.tftp.listen.port() != 69 {
        w.push(format!(
            "[tftp] listen = {}: TFTP is on port 69",
            config.tftp.listen
        ));
    }
    if config.dhcp.port != 67 {
        w.push(format!(
            "[dhcp] port = {}: DHCP is on port 67",
            config.dhcp.port
        ));
    }
    if config.iscsi.max_sessions > CONNECTIONS {
        w.push(format!(
            "[iscsi] max_sessions = {}: this runner has {CONNECTIONS} iSCSI connections",
            config.iscsi.max_sessions
        ));
    }
    if let Some(listen) = config.http.listen {
        w.push(format!(
            "[http] listen = {listen}: this runner has no HTTP server; boot files and \
             scripts go by TFTP"
        ));
    }
    if config.dhcp.mode == config::DhcpMode::Full {
        w.push("leases are kept in memory only (not in [server] state_dir)".into());
    }
    w
}

fn mac_str(m: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = m;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn log_event(e: &Event<'_>, targets: &[TargetConfig<'_>]) {
    match *e {
        Event::DhcpReply(t) => {
            let proto = if t.proxy { "ProxyDHCP" } else { "DHCP" };
            let msg = match t.message {
                MessageType::Offer => "OFFER",
                MessageType::Ack => "ACK",
                MessageType::Nak => "NAK",
                _ => "reply",
            };
            let kind = match t.client {
                ClientKind::Ipxe => "iPXE".to_string(),
                ClientKind::Pxe { arch } => format!("PXE arch {arch}"),
                ClientKind::Http { arch } => format!("HTTP boot arch {arch}"),
                ClientKind::Plain => "no PXE".to_string(),
            };
            let how = if t.choice == Some(BootChoice::Host) {
                ", host override"
            } else {
                ""
            };
            println!(
                "mac={} {proto} {msg} {} file={} ({kind}{how}) to {}",
                mac_str(t.mac),
                t.yiaddr,
                t.file.unwrap_or("-"),
                t.dst
            );
        }
        Event::StationAddress { mac, ip } => {
            println!("DHCP: station {} takes {ip}", mac_str(mac))
        }
        Event::DhcpDropped => println!("DHCP reply dropped: socket buffer full"),
        // Replies are logged; requests only count as boot stages.
        Event::DhcpRequest(_) => {}
        Event::TftpRequest {
            path,
            peer,
            size,
            blksize,
            windowsize,
            ..
        } => println!(
            "TFTP RRQ {path} from {} size={size} blksize={blksize} windowsize={windowsize}",
            peer.addr
        ),
        Event::TftpRefused { path, peer, reason } => {
            println!("TFTP RRQ {path:?} from {} refused: {reason:?}", peer.addr)
        }
        Event::ScriptRefused {
            path,
            peer,
            mac,
            expected,
        } => match expected {
            Some(ip) => println!(
                "TFTP RRQ {path} from {} refused: the script of {} carries a CHAP secret and                  goes only to that station's address {ip}",
                peer.addr,
                mac_str(mac)
            ),
            None => println!(
                "TFTP RRQ {path} from {} refused: the script of {} carries a CHAP secret and                  that station has not done DHCP with sanboot yet",
                peer.addr,
                mac_str(mac)
            ),
        },
        Event::IscsiConnected { peer } => println!("iscsi connection from {peer}"),
        Event::IscsiLogin {
            peer,
            initiator,
            target,
        } => {
            // What the core made this initiator prove: its own
            // [host.chap] on this target, or the target's.
            let chap = target
                .and_then(|name| targets.iter().find(|t| t.name == name))
                .is_some_and(|t| t.chap_for(initiator).0.is_some());
            println!(
                "iscsi login from {peer}: initiator {initiator} target {} auth={}",
                target.unwrap_or("(discovery)"),
                if chap { "CHAP" } else { "None" }
            )
        }
        Event::IscsiClosed {
            peer,
            reason,
            idle_ms,
            pdus_in,
            pdus_out,
        } => println!(
            "iscsi session from {peer} ended: {reason} (last activity {:.1} s ago; {pdus_in} PDUs in, {pdus_out} out)",
            idle_ms as f64 / 1000.0
        ),
        Event::IscsiTakeover {
            peer,
            initiator,
            old_tsih,
            old_idle_ms,
        } => println!(
            "iscsi session limit reached: login from {peer} ({initiator}) takes over its session tsih={old_tsih}, silent for {:.1} s",
            old_idle_ms as f64 / 1000.0
        ),
        Event::TftpRepeated { peer } => println!("TFTP repeated RRQ from {peer} ignored"),
        Event::TftpDone {
            peer,
            outcome,
            acked,
            size,
            retransmitted,
        } => println!(
            "TFTP transfer to {} ended: {outcome:?}, {acked} of {size} bytes acked, {retransmitted} retransmitted",
            peer.addr
        ),
    }
}
