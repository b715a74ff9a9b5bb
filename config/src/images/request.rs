//! The operations on a station, as the command line asks them and as the
//! one-line `<host>.request` file hands them to a running `sanboot serve`.

use std::fmt;

use anyhow::{bail, Result};

use crate::StationMode;

/// One operation on a station's overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Drop the overlay: the station sees the image's current version.
    Reset,
    /// Keep a copy of the overlay under a name.
    Snapshot(String),
    /// Put a named snapshot back as the overlay (and its base version).
    Rollback(String),
    /// Merge the station's disk into a new version of its image.
    Commit,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Reset => f.write_str("reset"),
            Request::Snapshot(n) => write!(f, "snapshot {n}"),
            Request::Rollback(n) => write!(f, "rollback {n}"),
            Request::Commit => f.write_str("commit"),
        }
    }
}

/// A snapshot name is a file name: letters, digits, '.', '_', '-', not
/// starting with '.'.
pub fn check_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        bail!("snapshot name {name:?}: use letters, digits, '.', '_' and '-' (not first '.')");
    }
    Ok(())
}

impl Request {
    /// Parses the request file's line (what `Display` wrote).
    pub fn parse(line: &str) -> Result<Request> {
        let mut words = line.split_whitespace();
        let req = match (words.next(), words.next(), words.next()) {
            (Some("reset"), None, _) => Request::Reset,
            (Some("commit"), None, _) => Request::Commit,
            (Some("snapshot"), Some(n), None) => Request::Snapshot(n.to_string()),
            (Some("rollback"), Some(n), None) => Request::Rollback(n.to_string()),
            _ => bail!("not a station request: {line:?}"),
        };
        if let Request::Snapshot(n) | Request::Rollback(n) = &req {
            check_snapshot_name(n)?;
        }
        Ok(req)
    }

    /// Whether the request changes what a connected station would read:
    /// such a request waits until the station has no session.
    pub fn changes_contents(&self) -> bool {
        matches!(self, Request::Reset | Request::Rollback(_))
    }

    /// Snapshots belong to `mode = "snapshot"` stations; a volatile
    /// station's overlay is gone at its next boot, so it cannot be committed
    /// meaningfully either unless it runs now (allowed).
    pub fn allowed_for(&self, hostname: &str, mode: StationMode) -> Result<()> {
        match (self, mode) {
            (Request::Snapshot(_) | Request::Rollback(_), StationMode::Snapshot) => Ok(()),
            (Request::Snapshot(_) | Request::Rollback(_), m) => bail!(
                "station {hostname} has mode = \"{}\"; snapshots and rollback are for \
                 mode = \"snapshot\"",
                match m {
                    StationMode::Persistent => "persistent",
                    StationMode::Volatile => "volatile",
                    StationMode::Snapshot => "snapshot",
                }
            ),
            _ => Ok(()),
        }
    }
}
