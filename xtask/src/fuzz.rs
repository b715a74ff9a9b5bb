//! `cargo xtask fuzz [TARGET] [--seconds N]`: builds the cargo-fuzz targets
//! in `fuzz/` and runs each for a bounded time.
//!
//! cargo-fuzz needs nightly-only flags (`-Zsanitizer`); `RUSTC_BOOTSTRAP=1`
//! lets the stable toolchain accept them, so CI needs no second toolchain.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{self, cargo};

const DEFAULT_SECONDS: u64 = 60;

/// The `[[bin]]` names declared in `fuzz/Cargo.toml`, in file order.
pub fn targets() -> Result<Vec<String>> {
    let path = util::root().join("fuzz").join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        if let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().trim_start_matches('=').trim();
            names.push(value.trim_matches('"').to_string());
        }
    }
    if names.is_empty() {
        bail!("{}: no [[bin]] targets", path.display());
    }
    Ok(names)
}

fn cargo_fuzz() -> Command {
    let mut cmd = cargo();
    cmd.arg("fuzz");
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// Installs cargo-fuzz when it is missing (`cargo install --locked`).
fn ensure_cargo_fuzz() -> Result<()> {
    let ok = cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        util::run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Builds every fuzz target (one cargo invocation).
pub fn build() -> Result<Duration> {
    let start = Instant::now();
    ensure_cargo_fuzz()?;
    util::run(cargo_fuzz().arg("build"))?;
    Ok(start.elapsed())
}

/// Runs one target for `seconds`; a crash fails with the artifact path in the output.
pub fn run_one(target: &str, seconds: u64) -> Result<Duration> {
    let corpus = util::root().join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut cmd = cargo_fuzz();
    cmd.args(["run", target]);
    cmd.arg(&corpus);
    // Hand-made inputs that reach deep states (fuzz/seeds/<target>, kept in
    // git unlike the corpus) are read as a second corpus.
    let seeds = util::root().join("fuzz").join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--");
    cmd.arg(format!("-max_total_time={seconds}"));
    // A single input slower than this is a hang worth failing on.
    cmd.arg("-timeout=10");
    cmd.arg("-print_final_stats=1");
    util::run(&mut cmd)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = match it.next().map(|s| s.parse()) {
                    Some(Ok(n)) => n,
                    _ => bail!("--seconds needs a number"),
                }
            }
            t if !t.starts_with('-') => chosen.push(t.to_string()),
            other => bail!("cargo xtask fuzz: unknown argument {other:?}"),
        }
    }
    let all = targets()?;
    for t in &chosen {
        if !all.contains(t) {
            bail!("unknown fuzz target {t:?}; targets: {}", all.join(" "));
        }
    }
    let list = if chosen.is_empty() { all } else { chosen };
    build()?;
    let mut failed = Vec::new();
    for t in &list {
        println!("==> fuzz {t} for {seconds} s");
        if let Err(e) = run_one(t, seconds) {
            println!("<== fuzz {t}: FAILED: {e:#}");
            failed.push(t.clone());
        }
    }
    println!(
        "{} passed, {} failed",
        list.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(" "));
    }
    Ok(())
}
