//! The appliance against a smoltcp client on a simulated Ethernet wire,
//! with fake time: DHCP (smoltcp's own DHCP client), TFTP of a generated
//! script, a full transfer pool, and a stranger on a transfer's port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::rc::Rc;

use sanboot_core::dhcp::{self, Mode};
use sanboot_core::ipxe::{Chap, DirectEntry, HostBoot, IscsiDisk, Script};
use sanboot_core::tftp::{Outcome, Refusal, TransferConfig};
use sanboot_core::timeline::Stage;
use sanboot_smoltcp::smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use sanboot_smoltcp::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sanboot_smoltcp::smoltcp::socket::{dhcpv4, udp};
use sanboot_smoltcp::smoltcp::time::Instant;
use sanboot_smoltcp::smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint};
use sanboot_smoltcp::{
    socket_storage, sockets_needed, Appliance, Buffers, Config, Event, IscsiBytes, IscsiParts,
    NoDisks, Scripts, Slots, StaticFiles,
};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of a wire: frames out go to the other end's queue.
struct End {
    rx: Queue,
    tx: Queue,
}

fn wire() -> (End, End) {
    let a: Queue = Rc::default();
    let b: Queue = Rc::default();
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
        },
        End { rx: b, tx: a },
    )
}

struct Rx(Vec<u8>);
struct Tx(Queue);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.borrow_mut().push_back(buf);
        r
    }
}

impl Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self.tx.clone())))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx(self.tx.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 1];
const T: usize = 1;
const C: usize = 1;

fn hosts() -> &'static [DirectEntry<'static>] {
    Box::leak(Box::new([DirectEntry {
        mac: MAC,
        boot: HostBoot::Chain {
            url: "tftp://192.0.2.1/done",
        },
    }]))
}

type App = Appliance<'static, StaticFiles<'static>, NoDisks, 16, T, C>;

fn appliance(end: &mut End) -> (App, Vec<Event<'static>>) {
    appliance_for(end, hosts())
}

fn appliance_for(
    end: &mut End,
    hosts: &'static [DirectEntry<'static>],
) -> (App, Vec<Event<'static>>) {
    let mut d = dhcp::Config::new(Mode::Full, SERVER);
    d.pool = Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 150)));
    let config = Config {
        mac: [2, 0, 0, 0x5b, 0, 1],
        address: SERVER,
        prefix_len: 24,
        gateway: None,
        dhcp: Some(d),
        pxe_port: false,
        tftp: TransferConfig::default(),
        scripts: Scripts::new(hosts),
        random_seed: 7,
        iscsi: None,
    };
    let files: &'static [(&'static str, &'static [u8])] =
        Box::leak(Box::new([("big.bin", &[0xa5u8; 5000][..])]));
    let app = Appliance::new(
        config,
        end,
        Instant::from_millis(0),
        StaticFiles(files),
        Box::leak(Box::new(Buffers::<T, 8192>::new())),
        Box::leak(Box::new(Slots::<T>::new())),
        &mut Box::leak(Box::new(socket_storage::<{ sockets_needed(T, C) }>()))[..],
        IscsiParts {
            buffers: Box::leak(Box::new([const { IscsiBytes::<1024, 1024>::new() }; C])),
            scsi: &mut [],
            disks: NoDisks,
        },
    )
    .unwrap();
    (app, Vec::new())
}

/// A smoltcp client host on the other end of the wire.
struct Client {
    iface: Interface,
    sockets: SocketSet<'static>,
    end: End,
}

impl Client {
    fn new(mut end: End, mac: [u8; 6]) -> Client {
        let cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let iface = Interface::new(cfg, &mut end, Instant::from_millis(0));
        let storage: &'static mut [SocketStorage<'static>] =
            Box::leak(Box::new(socket_storage::<4>()));
        Client {
            iface,
            sockets: SocketSet::new(&mut storage[..]),
            end,
        }
    }

    fn set_ip(&mut self, ip: Ipv4Addr) {
        self.iface
            .update_ip_addrs(|a| a.push(IpCidr::new(ip.into(), 24)).unwrap());
    }

    fn udp(&mut self, port: u16) -> sanboot_smoltcp::smoltcp::iface::SocketHandle {
        let mk = || {
            udp::PacketBuffer::new(
                Box::leak(vec![udp::PacketMetadata::EMPTY; 16].into_boxed_slice()),
                Box::leak(vec![0u8; 32 * 1024].into_boxed_slice()),
            )
        };
        let mut s = udp::Socket::new(mk(), mk());
        s.bind(port).unwrap();
        self.sockets.add(s)
    }
}

/// Runs both sides for `steps` ticks of 10 ms from `*now`, collecting events.
fn run(
    app: &mut App,
    server: &mut End,
    client: &mut Client,
    now: &mut i64,
    steps: usize,
    events: &mut Vec<String>,
) {
    for _ in 0..steps {
        *now += 10;
        let t = Instant::from_millis(*now);
        app.poll(t, server, &mut |e| events.push(format!("{e:?}")));
        client.iface.poll(t, &mut client.end, &mut client.sockets);
    }
}

fn rrq(name: &str) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(b"octet\0");
    v
}

#[test]
fn smoltcp_dhcp_client_gets_a_pool_address() {
    let (mut server_end, client_end) = wire();
    let (mut app, _) = appliance(&mut server_end);
    let mut client = Client::new(client_end, MAC);
    let h = client.sockets.add(dhcpv4::Socket::new());
    let mut events = Vec::new();
    let mut now = 0;
    let mut got = None;
    for _ in 0..200 {
        run(
            &mut app,
            &mut server_end,
            &mut client,
            &mut now,
            1,
            &mut events,
        );
        if let Some(dhcpv4::Event::Configured(c)) =
            client.sockets.get_mut::<dhcpv4::Socket>(h).poll()
        {
            got = Some(c.address);
            break;
        }
    }
    let addr = got.expect("no lease");
    let ip = addr.address();
    assert!((100..=150).contains(&ip.octets()[3]), "{addr}");
    assert_eq!(addr.prefix_len(), 24);
    assert!(events.iter().any(|e| e.contains("Offer")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("Ack")), "{events:?}");
    assert_eq!(app.stats().dhcp.acks, 1);
    // smoltcp's client sends no PXE options: an OS getting an address is
    // not a boot step, so no stage is counted for it.
    assert_eq!(app.stages().iter().map(|(_, n)| n).sum::<u64>(), 0);
}

#[test]
fn tftp_serves_the_per_mac_script_from_a_fresh_port() {
    let (mut server_end, client_end) = wire();
    let (mut app, _) = appliance(&mut server_end);
    let mut client = Client::new(client_end, MAC);
    client.set_ip(Ipv4Addr::new(192, 0, 2, 100));
    let h = client.udp(2000);
    let server69 = IpEndpoint::new(SERVER.into(), 69);
    client
        .sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(&rrq("52-54-00-e2-e0-01.ipxe"), server69)
        .unwrap();
    let mut events = Vec::new();
    let mut now = 0;
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        20,
        &mut events,
    );
    let (data, from) = {
        let s = client.sockets.get_mut::<udp::Socket>(h);
        let (d, m) = s.recv().expect("no DATA");
        (d.to_vec(), m.endpoint)
    };
    assert!(from.port >= 49152, "transfer port {from}");
    assert_eq!(&data[..4], &[0, 3, 0, 1], "DATA 1");
    let mut want = [0u8; 256];
    let n = Script::Host(hosts()[0].boot).render(&mut want).unwrap();
    assert_eq!(&data[4..], &want[..n]);
    client
        .sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(&[0, 4, 0, 1], from)
        .unwrap();
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        10,
        &mut events,
    );
    assert!(
        events.iter().any(
            |e| e.contains("TftpDone") && e.contains(&format!("{:?}", Some(Outcome::Complete)))
        ),
        "{events:?}"
    );
    assert_eq!(app.stats().tftp_running, 0);
    assert_eq!(app.stages().get(Stage::Script), 1);
    assert_eq!(app.stages().get(Stage::BootFile), 0);
    assert_eq!(app.stages().get(Stage::Error), 0);
}

#[test]
fn a_full_pool_refuses_and_strangers_get_unknown_tid() {
    let (mut server_end, client_end) = wire();
    let (mut app, _) = appliance(&mut server_end);
    let mut client = Client::new(client_end, MAC);
    client.set_ip(Ipv4Addr::new(192, 0, 2, 100));
    let first = client.udp(2000);
    let second = client.udp(2001);
    let server69 = IpEndpoint::new(SERVER.into(), 69);
    let mut events = Vec::new();
    let mut now = 0;
    client
        .sockets
        .get_mut::<udp::Socket>(first)
        .send_slice(&rrq("big.bin"), server69)
        .unwrap();
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        10,
        &mut events,
    );
    // The only slot is taken (5000 bytes, 512-byte blocks, not acknowledged).
    client
        .sockets
        .get_mut::<udp::Socket>(second)
        .send_slice(&rrq("big.bin"), server69)
        .unwrap();
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        10,
        &mut events,
    );
    let (busy, _) = client
        .sockets
        .get_mut::<udp::Socket>(second)
        .recv()
        .expect("no ERROR");
    assert_eq!(&busy[..4], &[0, 5, 0, 0], "ERROR 0");
    assert!(busy.windows(18).any(|w| w == b"Too many transfers"));
    assert!(
        events
            .iter()
            .any(|e| e.contains(&format!("{:?}", Some(Refusal::Busy)))),
        "{events:?}"
    );
    // The second socket writes to the first transfer's port: ERROR 5.
    let tid = {
        let (d, m) = client
            .sockets
            .get_mut::<udp::Socket>(first)
            .recv()
            .expect("no DATA");
        assert_eq!(&d[..4], &[0, 3, 0, 1]);
        m.endpoint
    };
    client
        .sockets
        .get_mut::<udp::Socket>(second)
        .send_slice(&[0, 4, 0, 1], tid)
        .unwrap();
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        10,
        &mut events,
    );
    let (err, _) = client
        .sockets
        .get_mut::<udp::Socket>(second)
        .recv()
        .expect("no ERROR 5");
    assert_eq!(&err[..4], &[0, 5, 0, 5]);
    assert_eq!(
        app.stats().tftp_running,
        1,
        "the stranger did not disturb the transfer"
    );
}

/// A reply unicast to an address nobody answers ARP for stays queued in
/// smoltcp forever; the DHCP socket must not stop serving everyone else.
#[test]
fn a_reply_stuck_on_arp_does_not_block_dhcp() {
    use sanboot_smoltcp::smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};

    let (mut server_end, client_end) = wire();
    let (mut app, _) = appliance(&mut server_end);
    let mut client = Client::new(client_end, MAC);
    let mut events = Vec::new();
    let mut now = 0;

    let lease = |client: &mut Client,
                 app: &mut App,
                 server_end: &mut End,
                 now: &mut i64,
                 events: &mut Vec<String>| {
        let h = client.sockets.add(dhcpv4::Socket::new());
        // smoltcp's client repeats a DISCOVER after 10 s.
        for _ in 0..3000 {
            run(app, server_end, client, now, 1, events);
            let got = match client.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                Some(dhcpv4::Event::Configured(c)) => Some(c.address.address()),
                _ => None,
            };
            if got.is_some() {
                client.sockets.remove(h);
                return got;
            }
        }
        None
    };
    let leased = lease(
        &mut client,
        &mut app,
        &mut server_end,
        &mut now,
        &mut events,
    )
    .unwrap();

    // REBINDING: broadcast, ciaddr = the lease. The ACK goes unicast to the
    // lease, which this host (192.0.2.50) does not answer ARP for.
    client.set_ip(Ipv4Addr::new(192, 0, 2, 50));
    let h = client.udp(68);
    let repr = DhcpRepr {
        message_type: DhcpMessageType::Request,
        transaction_id: 0x1234,
        secs: 0,
        client_hardware_address: EthernetAddress(MAC),
        client_ip: leased,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: None,
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut bytes = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut bytes))
        .unwrap();
    let bcast = IpEndpoint::new(Ipv4Addr::BROADCAST.into(), 67);
    client
        .sockets
        .get_mut::<udp::Socket>(h)
        .send_slice(&bytes, bcast)
        .unwrap();
    run(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        5,
        &mut events,
    );
    assert_eq!(app.stats().dhcp.acks, 2, "{events:?}");
    client.sockets.remove(h);

    // Another DISCOVER (same host, new client socket) is answered once the
    // stuck reply is dropped.
    let start = now;
    let again = lease(
        &mut client,
        &mut app,
        &mut server_end,
        &mut now,
        &mut events,
    );
    assert_eq!(again, Some(leased));
    assert!(now - start < 25_000, "took {} ms", now - start);
}

/// A station whose script carries a CHAP secret: refused until it did DHCP
/// with the appliance, then served to its lease address only.
#[test]
fn a_secret_script_goes_only_to_the_stations_lease() {
    const SECRET: &str = "station-secret-1";
    let hosts: &'static [DirectEntry<'static>] = Box::leak(Box::new([DirectEntry {
        mac: MAC,
        boot: HostBoot::Sanboot {
            disk: IscsiDisk {
                server: SERVER,
                port: 3260,
                lun: 0,
                target_iqn: "iqn.2024-01.test:disk",
                initiator_iqn: "iqn.2024-01.test:station",
                chap: Some(Chap {
                    user: "station",
                    secret: SECRET,
                    mutual: None,
                }),
            },
            keep_san: false,
        },
    }]));
    let (mut server_end, client_end) = wire();
    let (mut app, _) = appliance_for(&mut server_end, hosts);
    let mut client = Client::new(client_end, MAC);
    let mut events = Vec::new();
    let mut now = 0;
    let server69 = IpEndpoint::new(SERVER.into(), 69);
    let script = "52-54-00-e2-e0-01.ipxe";

    // Sends an RRQ from `port`; returns the first reply's bytes.
    let fetch = |app: &mut App,
                 server_end: &mut End,
                 client: &mut Client,
                 now: &mut i64,
                 events: &mut Vec<String>,
                 port: u16| {
        let h = client.udp(port);
        client
            .sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(&rrq(script), server69)
            .unwrap();
        run(app, server_end, client, now, 100, events);
        let s = client.sockets.get_mut::<udp::Socket>(h);
        let (d, from) = s
            .recv()
            .map(|(d, m)| (d.to_vec(), m.endpoint))
            .unwrap_or_else(|e| panic!("no reply on port {port}: {e:?}\n{events:#?}"));
        if d[..2] == [0, 3] {
            s.send_slice(&[0, 4, d[2], d[3]], from).unwrap();
        }
        run(app, server_end, client, now, 10, events);
        d
    };

    // A static address before any DHCP: refused as "file not found".
    client.set_ip(Ipv4Addr::new(192, 0, 2, 120));
    let d = fetch(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        &mut events,
        2000,
    );
    assert_eq!(&d[..4], &[0, 5, 0, 1], "not file-not-found: {d:?}");
    assert!(
        events
            .iter()
            .any(|e| e.contains("ScriptRefused") && e.contains("expected: None")),
        "{events:?}"
    );

    // The station does DHCP: its lease is the one address that may read.
    let h = client.sockets.add(dhcpv4::Socket::new());
    let mut lease = None;
    for _ in 0..200 {
        run(
            &mut app,
            &mut server_end,
            &mut client,
            &mut now,
            1,
            &mut events,
        );
        if let Some(dhcpv4::Event::Configured(c)) =
            client.sockets.get_mut::<dhcpv4::Socket>(h).poll()
        {
            lease = Some(c.address);
            break;
        }
    }
    let lease = lease.expect("no lease");
    client.iface.update_ip_addrs(|a| {
        a.clear();
        a.push(IpCidr::Ipv4(lease)).unwrap();
    });
    let d = fetch(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        &mut events,
        2001,
    );
    assert_eq!(
        &d[..4],
        &[0, 3, 0, 1],
        "the lease address was refused: {events:?}"
    );
    assert!(String::from_utf8_lossy(&d[4..]).contains(SECRET));

    // Another address on the LAN asking for the same MAC's script.
    client.iface.update_ip_addrs(|a| {
        a.clear();
        a.push(IpCidr::new(Ipv4Addr::new(192, 0, 2, 121).into(), 24))
            .unwrap();
    });
    let d = fetch(
        &mut app,
        &mut server_end,
        &mut client,
        &mut now,
        &mut events,
        2002,
    );
    assert_eq!(&d[..4], &[0, 5, 0, 1], "another address got it: {d:?}");
    let refused = events
        .iter()
        .rev()
        .find(|e| e.contains("ScriptRefused"))
        .unwrap();
    assert!(
        refused.contains(&format!("expected: Some({})", lease.address())),
        "{refused}"
    );
}
