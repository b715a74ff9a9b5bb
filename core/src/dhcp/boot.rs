//! Which boot file a client gets: the loop-breaking rule (iPXE gets the
//! script, a PXE ROM gets an iPXE binary for its architecture) and per-host
//! overrides.

use super::wire::Repr;

/// What kind of network-boot client sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientKind {
    /// Already running iPXE: option 77 is `iPXE` (raw or RFC 3004), or option 175 is present.
    Ipxe,
    /// A PXE ROM (option 60 `PXEClient…` or option 93), with its architecture (RFC 4578 §2.1).
    Pxe {
        /// Option 93, or the `Arch:` field of option 60 when 93 is missing.
        arch: u16,
    },
    /// UEFI HTTP boot (option 60 `HTTPClient…` or architecture 16).
    Http {
        /// Option 93.
        arch: u16,
    },
    /// Anything else: a plain DHCP client with no boot intent.
    Plain,
}

/// Which configured file was chosen (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BootChoice {
    /// The iPXE script.
    Script,
    /// The BIOS iPXE binary.
    Bios,
    /// The x86-64 UEFI iPXE binary.
    Uefi,
    /// The ARM UEFI iPXE binary.
    Arm,
    /// The HTTP boot URL.
    Http,
    /// A per-host override.
    Host,
}

/// Boot files by client kind. Names are relative to the TFTP root (and to
/// the HTTP root, which is the same directory); `http` is a full URL.
#[derive(Debug, Clone, Copy)]
pub struct BootFiles<'a> {
    /// Option 93 = 0 (x86 BIOS).
    pub bios: &'a str,
    /// Option 93 = 6, 7 or 9 (x86/x86-64 UEFI).
    pub uefi: &'a str,
    /// Option 93 = 10 or 11 (ARM UEFI).
    pub arm: &'a str,
    /// Option 93 = 16 (x86-64 UEFI HTTP boot): a URL. `None`: `uefi` from
    /// `http_server` when there is one, else no answer.
    pub http: Option<&'a str>,
    /// sanboot's own HTTP server, when it runs one. iPXE clients then get
    /// their script as `http://<server>/<script>` (so the whole chain after
    /// it is HTTP), and UEFI HTTP clients get `uefi` (option 93 = 16) or
    /// `arm` (93 = 19) from it unless `http` names another URL.
    pub http_server: Option<SocketAddrV4>,
    /// What iPXE clients get (a generated script).
    pub script: &'a str,
    /// Option 17 for iPXE clients (no URI scheme: iPXE would SAN-boot it).
    pub root_path: Option<&'a str>,
}

impl Default for BootFiles<'_> {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe",
            uefi: "ipxe.efi",
            arm: "ipxe-arm64.efi",
            http: None,
            http_server: None,
            script: "boot.ipxe",
            root_path: None,
        }
    }
}

/// One configured machine, keyed by MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Fixed address (full mode).
    pub ip: Option<Ipv4Addr>,
    /// Option 12 handed to it (full mode).
    pub hostname: Option<&'a str>,
    /// Replaces the PXE boot file for every architecture.
    pub boot_file: Option<&'a str>,
    /// Replaces the iPXE script name.
    pub script: Option<&'a str>,
}

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

impl<'a> Host<'a> {
    /// A host with no overrides.
    pub const fn new(mac: [u8; 6]) -> Self {
        Host {
            mac,
            ip: None,
            hostname: None,
            boot_file: None,
            script: None,
        }
    }
}

fn arch_from_vendor_class(vc: &[u8]) -> Option<u16> {
    // "PXEClient:Arch:00007:UNDI:003000"
    let digits = vc.get(15..20)?;
    if vc.get(9..15)? != b":Arch:" {
        return None;
    }
    digits.iter().try_fold(0u16, |acc, d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u16::from(d))
    })
}

/// Classifies a client from its request.
pub fn classify(req: &Repr) -> ClientKind {
    if req.user_class_is_ipxe() || req.ipxe.is_some() {
        return ClientKind::Ipxe;
    }
    let vc = req.vendor_class.as_slice();
    let arch = req.client_arch.or_else(|| arch_from_vendor_class(vc));
    if vc.starts_with(b"HTTPClient") || arch == Some(16) {
        return ClientKind::Http {
            arch: arch.unwrap_or(16),
        };
    }
    if vc.starts_with(b"PXEClient") || arch.is_some() {
        return ClientKind::Pxe {
            arch: arch.unwrap_or(0),
        };
    }
    ClientKind::Plain
}

/// The boot file for `kind`, or `None` when nothing fits it.
pub fn select<'a>(
    kind: ClientKind,
    files: &BootFiles<'a>,
    host: Option<&Host<'a>>,
) -> Option<(&'a str, BootChoice)> {
    match kind {
        ClientKind::Ipxe => Some(match host.and_then(|h| h.script) {
            Some(s) => (s, BootChoice::Host),
            None => (files.script, BootChoice::Script),
        }),
        ClientKind::Pxe { arch } => {
            if let Some(f) = host.and_then(|h| h.boot_file) {
                return Some((f, BootChoice::Host));
            }
            match arch {
                0 => Some((files.bios, BootChoice::Bios)),
                6 | 7 | 9 => Some((files.uefi, BootChoice::Uefi)),
                10 | 11 => Some((files.arm, BootChoice::Arm)),
                _ => None,
            }
        }
        // RFC 4578 / IANA: 16 = x64 UEFI HTTP, 19 = arm64 UEFI HTTP. Others
        // (x86 32-bit, arm32) get nothing rather than a binary they cannot run.
        ClientKind::Http { arch: 16 } => match files.http {
            Some(url) => Some((url, BootChoice::Http)),
            None => files.http_server.map(|_| (files.uefi, BootChoice::Uefi)),
        },
        ClientKind::Http { arch: 19 } => files.http_server.map(|_| (files.arm, BootChoice::Arm)),
        ClientKind::Http { .. } | ClientKind::Plain => None,
    }
}

/// The boot file as the client reads it: a name on the TFTP server
/// (`siaddr`), a URL from the config, or a name on sanboot's HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile<'a> {
    /// Written as is (a TFTP name or a configured URL).
    Verbatim(&'a str),
    /// `http://<server>/<path>`; port 80 is left out.
    Http {
        /// sanboot's HTTP listener.
        server: SocketAddrV4,
        /// Path under the HTTP root.
        path: &'a str,
    },
}

impl fmt::Display for BootFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFile::Verbatim(s) => f.write_str(s),
            BootFile::Http { server, path } => {
                write!(f, "http://{}", server.ip())?;
                if server.port() != 80 {
                    write!(f, ":{}", server.port())?;
                }
                write!(f, "/{}", path.trim_start_matches('/'))
            }
        }
    }
}

/// Longest `http://a.b.c.d:ppppp/` prefix [`BootFile::Http`] adds to a name.
pub const HTTP_PREFIX_MAX: usize = "http://255.255.255.255:65535/".len();

/// How `chosen` (from [`select`]) reaches a `kind` client: over sanboot's
/// HTTP server when it runs one and the client speaks HTTP (iPXE, UEFI HTTP
/// boot), else by name. A PXE ROM only has TFTP.
pub fn boot_file<'a>(
    kind: ClientKind,
    chosen: (&'a str, BootChoice),
    files: &BootFiles<'_>,
) -> BootFile<'a> {
    let (name, choice) = chosen;
    match (kind, files.http_server) {
        // `Http` is a configured URL, already complete.
        (ClientKind::Ipxe | ClientKind::Http { .. }, Some(server))
            if choice != BootChoice::Http =>
        {
            BootFile::Http { server, path: name }
        }
        _ => BootFile::Verbatim(name),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dhcp::wire::{Op, Repr};

    #[test]
    fn arch_from_option_60_when_93_is_missing() {
        let mut r = Repr::new(Op::Request, 1, [0; 6]);
        r.vendor_class
            .extend_from_slice(b"PXEClient:Arch:00007:UNDI:003000")
            .unwrap();
        assert_eq!(classify(&r), ClientKind::Pxe { arch: 7 });
        r.vendor_class.clear();
        r.vendor_class.extend_from_slice(b"PXEClient").unwrap();
        assert_eq!(classify(&r), ClientKind::Pxe { arch: 0 });
        r.vendor_class.clear();
        r.vendor_class
            .extend_from_slice(b"HTTPClient:Arch:00016:UNDI:003001")
            .unwrap();
        assert_eq!(classify(&r), ClientKind::Http { arch: 16 });
        r.vendor_class.clear();
        assert_eq!(classify(&r), ClientKind::Plain);
    }

    #[test]
    fn files_by_arch_and_override() {
        let files = BootFiles::default();
        let pick = |arch| select(ClientKind::Pxe { arch }, &files, None).map(|x| x.0);
        assert_eq!(pick(0), Some("undionly.kpxe"));
        for a in [6, 7, 9] {
            assert_eq!(pick(a), Some("ipxe.efi"));
        }
        assert_eq!(pick(11), Some("ipxe-arm64.efi"));
        assert_eq!(pick(2), None);
        let host = Host {
            boot_file: Some("special.kpxe"),
            ..Host::new([1; 6])
        };
        assert_eq!(
            select(ClientKind::Pxe { arch: 7 }, &files, Some(&host)),
            Some(("special.kpxe", BootChoice::Host))
        );
        assert_eq!(
            select(ClientKind::Ipxe, &files, Some(&host)),
            Some(("boot.ipxe", BootChoice::Script))
        );
        assert_eq!(select(ClientKind::Http { arch: 16 }, &files, None), None);
    }

    fn text(f: BootFile<'_>) -> heapless::String<128> {
        use core::fmt::Write;
        let mut s = heapless::String::new();
        write!(s, "{f}").unwrap();
        s
    }

    #[test]
    fn http_clients_by_arch_and_server() {
        let server = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80);
        let files = BootFiles {
            http_server: Some(server),
            ..BootFiles::default()
        };
        let file = |kind| {
            let chosen = select(kind, &files, None)?;
            Some(text(boot_file(kind, chosen, &files)))
        };
        assert_eq!(
            file(ClientKind::Http { arch: 16 }).as_deref(),
            Some("http://192.0.2.1/ipxe.efi")
        );
        assert_eq!(
            file(ClientKind::Http { arch: 19 }).as_deref(),
            Some("http://192.0.2.1/ipxe-arm64.efi")
        );
        // 32-bit x86 UEFI HTTP: no binary fits.
        assert_eq!(file(ClientKind::Http { arch: 15 }), None);
        assert_eq!(
            file(ClientKind::Ipxe).as_deref(),
            Some("http://192.0.2.1/boot.ipxe")
        );
        // A PXE ROM has no HTTP: still the TFTP name.
        assert_eq!(
            file(ClientKind::Pxe { arch: 7 }).as_deref(),
            Some("ipxe.efi")
        );
        // A configured URL wins over our server, written as is; a port is kept.
        let files = BootFiles {
            http: Some("http://mirror/x.efi"),
            http_server: Some(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080)),
            ..BootFiles::default()
        };
        let chosen = select(ClientKind::Http { arch: 16 }, &files, None).unwrap();
        assert_eq!(
            text(boot_file(ClientKind::Http { arch: 16 }, chosen, &files)),
            "http://mirror/x.efi"
        );
        let chosen = select(ClientKind::Ipxe, &files, None).unwrap();
        assert_eq!(
            text(boot_file(ClientKind::Ipxe, chosen, &files)),
            "http://192.0.2.1:8080/boot.ipxe"
        );
    }
}
