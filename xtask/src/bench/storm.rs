//! The boot storm: N stations boot at once from one golden image.
//!
//! Each station is one libiscsi session (`iscsi-load -m replay`, QD 8) that
//! replays, once, the disk I/O of a real boot: `boot_trace.txt`, the SCSI
//! READs and WRITEs a Debian 12 station made from power-on to its login
//! prompt in the `linux_station` e2e test (GRUB through iPXE's INT 13h,
//! then the kernel's initiator), taken from that test's capture (see the
//! trace's header). N = 8, 32 and 64 stations, against three servers, one
//! after the other on the loopback of namespace `sbb-storm`:
//!
//! - **sanboot overlay**: one golden image, a copy-on-write overlay per
//!   station (`[[target.lun]] base = ...`), what issue 9 is about;
//! - **sanboot copies**: a full copy of the image per station;
//! - **tgt copies**: tgtd with the same full copies.
//!
//! The golden image holds the trace's blocks (pseudo-random bytes, the
//! rest sparse), so N copies cost N × the boot set, not N × the disk.
//! Reported per round: aggregate MB/s (bytes of all stations / time until
//! the last station finished), the stations' boot I/O time (median and
//! max), p99 latency (median and max over stations), the server's CPU
//! seconds and peak RSS.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::sys::{self, Netns, Proc, Table};
use super::Opts;

const NS: &str = "sbb-storm";
const PORT: u16 = 3260;
const IQN_PREFIX: &str = "iqn.2026-12.dev.sanboot.storm";
const TRACE: &str = include_str!("boot_trace.txt");
const BLOCK: u64 = 512;
const QD: u32 = 8;
/// Station counts; 64 is sanboot's session limit (the nexus table).
const ROUNDS: [usize; 3] = [8, 32, 64];
/// No round may take longer than this (a station that hangs is an error).
const ROUND_LIMIT_SECS: u64 = 300;

/// One command of the trace.
struct Cmd {
    write: bool,
    lba: u64,
    blocks: u64,
}

fn parse_trace() -> Result<Vec<Cmd>> {
    let mut out = Vec::new();
    for (i, line) in TRACE.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.split_whitespace();
        let (Some(op), Some(lba), Some(blocks)) = (w.next(), w.next(), w.next()) else {
            bail!("boot_trace.txt:{}: expected `R|W <lba> <blocks>`", i + 1);
        };
        out.push(Cmd {
            write: op == "W",
            lba: lba.parse().context("lba")?,
            blocks: blocks.parse().context("blocks")?,
        });
    }
    ensure!(!out.is_empty(), "boot_trace.txt has no commands");
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Overlay,
    Copies,
    Tgt,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Overlay => "sanboot overlay",
            Server::Copies => "sanboot copies",
            Server::Tgt => "tgt copies",
        }
    }
}

#[derive(Default, Clone)]
struct Round {
    mbps: f64,
    wall_s: f64,
    boot_median_s: f64,
    boot_max_s: f64,
    p99_median_us: f64,
    p99_max_us: f64,
    cpu_s: f64,
    rss_mib: f64,
    error: Option<String>,
}

pub fn bench(opts: &Opts) -> Result<()> {
    let trace = parse_trace()?;
    let reads: u64 = trace.iter().filter(|c| !c.write).map(|c| c.blocks).sum();
    let writes: u64 = trace.iter().filter(|c| c.write).map(|c| c.blocks).sum();
    let dir = sys::bench_dir()?;
    let load = super::iscsi::build_load(&dir)?;
    let sanboot = if opts.wants("overlay") || opts.wants("copies") {
        Some(sys::sanboot_binary(opts.build)?)
    } else {
        None
    };
    let work = sys::fresh_dir(&dir.join("storm-run"))?;
    let trace_file = work.join("boot.trace");
    // The load generator reads commands only: no comment lines.
    let cmds: String = trace
        .iter()
        .map(|c| {
            format!(
                "{} {} {}\n",
                if c.write { 'W' } else { 'R' },
                c.lba,
                c.blocks
            )
        })
        .collect();
    fs::write(&trace_file, cmds)?;
    let golden = work.join("golden.img");
    let disk_bytes = golden_image(&golden, &trace)?;
    let report = sys::Report::create("storm")?;
    report.add(&format!(
        "## Boot storm ({})\n\nN stations boot at once: each one libiscsi session replaying a recorded Debian 12 boot \
         ({} commands: {:.1} MB read, {:.1} MB written, QD {QD}) against its own disk; golden image {:.0} MiB \
         (boot set only). Servers on 127.0.0.1 in `{NS}`, one at a time.\n{}\n",
        sys::timestamp(),
        trace.len(),
        (reads * BLOCK) as f64 / 1e6,
        (writes * BLOCK) as f64 / 1e6,
        disk_bytes as f64 / (1 << 20) as f64,
        sys::machine_line()
    ))?;
    let mut servers = Vec::new();
    if sanboot.is_some() && opts.wants("overlay") {
        servers.push(Server::Overlay);
    }
    if sanboot.is_some() && opts.wants("copies") {
        servers.push(Server::Copies);
    }
    if opts.wants("tgt") {
        servers.push(Server::Tgt);
    }
    let net = Netns::lone(NS)?;
    let mut table = Table::new(&[
        "stations",
        "server",
        "MB/s (all)",
        "wall s",
        "boot I/O s median",
        "boot I/O s max",
        "p99 µs median",
        "p99 µs max",
        "server CPU-s",
        "server RSS MiB",
        "note",
    ]);
    let mut results: Vec<(usize, Server, Round)> = Vec::new();
    for n in ROUNDS {
        for &s in &servers {
            sys::check_stop()?;
            let r = round(&load, sanboot.as_deref(), &work, &golden, &trace_file, s, n)
                .unwrap_or_else(|e| Round {
                    error: Some(format!("{e:#}")),
                    ..Round::default()
                });
            eprintln!(
                "bench storm: {n} stations, {}: {:.1} MB/s, boot I/O max {:.2} s, RSS {:.1} MiB {}",
                s.label(),
                r.mbps,
                r.boot_max_s,
                r.rss_mib,
                r.error.as_deref().unwrap_or("")
            );
            table.row(vec![
                n.to_string(),
                s.label().into(),
                sys::f(r.mbps, 1),
                sys::f(r.wall_s, 2),
                sys::f(r.boot_median_s, 2),
                sys::f(r.boot_max_s, 2),
                sys::f(r.p99_median_us, 0),
                sys::f(r.p99_max_us, 0),
                sys::f(r.cpu_s, 2),
                sys::f(r.rss_mib, 1),
                r.error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            ]);
            results.push((n, s, r));
        }
    }
    drop(net);
    let mut ratios = Table::new(&[
        "stations",
        "overlay / copies MB/s (goal ≥ 0.90)",
        "sanboot overlay / tgt copies MB/s",
    ]);
    for n in ROUNDS {
        let get = |s: Server| {
            results
                .iter()
                .find(|r| r.0 == n && r.1 == s && r.2.error.is_none())
                .map(|r| r.2.mbps)
        };
        ratios.row(vec![
            n.to_string(),
            sys::ratio(get(Server::Overlay), get(Server::Copies)),
            sys::ratio(get(Server::Overlay), get(Server::Tgt)),
        ]);
    }
    report.add(&table.render())?;
    report.add(&ratios.render())?;
    eprintln!("bench storm: results in {}", report.path.display());
    Ok(())
}

/// Writes the golden image: the trace's blocks filled with pseudo-random
/// bytes, everything else a hole. Returns its size.
fn golden_image(path: &Path, trace: &[Cmd]) -> Result<u64> {
    let end = trace.iter().map(|c| c.lba + c.blocks).max().unwrap_or(0) * BLOCK;
    // Round up to 1 MiB; at least 64 MiB so the LUN looks like a disk.
    let size = end.div_ceil(1 << 20).max(64) << 20;
    let mut f = fs::File::create(path)?;
    f.set_len(size)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for c in trace.iter().filter(|c| !c.write) {
        let mut buf = vec![0u8; (c.blocks * BLOCK) as usize];
        for chunk in buf.chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let b = rng.to_le_bytes();
            chunk.copy_from_slice(b.get(..chunk.len()).unwrap_or_default());
        }
        f.seek(SeekFrom::Start(c.lba * BLOCK))?;
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    Ok(size)
}

fn iqn(i: usize) -> String {
    format!("{IQN_PREFIX}:station{i}")
}

/// One server, `n` stations: start the server on fresh disks, run every
/// station at once, stop the server.
fn round(
    load: &Path,
    sanboot: Option<&Path>,
    work: &Path,
    golden: &Path,
    trace: &Path,
    s: Server,
    n: usize,
) -> Result<Round> {
    let dir = sys::fresh_dir(&work.join(format!("{n}-{}", s.label().replace(' ', "-"))))?;
    let disks: Vec<PathBuf> = (0..n)
        .map(|i| {
            dir.join(if s == Server::Overlay {
                format!("station{i}.ovl")
            } else {
                format!("station{i}.img")
            })
        })
        .collect();
    if s != Server::Overlay {
        for d in &disks {
            sys::run(Command::new("cp").arg("--sparse=always").arg(golden).arg(d))?;
        }
    }
    let (mut proc, control, lun) = match s {
        Server::Tgt => {
            let (p, cp) = start_tgt(&dir, &disks)?;
            (p, Some(cp), 1)
        }
        _ => {
            let bin = sanboot.context("no sanboot binary")?;
            (start_sanboot(bin, &dir, golden, &disks, s)?, None, 0)
        }
    };
    let result = stations(load, &dir, trace, proc.pid(), n, lun);
    proc.stop();
    if let Some(cp) = control {
        let _ = fs::remove_file(format!("/var/run/tgtd/socket.{cp}"));
        let _ = fs::remove_file(format!("/var/run/tgtd/socket.{cp}.lock"));
    }
    // The copies are many; keep the disk free for the next round.
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Starts `n` replaying stations at once and waits for all of them.
fn stations(
    load: &Path,
    dir: &Path,
    trace: &Path,
    server: u32,
    n: usize,
    lun: u32,
) -> Result<Round> {
    let cpu0 = sys::proc_cpu_secs(server);
    let t0 = Instant::now();
    let mut procs = Vec::new();
    for i in 0..n {
        let mut c = sys::ns_command(NS, None, load);
        c.args([
            "-u",
            &format!("iscsi://127.0.0.1:{PORT}/{}/{lun}", iqn(i)),
            "-m",
            "replay",
            "-f",
            &trace.display().to_string(),
            "-q",
            &QD.to_string(),
            "-t",
            &ROUND_LIMIT_SECS.to_string(),
            "-i",
            &format!("{IQN_PREFIX}:initiator{i}"),
        ]);
        let out = dir.join(format!("station{i}.out"));
        procs.push((Proc::spawn("iscsi-load", c, &out)?, out));
    }
    let mut bytes = 0.0;
    let mut boot = Vec::new();
    let mut p99 = Vec::new();
    let mut errors = Vec::new();
    for (i, (p, out)) in procs.iter_mut().enumerate() {
        let st = p.wait_exit(Duration::from_secs(ROUND_LIMIT_SECS + 60))?;
        let text = fs::read_to_string(&*out)?;
        let line = text.lines().rev().find(|l| l.starts_with("ios="));
        let num = |k: &str| {
            line.and_then(|l| super::iscsi::load_field(l, k))
                .unwrap_or(f64::NAN)
        };
        if !st.success() || line.is_none() || num("unreplayed") != 0.0 {
            errors.push(format!(
                "station {i} ({st}): {}",
                text.trim().replace('\n', " | ")
            ));
            continue;
        }
        bytes += num("bytes");
        boot.push(num("secs"));
        p99.push(num("lat_p99_us"));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = sys::proc_cpu_secs(server) - cpu0;
    let rss = peak_rss_mib(server);
    boot.sort_by(f64::total_cmp);
    p99.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    Ok(Round {
        mbps: bytes / 1e6 / wall,
        wall_s: wall,
        boot_median_s: median(&boot),
        boot_max_s: max(&boot),
        p99_median_us: median(&p99),
        p99_max_us: max(&p99),
        cpu_s: cpu,
        rss_mib: rss,
        error: (!errors.is_empty()).then(|| {
            let first: Vec<&str> = errors.iter().take(3).map(String::as_str).collect();
            format!("{} stations failed: {}", errors.len(), first.join("; "))
        }),
    })
}

/// VmHWM of `pid`: the most memory it ever had resident.
fn peak_rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn start_sanboot(
    bin: &Path,
    dir: &Path,
    golden: &Path,
    disks: &[PathBuf],
    s: Server,
) -> Result<Proc> {
    let n = disks.len();
    let mut cfg = format!(
        "# generated by cargo xtask bench storm\n[server]\naddress = \"127.0.0.1\"\nstate_dir = \"{}\"\n\n\
         [dhcp]\nmode = \"off\"\n\n[tftp]\nlisten = \"127.0.0.1:69\"\n\n\
         [iscsi]\nlisten = \"127.0.0.1:{PORT}\"\nmax_sessions = {n}\nmax_connections = {}\nmax_connections_per_ip = {}\n",
        dir.join("state").display(),
        n + 32,
        n + 32,
    );
    for (i, d) in disks.iter().enumerate() {
        cfg.push_str(&format!(
            "\n[[target]]\niqn = \"{}\"\n\n[[target.lun]]\nid = 0\n",
            iqn(i)
        ));
        if s == Server::Overlay {
            cfg.push_str(&format!("base = \"{}\"\n", golden.display()));
        }
        cfg.push_str(&format!("image = \"{}\"\n", d.display()));
    }
    let path = dir.join("sanboot.toml");
    fs::write(&path, cfg)?;
    let mut c = sys::ns_command(NS, None, bin);
    c.arg("serve").arg("--config").arg(&path);
    c.env("SANBOOT_LOG", "warn");
    let mut p = Proc::spawn("sanboot", c, &dir.join("sanboot.log"))?;
    p.wait_ready(Duration::from_secs(30), || sys::listening(NS, true, PORT))?;
    Ok(p)
}

fn start_tgt(dir: &Path, disks: &[PathBuf]) -> Result<(Proc, u16)> {
    let luns: Vec<(String, PathBuf)> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| (iqn(i), d.clone()))
        .collect();
    super::iscsi::start_tgtd(NS, PORT, dir, &luns)
}
