//! `sanboot image`: golden images and their stations from the command line.
//!
//! Every command works whether or not `sanboot serve` runs. The station's
//! lock file (`<host>.lock`) tells: a running `serve` holds the lock of
//! every station it serves. When the lock is free the command applies the
//! change to the files itself (holding the lock); when `serve` holds it, the
//! command leaves the request in `<host>.request` and waits for `serve` to
//! apply it (see `stations.rs` for when: snapshot and commit at once,
//! reset and rollback when the station next boots or is off).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sanboot_config::images::{self, ops, request::Request};
use sanboot_config::Config;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Images, their base versions, and each station's overlay (mode, version, space used).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Drop a station's overlay: it sees its image's current version again.
    Reset(StationArgs),
    /// Keep a named copy of a station's overlay (mode = "snapshot" stations).
    Snapshot {
        #[command(flatten)]
        station: StationArgs,
        name: String,
    },
    /// Put a station's named snapshot back (mode = "snapshot" stations).
    Rollback {
        #[command(flatten)]
        station: StationArgs,
        name: String,
    },
    /// Merge a station's disk into a new base version of its image; stations
    /// without an overlay (and volatile ones, at their next boot) move to it.
    Commit(StationArgs),
}

#[derive(clap::Args)]
pub struct StationArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// The station's hostname.
    host: String,
    /// Seconds to wait for a running `sanboot serve` to apply the change.
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

pub fn run(cmd: ImageCommand) -> Result<()> {
    let (args, req) = match cmd {
        ImageCommand::List { config } => return list(&Config::load(&config)?),
        ImageCommand::Reset(s) => (s, Request::Reset),
        ImageCommand::Snapshot { station, name } => (station, Request::Snapshot(name)),
        ImageCommand::Rollback { station, name } => (station, Request::Rollback(name)),
        ImageCommand::Commit(s) => (s, Request::Commit),
    };
    let config = Config::load(&args.config)?;
    let station = images::station(&config, &args.host)?;
    // Refused requests are refused here, not after a wait.
    Request::parse(&req.to_string())?;
    ops::precheck(&station, &req)?;
    let me = format!("sanboot image {req} (pid {})", std::process::id());
    match ops::lock_station(&station, &me)? {
        Some(_held) => {
            println!("{}", ops::apply(&station, &req, &images::with_view)?);
            Ok(())
        }
        None if ops::lock_holder(&station).starts_with("sanboot serve") => {
            hand_to_server(&station, &req, Duration::from_secs(args.wait))
        }
        None => bail!(
            "{}: busy: {} is held by {}; try again when it is done",
            station.hostname,
            station.lock_file().display(),
            ops::lock_holder(&station)
        ),
    }
}

/// `serve` holds the station: leave the request and wait for its result.
fn hand_to_server(station: &images::Station, req: &Request, wait: Duration) -> Result<()> {
    let request = station.request_file();
    if let Ok(pending) = std::fs::read_to_string(&request) {
        bail!(
            "{}: a request is already pending ({}); wait for it or remove {}",
            station.hostname,
            pending.trim(),
            request.display()
        );
    }
    let result = station.result_file();
    remove(&result)?;
    images::layout::write_atomic(&request, format!("{req}\n").as_bytes())?;
    let start = Instant::now();
    while start.elapsed() < wait {
        if !request.exists() {
            let text = std::fs::read_to_string(&result)
                .with_context(|| format!("sanboot serve left no {}", result.display()))?;
            return match text.strip_prefix("error: ") {
                Some(e) => bail!("sanboot serve: {}", e.trim()),
                None => {
                    print!("{text}");
                    Ok(())
                }
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{}: {req} is pending: the running sanboot serve applies it when the station next \
         boots, or at once if it has not been connected since serve started \
         (`sanboot image list` shows it)",
        station.hostname
    );
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn list(config: &Config) -> Result<()> {
    let infos = ops::list(config)?;
    if infos.is_empty() {
        println!("no [[image]] in this configuration");
    }
    for image in infos {
        println!("image {} ({})", image.name, image.file.display());
        for (n, path, used) in &image.versions {
            let mark = if *n == image.current {
                "  (current)"
            } else {
                ""
            };
            println!(
                "  version {n}: {} ({} used){mark}",
                path.display(),
                ops::human(*used)
            );
        }
        if image.stations.is_empty() {
            println!("  no stations");
            continue;
        }
        println!(
            "  {:<16} {:<11} {:>7} {:>11} {:>10}  snapshots, pending requests",
            "station", "mode", "version", "overlay", "snap space"
        );
        for s in &image.stations {
            let version = match &s.version {
                Ok(v) => v.to_string(),
                Err(_) => "?".into(),
            };
            let mode = match s.station.mode {
                sanboot_config::StationMode::Persistent => "persistent",
                sanboot_config::StationMode::Volatile => "volatile",
                sanboot_config::StationMode::Snapshot => "snapshot",
            };
            let mut extra = s.snapshots.join(", ");
            if let Some(p) = &s.pending {
                extra = format!("{extra} [pending: {p}]").trim().to_string();
            }
            println!(
                "  {:<16} {:<11} {:>7} {:>11} {:>10}  {}",
                s.station.hostname,
                mode,
                version,
                ops::human(s.overlay_used),
                ops::human(s.snapshots_used),
                extra
            );
            if let Err(e) = &s.version {
                println!("    {e}");
            }
        }
    }
    Ok(())
}
