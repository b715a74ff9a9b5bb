//! The `kernel` form's command line read back the way each initramfs reads
//! it. The small parsers below follow the real ones (read, not copied):
//!
//! - genkernel: the iSCSI keys genkernel(8) lists under kernel parameters
//!   (`doc/genkernel.8.txt`), read by `defaults/initrd.scripts`;
//! - dracut 059 (Debian 12 `dracut-network`): `parse_iscsi_root` in
//!   `modules.d/40network/net-lib.sh` for `netroot=`, and the `getarg`
//!   calls of `modules.d/95iscsi/iscsiroot.sh` / `parse-iscsiroot.sh`;
//! - Debian's initramfs-tools with open-iscsi 2.1.8 (Debian 12):
//!   `parse_iscsi_ops` in `/usr/share/initramfs-tools/scripts/local-top/iscsi`.
//!
//! So a key written under a name the initramfs does not read, or a value
//! it would split differently, fails here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use core::net::Ipv4Addr;

use super::*;

const TARGET: &str = "iqn.2024-01.test.e2e:sanboot";
const INITIATOR: &str = "iqn.2010-04.org.ipxe:pc1";

/// Every key genkernel's initrd reads for iSCSI (genkernel(8)).
const GENKERNEL_KEYS: &[&str] = &[
    "iscsi_initiatorname",
    "iscsi_target",
    "iscsi_tgpt",
    "iscsi_address",
    "iscsi_port",
    "iscsi_username",
    "iscsi_password",
    "iscsi_username_in",
    "iscsi_password_in",
    "iscsi_debug",
    "iscsi_noibft",
];

/// Every key `parse_iscsi_ops` matches (Debian open-iscsi's local-top/iscsi).
const INITRAMFS_TOOLS_KEYS: &[&str] = &[
    "iscsi_auto",
    "iscsi_initiator",
    "iscsi_target_name",
    "iscsi_target_ip",
    "iscsi_target_port",
    "iscsi_target_group",
    "iscsi_username",
    "iscsi_password",
    "iscsi_in_username",
    "iscsi_in_password",
];

/// The keys dracut's 95iscsi module reads with getarg (its `-d` legacy
/// aliases left out).
const DRACUT_KEYS: &[&str] = &[
    "netroot",
    "rd.iscsi.initiator",
    "rd.iscsi.firmware",
    "rd.iscsi.target.group",
    "rd.iscsi.username",
    "rd.iscsi.password",
    "rd.iscsi.in.username",
    "rd.iscsi.in.password",
    "rd.iscsi.param",
    "rd.iscsi.login_retry_max",
    "rd.iscsi.waitnet",
    "rd.iscsi.testroute",
];

fn disk(port: u16, lun: u64, chap: Option<Chap<'static>>) -> IscsiDisk<'static> {
    IscsiDisk {
        server: Ipv4Addr::new(192, 0, 2, 1),
        port,
        lun,
        target_iqn: TARGET,
        initiator_iqn: INITIATOR,
        chap,
    }
}

const MUTUAL: Chap<'static> = Chap {
    user: "alice",
    secret: "s3cret-123456",
    mutual: Some(("sanboot", "t4rget-654321")),
};

fn kernel(disk: IscsiDisk<'_>, initramfs: Initramfs) -> HostBoot<'_> {
    HostBoot::Kernel {
        disk,
        initramfs,
        kernel: "vmlinuz",
        initrd: Some("initrd.img"),
        cmdline: "root=/dev/sda1",
    }
}

fn render(boot: HostBoot<'_>) -> heapless::String<1024> {
    let mut buf = [0xa5u8; 1024];
    let script = Script::Host(boot);
    let len = script.render(&mut buf).unwrap();
    assert_eq!(script.rendered_len(), Ok(len));
    heapless::String::try_from(core::str::from_utf8(&buf[..len]).unwrap()).unwrap()
}

/// The words after `kernel <path>`: what /proc/cmdline holds.
fn cmdline(script: &str) -> impl Iterator<Item = &str> {
    let line = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .expect("a kernel line");
    line.split(' ').skip(2)
}

/// `case $x in key=*) VAR=${x#key=}`: the last word wins, as in the scripts.
fn value<'a>(script: &'a str, key: &str) -> Option<&'a str> {
    cmdline(script)
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .last()
}

fn key(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// Keys every flavour gets that the initramfs does not own: `ip=` (each
/// configures the network from it), `initrd=` (the EFI stub's) and the
/// host's own `root=`.
fn shared(key: &str) -> bool {
    matches!(key, "ip" | "initrd" | "root")
}

#[test]
fn every_key_written_is_one_its_initramfs_reads() {
    for (flavour, keys) in [
        (Initramfs::Genkernel, GENKERNEL_KEYS),
        (Initramfs::InitramfsTools, INITRAMFS_TOOLS_KEYS),
        (Initramfs::Dracut, DRACUT_KEYS),
    ] {
        for d in [disk(3260, 0, None), disk(3261, 1, Some(MUTUAL))] {
            let script = render(kernel(d, flavour));
            for w in cmdline(&script) {
                assert!(
                    keys.contains(&key(w)) || shared(key(w)),
                    "{flavour:?} writes {w:?}, which its initramfs does not read:\n{script}"
                );
            }
            assert_eq!(value(&script, "ip"), Some("dhcp"), "{script}");
        }
    }
}

#[test]
fn genkernel_reads_back_the_disk() {
    let s = render(kernel(disk(3261, 1, Some(MUTUAL)), Initramfs::Genkernel));
    assert_eq!(value(&s, "iscsi_target"), Some(TARGET));
    assert_eq!(value(&s, "iscsi_address"), Some("192.0.2.1"));
    assert_eq!(value(&s, "iscsi_port"), Some("3261"));
    assert_eq!(value(&s, "iscsi_initiatorname"), Some(INITIATOR));
    assert_eq!(value(&s, "iscsi_username"), Some("alice"));
    assert_eq!(value(&s, "iscsi_password"), Some("s3cret-123456"));
    assert_eq!(value(&s, "iscsi_username_in"), Some("sanboot"));
    assert_eq!(value(&s, "iscsi_password_in"), Some("t4rget-654321"));
    // The default port is left to genkernel's own default.
    let s = render(kernel(disk(3260, 0, None), Initramfs::Genkernel));
    assert_eq!(value(&s, "iscsi_port"), None);
    assert_eq!(value(&s, "iscsi_username"), None);
}

#[test]
fn initramfs_tools_reads_back_the_disk() {
    let s = render(kernel(
        disk(3261, 1, Some(MUTUAL)),
        Initramfs::InitramfsTools,
    ));
    assert_eq!(value(&s, "iscsi_target_name"), Some(TARGET));
    assert_eq!(value(&s, "iscsi_target_ip"), Some("192.0.2.1"));
    assert_eq!(value(&s, "iscsi_target_port"), Some("3261"));
    assert_eq!(value(&s, "iscsi_initiator"), Some(INITIATOR));
    assert_eq!(value(&s, "iscsi_username"), Some("alice"));
    assert_eq!(value(&s, "iscsi_password"), Some("s3cret-123456"));
    assert_eq!(value(&s, "iscsi_in_username"), Some("sanboot"));
    assert_eq!(value(&s, "iscsi_in_password"), Some("t4rget-654321"));
    // The script logs in only with both name and address, unless iscsi_auto.
    assert!(!cmdline(&s).any(|w| w == "iscsi_auto"));
    // Without a port key it uses 3260; Debian's script has no LUN key (it
    // logs in to the target and udev names every LUN).
    let s = render(kernel(disk(3260, 0, None), Initramfs::InitramfsTools));
    assert_eq!(value(&s, "iscsi_target_port"), None);
    assert_eq!(value(&s, "iscsi_username"), None);
}

/// What dracut's `parse_iscsi_root` makes of a `netroot=iscsi:` value.
#[derive(Debug, Default, PartialEq)]
struct DracutRoot<'a> {
    username: &'a str,
    password: &'a str,
    in_username: &'a str,
    in_password: &'a str,
    target_ip: &'a str,
    protocol: &'a str,
    port: &'a str,
    lun: &'a str,
    target_name: &'a str,
}

/// `set $v` with `IFS=:`: every `:` ends a field; text after the last one
/// is a field only if it is not empty.
fn ifs_fields(v: &str) -> heapless::Vec<&str, 8> {
    let mut out: heapless::Vec<&str, 8> = v.split(':').collect();
    if out.last() == Some(&"") {
        out.pop();
    }
    out
}

fn parse_iscsi_root(netroot: &str) -> Option<DracutRoot<'_>> {
    let mut r = DracutRoot::default();
    let mut v = netroot.strip_prefix("iscsi:")?;
    // case "$v" in *@*:*:*:*:*): authinfo=${v%%@*}; v=${v#*@}
    if let Some((auth, rest)) = v.split_once('@') {
        if rest.matches(':').count() >= 4 {
            v = rest;
            if !auth.is_empty() {
                let f = ifs_fields(auth);
                if f.len() > 4 {
                    return None;
                }
                r.username = f.first().copied().unwrap_or("");
                r.password = f.get(1).copied().unwrap_or("");
                r.in_username = f.get(2).copied().unwrap_or("");
                r.in_password = f.get(3).copied().unwrap_or("");
            }
        }
    }
    // iscsi_target_ip=${v%%[:]*}; v=${v#$iscsi_target_ip:}
    let (ip, rest) = v.split_once(':')?;
    r.target_ip = ip;
    // *:iqn.*) iscsi_target_name=iqn.${v##*:iqn.}; v=${v%:iqn.*}:
    let at = rest.rfind(":iqn.")?;
    r.target_name = rest.get(at + 1..)?;
    let head = rest.get(..=at)?;
    let f = ifs_fields(head);
    r.protocol = f.first().copied()?;
    r.port = f.get(1).copied()?;
    // With a target name: 3 left = iface, netdev, lun; 2 = netdev, lun; 1 = lun.
    match f.len() {
        3 => r.lun = f.get(2).copied()?,
        2 => {}
        _ => return None,
    }
    Some(r)
}

#[test]
fn dracut_reads_back_the_disk() {
    let s = render(kernel(disk(3261, 1, Some(MUTUAL)), Initramfs::Dracut));
    let root = parse_iscsi_root(value(&s, "netroot").unwrap()).unwrap();
    assert_eq!(
        root,
        DracutRoot {
            username: "alice",
            password: "s3cret-123456",
            in_username: "sanboot",
            in_password: "t4rget-654321",
            target_ip: "192.0.2.1",
            protocol: "",
            port: "3261",
            lun: "1",
            target_name: TARGET,
        }
    );
    assert_eq!(value(&s, "rd.iscsi.initiator"), Some(INITIATOR));

    // Port 3260 and LUN 0 are left empty; iscsiroot.sh fills in its
    // defaults 3260 and 0.
    let s = render(kernel(disk(3260, 0, None), Initramfs::Dracut));
    let root = parse_iscsi_root(value(&s, "netroot").unwrap()).unwrap();
    assert_eq!(
        root,
        DracutRoot {
            target_ip: "192.0.2.1",
            target_name: TARGET,
            ..DracutRoot::default()
        }
    );

    // LUNs are decimal for dracut (udev's by-path "-lun-N"), not iPXE's hex.
    let s = render(kernel(disk(3260, 300, None), Initramfs::Dracut));
    let root = parse_iscsi_root(value(&s, "netroot").unwrap()).unwrap();
    assert_eq!(root.lun, "300");
}

#[test]
fn dracut_refuses_chap_values_its_netroot_would_split() {
    for (chap, field) in [
        (
            Chap {
                user: "a:b",
                secret: "s",
                mutual: None,
            },
            Field::ChapUser,
        ),
        (
            Chap {
                user: "u",
                secret: "p@ss",
                mutual: None,
            },
            Field::ChapSecret,
        ),
        (
            Chap {
                user: "u",
                secret: "s",
                mutual: Some(("t", "x:y")),
            },
            Field::MutualSecret,
        ),
    ] {
        let d = disk(3260, 0, Some(chap));
        assert_eq!(
            Script::Host(kernel(d, Initramfs::Dracut)).validate(),
            Err(RenderError::BadValue {
                field,
                error: ValueError::NetrootSeparator
            })
        );
        // The other flavours carry CHAP in keys of their own.
        assert_eq!(
            Script::Host(kernel(d, Initramfs::InitramfsTools)).validate(),
            Ok(())
        );
    }
}

#[test]
fn ibft_hooks_the_disk_and_asks_the_initramfs_for_the_firmware_table() {
    let s = render(kernel(disk(3261, 1, Some(MUTUAL)), Initramfs::Ibft));
    let lines: heapless::Vec<&str, 16> = s.lines().collect();
    // iPXE logs in with its own settings and puts them in the iBFT.
    assert_eq!(
        lines.as_slice(),
        [
            "#!ipxe",
            "set initiator-iqn iqn.2010-04.org.ipxe:pc1",
            "set username alice",
            "set password s3cret-123456",
            "set reverse-username sanboot",
            "set reverse-password t4rget-654321",
            "sanhook iscsi:192.0.2.1::3261:1:iqn.2024-01.test.e2e:sanboot",
            "kernel vmlinuz rd.iscsi.firmware=1 iscsi_auto ip=dhcp initrd=initrd.img root=/dev/sda1",
            "initrd initrd.img",
            "boot",
        ]
    );
    // dracut: getargbool 0 rd.iscsi.firmware; Debian: the bare word iscsi_auto.
    assert_eq!(value(&s, "rd.iscsi.firmware"), Some("1"));
    assert!(cmdline(&s).any(|w| w == "iscsi_auto"));
    // Nothing else names the disk: it comes from the table.
    assert!(!cmdline(&s).any(|w| w.contains(TARGET) || w.contains("alice")));
}

#[test]
fn flavour_snapshots() {
    for (flavour, want) in [
        (
            Initramfs::Genkernel,
            include_str!("testdata/kernel-genkernel-chap.ipxe"),
        ),
        (
            Initramfs::Dracut,
            include_str!("testdata/kernel-dracut-chap.ipxe"),
        ),
        (
            Initramfs::InitramfsTools,
            include_str!("testdata/kernel-initramfs-tools-chap.ipxe"),
        ),
        (
            Initramfs::Ibft,
            include_str!("testdata/kernel-ibft-chap.ipxe"),
        ),
    ] {
        let got = render(kernel(disk(3261, 1, Some(MUTUAL)), flavour));
        assert_eq!(got.as_str(), want, "{flavour:?}");
    }
}
