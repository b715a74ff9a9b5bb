//! Snapshot tests: the exact text each kind of script renders to, compared
//! with the files in `testdata/`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use core::net::Ipv4Addr;

use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x01];
const TARGET: &str = "iqn.2024-01.test.e2e:sanboot";
const TEMPLATE: &str = "iqn.2007-11.ru.pp.livid:%hostname%-%mac%";

fn render(script: Script<'_>) -> Result<heapless::String<2048>, RenderError> {
    let mut buf = [0xa5u8; 2048];
    let len = script.render(&mut buf)?;
    assert_eq!(script.rendered_len(), Ok(len));
    let text = core::str::from_utf8(&buf[..len]).unwrap();
    Ok(heapless::String::try_from(text).unwrap())
}

fn disk<'a>(initiator: &'a str, lun: u64, port: u16) -> IscsiDisk<'a> {
    IscsiDisk {
        server: Ipv4Addr::new(192, 0, 2, 1),
        port,
        lun,
        target_iqn: TARGET,
        initiator_iqn: initiator,
        chap: None,
    }
}

fn sanboot(disk: IscsiDisk<'_>) -> Script<'_> {
    Script::Host(HostBoot::Sanboot {
        disk,
        keep_san: false,
    })
}

#[test]
fn boot_seed_over_http_is_an_absolute_url() {
    let server = core::net::SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80);
    for dir in ["scripts", "/scripts/"] {
        assert_eq!(
            render(Script::BootOverHttp { server, dir }).as_deref(),
            Ok("#!ipxe\nchain http://192.0.2.1/scripts/default.ipxe\n"),
            "{dir}"
        );
    }
    let server = core::net::SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080);
    assert_eq!(
        render(Script::BootOverHttp { server, dir: "" }).as_deref(),
        Ok("#!ipxe\nchain http://192.0.2.1:8080/default.ipxe\n")
    );
    assert_eq!(
        render(Script::BootOverHttp { server, dir: "a b" }),
        Err(RenderError::BadValue {
            field: Field::RootPath,
            error: ValueError::Whitespace
        })
    );
}

#[test]
fn boot_seed_names_the_root_path_literally() {
    let want = include_str!("testdata/boot-root-path.ipxe");
    for rp in ["/scripts", "/scripts/", "/scripts//"] {
        let got = render(Script::Boot {
            root_path: Some(rp),
        });
        assert_eq!(got.as_deref(), Ok(want), "{rp}");
    }
    let want = include_str!("testdata/boot-no-root-path.ipxe");
    assert_eq!(
        render(Script::Boot { root_path: None }).as_deref(),
        Ok(want)
    );
    assert_eq!(
        render(Script::Boot {
            root_path: Some("")
        })
        .as_deref(),
        Ok(want)
    );
    assert_eq!(
        render(Script::Boot {
            root_path: Some("/")
        })
        .as_deref(),
        Ok("#!ipxe\nchain /default.ipxe\n")
    );
    assert_eq!(
        render(Script::Boot {
            root_path: Some("scripts")
        })
        .as_deref(),
        Ok("#!ipxe\nchain scripts/default.ipxe\n")
    );
}

#[test]
fn default_seed_chains_by_mac_and_explains_failure() {
    assert_eq!(
        render(Script::Default).as_deref(),
        Ok(include_str!("testdata/default.ipxe"))
    );
}

#[test]
fn sanboot_lun0_is_the_seed_form() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    let got = render(sanboot(disk(&iqn, 0, 3260)));
    assert_eq!(
        got.as_deref(),
        Ok(include_str!("testdata/sanboot-lun0.ipxe"))
    );
    assert!(got
        .unwrap()
        .contains("sanboot iscsi:192.0.2.1::::iqn.2024-01.test.e2e:sanboot\n"));
}

#[test]
fn sanboot_lun1_matches_the_peer_boot() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    assert_eq!(
        render(sanboot(disk(&iqn, 1, 3260))).as_deref(),
        Ok(include_str!("testdata/sanboot-lun1.ipxe"))
    );
}

#[test]
fn sanboot_port_and_lun_are_written_as_ipxe_parses_them() {
    // iPXE reads the port in decimal and the LUN in hex (scsi_parse_lun).
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    assert_eq!(
        render(sanboot(disk(&iqn, 10, 3261))).as_deref(),
        Ok(include_str!("testdata/sanboot-port-lun10.ipxe"))
    );
    // LUNs above 255 use SAM flat space addressing.
    let got = render(sanboot(disk(&iqn, 300, 3260))).unwrap();
    assert!(got.contains(":::412c:iqn."), "{got}");
    assert_eq!(
        render(sanboot(disk(&iqn, MAX_LUN + 1, 3260))),
        Err(RenderError::LunOutOfRange)
    );
    assert_eq!(
        render(sanboot(disk(&iqn, 0, 0))),
        Err(RenderError::PortZero)
    );
}

#[test]
fn sanboot_with_chap_and_keep_san() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    let mut d = disk(&iqn, 1, 3260);
    d.chap = Some(Chap {
        user: "pc1",
        secret: "secret-12345",
        mutual: Some(("target1", "other-secret9")),
    });
    assert_eq!(
        render(Script::Host(HostBoot::Sanboot {
            disk: d,
            keep_san: true
        }))
        .as_deref(),
        Ok(include_str!("testdata/sanboot-chap-keep-san.ipxe"))
    );
}

#[test]
fn kernel_form_uses_genkernel_parameters() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    let boot = HostBoot::Kernel {
        disk: disk(&iqn, 1, 3260),
        initramfs: Initramfs::Genkernel,
        kernel: "http://192.0.2.1/vmlinuz",
        initrd: Some("http://192.0.2.1/initramfs"),
        cmdline: " root=/dev/sda1 quiet ",
    };
    assert_eq!(
        render(Script::Host(boot)).as_deref(),
        Ok(include_str!("testdata/kernel.ipxe"))
    );
    let mut d = disk(&iqn, 1, 3261);
    d.chap = Some(Chap {
        user: "u",
        secret: "s",
        mutual: None,
    });
    let got = render(Script::Host(HostBoot::Kernel {
        disk: d,
        initramfs: Initramfs::default(),
        kernel: "vmlinuz",
        initrd: None,
        cmdline: "",
    }))
    .unwrap();
    assert_eq!(
        got.as_str(),
        "#!ipxe\nkernel vmlinuz iscsi_target=iqn.2024-01.test.e2e:sanboot \
         iscsi_address=192.0.2.1 iscsi_port=3261 \
         iscsi_initiatorname=iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01 \
         iscsi_username=u iscsi_password=s ip=dhcp\nboot\n"
    );
}

#[test]
fn kernel_form_names_the_initrd_for_efi_stub_kernels() {
    let iqn = "iqn.2010-04.org.ipxe:pc1";
    let line = |initrd, cmdline| {
        let got = render(Script::Host(HostBoot::Kernel {
            disk: disk(iqn, 0, 3260),
            initramfs: Initramfs::InitramfsTools,
            kernel: "vmlinuz",
            initrd,
            cmdline,
        }))
        .unwrap();
        heapless::String::<512>::try_from(got.lines().nth(1).unwrap()).unwrap()
    };
    // iPXE names the image after the last part of its URI.
    assert!(line(Some("tftp://192.0.2.1/boot/initrd.img-6.1"), "")
        .ends_with(" ip=dhcp initrd=initrd.img-6.1"));
    // No initrd, no key; the host's own initrd= is kept and not doubled.
    assert!(!line(None, "").contains("initrd="));
    let own = line(Some("initrd.img"), "initrd=other.img quiet");
    assert_eq!(own.matches("initrd=").count(), 1, "{own}");
    assert!(own.ends_with(" initrd=other.img quiet"), "{own}");
}

#[test]
fn chain_form() {
    assert_eq!(
        render(Script::Host(HostBoot::Chain {
            url: "http://192.0.2.1/menu/${mac:hexhyp}.ipxe"
        }))
        .as_deref(),
        Ok(include_str!("testdata/chain.ipxe"))
    );
}

#[test]
fn direct_form_dispatches_on_mac() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    let mut mac2 = MAC;
    mac2[5] = 2;
    let entries = [
        DirectEntry {
            mac: MAC,
            boot: HostBoot::Sanboot {
                disk: disk(&iqn, 1, 3260),
                keep_san: false,
            },
        },
        DirectEntry {
            mac: mac2,
            boot: HostBoot::Chain {
                url: "http://192.0.2.1/menu/${mac:hexhyp}.ipxe",
            },
        },
    ];
    assert_eq!(
        render(Script::Direct(&entries)).as_deref(),
        Ok(include_str!("testdata/direct.ipxe"))
    );
    assert_eq!(
        render(Script::Direct(&[])).as_deref(),
        Ok("#!ipxe\necho sanboot: no [[host]] for ${mac}\nexit 1\n")
    );
}

#[test]
fn invalid_iqns_are_refused_with_the_rule() {
    let got = render(sanboot(disk("iqn.2024-13.test:x", 0, 3260)));
    assert_eq!(
        got,
        Err(RenderError::BadName {
            field: Field::InitiatorIqn,
            error: IscsiNameError::BadDate
        })
    );
    let mut d = disk("iqn.2024-01.test:x", 0, 3260);
    d.target_iqn = "iqn.2024-01.test:Disk";
    assert_eq!(
        render(sanboot(d)),
        Err(RenderError::BadName {
            field: Field::TargetIqn,
            error: IscsiNameError::UpperCase
        })
    );
    d.target_iqn = "iqn.2024-01.test:disk\nshell";
    assert_eq!(
        render(sanboot(d)),
        Err(RenderError::BadName {
            field: Field::TargetIqn,
            error: IscsiNameError::BadCharacter
        })
    );
}

#[test]
fn injected_commands_are_refused() {
    let iqn = "iqn.2024-01.test:x";
    let cases: [(HostBoot<'_>, Field, ValueError); 6] = [
        (
            HostBoot::Chain {
                url: "http://x/\nshell",
            },
            Field::ChainUrl,
            ValueError::ControlCharacter,
        ),
        (
            HostBoot::Chain {
                url: "http://x/ || shell",
            },
            Field::ChainUrl,
            ValueError::Whitespace,
        ),
        (
            HostBoot::Chain { url: "http://x/\\" },
            Field::ChainUrl,
            ValueError::Backslash,
        ),
        (
            HostBoot::Kernel {
                disk: disk(iqn, 0, 3260),
                initramfs: Initramfs::Genkernel,
                kernel: "vmlinuz",
                initrd: None,
                cmdline: "quiet && shell",
            },
            Field::Cmdline,
            ValueError::CommandSeparator,
        ),
        (
            HostBoot::Kernel {
                disk: disk(iqn, 0, 3260),
                initramfs: Initramfs::Genkernel,
                kernel: "--autofree",
                initrd: None,
                cmdline: "",
            },
            Field::Kernel,
            ValueError::LeadingDash,
        ),
        (
            HostBoot::Sanboot {
                disk: IscsiDisk {
                    chap: Some(Chap {
                        user: "u",
                        secret: "a${password}",
                        mutual: None,
                    }),
                    ..disk(iqn, 0, 3260)
                },
                keep_san: false,
            },
            Field::ChapSecret,
            ValueError::SettingExpansion,
        ),
    ];
    for (boot, field, error) in cases {
        assert_eq!(
            render(Script::Host(boot)),
            Err(RenderError::BadValue { field, error }),
            "{boot:?}"
        );
    }
    assert_eq!(
        render(Script::Boot {
            root_path: Some("/x\nshell")
        }),
        Err(RenderError::BadValue {
            field: Field::RootPath,
            error: ValueError::ControlCharacter
        })
    );
}

#[test]
fn buffer_too_small_reports_the_size_needed() {
    let iqn = expand_initiator_iqn(TEMPLATE, Some("pc1"), MAC).unwrap();
    let script = sanboot(disk(&iqn, 1, 3260));
    let want = include_str!("testdata/sanboot-lun1.ipxe");
    for size in [0, 1, 7, want.len() - 1] {
        let mut buf = [0u8; 512];
        assert_eq!(
            script.render(&mut buf[..size]),
            Err(RenderError::InsufficientSize {
                required: want.len()
            }),
            "{size}"
        );
    }
    let mut buf = [0u8; 512];
    assert_eq!(script.render(&mut buf[..want.len()]), Ok(want.len()));
}

#[test]
fn a_full_fmt_sink_is_an_error_not_a_panic() {
    let mut s = heapless::String::<16>::new();
    assert_eq!(Script::Default.write_to(&mut s), Err(RenderError::SinkFull));
}
