//! sanboot firmware for QEMU `-M virt` (aarch64): the whole appliance
//! (DHCP, TFTP with generated iPXE scripts, iSCSI) on smoltcp over
//! virtio-net (`virtio-drivers`' `VirtIONetRaw`, no alloc), serving a RAM
//! disk that QEMU loads at [`DISK_ADDR`] (`-device loader,file=disk.img,
//! addr=0x48000000,force-raw=on`). Logs go to the PL011 UART.
//!
//! Runs at EL1 with the MMU off (identity addresses, uncached, so DMA is
//! coherent; the target is built with `+strict-align`). The compiled-in
//! configuration is the e2e lab's: 192.0.2.1/24, full DHCP from
//! 192.0.2.100-150, one station booting `iqn.2024-01.test.e2e:sanboot`.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::net::Ipv4Addr;
use core::ptr::NonNull;

use sanboot_smoltcp::core_machines::dhcp::{self, BootFiles, Mode};
use sanboot_smoltcp::core_machines::ipxe::{DirectEntry, HostBoot, IscsiDisk};
use sanboot_smoltcp::core_machines::iscsi::{DigestPolicy, TargetConfig, Targets};
use sanboot_smoltcp::core_machines::scsi::LunConfig;
use sanboot_smoltcp::core_machines::tftp::TransferConfig;
use sanboot_smoltcp::smoltcp::iface::SocketStorage;
use sanboot_smoltcp::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use sanboot_smoltcp::smoltcp::time::Instant;
use sanboot_smoltcp::{
    sockets_needed, Appliance, Buffers, Config, Event, IscsiBytes, IscsiConfig, IscsiParts,
    OneDisk, RamDisk, Scripts, ScsiTarget, Slots, StaticFiles,
};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

const LEASES: usize = 64;
const TRANSFERS: usize = 4;
const TX: usize = 8192;
const CONNECTIONS: usize = 2;
const SOCKETS: usize = sockets_needed(TRANSFERS, CONNECTIONS);
/// Where QEMU's loader puts the disk image, and its size.
const DISK_ADDR: usize = 0x4800_0000;
const DISK_SIZE: usize = 16 << 20;
const UART: usize = 0x0900_0000;
const VIRTIO_MMIO: usize = 0x0a00_0000;
const VIRTIO_SLOTS: usize = 32;
const QUEUE: usize = 16;
const RX_BUFS: usize = 8;
const FRAME: usize = 2048;

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    mrs x0, mpidr_el1",
    "    and x0, x0, #3",
    "    cbnz x0, 2f",
    "    ldr x1, =__stack_top",
    "    mov sp, x1",
    // FP/SIMD on at EL1 (CPACR_EL1.FPEN = 0b11): Rust uses NEON registers.
    "    mov x1, #(3 << 20)",
    "    msr cpacr_el1, x1",
    "    isb",
    "    ldr x1, =__bss_start",
    "    ldr x2, =__bss_end",
    "1:  cmp x1, x2",
    "    b.hs 3f",
    "    str xzr, [x1], #8",
    "    b 1b",
    "3:  bl main",
    "2:  wfe",
    "    b 2b",
);

/// PL011 data register writes; QEMU needs no setup.
struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the PL011 data register of QEMU virt, a valid MMIO address.
            unsafe { core::ptr::write_volatile(UART as *mut u32, u32::from(b)) };
        }
        Ok(())
    }
}

macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(Uart, $($arg)*);
    }};
}

/// Milliseconds from the generic timer.
fn now() -> Instant {
    let (count, freq): (u64, u64);
    // SAFETY: reading the counter registers has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntpct_el0", out(reg) count);
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq);
    }
    let ms = count / (freq / 1000).max(1);
    Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// DMA pages from a static pool, identity mapped (MMU off); never freed
/// (the queues live for the firmware's life).
struct StaticHal;

#[repr(C, align(4096))]
struct Pool([u8; 32 * PAGE_SIZE]);
static mut POOL: Pool = Pool([0; 32 * PAGE_SIZE]);
static mut POOL_NEXT: usize = 0;

// SAFETY: pages are handed out once, zeroed, page aligned; phys == virt.
unsafe impl Hal for StaticHal {
    fn dma_alloc(pages: usize, _: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: single core, no interrupts: nothing else touches the pool.
        unsafe {
            let base = core::ptr::addr_of_mut!(POOL) as *mut u8;
            let start = POOL_NEXT;
            let end = start + pages * PAGE_SIZE;
            if end > 32 * PAGE_SIZE {
                log!("dma pool exhausted");
                loop {
                    core::hint::spin_loop();
                }
            }
            POOL_NEXT = end;
            let p = base.add(start);
            (p as usize, NonNull::new_unchecked(p))
        }
    }

    unsafe fn dma_dealloc(_: PhysAddr, _: NonNull<u8>, _: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _: usize) -> NonNull<u8> {
        // SAFETY: the caller passes a non-zero MMIO address.
        unsafe { NonNull::new_unchecked(paddr as *mut u8) }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize
    }

    unsafe fn unshare(_: PhysAddr, _: NonNull<[u8]>, _: BufferDirection) {}
}

type Net = VirtIONetRaw<StaticHal, MmioTransport, QUEUE>;

/// The virtio NIC as a smoltcp device: `RX_BUFS` receive buffers kept
/// posted; a frame is sent synchronously.
struct Nic {
    net: Net,
    rx: &'static mut [[u8; FRAME]; RX_BUFS],
    tokens: [Option<u16>; RX_BUFS],
    tx: [u8; FRAME],
}

struct RxTok<'a> {
    frame: &'a [u8],
}

struct TxTok<'a> {
    net: &'a mut Net,
    buf: &'a mut [u8; FRAME],
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(FRAME);
        let r = f(&mut self.buf[..len]);
        if self.net.send(&self.buf[..len]).is_err() {
            log!("virtio-net: send failed");
        }
        r
    }
}

impl Nic {
    fn post(&mut self, i: usize) {
        // SAFETY: the buffer is static and is not touched until its token completes.
        let t = unsafe { self.net.receive_begin(&mut self.rx[i]) };
        self.tokens[i] = t.ok();
    }
}

/// The frame most recently completed, copied out so its buffer can be posted again.
static mut RX_COPY: [u8; FRAME] = [0; FRAME];

impl Device for Nic {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        let token = self.net.poll_receive()?;
        let i = self.tokens.iter().position(|t| *t == Some(token))?;
        // SAFETY: the same buffer that was posted with this token.
        let r = unsafe { self.net.receive_complete(token, &mut self.rx[i]) };
        self.tokens[i] = None;
        let (hdr, len) = r.ok()?;
        let len = len.min(FRAME - hdr);
        // SAFETY: single core; RX_COPY is only used here and by the token below,
        // which lives no longer than this borrow of `self`.
        let copy = unsafe { &mut *core::ptr::addr_of_mut!(RX_COPY) };
        copy[..len].copy_from_slice(&self.rx[i][hdr..hdr + len]);
        self.post(i);
        Some((
            RxTok {
                frame: &copy[..len],
            },
            TxTok {
                net: &mut self.net,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        Some(TxTok {
            net: &mut self.net,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps
    }
}

fn find_net() -> Option<MmioTransport> {
    for i in 0..VIRTIO_SLOTS {
        let addr = VIRTIO_MMIO + i * 0x200;
        // SAFETY: QEMU virt's virtio-mmio transports live at these addresses.
        let header = unsafe { NonNull::new_unchecked(addr as *mut VirtIOHeader) };
        // SAFETY: as above; an empty slot reads device id 0.
        if let Ok(t) = unsafe { MmioTransport::new(header) } {
            if t.device_type() == DeviceType::Network {
                return Some(t);
            }
        }
    }
    None
}

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const TARGET: &str = "iqn.2024-01.test.e2e:sanboot";

static HOSTS: [DirectEntry<'static>; 1] = [DirectEntry {
    mac: [0x52, 0x54, 0, 0xe2, 0xe0, 1],
    boot: HostBoot::Sanboot {
        disk: IscsiDisk {
            server: SERVER,
            port: 3260,
            lun: 0,
            target_iqn: TARGET,
            initiator_iqn: "iqn.2010-04.org.ipxe:station1-52-54-00-e2-e0-01",
            chap: None,
        },
        keep_san: false,
    },
}];

static DHCP_HOSTS: [dhcp::Host<'static>; 0] = [];

static TARGETS: [TargetConfig<'static>; 1] = [TargetConfig {
    name: TARGET,
    initiators: &[],
    chap: None,
    mutual_chap: None,
    initiator_chap: &[],
    luns: &[0],
    digest: DigestPolicy::Allowed,
}];

static FILES: [(&str, &[u8]); 1] = [(
    "done-52-54-00-e2-e0-01",
    b"#!ipxe\necho E2E-CHAIN-DONE ${mac:hexhyp}\n",
)];

fn config(mac: [u8; 6], seed: u64) -> Config<'static> {
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
    d.hosts = &DHCP_HOSTS;
    d.hash_seed = seed;
    Config {
        mac,
        address: SERVER,
        prefix_len: 24,
        gateway: None,
        dhcp: Some(d),
        pxe_port: true,
        tftp: TransferConfig::default(),
        scripts: Scripts::new(&HOSTS),
        random_seed: seed,
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

fn log_event(e: &Event<'_>) {
    match *e {
        Event::DhcpReply(t) => log!(
            "DHCP {:?} {} file={} to {}",
            t.message,
            t.yiaddr,
            t.file.unwrap_or("-"),
            t.dst
        ),
        Event::TftpRequest {
            path, peer, size, ..
        } => {
            log!("TFTP RRQ {} from {} size={}", path, peer.addr, size)
        }
        Event::TftpRefused { path, peer, reason } => {
            log!(
                "TFTP RRQ {:?} from {} refused: {:?}",
                path,
                peer.addr,
                reason
            )
        }
        Event::TftpDone {
            peer,
            outcome,
            acked,
            ..
        } => {
            log!(
                "TFTP to {} ended: {:?} ({} bytes)",
                peer.addr,
                outcome,
                acked
            )
        }
        Event::IscsiLogin {
            peer,
            initiator,
            target,
        } => log!(
            "iscsi login from {}: initiator {} target {}",
            peer,
            initiator,
            target.unwrap_or("(discovery)")
        ),
        Event::IscsiClosed { peer, reason, .. } => {
            log!("iscsi session from {} ended: {}", peer, reason)
        }
        _ => {}
    }
}

#[no_mangle]
extern "C" fn main() -> ! {
    log!("sanboot firmware (QEMU virt aarch64) starting");
    let Some(transport) = find_net() else {
        log!("no virtio-net device");
        halt();
    };
    let net = match Net::new(transport) {
        Ok(n) => n,
        Err(e) => {
            log!("virtio-net init failed: {:?}", e);
            halt();
        }
    };
    static mut RX: [[u8; FRAME]; RX_BUFS] = [[0; FRAME]; RX_BUFS];
    static mut BUFFERS: Buffers<TRANSFERS, TX> = Buffers::new();
    static mut SLOTS: Slots<TRANSFERS> = Slots::new();
    static mut ISCSI: [IscsiBytes; CONNECTIONS] = [const { IscsiBytes::new() }; CONNECTIONS];
    static mut SOCKETS_STORAGE: [SocketStorage<'static>; SOCKETS] = [SocketStorage::EMPTY; SOCKETS];
    static mut SCSI: Option<ScsiTarget> = None;
    // SAFETY: `main` runs once, on one core: these are its only references.
    let (rx, buffers, slots, iscsi, sockets, scsi_slot) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(RX),
            &mut *core::ptr::addr_of_mut!(BUFFERS),
            &mut *core::ptr::addr_of_mut!(SLOTS),
            &mut *core::ptr::addr_of_mut!(ISCSI),
            &mut *core::ptr::addr_of_mut!(SOCKETS_STORAGE),
            &mut *core::ptr::addr_of_mut!(SCSI),
        )
    };
    // SAFETY: QEMU's loader put the image here; nothing else uses this RAM.
    let disk = unsafe { core::slice::from_raw_parts_mut(DISK_ADDR as *mut u8, DISK_SIZE) };
    let scsi = scsi_slot.insert(ScsiTarget::new());
    let mut lun = LunConfig::new((DISK_SIZE / 512) as u64, 0x5ac_de48_0000_0001);
    lun.max_compare_and_write_blocks = sanboot_smoltcp::ISCSI_MAX_COMPARE_AND_WRITE_BLOCKS;
    let _ = scsi.add_lun(0, lun);

    let mac = net.mac_address();
    let mut nic = Nic {
        net,
        rx,
        tokens: [None; RX_BUFS],
        tx: [0; FRAME],
    };
    for i in 0..RX_BUFS {
        nic.post(i);
    }
    let seed = now().total_millis() as u64 ^ 0x5eed_5eed;
    let app = Appliance::<_, _, LEASES, TRANSFERS, CONNECTIONS>::new(
        config(mac, seed),
        &mut nic,
        now(),
        StaticFiles(&FILES),
        buffers,
        slots,
        &mut sockets[..],
        IscsiParts {
            buffers: iscsi,
            scsi: core::slice::from_mut(scsi),
            disks: OneDisk(RamDisk(disk)),
        },
    );
    let mut app = match app {
        Ok(a) => a,
        Err(e) => {
            log!("cannot start: {:?}", e);
            halt();
        }
    };
    log!(
        "sanboot firmware serving as {} ({:02x?}), disk {} MiB at {:#x}",
        SERVER,
        mac,
        DISK_SIZE >> 20,
        DISK_ADDR
    );
    let mut on_event = |e: Event<'_>| log_event(&e);
    loop {
        app.poll(now(), &mut nic, &mut on_event);
        core::hint::spin_loop();
    }
}

fn halt() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log!("panic: {}", info);
    halt()
}
