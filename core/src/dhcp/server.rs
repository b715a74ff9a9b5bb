//! The DHCP server machine: full DHCP (RFC 2131) or ProxyDHCP (PXE 2.1).
//!
//! # Driving it
//!
//! For every datagram received on port 67 (or 4011), call
//! [`Server::handle_packet`], then drain [`Server::poll_transmit`] until it
//! returns `None` (one input yields at most one reply) and send each reply
//! from the socket bound to [`Transmit::src_port`]. Now and then (see
//! [`Server::poll_timeout`]) call [`Server::handle_timeout`] to reclaim
//! expired leases, and when [`Server::generation`] changed, persist
//! [`Server::leases`]. At start, [`Server::load_lease`] puts them back.
//!
//! # Where replies go
//!
//! - relayed (`giaddr` ≠ 0): to `giaddr:67`;
//! - answers on port 4011: back to the sender's address and port;
//! - client already configured (`ciaddr` ≠ 0, RENEWING or INFORM): unicast to `ciaddr:68`;
//! - otherwise (DISCOVER, SELECTING/INIT-REBOOT REQUEST, every NAK):
//!   broadcast to `255.255.255.255:68`, whatever the broadcast flag says.
//!   RFC 2131 allows unicast to `yiaddr` when the flag is clear, but that
//!   needs an ARP entry the client cannot answer for yet; a plain UDP socket
//!   cannot add one, and broadcast is always received.
//!
//! # Probes
//!
//! With [`Config::probe`] on and probe slots (`P` > 0), an address the table
//! does not already hold for the client is probed before it is offered:
//! the DISCOVER gets no reply at once; the host takes the address from
//! [`Server::poll_probe`], probes it (ARP or ICMP, short timeout), and calls
//! [`Server::handle_probe`], after which `poll_transmit` yields the offer,
//! or, if the address was in use (it is then declined for
//! [`Config::decline_hold`]), another address is probed. At most `P` probes
//! are pending; beyond that a new client's DISCOVER gets no reply (it
//! retries). Drain `poll_probe` after every `handle_packet` and
//! `handle_probe`.
//!
//! # Leases
//!
//! Leases are keyed by `chaddr` (option 61 is not used for identity). Each
//! reservation occupies a slot of the `N`-slot table for the server's life.

use core::fmt::Write;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::boot::{self, BootChoice, BootFile, BootFiles, ClientKind, Host};
use super::leases::{Lease, LeaseState, LeaseTable, TableError};
use super::probe::{Probe, ProbeResult, Probes, PROBE_ATTEMPTS};
use super::wire::{self, IpxeEncap, MessageType, Op, Packet, Repr};
use crate::time::{Duration, Instant};

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// PXE boot server (ProxyDHCP REQUEST) port.
pub const PXE_PORT: u16 = 4011;
/// Smallest datagram every client must accept (RFC 2131 §2), IP + UDP headers included.
pub const MIN_MAX_SIZE: u16 = 576;
const IP_UDP_HEADERS: usize = 28;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// The only DHCP server: addresses and boot information.
    Full,
    /// Beside another DHCP server: boot information to PXE/iPXE clients only.
    Proxy,
}

/// Server configuration. Borrowed strings live as long as the server.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Full or proxy.
    pub mode: Mode,
    /// Our address: option 54, `siaddr` (the TFTP server).
    pub server_ip: Ipv4Addr,
    /// Option 1.
    pub subnet_mask: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6 (up to 4 are sent).
    pub dns: &'a [Ipv4Addr],
    /// Dynamic pool, inclusive (full mode). `None`: only reservations get addresses.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Option 51, seconds.
    pub lease_secs: u32,
    /// How long an offered address is held for its client.
    pub offer_hold: Duration,
    /// How long a declined address stays out of the pool.
    pub decline_hold: Duration,
    /// Boot files.
    pub boot: BootFiles<'a>,
    /// Known machines, sorted by MAC (checked by [`Server::new`]).
    pub hosts: &'a [Host<'a>],
    /// Seeds the lease table's hash chains; use a random value.
    pub hash_seed: u64,
    /// Probe addresses nobody renewed before offering them (full mode; needs
    /// probe slots, see the module doc).
    pub probe: bool,
}

impl<'a> Config<'a> {
    /// A configuration with sanboot's defaults (one hour leases, offers held 10 s).
    pub fn new(mode: Mode, server_ip: Ipv4Addr) -> Self {
        Config {
            mode,
            server_ip,
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            dns: &[],
            pool: None,
            lease_secs: 3600,
            offer_hold: Duration::from_secs(10),
            decline_hold: Duration::from_secs(600),
            boot: BootFiles::default(),
            hosts: &[],
            hash_seed: 0,
            probe: false,
        }
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// `hosts` is not sorted by MAC, or a MAC appears twice.
    HostsNotSorted,
    /// Two hosts reserve the same address.
    DuplicateReservation,
    /// More reservations than lease slots.
    TooManyReservations,
    /// A boot file name or root path longer than 254 bytes.
    NameTooLong,
    /// `pool` ends before it starts.
    BadPool,
}

/// Metadata of a reply written by [`Server::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to send it.
    pub dst: SocketAddrV4,
    /// Send from the socket bound to this port (67 or 4011).
    pub src_port: u16,
    /// `dst` is the limited broadcast address (the socket needs SO_BROADCAST).
    pub broadcast: bool,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// What was sent.
    pub message: MessageType,
    /// A ProxyDHCP reply (no address).
    pub proxy: bool,
    /// The client.
    pub mac: [u8; 6],
    /// The address given (unspecified for proxy replies and NAKs).
    pub yiaddr: Ipv4Addr,
    /// The client's kind.
    pub client: ClientKind,
    /// The boot file given, if any.
    pub file: Option<&'a str>,
    /// Which rule chose it.
    pub choice: Option<BootChoice>,
    /// `file` as the client got it: by name, or as a URL on sanboot's HTTP
    /// server (for logs).
    pub boot_file: Option<BootFile<'a>>,
}

impl Transmit<'_> {
    /// The address this reply shows the client uses, which is who may read
    /// its secret-carrying script ([`crate::ipxe::StationAddresses`]): the
    /// `yiaddr` of a full-mode ACK, or the unicast source of a ProxyDHCP
    /// request on port 4011 (iPXE sends one from its leased address after
    /// the router's ACK). Offers, NAKs and broadcast replies show nothing.
    pub fn station_address(&self) -> Option<Ipv4Addr> {
        if self.message != MessageType::Ack {
            return None;
        }
        let ip = if self.proxy {
            if self.src_port != PXE_PORT || self.broadcast {
                return None;
            }
            *self.dst.ip()
        } else {
            self.yiaddr
        };
        (!ip.is_unspecified() && !ip.is_broadcast()).then_some(ip)
    }
}

/// A client message [`Server::handle_packet`] parsed: what a host's boot
/// timeline and counters record (DISCOVER and REQUEST, which no reply
/// shows when the server stays silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The client's hardware address (`chaddr`).
    pub mac: [u8; 6],
    /// DISCOVER, REQUEST, DECLINE, RELEASE or INFORM.
    pub message: MessageType,
    /// What kind of boot client it is (PXE ROM, iPXE, HTTP boot, none).
    pub client: ClientKind,
    /// It came to the PXE port (4011), not to 67.
    pub pxe_port: bool,
    /// The address the client has or asks for (`ciaddr`, else option 50):
    /// in ProxyDHCP mode the only place a host learns a station's address.
    pub address: Option<Ipv4Addr>,
}

/// Counters: what came in, what went out, what was dropped and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Datagrams handed to `handle_packet`.
    pub received: u64,
    /// Dropped: shorter than a header, bad cookie, or a malformed option.
    pub malformed: u64,
    /// Dropped: not Ethernet.
    pub not_ethernet: u64,
    /// Dropped: BOOTREPLY or unknown `op`.
    pub not_request: u64,
    /// Dropped: no option 53 (plain BOOTP) or an unknown message type.
    pub no_message_type: u64,
    /// Not answered by design: non-PXE clients in proxy mode, REQUESTs for
    /// another server, messages a mode does not handle.
    pub ignored: u64,
    /// DISCOVERs refused because no address was free.
    pub pool_exhausted: u64,
    /// DHCPOFFERs (full mode).
    pub offers: u64,
    /// DHCPACKs (full mode, REQUEST and INFORM).
    pub acks: u64,
    /// DHCPNAKs.
    pub naks: u64,
    /// ProxyDHCP offers (port 67).
    pub proxy_offers: u64,
    /// ProxyDHCP ACKs (port 4011).
    pub proxy_acks: u64,
    /// DHCPDECLINEs acted on.
    pub declines: u64,
    /// DHCPRELEASEs acted on.
    pub releases: u64,
    /// Replies dropped: larger than the client's option 57 or the host buffer.
    pub too_big: u64,
    /// Replies lost because `handle_packet` was called again before `poll_transmit`.
    pub overrun: u64,
    /// DISCOVERs left unanswered in renew-only mode (see [`Server::set_renew_only`]).
    pub renew_only_silent: u64,
    /// Probes handed to the host.
    pub probes: u64,
    /// Probed addresses found in use (then declined for a while).
    pub probe_in_use: u64,
    /// DISCOVERs unanswered because every probe slot was taken, or
    /// [`PROBE_ATTEMPTS`] addresses in a row were in use.
    pub probe_refused: u64,
}

#[derive(Debug, Clone)]
struct Pending<'a> {
    repr: Repr,
    meta: Transmit<'a>,
    limit: usize,
}

/// The DHCP/ProxyDHCP server with an `N`-slot lease table and `P` probe
/// slots (none by default: no probing).
#[derive(Debug)]
pub struct Server<'a, const N: usize, const P: usize = 0> {
    config: Config<'a>,
    leases: LeaseTable<N>,
    probes: Probes<P>,
    cursor: u32,
    pending: Option<Pending<'a>>,
    /// The last address a booting client was seen to use (see `poll_station`).
    station: Option<([u8; 6], Ipv4Addr)>,
    stats: Stats,
    renew_only_until: Option<Instant>,
}

fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}

fn push_str<const M: usize>(v: &mut heapless::Vec<u8, M>, s: &str) {
    for b in s.as_bytes() {
        if v.push(*b).is_err() {
            break;
        }
    }
}

impl<'a, const N: usize, const P: usize> Server<'a, N, P> {
    /// A server with an empty lease table and the configured reservations.
    pub fn new(config: Config<'a>) -> Result<Self, ConfigError> {
        if config.hosts.windows(2).any(|w| match w {
            [a, b] => a.mac >= b.mac,
            _ => false,
        }) {
            return Err(ConfigError::HostsNotSorted);
        }
        let long = |s: &str| s.len() > 254;
        let b = &config.boot;
        // Names sanboot's HTTP server serves get its URL in front.
        let over_http = |s: &str| b.http_server.is_some() && s.len() > 254 - boot::HTTP_PREFIX_MAX;
        if [b.bios, b.uefi, b.arm, b.script].iter().any(|s| long(s))
            || [b.uefi, b.arm, b.script].iter().any(|s| over_http(s))
            || b.http.is_some_and(long)
            || b.root_path.is_some_and(long)
            || config
                .hosts
                .iter()
                .any(|h| h.boot_file.is_some_and(long) || h.script.is_some_and(long))
        {
            return Err(ConfigError::NameTooLong);
        }
        if let Some((s, e)) = config.pool {
            if u32::from(s) > u32::from(e) {
                return Err(ConfigError::BadPool);
            }
        }
        let mut leases = LeaseTable::new(config.hash_seed);
        if config.mode == Mode::Full {
            for h in config.hosts {
                if let Some(ip) = h.ip {
                    match leases.reserve(h.mac, ip) {
                        Ok(()) => {}
                        Err(TableError::Full) => return Err(ConfigError::TooManyReservations),
                        Err(_) => return Err(ConfigError::DuplicateReservation),
                    }
                }
            }
        }
        Ok(Server {
            config,
            leases,
            probes: Probes::new(),
            cursor: 0,
            pending: None,
            station: None,
            stats: Stats::default(),
            renew_only_until: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config<'a> {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Continues the counters of a server this one replaces (a host
    /// rebuilding its server on a configuration reload).
    pub fn carry_stats(&mut self, stats: Stats) {
        self.stats = stats;
    }

    /// The lease table (read-only).
    pub fn lease_table(&self) -> &LeaseTable<N> {
        &self.leases
    }

    /// Changes whenever the set of bound leases changes; persist then.
    pub fn generation(&self) -> u64 {
        self.leases.generation()
    }

    /// Live bound leases, to persist.
    pub fn leases(&self, now: Instant) -> impl Iterator<Item = Lease> + '_ {
        self.leases.bound(now)
    }

    /// Puts a persisted lease back (at start, before traffic).
    pub fn load_lease(&mut self, now: Instant, lease: Lease) -> Result<(), TableError> {
        if self.config.mode != Mode::Full {
            return Ok(());
        }
        self.leases.load(now, lease)
    }

    /// Until `until`, make no offer of an address the table does not already
    /// hold for the client: the host lost its lease records (a corrupt or
    /// unreadable lease file), so any address may still be leased to a
    /// client that will renew it. Meanwhile (RFC 2131 §4.3.2):
    /// - REQUESTs in INIT-REBOOT, RENEWING and REBINDING state are answered
    ///   as always: the claimed address is bound (and so learnt back) when it
    ///   is in the pool and nobody else holds it, else NAKed;
    /// - a DISCOVER gets an offer only of the client's reservation or of a
    ///   lease it already renewed in this period; any other stays
    ///   unanswered (counted in `renew_only_silent`) — the client retries,
    ///   and after `until` (one lease time: every lease given before the
    ///   loss has been renewed or has expired) it gets a normal offer.
    ///
    /// `None` ends the mode at once.
    pub fn set_renew_only(&mut self, until: Option<Instant>) {
        self.renew_only_until = until;
    }

    /// The end of renew-only mode, while it lasts.
    pub fn renew_only(&self, now: Instant) -> Option<Instant> {
        self.renew_only_until.filter(|u| *u > now)
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work (an entry
    /// expires, or a probe the host never answered is to be dropped).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stale = self.probes.oldest().map(|t| t + self.config.offer_hold);
        match (self.leases.next_expiry(), stale) {
            (Some(a), Some(b)) => Some(if a < b { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Reclaims expired offers and leases, and drops probes the host left
    /// unanswered for [`Config::offer_hold`]. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.leases.sweep(now);
        let before = Instant(now.0.saturating_sub(self.config.offer_hold.millis()));
        while let Some(p) = self.probes.take_stale(before) {
            self.leases.cancel_offer(&p.mac);
            bump(&mut self.stats.probe_refused);
        }
    }

    /// The next address to probe before it is offered; the host answers
    /// with [`handle_probe`](Self::handle_probe).
    #[must_use]
    pub fn poll_probe(&mut self) -> Option<Ipv4Addr> {
        let ip = self.probes.next_unsent()?;
        bump(&mut self.stats.probes);
        Some(ip)
    }

    /// Probes pending (queued or with the host).
    pub fn probes_pending(&self) -> usize {
        self.probes.len()
    }

    /// The host's finding for an address from [`poll_probe`](Self::poll_probe):
    /// free → the waiting DISCOVER is offered it (drain `poll_transmit`);
    /// in use → it is declined and the next free address probed (drain
    /// `poll_probe`). An address not asked for is ignored.
    pub fn handle_probe(&mut self, now: Instant, ip: Ipv4Addr, result: ProbeResult) {
        let Some(p) = self.probes.take_sent(ip) else {
            return;
        };
        let still_ours = self
            .leases
            .lookup_mac(now, &p.mac)
            .is_some_and(|l| l.ip == ip && l.state == LeaseState::Offered);
        if !still_ours {
            return;
        }
        let reply = match result {
            ProbeResult::Free => {
                let (r, kind, chosen) = self.address_reply(&p.req, MessageType::Offer, ip, true);
                Some(Self::pending(
                    r,
                    &p.req,
                    Self::default_dst(&p.req),
                    kind,
                    false,
                    chosen,
                ))
            }
            ProbeResult::InUse => {
                bump(&mut self.stats.probe_in_use);
                self.leases
                    .decline(&p.mac, ip, now + self.config.decline_hold);
                if p.attempt >= PROBE_ATTEMPTS {
                    bump(&mut self.stats.probe_refused);
                    None
                } else {
                    self.allocate(now, &p.req, p.attempt.saturating_add(1))
                }
            }
        };
        if let Some(r) = reply {
            if self.pending.replace(r).is_some() {
                bump(&mut self.stats.overrun);
            }
        }
    }

    fn host(&self, mac: &[u8; 6]) -> Option<&Host<'a>> {
        let hosts = self.config.hosts;
        hosts
            .binary_search_by(|h| h.mac.cmp(mac))
            .ok()
            .and_then(|i| hosts.get(i))
    }

    /// Handles one datagram from `src` received on local port `dst_port`
    /// ([`SERVER_PORT`] or [`PXE_PORT`]). Never fails: bad input is counted.
    /// Returns what the client asked (for a host's boot timeline and
    /// counters), or `None` for a datagram that was not a client message.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        dst_port: u16,
        bytes: &[u8],
    ) -> Option<Received> {
        self.stats.received = self.stats.received.wrapping_add(1);
        let req = match Packet::new_checked(bytes).and_then(|p| Repr::parse(&p)) {
            Ok(r) => r,
            Err(wire::Error::NotEthernet) => {
                bump(&mut self.stats.not_ethernet);
                return None;
            }
            Err(_) => {
                bump(&mut self.stats.malformed);
                return None;
            }
        };
        if req.op != Op::Request {
            bump(&mut self.stats.not_request);
            return None;
        }
        let Some(msg) = req.message_type else {
            bump(&mut self.stats.no_message_type);
            return None;
        };
        let received = Received {
            mac: req.chaddr,
            message: msg,
            client: boot::classify(&req),
            pxe_port: dst_port == PXE_PORT,
            address: Some(req.ciaddr)
                .filter(|a| !a.is_unspecified())
                .or(req.requested_ip),
        };
        let reply = if dst_port == PXE_PORT {
            self.pxe_request(src, msg, &req)
        } else {
            match self.config.mode {
                Mode::Proxy => self.proxy(msg, &req),
                Mode::Full => self.full(now, msg, &req),
            }
        };
        if let Some(mut p) = reply {
            p.meta.boot_file = p
                .meta
                .file
                .zip(p.meta.choice)
                .map(|chosen| boot::boot_file(p.meta.client, chosen, &self.config.boot));
            if self.pending.replace(p).is_some() {
                bump(&mut self.stats.overrun);
            }
        }
        Some(received)
    }

    /// Writes the pending reply, if any, into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit<'a>> {
        let mut p = self.pending.take()?;
        let limit = p.limit.min(buf.len());
        let out = buf.get_mut(..limit)?;
        // Too big for the client: drop what only helps, keep what boots.
        let mut level = 0u8;
        let len = loop {
            match p.repr.emit(out) {
                Ok(n) => break n,
                Err(_) => {
                    level = level.saturating_add(1);
                    match level {
                        1 => {
                            p.repr.dns.clear();
                            p.repr.hostname.clear();
                            p.repr.uuid.clear();
                        }
                        // The `file` field already carries the name.
                        2 if !p.repr.file.is_empty() => p.repr.bootfile.clear(),
                        2 | 3 => p.repr.root_path.clear(),
                        _ => {
                            bump(&mut self.stats.too_big);
                            return None;
                        }
                    }
                }
            }
        };
        let count = match (p.meta.message, p.meta.proxy) {
            (MessageType::Offer, true) => &mut self.stats.proxy_offers,
            (MessageType::Ack, true) => &mut self.stats.proxy_acks,
            (MessageType::Offer, false) => &mut self.stats.offers,
            (MessageType::Ack, false) => &mut self.stats.acks,
            _ => &mut self.stats.naks,
        };
        bump(count);
        let t = Transmit { len, ..p.meta };
        if let Some(ip) = t.station_address() {
            self.station = Some((t.mac, ip));
        }
        Some(t)
    }

    /// The address a booting client was last seen to use, once: a
    /// full-mode ACK's lease, the source of a ProxyDHCP request on 4011, or,
    /// in proxy mode, the requested address of a PXE/iPXE client's REQUEST
    /// to the real DHCP server. Drain it after `poll_transmit`; the host
    /// keeps it to decide who may read that station's secret-carrying
    /// script ([`crate::ipxe::StationAddresses`]).
    #[must_use]
    pub fn poll_station(&mut self) -> Option<([u8; 6], Ipv4Addr)> {
        self.station.take()
    }

    fn ignore(&mut self) -> Option<Pending<'a>> {
        bump(&mut self.stats.ignored);
        None
    }

    /// The reply skeleton: RFC 2131 table 3 fields copied from the request.
    fn reply(&self, req: &Repr, msg: MessageType) -> Repr {
        let mut r = Repr::new(Op::Reply, req.xid, req.chaddr);
        r.broadcast = req.broadcast;
        r.giaddr = req.giaddr;
        r.message_type = Some(msg);
        r.server_id = Some(self.config.server_ip);
        r
    }

    fn limit(req: &Repr) -> usize {
        usize::from(req.max_size.unwrap_or(MIN_MAX_SIZE).max(MIN_MAX_SIZE)) - IP_UDP_HEADERS
    }

    fn default_dst(req: &Repr) -> (SocketAddrV4, u16) {
        if !req.giaddr.is_unspecified() {
            (SocketAddrV4::new(req.giaddr, SERVER_PORT), SERVER_PORT)
        } else if !req.ciaddr.is_unspecified() {
            (SocketAddrV4::new(req.ciaddr, CLIENT_PORT), SERVER_PORT)
        } else {
            (
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
                SERVER_PORT,
            )
        }
    }

    /// Adds the boot information for `kind` to `r`; returns the file chosen.
    fn add_boot(
        &self,
        r: &mut Repr,
        req: &Repr,
        kind: ClientKind,
        proxy: bool,
    ) -> Option<(&'a str, BootChoice)> {
        r.siaddr = self.config.server_ip;
        let host = self.host(&req.chaddr);
        let chosen = boot::select(kind, &self.config.boot, host);
        if let Some(chosen) = chosen {
            let file = boot::boot_file(kind, chosen, &self.config.boot);
            let mut text = heapless::String::<255>::new();
            // Cannot overflow: `new` bounded every name with its prefix.
            let _ = write!(text, "{file}");
            // iPXE reads either; EDK2 and old ROMs only one of them. The file
            // field holds 127 bytes plus its NUL; longer names go in 67 only.
            if text.len() < 128 {
                push_str(&mut r.file, &text);
            }
            push_str(&mut r.bootfile, &text);
            let _ = r.bootfile.push(0);
        }
        match kind {
            ClientKind::Ipxe => {
                r.ipxe = Some(IpxeEncap { no_pxedhcp: true });
                if let Some(rp) = self.config.boot.root_path {
                    push_str(&mut r.root_path, rp);
                }
            }
            ClientKind::Http { .. } if chosen.is_some() => {
                push_str(&mut r.vendor_class, "HTTPClient")
            }
            _ => {}
        }
        if proxy {
            if kind == (ClientKind::Pxe { arch: 0 }) && chosen.is_some() {
                // PXE_DISCOVERY_CONTROL = 8: boot the file in this offer, skip
                // boot server discovery. Classic BIOS ROMs want it in a proxy
                // offer; UEFI firmware without it asks port 4011 instead.
                let _ = r.vendor_specific.extend_from_slice(&[6, 1, 8, 255]);
            }
            if r.vendor_class.is_empty() {
                push_str(&mut r.vendor_class, "PXEClient");
            }
            r.uuid = req.uuid.clone();
        }
        chosen
    }

    fn pending(
        r: Repr,
        req: &Repr,
        dst: (SocketAddrV4, u16),
        kind: ClientKind,
        proxy: bool,
        chosen: Option<(&'a str, BootChoice)>,
    ) -> Pending<'a> {
        let meta = Transmit {
            dst: dst.0,
            src_port: dst.1,
            broadcast: dst.0.ip().is_broadcast(),
            len: 0,
            message: r.message_type.unwrap_or(MessageType::Unknown(0)),
            proxy,
            mac: req.chaddr,
            yiaddr: r.yiaddr,
            client: kind,
            file: chosen.map(|c| c.0),
            choice: chosen.map(|c| c.1),
            boot_file: None,
        };
        Pending {
            repr: r,
            meta,
            limit: Self::limit(req),
        }
    }

    fn proxy(&mut self, msg: MessageType, req: &Repr) -> Option<Pending<'a>> {
        if msg == MessageType::Request && boot::classify(req) != ClientKind::Plain {
            // A booting client's REQUEST to the real server names the
            // address it takes; iPXE does not always follow with a request
            // on 4011, so this is where a proxy sees it.
            let ip = req
                .requested_ip
                .or(Some(req.ciaddr))
                .filter(|ip| !ip.is_unspecified() && !ip.is_broadcast());
            if let Some(ip) = ip {
                self.station = Some((req.chaddr, ip));
            }
        }
        if msg != MessageType::Discover {
            // PXE clients ask the proxy on port 4011; REQUESTs on 67 are the DHCP server's.
            return self.ignore();
        }
        let kind = boot::classify(req);
        if kind == ClientKind::Plain {
            return self.ignore();
        }
        let mut r = self.reply(req, MessageType::Offer);
        let chosen = self.add_boot(&mut r, req, kind, true);
        if chosen.is_none() {
            return self.ignore();
        }
        let dst = if req.giaddr.is_unspecified() {
            (
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
                SERVER_PORT,
            )
        } else {
            (SocketAddrV4::new(req.giaddr, SERVER_PORT), SERVER_PORT)
        };
        Some(Self::pending(r, req, dst, kind, true, chosen))
    }

    fn pxe_request(
        &mut self,
        src: SocketAddrV4,
        msg: MessageType,
        req: &Repr,
    ) -> Option<Pending<'a>> {
        if !matches!(msg, MessageType::Request | MessageType::Inform) {
            return self.ignore();
        }
        let kind = boot::classify(req);
        if kind == ClientKind::Plain {
            return self.ignore();
        }
        let mut r = self.reply(req, MessageType::Ack);
        r.ciaddr = req.ciaddr;
        let chosen = self.add_boot(&mut r, req, kind, true);
        if chosen.is_none() {
            return self.ignore();
        }
        let dst = if src.ip().is_unspecified() {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, src.port())
        } else {
            src
        };
        Some(Self::pending(r, req, (dst, PXE_PORT), kind, true, chosen))
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.config.pool.is_some_and(|(s, e)| {
            (u32::from(s)..=u32::from(e)).contains(&u32::from(ip)) && ip != self.config.server_ip
        })
    }

    /// Options 1, 3, 6, 12, 51, 58, 59 and the boot information of an OFFER/ACK.
    fn address_reply(
        &self,
        req: &Repr,
        msg: MessageType,
        yiaddr: Ipv4Addr,
        lease: bool,
    ) -> (Repr, ClientKind, Option<(&'a str, BootChoice)>) {
        let c = &self.config;
        let mut r = self.reply(req, msg);
        r.yiaddr = yiaddr;
        if lease {
            let t = c.lease_secs;
            r.lease_time = Some(t);
            r.renewal_time = Some(t / 2);
            r.rebinding_time = Some(t / 8 * 7);
        }
        let asked = |code| req.params.is_empty() || req.params.contains(code);
        r.subnet_mask = Some(c.subnet_mask);
        if asked(wire::opt::ROUTER) {
            r.router = c.router;
        }
        if asked(wire::opt::DNS) {
            for a in c.dns.iter().take(4) {
                let _ = r.dns.push(*a);
            }
        }
        if let Some(name) = self.host(&req.chaddr).and_then(|h| h.hostname) {
            push_str(&mut r.hostname, name);
        }
        let kind = boot::classify(req);
        let chosen = self.add_boot(&mut r, req, kind, false);
        (r, kind, chosen)
    }

    fn full(&mut self, now: Instant, msg: MessageType, req: &Repr) -> Option<Pending<'a>> {
        match msg {
            MessageType::Discover => self.discover(now, req),
            MessageType::Request => self.request(now, req),
            MessageType::Decline => {
                if req.server_id == Some(self.config.server_ip) {
                    if let Some(ip) = req.requested_ip {
                        let until = now + self.config.decline_hold;
                        if self.leases.decline(&req.chaddr, ip, until) {
                            bump(&mut self.stats.declines);
                            return None;
                        }
                    }
                }
                self.ignore()
            }
            MessageType::Release => {
                if req.server_id.is_none_or(|s| s == self.config.server_ip)
                    && self.leases.release(&req.chaddr, req.ciaddr)
                {
                    bump(&mut self.stats.releases);
                    return None;
                }
                self.ignore()
            }
            MessageType::Inform => {
                if req.ciaddr.is_unspecified() && req.giaddr.is_unspecified() {
                    return self.ignore();
                }
                let (mut r, kind, chosen) =
                    self.address_reply(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED, false);
                r.ciaddr = req.ciaddr;
                Some(Self::pending(
                    r,
                    req,
                    Self::default_dst(req),
                    kind,
                    false,
                    chosen,
                ))
            }
            _ => self.ignore(),
        }
    }

    fn probing(&self) -> bool {
        self.config.probe && P > 0
    }

    fn discover(&mut self, now: Instant, req: &Repr) -> Option<Pending<'a>> {
        let known = self.leases.lookup_mac(now, &req.chaddr).is_some();
        if self.renew_only(now).is_some() && !known {
            bump(&mut self.stats.renew_only_silent);
            return None;
        }
        if self.probing() && self.probes.has_mac(&req.chaddr) {
            // A retransmission: the offer comes when its probe ends.
            return None;
        }
        self.allocate(now, req, 1)
    }

    /// Picks an address for `req` and offers it, or, when it is new to this
    /// client and probing is on, starts probing it (`attempt` counts the
    /// addresses tried for this DISCOVER).
    fn allocate(&mut self, now: Instant, req: &Repr, attempt: u8) -> Option<Pending<'a>> {
        // The client's reservation, bound lease or current offer: offered
        // again without a probe (it holds the address, or was offered it
        // after one). Anything else is an address nobody renewed.
        let known = self.leases.lookup_mac(now, &req.chaddr).is_some();
        let until = now + self.config.offer_hold;
        // Without a pool only reservations are served; an empty range stands in.
        let pool = self
            .config
            .pool
            .unwrap_or((Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED));
        let requested = req.requested_ip.filter(|ip| self.in_pool(*ip));
        let ip = self.leases.offer(
            now,
            req.chaddr,
            requested,
            pool,
            &mut self.cursor,
            self.config.server_ip,
            until,
        );
        let Some(ip) = ip else {
            bump(&mut self.stats.pool_exhausted);
            return None;
        };
        if self.probing() && !known {
            let probe = Probe {
                ip,
                mac: req.chaddr,
                req: req.clone(),
                sent: false,
                started: now,
                attempt,
            };
            if !self.probes.start(probe) {
                // Bounded: no slot, no offer; the client will ask again.
                self.leases.cancel_offer(&req.chaddr);
                bump(&mut self.stats.probe_refused);
            }
            return None;
        }
        let (r, kind, chosen) = self.address_reply(req, MessageType::Offer, ip, true);
        Some(Self::pending(
            r,
            req,
            Self::default_dst(req),
            kind,
            false,
            chosen,
        ))
    }

    fn request(&mut self, now: Instant, req: &Repr) -> Option<Pending<'a>> {
        let ip = match req.server_id {
            Some(sid) if sid != self.config.server_ip => {
                // SELECTING another server's offer: ours is free again.
                self.leases.cancel_offer(&req.chaddr);
                return self.ignore();
            }
            _ => match (req.requested_ip, req.ciaddr) {
                (Some(ip), _) => ip,
                (None, ci) if !ci.is_unspecified() => ci,
                _ => return self.ignore(),
            },
        };
        let until = now + Duration::from_secs(u64::from(self.config.lease_secs));
        let in_pool = self.in_pool(ip);
        match self.leases.bind(now, req.chaddr, ip, in_pool, until) {
            Ok(()) => {
                let (mut r, kind, chosen) = self.address_reply(req, MessageType::Ack, ip, true);
                r.ciaddr = req.ciaddr;
                Some(Self::pending(
                    r,
                    req,
                    Self::default_dst(req),
                    kind,
                    false,
                    chosen,
                ))
            }
            Err(_) => {
                let mut r = self.reply(req, MessageType::Nak);
                if !req.giaddr.is_unspecified() {
                    r.broadcast = true;
                }
                push_str(&mut r.message, "address not available");
                let dst = if req.giaddr.is_unspecified() {
                    (
                        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
                        SERVER_PORT,
                    )
                } else {
                    (SocketAddrV4::new(req.giaddr, SERVER_PORT), SERVER_PORT)
                };
                Some(Self::pending(r, req, dst, ClientKind::Plain, false, None))
            }
        }
    }
}

#[cfg(test)]
mod tests;
