//! Small helpers shared by the xtask commands.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory the workspace builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// `cargo` as the user invoked it (keeps the toolchain), run at the root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Renders a command line for logs.
pub fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; `Ok(duration)` when it exits 0.
pub fn run(cmd: &mut Command) -> Result<Duration> {
    println!("$ {}", show(cmd));
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(start.elapsed())
}

/// Builds the `sanboot` binary (debug) and returns its path, so e2e tests
/// and the demo run exactly what is in the tree.
pub fn build_sanboot() -> Result<PathBuf> {
    run(cargo().args(["build", "-p", "sanboot-linux", "--bin", "sanboot"]))?;
    let bin = target_dir().join("debug").join("sanboot");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}
