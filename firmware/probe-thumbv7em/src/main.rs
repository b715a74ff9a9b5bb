//! Size probe: links the complete appliance (DHCP, TFTP, generated scripts)
//! for a Cortex-M4F behind a NIC the optimiser cannot see through, so
//! `llvm-size` of the result is what a real board would carry apart from
//! its Ethernet driver. Not meant to run.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::net::Ipv4Addr;

use cortex_m_rt::entry;
use sanboot_smoltcp::core_machines::dhcp::{self, BootFiles, Mode};
use sanboot_smoltcp::core_machines::ipxe::{DirectEntry, HostBoot, IscsiDisk};
use sanboot_smoltcp::core_machines::iscsi::{DigestPolicy, TargetConfig, Targets};
use sanboot_smoltcp::core_machines::scsi::LunConfig;
use sanboot_smoltcp::core_machines::tftp::TransferConfig;
use sanboot_smoltcp::smoltcp::iface::SocketStorage;
use sanboot_smoltcp::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sanboot_smoltcp::smoltcp::time::Instant;
use sanboot_smoltcp::{
    sockets_needed, Appliance, Buffers, Config, IscsiBytes, IscsiConfig, IscsiParts, OneDisk,
    RamDisk, Scripts, ScsiTarget, Slots, StaticFiles,
};

const LEASES: usize = 64;
const TRANSFERS: usize = 2;
const TX: usize = 8192;
const CONNECTIONS: usize = 1;
const SOCKETS: usize = sockets_needed(TRANSFERS, CONNECTIONS);
/// The RAM disk (excluded from the RAM budget: it is the payload).
const DISK: usize = 32 * 1024;
const MTU: usize = 1514;

/// A NIC whose frames come from nowhere the compiler can predict.
struct OpaqueNic {
    rx: [u8; MTU],
    tx: [u8; MTU],
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(black_box(self.0))
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let n = len.min(self.0.len());
        let r = f(&mut self.0[..n]);
        black_box(&self.0);
        r
    }
}

impl Device for OpaqueNic {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let len = black_box(0usize).min(MTU);
        black_box(len != 0).then(|| (Rx(&self.rx[..len]), Tx(&mut self.tx[..])))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx[..]))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

static HOSTS: [DirectEntry<'static>; 1] = [DirectEntry {
    mac: [0x52, 0x54, 0, 0xe2, 0xe0, 1],
    boot: HostBoot::Sanboot {
        disk: IscsiDisk {
            server: SERVER,
            port: 3260,
            lun: 0,
            target_iqn: "iqn.2024-01.test.e2e:sanboot",
            initiator_iqn: "iqn.2010-04.org.ipxe:station1",
            chap: None,
        },
        keep_san: false,
    },
}];

static TARGETS: [TargetConfig<'static>; 1] = [TargetConfig {
    name: "iqn.2024-01.test.e2e:sanboot",
    initiators: &[],
    chap: None,
    mutual_chap: None,
    initiator_chap: &[],
    luns: &[0],
    digest: DigestPolicy::Allowed,
}];

static FILES: [(&str, &[u8]); 1] = [("hello.txt", b"hello from flash\n")];

fn config() -> Config<'static> {
    let mut d = dhcp::Config::new(Mode::Full, SERVER);
    d.pool = Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 150)));
    d.boot = BootFiles {
        bios: "undionly.kpxe",
        uefi: "ipxe.efi",
        arm: "ipxe-arm64.efi",
        http: None,
        http_server: None,
        script: "boot.ipxe",
        root_path: None,
    };
    Config {
        mac: [0x02, 0, 0, 0x5b, 0, 1],
        address: SERVER,
        prefix_len: 24,
        gateway: None,
        dhcp: Some(d),
        pxe_port: true,
        tftp: TransferConfig::default(),
        scripts: Scripts::new(&HOSTS),
        random_seed: black_box(0x5eed),
        iscsi: Some(IscsiConfig {
            port: 3260,
            targets: Targets {
                targets: &TARGETS,
                portal: "192.0.2.1:3260",
                portal_group_tag: 1,
            },
            nop_in_interval_ms: 15_000,
            nop_in_timeout_ms: 30_000,
        }),
    }
}

/// The appliance as this probe instantiates it.
#[allow(dead_code)]
type App = Appliance<
    'static,
    StaticFiles<'static>,
    OneDisk<RamDisk<&'static mut [u8]>>,
    LEASES,
    TRANSFERS,
    CONNECTIONS,
>;

#[entry]
fn main() -> ! {
    // cortex-m-rt turns these into `&'static mut` references, once.
    static mut NIC: OpaqueNic = OpaqueNic {
        rx: [0; MTU],
        tx: [0; MTU],
    };
    static mut BUFFERS: Buffers<TRANSFERS, TX> = Buffers::new();
    static mut SLOTS: Slots<TRANSFERS> = Slots::new();
    static mut ISCSI: [IscsiBytes<4096, 8192>; CONNECTIONS] =
        [const { IscsiBytes::new() }; CONNECTIONS];
    static mut SCSI: Option<ScsiTarget> = None;
    static mut DISK_BYTES: [u8; DISK] = [0; DISK];
    static mut SOCKETS_STORAGE: [SocketStorage<'static>; SOCKETS] = [SocketStorage::EMPTY; SOCKETS];

    let nic: &'static mut OpaqueNic = NIC;
    let scsi: &'static mut ScsiTarget = SCSI.insert(ScsiTarget::new());
    let mut lun = LunConfig::new((DISK / 512) as u64, 0x5ac_de48_0000_0001);
    lun.max_compare_and_write_blocks = sanboot_smoltcp::ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS;
    let _ = scsi.add_lun(0, lun);
    let mut clock = 0i64;
    let app = Appliance::<_, _, LEASES, TRANSFERS, CONNECTIONS>::new(
        config(),
        nic,
        Instant::from_millis(clock),
        StaticFiles(&FILES),
        BUFFERS,
        SLOTS,
        &mut SOCKETS_STORAGE[..],
        IscsiParts {
            buffers: ISCSI,
            scsi: core::slice::from_mut(scsi),
            disks: OneDisk(RamDisk(&mut DISK_BYTES[..])),
        },
    );
    // On the stack: an `Option<App>` static would be initialised data
    // (flash). Its size is `core::mem::size_of::<App>()`, see the crate docs.
    let Ok(mut app) = app else { loop {} };
    loop {
        clock = black_box(clock + 1);
        let now = Instant::from_millis(clock);
        app.poll(now, nic, &mut |e| {
            black_box(&e);
        });
        black_box(app.poll_at(now));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
