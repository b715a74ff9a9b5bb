//! iSCSI target throughput: sanboot's target against tgt (tgtd), both on the
//! loopback of a namespace of our own (`sbb-isc`), each with a 1 GiB sparse
//! LUN file. The load generator is our own libiscsi program
//! (`iscsi_load.c`, compiled with `cc` here): Debian's fio lacks the libiscsi
//! engine and no fio source can be fetched on this machine; `iscsi-perf`
//! only reads. Workloads alternate between the targets so that both see the
//! same background load.
//!
//! Target CPU-s/GB = (utime + stime of the target process, all threads) / GB moved.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::sys::{self, Netns, Proc, Sample, Table};
use super::Opts;

const NS: &str = "sbb-isc";
const LUN_BYTES: u64 = 1 << 30;
const TGT_PORT: u16 = 3260;
const SANBOOT_PORT: u16 = 3261;
const TGT_IQN: &str = "iqn.2026-11.dev.sanboot.bench:tgt";
const SANBOOT_IQN: &str = "iqn.2026-11.dev.sanboot.bench:sanboot";
const LOAD_SRC: &str = include_str!("iscsi_load.c");

/// (label, mode, request bytes, queue depth)
const WORKLOADS: [(&str, &str, u32, u32); 4] = [
    ("seq write 1M QD16", "write", 1 << 20, 16),
    ("seq read 1M QD16", "read", 1 << 20, 16),
    ("rand write 4k QD32", "randwrite", 4096, 32),
    ("rand read 4k QD32", "randread", 4096, 32),
];

#[derive(Debug)]
struct Target {
    name: &'static str,
    url: String,
    proc: Proc,
    /// tgtd's control port (its socket file is removed at the end).
    control: Option<u16>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.proc.stop();
        if let Some(cp) = self.control {
            let _ = fs::remove_file(format!("/var/run/tgtd/socket.{cp}"));
            let _ = fs::remove_file(format!("/var/run/tgtd/socket.{cp}.lock"));
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Res {
    mbps: f64,
    iops: f64,
    lat_avg_us: f64,
    lat_p99_us: f64,
    cpu_s_per_gb: f64,
    cpu_pct: f64,
    initiator_cpu_pct: f64,
    psi_pct: f64,
    error: Option<String>,
}

pub fn bench(opts: &Opts) -> Result<()> {
    let secs = opts.seconds.unwrap_or(10);
    let dir = sys::bench_dir()?;
    let load = build_load(&dir)?;
    let sanboot = if opts.wants("sanboot") {
        Some(sys::sanboot_binary(opts.build)?)
    } else {
        None
    };
    let work = sys::fresh_dir(&dir.join("iscsi-run"))?;
    let report = sys::Report::create("iscsi")?;
    let net = Netns::lone(NS)?;
    report.add(&format!(
        "## iSCSI target throughput ({})\n\nboth targets on 127.0.0.1 in `{NS}` (tgt :{TGT_PORT}, sanboot :{SANBOOT_PORT}), 1 GiB sparse LUN file each, \
         no digests, unpinned; load = our libiscsi initiator (one session, READ16/WRITE16, QD kept full), {secs} s per workload, \
         workloads alternate between targets.\n{}\n",
        sys::timestamp(),
        sys::machine_line()
    ))?;

    let mut targets: Vec<Target> = Vec::new();
    let mut failed: Vec<(&str, String)> = Vec::new();
    if opts.wants("tgt") {
        match start_tgt(&work) {
            Ok(t) => targets.push(t),
            Err(e) => failed.push(("tgt", format!("{e:#}"))),
        }
    }
    if let Some(bin) = &sanboot {
        match start_sanboot(bin, &work) {
            Ok(t) => targets.push(t),
            Err(e) => failed.push(("sanboot", format!("{e:#}"))),
        }
    }

    let mut detail = Table::new(&[
        "workload",
        "target",
        "MB/s",
        "IOPS",
        "lat avg µs",
        "lat p99 µs",
        "target CPU-s/GB",
        "target CPU %",
        "initiator CPU %",
        "PSI %",
        "note",
    ]);
    let mut all: Vec<(&str, &str, Res)> = Vec::new();
    for (label, mode, bs, qd) in WORKLOADS {
        for t in targets.iter_mut() {
            sys::check_stop()?;
            let r = if let Some(st) = t.proc.exited() {
                Res {
                    error: Some(format!("target exited ({st}): {}", t.proc.log_tail())),
                    ..Res::default()
                }
            } else {
                workload(&load, &work, t, mode, bs, qd, secs).unwrap_or_else(|e| Res {
                    error: Some(format!("{e:#}")),
                    ..Res::default()
                })
            };
            eprintln!(
                "bench iscsi: {} {label}: {:.1} MB/s {:.0} IOPS, {:.3} CPU-s/GB {}",
                t.name,
                r.mbps,
                r.iops,
                r.cpu_s_per_gb,
                r.error.as_deref().unwrap_or("")
            );
            detail.row(vec![
                label.into(),
                t.name.into(),
                sys::f(r.mbps, 1),
                sys::f(r.iops, 0),
                sys::f(r.lat_avg_us, 0),
                sys::f(r.lat_p99_us, 0),
                sys::f(r.cpu_s_per_gb, 3),
                sys::f(r.cpu_pct, 0),
                sys::f(r.initiator_cpu_pct, 0),
                sys::f(r.psi_pct, 1),
                r.error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            ]);
            all.push((label, t.name, r));
        }
        for (name, e) in &failed {
            detail.row(vec![
                label.into(),
                (*name).into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                e.chars().take(200).collect(),
            ]);
        }
    }
    drop(targets);
    drop(net);

    let mut ratios = Table::new(&[
        "workload",
        "sanboot/tgt MB/s",
        "sanboot/tgt IOPS",
        "tgt/sanboot CPU-s/GB (efficiency)",
    ]);
    for (label, ..) in WORKLOADS {
        let get = |n: &str| {
            all.iter()
                .find(|r| r.0 == label && r.1 == n && r.2.error.is_none())
                .map(|r| r.2.clone())
        };
        let (s, t) = (get("sanboot"), get("tgt"));
        ratios.row(vec![
            label.into(),
            sys::ratio(s.as_ref().map(|r| r.mbps), t.as_ref().map(|r| r.mbps)),
            sys::ratio(s.as_ref().map(|r| r.iops), t.as_ref().map(|r| r.iops)),
            sys::ratio(
                t.as_ref().map(|r| r.cpu_s_per_gb),
                s.as_ref().map(|r| r.cpu_s_per_gb),
            ),
        ]);
    }
    report.add(&detail.render())?;
    report.add(&ratios.render())?;
    report.add("goal (issue 7): sanboot ≥ 2.5× tgt on each workload, in the same run\n")?;
    eprintln!("bench iscsi: results in {}", report.path.display());
    Ok(())
}

/// The number after `key=` in iscsi-load's result line
/// (`ios=… bytes=… mbps=…`).
pub(super) fn load_field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse::<f64>().ok())
}

/// Compiles the load generator when its source changed.
pub(super) fn build_load(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("iscsi-load.c");
    let bin = dir.join("iscsi-load");
    let same = fs::read_to_string(&src).is_ok_and(|s| s == LOAD_SRC);
    if same && bin.exists() {
        return Ok(bin);
    }
    fs::write(&src, LOAD_SRC)?;
    sys::run(
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg("-liscsi"),
    )
    .context("compiling iscsi-load (needs cc and libiscsi-dev)")?;
    Ok(bin)
}

fn sparse_file(p: &Path) -> Result<()> {
    let f = fs::File::create(p)?;
    f.set_len(LUN_BYTES)?;
    Ok(())
}

fn start_tgt(work: &Path) -> Result<Target> {
    let img = work.join("tgt.img");
    sparse_file(&img)?;
    let (proc, cp) = start_tgtd(NS, TGT_PORT, work, &[(TGT_IQN.to_string(), img)])?;
    Ok(Target {
        name: "tgt",
        url: format!("iscsi://127.0.0.1:{TGT_PORT}/{TGT_IQN}/1"),
        proc,
        control: Some(cp),
    })
}

/// tgtd on 127.0.0.1:`port` in namespace `ns`, with one target per
/// `(iqn, image)` (the image as LUN 1), open to every initiator. Returns
/// the process and its control port (socket `/var/run/tgtd/socket.N`,
/// which the caller removes when done).
pub(super) fn start_tgtd(
    ns: &str,
    port: u16,
    dir: &Path,
    disks: &[(String, PathBuf)],
) -> Result<(Proc, u16)> {
    // A control port of our own: other tgtd instances on this host use theirs.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let cp = 4900 + (nanos % 200) as u16;
    fs::create_dir_all("/var/run/tgtd")?;
    let mut c = sys::ns_command(ns, None, "tgtd");
    c.args([
        "-f",
        "-C",
        &cp.to_string(),
        "--iscsi",
        &format!("portal=127.0.0.1:{port}"),
    ]);
    let mut proc = Proc::spawn("tgtd", c, &dir.join("tgtd.log"))?;
    // tgtd ignores SIGTERM while a session is open.
    proc.kill_first = true;
    let sock = PathBuf::from(format!("/var/run/tgtd/socket.{cp}"));
    proc.wait_ready(Duration::from_secs(10), || sock.exists())?;
    let adm = |args: &[&str]| -> Result<()> {
        let mut c = sys::ns_command(ns, None, "tgtadm");
        c.args(["-C", &cp.to_string(), "--lld", "iscsi"]).args(args);
        sys::run(&mut c).map(|_| ())
    };
    for (i, (iqn, image)) in disks.iter().enumerate() {
        let tid = (i + 1).to_string();
        adm(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", iqn])?;
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
            &image.display().to_string(),
        ])?;
        adm(&[
            "--op", "bind", "--mode", "target", "--tid", &tid, "-I", "ALL",
        ])?;
    }
    proc.wait_ready(Duration::from_secs(10), || sys::listening(ns, true, port))?;
    Ok((proc, cp))
}

fn start_sanboot(bin: &Path, work: &Path) -> Result<Target> {
    let img = work.join("sanboot.img");
    sparse_file(&img)?;
    let cfg = work.join("sanboot.toml");
    fs::write(
        &cfg,
        format!(
            "# generated by cargo xtask bench iscsi\n[server]\naddress = \"127.0.0.1\"\nstate_dir = \"{}\"\n\n\
             [dhcp]\nmode = \"off\"\n\n[tftp]\nlisten = \"127.0.0.1:69\"\n\n\
             [iscsi]\nlisten = \"127.0.0.1:{SANBOOT_PORT}\"\n\n\
             [[target]]\niqn = \"{SANBOOT_IQN}\"\n\n[[target.lun]]\nid = 0\nimage = \"{}\"\nsize = {LUN_BYTES}\n",
            work.join("state").display(),
            img.display()
        ),
    )?;
    let mut c = sys::ns_command(NS, None, bin);
    c.arg("serve").arg("--config").arg(&cfg);
    c.env("SANBOOT_LOG", "warn");
    let proc = Proc::spawn("sanboot", c, &work.join("sanboot.log"))?;
    let mut t = Target {
        name: "sanboot",
        url: format!("iscsi://127.0.0.1:{SANBOOT_PORT}/{SANBOOT_IQN}/0"),
        proc,
        control: None,
    };
    t.proc.wait_ready(Duration::from_secs(15), || {
        sys::listening(NS, true, SANBOOT_PORT)
    })?;
    Ok(t)
}

fn workload(
    load: &Path,
    work: &Path,
    t: &Target,
    mode: &str,
    bs: u32,
    qd: u32,
    secs: u64,
) -> Result<Res> {
    let mut c = sys::ns_command(NS, None, load);
    c.args([
        "-u",
        &t.url,
        "-m",
        mode,
        "-b",
        &bs.to_string(),
        "-q",
        &qd.to_string(),
        "-t",
        &secs.to_string(),
    ]);
    let out = work.join(format!("load-{}-{mode}.out", t.name));
    let before = Sample::take(Some(t.proc.pid()));
    let load0 = sys::reaped_children_cpu_secs();
    let mut p = Proc::spawn("iscsi-load", c, &out)?;
    let st = p.wait_exit(Duration::from_secs(secs + 60))?;
    let load_cpu = sys::reaped_children_cpu_secs() - load0;
    let after = Sample::take(Some(t.proc.pid()));
    let text = fs::read_to_string(&out)?;
    let Some(line) = text.lines().rev().find(|l| l.starts_with("ios=")) else {
        bail!(
            "iscsi-load failed ({st}): {}",
            text.trim().replace('\n', " | ")
        );
    };
    let num = |k: &str| load_field(line, k).unwrap_or(0.0);
    let d = after.since(&before);
    let gb = num("bytes") / 1e9;
    let errors = num("errors");
    Ok(Res {
        mbps: num("mbps"),
        iops: num("iops"),
        lat_avg_us: num("lat_avg_us"),
        lat_p99_us: num("lat_p99_us"),
        cpu_s_per_gb: if gb > 0.0 {
            d.proc_cpu_s / gb
        } else {
            f64::NAN
        },
        cpu_pct: d.proc_cpu_s / d.wall * 100.0,
        initiator_cpu_pct: load_cpu / d.wall * 100.0,
        psi_pct: d.psi_pct,
        error: (errors > 0.0 || !st.success()).then(|| {
            format!(
                "{errors} errors: {}",
                text.lines()
                    .find(|l| l.starts_with("iscsi-load:"))
                    .unwrap_or("")
                    .trim()
            )
        }),
    })
}
