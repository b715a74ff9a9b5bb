//! `cargo xtask firmware`: builds the firmware crates (`firmware/`, not
//! workspace members) in release and prints their sizes, Berkeley style
//! (text = allocated read-only sections, data = allocated writable ones
//! with contents, bss = allocated without contents), read from the ELF
//! section headers so no target-specific `size` tool is needed.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::util;

/// Each firmware crate, its target, and what it is.
const FIRMWARE: &[(&str, &str, &str)] = &[
    (
        "virt-aarch64",
        "aarch64-unknown-none",
        "QEMU -M virt, virtio-net, 4 TFTP transfers, 2 iSCSI connections (RAM disk loaded by QEMU, not counted)",
    ),
    (
        "probe-thumbv7em",
        "thumbv7em-none-eabihf",
        "Cortex-M4F size probe, 2 TFTP transfers, 1 iSCSI connection, 32 KiB RAM disk in bss",
    ),
];

/// Text, data and bss of an ELF file (32- or 64-bit, little-endian).
pub fn elf_sizes(bytes: &[u8]) -> Result<(u64, u64, u64)> {
    let rd = |off: usize, n: usize| -> Result<u64> {
        let b = bytes.get(off..off + n).context("ELF file truncated")?;
        let mut v = 0u64;
        for (i, x) in b.iter().enumerate() {
            v |= u64::from(*x) << (8 * i);
        }
        Ok(v)
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(5) != Some(&1) {
        bail!("not a little-endian ELF file");
    }
    let wide = bytes.get(4) == Some(&2);
    let (shoff, shentsize, shnum) = if wide {
        (rd(0x28, 8)?, rd(0x3a, 2)?, rd(0x3c, 2)?)
    } else {
        (rd(0x20, 4)?, rd(0x2e, 2)?, rd(0x30, 2)?)
    };
    let (mut text, mut data, mut bss) = (0, 0, 0);
    for i in 0..shnum {
        let h = usize::try_from(shoff + i * shentsize)?;
        let kind = rd(h + 4, 4)?;
        let (flags, size) = if wide {
            (rd(h + 8, 8)?, rd(h + 0x20, 8)?)
        } else {
            (rd(h + 8, 4)?, rd(h + 0x14, 4)?)
        };
        const WRITE: u64 = 1;
        const ALLOC: u64 = 2;
        const NOBITS: u64 = 8;
        if flags & ALLOC == 0 {
            continue;
        }
        if kind == NOBITS {
            bss += size;
        } else if flags & WRITE != 0 {
            data += size;
        } else {
            text += size;
        }
    }
    Ok((text, data, bss))
}

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask firmware");
    }
    let dir = util::root().join("firmware");
    let mut rows = Vec::new();
    for (krate, target, what) in FIRMWARE {
        let mut cmd = util::cargo();
        cmd.current_dir(dir.join(krate))
            .args(["build", "--release"])
            .env_remove("CARGO_TARGET_DIR");
        util::run(&mut cmd).with_context(|| {
            format!("building firmware/{krate} (needs `rustup target add {target}`)")
        })?;
        let elf = dir
            .join("target")
            .join(target)
            .join("release")
            .join(format!("sanboot-{krate}"));
        let bytes =
            std::fs::read(&elf).with_context(|| format!("cannot read {}", elf.display()))?;
        let (text, data, bss) = elf_sizes(&bytes)?;
        rows.push((elf, text, data, bss, *what));
    }
    println!(
        "\n{:>9} {:>9} {:>9} {:>10} {:>10}  file",
        "text", "data", "bss", "flash", "ram"
    );
    for (elf, text, data, bss, what) in &rows {
        println!(
            "{text:>9} {data:>9} {bss:>9} {:>10} {:>10}  {}",
            text + data,
            data + bss,
            rel(elf)
        );
        println!("{:>52}  ({what})", "");
    }
    Ok(())
}

fn rel(p: &Path) -> String {
    p.strip_prefix(util::root())
        .unwrap_or(p)
        .display()
        .to_string()
}
