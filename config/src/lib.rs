//! The TOML configuration file: one file describes the appliance, its boot
//! files, its iSCSI targets and the machines it boots.
//!
//! Parsing errors come from `toml` and name the line and column; semantic
//! errors (`validate`) name the table and key at fault.
//!
//! Shared by every std host (`sanboot` on Linux, the smoltcp TAP runner):
//! [`translate`] maps the file onto the core's configs, [`script`] renders
//! each host's iPXE script and lists what `sanboot check` warns about,
//! [`files`] keeps TFTP inside its root.

pub mod disk;
pub mod exposure;
pub mod files;
pub mod image_lock;
pub mod images;
pub mod lun_device;
pub mod overlay;
pub mod script;
pub mod stations;
pub mod translate;
pub mod web;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default)]
    pub dhcp: Dhcp,
    #[serde(default)]
    pub tftp: Tftp,
    #[serde(default)]
    pub boot: Boot,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub iscsi: Iscsi,
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    /// Golden images stations boot through their own overlay ([`images`]).
    #[serde(default, rename = "image")]
    pub images: Vec<Image>,
    #[serde(default)]
    pub web: web::Web,
}

/// `[server]`: where the appliance lives on the boot LAN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Our IPv4 address on the boot LAN: siaddr, option 54, TFTP and iSCSI portal.
    pub address: Ipv4Addr,
    /// The interface DHCP binds to (SO_BINDTODEVICE). Required when DHCP is on.
    pub interface: Option<String>,
    /// Where leases are persisted. Relative paths are relative to the config file.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// How DHCP answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// ProxyDHCP beside an existing DHCP server: boot information only, no addresses.
    #[default]
    Proxy,
    /// The only DHCP server on the LAN: addresses from the pool plus boot information.
    Full,
    /// No DHCP at all (another server hands out our boot file).
    Off,
}

/// `[dhcp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    #[serde(default)]
    pub mode: DhcpMode,
    /// First and last address of the dynamic pool (full mode).
    pub pool_start: Option<Ipv4Addr>,
    pub pool_end: Option<Ipv4Addr>,
    #[serde(default = "default_netmask")]
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// UDP port for DHCP server traffic (67); tests may move it.
    #[serde(default = "default_dhcp_port")]
    pub port: u16,
    /// Also listen on 4011 for PXE boot-server requests (ProxyDHCP).
    #[serde(default = "default_true")]
    pub pxe_port: bool,
    /// Full mode: check that an address nobody renewed is unused (ICMP
    /// echo / ARP, 500 ms) before offering it.
    #[serde(default = "default_true")]
    pub probe: bool,
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            mode: DhcpMode::default(),
            pool_start: None,
            pool_end: None,
            netmask: default_netmask(),
            router: None,
            dns: Vec::new(),
            lease_secs: default_lease_secs(),
            port: default_dhcp_port(),
            pxe_port: true,
            probe: true,
        }
    }
}

fn default_netmask() -> Ipv4Addr {
    Ipv4Addr::new(255, 255, 255, 0)
}
fn default_lease_secs() -> u32 {
    3600
}
fn default_dhcp_port() -> u16 {
    67
}
fn default_true() -> bool {
    true
}

/// `[tftp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tftp {
    /// Directory served read-only; nothing outside it is ever reachable.
    pub root: Option<PathBuf>,
    #[serde(default = "default_tftp_listen")]
    pub listen: SocketAddr,
    /// Largest blksize granted; clients asking more get this (MTU 1500 - 32).
    #[serde(default = "default_max_blksize")]
    pub max_blksize: u16,
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
}

impl Default for Tftp {
    fn default() -> Self {
        Tftp {
            root: None,
            listen: default_tftp_listen(),
            max_blksize: default_max_blksize(),
            max_transfers: default_max_transfers(),
        }
    }
}

fn default_tftp_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 69))
}
fn default_max_blksize() -> u16 {
    1468
}
fn default_max_transfers() -> usize {
    64
}

/// `[http]`: boot files and scripts over HTTP, beside TFTP. Off unless
/// `listen` is set: port 80 is often taken, and turning it on changes what
/// DHCP hands out and what `boot.ipxe` chains to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Where the HTTP server listens, e.g. `"0.0.0.0:80"`. When set, iPXE
    /// gets `http://<server>/<script>` from DHCP, `boot.ipxe` chains over
    /// HTTP, and UEFI HTTP boot clients get their iPXE binary from it.
    pub listen: Option<SocketAddr>,
    /// Also serve every read-only LUN's image at
    /// `/images/<target-iqn>/<lun>` (for iPXE's `sanboot http://…`).
    #[serde(default)]
    pub images: bool,
}

/// `[boot]`: which file each kind of client gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Plain PXE, BIOS (option 93 = 0).
    #[serde(default = "default_bios")]
    pub bios: String,
    /// Plain PXE, x86-64 UEFI (option 93 = 6, 7, 9).
    #[serde(default = "default_uefi")]
    pub uefi: String,
    /// Plain PXE, arm64 UEFI (option 93 = 11; 10 = arm32).
    #[serde(default = "default_arm64")]
    pub arm64: String,
    /// UEFI HTTP boot (option 93 = 16): a URL.
    pub http: Option<String>,
    /// What a client that already runs iPXE gets (a virtual file, generated).
    #[serde(default = "default_script")]
    pub script: String,
    /// Option 17 handed to iPXE clients; must not be an absolute URI (iPXE would SAN-hook it).
    pub root_path: Option<String>,
    /// Default initiator IQN template: `%hostname%` and `%mac%` (hex-hyphen) are replaced.
    #[serde(default = "default_initiator_template")]
    pub initiator_iqn: String,
    /// Serve `script` as one file holding every host (picked by `${mac:hexhyp}`)
    /// instead of the chain `script` -> `default.ipxe` -> `<mac>.ipxe`.
    #[serde(default)]
    pub direct: bool,
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            bios: default_bios(),
            uefi: default_uefi(),
            arm64: default_arm64(),
            http: None,
            script: default_script(),
            root_path: None,
            initiator_iqn: default_initiator_template(),
            direct: false,
        }
    }
}

fn default_bios() -> String {
    "undionly.kpxe".into()
}
fn default_uefi() -> String {
    "ipxe.efi".into()
}
fn default_arm64() -> String {
    "ipxe-arm64.efi".into()
}
fn default_script() -> String {
    "boot.ipxe".into()
}
fn default_initiator_template() -> String {
    "iqn.2010-04.org.ipxe:%hostname%-%mac%".into()
}

/// `[iscsi]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iscsi {
    #[serde(default = "default_iscsi_listen")]
    pub listen: SocketAddr,
    /// Normal (disk) sessions at once; at most [`NEXUS_TABLE`].
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Discovery (SendTargets) sessions at once, counted apart from
    /// `max_sessions` so idle discovery sessions cannot lock disks out.
    #[serde(default = "default_max_discovery_sessions")]
    pub max_discovery_sessions: usize,
    /// TCP connections at once (logged in or not); more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP connections at once from one IP address; more are closed at once.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// `<ip>:<port>` reported by SendTargets (TargetAddress); default: the
    /// listen address, or `[server] address` when listening on 0.0.0.0.
    pub portal: Option<String>,
    /// Seconds without a PDU from an initiator before sanboot pings it
    /// (NOP-In); 0: no pings. See `TargetLimits::nop_in_interval_ms`.
    #[serde(default = "default_nop_interval_secs")]
    pub nop_interval_secs: u64,
    /// Seconds an unanswered ping (or unacknowledged TCP data) may wait
    /// before the session is closed as dead.
    #[serde(default = "default_nop_timeout_secs")]
    pub nop_timeout_secs: u64,
}

impl Default for Iscsi {
    fn default() -> Self {
        Iscsi {
            listen: default_iscsi_listen(),
            max_sessions: default_max_sessions(),
            max_discovery_sessions: default_max_discovery_sessions(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            portal: None,
            nop_interval_secs: default_nop_interval_secs(),
            nop_timeout_secs: default_nop_timeout_secs(),
        }
    }
}

impl Iscsi {
    /// The core's limits with this section's dead-peer timers.
    pub fn target_limits(&self) -> sanboot_core::iscsi::TargetLimits {
        sanboot_core::iscsi::TargetLimits {
            nop_in_interval_ms: self.nop_interval_secs.saturating_mul(1000),
            nop_in_timeout_ms: self.nop_timeout_secs.saturating_mul(1000),
            ..Default::default()
        }
    }
}

fn default_iscsi_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3260))
}
fn default_max_sessions() -> usize {
    16
}
fn default_max_discovery_sessions() -> usize {
    16
}
fn default_max_connections() -> usize {
    // An idle connection costs 350 KiB to 1 MiB resident (its Connection's
    // task table and receive/transmit buffers): 128 keep that near 100 MiB
    // and leave room for max_sessions + max_discovery_sessions.
    128
}
fn default_max_connections_per_ip() -> usize {
    32
}

/// Size of sanboot's I_T nexus table (unit attentions, reservations): the
/// most normal sessions `[iscsi] max_sessions` may allow.
pub const NEXUS_TABLE: usize = 64;
/// The most discovery sessions `[iscsi] max_discovery_sessions` may allow.
pub const DISCOVERY_SESSIONS_LIMIT: usize = 128;
fn default_nop_interval_secs() -> u64 {
    sanboot_core::iscsi::TargetLimits::default().nop_in_interval_ms / 1000
}
fn default_nop_timeout_secs() -> u64 {
    sanboot_core::iscsi::TargetLimits::default().nop_in_timeout_ms / 1000
}

/// `[[target]]`: an iSCSI target with its LUNs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub iqn: String,
    /// Initiator names allowed to log in; empty means anyone.
    #[serde(default)]
    pub initiators: Vec<String>,
    pub chap: Option<Chap>,
    /// How HeaderDigest/DataDigest offers are answered.
    #[serde(default)]
    pub digest: Digest,
    #[serde(default, rename = "lun")]
    pub luns: Vec<Lun>,
}

/// `[[target]] digest`: CRC32C header/data digest policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    /// Never CRC32C.
    None,
    /// The initiator's order decides (libiscsi's `None,CRC32C` → None).
    #[default]
    Allowed,
    /// CRC32C whenever the initiator offers it.
    Preferred,
    /// CRC32C for header and data digests, or the login is refused.
    Required,
}

/// CHAP secrets of a target; `mutual_*` makes the target prove itself too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chap {
    pub user: String,
    pub secret: String,
    pub mutual_user: Option<String>,
    pub mutual_secret: Option<String>,
}

/// `[[target.lun]]`: a disk backed by an image file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lun {
    #[serde(default)]
    pub id: u64,
    /// Image file; relative paths are relative to the config file. With
    /// `base`: the station's overlay file (created when missing).
    pub image: PathBuf,
    /// A golden base image: the LUN is a copy-on-write overlay over it,
    /// writes go to `image`, the base is only read (and may be shared).
    pub base: Option<PathBuf>,
    /// Create the image (sparse) with this size in bytes if it does not exist.
    pub size: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
    /// Thin provisioning: UNMAP / WRITE SAME with UNMAP punch holes in the
    /// image, GET LBA STATUS reports them.
    #[serde(default = "default_true")]
    pub thin: bool,
    /// Acknowledge writes from the page cache (reported as WCE=1; the
    /// initiator flushes with SYNCHRONIZE CACHE / FUA). When false every
    /// write is made durable before its status.
    #[serde(default = "default_true")]
    pub write_cache: bool,
}

/// `[[image]]`: a read-only golden system image that many stations boot,
/// each through its own copy-on-write overlay (see [`images`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Names the image in `[[host]] image` and on the command line; also a
    /// directory name under `overlay_dir`.
    pub name: String,
    /// The golden base (version 1); never written. Relative to the config file.
    pub file: PathBuf,
    /// Overlay allocation unit in bytes (a power of two, 4 KiB .. 1 MiB);
    /// the overlay's default when absent.
    pub granularity: Option<u64>,
    /// Where station overlays live: `<overlay_dir>/<name>/<hostname>.ovl`.
    /// Default `<state_dir>/overlays`.
    pub overlay_dir: Option<PathBuf>,
    /// Prefix of the station targets' names: station `pc1` gets the target
    /// `<iqn>:pc1`. Default `iqn.2026-12.org.sanboot:<name>`.
    pub iqn: Option<String>,
}

/// `[[host]] mode`: what happens to a station's overlay of its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StationMode {
    /// Writes are kept across boots (until `sanboot image reset`).
    #[default]
    Persistent,
    /// Writes are discarded at every boot: each boot starts from the image.
    Volatile,
    /// Kept like `persistent`, plus named snapshots to roll back to.
    Snapshot,
}

/// `base` (an overlay LUN) rules out the keys that only a plain image has.
fn overlay_lun_rules(t: &Target, l: &Lun) -> Result<()> {
    let Some(base) = &l.base else { return Ok(()) };
    if l.read_only {
        bail!(
            "[[target]] {} lun {}: read_only with base: a read-only LUN needs no overlay, \
             serve the base as its image",
            t.iqn,
            l.id
        );
    }
    if l.size.is_some() {
        bail!(
            "[[target]] {} lun {}: size with base: an overlay has its base's size",
            t.iqn,
            l.id
        );
    }
    if base == &l.image {
        bail!(
            "[[target]] {} lun {}: base and image are the same file {}",
            t.iqn,
            l.id,
            base.display()
        );
    }
    Ok(())
}

/// What a host's script does once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BootKind {
    /// `sanboot iscsi:<server>::<port>:<lun>:<target>`.
    #[default]
    Sanboot,
    /// Kernel + initrd with `iscsi_target= iscsi_address= iscsi_initiatorname= ip=dhcp`.
    Kernel,
    /// `chain <url>`.
    Chain,
}

/// `initramfs = "..."` on a kernel host: whose command-line keys carry the
/// disk (see `sanboot_core::ipxe::Initramfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsKind {
    /// Gentoo genkernel: `iscsi_target= iscsi_address= iscsi_initiatorname=`.
    #[default]
    Genkernel,
    /// dracut: `netroot=iscsi:… rd.iscsi.initiator=`.
    Dracut,
    /// Debian initramfs-tools + open-iscsi: `iscsi_target_name= iscsi_target_ip= iscsi_initiator=`.
    InitramfsTools,
    /// iPXE `sanhook`s the disk into the iBFT; `rd.iscsi.firmware=1 iscsi_auto`.
    Ibft,
}

impl InitramfsKind {
    /// The core's name for it.
    pub fn core(self) -> sanboot_core::ipxe::Initramfs {
        use sanboot_core::ipxe::Initramfs;
        match self {
            InitramfsKind::Genkernel => Initramfs::Genkernel,
            InitramfsKind::Dracut => Initramfs::Dracut,
            InitramfsKind::InitramfsTools => Initramfs::InitramfsTools,
            InitramfsKind::Ibft => Initramfs::Ibft,
        }
    }
}

/// `[[host]]`: one machine, keyed by MAC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// MAC address in any of `aa:bb:..`, `aa-bb-..`, case-insensitive.
    pub mac: String,
    pub hostname: Option<String>,
    /// Fixed address (full DHCP mode).
    pub ip: Option<Ipv4Addr>,
    /// Replaces the `[boot]` PXE file (every architecture) this host's ROM gets.
    pub boot_file: Option<String>,
    #[serde(default)]
    pub boot: BootKind,
    /// Target IQN this host boots from (sanboot and kernel kinds).
    pub target: Option<String>,
    #[serde(default)]
    pub lun: u64,
    /// Overrides `[boot].initiator_iqn` for this host.
    pub initiator_iqn: Option<String>,
    /// `[host.chap]`: this station's own CHAP secrets. Its initiator name
    /// must prove them (instead of the target's) on the target it boots and
    /// on every target whose `initiators` list names it; its script carries
    /// them, and is served only to its own address.
    pub chap: Option<Chap>,
    /// Leave the SAN device attached for the OS (iPXE keep-san).
    #[serde(default)]
    pub keep_san: bool,
    /// Chain kind: the URL to chain to (`${mac:hexhyp}` and other iPXE settings allowed).
    pub chain: Option<String>,
    /// Kernel kind: which initramfs reads the command line (genkernel when absent).
    pub initramfs: Option<InitramfsKind>,
    /// Kernel kind: kernel and initrd paths or URLs, and extra command line.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    /// Boot this `[[image]]` through the station's own overlay; sanboot
    /// makes the target (see [`images`]), so `target`/`lun` stay unset.
    pub image: Option<String>,
    /// With `image`: persistent (default), volatile or snapshot.
    pub mode: Option<StationMode>,
}

impl Config {
    /// Reads, parses and validates the file at `path`; relative paths inside
    /// it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        // Stations of golden images become ordinary targets first, so every
        // later rule (and `serve`, `script`, `check`) sees them as such.
        images::expand(&mut config)
            .with_context(|| format!("{}: invalid configuration", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}: invalid configuration", path.display()))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.server.state_dir);
        if let Some(root) = self.tftp.root.as_mut() {
            abs(root);
        }
        for target in &mut self.targets {
            for lun in &mut target.luns {
                abs(&mut lun.image);
                if let Some(b) = lun.base.as_mut() {
                    abs(b);
                }
            }
        }
        for image in &mut self.images {
            abs(&mut image.file);
            if let Some(dir) = image.overlay_dir.as_mut() {
                abs(dir);
            }
        }
    }

    /// Session and connection caps that the tables behind them can hold.
    fn validate_iscsi_limits(&self) -> Result<()> {
        let i = &self.iscsi;
        if i.max_sessions > NEXUS_TABLE {
            bail!(
                "[iscsi] max_sessions = {}: above {NEXUS_TABLE}, the size of the I_T nexus \
                 table (sessions beyond it would get no unit attentions or reservations)",
                i.max_sessions
            );
        }
        if i.max_discovery_sessions > DISCOVERY_SESSIONS_LIMIT {
            bail!(
                "[iscsi] max_discovery_sessions = {}: above {DISCOVERY_SESSIONS_LIMIT}",
                i.max_discovery_sessions
            );
        }
        if i.max_connections <= i.max_sessions + i.max_discovery_sessions {
            bail!(
                "[iscsi] max_connections = {}: must be above max_sessions + \
                 max_discovery_sessions = {} (every session is a connection, and a new \
                 login needs one more)",
                i.max_connections,
                i.max_sessions + i.max_discovery_sessions
            );
        }
        if i.max_connections_per_ip == 0 || i.max_connections < i.max_connections_per_ip {
            bail!(
                "[iscsi] max_connections = {} and max_connections_per_ip = {}: need \
                 1 <= max_connections_per_ip <= max_connections",
                i.max_connections,
                i.max_connections_per_ip
            );
        }
        Ok(())
    }

    /// A writable image serves one LUN (two read-only LUNs may share one).
    /// `serve` also locks every image (`flock`), which catches hard links and
    /// other processes; this catches the plain mistake already in `check`.
    fn validate_images(&self) -> Result<()> {
        let mut seen: std::collections::HashMap<PathBuf, (&str, u64, bool)> =
            std::collections::HashMap::new();
        for t in &self.targets {
            for l in &t.luns {
                let key = std::fs::canonicalize(&l.image).unwrap_or_else(|_| l.image.clone());
                match seen.get(&key) {
                    Some((iqn, id, read_only)) if !(*read_only && l.read_only) => bail!(
                        "[[target]] {} lun {}: image {} is also lun {} of [[target]] {}; \
                         a writable image serves one LUN",
                        t.iqn,
                        l.id,
                        l.image.display(),
                        id,
                        iqn
                    ),
                    Some(_) => {}
                    None => {
                        seen.insert(key, (t.iqn.as_str(), l.id, l.read_only));
                    }
                }
            }
        }
        Ok(())
    }

    /// A base must not also be a writable LUN's image: it would change
    /// under every overlay made from it.
    fn validate_bases(&self) -> Result<()> {
        let key = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        for t in &self.targets {
            for l in &t.luns {
                let Some(base) = &l.base else { continue };
                for t2 in &self.targets {
                    for l2 in t2.luns.iter().filter(|l2| !l2.read_only) {
                        if key(&l2.image) == key(base) {
                            bail!(
                                "[[target]] {} lun {}: base {} is the image of writable lun {} \
                                 of [[target]] {}; a base must not change under its overlays",
                                t.iqn,
                                l.id,
                                base.display(),
                                l2.id,
                                t2.iqn
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the rules the types cannot hold. Each error names its table.
    pub fn validate(&self) -> Result<()> {
        if self.dhcp.mode != DhcpMode::Off && self.server.interface.is_none() {
            bail!("[server] interface: required when [dhcp] mode is not \"off\"");
        }
        if self.dhcp.mode == DhcpMode::Full {
            match (self.dhcp.pool_start, self.dhcp.pool_end) {
                (Some(a), Some(b)) if u32::from(a) <= u32::from(b) => {}
                (Some(_), Some(_)) => bail!("[dhcp] pool_start is after pool_end"),
                _ => bail!("[dhcp] pool_start and pool_end: required in full mode"),
            }
        }
        if let Some(rp) = &self.boot.root_path {
            if rp.contains("://") {
                bail!(
                    "[boot] root_path = {rp:?}: an absolute URI makes iPXE try to SAN-boot it \
                     before loading its script; give a path without a scheme"
                );
            }
        }
        if let Some(listen) = self.http.listen {
            if matches!(listen.ip(), std::net::IpAddr::V6(ip) if !ip.is_unspecified()) {
                bail!(
                    "[http] listen = {listen}: boot clients reach sanboot over IPv4; \
                     listen on an IPv4 address or [::]"
                );
            }
        }
        if self.iscsi.nop_timeout_secs == 0 {
            bail!("[iscsi] nop_timeout_secs = 0: must be at least 1 (to turn pings off, set nop_interval_secs = 0)");
        }
        let mut seen_iqns = std::collections::HashSet::new();
        for t in &self.targets {
            if !seen_iqns.insert(t.iqn.to_ascii_lowercase()) {
                bail!("[[target]] iqn = {:?}: defined twice", t.iqn);
            }
            let mut ids = std::collections::HashSet::new();
            for l in &t.luns {
                if l.id > sanboot_core::ipxe::MAX_LUN {
                    bail!(
                        "[[target]] {}: lun {}: above {}, the largest LUN an initiator can \
                         address (SAM flat space); REPORT LUNS would name another one",
                        t.iqn,
                        l.id,
                        sanboot_core::ipxe::MAX_LUN
                    );
                }
                if !ids.insert(l.id) {
                    bail!("[[target]] {}: lun {} defined twice", t.iqn, l.id);
                }
                overlay_lun_rules(t, l)?;
            }
        }
        self.validate_images()?;
        self.validate_bases()?;
        self.validate_iscsi_limits()?;
        let mut macs = std::collections::HashSet::new();
        for h in &self.hosts {
            let mac = parse_mac(&h.mac)
                .with_context(|| format!("[[host]] mac = {:?}: not a MAC address", h.mac))?;
            if !macs.insert(mac) {
                bail!("[[host]] mac = {:?}: defined twice", h.mac);
            }
            match h.boot {
                BootKind::Sanboot | BootKind::Kernel => {
                    let Some(target) = &h.target else {
                        bail!("[[host]] {}: boot = sanboot/kernel needs `target`", h.mac);
                    };
                    let Some(t) = self.target(target) else {
                        bail!("[[host]] {}: target {:?} is not defined", h.mac, target);
                    };
                    if !t.luns.iter().any(|l| l.id == h.lun) {
                        bail!("[[host]] {}: target {} has no lun {}", h.mac, target, h.lun);
                    }
                    if h.boot == BootKind::Kernel && h.kernel.is_none() {
                        bail!("[[host]] {}: boot = kernel needs `kernel`", h.mac);
                    }
                    if h.boot != BootKind::Kernel && h.initramfs.is_some() {
                        bail!("[[host]] {}: `initramfs` is for boot = kernel", h.mac);
                    }
                }
                BootKind::Chain => {
                    if h.chain.is_none() {
                        bail!("[[host]] {}: boot = chain needs `chain`", h.mac);
                    }
                    if h.chap.is_some() {
                        bail!(
                            "[[host]] {}: [host.chap] is for hosts that boot a target \
                             (sanboot or kernel); a chain host logs in nowhere",
                            h.mac
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// sanboot's HTTP server as clients reach it (`[http] listen`, its
    /// address or, when it listens on every address, `[server] address`);
    /// `None` when HTTP is off.
    pub fn http_server(&self) -> Option<std::net::SocketAddrV4> {
        let listen = self.http.listen?;
        let ip = match listen.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            _ => self.server.address,
        };
        Some(std::net::SocketAddrV4::new(ip, listen.port()))
    }

    /// The target with this IQN (IQNs compare case-insensitively).
    pub fn target(&self, iqn: &str) -> Option<&Target> {
        self.targets
            .iter()
            .find(|t| t.iqn.eq_ignore_ascii_case(iqn))
    }

    /// The host with this MAC.
    pub fn host(&self, mac: [u8; 6]) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| parse_mac(&h.mac).is_ok_and(|m| m == mac))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case: the core's
/// `${mac:hexhyp}` parser, with colons read as hyphens.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    sanboot_core::ipxe::parse_hexhyp(&s.replace(':', "-"))
        .context("expected six two-digit hex octets separated by ':' or '-'")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        address = "192.0.2.1"
        interface = "br0"
    "#;

    #[test]
    fn web_is_off_unless_listen_is_set() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        assert!(c.web.listen.is_none() && c.web.token.is_none());
        let text = format!("{MINIMAL}\n[web]\nlisten = \"127.0.0.1:8080\"\ntoken = \"t0k\"\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert_eq!(c.web.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.web.token.as_deref(), Some("t0k"));
        let bad = format!("{MINIMAL}\n[web]\nlisten = \"localhost\"\n");
        assert!(toml::from_str::<Config>(&bad).is_err());
        let typo = format!("{MINIMAL}\n[web]\nlisten_on = \"127.0.0.1:1\"\n");
        assert!(toml::from_str::<Config>(&typo).is_err());
    }

    #[test]
    fn minimal_config_gets_proxy_defaults() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.dhcp.mode, DhcpMode::Proxy);
        assert_eq!(c.boot.bios, "undionly.kpxe");
        assert_eq!(c.iscsi.listen.port(), 3260);
    }

    #[test]
    fn http_is_off_by_default_and_names_a_reachable_address() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        assert_eq!(c.http_server(), None);
        let at = |listen: &str| {
            let c: Config =
                toml::from_str(&format!("{MINIMAL}\n[http]\nlisten = \"{listen}\"\n")).unwrap();
            c.validate().map(|()| c.http_server().unwrap().to_string())
        };
        // Every address: clients use [server] address.
        assert_eq!(at("0.0.0.0:80").unwrap(), "192.0.2.1:80");
        assert_eq!(at("[::]:8080").unwrap(), "192.0.2.1:8080");
        assert_eq!(at("192.0.2.7:80").unwrap(), "192.0.2.7:80");
        let err = at("[2001:db8::1]:80").unwrap_err().to_string();
        assert!(err.contains("[http] listen"), "{err}");
    }

    #[test]
    fn max_sessions_cannot_exceed_the_nexus_table() {
        let ok = format!("{MINIMAL}\n[iscsi]\nmax_sessions = {NEXUS_TABLE}\n");
        toml::from_str::<Config>(&ok).unwrap().validate().unwrap();
        let text = format!("{MINIMAL}\n[iscsi]\nmax_sessions = {}\n", NEXUS_TABLE + 1);
        let c: Config = toml::from_str(&text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("[iscsi] max_sessions = 65: above 64"), "{err}");
        // The defaults the README documents.
        let c: Config = toml::from_str(MINIMAL).unwrap();
        assert_eq!(
            (
                c.iscsi.max_sessions,
                c.iscsi.max_discovery_sessions,
                c.iscsi.max_connections,
                c.iscsi.max_connections_per_ip
            ),
            (16, 16, 128, 32)
        );
    }

    #[test]
    fn parse_error_names_the_line() {
        let text = format!("{MINIMAL}\n[dhcp]\nmode = \"fool\"\n");
        let err = toml::from_str::<Config>(&text).unwrap_err().to_string();
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn host_must_name_a_defined_target_and_lun() {
        let text = format!(
            "{MINIMAL}\n[[target]]\niqn = \"iqn.2024-01.test:a\"\n[[target.lun]]\nid = 0\nimage = \"a.img\"\n\
             [[host]]\nmac = \"52:54:00:00:00:01\"\ntarget = \"iqn.2024-01.test:a\"\nlun = 1\n"
        );
        let c: Config = toml::from_str(&text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("has no lun 1"), "{err}");
    }

    #[test]
    fn initramfs_is_a_kernel_host_key_with_known_values() {
        let host = |extra: &str| {
            format!(
                "{MINIMAL}\n[[target]]\niqn = \"iqn.2024-01.test:a\"\n[[target.lun]]\nid = 0\nimage = \"a.img\"\n\
                 [[host]]\nmac = \"52:54:00:00:00:01\"\ntarget = \"iqn.2024-01.test:a\"\n{extra}\n"
            )
        };
        for (name, want) in [
            ("genkernel", InitramfsKind::Genkernel),
            ("dracut", InitramfsKind::Dracut),
            ("initramfs-tools", InitramfsKind::InitramfsTools),
            ("ibft", InitramfsKind::Ibft),
        ] {
            let text = host(&format!(
                "boot = \"kernel\"\nkernel = \"vmlinuz\"\ninitramfs = \"{name}\""
            ));
            let c: Config = toml::from_str(&text).unwrap();
            c.validate().unwrap();
            assert_eq!(c.hosts.first().unwrap().initramfs, Some(want), "{name}");
        }
        let err = toml::from_str::<Config>(&host(
            "boot = \"kernel\"\nkernel = \"k\"\ninitramfs = \"mkinitcpio\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant"), "{err}");
        // On a sanboot host the key would do nothing: refused, not ignored.
        let c: Config = toml::from_str(&host("initramfs = \"dracut\"")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`initramfs` is for boot = kernel"), "{err}");
    }

    #[test]
    fn lun_beyond_flat_space_is_refused() {
        let lun = |id| {
            format!(
                "{MINIMAL}\n[[target]]\niqn = \"iqn.2024-01.test:a\"\n[[target.lun]]\nid = {id}\nimage = \"a.img\"\n"
            )
        };
        let ok: Config = toml::from_str(&lun(16383)).unwrap();
        ok.validate().unwrap();
        let c: Config = toml::from_str(&lun(16384)).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("lun 16384: above 16383"), "{err}");
    }

    #[test]
    fn nop_timers_default_to_a_minute_and_reach_the_core() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        let l = c.iscsi.target_limits();
        assert_eq!(
            (l.nop_in_interval_ms, l.nop_in_timeout_ms),
            (15_000, 30_000)
        );
        let text = format!("{MINIMAL}\n[iscsi]\nnop_interval_secs = 0\nnop_timeout_secs = 4\n");
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        let l = c.iscsi.target_limits();
        assert_eq!((l.nop_in_interval_ms, l.nop_in_timeout_ms), (0, 4_000));
        let text = format!("{MINIMAL}\n[iscsi]\nnop_timeout_secs = 0\n");
        let c: Config = toml::from_str(&text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("nop_timeout_secs"), "{err}");
    }

    #[test]
    fn absolute_root_path_is_refused() {
        let text = format!("{MINIMAL}\n[boot]\nroot_path = \"tftp://192.0.2.1\"\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("root_path"));
    }

    #[test]
    fn mac_forms() {
        let want = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];
        assert_eq!(parse_mac("52:54:00:E2:E0:01").unwrap(), want);
        assert_eq!(parse_mac("52-54-00-e2-e0-01").unwrap(), want);
        assert!(parse_mac("52:54:00:e2:e0").is_err());
        assert!(parse_mac("52:54:00:e2:e0:01:02").is_err());
        assert!(parse_mac("5:54:00:e2:e0:01").is_err());
        // u8::from_str_radix takes a sign: "+5" is not an octet.
        assert!(parse_mac("+5:54:00:e2:e0:01").is_err());
    }
}
