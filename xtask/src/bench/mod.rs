//! `cargo xtask bench dhcp|tftp|http|iscsi`: sanboot measured side by side with
//! the peers in one run, printed as markdown tables with sanboot/peer ratios
//! and appended to `target/bench/<what>-<timestamp>.md`.
//!
//! DHCP and TFTP run in two network namespaces joined by a veth pair
//! (`sbb-srv` 198.18.0.1/16 ↔ `sbb-cli` 198.18.0.2/16), the server pinned to
//! CPU 1 and the load generator to CPU 0. iSCSI runs on the loopback of a
//! namespace of its own (`sbb-isc`). Every process is stopped by PID and the
//! namespaces are deleted on exit, also on error and Ctrl-C.

mod dhcp;
mod http;
mod iscsi;
mod storm;
mod sys;
mod tftp;
mod tftp_client;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask bench <dhcp|tftp|http|iscsi|storm|all> [options]

  --servers a,b,...  subset of servers/targets to run
                     dhcp: kea,dnsmasq,dnsmasq-ro,sanboot
                     tftp: hpa,dnsmasq,atftpd,sanboot   (atftpd only if found, see --atftpd)
                     iscsi: tgt,sanboot
                     storm: overlay,copies,tgt (sanboot serves the first two)
  --seconds N        dhcp: perfdhcp period per point [10]; iscsi: seconds per workload [10]
  --rates a,b,...    dhcp: offered DORA/s, ascending [2000,4000,6000,8000,12000,16000]
  --reps N           tftp: repetitions of each single-transfer point, median shown [1]
  --parallel N       tftp: concurrent 4 MiB transfers [100]
  --atftpd PATH      tftp: atftpd binary (windowsize-capable peer; default: extracted under target/bench/opt)
  --no-build         use the existing target/release/sanboot
  --cpu-quota PCT    dhcp: cap the server at PCT % of one core (cgroup v1 cpu quota), so the server,
                     not perfdhcp, is the limit: the same CPU budget for every server
  --quick            short points (dhcp 5 s, iscsi 5 s, tftp 20 parallel)";

/// Options shared by the benches.
#[derive(Debug, Clone)]
pub struct Opts {
    pub servers: Option<Vec<String>>,
    pub seconds: Option<u64>,
    pub rates: Option<Vec<u32>>,
    pub reps: u32,
    pub parallel: usize,
    pub atftpd: Option<std::path::PathBuf>,
    pub build: bool,
    pub quick: bool,
    pub cpu_quota: Option<u32>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut o = Opts {
            servers: None,
            seconds: None,
            rates: None,
            reps: 1,
            parallel: 100,
            atftpd: None,
            build: true,
            quick: false,
            cpu_quota: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--servers" => {
                    o.servers = Some(val()?.split(',').map(str::to_string).collect());
                }
                "--seconds" => o.seconds = Some(val()?.parse().context("--seconds")?),
                "--rates" => {
                    let v: Result<Vec<u32>, _> = val()?.split(',').map(str::parse).collect();
                    o.rates = Some(v.context("--rates")?);
                }
                "--reps" => o.reps = val()?.parse().context("--reps")?,
                "--parallel" => o.parallel = val()?.parse().context("--parallel")?,
                "--atftpd" => o.atftpd = Some(val()?.into()),
                "--no-build" => o.build = false,
                "--quick" => o.quick = true,
                "--cpu-quota" => {
                    let pct: u32 = val()?.parse().context("--cpu-quota")?;
                    if !(1..=100).contains(&pct) {
                        bail!("--cpu-quota must be 1..=100 (% of one core)");
                    }
                    o.cpu_quota = Some(pct);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        if o.quick {
            o.seconds.get_or_insert(5);
            o.parallel = o.parallel.min(20);
        }
        if !(1..=600).contains(&o.seconds.unwrap_or(10)) {
            bail!("--seconds must be 1..=600");
        }
        if !(1..=1000).contains(&o.parallel) || !(1..=20).contains(&o.reps) {
            bail!("--parallel must be 1..=1000 and --reps 1..=20");
        }
        Ok(o)
    }

    /// Is `name` selected by --servers (all are by default)?
    pub fn wants(&self, name: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == name))
    }
}

/// Entry point of `cargo xtask bench ...`.
pub fn run(args: &[String]) -> Result<()> {
    let Some((what, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    // Internal: the TFTP load client, re-executed inside the client namespace.
    if what == "tftp-client" {
        return tftp_client::main(rest);
    }
    let opts = Opts::parse(rest)?;
    sys::install_stop_flag()?;
    match what.as_str() {
        "dhcp" => dhcp::bench(&opts),
        "tftp" => tftp::bench(&opts),
        "http" => http::bench(&opts),
        "iscsi" => iscsi::bench(&opts),
        "storm" => storm::bench(&opts),
        "all" => {
            let mut o = opts.clone();
            dhcp::bench(&o)?;
            o.build = false;
            tftp::bench(&o)?;
            iscsi::bench(&o)
        }
        _ => bail!("{USAGE}"),
    }
}
