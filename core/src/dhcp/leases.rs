//! The lease table: a fixed number of slots, each holding one address bound
//! (or offered, reserved, declined) to one MAC, found in O(1) on average by
//! MAC and by address through two seeded hash chains over the same slots.
//!
//! Expired entries are not removed at the instant they expire: lookups treat
//! them as gone, and [`LeaseTable::sweep`] reclaims them, at most once per
//! [`SWEEP_INTERVAL`] and only when some entry can have expired, so a full
//! table under a flood of DISCOVERs costs O(1) per packet, not O(N).

use core::net::Ipv4Addr;

use crate::time::{Duration, Instant};

const NONE: u32 = u32::MAX;
/// Shortest time between two full sweeps of the table.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Candidates a single allocation looks at before giving up for this packet.
/// The scan resumes where it stopped, so a nearly full pool is still found.
pub const SCAN_LIMIT: u32 = 1024;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeaseState {
    /// Offered in a DHCPOFFER and held for a short time so no other client gets it.
    Offered,
    /// Confirmed by a DHCPACK.
    Bound,
    /// A configured reservation; never expires.
    Reserved,
    /// Declined by a client (someone else uses it); unusable until it expires.
    Declined,
}

/// One lease as the host sees it (to persist or to load back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Client MAC.
    pub mac: [u8; 6],
    /// Leased address.
    pub ip: Ipv4Addr,
    /// When the lease ends (host epoch).
    pub expires: Instant,
    /// Its state.
    pub state: LeaseState,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    mac: [u8; 6],
    ip: u32,
    state: LeaseState,
    used: bool,
    expires: Instant,
    next_mac: u32,
    next_ip: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        mac: [0; 6],
        ip: 0,
        state: LeaseState::Offered,
        used: false,
        expires: Instant(0),
        next_mac: NONE,
        next_ip: NONE,
    };

    fn live(&self, now: Instant) -> bool {
        self.used && (self.state == LeaseState::Reserved || self.expires > now)
    }
}

/// Why an insertion failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TableError {
    /// Every slot is in use.
    Full,
    /// The address is held by another MAC (or the MAC already has a slot).
    Conflict,
    /// The lease had already expired.
    Expired,
}

/// A fixed-capacity lease table of `N` slots (`N` < 2³²).
#[derive(Debug)]
pub struct LeaseTable<const N: usize> {
    slots: [Slot; N],
    mac_heads: [u32; N],
    ip_heads: [u32; N],
    free: u32,
    len: usize,
    seed: u64,
    generation: u64,
    earliest_expiry: Option<Instant>,
    last_sweep: Option<Instant>,
}

fn mix(x: u64, seed: u64) -> u64 {
    // splitmix64 finaliser; the seed keeps chains unpredictable to clients.
    let mut z = x ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mac_key(mac: &[u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = *mac;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

impl<const N: usize> LeaseTable<N> {
    /// An empty table; `seed` randomises the hash chains.
    pub fn new(seed: u64) -> Self {
        let mut t = LeaseTable {
            slots: [Slot::EMPTY; N],
            mac_heads: [NONE; N],
            ip_heads: [NONE; N],
            free: NONE,
            len: 0,
            seed,
            generation: 0,
            earliest_expiry: None,
            last_sweep: None,
        };
        t.clear();
        t
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.mac_heads.fill(NONE);
        self.ip_heads.fill(NONE);
        self.free = NONE;
        // Build the free list so slot 0 is handed out first.
        for i in (0..N).rev() {
            let Ok(idx) = u32::try_from(i) else { continue };
            if let Some(s) = self.slots.get_mut(i) {
                *s = Slot::EMPTY;
                s.next_ip = self.free;
                self.free = idx;
            }
        }
        self.len = 0;
        self.generation = self.generation.wrapping_add(1);
        self.earliest_expiry = None;
    }

    /// Slots in use (including expired entries not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Changes whenever a bound lease appears, changes or goes away: the host
    /// persists when this differs from what it last wrote.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn bucket(&self, key: u64) -> usize {
        mix(key, self.seed)
            .checked_rem(N as u64)
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(0)
    }

    fn slot(&self, idx: u32) -> Option<&Slot> {
        self.slots.get(usize::try_from(idx).ok()?)
    }

    fn slot_mut(&mut self, idx: u32) -> Option<&mut Slot> {
        self.slots.get_mut(usize::try_from(idx).ok()?)
    }

    /// The slot holding `mac`'s lease or reservation (declined entries excluded).
    fn find_mac(&self, mac: &[u8; 6]) -> Option<u32> {
        let mut idx = *self.mac_heads.get(self.bucket(mac_key(mac)))?;
        while let Some(s) = self.slot(idx) {
            if s.mac == *mac {
                return Some(idx);
            }
            idx = s.next_mac;
        }
        None
    }

    fn find_ip(&self, ip: u32) -> Option<u32> {
        let mut idx = *self.ip_heads.get(self.bucket(u64::from(ip)))?;
        while let Some(s) = self.slot(idx) {
            if s.ip == ip {
                return Some(idx);
            }
            idx = s.next_ip;
        }
        None
    }

    fn note_expiry(&mut self, at: Instant) {
        self.earliest_expiry = Some(match self.earliest_expiry {
            Some(e) if e < at => e,
            _ => at,
        });
    }

    fn insert_raw(
        &mut self,
        mac: [u8; 6],
        ip: u32,
        state: LeaseState,
        expires: Instant,
    ) -> Result<u32, TableError> {
        let idx = self.free;
        let in_mac_chain = state != LeaseState::Declined;
        let mac_bucket = self.bucket(mac_key(&mac));
        let ip_bucket = self.bucket(u64::from(ip));
        let mac_head = self.mac_heads.get(mac_bucket).copied().unwrap_or(NONE);
        let ip_head = self.ip_heads.get(ip_bucket).copied().unwrap_or(NONE);
        let Some(s) = self.slot_mut(idx) else {
            return Err(TableError::Full);
        };
        let next_free = s.next_ip;
        *s = Slot {
            mac,
            ip,
            state,
            used: true,
            expires,
            next_mac: if in_mac_chain { mac_head } else { NONE },
            next_ip: ip_head,
        };
        self.free = next_free;
        if in_mac_chain {
            if let Some(h) = self.mac_heads.get_mut(mac_bucket) {
                *h = idx;
            }
        }
        if let Some(h) = self.ip_heads.get_mut(ip_bucket) {
            *h = idx;
        }
        self.len = self.len.saturating_add(1);
        if state != LeaseState::Reserved {
            self.note_expiry(expires);
        }
        if state == LeaseState::Bound {
            self.generation = self.generation.wrapping_add(1);
        }
        Ok(idx)
    }

    fn unlink_mac(&mut self, idx: u32) {
        let Some(s) = self.slot(idx).copied() else {
            return;
        };
        let b = self.bucket(mac_key(&s.mac));
        let mut cur = self.mac_heads.get(b).copied().unwrap_or(NONE);
        let mut prev = NONE;
        while cur != NONE {
            let next = self.slot(cur).map_or(NONE, |c| c.next_mac);
            if cur == idx {
                if prev == NONE {
                    if let Some(h) = self.mac_heads.get_mut(b) {
                        *h = next;
                    }
                } else if let Some(p) = self.slot_mut(prev) {
                    p.next_mac = next;
                }
                break;
            }
            prev = cur;
            cur = next;
        }
        if let Some(s) = self.slot_mut(idx) {
            s.next_mac = NONE;
        }
    }

    fn unlink_ip(&mut self, idx: u32) {
        let Some(s) = self.slot(idx).copied() else {
            return;
        };
        let b = self.bucket(u64::from(s.ip));
        let mut cur = self.ip_heads.get(b).copied().unwrap_or(NONE);
        let mut prev = NONE;
        while cur != NONE {
            let next = self.slot(cur).map_or(NONE, |c| c.next_ip);
            if cur == idx {
                if prev == NONE {
                    if let Some(h) = self.ip_heads.get_mut(b) {
                        *h = next;
                    }
                } else if let Some(p) = self.slot_mut(prev) {
                    p.next_ip = next;
                }
                break;
            }
            prev = cur;
            cur = next;
        }
    }

    fn remove(&mut self, idx: u32) {
        let Some(s) = self.slot(idx).copied() else {
            return;
        };
        if !s.used {
            return;
        }
        if s.state != LeaseState::Declined {
            self.unlink_mac(idx);
        }
        self.unlink_ip(idx);
        let free = self.free;
        if let Some(slot) = self.slot_mut(idx) {
            *slot = Slot::EMPTY;
            slot.next_ip = free;
        }
        self.free = idx;
        self.len = self.len.saturating_sub(1);
        if s.state == LeaseState::Bound {
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// Reclaims expired entries if any can have expired and the last sweep
    /// is at least [`SWEEP_INTERVAL`] old. Returns how many were reclaimed.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let due = self.earliest_expiry.is_some_and(|e| e <= now)
            && self
                .last_sweep
                .is_none_or(|l| now.saturating_since(l) >= SWEEP_INTERVAL);
        if !due {
            return 0;
        }
        self.last_sweep = Some(now);
        let mut reclaimed = 0;
        let mut earliest: Option<Instant> = None;
        for i in 0..N {
            let Ok(idx) = u32::try_from(i) else { break };
            let Some(s) = self.slot(idx).copied() else {
                break;
            };
            if !s.used || s.state == LeaseState::Reserved {
                continue;
            }
            if s.expires <= now {
                self.remove(idx);
                reclaimed += 1;
            } else if earliest.is_none_or(|e| s.expires < e) {
                earliest = Some(s.expires);
            }
        }
        self.earliest_expiry = earliest;
        reclaimed
    }

    /// When the next entry expires (the host may call `sweep` then).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.earliest_expiry
    }

    /// The live lease, offer or reservation of `mac`.
    pub fn lookup_mac(&self, now: Instant, mac: &[u8; 6]) -> Option<Lease> {
        let s = self.slot(self.find_mac(mac)?)?;
        s.live(now).then(|| to_lease(s))
    }

    /// The live entry holding `ip`.
    pub fn lookup_ip(&self, now: Instant, ip: Ipv4Addr) -> Option<Lease> {
        let s = self.slot(self.find_ip(u32::from(ip))?)?;
        s.live(now).then(|| to_lease(s))
    }

    /// Whether `ip` is free for `mac` (no live entry, or `mac`'s own).
    /// An expired entry of another MAC is reclaimed on the way.
    fn take_ip(&mut self, now: Instant, ip: u32, mac: &[u8; 6]) -> bool {
        match self.find_ip(ip) {
            None => true,
            Some(idx) => {
                let Some(s) = self.slot(idx).copied() else {
                    return false;
                };
                if s.state != LeaseState::Declined && s.mac == *mac {
                    return true;
                }
                if s.live(now) {
                    return false;
                }
                self.remove(idx);
                true
            }
        }
    }

    /// Adds a reservation that never expires.
    pub fn reserve(&mut self, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), TableError> {
        if self.find_mac(&mac).is_some() || self.find_ip(u32::from(ip)).is_some() {
            return Err(TableError::Conflict);
        }
        self.insert_raw(mac, u32::from(ip), LeaseState::Reserved, Instant(u64::MAX))
            .map(|_| ())
    }

    /// Holds an address for `mac` until `until`: its reservation, its current
    /// lease, the address it asked for if free and `in_pool`, or the next free
    /// address of the pool `[start, end]` scanned from `cursor`.
    /// An existing bound lease stays bound. `None` when nothing is free.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        now: Instant,
        mac: [u8; 6],
        requested: Option<Ipv4Addr>,
        pool: (Ipv4Addr, Ipv4Addr),
        cursor: &mut u32,
        exclude: Ipv4Addr,
        until: Instant,
    ) -> Option<Ipv4Addr> {
        if let Some(idx) = self.find_mac(&mac) {
            let s = self.slot(idx).copied()?;
            if s.state == LeaseState::Reserved || (s.state == LeaseState::Bound && s.live(now)) {
                return Some(Ipv4Addr::from(s.ip));
            }
            // An offer, or an expired lease: offer the same address again.
            if let Some(slot) = self.slot_mut(idx) {
                let was_bound = slot.state == LeaseState::Bound;
                slot.state = LeaseState::Offered;
                slot.expires = until;
                if was_bound {
                    self.generation = self.generation.wrapping_add(1);
                }
            }
            self.note_expiry(until);
            return Some(Ipv4Addr::from(s.ip));
        }
        self.sweep(now);
        if self.free == NONE {
            return None;
        }
        let (start, end) = (u32::from(pool.0), u32::from(pool.1));
        let exclude = u32::from(exclude);
        if let Some(req) = requested.map(u32::from) {
            if (start..=end).contains(&req) && req != exclude && self.take_ip(now, req, &mac) {
                return self
                    .insert_raw(mac, req, LeaseState::Offered, until)
                    .ok()
                    .map(|_| Ipv4Addr::from(req));
            }
        }
        let size = end.checked_sub(start)?.saturating_add(1);
        for _ in 0..size.min(SCAN_LIMIT) {
            let off = cursor.checked_rem(size).unwrap_or(0);
            *cursor = off.wrapping_add(1);
            let ip = start.wrapping_add(off);
            if ip != exclude && self.take_ip(now, ip, &mac) {
                return self
                    .insert_raw(mac, ip, LeaseState::Offered, until)
                    .ok()
                    .map(|_| Ipv4Addr::from(ip));
            }
        }
        None
    }

    /// Binds `ip` to `mac` until `until` (DHCPREQUEST). Succeeds when `ip`
    /// is `mac`'s reservation, offer or lease, or is free and `in_pool`.
    pub fn bind(
        &mut self,
        now: Instant,
        mac: [u8; 6],
        ip: Ipv4Addr,
        in_pool: bool,
        until: Instant,
    ) -> Result<(), TableError> {
        let ip = u32::from(ip);
        if let Some(idx) = self.find_mac(&mac) {
            let s = self.slot(idx).copied().ok_or(TableError::Conflict)?;
            if s.state == LeaseState::Reserved {
                return if s.ip == ip {
                    Ok(())
                } else {
                    Err(TableError::Conflict)
                };
            }
            if s.ip == ip {
                if let Some(slot) = self.slot_mut(idx) {
                    slot.state = LeaseState::Bound;
                    slot.expires = until;
                }
                self.note_expiry(until);
                self.generation = self.generation.wrapping_add(1);
                return Ok(());
            }
            // The client wants another address than the one it holds.
            self.remove(idx);
        }
        if !in_pool {
            return Err(TableError::Conflict);
        }
        self.sweep(now);
        if !self.take_ip(now, ip, &mac) {
            return Err(TableError::Conflict);
        }
        self.insert_raw(mac, ip, LeaseState::Bound, until)
            .map(|_| ())
    }

    /// Drops an offer made to `mac` (it chose another server). Bound leases stay.
    pub fn cancel_offer(&mut self, mac: &[u8; 6]) {
        if let Some(idx) = self.find_mac(mac) {
            if self
                .slot(idx)
                .is_some_and(|s| s.state == LeaseState::Offered)
            {
                self.remove(idx);
            }
        }
    }

    /// DHCPRELEASE: frees `mac`'s lease on `ip`. Returns whether one was freed.
    pub fn release(&mut self, mac: &[u8; 6], ip: Ipv4Addr) -> bool {
        match self.find_mac(mac) {
            Some(idx)
                if self
                    .slot(idx)
                    .is_some_and(|s| s.ip == u32::from(ip) && s.state != LeaseState::Reserved) =>
            {
                self.remove(idx);
                true
            }
            _ => false,
        }
    }

    /// DHCPDECLINE: `mac` found `ip` in use; keep it out of the pool until `until`.
    pub fn decline(&mut self, mac: &[u8; 6], ip: Ipv4Addr, until: Instant) -> bool {
        let Some(idx) = self.find_mac(mac) else {
            return false;
        };
        let Some(s) = self.slot(idx).copied() else {
            return false;
        };
        if s.ip != u32::from(ip) || s.state == LeaseState::Reserved {
            return false;
        }
        let was_bound = s.state == LeaseState::Bound;
        self.unlink_mac(idx);
        if let Some(slot) = self.slot_mut(idx) {
            slot.state = LeaseState::Declined;
            slot.expires = until;
        }
        self.note_expiry(until);
        if was_bound {
            self.generation = self.generation.wrapping_add(1);
        }
        true
    }

    /// Loads a persisted bound lease back (at start).
    pub fn load(&mut self, now: Instant, lease: Lease) -> Result<(), TableError> {
        if lease.expires <= now {
            return Err(TableError::Expired);
        }
        if self.find_mac(&lease.mac).is_some() || self.find_ip(u32::from(lease.ip)).is_some() {
            return Err(TableError::Conflict);
        }
        self.insert_raw(
            lease.mac,
            u32::from(lease.ip),
            LeaseState::Bound,
            lease.expires,
        )
        .map(|_| ())
    }

    /// Every live bound lease (what the host persists).
    pub fn bound(&self, now: Instant) -> impl Iterator<Item = Lease> + '_ {
        self.slots
            .iter()
            .filter(move |s| s.used && s.state == LeaseState::Bound && s.live(now))
            .map(to_lease)
    }

    /// Every entry in use, expired ones included.
    pub fn iter(&self) -> impl Iterator<Item = Lease> + '_ {
        self.slots.iter().filter(|s| s.used).map(to_lease)
    }
}

fn to_lease(s: &Slot) -> Lease {
    Lease {
        mac: s.mac,
        ip: Ipv4Addr::from(s.ip),
        expires: s.expires,
        state: s.state,
    }
}

#[cfg(test)]
mod tests;
