//! The test disk a station boots: our MBR (`tests/assets/mbr.asm`) at LBA 0
//! and a text line at LBA 1, 2, 8 and the last LBA, which the MBR reads back
//! through INT 13h and prints. For UEFI, partition 1 (type 0xEF) holds a FAT
//! file system with `\EFI\BOOT\BOOTX64.EFI` (`tests/assets/efiapp.asm`),
//! and the MBR code stays: one hybrid BIOS/UEFI disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const SECTOR: u64 = 512;
/// First sector of the EFI system partition.
const ESP_START: u64 = 2048;

/// A built disk image and what its boot code will print.
#[derive(Debug, Clone)]
pub struct TestDisk {
    /// The sparse image file.
    pub path: PathBuf,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
}

impl TestDisk {
    /// The lines the MBR prints from the disk, in order, before `SANBOOT-OK`.
    pub fn expected_lines(&self) -> Vec<String> {
        vec![
            line_at(1),
            line_at(8),
            line_at(self.sectors - 1),
            line_at(2),
        ]
    }
}

fn line_at(lba: u64) -> String {
    match lba {
        1 => "e2e-disk: LBA 1, first of 8 sectors read by INT 13h AH=42h".into(),
        8 => "e2e-disk: LBA 8, last of the 8-sector read".into(),
        2 => "e2e-disk: LBA 2, read by INT 13h AH=02h at CHS 0/0/3".into(),
        n => format!("e2e-disk: LBA {n} ({n:#x}), the last sector"),
    }
}

/// Runs `nasm -f bin` on `tests/assets/<asm>`, writing `out`.
pub fn assemble(asm: &str, out: &Path) -> Result<Vec<u8>> {
    let src = crate::workspace_root()
        .join("tests")
        .join("assets")
        .join(asm);
    let status = Command::new("nasm")
        .args(["-f", "bin", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .context("cannot run nasm")?;
    if !status.success() {
        bail!("nasm {} failed", src.display());
    }
    std::fs::read(out).with_context(|| format!("cannot read {}", out.display()))
}

/// Builds a `size_mib` MiB sparse disk in `dir` (16 MiB or more: iPXE's
/// BIOS INT 13h geometry needs at least one 255x63 cylinder); with `uefi`
/// it also gets the EFI system partition.
pub fn build(dir: &Path, size_mib: u64, uefi: bool) -> Result<TestDisk> {
    crate::require(&["nasm"])?;
    let sectors = size_mib * 1024 * 1024 / SECTOR;
    let mbr = assemble("mbr.asm", &dir.join("mbr.bin"))?;
    if mbr.len() != 512 || mbr.get(510..) != Some(&[0x55, 0xaa][..]) {
        bail!("mbr.asm did not assemble to a 512-byte boot sector");
    }
    let path = dir.join("disk.img");
    let mut f = File::create(&path)?;
    f.set_len(sectors * SECTOR)?;
    f.write_all(&mbr)?;
    for lba in [1, 2, 8, sectors - 1] {
        f.seek(SeekFrom::Start(lba * SECTOR))?;
        f.write_all(format!("{}\0", line_at(lba)).as_bytes())?;
    }
    drop(f);
    if uefi {
        add_esp(dir, &path, sectors)?;
    }
    Ok(TestDisk { path, sectors })
}

/// Partition 1: FAT from LBA 2048 up to (not including) the last sector,
/// whose text line must survive.
fn add_esp(dir: &Path, disk: &Path, sectors: u64) -> Result<()> {
    crate::require(&["mkfs.vfat", "mmd", "mcopy"])?;
    let count = sectors - ESP_START - 2;
    let efi = dir.join("BOOTX64.EFI");
    assemble("efiapp.asm", &efi)?;
    let esp = dir.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    let kib = (count * SECTOR / 1024).to_string();
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "E2EESP"])
        .arg(&esp)
        .arg(&kib))?;
    let image = format!("{}", esp.display());
    run(Command::new("mmd").args(["-i", &image, "::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .args(["-i", &image])
        .arg(&efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;

    let mut fat = Vec::new();
    File::open(&esp)?.read_to_end(&mut fat)?;
    let mut f = OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(ESP_START * SECTOR))?;
    f.write_all(&fat)?;
    // The partition entry: CHS values computed for iPXE's 255x63 geometry.
    let (c, rest) = (ESP_START / (255 * 63), ESP_START % (255 * 63));
    let (h, s) = (rest / 63, rest % 63 + 1);
    let mut entry = vec![
        0,
        h as u8,
        (((c >> 2) & 0xc0) as u8) | s as u8,
        (c & 0xff) as u8,
        0xef,
        0xfe,
        0xff,
        0xff,
    ];
    entry.extend_from_slice(&(ESP_START as u32).to_le_bytes());
    entry.extend_from_slice(&(count as u32).to_le_bytes());
    f.seek(SeekFrom::Start(446))?;
    f.write_all(&entry)?;
    let _ = std::fs::remove_file(&esp);
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
