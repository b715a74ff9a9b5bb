//! Reloading the configuration while serving: SIGHUP, or `sanboot reload`
//! through a unix socket in `state_dir` (which also carries the answer back).
//!
//! A reload reads and validates the file again, then applies it all or not
//! at all:
//! 1. keys that need a restart (`[server]`, `[tftp]`, `[iscsi]`, and the
//!    `[dhcp]` mode and ports: sockets and tables sized at start) must be
//!    unchanged, else the reload is refused;
//! 2. the iSCSI service opens the images of new targets and checks the kept
//!    ones (`iscsi/reload.rs`), without changing anything yet;
//! 3. the DHCP service rebuilds its server with the new hosts, pool and
//!    options, keeping every bound lease (it refuses if that fails);
//! 4. the iSCSI generation is swapped (infallible; sessions of removed
//!    targets close) and scripts and TFTP virtual files come from the new
//!    configuration from the next request on.
//!
//! A refused reload is logged at error level and the running configuration
//! stays. The services register here at start; the registry is process-wide
//! because there is one server per process, and it keeps the services'
//! signatures (which other features extend) unchanged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::stations::Stations;
use crate::config::Config;
use crate::iscsi;

/// The control socket's name in `state_dir`.
pub const SOCKET: &str = "sanboot.sock";

/// Stack of the thread that opens new targets.
const PREPARE_STACK: usize = 64 << 20;

/// A reload request to the DHCP thread: the new configuration, and where to
/// say whether it took it.
pub type DhcpReload = (Arc<Config>, oneshot::Sender<Result<()>>);

struct Live {
    path: PathBuf,
    current: RwLock<Arc<Config>>,
    iscsi: Mutex<Option<Weak<iscsi::Shared>>>,
    dhcp: Mutex<Option<mpsc::UnboundedSender<DhcpReload>>>,
    /// Who may read which secret-carrying script (follows the hosts).
    stations: Mutex<Option<Arc<Stations>>>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

/// Called once by `serve` before the services start.
pub fn init(path: &Path, config: Arc<Config>) {
    let _ = LIVE.set(Live {
        path: path.to_path_buf(),
        current: RwLock::new(config),
        iscsi: Mutex::new(None),
        dhcp: Mutex::new(None),
        stations: Mutex::new(None),
        busy: tokio::sync::Mutex::new(()),
    });
}

/// The configuration in effect, `None` before [`init`] (unit tests).
pub fn current() -> Option<Arc<Config>> {
    let live = LIVE.get()?;
    Some(
        live.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
}

pub(crate) fn register_iscsi(shared: &Arc<iscsi::Shared>) {
    if let Some(live) = LIVE.get() {
        *live.iscsi.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(shared));
    }
}

/// The script access table, updated with each reloaded host list.
pub fn register_stations(stations: &Arc<Stations>) {
    if let Some(live) = LIVE.get() {
        *live.stations.lock().unwrap_or_else(|e| e.into_inner()) = Some(stations.clone());
    }
}

/// The DHCP service's reload channel (`None` before [`init`]).
pub fn register_dhcp() -> Option<mpsc::UnboundedReceiver<DhcpReload>> {
    let live = LIVE.get()?;
    let (tx, rx) = mpsc::unbounded_channel();
    *live.dhcp.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    Some(rx)
}

/// The sections a reload cannot change, as `Debug` text (every field
/// counts; the config crate need not derive `PartialEq` for this).
fn restart_keys(c: &Config) -> [(&'static str, String); 6] {
    [
        ("[server]", format!("{:?}", c.server)),
        ("[tftp]", format!("{:?}", c.tftp)),
        ("[iscsi]", format!("{:?}", c.iscsi)),
        ("[dhcp] mode", format!("{:?}", c.dhcp.mode)),
        ("[dhcp] port", format!("{:?}", c.dhcp.port)),
        ("[dhcp] pxe_port", format!("{:?}", c.dhcp.pxe_port)),
    ]
}

fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    restart_keys(old)
        .into_iter()
        .zip(restart_keys(new))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0)
        .collect()
}

/// Re-reads the file and applies it (see the module doc). `Ok` carries a
/// one-line summary; `Err` says why the running configuration was kept.
pub async fn reload() -> Result<String> {
    let live = LIVE.get().context("not serving")?;
    let _one = live.busy.lock().await;
    let result = apply(live).await;
    match &result {
        Ok(summary) => {
            tracing::info!(config = %live.path.display(), "configuration reloaded: {summary}")
        }
        Err(e) => tracing::error!(
            config = %live.path.display(),
            "configuration reload REFUSED, the running configuration stays: {e:#}"
        ),
    }
    result
}

async fn apply(live: &Live) -> Result<String> {
    let path = live.path.clone();
    let new = tokio::task::spawn_blocking(move || Config::load(&path)).await??;
    let old = live
        .current
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // What `sanboot check` would warn about: a reload is an edit just made.
    for w in crate::config::script::check_warnings(&new) {
        tracing::warn!("reloaded configuration: {w}");
    }
    let restart = needs_restart(&old, &new);
    if !restart.is_empty() {
        bail!(
            "{} changed: these need a restart (systemctl restart sanboot)",
            restart.join(", ")
        );
    }
    // iSCSI: open new targets (blocking file work), change nothing yet.
    let shared = live
        .iscsi
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(Weak::upgrade);
    let prepared = match &shared {
        Some(shared) => {
            let (s, n) = (shared.clone(), new.clone());
            let (tx, rx) = oneshot::channel();
            // A target's SCSI state is large (LUNs x nexus slots x
            // registrations) and built by value: a thread with room for it,
            // as the iSCSI service has at start.
            std::thread::Builder::new()
                .name("reload".into())
                .stack_size(PREPARE_STACK)
                .spawn(move || {
                    let _ = tx.send(iscsi::reload::prepare(&s, &n));
                })
                .context("cannot start the reload thread")?;
            Some(rx.await.context("reload thread died")??)
        }
        None => None,
    };
    let new = match &prepared {
        Some(p) => p.config().clone(),
        None => Arc::new(new),
    };
    // DHCP: rebuilt now, or refused (then nothing changed).
    let dhcp = live.dhcp.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(tx) = dhcp {
        let (reply, answer) = oneshot::channel();
        if tx.send((new.clone(), reply)).is_ok() {
            answer.await.context("the DHCP service stopped")??;
        }
    }
    let mut summary = format!("{} hosts", new.hosts.len());
    if let (Some(shared), Some(p)) = (shared, prepared) {
        summary = format!("{summary}, {}", p.summary);
        iscsi::reload::commit(&shared, p);
    }
    if let Some(stations) = live
        .stations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        stations.update(&new);
    }
    *live.current.write().unwrap_or_else(|e| e.into_inner()) = new;
    Ok(summary)
}

/// Serves `sanboot reload` on `<state_dir>/sanboot.sock` until the task is
/// dropped. One line in (`reload`), one line out (`ok …` or `error …`).
pub async fn control_socket(state_dir: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state_dir {}", state_dir.display()))?;
    let path = state_dir.join(SOCKET);
    // A stale socket from a killed run; a live server on the same state_dir
    // would have its DHCP lease file fought over anyway.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    // Only root (the owner) may reload.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = control(stream).await {
                tracing::debug!("control socket: {e}");
            }
        });
    }
}

async fn control(stream: UnixStream) -> Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd).take(256).read_line(&mut line).await?;
    let answer = match line.trim() {
        "reload" => match reload().await {
            Ok(s) => format!("ok {s}\n"),
            Err(e) => format!("error {}\n", format!("{e:#}").replace('\n', " ")),
        },
        other => format!("error unknown command {other:?}\n"),
    };
    wr.write_all(answer.as_bytes()).await?;
    Ok(())
}

/// Where the server keeps its control socket: `[server] state_dir` of the
/// file, found even when the rest of it is broken (the server must be the
/// one to refuse, and log it). Relative to the file's directory, as in
/// `Config::load`; `state` when the file does not say.
fn state_dir(config_path: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config file {}", config_path.display()))?;
    let from_toml = text.parse::<toml::Table>().ok().map(|t| {
        t.get("server")
            .and_then(|s| s.get("state_dir"))
            .and_then(|d| d.as_str())
            .map(str::to_string)
    });
    // Unparsable: the first `state_dir = "…"` line.
    let dir = from_toml.unwrap_or_else(|| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "state_dir").then(|| v.trim().trim_matches('"').to_string())
        })
    });
    let dir = PathBuf::from(dir.unwrap_or_else(|| "state".into()));
    Ok(match config_path.parent() {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir,
    })
}

/// `sanboot reload`: asks the server using this configuration's `state_dir`
/// to reload, and returns its answer.
pub fn client(config_path: &Path) -> Result<String> {
    use std::io::{BufRead, Write};
    let path = state_dir(config_path)?.join(SOCKET);
    let mut s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the running server at {} (is `sanboot serve` running with this config?)",
            path.display()
        )
    })?;
    // A reload opens images and rebuilds the lease table: seconds at most.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    s.write_all(b"reload\n")?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer)?;
    let answer = answer.trim_end();
    match answer.strip_prefix("ok ") {
        Some(summary) => Ok(summary.to_string()),
        None => bail!(
            "reload refused, the server keeps its running configuration: {}",
            answer.strip_prefix("error ").unwrap_or(answer)
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn state_dir_is_found_in_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[server]\nstate_dir = \"st\"\n").unwrap();
        assert_eq!(state_dir(&path).unwrap(), dir.path().join("st"));
        std::fs::write(&path, "[server]\nstate_dir = \"/var/x\"\n[[host]\n").unwrap();
        assert_eq!(state_dir(&path).unwrap(), PathBuf::from("/var/x"));
        std::fs::write(&path, "[[host]\n").unwrap();
        assert_eq!(state_dir(&path).unwrap(), dir.path().join("state"));
    }

    #[test]
    fn restart_keys_are_named() {
        let base = "[server]\naddress = \"127.0.0.1\"\n[dhcp]\nmode = \"off\"\n";
        let a = parse(base);
        let hosts = parse(&format!("{base}[[host]]\nmac = \"52:54:00:00:00:01\"\n"));
        assert!(needs_restart(&a, &hosts).is_empty());
        let moved = parse(
            "[server]\naddress = \"127.0.0.1\"\n[dhcp]\nmode = \"off\"\n\
             [iscsi]\nlisten = \"127.0.0.1:3261\"\n",
        );
        assert_eq!(needs_restart(&a, &moved), vec!["[iscsi]"]);
        let addr = parse("[server]\naddress = \"127.0.0.2\"\n[dhcp]\nmode = \"off\"\n");
        assert_eq!(needs_restart(&a, &addr), vec!["[server]"]);
    }
}
