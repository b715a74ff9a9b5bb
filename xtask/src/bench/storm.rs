//! `cargo xtask bench storm`: a boot storm on one golden image. N stations
//! (8, 32, 64) boot at once: N libiscsi sessions (`iscsi-load -m boot`:
//! 64 KiB reads in runs of 16 at random places, every 8th command a 4 KiB
//! write into the last sixteenth of the disk; QD 4), each logged in as its own station to its own target.
//! sanboot serves them from one 64 MiB golden image through a copy-on-write
//! overlay per station (`[[image]]` + N `[[host]] image`); tgt serves N full
//! copies of it (the way without overlays). Both on the loopback of a
//! namespace of our own (`sbb-storm`), one target process at a time.
//!
//! Per point: aggregate MB/s and IOPS of all sessions, the median and the
//! worst of the sessions' p99 latencies, the target's CPU % (utime + stime
//! over wall time; 100 % = one core) and its RSS at the end (and peak), and
//! the disk space the stations' disks take (overlays, or the copies).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use super::sys::{self, Netns, Proc, Sample, Table};
use super::Opts;

const NS: &str = "sbb-storm";
const GOLDEN_BYTES: usize = 64 << 20;
const TGT_PORT: u16 = 3260;
const SANBOOT_PORT: u16 = 3261;
const POINTS: [usize; 3] = [8, 32, 64];
const BS: u32 = 64 << 10;
const QD: u32 = 4;

#[derive(Debug, Default, Clone)]
struct Res {
    mbps: f64,
    iops: f64,
    p99_median_us: f64,
    p99_worst_us: f64,
    cpu_pct: f64,
    rss_mib: f64,
    hwm_mib: f64,
    disk_mib: f64,
    errors: String,
}

pub fn bench(opts: &Opts) -> Result<()> {
    let secs = opts.seconds.unwrap_or(10);
    let dir = sys::bench_dir()?;
    let load = super::iscsi::build_load(&dir)?;
    let sanboot = if opts.wants("sanboot") {
        Some(sys::sanboot_binary(opts.build)?)
    } else {
        None
    };
    let golden = make_golden(&dir)?;
    let report = sys::Report::create("storm")?;
    let net = Netns::lone(NS)?;
    report.add(&format!(
        "## Boot storm on one golden image ({})\n\n{} MiB golden image; N stations at once, each one libiscsi session \
         (`iscsi-load -m boot`: {} KiB reads in runs of 16 at random places, every 8th command a 4 KiB write into the last sixteenth of the disk, QD {QD}), \
         {secs} s. sanboot: one image + a copy-on-write overlay per station; tgt: N full copies. \
         Loopback of `{NS}`, unpinned; p99 = the sessions' p99 latencies (median / worst).\n{}\n",
        sys::timestamp(),
        GOLDEN_BYTES >> 20,
        BS >> 10,
        sys::machine_line()
    ))?;
    let mut table = Table::new(&[
        "N",
        "target",
        "MB/s",
        "IOPS",
        "p99 µs (median)",
        "p99 µs (worst)",
        "target CPU %",
        "RSS MiB (peak)",
        "station disks MiB",
        "errors",
    ]);
    let mut all = Vec::new();
    for n in POINTS {
        for name in ["tgt", "sanboot"] {
            if !opts.wants(name) {
                continue;
            }
            sys::check_stop()?;
            let work = sys::fresh_dir(&dir.join(format!("storm-{name}-{n}")))?;
            let r = match (name, &sanboot) {
                ("tgt", _) => point_tgt(&load, &work, &golden, n, secs),
                (_, Some(bin)) => point_sanboot(&load, bin, &work, &golden, n, secs),
                _ => continue,
            }
            .unwrap_or_else(|e| Res {
                errors: format!("{e:#}"),
                ..Res::default()
            });
            // The copies and overlays are large: gone after each point.
            let _ = fs::remove_dir_all(&work);
            eprintln!(
                "bench storm: N={n} {name}: {:.1} MB/s, p99 {:.0}/{:.0} µs, CPU {:.0} %, RSS {:.0} MiB, disks {:.0} MiB {}",
                r.mbps, r.p99_median_us, r.p99_worst_us, r.cpu_pct, r.rss_mib, r.disk_mib, r.errors
            );
            table.row(vec![
                n.to_string(),
                name.into(),
                sys::f(r.mbps, 1),
                sys::f(r.iops, 0),
                sys::f(r.p99_median_us, 0),
                sys::f(r.p99_worst_us, 0),
                sys::f(r.cpu_pct, 0),
                format!("{} ({})", sys::f(r.rss_mib, 0), sys::f(r.hwm_mib, 0)),
                sys::f(r.disk_mib, 0),
                r.errors.chars().take(160).collect(),
            ]);
            all.push((n, name, r));
        }
    }
    drop(net);
    let mut ratios = Table::new(&[
        "N",
        "sanboot/tgt MB/s",
        "tgt/sanboot p99 (median)",
        "disk tgt/sanboot",
    ]);
    for n in POINTS {
        let get = |w: &str| {
            all.iter()
                .find(|r| r.0 == n && r.1 == w && r.2.errors.is_empty())
                .map(|r| r.2.clone())
        };
        let (s, t) = (get("sanboot"), get("tgt"));
        ratios.row(vec![
            n.to_string(),
            sys::ratio(s.as_ref().map(|r| r.mbps), t.as_ref().map(|r| r.mbps)),
            sys::ratio(
                t.as_ref().map(|r| r.p99_median_us),
                s.as_ref().map(|r| r.p99_median_us),
            ),
            sys::ratio(
                t.as_ref().map(|r| r.disk_mib),
                s.as_ref().map(|r| r.disk_mib),
            ),
        ]);
    }
    report.add(&table.render())?;
    report.add(&ratios.render())?;
    eprintln!("bench storm: results in {}", report.path.display());
    Ok(())
}

/// The golden image: pseudo-random bytes (nothing sparse, nothing that
/// compresses), made once and kept in the bench directory.
fn make_golden(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("storm-golden.img");
    if fs::metadata(&path).is_ok_and(|m| m.len() == GOLDEN_BYTES as u64) {
        return Ok(path);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(GOLDEN_BYTES);
    while bytes.len() < GOLDEN_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(&path, bytes)?;
    Ok(path)
}

fn station_iqn(i: usize) -> String {
    format!("iqn.2026-12.dev.sanboot.bench:s{i}")
}

fn point_sanboot(
    load: &Path,
    bin: &Path,
    work: &Path,
    golden: &Path,
    n: usize,
    secs: u64,
) -> Result<Res> {
    let mut cfg = format!(
        "# generated by cargo xtask bench storm\n[server]\naddress = \"127.0.0.1\"\nstate_dir = \"{}\"\n\n\
         [dhcp]\nmode = \"off\"\n\n[tftp]\nlisten = \"127.0.0.1:69\"\n\n\
         [iscsi]\nlisten = \"127.0.0.1:{SANBOOT_PORT}\"\nmax_sessions = 64\nmax_connections = 200\n\
         max_connections_per_ip = 200\n\n[[image]]\nname = \"golden\"\nfile = \"{}\"\n\n",
        work.join("state").display(),
        golden.display()
    );
    for i in 0..n {
        cfg.push_str(&format!(
            "[[host]]\nmac = \"52:54:00:aa:00:{i:02x}\"\nhostname = \"s{i}\"\nimage = \"golden\"\n\
             initiator_iqn = \"{}\"\n\n",
            station_iqn(i)
        ));
    }
    let path = work.join("sanboot.toml");
    fs::write(&path, cfg)?;
    let mut c = sys::ns_command(NS, None, bin);
    c.arg("serve").arg("--config").arg(&path);
    c.env("SANBOOT_LOG", "warn");
    let mut proc = Proc::spawn("sanboot", c, &work.join("sanboot.log"))?;
    proc.wait_ready(Duration::from_secs(30), || {
        sys::listening(NS, true, SANBOOT_PORT)
    })?;
    let urls: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("iscsi://127.0.0.1:{SANBOOT_PORT}/iqn.2026-12.org.sanboot:golden:s{i}/0"),
                station_iqn(i),
            )
        })
        .collect();
    let mut r = storm(load, work, &mut proc, &urls, secs)?;
    r.disk_mib = used_mib(&work.join("state/overlays/golden"));
    Ok(r)
}

fn point_tgt(load: &Path, work: &Path, golden: &Path, n: usize, secs: u64) -> Result<Res> {
    for i in 0..n {
        fs::copy(golden, work.join(format!("s{i}.img")))?;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cp = 4900 + (nanos % 100) as u16;
    fs::create_dir_all("/var/run/tgtd")?;
    let mut c = sys::ns_command(NS, None, "tgtd");
    c.args([
        "-f",
        "-C",
        &cp.to_string(),
        "--iscsi",
        &format!("portal=127.0.0.1:{TGT_PORT}"),
    ]);
    let mut proc = Proc::spawn("tgtd", c, &work.join("tgtd.log"))?;
    proc.kill_first = true;
    let sock = PathBuf::from(format!("/var/run/tgtd/socket.{cp}"));
    let result = (|| {
        proc.wait_ready(Duration::from_secs(10), || sock.exists())?;
        let adm = |args: &[&str]| -> Result<()> {
            let mut c = sys::ns_command(NS, None, "tgtadm");
            c.args(["-C", &cp.to_string(), "--lld", "iscsi"]).args(args);
            sys::run(&mut c).map(|_| ())
        };
        let mut urls = Vec::new();
        for i in 0..n {
            let tid = (i + 1).to_string();
            let iqn = format!("iqn.2026-12.dev.sanboot.bench.tgt:s{i}");
            adm(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", &iqn])?;
            let img = work.join(format!("s{i}.img")).display().to_string();
            adm(&[
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                &tid,
                "--lun",
                "1",
                "-b",
                &img,
            ])?;
            adm(&[
                "--op", "bind", "--mode", "target", "--tid", &tid, "-I", "ALL",
            ])?;
            urls.push((
                format!("iscsi://127.0.0.1:{TGT_PORT}/{iqn}/1"),
                station_iqn(i),
            ));
        }
        proc.wait_ready(Duration::from_secs(10), || {
            sys::listening(NS, true, TGT_PORT)
        })?;
        let mut r = storm(load, work, &mut proc, &urls, secs)?;
        r.disk_mib = (0..n)
            .map(|i| used_mib(&work.join(format!("s{i}.img"))))
            .sum();
        Ok(r)
    })();
    proc.stop();
    let _ = fs::remove_file(&sock);
    let _ = fs::remove_file(format!("/var/run/tgtd/socket.{cp}.lock"));
    result
}

/// Runs one `iscsi-load -m boot` per (url, initiator) at once and sums them.
fn storm(
    load: &Path,
    work: &Path,
    target: &mut Proc,
    urls: &[(String, String)],
    secs: u64,
) -> Result<Res> {
    let before = Sample::take(Some(target.pid()));
    let mut loads = Vec::new();
    for (i, (url, ini)) in urls.iter().enumerate() {
        let mut c = sys::ns_command(NS, None, load);
        c.args([
            "-u",
            url,
            "-i",
            ini,
            "-m",
            "boot",
            "-b",
            &BS.to_string(),
            "-q",
            &QD.to_string(),
            "-t",
            &secs.to_string(),
        ]);
        let out = work.join(format!("load-{i}.out"));
        loads.push((Proc::spawn("iscsi-load", c, &out)?, out));
    }
    let mut r = Res::default();
    let mut p99s = Vec::new();
    let mut errors = Vec::new();
    for (mut p, out) in loads {
        let st = p.wait_exit(Duration::from_secs(secs + 90))?;
        let text = fs::read_to_string(&out)?;
        let Some(line) = text.lines().rev().find(|l| l.starts_with("ios=")) else {
            errors.push(format!(
                "iscsi-load ({st}): {}",
                text.trim().replace('\n', " | ")
            ));
            continue;
        };
        let num = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        r.mbps += num("mbps");
        r.iops += num("iops");
        p99s.push(num("lat_p99_us"));
        if num("errors") > 0.0 {
            errors.push(format!("{} errors", num("errors")));
        }
    }
    let after = Sample::take(Some(target.pid()));
    let d = after.since(&before);
    r.cpu_pct = d.proc_cpu_s / d.wall * 100.0;
    (r.rss_mib, r.hwm_mib) = rss_mib(target.pid());
    p99s.sort_by(|a, b| a.total_cmp(b));
    r.p99_median_us = p99s.get(p99s.len() / 2).copied().unwrap_or(f64::NAN);
    r.p99_worst_us = p99s.last().copied().unwrap_or(f64::NAN);
    if let Some(st) = target.exited() {
        errors.push(format!("target exited ({st}): {}", target.log_tail()));
    }
    if p99s.len() < urls.len() && errors.is_empty() {
        bail!("only {} of {} sessions reported", p99s.len(), urls.len());
    }
    r.errors = errors.join("; ");
    Ok(r)
}

/// VmRSS and VmHWM of a process, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Bytes allocated on disk under `path` (a file, or the files of a
/// directory tree), MiB.
fn used_mib(path: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path) -> u64 {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        }
    }
    walk(path) as f64 / 1048576.0
}
