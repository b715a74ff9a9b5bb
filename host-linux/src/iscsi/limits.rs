//! Exhaustion is a refusal, not a lockout: caps on TCP connections (all,
//! and per source address) checked before a connection costs more than its
//! socket, and enough file descriptors for them.
//!
//! A connection over a cap is closed at once, so a flood from one address
//! (or idle connections that never log in) cannot fill the listen backlog
//! or the descriptor table and keep others from logging in. Sessions have
//! their own caps (normal and discovery apart) in `admit`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Descriptors kept for everything that is not an iSCSI connection (image
/// files, DHCP/TFTP sockets, transfers, logs).
const FD_RESERVE: u64 = 256;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Refusals since the last log line (a flood is logged once a second).
    refused: u64,
    last_log: Option<Instant>,
}

/// Counts open iSCSI connections against `[iscsi] max_connections` and
/// `max_connections_per_ip`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimits {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    /// A place for a connection from `ip`, or `None` (and a log line, at
    /// most one a second) when a cap is reached.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<Permit> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= self.max_total || from_ip >= self.max_per_ip {
            c.refused += 1;
            let now = Instant::now();
            if c.last_log
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                tracing::warn!(
                    %ip,
                    connections = c.total,
                    from_this_ip = from_ip,
                    max_connections = self.max_total,
                    max_connections_per_ip = self.max_per_ip,
                    refused = c.refused,
                    "iscsi connection refused: too many connections"
                );
                c.refused = 0;
                c.last_log = Some(now);
            }
            return None;
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Some(Permit {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Raises the soft descriptor limit to the hard one (the usual soft 1024
/// would cap connections below `max_connections`, and `accept` failing
/// with EMFILE leaves everyone waiting in the backlog); warns when even
/// that is too few for `max_connections`.
pub(crate) fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise the open file limit: {e}");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    let needed = max_connections as u64 + FD_RESERVE;
    match now {
        Some(n) if n < needed => tracing::warn!(
            open_files = n,
            max_connections,
            "the open file limit is below [iscsi] max_connections + {FD_RESERVE}: \
             connections beyond it wait in the listen backlog; raise LimitNOFILE or lower \
             max_connections"
        ),
        _ => tracing::debug!(open_files = ?now, "open file limit"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_in_total_and_frees_on_drop() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "third from one address");
        let _b1 = l.admit(b).unwrap();
        assert!(l.admit(c).is_none(), "fourth in total");
        drop(a1);
        assert!(l.admit(c).is_some(), "a closed connection frees its place");
    }
}
