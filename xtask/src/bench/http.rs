//! HTTP boot throughput over the veth: one 64 MiB file from sanboot's HTTP
//! server, from sanboot's TFTP at windowsize 64 (the fastest TFTP it does),
//! and from nginx (if installed; skipped with a message otherwise), in the
//! same run, each repeated and the median shown. HTTP downloads are made by
//! curl and TFTP ones by our client (`tftp_client`), both pinned to CPU 0
//! and verified byte for byte; servers are pinned to CPU 1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::sys::{self, Netns, Proc, Sample, Table, CLI_CPU, CLI_NS, SRV_CPU, SRV_IP, SRV_NS};
use super::Opts;

const FILE: (&str, usize) = ("big.bin", 64 << 20);
const NGINX_IP: &str = "198.18.0.14";
const REPS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    SanbootHttp,
    SanbootTftp,
    Nginx,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::SanbootHttp => "sanboot HTTP",
            Way::SanbootTftp => "sanboot TFTP (blksize 1428, windowsize 64)",
            Way::Nginx => "nginx HTTP",
        }
    }
}

pub fn bench(opts: &Opts) -> Result<()> {
    let dir = sys::bench_dir()?;
    let root = dir.join("httproot");
    make_file(&root)?;
    let sanboot_bin = sys::sanboot_binary(opts.build)?;
    let tftp_client = super::tftp::release_client()?;
    let nginx = which("nginx");
    if nginx.is_none() {
        eprintln!("bench http: nginx not found (apt-get install nginx-light), its row is skipped");
    }
    let report = sys::Report::create("http")?;
    let work = sys::fresh_dir(&dir.join("http-run"))?;
    let net = Netns::veth_pair()?;
    report.add(&format!(
        "## HTTP boot vs TFTP ({})\n\n64 MiB file; sanboot (HTTP on {SRV_IP}:80 and TFTP on {SRV_IP}:69, one process) and nginx ({NGINX_IP}:80, \
         `master_process off`, sendfile on) in `{SRV_NS}` pinned to CPU {SRV_CPU}; curl / our TFTP client in `{CLI_NS}` on CPU {CLI_CPU}; \
         veth MTU 1500; every download compared byte for byte; MB/s = 10^6 bytes / wall time of the download (curl's time_total; the TFTP client's wall); \
         server CPU % = the server process's utime+stime over the download / its wall time, counted in 10 ms clock ticks (nginx's sendfile often stays under one tick: 0); median of {REPS}.\n{}\n",
        sys::timestamp(),
        sys::machine_line()
    ))?;

    let mut sanboot = start_sanboot(&sanboot_bin, &root, &work)?;
    let mut nginx_proc = match &nginx {
        Some(bin) => {
            net.add_addr(SRV_NS, sys::SRV_IF, &format!("{NGINX_IP}/16"))?;
            match start_nginx(bin, &root, &work) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("bench http: nginx did not start: {e:#}");
                    None
                }
            }
        }
        None => None,
    };

    let mut table = Table::new(&[
        "server",
        "MB/s",
        "server CPU %",
        "server CPU ms per 64 MiB",
        "runs ok",
        "note",
    ]);
    let mut rates: Vec<(Way, Option<f64>)> = Vec::new();
    for way in [Way::SanbootHttp, Way::SanbootTftp, Way::Nginx] {
        let pid = match way {
            Way::Nginx => match nginx_proc.as_mut() {
                Some(p) => p.pid(),
                None => {
                    table.row(vec![
                        way.name().into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "0".into(),
                        "skipped: nginx not installed or not started".into(),
                    ]);
                    continue;
                }
            },
            _ => sanboot.pid(),
        };
        let mut mbs = Vec::new();
        let mut cpu = Vec::new();
        let mut note = String::new();
        for _ in 0..REPS {
            sys::check_stop()?;
            let r = match way {
                Way::SanbootHttp => curl_run(&work, &root, SRV_IP, pid),
                Way::Nginx => curl_run(&work, &root, NGINX_IP, pid),
                Way::SanbootTftp => {
                    super::tftp::client_run(&tftp_client, &work, &root, SRV_IP, FILE.0, 64, 1, pid)
                        .and_then(|r| {
                            if r.ok == 1 && r.failed == 0 && r.window == 64 {
                                // The client reports MiB/s.
                                Ok((r.mibs * 1.048_576, r.srv_cpu_pct))
                            } else {
                                bail!("TFTP run failed (window {}): {}", r.window, r.error)
                            }
                        })
                }
            };
            match r {
                Ok((m, c)) => {
                    eprintln!(
                        "bench http: {}: {m:.1} MB/s, server CPU {c:.0} %",
                        way.name()
                    );
                    mbs.push(m);
                    cpu.push(c);
                }
                Err(e) => {
                    eprintln!("bench http: {}: {e:#}", way.name());
                    note = format!("{e:#}").chars().take(200).collect();
                }
            }
        }
        let med = median(mbs.clone());
        // CPU time per download: comparable across servers of different speed.
        let cpu_ms: Vec<f64> = mbs
            .iter()
            .zip(&cpu)
            .map(|(m, c)| c / 100.0 * (FILE.1 as f64 / (m * 1e6)) * 1000.0)
            .collect();
        table.row(vec![
            way.name().into(),
            med.map(|m| sys::f(m, 1)).unwrap_or_else(|| "failed".into()),
            median(cpu)
                .map(|c| sys::f(c, 0))
                .unwrap_or_else(|| "-".into()),
            median(cpu_ms)
                .map(|c| sys::f(c, 0))
                .unwrap_or_else(|| "-".into()),
            format!("{}/{REPS}", mbs.len()),
            note,
        ]);
        rates.push((way, med));
    }
    sanboot.stop();
    if let Some(p) = nginx_proc.as_mut() {
        p.stop();
    }
    drop(net);
    report.add(&table.render())?;
    let get = |w| rates.iter().find(|r| r.0 == w).and_then(|r| r.1);
    report.add(&format!(
        "sanboot HTTP / sanboot TFTP w=64: {}; sanboot HTTP / nginx: {}\n",
        sys::ratio(get(Way::SanbootHttp), get(Way::SanbootTftp)),
        sys::ratio(get(Way::SanbootHttp), get(Way::Nginx)),
    ))?;
    eprintln!("bench http: results in {}", report.path.display());
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn make_file(root: &Path) -> Result<()> {
    fs::create_dir_all(root)?;
    let p = root.join(FILE.0);
    if fs::metadata(&p).is_ok_and(|m| m.len() as usize == FILE.1) {
        return Ok(());
    }
    // Deterministic, incompressible enough: xorshift.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..FILE.1)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    fs::write(&p, data)?;
    // nginx's worker runs as nobody-ish users when root starts it; keep it readable.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status()?;
    Ok(())
}

fn start_sanboot(bin: &Path, root: &Path, dir: &Path) -> Result<Proc> {
    let cfg = dir.join("sanboot.toml");
    fs::write(
        &cfg,
        format!(
            "# generated by cargo xtask bench http\n[server]\naddress = \"{SRV_IP}\"\nstate_dir = \"{}\"\n\n\
             [dhcp]\nmode = \"off\"\n\n[tftp]\nroot = \"{}\"\nlisten = \"{SRV_IP}:69\"\n\n\
             [http]\nlisten = \"{SRV_IP}:80\"\n\n[iscsi]\nlisten = \"{SRV_IP}:3260\"\n",
            dir.join("state").display(),
            root.display()
        ),
    )?;
    let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), bin);
    c.arg("serve").arg("--config").arg(&cfg);
    c.env("SANBOOT_LOG", "warn");
    let mut p = Proc::spawn("sanboot", c, &dir.join("sanboot.log"))?;
    p.wait_ready(Duration::from_secs(15), || {
        sys::listening_on(SRV_NS, true, &format!("{SRV_IP}:80"))
            && sys::listening_on(SRV_NS, false, &format!("{SRV_IP}:69"))
    })?;
    Ok(p)
}

fn start_nginx(bin: &Path, root: &Path, dir: &Path) -> Result<Proc> {
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "# generated by cargo xtask bench http\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
             pid {pid};\nerror_log {log} warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
               client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n\
               uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n\
               server {{ listen {NGINX_IP}:80; root {root}; }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("nginx-error.log").display(),
            tmp = dir.display(),
            root = root.display(),
        ),
    )?;
    let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), bin);
    c.arg("-c").arg(&conf).arg("-p").arg(dir);
    let mut p = Proc::spawn("nginx", c, &dir.join("nginx.log"))?;
    p.wait_ready(Duration::from_secs(15), || {
        sys::listening_on(SRV_NS, true, &format!("{NGINX_IP}:80"))
    })?;
    Ok(p)
}

/// One curl download of the file from `addr`: (MB/s, server CPU %).
fn curl_run(dir: &Path, root: &Path, addr: &str, srv_pid: u32) -> Result<(f64, f64)> {
    let out = dir.join("download.bin");
    let _ = fs::remove_file(&out);
    let mut c = sys::ns_command(CLI_NS, Some(CLI_CPU), "curl");
    c.args(["-sS", "--fail", "--max-time", "60", "-o"])
        .arg(&out)
        .args(["-w", "%{size_download} %{time_total}"])
        .arg(format!("http://{addr}/{}", FILE.0));
    let before = Sample::take(Some(srv_pid));
    let text = sys::run(&mut c).context("curl")?;
    let after = Sample::take(Some(srv_pid));
    let mut words = text.split_whitespace();
    let size: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    let secs: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    if size as usize != FILE.1 || secs <= 0.0 {
        bail!("curl got {size} bytes in {secs} s");
    }
    if fs::read(&out)? != fs::read(root.join(FILE.0))? {
        bail!("the download differs from the file");
    }
    let d = after.since(&before);
    Ok((size / secs / 1e6, d.proc_cpu_s / d.wall * 100.0))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}
