//! `sanboot`: the netboot + iSCSI appliance on Linux.
//!
//! Thin by design: sockets, files, config, CLI and logging live here; every
//! protocol decision is made by `sanboot-core`.

mod dhcp;
mod http_boot;
mod image_cmd;
mod iscsi;
mod reload;
mod sd_notify;
mod stations;
mod status;
mod tftp;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sanboot_config as config;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "sanboot",
    version,
    about = "Network boot and iSCSI disks for diskless machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance: DHCP/ProxyDHCP, TFTP (and HTTP), iPXE scripts and the iSCSI target.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and report problems a boot would hit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask the running server (same config file) to reload it; non-zero exit
    /// and the reason when it refuses (it then keeps its running config).
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show each station's boot stage, asking the running server (`[web] listen`).
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the iPXE script a machine with this MAC would get.
    Script {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        mac: String,
    },
    /// Golden images: list stations, reset, snapshot, rollback, commit.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Reload { config } => reload::client(&config).map(|s| println!("reloaded: {s}")),
        Command::Script { config, mac } => print_script(config, &mac),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Status { config } => status::cli::run(&config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sanboot: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANBOOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal, not in journald or a log file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn check(path: PathBuf) -> Result<()> {
    let config = config::Config::load(&path)?;
    let mut warnings = config::script::check_warnings(&config);
    warnings.extend(config::exposure::file_mode_warning(&config, &path));
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: ok ({} hosts, {} targets, {} warnings)",
        path.display(),
        config.hosts.len(),
        config.targets.len(),
        warnings.len()
    );
    Ok(())
}

fn print_script(path: PathBuf, mac: &str) -> Result<()> {
    let config = config::Config::load(&path)?;
    let mac = config::parse_mac(mac).with_context(|| format!("--mac {mac}"))?;
    print!("{}", config::script::render_for_mac(&config, mac)?);
    Ok(())
}

fn serve(path: PathBuf) -> Result<()> {
    let config = Arc::new(config::Config::load(&path)?);
    reload::init(&path, config.clone());
    let status = status::init(config.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives once we say "serving" must
        // reach us, not the default action (death without a flush).
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let state_dir = config.server.state_dir.clone();
        let control = tokio::spawn(async move {
            if let Err(e) = reload::control_socket(state_dir).await {
                tracing::error!("control socket: {e:#}; `sanboot reload` cannot reach this server (SIGHUP still reloads)");
            }
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        // Who may read which secret-carrying script: DHCP records, TFTP asks.
        let stations = Arc::new(config::stations::Stations::new(&config));
        reload::register_stations(&stations);
        let mut tasks = tokio::task::JoinSet::new();
        // Which service a finished (or panicked) task was, for the error.
        let names = std::collections::HashMap::from([
            (
                tasks
                    .spawn(dhcp::run(config.clone(), stations.clone(), stop_rx.clone()))
                    .id(),
                "dhcp",
            ),
            (
                tasks
                    .spawn(tftp::run(config.clone(), stations.clone(), stop_rx.clone()))
                    .id(),
                "tftp",
            ),
            (
                tasks
                    .spawn(iscsi::run(config.clone(), stop_rx.clone()))
                    .id(),
                "iscsi",
            ),
        ]);
        let mut names = names;
        if config.http.listen.is_some() {
            let id = tasks
                .spawn(http_boot::run(
                    config.clone(),
                    stations.clone(),
                    stop_rx.clone(),
                ))
                .id();
            names.insert(id, "http");
        }
        if let Some(listen) = config.web.listen {
            let web = tasks.spawn(status::web::run(status, listen, stop_rx.clone()));
            names.insert(web.id(), "web");
        }
        let name = |id| names.get(&id).copied().unwrap_or("a service");
        tracing::info!(config = %path.display(), "sanboot serving");
        sd_notify::notify("READY=1");

        let outcome = loop {
            break tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // Logs its own outcome; the loop keeps taking signals.
                    tokio::spawn(reload::reload());
                    continue;
                }
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
                Some(done) = tasks.join_next_with_id() => match done {
                    Ok((id, Ok(()))) => Err(anyhow::anyhow!("{} stopped unexpectedly", name(id))),
                    Ok((_, Err(e))) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("{}: {e}", name(e.id()))),
                },
            };
        };
        sd_notify::notify("STOPPING=1");
        control.abort();
        let _ = std::fs::remove_file(config.server.state_dir.join(reload::SOCKET));
        let _ = stop_tx.send(true);
        // Services finish their in-flight work (lease file, disk flushes) on stop.
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => tracing::warn!("{} while stopping: {e:#}", name(id)),
                Err(e) => tracing::warn!("{} while stopping: {e}", name(e.id())),
            }
        }
        if outcome.is_ok() {
            tracing::info!("sanboot stopped");
        }
        outcome
    })
}
