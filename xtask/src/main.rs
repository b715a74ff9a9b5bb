//! `cargo xtask <ci|e2e|bench|fuzz|firmware|demo>`: every workflow is one command.

use anyhow::{bail, Result};

mod bench;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        _ => bail!("usage: cargo xtask <ci|e2e|bench|fuzz|firmware|demo>"),
    }
}

fn ci() -> Result<()> {
    bail!("being written")
}
