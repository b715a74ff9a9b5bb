//! `cargo xtask <ci|e2e|bench|fuzz|firmware|demo>`: every workflow is one command.

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        _ => bail!("usage: cargo xtask <ci|e2e|bench|fuzz|firmware|demo>"),
    }
}

fn ci() -> Result<()> {
    bail!("being written")
}
