//! What every bench needs from the machine: namespaces and processes that
//! clean up after themselves (Drop, also after Ctrl-C), CPU accounting, the
//! release build of sanboot, and the report file.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The server side of the veth pair.
pub const SRV_NS: &str = "sbb-srv";
/// The client side of the veth pair.
pub const CLI_NS: &str = "sbb-cli";
pub const SRV_IF: &str = "sbb-s0";
pub const CLI_IF: &str = "sbb-c0";
pub const SRV_IP: &str = "198.18.0.1";
pub const CLI_IP: &str = "198.18.0.2";
/// Server processes run here, load generators on the other CPU.
pub const SRV_CPU: u32 = 1;
pub const CLI_CPU: u32 = 0;

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Turns SIGINT/SIGTERM into a flag the benches poll, so that every guard's
/// Drop runs (processes stopped, namespaces deleted) instead of the process
/// dying with the namespaces left behind.
pub fn install_stop_flag() -> Result<()> {
    let flag = STOP
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag)?;
    Ok(())
}

/// Errors out once Ctrl-C was pressed.
pub fn check_stop() -> Result<()> {
    if STOP.get().is_some_and(|f| f.load(Ordering::Relaxed)) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps in small steps, returning early with an error on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `target/bench`, created on demand.
pub fn bench_dir() -> Result<PathBuf> {
    let d = root().join("target").join("bench");
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Runs a command to completion, failing with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip netns exec NS [taskset -c CPU] PROG ARGS...`: both `ip netns exec`
/// and `taskset` exec in place, so the child's PID is the program's PID.
pub fn ns_command(ns: &str, cpu: Option<u32>, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    if let Some(cpu) = cpu {
        c.args(["taskset", "-c", &cpu.to_string()]);
    }
    c.arg(prog);
    c
}

/// Network namespaces created by this run, deleted on Drop.
#[derive(Debug)]
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn refuse_existing(names: &[&str]) -> Result<()> {
        let list = ip(&["netns", "list"])?;
        for n in names {
            if list.split_whitespace().any(|w| w == *n) {
                bail!(
                    "namespace {n} already exists: another bench is running, or a killed one left it \
                     (remove it with `ip netns del {n}` once no bench runs)"
                );
            }
        }
        Ok(())
    }

    /// `sbb-srv` and `sbb-cli` joined by a veth pair (198.18.0.1/16 ↔ 198.18.0.2/16).
    /// The pair is created directly inside the namespaces: nothing appears in
    /// the host namespace.
    pub fn veth_pair() -> Result<Netns> {
        Self::refuse_existing(&[SRV_NS, CLI_NS])?;
        let mut ns = Netns { names: Vec::new() };
        for n in [SRV_NS, CLI_NS] {
            ip(&["netns", "add", n])?;
            ns.names.push(n.to_string());
        }
        ip(&[
            "link", "add", "name", SRV_IF, "netns", SRV_NS, "mtu", "1500", "type", "veth", "peer",
            "name", CLI_IF, "netns", CLI_NS, "mtu", "1500",
        ])?;
        for (n, ifc, addr) in [(SRV_NS, SRV_IF, SRV_IP), (CLI_NS, CLI_IF, CLI_IP)] {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&["-n", n, "addr", "add", &format!("{addr}/16"), "dev", ifc])?;
            ip(&["-n", n, "link", "set", ifc, "up"])?;
            // An egress for 255.255.255.255 and for replies to not-yet-configured clients.
            ip(&["-n", n, "route", "add", "default", "dev", ifc])?;
            // Room for windowed TFTP bursts; per-namespace on current kernels.
            let _ = run(ns_command(n, None, "sysctl").args([
                "-qw",
                "net.core.rmem_max=16777216",
                "net.core.wmem_max=16777216",
            ]));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(ns)
    }

    /// One more address on an interface inside one of our namespaces.
    pub fn add_addr(&self, ns: &str, ifc: &str, cidr: &str) -> Result<()> {
        ip(&["-n", ns, "addr", "add", cidr, "dev", ifc]).map(|_| ())
    }

    /// One namespace with only its loopback up (the iSCSI bench).
    pub fn lone(name: &str) -> Result<Netns> {
        Self::refuse_existing(&[name])?;
        ip(&["netns", "add", name])?;
        let ns = Netns {
            names: vec![name.to_string()],
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Stops every process still running inside one of our namespaces
    /// (forked children of a server, e.g. tftpd-hpa's per-transfer processes).
    pub fn kill_leftovers(&self, ns: &str) {
        if !self.names.iter().any(|n| n == ns) {
            return;
        }
        for sig in ["-TERM", "-KILL"] {
            let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                return;
            }
            let _ = Command::new("kill")
                .arg(sig)
                .args(&pids)
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.names.clone() {
            self.kill_leftovers(&n);
            if let Err(e) = ip(&["netns", "del", &n]) {
                eprintln!("bench: could not delete namespace {n}: {e:#}");
            }
        }
    }
}

/// A process we started; stopped by PID on Drop (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// tgtd ignores SIGTERM while sessions are open: go straight to SIGKILL.
    pub kill_first: bool,
    done: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout+stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            kill_first: false,
            done: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while running, the exit status once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = self.child.try_wait().ok().flatten();
        }
        self.done
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let from = lines.len().saturating_sub(6);
        lines.get(from..).unwrap_or_default().join(" | ")
    }

    /// Waits until `ready()` holds, failing if the process exits first or the time runs out.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            check_stop()?;
            if let Some(st) = self.exited() {
                bail!("{} exited ({st}): {}", self.name, self.log_tail());
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "{} not ready after {:?}: {}",
                    self.name,
                    timeout,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit by itself, bounded; kills it when the time runs out.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            check_stop()?;
            if Instant::now() >= end {
                self.stop();
                bail!("{} did not finish within {:?}", self.name, timeout);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if !self.kill_first {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        self.done = self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds of our own children that have been waited for (cutime +
/// cstime of this process): around one `Proc::wait_exit`, the CPU the load
/// generator used, to tell a client-bound point from a server-bound one.
pub fn reaped_children_cpu_secs() -> f64 {
    stat_ticks(std::process::id(), 13..15) as f64 / clk_tck()
}

fn stat_ticks(pid: u32, fields: std::ops::Range<usize>) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// utime+stime of a process (all its threads), in seconds.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may itself hold spaces and ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime/stime/cutime/cstime are fields 14-17.
    let ticks: u64 = (11..15)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clk_tck()
}

fn clk_tck() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        run(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU pressure "some" total in µs: its growth over wall time is the share of
/// time some task waited for a CPU (other tenants on this shared machine).
pub fn psi_us() -> u64 {
    let s = fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("some"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples taken around one measurement point.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    psi: u64,
    pid_cpu: f64,
    pid: Option<u32>,
}

impl Sample {
    pub fn take(pid: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            psi: psi_us(),
            pid_cpu: pid.map(proc_cpu_secs).unwrap_or(0.0),
            pid,
        }
    }

    /// Wall seconds, PSI % and process CPU seconds between two samples.
    pub fn since(&self, start: &Sample) -> Delta {
        let wall = self.at.duration_since(start.at).as_secs_f64();
        let psi = if wall > 0.0 {
            self.psi.saturating_sub(start.psi) as f64 / (wall * 1e6) * 100.0
        } else {
            0.0
        };
        Delta {
            wall,
            psi_pct: psi,
            proc_cpu_s: if self.pid.is_some() {
                (self.pid_cpu - start.pid_cpu).max(0.0)
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Delta {
    pub wall: f64,
    pub psi_pct: f64,
    pub proc_cpu_s: f64,
}

/// Is something listening on this UDP (or TCP) port inside `ns`?
pub fn listening(ns: &str, tcp: bool, port: u16) -> bool {
    listening_on(ns, tcp, &format!(":{port}"))
}

/// Is something listening on a local address ending in `suffix` (":69",
/// "198.18.0.12:69") inside `ns`?
pub fn listening_on(ns: &str, tcp: bool, suffix: &str) -> bool {
    let flags = if tcp { "-Htln" } else { "-Huln" };
    let Ok(out) = run(ns_command(ns, None, "ss").arg(flags)) else {
        return false;
    };
    out.lines().any(|l| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|local| local.ends_with(suffix))
    })
}

/// Builds `target/release/sanboot` (unless told not to) and returns its path.
pub fn sanboot_binary(build: bool) -> Result<PathBuf> {
    let bin = root().join("target").join("release").join("sanboot");
    if build {
        eprintln!("bench: cargo build --release -p sanboot-linux");
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "sanboot-linux"])
            .current_dir(root())
            .status()
            .context("running cargo build")?;
        if !st.success() {
            bail!("cargo build --release -p sanboot-linux failed");
        }
    }
    if !bin.exists() {
        bail!("{} does not exist (run without --no-build)", bin.display());
    }
    Ok(bin)
}

/// `date +%Y%m%d-%H%M%S` (local time) without a date crate.
pub fn timestamp() -> String {
    run(Command::new("date").arg("+%Y%m%d-%H%M%S"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "now".into())
}

/// A fresh, empty directory for one run's state (per measurement point).
pub fn fresh_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("clearing {}", path.display()))?;
    }
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A markdown table.
#[derive(Debug, Default)]
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        s.push_str(&line(&self.head));
        let _ = writeln!(
            s,
            "|{}",
            self.head.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// The results file `target/bench/<what>-<timestamp>.md`: every section is
/// printed and appended as soon as it exists, so an interrupted run keeps
/// what it measured.
#[derive(Debug)]
pub struct Report {
    pub path: PathBuf,
}

impl Report {
    pub fn create(what: &str) -> Result<Report> {
        let path = bench_dir()?.join(format!("{what}-{}.md", timestamp()));
        fs::write(&path, "")?;
        Ok(Report { path })
    }

    pub fn add(&self, text: &str) -> Result<()> {
        println!("{text}");
        let mut f = fs::OpenOptions::new().append(true).open(&self.path)?;
        writeln!(f, "{text}")?;
        Ok(())
    }
}

/// Formats with a fixed number of decimals, or "-" for NaN.
pub fn f(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

/// "a/b = x.xx×" or "-" when either side is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// Host facts worth writing above every table.
pub fn machine_line() -> String {
    let kernel = run(Command::new("uname").arg("-r")).unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let commit = run(Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["describe", "--always", "--dirty"]))
    .unwrap_or_default();
    format!(
        "sanboot commit {}; host: {cpus} CPUs, kernel {}, loadavg {} (PSI % column = share of time some task waited for a CPU: \
         other tenants' load; compare servers within one run)",
        commit.trim(),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A cgroup (v1 `cpu` controller) that caps its processes at a share of one
/// core, so a bench can give every server the same CPU budget and make the
/// server, not the load generator, the limit. Removed on drop.
pub struct CpuQuota {
    dir: PathBuf,
}

impl CpuQuota {
    const ROOT: &'static str = "/sys/fs/cgroup/cpu";

    pub fn create(pct: u32) -> Result<CpuQuota> {
        let dir = Path::new(Self::ROOT).join(format!("sanboot-bench-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| {
            format!(
                "creating {} (needs root and the cgroup v1 cpu controller)",
                dir.display()
            )
        })?;
        let quota = CpuQuota { dir };
        fs::write(quota.dir.join("cpu.cfs_period_us"), "100000")?;
        fs::write(quota.dir.join("cpu.cfs_quota_us"), (pct * 1000).to_string())?;
        Ok(quota)
    }

    /// Moves the process (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", self.dir.display()))
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Its processes have been stopped by then; an empty cgroup can be removed.
        let _ = fs::remove_dir(&self.dir);
    }
}
