//! TFTP download throughput over the veth: one 64 MiB file at blksize 1428
//! with windowsize 1, 8 and 64, and N (100) concurrent 4 MiB downloads, from
//! tftpd-hpa, dnsmasq, atftpd (the only peer that negotiates windowsize, if
//! its binary is available) and sanboot. The client is our own
//! (`tftp_client`), pinned to CPU 0; every download is verified byte for byte.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::sys::{self, Netns, Proc, Sample, Table, CLI_CPU, CLI_NS, SRV_CPU, SRV_IP, SRV_NS};
use super::Opts;

const BIG: (&str, usize) = ("big.bin", 64 << 20);
const SMALL: (&str, usize) = ("small.bin", 4 << 20);
const BLKSIZE: usize = 1428;
const WINDOWS: [u16; 3] = [1, 8, 64];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Hpa,
    Dnsmasq,
    Atftpd,
    Sanboot,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Hpa => "tftpd-hpa",
            Server::Dnsmasq => "dnsmasq",
            Server::Atftpd => "atftpd",
            Server::Sanboot => "sanboot",
        }
    }
    /// Each server has its own address on the server side of the veth, so
    /// that all run at once and every test visits them in turn (background
    /// load then hits all alike). sanboot keeps the primary address.
    fn addr(self) -> &'static str {
        match self {
            Server::Hpa => "198.18.0.11",
            Server::Dnsmasq => "198.18.0.12",
            Server::Atftpd => "198.18.0.13",
            Server::Sanboot => SRV_IP,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Server::Hpa => "hpa",
            Server::Dnsmasq => "dnsmasq",
            Server::Atftpd => "atftpd",
            Server::Sanboot => "sanboot",
        }
    }
}

/// One client run, parsed from the client's `key=value` line.
#[derive(Debug, Clone, Default)]
pub(super) struct Run {
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) mibs: f64,
    wall_s: f64,
    med_s: f64,
    max_s: f64,
    pub(super) window: u64,
    blksize: u64,
    pub(super) srv_cpu_pct: f64,
    cli_cpu_pct: f64,
    psi_pct: f64,
    pub(super) error: String,
}

pub fn bench(opts: &Opts) -> Result<()> {
    let dir = sys::bench_dir()?;
    let root = dir.join("tftproot");
    make_files(&root)?;
    let atftpd = find_atftpd(opts, &dir);
    let mut servers = vec![Server::Hpa, Server::Dnsmasq];
    match &atftpd {
        Some(_) => servers.push(Server::Atftpd),
        None => eprintln!("bench tftp: atftpd not found, skipped (see --atftpd)"),
    }
    servers.push(Server::Sanboot);
    servers.retain(|s| opts.wants(s.key()) || opts.wants(s.name()));
    let sanboot = if servers.contains(&Server::Sanboot) {
        Some(sys::sanboot_binary(opts.build)?)
    } else {
        None
    };
    let exe = release_client()?;
    let report = sys::Report::create("tftp")?;
    let work = dir.join("tftp-run");
    let net = Netns::veth_pair()?;
    report.add(&format!(
        "## TFTP throughput ({})\n\nservers in `{SRV_NS}` (sanboot on {SRV_IP}:69, peers on 198.18.0.11-13), all running, pinned to CPU {SRV_CPU}, visited in turn per test, our client (xtask tftp-client, one poll loop) in `{CLI_NS}` on CPU {CLI_CPU}; \
         veth MTU 1500; every download compared byte for byte with the original; MiB/s = bytes / wall time of the transfers; \
         srv CPU = the server process's utime+stime (+ reaped children) over the run (tftpd-hpa's per-transfer children are not counted); {} rep(s), median.\n{}\n",
        sys::timestamp(),
        opts.reps,
        sys::machine_line()
    ))?;

    let mut detail = Table::new(&[
        "server",
        "test",
        "asked w",
        "granted blksize/w",
        "MiB/s",
        "ok/n",
        "wall s",
        "xfer med/max s",
        "srv CPU %",
        "client CPU %",
        "PSI %",
        "note",
    ]);
    let mut running: Vec<(Server, Proc, PathBuf)> = Vec::new();
    let mut results: Vec<(Server, Vec<Option<f64>>, Vec<u64>)> = Vec::new();
    for &server in &servers {
        sys::check_stop()?;
        let run_dir = sys::fresh_dir(&work.join(server.key()))?;
        if server.addr() != SRV_IP {
            net.add_addr(SRV_NS, sys::SRV_IF, &format!("{}/16", server.addr()))?;
        }
        match start_server(
            server,
            &root,
            &run_dir,
            sanboot.as_deref(),
            atftpd.as_deref(),
        ) {
            Ok(p) => running.push((server, p, run_dir)),
            Err(e) => {
                let mut row = vec![server.name().to_string(), "start".into()];
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                row.push(format!("{e:#}").chars().take(200).collect());
                detail.row(row);
                results.push((server, vec![None; 4], vec![0; 3]));
            }
        }
    }
    let tests: Vec<(String, (&str, usize), u16, usize)> = WINDOWS
        .iter()
        .map(|&w| (format!("64 MiB w={w}"), BIG, w, 1))
        .chain(std::iter::once((
            format!("{} x 4 MiB", opts.parallel),
            SMALL,
            1u16,
            opts.parallel,
        )))
        .collect();
    // runs[server][test]
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); tests.len()]; running.len()];
    for (ti, (label, (file, _), w, count)) in tests.iter().enumerate() {
        for _ in 0..opts.reps {
            for (si, (server, srv, run_dir)) in running.iter_mut().enumerate() {
                sys::check_stop()?;
                let r = if let Some(st) = srv.exited() {
                    Run {
                        error: format!("server exited ({st}): {}", srv.log_tail()),
                        ..Run::default()
                    }
                } else {
                    client_run(
                        &exe,
                        run_dir,
                        &root,
                        server.addr(),
                        file,
                        *w,
                        *count,
                        srv.pid(),
                    )
                    .unwrap_or_else(|e| Run {
                        error: format!("{e:#}"),
                        ..Run::default()
                    })
                };
                eprintln!(
                    "bench tftp: {} {label}: {:.1} MiB/s ok {}/{} (granted blksize {} w {}) srv CPU {:.0} %, PSI {:.0} % {}",
                    server.name(),
                    r.mibs,
                    r.ok,
                    r.ok + r.failed,
                    r.blksize,
                    r.window,
                    r.srv_cpu_pct,
                    r.psi_pct,
                    r.error
                );
                if let Some(v) = runs.get_mut(si).and_then(|v| v.get_mut(ti)) {
                    v.push(r);
                }
            }
        }
    }
    for ((server, srv, _), per_test) in running.iter_mut().zip(&runs) {
        srv.stop();
        let mut speeds = Vec::new();
        let mut granted = Vec::new();
        for ((label, _, w, count), runs) in tests.iter().zip(per_test) {
            let good: Vec<&Run> = runs.iter().filter(|r| r.failed == 0 && r.ok > 0).collect();
            let med = median(good.iter().map(|r| r.mibs).collect());
            if let Some(r) = good.get(good.len() / 2).copied().or(runs.last()) {
                let ok_n = format!(
                    "{}/{}",
                    runs.iter().map(|r| r.ok).sum::<u64>(),
                    runs.iter().map(|r| r.ok + r.failed).sum::<u64>().max(1)
                );
                let note = if *count == 1 && *w > 1 && r.window == 1 && r.ok > 0 {
                    "windowsize not negotiated".to_string()
                } else {
                    runs.iter()
                        .map(|r| r.error.as_str())
                        .filter(|e| !e.is_empty() && *e != "-")
                        .take(1)
                        .collect()
                };
                detail.row(vec![
                    server.name().into(),
                    label.clone(),
                    w.to_string(),
                    format!("{}/{}", r.blksize, r.window),
                    med.map(|m| sys::f(m, 1)).unwrap_or_else(|| "failed".into()),
                    ok_n,
                    sys::f(r.wall_s, 2),
                    format!("{}/{}", sys::f(r.med_s, 2), sys::f(r.max_s, 2)),
                    if *server == Server::Hpa {
                        "- (forks)".into()
                    } else {
                        sys::f(r.srv_cpu_pct, 0)
                    },
                    sys::f(r.cli_cpu_pct, 0),
                    sys::f(r.psi_pct, 1),
                    note.chars().take(200).collect(),
                ]);
                if *count == 1 {
                    granted.push(r.window);
                }
            }
            speeds.push(med);
        }
        results.push((*server, speeds, granted));
    }
    drop(running);
    results.sort_by_key(|r| servers.iter().position(|s| *s == r.0));
    drop(net);

    let mut summary = Table::new(&[
        "server",
        "w=1 MiB/s",
        "w=8 MiB/s",
        "w=64 MiB/s",
        &format!("{} x 4 MiB agg MiB/s", opts.parallel),
        "windowsize",
    ]);
    let sb = results
        .iter()
        .find(|r| r.0 == Server::Sanboot)
        .map(|r| r.1.clone());
    let cell = |v: &Option<f64>| v.map(|m| sys::f(m, 1)).unwrap_or_else(|| "failed".into());
    for (s, v, g) in &results {
        summary.row(vec![
            s.name().into(),
            cell(v.first().unwrap_or(&None)),
            cell(v.get(1).unwrap_or(&None)),
            cell(v.get(2).unwrap_or(&None)),
            cell(v.get(3).unwrap_or(&None)),
            if g.iter().any(|&w| w > 1) {
                format!(
                    "negotiated (granted {})",
                    g.iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                )
            } else {
                "not negotiated: w=8/64 run as w=1".into()
            },
        ]);
    }
    let mut ratios = Table::new(&["sanboot / peer", "w=1", "w=8", "w=64", "parallel"]);
    if let Some(sb) = &sb {
        for (s, v, _) in results.iter().filter(|r| r.0 != Server::Sanboot) {
            let mut row = vec![s.name().to_string()];
            for i in 0..4 {
                row.push(sys::ratio(
                    sb.get(i).copied().flatten(),
                    v.get(i).copied().flatten(),
                ));
            }
            ratios.row(row);
        }
    }
    report.add(&detail.render())?;
    report.add(&summary.render())?;
    report.add(&ratios.render())?;
    let w64 = sb.as_ref().and_then(|v| v.get(2).copied().flatten());
    report.add(&format!(
        "**sanboot at blksize {BLKSIZE} window 64: {} MiB/s** (target ≥ 250 MiB/s on veth)\n",
        w64.map(|m| sys::f(m, 1)).unwrap_or_else(|| "failed".into())
    ))?;
    eprintln!("bench tftp: results in {}", report.path.display());
    Ok(())
}

/// The client must not be the bottleneck: run it from a release build of xtask.
pub(super) fn release_client() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.parent().is_some_and(|d| d.ends_with("release")) {
        return Ok(exe);
    }
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "xtask"])
        .current_dir(sys::root())
        .status()
        .context("cargo build --release -p xtask")?;
    if !st.success() {
        bail!("cargo build --release -p xtask failed");
    }
    Ok(sys::root().join("target/release/xtask"))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Random content, made once and kept (world-readable: tftpd-hpa serves it as nobody).
fn make_files(root: &Path) -> Result<()> {
    fs::create_dir_all(root)?;
    set_mode(root, "755")?;
    for (name, size) in [BIG, SMALL] {
        let p = root.join(name);
        if fs::metadata(&p)
            .map(|m| m.len() as usize == size)
            .unwrap_or(false)
        {
            continue;
        }
        let mut data = vec![0u8; size];
        fs::File::open("/dev/urandom")?.read_exact(&mut data)?;
        fs::write(&p, &data)?;
        set_mode(&p, "644")?;
    }
    Ok(())
}

fn set_mode(p: &Path, mode: &str) -> Result<()> {
    sys::run(Command::new("chmod").arg(mode).arg(p)).map(|_| ())
}

/// atftpd conflicts with tftpd-hpa as a Debian package, so it is never
/// installed: `apt-get download` + `dpkg-deb -x` into target/bench/opt.
fn find_atftpd(opts: &Opts, dir: &Path) -> Option<PathBuf> {
    if let Some(p) = &opts.atftpd {
        return p.exists().then(|| p.clone());
    }
    let opt = dir.join("opt");
    let bin = opt.join("atftpd/usr/sbin/atftpd");
    if bin.exists() || !opts.wants("atftpd") {
        return bin.exists().then_some(bin);
    }
    let _ = fs::create_dir_all(&opt);
    let fetched = Command::new("apt-get")
        .args(["download", "atftpd"])
        .current_dir(&opt)
        .output()
        .ok()?;
    if !fetched.status.success() {
        return None;
    }
    let deb = fs::read_dir(&opt)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb") && p.to_string_lossy().contains("atftpd")
        })?;
    sys::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(opt.join("atftpd")),
    )
    .ok()?;
    bin.exists().then_some(bin)
}

fn start_server(
    server: Server,
    root: &Path,
    dir: &Path,
    sanboot: Option<&Path>,
    atftpd: Option<&Path>,
) -> Result<Proc> {
    let cmd = match server {
        Server::Hpa => {
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), "in.tftpd");
            c.args([
                "-L",
                "-a",
                &format!("{}:69", server.addr()),
                "-s",
                "-u",
                "nobody",
            ])
            .arg(root);
            c
        }
        Server::Dnsmasq => {
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), "dnsmasq");
            c.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--enable-tftp",
            ]);
            c.arg(format!("--tftp-root={}", root.display()));
            c.args([
                &format!("--listen-address={}", server.addr()),
                "--bind-interfaces",
                "--tftp-max=1000",
            ]);
            c.arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ));
            c.arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
            c
        }
        Server::Atftpd => {
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), atftpd.context("atftpd binary")?);
            c.args([
                "--daemon",
                "--no-fork",
                "--bind-address",
                server.addr(),
                "--port",
                "69",
                "--user",
                "nobody",
                "--group",
                "nogroup",
            ]);
            c.args([
                "--logfile",
                &dir.join("atftpd.log").display().to_string(),
                "--verbose=1",
                "--maxthread",
                "1000",
            ]);
            c.arg(root);
            c
        }
        Server::Sanboot => {
            let cfg = dir.join("sanboot.toml");
            fs::write(
                &cfg,
                format!(
                    "# generated by cargo xtask bench tftp\n[server]\naddress = \"{SRV_IP}\"\nstate_dir = \"{}\"\n\n\
                     [dhcp]\nmode = \"off\"\n\n[tftp]\nroot = \"{}\"\nlisten = \"{SRV_IP}:69\"\nmax_transfers = 1024\n\n\
                     [iscsi]\nlisten = \"{SRV_IP}:3260\"\n",
                    dir.join("state").display(),
                    root.display()
                ),
            )?;
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), sanboot.context("sanboot binary")?);
            c.arg("serve").arg("--config").arg(&cfg);
            c.env("SANBOOT_LOG", "warn");
            c
        }
    };
    let mut p = Proc::spawn(server.name(), cmd, &dir.join("server.log"))?;
    p.wait_ready(Duration::from_secs(15), || {
        sys::listening_on(SRV_NS, false, &format!("{}:69", server.addr()))
    })?;
    sys::sleep(Duration::from_millis(300))?;
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn client_run(
    exe: &Path,
    dir: &Path,
    root: &Path,
    addr: &str,
    file: &str,
    window: u16,
    count: usize,
    srv_pid: u32,
) -> Result<Run> {
    let mut c = sys::ns_command(CLI_NS, Some(CLI_CPU), exe);
    c.args([
        "bench",
        "tftp-client",
        "--server",
        &format!("{addr}:69"),
        "--file",
        file,
    ]);
    c.arg("--ref").arg(root.join(file));
    c.args([
        "--blksize",
        &BLKSIZE.to_string(),
        "--window",
        &window.to_string(),
    ]);
    c.args(["--count", &count.to_string(), "--timeout", "120"]);
    let out = dir.join("client.out");
    let before = Sample::take(Some(srv_pid));
    let cli0 = sys::reaped_children_cpu_secs();
    let mut p = Proc::spawn("tftp-client", c, &out)?;
    let st = p.wait_exit(Duration::from_secs(150))?;
    let cli_cpu = sys::reaped_children_cpu_secs() - cli0;
    let after = Sample::take(Some(srv_pid));
    let text = fs::read_to_string(&out)?;
    let Some(line) = text.lines().rev().find(|l| l.starts_with("ok=")) else {
        bail!("client failed ({st}): {}", text.trim());
    };
    let kv = |k: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
    };
    let num = |k: &str| kv(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let d = after.since(&before);
    Ok(Run {
        ok: num("ok") as u64,
        failed: num("failed") as u64,
        mibs: num("agg_mibs"),
        wall_s: num("wall_s"),
        med_s: num("xfer_med_s"),
        max_s: num("xfer_max_s"),
        window: num("window") as u64,
        blksize: num("blksize") as u64,
        srv_cpu_pct: d.proc_cpu_s / d.wall * 100.0,
        cli_cpu_pct: cli_cpu / d.wall * 100.0,
        psi_pct: d.psi_pct,
        error: kv("error").unwrap_or("-").replace('_', " "),
    })
}
