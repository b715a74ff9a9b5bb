//! `sanboot`: the netboot + iSCSI appliance on Linux.
//!
//! Thin by design: sockets, files, config, CLI and logging live here; every
//! protocol decision is made by `sanboot-core`.

mod dhcp;
mod iscsi;
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
    /// Run the appliance: DHCP/ProxyDHCP, TFTP, iPXE scripts and the iSCSI target.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and report problems a boot would hit.
    Check {
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
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Script { config, mac } => print_script(config, &mac),
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
    let warnings = config::script::check_warnings(&config);
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        // Which service a finished (or panicked) task was, for the error.
        let names = std::collections::HashMap::from([
            (
                tasks.spawn(dhcp::run(config.clone(), stop_rx.clone())).id(),
                "dhcp",
            ),
            (
                tasks.spawn(tftp::run(config.clone(), stop_rx.clone())).id(),
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
        if let Some(listen) = config.web.listen {
            let web = tasks.spawn(status::web::run(status, listen, stop_rx.clone()));
            names.insert(web.id(), "web");
        }
        let name = |id| names.get(&id).copied().unwrap_or("a service");
        tracing::info!(config = %path.display(), "sanboot serving");

        let outcome = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
            Some(done) = tasks.join_next_with_id() => match done {
                Ok((id, Ok(()))) => Err(anyhow::anyhow!("{} stopped unexpectedly", name(id))),
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(anyhow::anyhow!("{}: {e}", name(e.id()))),
            },
        };
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
