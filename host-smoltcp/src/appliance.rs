//! The appliance: one smoltcp interface, its sockets, and the core machines.

use sanboot_core::dhcp::{self, server::PXE_PORT, server::SERVER_PORT, Mode};
use sanboot_core::time::Instant as CoreInstant;
use sanboot_core::timeline::StageCounts;
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::buffers::{sockets_needed, udp_socket, Buffers, Slots, TRANSFER_PACKETS};
use crate::config::Config;
use crate::event::Event;
use crate::iscsi::{Iscsi, IscsiBytes, ScsiTarget, ISCSI_SCRATCH};
use crate::script::STATION_SLOTS;
use crate::storage::{Disks, Files};
use crate::tftp::{Tftp, TFTP_PORT};
use sanboot_core::ipxe::StationAddresses;

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
    /// iSCSI connections open now.
    pub iscsi_connections: usize,
}

/// sanboot on smoltcp: DHCP/ProxyDHCP, TFTP with generated iPXE scripts,
/// over any `smoltcp::phy::Device`.
///
/// `LEASES` is the DHCP lease table's size, `T` the number of TFTP
/// transfers that can run at once. Call [`Appliance::poll`] whenever the
/// device has a frame or [`Appliance::poll_at`] is reached.
pub struct Appliance<
    'a,
    F: Files,
    D: Disks,
    const LEASES: usize,
    const T: usize,
    const C: usize,
    const S: usize = ISCSI_SCRATCH,
> {
    config: Config<'a>,
    iface: Interface,
    sockets: SocketSet<'a>,
    dhcp: Option<crate::dhcp::Dhcp<'a, LEASES>>,
    tftp: Tftp<F::Handle, T>,
    iscsi: Option<Iscsi<'a, D, C, S>>,
    files: F,
    /// Who may read a secret-carrying script: the address each such
    /// station used in a DHCP exchange this appliance answered.
    stations: StationAddresses<STATION_SLOTS>,
    /// DHCP is on, so station addresses are seen; without it scripts are
    /// served without the address check.
    learns_addresses: bool,
    scratch: &'a mut [u8],
    /// The last poll stopped at its round limit with work left.
    busy: bool,
    /// Boot stages seen, over all stations.
    stages: StageCounts,
}

impl<F: Files, D: Disks, const LEASES: usize, const T: usize, const C: usize, const S: usize>
    core::fmt::Debug for Appliance<'_, F, D, LEASES, T, C, S>
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

/// The iSCSI target's storage, lent to [`Appliance::new`].
#[derive(Debug)]
pub struct IscsiParts<'a, D, const C: usize, const RX: usize = 8192, const TX: usize = 16384> {
    /// Buffers of the `C` connections.
    pub buffers: &'a mut [IscsiBytes<RX, TX>; C],
    /// SCSI state of each configured target, LUNs added (same order as
    /// `IscsiConfig::targets`).
    pub scsi: &'a mut [ScsiTarget],
    /// The disks behind the LUNs.
    pub disks: D,
}

impl<
        'a,
        F: Files,
        D: Disks,
        const LEASES: usize,
        const T: usize,
        const C: usize,
        const S: usize,
    > Appliance<'a, F, D, LEASES, T, C, S>
{
    /// Builds the interface and binds every socket.
    #[allow(clippy::too_many_arguments)]
    pub fn new<Dev: Device + ?Sized, const TX: usize, const IRX: usize, const ITX: usize>(
        mut config: Config<'a>,
        device: &mut Dev,
        now: Instant,
        files: F,
        buffers: &'a mut Buffers<T, TX>,
        slots: &'a mut Slots<T>,
        sockets: &'a mut [SocketStorage<'a>],
        iscsi: IscsiParts<'a, D, C, IRX, ITX>,
    ) -> Result<Self, Error> {
        if sockets.len() < sockets_needed(T, C) {
            return Err(Error::TooFewSockets {
                required: sockets_needed(T, C),
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
        let Slots {
            dhcp: dhcp_slots,
            pxe: pxe_slots,
            tftp: tftp_slots,
            transfers: transfer_slots,
        } = slots;
        let mut set = SocketSet::new(sockets);
        let bind = |set: &mut SocketSet<'a>, mut s: udp::Socket<'a>, port: u16| -> SocketHandle {
            // Binding a fresh socket to a non-zero port cannot fail.
            let _ = s.bind(port);
            set.add(s)
        };
        let dhcp = match server {
            Some(server) => {
                let port = SERVER_PORT;
                let main = bind(&mut set, udp_socket(dhcp_slots, dhcp_buf), port);
                let pxe = (server.config().mode == Mode::Proxy && config.pxe_port)
                    .then(|| bind(&mut set, udp_socket(pxe_slots, pxe_buf), PXE_PORT));
                Some(crate::dhcp::Dhcp::new(server, main, pxe))
            }
            None => None,
        };
        let listen = bind(&mut set, udp_socket(tftp_slots, tftp_buf), TFTP_PORT);
        let mut transfer_slots = transfer_slots.each_mut().into_iter();
        let transfer_sockets = transfers.each_mut().map(|b| match transfer_slots.next() {
            Some(s) => set.add(udp_socket(s, b)),
            // Both arrays have `T` elements.
            None => set.add(udp::Socket::new(
                udp::PacketBuffer::new(&mut [][..], &mut [][..]),
                udp::PacketBuffer::new(&mut [][..], &mut [][..]),
            )),
        });
        let tftp = Tftp::new(listen, transfer_sockets, config.tftp, config.random_seed);
        let iscsi = config.iscsi.map(|ic| {
            Iscsi::new(
                ic,
                &mut set,
                iscsi.buffers,
                iscsi.scsi,
                iscsi.disks,
                config.random_seed.rotate_left(29),
            )
        });
        // Any DHCP mode sees the address a booting station takes.
        let learns_addresses = dhcp.is_some();
        Ok(Appliance {
            config,
            iface,
            sockets: set,
            dhcp,
            tftp,
            iscsi,
            files,
            stations: StationAddresses::new(),
            learns_addresses,
            scratch: &mut scratch[..],
            busy: false,
            stages: StageCounts::new(),
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
            iscsi_connections: self.iscsi.as_ref().map_or(0, |i| i.connections()),
        }
    }

    /// How often each boot stage happened (DHCP messages of boot clients,
    /// scripts and boot files served, iSCSI logins, failed transfers).
    pub fn stages(&self) -> &StageCounts {
        &self.stages
    }

    /// The DHCP server, if DHCP is on (leases, generation for persistence).
    pub fn dhcp_server(&self) -> Option<&dhcp::Server<'a, LEASES>> {
        self.dhcp.as_ref().map(|d| &d.server)
    }

    /// Receives, runs the machines, and transmits, until nothing moves (at
    /// most a few rounds, so one call does bounded work). Events are
    /// reported through `on_event` as they happen.
    pub fn poll<Dev: Device + ?Sized>(
        &mut self,
        now: Instant,
        device: &mut Dev,
        on_event: &mut dyn FnMut(Event<'_>),
    ) {
        let t = core_instant(now);
        // Every event passes here on its way out: count its boot stage.
        let stages = &mut self.stages;
        let on_event = &mut |e: Event<'_>| {
            if let Some(s) = e.stage() {
                stages.record(s);
            }
            on_event(e)
        };
        let mut moved = true;
        for _ in 0..8 {
            self.iface.poll(now, device, &mut self.sockets);
            moved = false;
            if let Some(d) = self.dhcp.as_mut() {
                let (scripts, stations) = (&self.config.scripts, &mut self.stations);
                let mut record = |e: Event<'_>| {
                    // Remember where a station with a secret script is.
                    if let Event::StationAddress { mac, ip } = e {
                        if scripts.has_secret(mac) {
                            // A full table leaves the station unrecorded: its
                            // script is refused, nobody else's is lost.
                            let _ = stations.record(mac, ip);
                        }
                    }
                    on_event(e);
                };
                moved |= d.process(t, &mut self.sockets, self.scratch, &mut record);
            }
            moved |= self.tftp.process(
                t,
                &mut self.sockets,
                &mut self.files,
                &self.config.scripts,
                self.learns_addresses.then_some(&self.stations),
                self.scratch,
                on_event,
            );
            if let Some(i) = self.iscsi.as_mut() {
                moved |= i.process(t, &mut self.sockets, self.scratch, on_event);
            }
            if !moved {
                break;
            }
        }
        // Send what the last round produced, but take nothing in: a frame
        // taken here (an ACK freeing transmit room, say) would wait for the
        // next frame or timer before any machine saw it.
        while self.iface.poll_egress(now, device, &mut self.sockets) != PollResult::None {}
        // Still busy after the bounded rounds: come back at once.
        self.busy = moved;
    }

    /// When [`Appliance::poll`] must run again at the latest if no frame
    /// arrives (`None`: only on a frame).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if self.busy {
            return Some(now);
        }
        let net = self.iface.poll_at(now, &self.sockets);
        let machines = [
            self.dhcp.as_ref().and_then(|d| d.poll_timeout()),
            self.tftp.poll_timeout(),
            self.iscsi.as_ref().and_then(|i| i.poll_timeout()),
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
