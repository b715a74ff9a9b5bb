//! A slow disk stalls only the sessions that read it: each logged-in
//! session's loop runs on a thread of its own, so while more sessions than
//! sanboot has tokio workers wait on a slow `pread`, a login (handled on
//! the workers) and another target's session still answer at once.
//!
//! The slow LUN is a FUSE file (`fuse_disk`) whose chosen block takes a
//! second to read; the fast one is a plain image file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod fuse_disk;
mod iscsi_support;

use std::time::{Duration, Instant};

use fuse_disk::FuseDisk;
use iscsi_support::initiator::{Initiator, LoginOptions};
use iscsi_support::{Sanboot, IQN};

const SLOW_IQN: &str = "iqn.2026-12.test.sanboot:slow";
const SLOW_BLOCK: u32 = 100;
const DELAY: Duration = Duration::from_millis(1500);
/// What "at once" means here: far below `DELAY`, far above a loaded CI
/// machine's scheduling noise.
const PROMPT: Duration = Duration::from_millis(500);

#[test]
fn sessions_waiting_on_a_slow_disk_stall_nothing_else() {
    let disk = FuseDisk::mount(vec![0x6bu8; 4 << 20]).unwrap_or_else(|e| {
        panic!("cannot mount the test's FUSE file system (needs root and /dev/fuse): {e}")
    });
    let s = Sanboot::start(&format!(
        "[[target]]\niqn = \"{IQN}\"\n[[target.lun]]\nid = 0\nimage = \"fast.img\"\nsize = {}\n\
         [[target]]\niqn = \"{SLOW_IQN}\"\n[[target.lun]]\nid = 0\nimage = \"{}\"\n",
        4u64 << 20,
        disk.path().display()
    ));
    let mut fast = Initiator::login(s.port, "iqn.2026-12.test:fast", IQN, 0)
        .unwrap_or_else(|e| panic!("login fast: {e}\n{}", s.log()));
    fast.ready().unwrap();

    // More sessions than sanboot has tokio workers (one per CPU) read the
    // slow block at the same time.
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    let slow_sessions = 2 * cpus + 2;
    let mut slow: Vec<Initiator> = (0..slow_sessions)
        .map(|i| {
            let mut ini =
                Initiator::login(s.port, &format!("iqn.2026-12.test:slow{i}"), SLOW_IQN, 0)
                    .unwrap_or_else(|e| panic!("login slow{i}: {e}\n{}", s.log()));
            ini.ready().unwrap();
            ini
        })
        .collect();
    disk.set_slow_reads(&[u64::from(SLOW_BLOCK)], DELAY);
    let started = Instant::now();
    let readers: Vec<_> = slow
        .drain(..)
        .map(|mut ini| {
            std::thread::spawn(move || {
                let r = ini.read10(SLOW_BLOCK, 1).unwrap();
                (r, Instant::now())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    // Meanwhile: a new login (discovery: the login phase runs on the tokio
    // workers) and reads of the other target answer promptly.
    let t = Instant::now();
    let discovery = LoginOptions {
        discovery: true,
        ..LoginOptions::default()
    };
    Initiator::login_with(s.port, "iqn.2026-12.test:probe", "", 0, discovery)
        .unwrap_or_else(|e| panic!("discovery login: {e}\n{}", s.log()));
    let login = t.elapsed();
    let mut slowest_fast_read = Duration::ZERO;
    for lba in 0..8 {
        let t = Instant::now();
        assert_eq!(fast.read10(lba * 64, 64).unwrap().status, 0);
        slowest_fast_read = slowest_fast_read.max(t.elapsed());
    }
    let during = started.elapsed();
    eprintln!(
        "{slow_sessions} sessions on a {DELAY:?} read: login took {login:?}, \
         slowest of 8 fast reads {slowest_fast_read:?} (all done {during:?} after the slow reads began)"
    );
    assert!(
        login < PROMPT,
        "a login took {login:?} while sessions waited on a slow disk"
    );
    assert!(
        slowest_fast_read < PROMPT,
        "a read of another target took {slowest_fast_read:?} while sessions waited on a slow disk"
    );
    assert!(
        during < DELAY,
        "the checks must run while the slow reads are pending (took {during:?})"
    );

    // The slow reads themselves complete, with the data, after the delay.
    for r in readers {
        let (r, done) = r.join().unwrap();
        assert_eq!(r.status, 0, "{r:02x?}");
        assert_eq!(r.data, vec![0x6bu8; 512]);
        assert!(done.duration_since(started) >= DELAY - Duration::from_millis(100));
    }
}
