//! Exhaustion is a refusal, not a lockout: caps on TCP connections (all,
//! and per source address) checked before a connection costs more than its
//! socket, and enough file descriptors for them.
//!
//! A connection over the per-address cap is closed at once, so a flood
//! from one address cannot fill the listen backlog or the descriptor table.
//! At the global cap, a flood from many addresses would still lock everyone
//! out for a login timeout; there the oldest connection that has not logged
//! in yet is evicted to make room (a real login takes milliseconds, an idle
//! one is the oldest), and only when every connection is logged in is the
//! new one refused. Sessions have their own caps (normal and discovery
//! apart) in `admit`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Descriptors kept for everything that is not an iSCSI connection (image
/// files, DHCP/TFTP sockets, transfers, logs).
const FD_RESERVE: u64 = 256;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections not logged in yet, oldest first.
    pending: VecDeque<Arc<Slot>>,
    next_id: u64,
    /// Refusals and evictions since the last log line (a flood is logged
    /// once a second).
    refused: u64,
    evicted: u64,
    last_log: Option<Instant>,
}

/// One counted connection, shared by its [`Permit`] and the table.
#[derive(Debug)]
struct Slot {
    id: u64,
    ip: IpAddr,
    /// Its place was already given back (evicted).
    released: AtomicBool,
    /// Wakes the connection to close it.
    evict: Notify,
}

impl Counts {
    /// Gives `slot`'s place back, once.
    fn release(&mut self, slot: &Slot) {
        if slot.released.swap(true, Ordering::Relaxed) {
            return;
        }
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&slot.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&slot.ip);
            }
        }
    }

    /// At most one log line a second about refusals and evictions.
    fn log_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_log = Some(now);
        }
        due
    }

    fn forget_pending(&mut self, id: u64) {
        if let Some(i) = self.pending.iter().position(|p| p.id == id) {
            self.pending.remove(i);
        }
    }
}

/// The address connections are counted under: an IPv6 host owns a whole
/// /64, so counting single IPv6 addresses would cap nothing.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
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
    slot: Arc<Slot>,
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

    /// A place for a connection from `ip` (at the global cap: by evicting
    /// the oldest connection not logged in), or `None` (and a log line, at
    /// most one a second) when a cap is reached.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<Permit> {
        let ip = source(ip);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip < self.max_per_ip && c.total >= self.max_total {
            if let Some(oldest) = c.pending.pop_front() {
                // Its place is ours now; its task ends when it wakes.
                c.release(&oldest);
                oldest.evict.notify_one();
                c.evicted += 1;
                if c.log_due() {
                    tracing::warn!(
                        evicted_ip = %oldest.ip,
                        max_connections = self.max_total,
                        evicted = c.evicted,
                        "iscsi max_connections reached: closed the oldest connection not \
                         logged in to make room"
                    );
                    c.evicted = 0;
                }
            }
        }
        if c.total >= self.max_total || from_ip >= self.max_per_ip {
            c.refused += 1;
            if c.log_due() {
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
            }
            return None;
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        c.next_id += 1;
        let slot = Arc::new(Slot {
            id: c.next_id,
            ip,
            released: AtomicBool::new(false),
            evict: Notify::new(),
        });
        c.pending.push_back(slot.clone());
        Some(Permit {
            slot,
            counts: self.counts.clone(),
        })
    }
}

impl Permit {
    /// The connection reached full feature phase: it is no longer evicted
    /// to make room.
    pub(crate) fn logged_in(&self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.forget_pending(self.slot.id);
    }

    /// Resolves when the connection was evicted to make room for another.
    pub(crate) async fn evicted(&self) {
        self.slot.evict.notified().await
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.forget_pending(self.slot.id);
        c.release(&self.slot);
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
    use std::future::Future;

    #[test]
    fn caps_per_ip_and_in_total_and_frees_on_drop() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "third from one address");
        let b1 = l.admit(b).unwrap();
        for p in [&a1, &a2, &b1] {
            p.logged_in();
        }
        assert!(l.admit(c).is_none(), "fourth in total, all logged in");
        drop(a1);
        assert!(l.admit(c).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn at_the_global_cap_the_oldest_idle_connection_makes_room() {
        let l = ConnectionLimits::new(3, 3);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let session = l.admit(ip(1)).unwrap();
        session.logged_in();
        let idle_old = l.admit(ip(2)).unwrap();
        let idle_new = l.admit(ip(3)).unwrap();
        // A fourth connection evicts the oldest that has not logged in.
        let fourth = l.admit(ip(4)).unwrap();
        let woke = |p: &Permit| {
            let mut f = std::pin::pin!(p.evicted());
            let waker = std::task::Waker::noop();
            f.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_ready()
        };
        assert!(woke(&idle_old));
        assert!(!woke(&idle_new) && !woke(&session) && !woke(&fourth));
        // The evicted one's late drop frees nothing twice.
        drop(idle_old);
        fourth.logged_in();
        idle_new.logged_in();
        assert!(l.admit(ip(5)).is_none(), "three logged in: full");
    }

    #[test]
    fn ipv6_hosts_count_per_64() {
        let l = ConnectionLimits::new(10, 1);
        let _a = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.admit("2001:db8::2".parse().unwrap()).is_none());
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
