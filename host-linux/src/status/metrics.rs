//! Counters for `/metrics`, in the Prometheus text exposition format
//! (version 0.0.4): `# HELP`, `# TYPE`, then `name{labels} value` lines.
//!
//! Plain atomics, so the packet and command paths never take a lock to
//! count; rendering reads them all once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use sanboot_core::timeline::{Stage, StageCounts};

/// Upper bounds (seconds) of the iSCSI command latency histogram.
pub const LATENCY_BOUNDS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// DHCP message types counted, by DHCP's option 53 value (1–8).
const DHCP_TYPES: [&str; 8] = [
    "discover", "offer", "request", "decline", "ack", "nak", "release", "inform",
];

/// The ways a TFTP (or HTTP) fetch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// Every byte sent and acknowledged.
    Complete,
    /// The request was refused (not found, busy).
    Refused,
    /// Started but did not finish (timeout, client error, I/O).
    Failed,
    /// Ended by the client before any data: a PXE ROM's size probe.
    Probe,
}

impl FetchResult {
    fn index(self) -> usize {
        self as usize
    }
    const NAMES: [&'static str; 4] = ["complete", "refused", "failed", "probe"];
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    /// Sum in microseconds (rendered in seconds).
    sum_us: AtomicU64,
}

/// Every counter sanboot exports.
#[derive(Debug)]
pub struct Metrics {
    /// Received (index 0) and sent (1) DHCP messages by type − 1.
    dhcp: [[AtomicU64; 8]; 2],
    leases: AtomicI64,
    /// [via tftp/http][script?][result]
    fetches: [[[AtomicU64; 4]; 2]; 2],
    fetch_bytes: [AtomicU64; 2],
    iscsi_sessions: AtomicI64,
    iscsi_logins: AtomicU64,
    iscsi_login_failures: AtomicU64,
    chap_failures: AtomicU64,
    commands: [AtomicU64; 256],
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    latency: Histogram,
    stages: std::sync::Mutex<StageCounts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            dhcp: Default::default(),
            leases: AtomicI64::new(0),
            fetches: Default::default(),
            fetch_bytes: Default::default(),
            iscsi_sessions: AtomicI64::new(0),
            iscsi_logins: AtomicU64::new(0),
            iscsi_login_failures: AtomicU64::new(0),
            chap_failures: AtomicU64::new(0),
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            latency: Histogram::default(),
            stages: Default::default(),
        }
    }
}

impl Metrics {
    /// A DHCP message of option-53 `kind` in (`sent` false) or out.
    pub fn dhcp(&self, sent: bool, kind: u8) {
        let dir = usize::from(sent);
        if let Some(c) = self
            .dhcp
            .get(dir)
            .and_then(|d| d.get(usize::from(kind).wrapping_sub(1)))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Bound leases now.
    pub fn set_leases(&self, n: usize) {
        self.leases
            .store(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
    }

    /// One fetch ended (`http` false: TFTP).
    pub fn fetch(&self, http: bool, script: bool, result: FetchResult, bytes: u64) {
        let via = usize::from(http);
        if let Some(c) = self
            .fetches
            .get(via)
            .and_then(|v| v.get(usize::from(script)))
            .and_then(|s| s.get(result.index()))
        {
            c.fetch_add(1, Relaxed);
        }
        if let Some(b) = self.fetch_bytes.get(via) {
            b.fetch_add(bytes, Relaxed);
        }
    }

    /// A session reached full feature phase (+1) or ended (−1).
    pub fn session(&self, delta: i64) {
        self.iscsi_sessions.fetch_add(delta, Relaxed);
        if delta > 0 {
            self.iscsi_logins.fetch_add(1, Relaxed);
        }
    }

    /// A login was refused or failed; `chap` when CHAP did not verify.
    pub fn login_failed(&self, chap: bool) {
        self.iscsi_login_failures.fetch_add(1, Relaxed);
        if chap {
            self.chap_failures.fetch_add(1, Relaxed);
        }
    }

    /// Adds what one connection counted since its last call, and empties
    /// `b`. Connections count commands in a [`CommandBatch`] of their own
    /// and add it before they wait: a handful of shared atomics per batch
    /// of PDUs instead of several per command.
    pub fn add(&self, b: &mut CommandBatch) {
        if !b.pending {
            return;
        }
        for (op, n) in b.opcodes.drain(..) {
            if let Some(c) = self.commands.get(usize::from(op)) {
                c.fetch_add(n, Relaxed);
            }
        }
        add_nonzero(&self.read_bytes, b.read);
        add_nonzero(&self.written_bytes, b.written);
        for (shared, n) in self.latency.buckets.iter().zip(&b.buckets) {
            add_nonzero(shared, *n);
        }
        add_nonzero(&self.latency.count, b.count);
        add_nonzero(&self.latency.sum_us, b.sum_us);
        *b = CommandBatch {
            opcodes: std::mem::take(&mut b.opcodes),
            ..CommandBatch::default()
        };
    }

    /// A boot stage happened.
    pub fn stage(&self, stage: Stage) {
        self.stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(stage);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        header(
            &mut o,
            "sanboot_dhcp_packets_total",
            "counter",
            "DHCP messages by direction and type.",
        );
        for (dir, name) in [(0, "in"), (1, "out")] {
            for (i, t) in DHCP_TYPES.iter().enumerate() {
                let n = load(self.dhcp.get(dir).and_then(|d| d.get(i)));
                // What a server hears and says always shows; the rest once seen.
                let usual = match dir {
                    0 => matches!(*t, "discover" | "request"),
                    _ => matches!(*t, "offer" | "ack" | "nak"),
                };
                if n > 0 || usual {
                    let _ = writeln!(
                        o,
                        "sanboot_dhcp_packets_total{{direction=\"{name}\",type=\"{t}\"}} {n}"
                    );
                }
            }
        }
        gauge(
            &mut o,
            "sanboot_dhcp_leases",
            "Bound DHCP leases (full mode; follows the lease table once a second).",
            self.leases.load(Relaxed),
        );
        header(
            &mut o,
            "sanboot_boot_stages_total",
            "counter",
            "Boot steps of network-booting stations.",
        );
        let stages = *self.stages.lock().unwrap_or_else(|e| e.into_inner());
        for (s, n) in stages.iter() {
            let _ = writeln!(o, "sanboot_boot_stages_total{{stage=\"{}\"}} {n}", s.name());
        }
        header(
            &mut o,
            "sanboot_fetches_total",
            "counter",
            "Boot file and script transfers by protocol, kind and result.",
        );
        for (via, vname) in [(0, "tftp"), (1, "http")] {
            for (script, kname) in [(0, "boot_file"), (1, "script")] {
                for (r, rname) in FetchResult::NAMES.iter().enumerate() {
                    let n = load(
                        self.fetches
                            .get(via)
                            .and_then(|v| v.get(script))
                            .and_then(|s| s.get(r)),
                    );
                    let _ = writeln!(
                        o,
                        "sanboot_fetches_total{{protocol=\"{vname}\",kind=\"{kname}\",result=\"{rname}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut o,
            "sanboot_fetch_bytes_total",
            "counter",
            "Bytes of boot files and scripts the clients acknowledged.",
        );
        for (via, vname) in [(0, "tftp"), (1, "http")] {
            let n = load(self.fetch_bytes.get(via));
            let _ = writeln!(o, "sanboot_fetch_bytes_total{{protocol=\"{vname}\"}} {n}");
        }
        gauge(
            &mut o,
            "sanboot_iscsi_sessions",
            "iSCSI sessions in full feature phase now.",
            self.iscsi_sessions.load(Relaxed),
        );
        counter(
            &mut o,
            "sanboot_iscsi_logins_total",
            "iSCSI logins that reached full feature phase.",
            self.iscsi_logins.load(Relaxed),
        );
        counter(
            &mut o,
            "sanboot_iscsi_login_failures_total",
            "iSCSI logins refused or failed.",
            self.iscsi_login_failures.load(Relaxed),
        );
        counter(
            &mut o,
            "sanboot_iscsi_chap_failures_total",
            "iSCSI logins whose CHAP response did not verify.",
            self.chap_failures.load(Relaxed),
        );
        header(
            &mut o,
            "sanboot_iscsi_commands_total",
            "counter",
            "SCSI commands by operation code.",
        );
        for (op, c) in self.commands.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    o,
                    "sanboot_iscsi_commands_total{{opcode=\"0x{op:02x}\",name=\"{}\"}} {n}",
                    opcode_name(op as u8)
                );
            }
        }
        header(
            &mut o,
            "sanboot_iscsi_bytes_total",
            "counter",
            "Bytes read from and written to the disks over iSCSI.",
        );
        let _ = writeln!(
            o,
            "sanboot_iscsi_bytes_total{{direction=\"read\"}} {}",
            self.read_bytes.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "sanboot_iscsi_bytes_total{{direction=\"write\"}} {}",
            self.written_bytes.load(Relaxed)
        );
        header(
            &mut o,
            "sanboot_iscsi_command_seconds",
            "histogram",
            "SCSI command time from arrival to its end (status sent).",
        );
        let mut cumulative = 0;
        for (b, c) in LATENCY_BOUNDS.iter().zip(&self.latency.buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(
                o,
                "sanboot_iscsi_command_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = self.latency.count.load(Relaxed);
        let _ = writeln!(
            o,
            "sanboot_iscsi_command_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "sanboot_iscsi_command_seconds_sum {sum}");
        let _ = writeln!(o, "sanboot_iscsi_command_seconds_count {count}");
        o
    }
}

/// One connection's command counts, not yet added to [`Metrics`].
#[derive(Debug, Default)]
pub struct CommandBatch {
    /// (opcode, count): a connection uses a few opcodes at a time.
    opcodes: Vec<(u8, u64)>,
    read: u64,
    written: u64,
    buckets: [u64; LATENCY_BOUNDS.len()],
    count: u64,
    sum_us: u64,
    pending: bool,
}

impl CommandBatch {
    /// A SCSI command with this operation code arrived.
    pub fn command(&mut self, opcode: u8) {
        self.pending = true;
        match self.opcodes.iter_mut().find(|(op, _)| *op == opcode) {
            Some((_, n)) => *n += 1,
            None => self.opcodes.push((opcode, 1)),
        }
    }

    /// Bytes read from and written to the disks.
    pub fn io_bytes(&mut self, read: u64, written: u64) {
        self.pending = true;
        self.read += read;
        self.written += written;
    }

    /// One command took `secs` from arrival to its end.
    pub fn latency(&mut self, secs: f64) {
        self.pending = true;
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get_mut(i) {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum_us += (secs * 1e6) as u64;
    }
}

fn add_nonzero(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Relaxed);
    }
}

fn load(c: Option<&AtomicU64>) -> u64 {
    c.map_or(0, |c| c.load(Relaxed))
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: i64) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// A label for the common operation codes (SBC-3/SPC-4 names).
fn opcode_name(op: u8) -> &'static str {
    match op {
        0x00 => "test_unit_ready",
        0x03 => "request_sense",
        0x08 => "read_6",
        0x0a => "write_6",
        0x12 => "inquiry",
        0x15 | 0x55 => "mode_select",
        0x1a | 0x5a => "mode_sense",
        0x1b => "start_stop_unit",
        0x1e => "prevent_allow_medium_removal",
        0x25 => "read_capacity_10",
        0x28 => "read_10",
        0x2a => "write_10",
        0x2f | 0x8f => "verify",
        0x35 | 0x91 => "synchronize_cache",
        0x41 | 0x93 => "write_same",
        0x42 => "unmap",
        0x4d => "log_sense",
        0x5e => "persistent_reserve_in",
        0x5f => "persistent_reserve_out",
        0x83 => "extended_copy",
        0x84 => "receive_copy_results",
        0x88 => "read_16",
        0x89 => "compare_and_write",
        0x8a => "write_16",
        0x9e => "service_action_in_16",
        0xa0 => "report_luns",
        0xa3 => "maintenance_in",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    /// Every sample line: `name{labels} value` → (series, value).
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        samples(text)
            .into_iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .1
    }

    #[test]
    fn counters_show_what_was_recorded() {
        let m = Metrics::default();
        m.dhcp(false, 1);
        m.dhcp(false, 1);
        m.dhcp(true, 2);
        m.dhcp(true, 9); // not a DHCP type: ignored
        m.set_leases(3);
        m.fetch(false, true, FetchResult::Complete, 700);
        m.fetch(false, false, FetchResult::Refused, 0);
        m.fetch(false, false, FetchResult::Probe, 0);
        m.session(1);
        m.session(1);
        m.session(-1);
        m.login_failed(true);
        let mut b = CommandBatch::default();
        b.command(0x28);
        b.command(0x28);
        b.command(0x12);
        b.io_bytes(4096, 512);
        m.add(&mut b);
        // Added once: a second add of the emptied batch changes nothing.
        m.add(&mut b);
        m.stage(Stage::FirstRead);
        let t = m.render();
        assert_eq!(
            value(
                &t,
                r#"sanboot_dhcp_packets_total{direction="in",type="discover"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &t,
                r#"sanboot_dhcp_packets_total{direction="out",type="offer"}"#
            ),
            1.0
        );
        assert_eq!(value(&t, "sanboot_dhcp_leases"), 3.0);
        assert_eq!(
            value(
                &t,
                r#"sanboot_fetches_total{protocol="tftp",kind="script",result="complete"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                r#"sanboot_fetches_total{protocol="tftp",kind="boot_file",result="refused"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                r#"sanboot_fetches_total{protocol="tftp",kind="boot_file",result="probe"}"#
            ),
            1.0
        );
        assert_eq!(
            value(&t, r#"sanboot_fetch_bytes_total{protocol="tftp"}"#),
            700.0
        );
        assert_eq!(value(&t, "sanboot_iscsi_sessions"), 1.0);
        assert_eq!(value(&t, "sanboot_iscsi_logins_total"), 2.0);
        assert_eq!(value(&t, "sanboot_iscsi_chap_failures_total"), 1.0);
        assert_eq!(
            value(
                &t,
                r#"sanboot_iscsi_commands_total{opcode="0x28",name="read_10"}"#
            ),
            2.0
        );
        assert_eq!(
            value(&t, r#"sanboot_iscsi_bytes_total{direction="read"}"#),
            4096.0
        );
        assert_eq!(
            value(&t, r#"sanboot_boot_stages_total{stage="first_read"}"#),
            1.0
        );
        assert_eq!(
            value(&t, r#"sanboot_boot_stages_total{stage="dhcp_ack"}"#),
            0.0
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let m = Metrics::default();
        let mut b = CommandBatch::default();
        b.latency(0.000_05);
        b.latency(0.002);
        m.add(&mut b);
        b.latency(0.002);
        b.latency(30.0); // beyond the last bound: only in +Inf
        m.add(&mut b);
        let t = m.render();
        let b = |le: &str| {
            value(
                &t,
                &format!("sanboot_iscsi_command_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.0001"), 1.0);
        assert_eq!(b("0.001"), 1.0);
        assert_eq!(b("0.005"), 3.0);
        assert_eq!(b("5"), 3.0);
        assert_eq!(b("+Inf"), 4.0);
        assert_eq!(value(&t, "sanboot_iscsi_command_seconds_count"), 4.0);
        let sum = value(&t, "sanboot_iscsi_command_seconds_sum");
        assert!((sum - 30.00405).abs() < 1e-6, "{sum}");
    }

    /// Each family is announced once, with HELP and TYPE before its samples,
    /// and every sample line parses (what a Prometheus scrape checks).
    #[test]
    fn the_text_is_well_formed() {
        let t = Metrics::default().render();
        let mut seen = std::collections::HashSet::new();
        let mut typed = None;
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(seen.insert(name.to_string()), "{name} twice");
                typed = Some(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let family = typed.as_deref().unwrap();
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
        assert_eq!(
            samples(&t).len(),
            t.lines().filter(|l| !l.starts_with('#')).count()
        );
    }
}
