//! The appliance's configuration as plain structs over borrowed data, so a
//! firmware can keep it in flash (`static`) and a Linux runner can build it
//! from the TOML file at start.

use core::net::Ipv4Addr;

use sanboot_core::dhcp;
use sanboot_core::ipxe::DirectEntry;
use sanboot_core::tftp::TransferConfig;

/// Everything the appliance needs to know, borrowed for its whole life.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Our Ethernet address (smoltcp owns the interface: it is not the host's).
    pub mac: [u8; 6],
    /// Our IPv4 address: siaddr, DHCP option 54, TFTP server and iSCSI portal.
    pub address: Ipv4Addr,
    /// Prefix length of the boot LAN (24 for 255.255.255.0).
    pub prefix_len: u8,
    /// Default gateway, for clients relayed from another subnet.
    pub gateway: Option<Ipv4Addr>,
    /// DHCP or ProxyDHCP; `None` turns DHCP off (another server names our boot file).
    pub dhcp: Option<dhcp::Config<'a>>,
    /// In proxy mode, also answer PXE boot-server requests on UDP 4011.
    pub pxe_port: bool,
    /// Limits of every TFTP transfer. `max_windowsize` is lowered at start to
    /// what a transfer socket's transmit buffer holds.
    pub tftp: TransferConfig,
    /// The iSCSI target; `None` turns it off.
    pub iscsi: Option<crate::iscsi::IscsiConfig<'a>>,
    /// The generated iPXE scripts served as TFTP virtual files.
    pub scripts: Scripts<'a>,
    /// Seed for TFTP transfer ports and smoltcp's TCP sequence numbers.
    pub random_seed: u64,
}

/// The seed chain and per-machine scripts (see `sanboot_core::ipxe`).
#[derive(Debug, Clone, Copy)]
pub struct Scripts<'a> {
    /// The file DHCP hands to iPXE clients (`[boot] script`, e.g. `boot.ipxe`).
    pub boot: &'a str,
    /// `[boot] root_path`: where `default.ipxe` and `<mac>.ipxe` live.
    pub root_path: Option<&'a str>,
    /// Serve `boot` as one file holding every host instead of the chain.
    pub direct: bool,
    /// Every machine with a script, in config order (MACs unique).
    pub hosts: &'a [DirectEntry<'a>],
}

impl<'a> Scripts<'a> {
    /// The default chain (`boot.ipxe` → `default.ipxe` → `<mac>.ipxe`) for `hosts`.
    pub const fn new(hosts: &'a [DirectEntry<'a>]) -> Self {
        Scripts {
            boot: "boot.ipxe",
            root_path: None,
            direct: false,
            hosts,
        }
    }
}
