//! `sanboot status`: asks the running server's `[web] listen` address for
//! `/api/stations` and prints one line per station.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::Config;

#[derive(Debug, Deserialize)]
struct Snapshot {
    now_ms: u64,
    stations: Vec<Station>,
    sessions: Vec<Session>,
}

#[derive(Debug, Deserialize)]
struct Station {
    id: String,
    hostname: Option<String>,
    ip: Option<String>,
    stage: String,
    boot: u32,
    last_seen_ms: u64,
    stages: Vec<StageTime>,
    bytes_read: u64,
    bytes_written: u64,
    errors: u64,
}

#[derive(Debug, Deserialize)]
struct StageTime {
    at_ms: u64,
}

#[derive(Debug, Deserialize)]
struct Session {
    station: String,
    initiator: String,
    target: String,
}

/// Fetches and prints the table.
pub fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let Some(listen) = config.web.listen else {
        anyhow::bail!(
            "{}: [web] listen is not set, so the server has no status listener",
            config_path.display()
        );
    };
    // A wildcard listen address is reached on loopback.
    let host = if listen.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
    } else {
        listen
    };
    let url = format!("http://{host}/api/stations");
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot reach sanboot at {url} (is `sanboot serve` running?)"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let snapshot: Snapshot =
        serde_json::from_str(&body).with_context(|| format!("{url}: not sanboot's JSON"))?;
    print!("{}", table(&snapshot));
    Ok(())
}

/// Columns of the table.
const COLUMNS: usize = 11;

fn table(s: &Snapshot) -> String {
    let mut rows: Vec<[String; COLUMNS]> = vec![[
        "STATION".to_string(),
        "HOST".into(),
        "IP".into(),
        "STAGE".into(),
        "BOOT".into(),
        "BOOT TIME".into(),
        "LAST SEEN".into(),
        "READ".into(),
        "WRITTEN".into(),
        "ERR".into(),
        "SESSIONS".into(),
    ]];
    for st in &s.stations {
        let sessions = s
            .sessions
            .iter()
            .filter(|x| x.station == st.id)
            .map(|x| format!("{} → {}", x.initiator, x.target))
            .collect::<Vec<_>>()
            .join(", ");
        let boot_time = st.stages.last().map_or(0, |t| t.at_ms);
        rows.push([
            st.id.clone(),
            st.hostname.clone().unwrap_or_else(|| "-".into()),
            st.ip.clone().unwrap_or_else(|| "-".into()),
            st.stage.clone(),
            st.boot.to_string(),
            format!("{:.1} s", boot_time as f64 / 1000.0),
            format!(
                "{:.0} s ago",
                s.now_ms.saturating_sub(st.last_seen_ms) as f64 / 1000.0
            ),
            human(st.bytes_read),
            human(st.bytes_written),
            st.errors.to_string(),
            if sessions.is_empty() {
                "-".into()
            } else {
                sessions
            },
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if s.stations.is_empty() {
        out.push_str("(no station has booted yet)\n");
    }
    out
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    match (i, UNITS.get(i)) {
        (0, _) => format!("{n} B"),
        (_, Some(u)) => format!("{v:.1} {u}"),
        _ => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_table_has_one_aligned_line_per_station() {
        let json = r#"{"now_ms":10000,"started_ms":0,"disks":[],
          "sessions":[{"id":3,"initiator":"iqn.x:st1","target":"iqn.t:disk","station":"52:54:00:e2:e0:01",
                       "peer":"192.0.2.100:1234","auth":"None","since_ms":9000}],
          "stations":[{"id":"52:54:00:e2:e0:01","hostname":"st1","ip":"192.0.2.100","stage":"first_read",
            "boot":1,"boot_started_ms":5000,"last_seen_ms":8000,"events":[],"errors":0,
            "bytes_read":1572864,"bytes_written":0,
            "stages":[{"stage":"dhcp_discover","at_ms":0,"took_ms":5},{"stage":"first_read","at_ms":2500,"took_ms":null}]}]}"#;
        let s: Snapshot = serde_json::from_str(json).unwrap();
        let t = table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("STATION"));
        for want in [
            "52:54:00:e2:e0:01",
            "st1",
            "first_read",
            "2.5 s",
            "2 s ago",
            "1.5 MiB",
            "iqn.x:st1 → iqn.t:disk",
        ] {
            assert!(lines[1].contains(want), "{want} missing: {t}");
        }
        // Columns line up: STAGE starts where the stage does.
        assert_eq!(lines[0].find("STAGE"), lines[1].find("first_read"));
    }
}
