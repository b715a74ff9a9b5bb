//! `cargo xtask <setup|ci|e2e|fuzz|demo|bench|firmware>`: every workflow is one command.

mod bench;
mod ci;
mod demo;
mod firmware;
mod fuzz;
mod linux_disk;
mod setup;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

  setup                               install what demo and ci need (Debian packages, rust targets)
  ci [--fuzz-seconds N] [--no-fuzz]   setup, then fmt, clippy, docs, embedded builds, all tests, short fuzz runs
  e2e [full|proxy|uefi|bios|chain|iscsi|smoltcp|firmware|peers]
                                      end-to-end QEMU tests (root); no name = all of them
  fuzz [TARGET] [--seconds N]         run fuzz targets (all when no TARGET), N seconds each
  demo [bios|uefi] [--timeout S]      setup, then a namespace lab: sanboot serves, a QEMU station boots, console shown
  bench <what> [args]                 benchmarks against peer software
  firmware                            build the firmware crates (firmware/) and print their sizes
  linux-disk                          build (cached) a Debian disk image with GRUB, kernel, open-iscsi initramfs";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            println!("{USAGE}");
            return Ok(());
        }
    };
    match cmd {
        "setup" => setup::run(rest),
        "ci" => ci::run(rest),
        "e2e" => ci::e2e(rest),
        "fuzz" => fuzz::run(rest),
        "demo" => demo::run(rest),
        "bench" => bench::run(rest),
        "firmware" => firmware::run(rest),
        "linux-disk" => linux_disk::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
