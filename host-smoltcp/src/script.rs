//! Generated iPXE scripts as TFTP virtual files, without a buffer per file:
//! a script is rendered again for every block, keeping only the bytes that
//! fall into the block (scripts are a block or two long).

use core::fmt;
use core::net::Ipv4Addr;

use sanboot_core::ipxe::{
    mac_from_script_name, Script, ScriptAccess, StationAddresses, DEFAULT_SCRIPT,
};
use sanboot_core::tftp::{ReadError, Refusal};
use smoltcp::wire::IpAddress;

use crate::config::Scripts;

/// Stations whose addresses the appliance remembers (only those whose
/// scripts carry a secret); one more is refused its script.
pub const STATION_SLOTS: usize = 32;

/// Which generated script a transfer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptRef {
    /// `boot.ipxe` (or the direct file).
    Boot,
    /// `default.ipxe`.
    Default,
    /// `<mac>.ipxe` of `Scripts::hosts[i]`.
    Host(usize),
}

/// What a requested path names among the generated scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A generated script.
    Script(ScriptRef),
    /// A per-MAC script name for a MAC without a host: "file not found".
    UnknownMac([u8; 6]),
    /// Not a script name: look in the files.
    NotScript,
}

impl<'a> Scripts<'a> {
    /// Finds what `path` (normalised by the TFTP core: relative, `/`
    /// separated) names. Mirrors host-linux's `script::virtual_file`:
    /// `default.ipxe` and `<mac>.ipxe` are found in the script directory
    /// and at the top, names compare case-insensitively.
    pub fn lookup(&self, path: &str) -> Lookup {
        let path = path.trim_start_matches('/');
        if path.eq_ignore_ascii_case(self.boot.trim_start_matches('/')) {
            return Lookup::Script(ScriptRef::Boot);
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if !dir.is_empty() && !self.is_script_dir(dir) {
            return Lookup::NotScript;
        }
        if name.eq_ignore_ascii_case(DEFAULT_SCRIPT) {
            return Lookup::Script(ScriptRef::Default);
        }
        let Some(mac) = mac_from_script_name(name) else {
            return Lookup::NotScript;
        };
        match self.hosts.iter().position(|h| h.mac == mac) {
            Some(i) => Lookup::Script(ScriptRef::Host(i)),
            None => Lookup::UnknownMac(mac),
        }
    }

    /// The script directory is `[boot] root_path`, relative to the
    /// directory of `boot` unless it starts with `/`.
    fn is_script_dir(&self, dir: &str) -> bool {
        let boot_dir = self
            .boot
            .trim_start_matches('/')
            .rsplit_once('/')
            .map_or("", |(d, _)| d);
        match self.root_path {
            None | Some("") => dir.eq_ignore_ascii_case(boot_dir),
            Some(rp) if rp.starts_with('/') || boot_dir.is_empty() => {
                dir.eq_ignore_ascii_case(rp.trim_matches('/'))
            }
            Some(rp) => {
                let rp = rp.trim_matches('/');
                let Some((head, tail)) = dir.split_at_checked(boot_dir.len()) else {
                    return false;
                };
                head.eq_ignore_ascii_case(boot_dir)
                    && tail
                        .strip_prefix('/')
                        .is_some_and(|t| t.eq_ignore_ascii_case(rp))
            }
        }
    }

    /// May `requester` read script `r`? A host script that carries a CHAP
    /// secret goes only to the address its station used in DHCP
    /// (`stations`, `None` when this appliance never sees addresses: DHCP
    /// off). `Err` names the MAC and the address expected.
    pub fn access(
        &self,
        r: ScriptRef,
        stations: Option<&StationAddresses<STATION_SLOTS>>,
        requester: IpAddress,
    ) -> Result<(), ([u8; 6], Option<Ipv4Addr>)> {
        let (ScriptRef::Host(i), Some(stations)) = (r, stations) else {
            return Ok(());
        };
        let Some(host) = self.hosts.get(i).filter(|h| h.boot.carries_secret()) else {
            return Ok(());
        };
        // Addresses are IPv4 (DHCPv4); any other requester is not the station.
        let core::net::IpAddr::V4(ip) = core::net::IpAddr::from(requester) else {
            return Err((host.mac, stations.address(host.mac)));
        };
        match stations.check(host.mac, ip) {
            ScriptAccess::Allowed => Ok(()),
            ScriptAccess::Unknown => Err((host.mac, None)),
            ScriptAccess::OtherAddress { expected } => Err((host.mac, Some(expected))),
        }
    }

    /// Does the script of `mac` carry a secret (its address is worth keeping)?
    pub fn has_secret(&self, mac: [u8; 6]) -> bool {
        self.hosts
            .iter()
            .any(|h| h.mac == mac && h.boot.carries_secret())
    }

    /// The script `r` stands for.
    pub fn script(&self, r: ScriptRef) -> Option<Script<'a>> {
        Some(match r {
            ScriptRef::Boot if self.direct => Script::Direct(self.hosts),
            ScriptRef::Boot => Script::Boot {
                root_path: self.root_path,
            },
            ScriptRef::Default => Script::Default,
            ScriptRef::Host(i) => Script::Host(self.hosts.get(i)?.boot),
        })
    }

    /// Opens a script: its length, or why it cannot be served (a host whose
    /// values cannot be written safely is "not found", as on Linux).
    pub fn open(&self, r: ScriptRef) -> Result<u64, Refusal> {
        let script = self.script(r).ok_or(Refusal::NotFound)?;
        script
            .rendered_len()
            .map(|n| n as u64)
            .map_err(|_| Refusal::NotFound)
    }

    /// Fills `buf` with the script's bytes at `offset`.
    pub fn read_at(&self, r: ScriptRef, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let script = self.script(r).ok_or(ReadError::Io)?;
        let mut w = Window {
            offset,
            pos: 0,
            buf,
            filled: 0,
        };
        script.write_to(&mut w).map_err(|_| ReadError::Io)?;
        if w.filled == w.buf.len() {
            Ok(())
        } else {
            Err(ReadError::Truncated)
        }
    }
}

/// A `fmt::Write` sink keeping only the bytes in `[offset, offset + buf.len())`.
struct Window<'b> {
    offset: u64,
    pos: u64,
    buf: &'b mut [u8],
    filled: usize,
}

impl fmt::Write for Window<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let start = self.pos;
        self.pos = self.pos.saturating_add(bytes.len() as u64);
        let want = self.offset.saturating_add(self.filled as u64);
        if want < start || want >= self.pos {
            return Ok(());
        }
        let skip = usize::try_from(want - start).map_err(|_| fmt::Error)?;
        let src = bytes.get(skip..).unwrap_or_default();
        let dst = self.buf.get_mut(self.filled..).unwrap_or_default();
        let n = src.len().min(dst.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        self.filled = self.filled.saturating_add(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use core::net::Ipv4Addr;
    use sanboot_core::ipxe::{DirectEntry, HostBoot, IscsiDisk};

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 1];

    fn hosts() -> [DirectEntry<'static>; 1] {
        [DirectEntry {
            mac: MAC,
            boot: HostBoot::Sanboot {
                disk: IscsiDisk {
                    server: Ipv4Addr::new(192, 0, 2, 1),
                    port: 3260,
                    lun: 0,
                    target_iqn: "iqn.2024-01.test.e2e:sanboot",
                    initiator_iqn: "iqn.2010-04.org.ipxe:station1",
                    chap: None,
                },
                keep_san: false,
            },
        }]
    }

    #[test]
    fn names_resolve_like_host_linux() {
        let h = hosts();
        let mut s = Scripts::new(&h);
        assert_eq!(s.lookup("boot.ipxe"), Lookup::Script(ScriptRef::Boot));
        assert_eq!(s.lookup("DEFAULT.IPXE"), Lookup::Script(ScriptRef::Default));
        assert_eq!(
            s.lookup("52-54-00-E2-E0-01.ipxe"),
            Lookup::Script(ScriptRef::Host(0))
        );
        assert_eq!(
            s.lookup("52-54-00-e2-e0-02.ipxe"),
            Lookup::UnknownMac([0x52, 0x54, 0, 0xe2, 0xe0, 2])
        );
        assert_eq!(s.lookup("undionly.kpxe"), Lookup::NotScript);
        assert_eq!(s.lookup("other/default.ipxe"), Lookup::NotScript);
        s.boot = "ipxe/boot.ipxe";
        s.root_path = Some("scripts");
        assert_eq!(
            s.lookup("ipxe/scripts/default.ipxe"),
            Lookup::Script(ScriptRef::Default)
        );
        assert_eq!(s.lookup("scripts/default.ipxe"), Lookup::NotScript);
        s.root_path = Some("/top/");
        assert_eq!(
            s.lookup("top/52-54-00-e2-e0-01.ipxe"),
            Lookup::Script(ScriptRef::Host(0))
        );
    }

    #[test]
    fn reading_in_blocks_gives_the_rendered_script() {
        let h = hosts();
        let s = Scripts::new(&h);
        let r = ScriptRef::Host(0);
        let mut whole = [0u8; 512];
        let len = s.script(r).unwrap().render(&mut whole).unwrap();
        assert_eq!(s.open(r).unwrap(), len as u64);
        // Odd block sizes cut through format arguments.
        for blk in [1usize, 7, 13, 64, len] {
            let mut got = [0u8; 512];
            let mut off = 0;
            while off < len {
                let n = blk.min(len - off);
                s.read_at(r, off as u64, &mut got[off..off + n]).unwrap();
                off += n;
            }
            assert_eq!(&got[..len], &whole[..len], "blksize {blk}");
        }
        let mut past = [0u8; 4];
        assert_eq!(
            s.read_at(r, len as u64 - 2, &mut past),
            Err(ReadError::Truncated)
        );
    }
}
