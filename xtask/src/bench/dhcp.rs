//! DHCP DORA rate: perfdhcp against kea, dnsmasq (lease file and
//! `--leasefile-ro`) and sanboot in full-DHCP mode, one fresh server and state
//! directory per point.
//!
//! ACK/s is computed here as REQUEST-ACK received / period: perfdhcp's own
//! "Rate:" divides by period + `-W` wait. A rate is "sustained" when less
//! than 1 % of the DISCOVERs sent did not end in an ACK.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::sys::{
    self, Netns, Proc, Sample, Table, CLI_CPU, CLI_IF, CLI_NS, SRV_CPU, SRV_IF, SRV_IP, SRV_NS,
};
use super::Opts;

const POOL_START: &str = "198.18.1.0";
const POOL_END: &str = "198.18.255.254";
const NETMASK: &str = "255.255.0.0";
/// Distinct simulated clients (perfdhcp -R).
const CLIENTS: u32 = 50_000;
/// Sustained: less loss than this.
const SUSTAINED_LOSS_PCT: f64 = 1.0;
/// Stop climbing after a point this bad.
const STOP_LOSS_PCT: f64 = 5.0;
const LOWEST_RATE: u32 = 250;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Kea,
    Dnsmasq,
    DnsmasqRo,
    Sanboot,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Kea => "kea",
            Server::Dnsmasq => "dnsmasq",
            Server::DnsmasqRo => "dnsmasq-ro",
            Server::Sanboot => "sanboot",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Server::Kea => {
                "kea-dhcp4, 1 thread, raw sockets, memfile persist=true (lfc-interval 0)"
            }
            Server::Dnsmasq => {
                "dnsmasq, lease file (rewritten + fsync per ACK), --no-ping --quiet-dhcp"
            }
            Server::DnsmasqRo => {
                "dnsmasq --leasefile-ro (leases not persisted), --no-ping --quiet-dhcp"
            }
            Server::Sanboot => {
                "sanboot serve, [dhcp] mode = \"full\", leases persisted in state_dir"
            }
        }
    }
}

/// One measurement point, parsed from perfdhcp's output.
#[derive(Debug, Clone, Default)]
struct Point {
    rate: u32,
    discovers: u64,
    offers: u64,
    requests: u64,
    acks: u64,
    do_avg_ms: f64,
    ra_avg_ms: f64,
    ra_max_ms: f64,
    non_unique: u64,
    /// Leases found in the server's lease file after it stopped.
    persisted: Option<u64>,
    ack_per_s: f64,
    loss_pct: f64,
    srv_cpu_pct: f64,
    psi_pct: f64,
    /// perfdhcp could not send at the offered rate (client-bound point).
    client_bound: bool,
    error: Option<String>,
}

pub fn bench(opts: &Opts) -> Result<()> {
    let period = opts.seconds.unwrap_or(10);
    let rates = opts
        .rates
        .clone()
        .unwrap_or_else(|| vec![2000, 4000, 6000, 8000, 12000, 16000]);
    let servers: Vec<Server> = [
        Server::Kea,
        Server::Dnsmasq,
        Server::DnsmasqRo,
        Server::Sanboot,
    ]
    .into_iter()
    .filter(|s| opts.wants(s.name()))
    .collect();
    let sanboot = if servers.contains(&Server::Sanboot) {
        Some(sys::sanboot_binary(opts.build)?)
    } else {
        None
    };
    let report = sys::Report::create("dhcp")?;
    let work = sys::bench_dir()?.join("dhcp-run");
    let net = Netns::veth_pair()?;
    let quota = opts.cpu_quota.map(sys::CpuQuota::create).transpose()?;
    let quota_line = match opts.cpu_quota {
        Some(pct) => format!(" Server capped at {pct} % of one core (cgroup cpu quota)."),
        None => String::new(),
    };
    report.add(&format!(
        "## DHCP DORA rate ({})\n\nperfdhcp -4 -l {CLI_IF} -r RATE -p {period} -R {CLIENTS} -W 500000 in `{CLI_NS}` on CPU {CLI_CPU}; \
         server in `{SRV_NS}` ({SRV_IP}/16, pool {POOL_START}-{POOL_END}) on CPU {SRV_CPU}; fresh server + state per point.{quota_line}\n{}\n",
        sys::timestamp(),
        sys::machine_line()
    ))?;

    let mut detail = Table::new(&[
        "server",
        "offered/s",
        "ACK/s",
        "loss %",
        "DO avg ms",
        "RA avg ms",
        "RA max ms",
        "non-unique",
        "leases on disk",
        "srv CPU %",
        "PSI %",
        "note",
    ]);
    let mut best: Vec<(Server, Option<f64>, Option<u32>)> = Vec::new();
    let measure = |server: Server, rate: u32| -> Result<Point> {
        sys::check_stop()?;
        let dir = sys::fresh_dir(&work.join(format!("{}-{rate}", server.name())))?;
        let p = point(
            server,
            sanboot.as_deref(),
            quota.as_ref(),
            &net,
            &dir,
            rate,
            period,
        )
        .unwrap_or_else(|e| Point {
            rate,
            error: Some(format!("{e:#}")),
            ..Point::default()
        });
        sys::check_stop()?;
        eprintln!(
            "bench dhcp: {} @ {rate}/s: {:.0} ACK/s, loss {:.2} %, srv CPU {:.0} %, PSI {:.0} % {}",
            server.name(),
            p.ack_per_s,
            p.loss_pct,
            p.srv_cpu_pct,
            p.psi_pct,
            p.error.as_deref().unwrap_or("")
        );
        Ok(p)
    };
    // Rates climb in rounds, every server once per round, so that a change
    // in the machine's background load hits all servers alike.
    let mut points: Vec<Vec<Point>> = vec![Vec::new(); servers.len()];
    let mut climbing: Vec<bool> = vec![true; servers.len()];
    for &rate in &rates {
        for (i, &server) in servers.iter().enumerate() {
            if !climbing.get(i).copied().unwrap_or(false) {
                continue;
            }
            let p = measure(server, rate)?;
            let bad = p.error.is_some() || p.loss_pct >= STOP_LOSS_PCT;
            if let Some(v) = points.get_mut(i) {
                v.push(p);
            }
            if bad {
                if let Some(c) = climbing.get_mut(i) {
                    *c = false;
                }
            }
        }
    }
    // Servers for which the first rate was already too much: halve down to
    // find a sustained one.
    for (i, &server) in servers.iter().enumerate() {
        let Some(pts) = points.get_mut(i) else {
            continue;
        };
        if !pts
            .first()
            .is_some_and(|p| p.error.is_none() && p.loss_pct >= SUSTAINED_LOSS_PCT)
        {
            continue;
        }
        let mut rate = rates.first().copied().unwrap_or(LOWEST_RATE) / 2;
        while rate >= LOWEST_RATE {
            let p = measure(server, rate)?;
            let stop = p.error.is_some() || p.loss_pct < SUSTAINED_LOSS_PCT;
            pts.push(p);
            if stop {
                break;
            }
            rate /= 2;
        }
        pts.sort_by_key(|p| p.rate);
    }
    // One bisection round between the best sustained rate and the first
    // failing one above it: the steps are coarse (2000 → 4000 is 2×).
    for (i, &server) in servers.iter().enumerate() {
        let Some(pts) = points.get_mut(i) else {
            continue;
        };
        let ok = |p: &Point| p.error.is_none() && p.loss_pct < SUSTAINED_LOSS_PCT;
        let Some(good) = pts.iter().filter(|p| ok(p)).map(|p| p.rate).max() else {
            continue;
        };
        let bad = pts
            .iter()
            .filter(|p| p.error.is_none() && !ok(p) && p.rate > good)
            .map(|p| p.rate)
            .min();
        let Some(bad) = bad else { continue };
        let mid = (good + bad) / 2 / 100 * 100;
        if mid > good && mid < bad && bad - good > good / 4 {
            pts.push(measure(server, mid)?);
            pts.sort_by_key(|p| p.rate);
        }
    }
    for (&server, points) in servers.iter().zip(&points) {
        let sustained = points
            .iter()
            .filter(|p| p.error.is_none() && p.loss_pct < SUSTAINED_LOSS_PCT)
            .max_by(|a, b| a.ack_per_s.total_cmp(&b.ack_per_s));
        best.push((
            server,
            sustained.map(|p| p.ack_per_s),
            sustained.map(|p| p.rate),
        ));
        for p in points {
            let note = match (&p.error, p.client_bound) {
                (Some(e), _) => e.chars().take(160).collect(),
                (None, true) => "perfdhcp could not send the offered rate (client-bound)".into(),
                _ => String::new(),
            };
            detail.row(vec![
                server.name().into(),
                p.rate.to_string(),
                sys::f(p.ack_per_s, 0),
                sys::f(p.loss_pct, 2),
                sys::f(p.do_avg_ms, 2),
                sys::f(p.ra_avg_ms, 2),
                sys::f(p.ra_max_ms, 1),
                p.non_unique.to_string(),
                p.persisted
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                sys::f(p.srv_cpu_pct, 0),
                sys::f(p.psi_pct, 1),
                note,
            ]);
        }
    }
    drop(net);

    let mut summary = Table::new(&[
        "server",
        "setup",
        "max sustained ACK/s (loss < 1 %)",
        "at offered/s",
        "sanboot / this",
    ]);
    let sanboot_best = best
        .iter()
        .find(|b| b.0 == Server::Sanboot)
        .and_then(|b| b.1);
    for (s, ack, rate) in &best {
        summary.row(vec![
            s.name().into(),
            s.describe().into(),
            ack.map(|a| sys::f(a, 0)).unwrap_or_else(|| "none".into()),
            rate.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            if *s == Server::Sanboot {
                "-".into()
            } else {
                sys::ratio(sanboot_best, *ack)
            },
        ]);
    }
    let kea = best.iter().find(|b| b.0 == Server::Kea).and_then(|b| b.1);
    let top = rates.iter().max().copied().unwrap_or(0);
    report.add(&detail.render())?;
    report.add(&summary.render())?;
    report.add(&format!(
        "**ratio sanboot/kea (max sustained ACK/s, single core): {}** (target ≥ 2×){}\n",
        sys::ratio(sanboot_best, kea),
        if sanboot_best.is_some_and(|b| b >= f64::from(top) * 0.99) {
            format!("; sanboot sustained the highest offered rate ({top}/s): its ceiling is higher than measured")
        } else {
            String::new()
        }
    ))?;
    eprintln!("bench dhcp: results in {}", report.path.display());
    Ok(())
}

fn start_server(server: Server, sanboot: Option<&Path>, dir: &Path) -> Result<Proc> {
    let log = dir.join("server.log");
    let cmd = match server {
        Server::Kea => {
            fs::write(dir.join("kea.json"), kea_config(dir))?;
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), "kea-dhcp4");
            c.arg("-c").arg(dir.join("kea.json"));
            // Without these kea dies on the missing /run/kea.
            c.env("KEA_PIDFILE_DIR", dir)
                .env("KEA_LOCKFILE_DIR", dir)
                .env("KEA_LOGGER_DESTINATION", dir.join("kea-logger"));
            c
        }
        Server::Dnsmasq | Server::DnsmasqRo => {
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), "dnsmasq");
            c.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                &format!("--interface={SRV_IF}"),
                "--bind-interfaces",
                &format!("--dhcp-range={POOL_START},{POOL_END},{NETMASK},12h"),
                "--dhcp-lease-max=200000",
                "--dhcp-authoritative",
                "--no-ping",
                "--quiet-dhcp",
            ]);
            c.arg(format!(
                "--log-facility={}",
                dir.join("dnsmasq.log").display()
            ));
            c.arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
            if server == Server::Dnsmasq {
                c.arg(format!(
                    "--dhcp-leasefile={}",
                    dir.join("dnsmasq.leases").display()
                ));
            } else {
                c.arg("--leasefile-ro");
            }
            c
        }
        Server::Sanboot => {
            let bin = sanboot.context("sanboot binary")?;
            fs::write(dir.join("sanboot.toml"), sanboot_config(dir))?;
            let mut c = sys::ns_command(SRV_NS, Some(SRV_CPU), bin);
            c.arg("serve").arg("--config").arg(dir.join("sanboot.toml"));
            c.env("SANBOOT_LOG", "warn");
            c
        }
    };
    Proc::spawn(server.name(), cmd, &log)
}

fn point(
    server: Server,
    sanboot: Option<&Path>,
    quota: Option<&sys::CpuQuota>,
    net: &Netns,
    dir: &Path,
    rate: u32,
    period: u64,
) -> Result<Point> {
    let mut srv = start_server(server, sanboot, dir)?;
    if let Some(q) = quota {
        q.add(srv.pid())?;
    }
    srv.wait_ready(Duration::from_secs(15), || {
        sys::listening(SRV_NS, false, 67)
    })?;
    sys::sleep(Duration::from_millis(500))?;
    let before = Sample::take(Some(srv.pid()));
    let mut pd = sys::ns_command(CLI_NS, Some(CLI_CPU), "perfdhcp");
    pd.args([
        "-4",
        "-l",
        CLI_IF,
        "-r",
        &rate.to_string(),
        "-p",
        &period.to_string(),
    ]);
    pd.args(["-R", &CLIENTS.to_string(), "-W", "500000"]);
    let out_path = dir.join("perfdhcp.out");
    let mut client = Proc::spawn("perfdhcp", pd, &out_path)?;
    client.wait_exit(Duration::from_secs(period + 30))?;
    let after = Sample::take(Some(srv.pid()));
    let crashed = srv.exited();
    srv.stop();
    net.kill_leftovers(SRV_NS);
    let d = after.since(&before);
    let persisted = leases_on_disk(server, dir);
    let out = fs::read_to_string(&out_path)?;
    let mut p = parse_perfdhcp(&out);
    p.rate = rate;
    p.persisted = persisted;
    p.ack_per_s = p.acks as f64 / period as f64;
    p.loss_pct = if p.discovers > 0 {
        (1.0 - p.acks as f64 / p.discovers as f64) * 100.0
    } else {
        100.0
    };
    p.srv_cpu_pct = d.proc_cpu_s / d.wall * 100.0;
    p.psi_pct = d.psi_pct;
    p.client_bound = (p.discovers as f64) < 0.95 * f64::from(rate) * period as f64;
    if let Some(st) = crashed {
        p.error = Some(format!(
            "server exited during the point ({st}): {}",
            srv.log_tail()
        ));
    } else if p.discovers == 0 {
        p.error = Some(format!(
            "perfdhcp sent nothing: {}",
            out.lines().last().unwrap_or("")
        ));
    }
    Ok(p)
}

/// Counts the leases a server left in its lease file (persistence check).
fn leases_on_disk(server: Server, dir: &Path) -> Option<u64> {
    let count = |p: &Path| -> u64 {
        fs::read_to_string(p)
            .map(|s| {
                s.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .count() as u64
            })
            .unwrap_or(0)
    };
    match server {
        // One CSV line per lease update, after a header line.
        Server::Kea => Some(count(&dir.join("kea-leases4.csv")).saturating_sub(1)),
        Server::Dnsmasq => Some(count(&dir.join("dnsmasq.leases"))),
        Server::DnsmasqRo => None,
        Server::Sanboot => {
            let files = fs::read_dir(dir.join("state")).ok()?;
            Some(files.filter_map(|e| e.ok()).map(|e| count(&e.path())).sum())
        }
    }
}

/// perfdhcp prints one "***Statistics for: X***" block per exchange type.
fn parse_perfdhcp(out: &str) -> Point {
    let mut p = Point::default();
    let mut section = "";
    for line in out.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix("***Statistics for:") {
            section = if s.contains("DISCOVER-OFFER") {
                "do"
            } else if s.contains("REQUEST-ACK") {
                "ra"
            } else {
                ""
            };
            continue;
        }
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let num = val
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        let Some(num) = num else { continue };
        match (section, key.trim()) {
            ("do", "sent packets") => p.discovers = num as u64,
            ("do", "received packets") => p.offers = num as u64,
            ("do", "avg delay") => p.do_avg_ms = num,
            ("ra", "sent packets") => p.requests = num as u64,
            ("ra", "received packets") => p.acks = num as u64,
            ("ra", "avg delay") => p.ra_avg_ms = num,
            ("ra", "max delay") => p.ra_max_ms = num,
            (_, "non unique addresses") => p.non_unique += num as u64,
            _ => {}
        }
    }
    p
}

fn kea_config(dir: &Path) -> String {
    let run = dir.display();
    format!(
        r#"{{
  "Dhcp4": {{
    "interfaces-config": {{ "interfaces": [ "{SRV_IF}" ], "dhcp-socket-type": "raw" }},
    "lease-database": {{ "type": "memfile", "persist": true, "name": "{run}/kea-leases4.csv", "lfc-interval": 0 }},
    "multi-threading": {{ "enable-multi-threading": false }},
    "valid-lifetime": 43200, "renew-timer": 21600, "rebind-timer": 37800,
    "authoritative": true,
    "subnet4": [ {{
        "id": 1, "subnet": "198.18.0.0/16",
        "pools": [ {{ "pool": "{POOL_START} - {POOL_END}" }} ],
        "option-data": [ {{ "name": "routers", "data": "{SRV_IP}" }} ]
    }} ],
    "loggers": [ {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "{run}/kea-dhcp4.log" }} ], "severity": "WARN" }} ]
  }}
}}
"#
    )
}

fn sanboot_config(dir: &Path) -> String {
    let state = dir.join("state");
    let root = dir.join("tftproot");
    let _ = fs::create_dir_all(&root);
    format!(
        r#"# generated by cargo xtask bench dhcp
[server]
address = "{SRV_IP}"
interface = "{SRV_IF}"
state_dir = "{state}"

[dhcp]
mode = "full"
pool_start = "{POOL_START}"
pool_end = "{POOL_END}"
netmask = "{NETMASK}"
router = "{SRV_IP}"
lease_secs = 43200
# Like Kea's default (no ping-check): every offer would otherwise wait for
# its address probe, and the bench compares the servers' own work.
probe = false

[tftp]
root = "{root}"
listen = "{SRV_IP}:69"

[iscsi]
listen = "{SRV_IP}:3260"
"#,
        state = state.display(),
        root = root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perfdhcp_summary() {
        let out = "***Rate statistics***\nRate: 908.5 4-way exchanges/second, expected rate: 1000\n\n\
            ***Statistics for: DISCOVER-OFFER***\nsent packets: 5000\nreceived packets: 4999\ndrops: 1\n\
            non unique addresses: 0\nmin delay: 0.060 ms\navg delay: 0.170 ms\nmax delay: 2.300 ms\n\n\
            ***Statistics for: REQUEST-ACK***\nsent packets: 4999\nreceived packets: 4997\n\
            avg delay: 0.190 ms\nmax delay: 4.200 ms\n";
        let p = parse_perfdhcp(out);
        assert_eq!(
            (p.discovers, p.offers, p.requests, p.acks),
            (5000, 4999, 4999, 4997)
        );
        assert!((p.ra_avg_ms - 0.19).abs() < 1e-9 && (p.ra_max_ms - 4.2).abs() < 1e-9);
        assert!((p.do_avg_ms - 0.17).abs() < 1e-9);
    }
}
