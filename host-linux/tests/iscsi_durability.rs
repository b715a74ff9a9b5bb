//! Durability: sanboot is killed with SIGKILL in the middle of a write
//! stream; every write acknowledged with FUA, or acknowledged before a
//! SYNCHRONIZE CACHE that was itself acknowledged, must be in the image.
//!
//! SIGKILL does not drop the page cache, so the image alone cannot tell a
//! synced write from a cached one. The test therefore also checks that
//! sanboot completed at least one `fdatasync` per acknowledged sync point:
//! `Disk::sync` logs "fdatasync done" after the syscall returned, and the
//! code sends a status only after `Disk::sync` returned (see
//! `host-linux/src/iscsi.rs`). When `strace` is installed the process also
//! runs under `strace -e trace=fdatasync` and the completed syscalls are
//! counted too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod iscsi_support;

use std::sync::mpsc;
use std::time::Duration;

use iscsi_support::initiator::Initiator;
use iscsi_support::{has_tool, Sanboot, IQN};

const IMAGE_SIZE: u64 = 16 << 20;
const WRITE_LEN: usize = 4096;
const WRITES: u32 = (IMAGE_SIZE / WRITE_LEN as u64) as u32;
/// Arm the killer after this many acknowledged writes.
const ARM_AFTER: u32 = 150;

fn targets() -> String {
    format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"disk.img\"\nsize = {IMAGE_SIZE}\n"
    )
}

/// The content of write `i`: its number in every sector, then a pattern.
fn pattern(i: u32) -> Vec<u8> {
    let mut v = vec![0u8; WRITE_LEN];
    for (s, sector) in v.chunks_mut(512).enumerate() {
        sector[..8].copy_from_slice(b"SANBOOT!");
        sector[8..12].copy_from_slice(&i.to_be_bytes());
        sector[12] = s as u8;
        for (j, b) in sector[13..].iter_mut().enumerate() {
            *b = (i as usize * 31 + j * 7 + s) as u8;
        }
    }
    v
}

#[derive(Debug, Default)]
struct Log {
    /// Writes (by number) that were acknowledged GOOD.
    acked: Vec<u32>,
    /// Writes that must be durable: FUA and acked, or acked before an acked flush.
    durable: Vec<u32>,
    /// Acknowledged sync points (FUA writes + SYNCHRONIZE CACHE).
    sync_points: u32,
    /// Writes acked since the last acked flush.
    pending: Vec<u32>,
    /// The error that ended the stream.
    ended_by: Option<String>,
}

#[test]
fn writes_acknowledged_after_flush_or_fua_survive_sigkill() {
    let strace = has_tool("strace");
    let mut sanboot = Sanboot::start_with(&targets(), strace, "info,sanboot::disk=trace");
    let image = sanboot.dir().join("disk.img");
    let pid = sanboot.pid();

    let mut ini = Initiator::login(sanboot.port, "iqn.2026-11.test.sanboot:durability", IQN, 0)
        .unwrap_or_else(|e| panic!("login: {e}; sanboot log:\n{}", sanboot.log()));
    ini.ready().unwrap();

    // The killer waits until the stream is well under way, then SIGKILLs
    // sanboot (by PID) a few milliseconds later, while writes are in flight.
    let (arm, armed) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if armed.recv().is_ok() {
            std::thread::sleep(Duration::from_millis(15));
            let st = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(st.success(), "kill -KILL {pid}");
        }
    });

    let mut log = Log::default();
    for i in 0..WRITES {
        let fua = i % 5 == 4;
        let lba = i * (WRITE_LEN as u32 / 512);
        match ini.write10(lba, &pattern(i), fua) {
            Ok(r) if r.status == 0 => {
                log.acked.push(i);
                if fua {
                    log.durable.push(i);
                    log.sync_points += 1;
                } else {
                    log.pending.push(i);
                }
            }
            Ok(r) => panic!(
                "write {i} failed: status {:#x} sense {:02x?}",
                r.status, r.sense
            ),
            Err(e) => {
                log.ended_by = Some(format!("write {i}: {e}"));
                break;
            }
        }
        if i % 16 == 15 {
            match ini.sync_cache() {
                Ok(r) if r.status == 0 => {
                    log.sync_points += 1;
                    log.durable.append(&mut log.pending);
                }
                Ok(r) => panic!("SYNCHRONIZE CACHE failed: status {:#x}", r.status),
                Err(e) => {
                    log.ended_by = Some(format!("sync after write {i}: {e}"));
                    break;
                }
            }
        }
        if log.acked.len() as u32 == ARM_AFTER {
            arm.send(()).unwrap();
        }
    }
    drop(arm);
    killer.join().unwrap();
    sanboot.reap();

    assert!(
        log.ended_by.is_some(),
        "the stream of {WRITES} writes finished before SIGKILL; the test proves nothing"
    );
    assert!(
        log.durable.len() >= ARM_AFTER as usize / 2,
        "too few durable writes before the kill: {log:?}"
    );
    eprintln!(
        "killed after {} acked writes ({} durable, {} sync points); stream ended by: {}",
        log.acked.len(),
        log.durable.len(),
        log.sync_points,
        log.ended_by.as_deref().unwrap_or("-")
    );

    // Every durable write is in the image, byte for byte.
    let disk = std::fs::read(&image).unwrap();
    let mut missing = Vec::new();
    for &i in &log.durable {
        let at = i as usize * WRITE_LEN;
        if disk[at..at + WRITE_LEN] != pattern(i)[..] {
            missing.push(i);
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged durable writes are missing from the image: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );

    // sanboot really completed fdatasync for each sync point: its own log
    // line after the syscall returned, and the syscall itself under strace.
    let logged = sanboot.log().matches("fdatasync done").count() as u32;
    assert!(
        logged >= log.sync_points,
        "{} sync points were acknowledged but sanboot logged only {logged} completed fdatasync calls",
        log.sync_points
    );
    if strace {
        let trace = std::fs::read_to_string(sanboot.strace_log()).unwrap();
        let syncs = trace
            .lines()
            .filter(|l| l.contains("fdatasync(") && l.trim_end().ends_with("= 0"))
            .count() as u32;
        assert!(
            syncs >= log.sync_points,
            "{} sync points were acknowledged but strace saw only {syncs} completed fdatasync calls",
            log.sync_points
        );
    } else {
        eprintln!("strace not installed: fdatasync counted from sanboot's log only");
    }

    // A restarted sanboot serves the same data.
    sanboot.restart();
    let mut ini = Initiator::login(sanboot.port, "iqn.2026-11.test.sanboot:durability", IQN, 0)
        .unwrap_or_else(|e| panic!("login after restart: {e}; log:\n{}", sanboot.log()));
    ini.ready().unwrap();
    for &i in log.durable.iter().step_by(7) {
        let r = ini
            .read10(i * (WRITE_LEN as u32 / 512), (WRITE_LEN / 512) as u16)
            .unwrap();
        assert_eq!(r.status, 0);
        assert!(
            r.data == pattern(i),
            "write {i} reads back differently after restart"
        );
    }
}
