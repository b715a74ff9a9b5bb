//! The scripts themselves: the seed chain and each machine's boot script.
//!
//! The chain a booting machine walks:
//!
//! 1. DHCP hands iPXE `siaddr` plus the relative file name `boot.ipxe`; iPXE
//!    fetches `tftp://<siaddr>/boot.ipxe` ([`Script::Boot`]).
//! 2. `boot.ipxe` chains `default.ipxe` under the configured root path
//!    ([`Script::Default`]), relative to its own URI, so it stays on the same
//!    server and scheme.
//! 3. `default.ipxe` chains `${mac:hexhyp}.ipxe` next to itself
//!    ([`Script::Host`]), or says why not.
//!
//! [`Script::Direct`] puts every machine into one file that picks the
//! machine's section by `${mac:hexhyp}`, for setups that must not chain.
//!
//! Every value is checked before anything is written (see [`super::value`]
//! for what is refused and why), so a render either fails without output or
//! produces the whole script.

use core::fmt::{self, Write};
use core::net::{Ipv4Addr, SocketAddrV4};

use super::iscsi_name::{validate_iscsi_name, IscsiNameError};
use super::mac::HexHyp;
use super::value::{check_first_arg, check_word_value, check_words_value, Expansion, ValueError};
use super::writer::SliceWriter;
use crate::dhcp::BootFile;

/// The IANA iSCSI port, left out of root paths and kernel command lines.
pub const ISCSI_DEFAULT_PORT: u16 = 3260;

/// The largest LUN a root path can name with SAM single-level addressing:
/// 0–255 peripheral, 256–16383 flat space (`0x4000 | lun`).
pub const MAX_LUN: u64 = 0x3fff;

/// The file name `boot.ipxe` chains to.
pub const DEFAULT_SCRIPT: &str = "default.ipxe";

/// A configuration value a script uses, for naming the one at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field {
    /// The initiator IQN (`set initiator-iqn`, `iscsi_initiatorname=`).
    InitiatorIqn,
    /// The target IQN (root path, `iscsi_target=`).
    TargetIqn,
    /// The chain kind's URL.
    ChainUrl,
    /// The kernel kind's kernel path or URL.
    Kernel,
    /// The kernel kind's initrd path or URL.
    Initrd,
    /// The kernel kind's extra command line.
    Cmdline,
    /// CHAP user name (`set username`).
    ChapUser,
    /// CHAP secret (`set password`).
    ChapSecret,
    /// Mutual CHAP user name, the target's (`set reverse-username`).
    MutualUser,
    /// Mutual CHAP secret, the target's (`set reverse-password`).
    MutualSecret,
    /// The root path `boot.ipxe` finds `default.ipxe` under.
    RootPath,
    /// The iSCSI portal port.
    Port,
    /// The LUN.
    Lun,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::InitiatorIqn => "initiator IQN",
            Field::TargetIqn => "target IQN",
            Field::ChainUrl => "chain URL",
            Field::Kernel => "kernel",
            Field::Initrd => "initrd",
            Field::Cmdline => "cmdline",
            Field::ChapUser => "CHAP user",
            Field::ChapSecret => "CHAP secret",
            Field::MutualUser => "mutual CHAP user",
            Field::MutualSecret => "mutual CHAP secret",
            Field::RootPath => "root path",
            Field::Port => "iSCSI port",
            Field::Lun => "LUN",
        })
    }
}

/// Why a script was not rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RenderError {
    /// The buffer is too small; the script needs `required` bytes.
    InsufficientSize {
        /// Length of the complete script.
        required: usize,
    },
    /// A `fmt::Write` sink refused text (for example a full `heapless::String`).
    SinkFull,
    /// An IQN breaks RFC 3720 §3.2.6.
    BadName {
        /// Which IQN.
        field: Field,
        /// The rule it breaks.
        error: IscsiNameError,
    },
    /// A value could inject script syntax or cannot be written as is.
    BadValue {
        /// Which value.
        field: Field,
        /// What is wrong with it.
        error: ValueError,
    },
    /// The LUN is above [`MAX_LUN`].
    LunOutOfRange,
    /// Port 0: iPXE would silently use 3260 instead.
    PortZero,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::InsufficientSize { required } => {
                write!(f, "buffer too small: the script needs {required} bytes")
            }
            RenderError::SinkFull => f.write_str("output sink is full"),
            RenderError::BadName { field, error } => write!(f, "{field}: {error}"),
            RenderError::BadValue { field, error } => write!(f, "{field} {error}"),
            RenderError::LunOutOfRange => {
                write!(f, "LUN above {MAX_LUN} cannot be named in a root path")
            }
            RenderError::PortZero => f.write_str("iSCSI port 0 (iPXE would use 3260)"),
        }
    }
}

impl From<fmt::Error> for RenderError {
    fn from(_: fmt::Error) -> Self {
        RenderError::SinkFull
    }
}

/// CHAP credentials the initiator presents, and optionally those it expects
/// back from the target (mutual CHAP). iPXE reads them from its `username`,
/// `password`, `reverse-username` and `reverse-password` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chap<'a> {
    /// CHAP_N the initiator sends.
    pub user: &'a str,
    /// The secret the initiator answers the target's challenge with.
    pub secret: &'a str,
    /// The target's name and secret, for mutual CHAP.
    pub mutual: Option<(&'a str, &'a str)>,
}

/// The disk a machine boots from: an RFC 4173 root path plus credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IscsiDisk<'a> {
    /// The portal address (`<servername>`).
    pub server: Ipv4Addr,
    /// The portal port; [`ISCSI_DEFAULT_PORT`] is written as an empty field.
    pub port: u16,
    /// The LUN number; 0 is written as an empty field.
    pub lun: u64,
    /// `<targetname>`.
    pub target_iqn: &'a str,
    /// The initiator's own name.
    pub initiator_iqn: &'a str,
    /// CHAP, if the target requires it.
    pub chap: Option<Chap<'a>>,
}

/// The initramfs a `kernel` boot hands the disk to. Each reads its own
/// command-line keys (and ignores the others'), so the script writes the
/// keys of the one the host's initrd was built with.
///
/// | flavour | target | portal | initiator | CHAP (+ mutual) |
/// |---|---|---|---|---|
/// | genkernel | `iscsi_target=` | `iscsi_address=` `iscsi_port=` | `iscsi_initiatorname=` | `iscsi_username=` `iscsi_password=` (`iscsi_username_in=` `iscsi_password_in=`) |
/// | dracut | `netroot=iscsi:[user:secret[:user_in:secret_in]@]server::port:lun:target` | (in netroot) | `rd.iscsi.initiator=` | (in netroot) |
/// | initramfs-tools (Debian's open-iscsi) | `iscsi_target_name=` | `iscsi_target_ip=` `iscsi_target_port=` | `iscsi_initiator=` | `iscsi_username=` `iscsi_password=` (`iscsi_in_username=` `iscsi_in_password=`) |
/// | ibft | iPXE `sanhook`s the disk and publishes it in the iBFT | | | (in the iBFT) |
///
/// All of them also get `ip=dhcp`, and `initrd=<name>` when there is an
/// initrd (an EFI-stub kernel under ipxe.efi loads it by that name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Initramfs {
    /// Gentoo's genkernel (`linuxrc`, `initrd.scripts`).
    #[default]
    Genkernel,
    /// dracut's `95iscsi` module (`parse-iscsiroot.sh`, `iscsiroot.sh`).
    Dracut,
    /// Debian's initramfs-tools with open-iscsi's
    /// `scripts/local-top/iscsi`.
    InitramfsTools,
    /// Any initramfs that logs in from the iBFT: the script `sanhook`s the
    /// disk first (iPXE publishes it, with the initiator name and CHAP, in
    /// the iBFT) and the command line says `rd.iscsi.firmware=1` (dracut)
    /// and `iscsi_auto` (Debian); genkernel reads the iBFT unless told
    /// `iscsi_noibft`.
    Ibft,
}

/// What a machine's script does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBoot<'a> {
    /// `sanboot iscsi:…`: iPXE attaches the disk and boots it (INT 13h / UEFI
    /// block I/O).
    Sanboot {
        /// The disk.
        disk: IscsiDisk<'a>,
        /// `set keep-san 1`: leave the disk attached even if the boot fails
        /// or returns, for an OS installer to find.
        keep_san: bool,
    },
    /// Loads a kernel and initrd that log in to the disk themselves, told
    /// where it is by command-line keys their [`Initramfs`] reads.
    Kernel {
        /// The disk the kernel's initrd logs in to.
        disk: IscsiDisk<'a>,
        /// Whose keys the command line carries.
        initramfs: Initramfs,
        /// Kernel path or URL; relative names resolve next to the script.
        kernel: &'a str,
        /// Initrd path or URL.
        initrd: Option<&'a str>,
        /// Extra command line appended after `ip=dhcp`.
        cmdline: &'a str,
    },
    /// `chain <url>`.
    Chain {
        /// Where to go; iPXE settings such as `${mac:hexhyp}` are allowed.
        url: &'a str,
    },
}

impl HostBoot<'_> {
    /// Does this script carry a CHAP secret (so that it should go only to
    /// its own station, see [`super::StationAddresses`])?
    pub fn carries_secret(&self) -> bool {
        match self {
            HostBoot::Sanboot { disk, .. } | HostBoot::Kernel { disk, .. } => disk.chap.is_some(),
            HostBoot::Chain { .. } => false,
        }
    }
}

/// One machine in a [`Script::Direct`] file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectEntry<'a> {
    /// The machine's MAC.
    pub mac: [u8; 6],
    /// What it boots.
    pub boot: HostBoot<'a>,
}

/// A script sanboot serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script<'a> {
    /// `boot.ipxe`, the file DHCP names: `chain <root_path>/default.ipxe`.
    ///
    /// The configured root path is written literally rather than as
    /// `${17}`, so the chain works whether or not option 17 reached iPXE
    /// (DHCP off, or another server answering). `/scripts` and `scripts`
    /// both resolve against the URI `boot.ipxe` came from, which for a file
    /// fetched by relative name from `siaddr` is `tftp://<siaddr>/boot.ipxe`;
    /// without a root path the line is `chain default.ipxe`.
    Boot {
        /// Where `default.ipxe` and the per-machine scripts live, if not
        /// beside `boot.ipxe`.
        root_path: Option<&'a str>,
    },
    /// `boot.ipxe` when sanboot runs an HTTP server:
    /// `chain http://<server>/<dir>/default.ipxe`. An absolute URL, so the
    /// rest of the chain and every relative kernel and initrd name is
    /// fetched over HTTP even when `boot.ipxe` itself came by TFTP.
    BootOverHttp {
        /// sanboot's HTTP listener (port 80 is left out of the URL).
        server: SocketAddrV4,
        /// Directory of `default.ipxe` under the HTTP root (`""`: the top).
        dir: &'a str,
    },
    /// `default.ipxe`: chains `${mac:hexhyp}.ipxe`; if that file is missing
    /// (an unknown machine) or its boot fails, says so and exits with an
    /// error, so the firmware moves on to its next boot device.
    Default,
    /// A machine's own `<mac-hexhyp>.ipxe`.
    Host(HostBoot<'a>),
    /// One file for every machine, dispatching on `${mac:hexhyp}`.
    Direct(&'a [DirectEntry<'a>]),
}

impl Script<'_> {
    /// Checks every value the script would contain.
    pub fn validate(&self) -> Result<(), RenderError> {
        match self {
            Script::Boot { root_path } => {
                if let Some(rp) = root_path.filter(|rp| !rp.is_empty()) {
                    check_first_arg(rp, Expansion::Literal).map_err(|error| {
                        RenderError::BadValue {
                            field: Field::RootPath,
                            error,
                        }
                    })?;
                }
                Ok(())
            }
            Script::BootOverHttp { dir, .. } if dir.trim_matches('/').is_empty() => Ok(()),
            Script::BootOverHttp { dir, .. } => {
                check_first_arg(dir, Expansion::Literal).map_err(|error| RenderError::BadValue {
                    field: Field::RootPath,
                    error,
                })
            }
            Script::Default => Ok(()),
            Script::Host(boot) => validate_boot(boot),
            Script::Direct(entries) => entries.iter().try_for_each(|e| validate_boot(&e.boot)),
        }
    }

    /// Validates, then writes the script into any `fmt::Write` sink.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), RenderError> {
        self.validate()?;
        w.write_str("#!ipxe\n")?;
        match self {
            Script::Boot { root_path } => {
                // "/" trims to "": the server's top directory.
                match root_path.filter(|rp| !rp.is_empty()) {
                    Some(rp) => writeln!(w, "chain {}/{DEFAULT_SCRIPT}", rp.trim_end_matches('/'))?,
                    None => writeln!(w, "chain {DEFAULT_SCRIPT}")?,
                }
            }
            Script::BootOverHttp { server, dir } => {
                let dir = dir.trim_matches('/');
                let path = if dir.is_empty() { "" } else { dir };
                let url = BootFile::Http {
                    server: *server,
                    path,
                };
                match path {
                    "" => writeln!(w, "chain {url}{DEFAULT_SCRIPT}")?,
                    _ => writeln!(w, "chain {url}/{DEFAULT_SCRIPT}")?,
                }
            }
            Script::Default => w.write_str(DEFAULT_BODY)?,
            Script::Host(boot) => write_boot(w, boot)?,
            Script::Direct(entries) => {
                for e in entries.iter() {
                    let mac = HexHyp(e.mac);
                    writeln!(w, "iseq ${{mac:hexhyp}} {mac} && goto {mac} ||")?;
                }
                w.write_str(DIRECT_UNKNOWN)?;
                for e in entries.iter() {
                    writeln!(w, ":{}", HexHyp(e.mac))?;
                    write_boot(w, &e.boot)?;
                    w.write_str("exit\n")?;
                }
            }
        }
        Ok(())
    }

    /// Renders into `buf`, returning the script's length. A buffer that is
    /// too small gives [`RenderError::InsufficientSize`] with the length needed.
    pub fn render(&self, buf: &mut [u8]) -> Result<usize, RenderError> {
        let mut w = SliceWriter::new(buf);
        self.write_to(&mut w)?;
        w.finish()
            .map_err(|required| RenderError::InsufficientSize { required })
    }

    /// The script's length in bytes (for TFTP's `tsize`), without a buffer.
    pub fn rendered_len(&self) -> Result<usize, RenderError> {
        let mut w = SliceWriter::new(&mut []);
        self.write_to(&mut w)?;
        Ok(w.required())
    }
}

const DEFAULT_BODY: &str = "\
chain ${mac:hexhyp}.ipxe || goto failed
exit
:failed
echo sanboot: ${mac:hexhyp}.ipxe is missing or its boot failed (is there a [[host]] for ${mac} ?)
exit 1
";

const DIRECT_UNKNOWN: &str = "\
echo sanboot: no [[host]] for ${mac}
exit 1
";

fn bad_value(field: Field) -> impl Fn(ValueError) -> RenderError {
    move |error| RenderError::BadValue { field, error }
}

fn bad_name(field: Field) -> impl Fn(IscsiNameError) -> RenderError {
    move |error| RenderError::BadName { field, error }
}

fn validate_disk(disk: &IscsiDisk<'_>) -> Result<(), RenderError> {
    validate_iscsi_name(disk.initiator_iqn).map_err(bad_name(Field::InitiatorIqn))?;
    validate_iscsi_name(disk.target_iqn).map_err(bad_name(Field::TargetIqn))?;
    if disk.port == 0 {
        return Err(RenderError::PortZero);
    }
    if disk.lun > MAX_LUN {
        return Err(RenderError::LunOutOfRange);
    }
    if let Some(chap) = &disk.chap {
        let lit = Expansion::Literal;
        check_word_value(chap.user, lit).map_err(bad_value(Field::ChapUser))?;
        check_word_value(chap.secret, lit).map_err(bad_value(Field::ChapSecret))?;
        if let Some((user, secret)) = chap.mutual {
            check_word_value(user, lit).map_err(bad_value(Field::MutualUser))?;
            check_word_value(secret, lit).map_err(bad_value(Field::MutualSecret))?;
        }
    }
    Ok(())
}

fn validate_boot(boot: &HostBoot<'_>) -> Result<(), RenderError> {
    let any = Expansion::Allowed;
    match boot {
        HostBoot::Sanboot { disk, .. } => validate_disk(disk),
        HostBoot::Kernel {
            disk,
            initramfs,
            kernel,
            initrd,
            cmdline,
        } => {
            validate_disk(disk)?;
            if *initramfs == Initramfs::Dracut {
                validate_netroot_chap(disk)?;
            }
            check_first_arg(kernel, any).map_err(bad_value(Field::Kernel))?;
            if let Some(initrd) = initrd {
                check_first_arg(initrd, any).map_err(bad_value(Field::Initrd))?;
            }
            check_words_value(cmdline, any).map_err(bad_value(Field::Cmdline))
        }
        HostBoot::Chain { url } => check_first_arg(url, any).map_err(bad_value(Field::ChainUrl)),
    }
}

/// dracut takes CHAP from `netroot=iscsi:user:secret[:user_in:secret_in]@…`
/// and splits it at `:` and the first `@`.
fn validate_netroot_chap(disk: &IscsiDisk<'_>) -> Result<(), RenderError> {
    let Some(chap) = &disk.chap else {
        return Ok(());
    };
    let check = |value: &str, field: Field| {
        if value.contains([':', '@']) {
            Err(RenderError::BadValue {
                field,
                error: ValueError::NetrootSeparator,
            })
        } else {
            Ok(())
        }
    };
    check(chap.user, Field::ChapUser)?;
    check(chap.secret, Field::ChapSecret)?;
    if let Some((user, secret)) = chap.mutual {
        check(user, Field::MutualUser)?;
        check(secret, Field::MutualSecret)?;
    }
    Ok(())
}

/// The LUN field of a root path: SAM single-level addressing, as the first
/// 16-bit group that iPXE's `scsi_parse_lun` reads in hex; empty for LUN 0.
struct LunField(u64);

impl fmt::Display for LunField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            lun @ 1..=0xff => write!(f, "{lun:x}"),
            lun => write!(f, "{:x}", 0x4000 | lun),
        }
    }
}

/// The RFC 4173 root path:
/// `iscsi:<servername>:<protocol>:<port>:<LUN>:<targetname>`, with the
/// protocol (TCP), port 3260 and LUN 0 left empty.
struct RootPath<'a>(&'a IscsiDisk<'a>);

impl fmt::Display for RootPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(f, "iscsi:{}::", d.server)?;
        if d.port != ISCSI_DEFAULT_PORT {
            write!(f, "{}", d.port)?;
        }
        write!(f, ":{}:{}", LunField(d.lun), d.target_iqn)
    }
}

/// iPXE's own settings for a disk: the initiator name and CHAP, which
/// iPXE uses to log in and publishes in the iBFT.
fn write_disk_settings<W: Write>(w: &mut W, disk: &IscsiDisk<'_>) -> fmt::Result {
    writeln!(w, "set initiator-iqn {}", disk.initiator_iqn)?;
    if let Some(chap) = &disk.chap {
        writeln!(w, "set username {}", chap.user)?;
        writeln!(w, "set password {}", chap.secret)?;
        if let Some((user, secret)) = chap.mutual {
            writeln!(w, "set reverse-username {user}")?;
            writeln!(w, "set reverse-password {secret}")?;
        }
    }
    Ok(())
}

/// The disk's keys on a kernel command line, each preceded by a space, as
/// `initramfs`'s parser reads them.
fn write_disk_keys<W: Write>(w: &mut W, disk: &IscsiDisk<'_>, initramfs: Initramfs) -> fmt::Result {
    let port = (disk.port != ISCSI_DEFAULT_PORT).then_some(disk.port);
    match initramfs {
        Initramfs::Genkernel => {
            write!(
                w,
                " iscsi_target={} iscsi_address={}",
                disk.target_iqn, disk.server
            )?;
            if let Some(port) = port {
                write!(w, " iscsi_port={port}")?;
            }
            write!(w, " iscsi_initiatorname={}", disk.initiator_iqn)?;
            if let Some(chap) = &disk.chap {
                write!(
                    w,
                    " iscsi_username={} iscsi_password={}",
                    chap.user, chap.secret
                )?;
                if let Some((user, secret)) = chap.mutual {
                    write!(w, " iscsi_username_in={user} iscsi_password_in={secret}")?;
                }
            }
        }
        Initramfs::Dracut => {
            w.write_str(" netroot=iscsi:")?;
            if let Some(chap) = &disk.chap {
                write!(w, "{}:{}", chap.user, chap.secret)?;
                if let Some((user, secret)) = chap.mutual {
                    write!(w, ":{user}:{secret}")?;
                }
                w.write_str("@")?;
            }
            write!(w, "{}::", disk.server)?;
            if let Some(port) = port {
                write!(w, "{port}")?;
            }
            w.write_str(":")?;
            // dracut reads the LUN as the decimal number udev puts in
            // /dev/disk/by-path/*-lun-N, not iPXE's hex SAM form.
            if disk.lun != 0 {
                write!(w, "{}", disk.lun)?;
            }
            write!(
                w,
                ":{} rd.iscsi.initiator={}",
                disk.target_iqn, disk.initiator_iqn
            )?;
        }
        Initramfs::InitramfsTools => {
            write!(
                w,
                " iscsi_target_name={} iscsi_target_ip={}",
                disk.target_iqn, disk.server
            )?;
            if let Some(port) = port {
                write!(w, " iscsi_target_port={port}")?;
            }
            write!(w, " iscsi_initiator={}", disk.initiator_iqn)?;
            if let Some(chap) = &disk.chap {
                write!(
                    w,
                    " iscsi_username={} iscsi_password={}",
                    chap.user, chap.secret
                )?;
                if let Some((user, secret)) = chap.mutual {
                    write!(w, " iscsi_in_username={user} iscsi_in_password={secret}")?;
                }
            }
        }
        Initramfs::Ibft => w.write_str(" rd.iscsi.firmware=1 iscsi_auto")?,
    }
    Ok(())
}

fn write_boot<W: Write>(w: &mut W, boot: &HostBoot<'_>) -> fmt::Result {
    match boot {
        HostBoot::Sanboot { disk, keep_san } => {
            write_disk_settings(w, disk)?;
            if *keep_san {
                w.write_str("set keep-san 1\n")?;
            }
            writeln!(w, "sanboot {}", RootPath(disk))
        }
        HostBoot::Kernel {
            disk,
            initramfs,
            kernel,
            initrd,
            cmdline,
        } => {
            if *initramfs == Initramfs::Ibft {
                // Attach without booting: iPXE describes the disk in the
                // iBFT, which stays in memory for the kernel to read.
                write_disk_settings(w, disk)?;
                writeln!(w, "sanhook {}", RootPath(disk))?;
            }
            write!(w, "kernel {kernel}")?;
            write_disk_keys(w, disk, *initramfs)?;
            w.write_str(" ip=dhcp")?;
            let extra = cmdline.trim_matches(' ');
            if let Some(initrd) = initrd {
                // An EFI-stub kernel (ipxe.efi) loads its initrd by the name
                // iPXE gives the image, the last part of its URI; a BIOS
                // kernel ignores the key.
                if !extra.split(' ').any(|w| w.starts_with("initrd=")) {
                    let name = initrd.rsplit('/').next().unwrap_or(initrd);
                    write!(w, " initrd={name}")?;
                }
            }
            if !extra.is_empty() {
                write!(w, " {extra}")?;
            }
            w.write_str("\n")?;
            if let Some(initrd) = initrd {
                writeln!(w, "initrd {initrd}")?;
            }
            w.write_str("boot\n")
        }
        HostBoot::Chain { url } => writeln!(w, "chain {url}"),
    }
}
