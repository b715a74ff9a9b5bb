//! The smoltcp appliance when an initiator vanishes (issue 11), on a
//! simulated wire with fake time: a station that goes silent while idle, and
//! one that disappears in the middle of a read with data unacknowledged,
//! are both closed and their session slot serves the next login.
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

use sanboot_smoltcp::core_machines::iscsi::pdu::{
    Bhs, LoginRequest, LoginResponse, ScsiCommand, Stage,
};
use sanboot_smoltcp::core_machines::iscsi::{DigestPolicy, TargetConfig, Targets};
use sanboot_smoltcp::core_machines::scsi::LunConfig;
use sanboot_smoltcp::core_machines::tftp::TransferConfig;
use sanboot_smoltcp::iscsi::{ISCSI_TCP_RX, ISCSI_TCP_TX};
use sanboot_smoltcp::smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use sanboot_smoltcp::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sanboot_smoltcp::smoltcp::socket::tcp;
use sanboot_smoltcp::smoltcp::time::Instant;
use sanboot_smoltcp::smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};
use sanboot_smoltcp::{
    socket_storage, sockets_needed, Appliance, Buffers, Config, IscsiBytes, IscsiConfig,
    IscsiParts, OneDisk, RamDisk, Scripts, ScsiTarget, Slots, StaticFiles,
};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of a wire; `cut` drops everything this end sends.
struct End {
    rx: Queue,
    tx: Queue,
    cut: Rc<RefCell<bool>>,
}

fn wire() -> (End, End) {
    let a: Queue = Rc::default();
    let b: Queue = Rc::default();
    let cut = Rc::new(RefCell::new(false));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
            cut: Rc::new(RefCell::new(false)),
        },
        End { rx: b, tx: a, cut },
    )
}

struct Rx(Vec<u8>);
struct Tx(Queue, bool);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        if !self.1 {
            self.0.borrow_mut().push_back(buf);
        }
        r
    }
}

impl Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self.tx.clone(), *self.cut.borrow())))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx(self.tx.clone(), *self.cut.borrow()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

const IQN: &str = "iqn.2024-01.test:smoltcp-dead-peers";
const INITIATOR: &str = "iqn.2024-01.test:station";
const NOP_INTERVAL_MS: u64 = 2_000;
const NOP_TIMEOUT_MS: u64 = 3_000;
const C: usize = 1;
type App = Appliance<'static, StaticFiles<'static>, OneDisk<RamDisk<&'static mut [u8]>>, 16, 1, C>;

fn appliance(end: &mut End) -> App {
    let targets: &'static [TargetConfig<'static>] = Box::leak(Box::new([TargetConfig {
        name: IQN,
        initiators: &[],
        chap: None,
        mutual_chap: None,
        initiator_chap: &[],
        luns: &[0],
        digest: DigestPolicy::Allowed,
    }]));
    let config = Config {
        mac: [2, 0, 0, 0x5b, 0, 1],
        address: Ipv4Addr::new(192, 0, 2, 1),
        prefix_len: 24,
        gateway: None,
        dhcp: None,
        pxe_port: false,
        tftp: TransferConfig::default(),
        scripts: Scripts::new(&[]),
        random_seed: 7,
        iscsi: Some(IscsiConfig {
            port: 3260,
            targets: Targets {
                targets,
                portal: "192.0.2.1:3260",
                portal_group_tag: 1,
            },
            nop_in_interval_ms: NOP_INTERVAL_MS,
            nop_in_timeout_ms: NOP_TIMEOUT_MS,
        }),
    };
    let disk: &'static mut [u8] = Box::leak(vec![0x5au8; 1 << 20].into_boxed_slice());
    let scsi: &'static mut [ScsiTarget] = Box::leak(Box::new([ScsiTarget::new()]));
    scsi[0]
        .add_lun(0, LunConfig::new(2048, 0x5ac_de48_0000_0042))
        .unwrap();
    Appliance::new(
        config,
        end,
        Instant::from_millis(0),
        StaticFiles(&[]),
        Box::leak(Box::new(Buffers::<1, 8192>::new())),
        Box::leak(Box::new(Slots::<1>::new())),
        &mut Box::leak(Box::new(socket_storage::<{ sockets_needed(1, C) }>()))[..],
        IscsiParts {
            buffers: Box::leak(Box::new(
                [const { IscsiBytes::<{ ISCSI_TCP_RX }, { ISCSI_TCP_TX }>::new() }; C],
            )),
            scsi,
            disks: OneDisk(RamDisk(disk)),
        },
    )
    .unwrap()
}

/// The station: a smoltcp host at 192.0.2.100 with one TCP socket.
struct Station {
    iface: Interface,
    sockets: SocketSet<'static>,
    end: End,
    tcp: sanboot_smoltcp::smoltcp::iface::SocketHandle,
}

impl Station {
    fn new(mut end: End, port: u16) -> Station {
        let cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress([
            0x52, 0x54, 0, 0xe2, 0xe0, 1,
        ])));
        let mut iface = Interface::new(cfg, &mut end, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(Ipv4Addr::new(192, 0, 2, 100).into(), 24))
                .unwrap()
        });
        let storage: &'static mut [SocketStorage<'static>] =
            Box::leak(Box::new(socket_storage::<2>()));
        let mut sockets = SocketSet::new(&mut storage[..]);
        let buf =
            || tcp::SocketBuffer::new(&mut Box::leak(vec![0u8; 64 * 1024].into_boxed_slice())[..]);
        let tcp = sockets.add(tcp::Socket::new(buf(), buf()));
        let mut s = Station {
            iface,
            sockets,
            end,
            tcp,
        };
        let cx = s.iface.context();
        s.sockets
            .get_mut::<tcp::Socket>(tcp)
            .connect(cx, (Ipv4Addr::new(192, 0, 2, 1), 3260), port)
            .unwrap();
        s
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }
}

/// Both sides for `ms` of fake time in 10 ms ticks; the appliance's events
/// are collected as text.
fn run(
    app: &mut App,
    server: &mut End,
    st: &mut Station,
    now: &mut i64,
    ms: i64,
    ev: &mut Vec<String>,
) {
    for _ in 0..ms / 10 {
        *now += 10;
        let t = Instant::from_millis(*now);
        app.poll(t, server, &mut |e| ev.push(format!("{e:?}")));
        st.iface.poll(t, &mut st.end, &mut st.sockets);
    }
}

fn login_pdu() -> Vec<u8> {
    let text = format!("InitiatorName={INITIATOR}\0TargetName={IQN}\0SessionType=Normal\0");
    let mut p = vec![0u8; 48 + text.len().div_ceil(4) * 4];
    LoginRequest {
        transit: true,
        cont: false,
        csg: Stage::Operational,
        nsg: Stage::FullFeature,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0x12, 0x34, 0x56],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 0,
        data_len: text.len() as u32,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..48]));
    p[48..48 + text.len()].copy_from_slice(text.as_bytes());
    p
}

/// Connects, logs in, returns the station in full feature phase.
fn logged_in(
    app: &mut App,
    server: &mut End,
    st_end: End,
    port: u16,
    now: &mut i64,
    ev: &mut Vec<String>,
) -> Station {
    let mut st = Station::new(st_end, port);
    run(app, server, &mut st, now, 200, ev);
    assert!(st.socket().may_send(), "no TCP connection: {ev:?}");
    st.socket().send_slice(&login_pdu()).unwrap();
    run(app, server, &mut st, now, 200, ev);
    let mut resp = [0u8; 4096];
    let n = st.socket().recv_slice(&mut resp).unwrap();
    assert!(n >= 48, "no login response: {ev:?}");
    let r = LoginResponse::parse(&Bhs::new_checked(&resp[..48]).unwrap()).unwrap();
    assert_eq!((r.status_class, r.status_detail), (0, 0), "login refused");
    assert!(ev.iter().any(|e| e.contains("IscsiLogin")), "{ev:?}");
    st
}

/// A SCSI Command PDU reading `edtl` bytes (or none) from LUN 0.
fn command(itt: u32, cmd_sn: u32, cdb: &[u8], edtl: u32) -> [u8; 48] {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    let mut p = [0u8; 48];
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: edtl > 0,
        write: false,
        attr: 1,
        lun: 0,
        itt,
        edtl,
        cmd_sn,
        exp_stat_sn: 1,
        cdb: c,
        ahs_words: 0,
        data_len: 0,
    }
    .emit(&mut Bhs::new_unchecked(&mut p[..]));
    p
}

/// Runs until the appliance reports the connection closed; returns the
/// fake milliseconds that took and the event.
fn until_closed(
    app: &mut App,
    server: &mut End,
    st: &mut Station,
    now: &mut i64,
    ev: &mut Vec<String>,
) -> (i64, String) {
    let start = *now;
    while *now - start < 60_000 {
        run(app, server, st, now, 100, ev);
        if let Some(e) = ev.iter().find(|e| e.contains("IscsiClosed")) {
            return (*now - start, e.clone());
        }
    }
    panic!("not closed within 60 s: {ev:?}");
}

#[test]
fn an_idle_station_that_vanishes_is_closed_and_its_slot_reused() {
    let (mut server, st_end) = wire();
    let cut = st_end.cut.clone();
    let mut app = appliance(&mut server);
    let (mut now, mut ev) = (0, Vec::new());
    let mut st = logged_in(&mut app, &mut server, st_end, 49152, &mut now, &mut ev);
    ev.clear();
    // Power off: the station sends nothing more, not even an ACK.
    *cut.borrow_mut() = true;
    let (took, closed) = until_closed(&mut app, &mut server, &mut st, &mut now, &mut ev);
    println!("idle station vanished: closed after {took} ms: {closed}");
    assert!(
        took <= (NOP_INTERVAL_MS + NOP_TIMEOUT_MS) as i64 + 500,
        "closed after {took} ms: {closed}"
    );
    assert!(
        closed.contains("timed out") || closed.contains("peer timeout"),
        "{closed}"
    );

    // The station boots again (same initiator, a new TCP port): the single
    // connection slot and session slot serve it.
    let (mut server2, st_end2) = wire();
    std::mem::swap(&mut server, &mut server2);
    ev.clear();
    let _again = logged_in(&mut app, &mut server, st_end2, 49153, &mut now, &mut ev);
}

#[test]
fn a_station_that_vanishes_mid_read_is_closed_by_the_tcp_timeout() {
    let (mut server, st_end) = wire();
    let cut = st_end.cut.clone();
    let mut app = appliance(&mut server);
    let (mut now, mut ev) = (0, Vec::new());
    let mut st = logged_in(&mut app, &mut server, st_end, 49154, &mut now, &mut ev);
    ev.clear();
    // TEST UNIT READY takes the unit attention every new nexus gets.
    st.socket()
        .send_slice(&command(2, 1, &[0u8; 6], 0))
        .unwrap();
    run(&mut app, &mut server, &mut st, &mut now, 50, &mut ev);
    let mut sense = [0u8; 256];
    assert!(st.socket().recv_slice(&mut sense).unwrap() >= 48);
    // READ(10) of 1 MiB: far more than the appliance's TCP transmit ring.
    let mut cdb = [0u8; 10];
    cdb[0] = 0x28;
    cdb[7..9].copy_from_slice(&2048u16.to_be_bytes());
    let cmd = command(3, 2, &cdb, 1 << 20);
    st.socket().send_slice(&cmd).unwrap();
    run(&mut app, &mut server, &mut st, &mut now, 50, &mut ev);
    let got = st.socket().recv_queue();
    assert!(got > 0, "no Data-In before the station vanished: {ev:?}");
    // The cable is pulled mid-transfer: nothing is acknowledged any more.
    *cut.borrow_mut() = true;
    let (took, closed) = until_closed(&mut app, &mut server, &mut st, &mut now, &mut ev);
    println!("station vanished mid-read ({got} bytes in): closed after {took} ms: {closed}");
    assert!(
        took <= NOP_TIMEOUT_MS as i64 + 500,
        "closed after {took} ms: {closed}"
    );
    assert!(closed.contains("timed out"), "{closed}");
}
