//! A file that fails on chosen blocks, for tests that need a real `EIO`
//! from `pread`/`pwrite` without device-mapper: a minimal FUSE file system
//! served from this process.
//!
//! [`FuseDisk::mount`] opens `/dev/fuse`, mounts a FUSE file system on a
//! temporary directory (root only: `mount(2)` itself, no `fusermount`) and
//! answers the kernel's requests on a background thread. The file system
//! holds one regular file, `disk.img`, whose bytes live in a `Vec`. Reads
//! that touch a block in the "bad read" set and writes that touch a block
//! in the "bad write" set answer `EIO`; `fsync` can be made to fail too;
//! reads of "slow" blocks are answered late (each from its own thread).
//! The sets change while the file system is mounted.
//!
//! The file is opened with `FOPEN_DIRECT_IO`: no page cache in between,
//! so every `pread`/`pwrite` of the program under test becomes one or more
//! FUSE READ/WRITE requests here, and an error is the return value of that
//! very call (a page cached before a block went bad cannot hide the error,
//! and a write error is not deferred to writeback).
//!
//! No unsafe code: `rustix` mounts and polls, `std::fs::File` reads and
//! writes the device. Dropping the [`FuseDisk`] detaches the mount and
//! stops the thread; the thread only ever blocks in a 100 ms `poll`, and
//! when it ends (also by a panic) the `/dev/fuse` descriptor closes, which
//! aborts the connection: a process still using the file then gets
//! `ENOTCONN` instead of hanging.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

/// The blocks the bad sets count in.
pub const BLOCK: u64 = 512;
/// The file's name in the mount.
pub const FILE_NAME: &str = "disk.img";

/// What the file system answered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// READ requests answered with data.
    pub reads: u64,
    /// WRITE requests that changed the file.
    pub writes: u64,
    /// READ requests answered `EIO`.
    pub failed_reads: u64,
    /// WRITE requests answered `EIO`.
    pub failed_writes: u64,
    /// FSYNC requests answered 0.
    pub fsyncs: u64,
    /// FSYNC requests answered `EIO`.
    pub failed_fsyncs: u64,
}

#[derive(Debug)]
struct State {
    data: Vec<u8>,
    bad_reads: BTreeSet<u64>,
    bad_writes: BTreeSet<u64>,
    fail_fsync: bool,
    /// Reads touching these blocks are answered after `slow_delay`, each
    /// from a thread of its own (others are served meanwhile).
    slow_reads: BTreeSet<u64>,
    slow_delay: std::time::Duration,
    stats: Stats,
}

/// A mounted FUSE file system with one file; unmounted when dropped.
#[derive(Debug)]
pub struct FuseDisk {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    mountpoint: PathBuf,
    // Last: removed after the unmount in `drop`.
    dir: tempfile::TempDir,
}

impl FuseDisk {
    /// Mounts a file system whose `disk.img` holds `contents` (its size
    /// never changes).
    pub fn mount(contents: Vec<u8>) -> io::Result<FuseDisk> {
        let dir = tempfile::tempdir()?;
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        // std opens with O_CLOEXEC: the program under test does not inherit
        // the device (only this process serves the file system). Non-blocking:
        // a request interrupted between poll and read is EAGAIN, not a wait.
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/fuse")?;
        // rootmode is octal S_IFDIR; user_id/group_id are who may use the
        // mount without `allow_other` (root: the tests and the program).
        let options = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        let options = CString::new(options).map_err(io::Error::other)?;
        mount(
            "sanboot-test-fuse",
            &mountpoint,
            "fuse",
            MountFlags::NOSUID | MountFlags::NODEV,
            options.as_c_str(),
        )?;
        let state = Arc::new(Mutex::new(State {
            data: contents,
            bad_reads: BTreeSet::new(),
            bad_writes: BTreeSet::new(),
            fail_fsync: false,
            slow_reads: BTreeSet::new(),
            slow_delay: std::time::Duration::ZERO,
            stats: Stats::default(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("fuse-disk".into())
            .spawn(move || serve(dev, &state2, &stop2))
            .inspect_err(|_| {
                let _ = unmount(&mountpoint, UnmountFlags::DETACH);
            })?;
        Ok(FuseDisk {
            state,
            stop,
            thread: Some(thread),
            mountpoint,
            dir,
        })
    }

    /// The file's path (inside the mount).
    pub fn path(&self) -> PathBuf {
        self.mountpoint.join(FILE_NAME)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// From now on, reads touching any of these blocks fail with `EIO`.
    pub fn set_bad_reads(&self, blocks: &[u64]) {
        self.state().bad_reads = blocks.iter().copied().collect();
    }

    /// From now on, writes touching any of these blocks fail with `EIO`
    /// (and change nothing).
    pub fn set_bad_writes(&self, blocks: &[u64]) {
        self.state().bad_writes = blocks.iter().copied().collect();
    }

    /// From now on, reads touching any of these blocks take `delay` (a
    /// slow or spun-down disk); other requests are answered meanwhile.
    pub fn set_slow_reads(&self, blocks: &[u64], delay: std::time::Duration) {
        let mut s = self.state();
        s.slow_reads = blocks.iter().copied().collect();
        s.slow_delay = delay;
    }

    /// From now on, `fsync`/`fdatasync` fail with `EIO` (or succeed again).
    pub fn set_fail_fsync(&self, fail: bool) {
        self.state().fail_fsync = fail;
    }

    /// `len` bytes of the file at `offset`, as the file system holds them.
    pub fn contents(&self, offset: u64, len: usize) -> Vec<u8> {
        let s = self.state();
        let start = offset as usize;
        s.data[start..start + len].to_vec()
    }

    /// What was answered so far.
    pub fn stats(&self) -> Stats {
        self.state().stats
    }
}

impl Drop for FuseDisk {
    fn drop(&mut self) {
        // Detach: the mount goes away now, the connection when its last
        // user closes the file. The thread stops within one poll tick
        // either way, and closing the device aborts what is left.
        let _ = unmount(&self.mountpoint, UnmountFlags::DETACH);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

// The kernel's FUSE ABI (include/uapi/linux/fuse.h), protocol 7.x.
const KERNEL_MAJOR: u32 = 7;
/// The newest minor whose structures this server writes (7.23 brought the
/// 64-byte `fuse_init_out`; nothing newer is used).
const MAX_MINOR: u32 = 38;
const ROOT_ID: u64 = 1;
const FILE_ID: u64 = 2;
const MAX_WRITE: u32 = 128 << 10;
/// A request is at most a header, `fuse_write_in` and `MAX_WRITE` bytes.
const BUF_LEN: usize = MAX_WRITE as usize + 4096;
const IN_HEADER: usize = 40;
const FOPEN_DIRECT_IO: u32 = 1 << 0;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FATTR_SIZE: u32 = 1 << 3;
const DT_REG: u32 = 8;

mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const ACCESS: u32 = 34;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
}

/// One request: `fuse_in_header` fields and the bytes after it.
struct Request<'a> {
    opcode: u32,
    unique: u64,
    nodeid: u64,
    arg: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// The serving loop: one request at a time until unmounted or stopped.
fn serve(dev: File, state: &Mutex<State>, stop: &AtomicBool) {
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    let mut buf = vec![0u8; BUF_LEN];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(&dev, PollFlags::IN)];
        match poll(&mut fds, Some(&tick)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let n = match (&dev).read(&mut buf) {
            Ok(n) => n,
            // ENOENT: the request was interrupted before we read it.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EINTR | libc::EAGAIN)
                ) =>
            {
                continue
            }
            // ENODEV: unmounted.
            Err(_) => return,
        };
        let msg = &buf[..n];
        let len = (u32_at(msg, 0) as usize).min(n);
        if len < IN_HEADER {
            continue;
        }
        let req = Request {
            opcode: u32_at(msg, 4),
            unique: u64_at(msg, 8),
            nodeid: u64_at(msg, 16),
            arg: &msg[IN_HEADER..len],
        };
        if req.opcode == op::DESTROY {
            let _ = (&dev).write(&reply(req.unique, Ok(&[])));
            return;
        }
        let delay = slow(&req, state);
        if let Some(out) = answer(&req, state) {
            // One write per reply; ENOENT means the request was interrupted.
            let bytes = reply(req.unique, out.as_deref().map_err(|&e| e));
            match (delay, dev.try_clone()) {
                (Some(d), Ok(dev)) => {
                    std::thread::spawn(move || {
                        std::thread::sleep(d);
                        let _ = (&dev).write(&bytes);
                    });
                }
                _ => {
                    let _ = (&dev).write(&bytes);
                }
            }
        }
    }
}

/// How long to hold back the answer to `req`: a read of a slow block.
fn slow(req: &Request<'_>, state: &Mutex<State>) -> Option<std::time::Duration> {
    let s = lock(state);
    let (offset, len) = (u64_at(req.arg, 8), u64::from(u32_at(req.arg, 16)));
    (req.opcode == op::READ && touches(&s.slow_reads, offset, offset.saturating_add(len)))
        .then_some(s.slow_delay)
}

/// `fuse_out_header` and the payload, or the header alone with `-errno`.
fn reply(unique: u64, out: Result<&[u8], i32>) -> Vec<u8> {
    let (error, payload) = match out {
        Ok(p) => (0i32, p),
        Err(errno) => (-errno, &[][..]),
    };
    let mut v = Vec::with_capacity(16 + payload.len());
    v.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
    v.extend_from_slice(&error.to_le_bytes());
    v.extend_from_slice(&unique.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// The answer to one request; `None` for those that take no reply.
fn answer(req: &Request<'_>, state: &Mutex<State>) -> Option<Result<Vec<u8>, i32>> {
    let a = req.arg;
    let mut s = lock(state);
    let size = s.data.len() as u64;
    let out = match req.opcode {
        op::FORGET | op::BATCH_FORGET | op::INTERRUPT => return None,
        op::INIT => Ok(init_out(a)),
        op::LOOKUP => {
            let name = a.split(|&b| b == 0).next().unwrap_or_default();
            if req.nodeid == ROOT_ID && name == FILE_NAME.as_bytes() {
                Ok(entry_out(FILE_ID, size))
            } else {
                Err(libc::ENOENT)
            }
        }
        op::GETATTR => attr_out(req.nodeid, size),
        // Modes and times are accepted and forgotten; the size is fixed.
        op::SETATTR => {
            if u32_at(a, 0) & FATTR_SIZE != 0 && u64_at(a, 16) != size {
                Err(libc::EPERM)
            } else {
                attr_out(req.nodeid, size)
            }
        }
        op::OPEN => Ok(open_out(FOPEN_DIRECT_IO)),
        op::OPENDIR => Ok(open_out(0)),
        op::READDIR => Ok(readdir(u64_at(a, 8), u32_at(a, 16))),
        op::READ => {
            // fuse_read_in: fh, offset, size, ...
            let (offset, len) = (u64_at(a, 8), u64::from(u32_at(a, 16)));
            let end = (offset.saturating_add(len)).min(size);
            if offset >= end {
                Ok(Vec::new())
            } else if touches(&s.bad_reads, offset, end) {
                s.stats.failed_reads += 1;
                Err(libc::EIO)
            } else {
                s.stats.reads += 1;
                Ok(s.data[offset as usize..end as usize].to_vec())
            }
        }
        op::WRITE => {
            // fuse_write_in (40 bytes: fh, offset, size, ...), then data.
            let offset = u64_at(a, 8);
            let data = a.get(40..40 + u32_at(a, 16) as usize).unwrap_or_default();
            let end = offset.saturating_add(data.len() as u64).min(size);
            if touches(&s.bad_writes, offset, end) {
                s.stats.failed_writes += 1;
                Err(libc::EIO)
            } else {
                let n = end.saturating_sub(offset) as usize;
                if n > 0 {
                    s.data[offset as usize..end as usize].copy_from_slice(&data[..n]);
                }
                s.stats.writes += 1;
                Ok(write_out(n as u32))
            }
        }
        op::FSYNC => {
            if s.fail_fsync {
                s.stats.failed_fsyncs += 1;
                Err(libc::EIO)
            } else {
                s.stats.fsyncs += 1;
                Ok(Vec::new())
            }
        }
        op::STATFS => Ok(statfs_out(size)),
        op::FLUSH | op::RELEASE | op::RELEASEDIR | op::ACCESS => Ok(Vec::new()),
        // Extended attributes, LSEEK, FALLOCATE, locks...: not implemented
        // (the kernel remembers ENOSYS and falls back or fails the call).
        _ => Err(libc::ENOSYS),
    };
    Some(out)
}

/// Whether `[start, end)` touches a block in `set`.
fn touches(set: &BTreeSet<u64>, start: u64, end: u64) -> bool {
    end > start
        && set
            .range(start / BLOCK..=(end - 1) / BLOCK)
            .next()
            .is_some()
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// `fuse_init_out` (64 bytes).
fn init_out(init_in: &[u8]) -> Vec<u8> {
    // fuse_init_in: major (7 on Linux), minor, max_readahead, flags, ...
    let (minor, readahead) = (u32_at(init_in, 4), u32_at(init_in, 8));
    let mut v = Vec::with_capacity(64);
    put32(&mut v, KERNEL_MAJOR);
    put32(&mut v, minor.min(MAX_MINOR));
    put32(&mut v, readahead);
    put32(&mut v, FUSE_BIG_WRITES); // flags
    v.extend_from_slice(&16u16.to_le_bytes()); // max_background
    v.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    put32(&mut v, MAX_WRITE);
    put32(&mut v, 1); // time_gran (ns)
    v.extend_from_slice(&0u16.to_le_bytes()); // max_pages (default)
    v.extend_from_slice(&0u16.to_le_bytes()); // map_alignment
    put32(&mut v, 0); // flags2
    v.resize(64, 0); // unused[7]
    v
}

/// `fuse_attr` (88 bytes) of the root directory or the file.
fn attr(node: u64, size: u64) -> Vec<u8> {
    let (mode, nlink, size) = if node == ROOT_ID {
        (libc::S_IFDIR | 0o755, 2, 0)
    } else {
        (libc::S_IFREG | 0o600, 1, size)
    };
    let mut v = Vec::with_capacity(88);
    for x in [node, size, size.div_ceil(512), 0, 0, 0] {
        put64(&mut v, x); // ino, size, blocks, atime, mtime, ctime
    }
    for x in [0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        put32(&mut v, x); // *timensec, mode, nlink, uid, gid, rdev, blksize, flags
    }
    v
}

/// `fuse_attr_out`: valid for 1 s, then the attributes.
fn attr_out(node: u64, size: u64) -> Result<Vec<u8>, i32> {
    if node != ROOT_ID && node != FILE_ID {
        return Err(libc::ENOENT);
    }
    let mut v = Vec::with_capacity(104);
    put64(&mut v, 1);
    put32(&mut v, 0);
    put32(&mut v, 0);
    v.extend_from_slice(&attr(node, size));
    Ok(v)
}

/// `fuse_entry_out`: node, generation, entry and attribute validity (1 s).
fn entry_out(node: u64, size: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    for x in [node, 1, 1, 1] {
        put64(&mut v, x);
    }
    put32(&mut v, 0);
    put32(&mut v, 0);
    v.extend_from_slice(&attr(node, size));
    v
}

/// `fuse_open_out`: handle 0 and the `FOPEN_*` flags.
fn open_out(flags: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    put64(&mut v, 0);
    put32(&mut v, flags);
    put32(&mut v, 0);
    v
}

/// `fuse_write_out`.
fn write_out(n: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    put32(&mut v, n);
    put32(&mut v, 0);
    v
}

/// `fuse_statfs_out` (80 bytes): the file's size, nothing free.
fn statfs_out(size: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(80);
    for x in [size / 4096, 0, 0, 2, 0] {
        put64(&mut v, x); // blocks, bfree, bavail, files, ffree
    }
    for x in [4096, 255, 4096, 0] {
        put32(&mut v, x); // bsize, namelen, frsize, padding
    }
    v.resize(80, 0); // spare[6]
    v
}

/// The root directory's one entry (`fuse_dirent`), at offset 0 only.
fn readdir(offset: u64, max: u32) -> Vec<u8> {
    let mut v = Vec::new();
    if offset == 0 {
        put64(&mut v, FILE_ID);
        put64(&mut v, 1); // the next entry's offset
        put32(&mut v, FILE_NAME.len() as u32);
        put32(&mut v, DT_REG);
        v.extend_from_slice(FILE_NAME.as_bytes());
        v.resize(v.len().div_ceil(8) * 8, 0);
    }
    if v.len() > max as usize {
        v.clear();
    }
    v
}
