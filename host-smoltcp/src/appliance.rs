//! The appliance: one smoltcp interface, its sockets, and the core machines.

use sanboot_core::dhcp::{self, server::PXE_PORT, server::SERVER_PORT, Mode};
use sanboot_core::time::Instant as CoreInstant;
use smoltcp::iface::{Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::buffers::{sockets_needed, Buffers, TRANSFER_PACKETS};
use crate::config::Config;
use crate::event::Event;
use crate::storage::Files;
use crate::tftp::{Tftp, TFTP_PORT};

/// Why an appliance cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The DHCP configuration is refused by the core.
    Dhcp(dhcp::ConfigError),
    /// The socket slice is too short: `required` slots.
    TooFewSockets {
        /// Slots needed ([`crate::sockets_needed`]).
        required: usize,
    },
    /// The transfer buffer cannot hold one DATA packet of `max_blksize`.
    BufferTooSmall {
        /// Bytes needed per transfer socket.
        required: usize,
    },
}

/// Counters for a status line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The DHCP server's counters (zero when DHCP is off).
    pub dhcp: dhcp::Stats,
    /// The TFTP listener's counters.
    pub tftp: sanboot_core::tftp::ListenerStats,
    /// TFTP transfers running now.
    pub tftp_running: usize,
}

/// sanboot on smoltcp: DHCP/ProxyDHCP, TFTP with generated iPXE scripts,
/// over any `smoltcp::phy::Device`.
///
/// `LEASES` is the DHCP lease table's size, `T` the number of TFTP
/// transfers that can run at once. Call [`Appliance::poll`] whenever the
/// device has a frame or [`Appliance::poll_at`] is reached.
pub struct Appliance<'a, F: Files, const LEASES: usize, const T: usize> {
    config: Config<'a>,
    iface: Interface,
    sockets: SocketSet<'a>,
    dhcp: Option<crate::dhcp::Dhcp<'a, LEASES>>,
    tftp: Tftp<F::Handle, T>,
    files: F,
    scratch: &'a mut [u8],
}

impl<F: Files, const LEASES: usize, const T: usize> core::fmt::Debug
    for Appliance<'_, F, LEASES, T>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Appliance")
            .field("address", &self.config.address)
            .field("tftp_running", &self.tftp.running())
            .finish_non_exhaustive()
    }
}

/// The core's clock from smoltcp's (negative times are the epoch).
pub fn core_instant(now: Instant) -> CoreInstant {
    CoreInstant::from_millis(u64::try_from(now.total_millis()).unwrap_or(0))
}

fn smoltcp_instant(t: CoreInstant) -> Instant {
    Instant::from_millis(i64::try_from(t.millis()).unwrap_or(i64::MAX))
}

impl<'a, F: Files, const LEASES: usize, const T: usize> Appliance<'a, F, LEASES, T> {
    /// Builds the interface and binds every socket.
    pub fn new<D: Device + ?Sized, const TX: usize>(
        mut config: Config<'a>,
        device: &mut D,
        now: Instant,
        files: F,
        buffers: &'a mut Buffers<T, TX>,
        sockets: &'a mut [SocketStorage<'a>],
    ) -> Result<Self, Error> {
        if sockets.len() < sockets_needed(T) {
            return Err(Error::TooFewSockets {
                required: sockets_needed(T),
            });
        }
        let packet = usize::from(config.tftp.max_blksize).saturating_add(4);
        if TX < packet {
            return Err(Error::BufferTooSmall { required: packet });
        }
        // A window must fit the transmit ring with room for smoltcp's wrap padding.
        let window = (TX / packet)
            .saturating_sub(1)
            .clamp(1, TRANSFER_PACKETS - 2);
        config.tftp.max_windowsize = config
            .tftp
            .max_windowsize
            .min(u16::try_from(window).unwrap_or(u16::MAX))
            .max(1);
        let server = match config.dhcp {
            Some(d) => Some(dhcp::Server::<LEASES>::new(d).map_err(Error::Dhcp)?),
            None => None,
        };

        let mut ic =
            smoltcp::iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        ic.random_seed = config.random_seed;
        let mut iface = Interface::new(ic, device, now);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(config.address.into(), config.prefix_len));
        });
        if let Some(gw) = config.gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }

        let Buffers {
            dhcp: dhcp_buf,
            pxe: pxe_buf,
            tftp: tftp_buf,
            transfers,
            scratch,
        } = buffers;
        let mut set = SocketSet::new(sockets);
        let bind = |set: &mut SocketSet<'a>, mut s: udp::Socket<'a>, port: u16| -> SocketHandle {
            // Binding a fresh socket to a non-zero port cannot fail.
            let _ = s.bind(port);
            set.add(s)
        };
        let dhcp = match server {
            Some(server) => {
                let port = SERVER_PORT;
                let main = bind(&mut set, dhcp_buf.socket(), port);
                let pxe = (server.config().mode == Mode::Proxy && config.pxe_port)
                    .then(|| bind(&mut set, pxe_buf.socket(), PXE_PORT));
                Some(crate::dhcp::Dhcp::new(server, main, pxe))
            }
            None => None,
        };
        let listen = bind(&mut set, tftp_buf.socket(), TFTP_PORT);
        let transfer_sockets = transfers.each_mut().map(|b| set.add(b.socket()));
        let tftp = Tftp::new(listen, transfer_sockets, config.tftp, config.random_seed);
        Ok(Appliance {
            config,
            iface,
            sockets: set,
            dhcp,
            tftp,
            files,
            scratch: &mut scratch[..],
        })
    }

    /// The configuration in force (`tftp.max_windowsize` as granted).
    pub fn config(&self) -> &Config<'a> {
        &self.config
    }

    /// The smoltcp interface (addresses, routes, neighbor cache).
    pub fn interface(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// The file source.
    pub fn files(&mut self) -> &mut F {
        &mut self.files
    }

    /// Counters of every service.
    pub fn stats(&self) -> Stats {
        Stats {
            dhcp: self
                .dhcp
                .as_ref()
                .map(|d| *d.server.stats())
                .unwrap_or_default(),
            tftp: self.tftp.listener_stats(),
            tftp_running: self.tftp.running(),
        }
    }

    /// The DHCP server, if DHCP is on (leases, generation for persistence).
    pub fn dhcp_server(&self) -> Option<&dhcp::Server<'a, LEASES>> {
        self.dhcp.as_ref().map(|d| &d.server)
    }

    /// Receives, runs the machines, and transmits, until nothing moves (at
    /// most a few rounds, so one call does bounded work). Events are
    /// reported through `on_event` as they happen.
    pub fn poll<D: Device + ?Sized>(
        &mut self,
        now: Instant,
        device: &mut D,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        let t = core_instant(now);
        for _ in 0..8 {
            self.iface.poll(now, device, &mut self.sockets);
            let mut moved = false;
            if let Some(d) = self.dhcp.as_mut() {
                moved |= d.process(t, &mut self.sockets, self.scratch, on_event);
            }
            moved |= self.tftp.process(
                t,
                &mut self.sockets,
                &mut self.files,
                &self.config.scripts,
                self.scratch,
                on_event,
            );
            if !moved {
                break;
            }
        }
        self.iface.poll(now, device, &mut self.sockets);
    }

    /// When [`Appliance::poll`] must run again at the latest if no frame
    /// arrives (`None`: only on a frame).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let net = self.iface.poll_at(now, &self.sockets);
        let machines = [
            self.dhcp.as_ref().and_then(|d| d.poll_timeout()),
            self.tftp.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(smoltcp_instant);
        match (net, machines) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
