#![no_main]
//! Arbitrary host fields → script renderer. Rendering must never panic, and
//! whatever it accepts must be a script with exactly the commands the kind
//! implies: no value may add a line, a command separator, a comment or a
//! line continuation.

use std::net::Ipv4Addr;

use sanboot_core::ipxe::{
    expand_initiator_iqn, mac_from_script_name, validate_iscsi_name, Chap, DirectEntry, HostBoot,
    Initramfs, IscsiDisk, RenderError, Script,
};

fn fields(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Checks a rendered script against the command words it must consist of.
fn check(text: &str, expected: &[&[&str]]) {
    assert!(text.starts_with("#!ipxe\n"), "{text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), expected.len(), "{text:?}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(!line.ends_with('\\'), "{line:?}");
        assert!(!line.contains('\r'), "{line:?}");
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        for (i, w) in want.iter().enumerate() {
            assert_eq!(words.get(i), Some(w), "{text:?}");
        }
        // Only the words a command owns may be separators or comments: none.
        for w in &words {
            assert!(!matches!(*w, "||" | "&&" | ";"), "{text:?}");
            assert!(!w.starts_with('#'), "{text:?}");
        }
    }
}

/// Renders into exactly `rendered_len()` bytes (the direct form of a host
/// is longer than its own script: no fixed buffer size fits every input).
fn render_checked(script: &Script<'_>) -> Result<String, RenderError> {
    let len = script.rendered_len()?;
    let mut buf = vec![0u8; len];
    assert_eq!(script.render(&mut buf), Ok(len));
    if len > 0 {
        let mut small = vec![0u8; len - 1];
        assert_eq!(
            script.render(&mut small),
            Err(RenderError::InsufficientSize { required: len })
        );
    }
    Ok(String::from_utf8(buf[..len].to_vec()).expect("scripts are UTF-8"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (head, rest) = data.split_at(data.len().min(8));
    let mut h = [0u8; 8];
    h[..head.len()].copy_from_slice(head);
    let [kind, flags, lun_lo, lun_hi, port_lo, port_hi, ip, mac_last] = h;
    let f = fields(rest);
    let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");

    let template = get(0);
    let hostname = Some(get(1)).filter(|_| flags & 1 != 0);
    let target = get(2);
    let (user, secret, muser, msecret) = (get(3), get(4), get(5), get(6));
    let url = get(7);
    let initrd = Some(get(8)).filter(|_| flags & 2 != 0);
    let cmdline = get(9);
    let root_path = Some(get(10)).filter(|_| flags & 4 != 0);
    let mac = [0x52, 0x54, 0, 0xe2, 0xe0, mac_last];

    let _ = validate_iscsi_name(template);
    let _ = mac_from_script_name(template);
    let initiator: String = match expand_initiator_iqn(template, hostname, mac) {
        Ok(iqn) => {
            assert_eq!(validate_iscsi_name(&iqn), Ok(()));
            iqn.as_str().to_owned()
        }
        // Exercise the renderer with the raw template too: it must refuse
        // whatever the expansion would have refused.
        Err(_) => template.to_owned(),
    };

    let chap = (flags & 8 != 0).then_some(Chap {
        user,
        secret,
        mutual: (flags & 16 != 0).then_some((muser, msecret)),
    });
    let disk = IscsiDisk {
        server: Ipv4Addr::new(192, 0, 2, ip),
        port: u16::from_le_bytes([port_lo, port_hi]),
        lun: u64::from(u16::from_le_bytes([lun_lo, lun_hi])),
        target_iqn: target,
        initiator_iqn: &initiator,
        chap,
    };
    let keep_san = flags & 32 != 0;
    let boot = match kind % 3 {
        0 => HostBoot::Sanboot { disk, keep_san },
        1 => HostBoot::Kernel {
            disk,
            initramfs: match kind / 3 % 4 {
                0 => Initramfs::Genkernel,
                1 => Initramfs::Dracut,
                2 => Initramfs::InitramfsTools,
                _ => Initramfs::Ibft,
            },
            kernel: url,
            initrd,
            cmdline,
        },
        _ => HostBoot::Chain { url },
    };

    let mut want: Vec<&[&str]> = Vec::new();
    let settings = |want: &mut Vec<&[&str]>| {
        want.push(&["set", "initiator-iqn"]);
        if let Some(c) = chap {
            want.push(&["set", "username"]);
            want.push(&["set", "password"]);
            if c.mutual.is_some() {
                want.push(&["set", "reverse-username"]);
                want.push(&["set", "reverse-password"]);
            }
        }
    };
    match boot {
        HostBoot::Sanboot { .. } => {
            settings(&mut want);
            if keep_san {
                want.push(&["set", "keep-san", "1"]);
            }
            want.push(&["sanboot"]);
        }
        HostBoot::Kernel { initramfs, .. } => {
            if initramfs == Initramfs::Ibft {
                settings(&mut want);
                want.push(&["sanhook"]);
            }
            want.push(&["kernel"]);
            if initrd.is_some() {
                want.push(&["initrd"]);
            }
            want.push(&["boot"]);
        }
        HostBoot::Chain { .. } => want.push(&["chain"]),
    }

    let script = Script::Host(boot);
    if let Ok(text) = render_checked(&script) {
        check(&text, &want);
        // Words that carry exactly one value stay one word.
        let last = text.lines().filter(|l| l.starts_with("sanboot ")).count();
        assert!(last <= 1);
        for line in text
            .lines()
            .filter(|l| l.starts_with("set ") || l.starts_with("sanboot "))
        {
            let n = line.split(' ').count();
            assert!(n == 2 || n == 3, "{line:?}");
        }
        // The same host in the direct form dispatches to exactly one section.
        let entries = [DirectEntry { mac, boot }];
        let direct = render_checked(&Script::Direct(&entries)).expect("validated host");
        let mut dwant: Vec<&[&str]> = vec![&["iseq"], &["echo"], &["exit", "1"], &[]];
        dwant.extend(want.iter().copied());
        dwant.push(&["exit"]);
        // The label line is ":<mac>", one word.
        let direct_lines: Vec<&str> = direct.lines().collect();
        assert!(direct_lines
            .get(4)
            .is_some_and(|l| l.starts_with(':') && !l.contains(' ')));
        assert_eq!(direct_lines.len(), dwant.len() + 1, "{direct:?}");
    }

    let seed = Script::Boot { root_path };
    if let Ok(text) = render_checked(&seed) {
        check(&text, &[&["chain"]]);
        assert!(text.trim_end().ends_with("default.ipxe"));
        assert_eq!(text.lines().nth(1).map(|l| l.split(' ').count()), Some(2));
    }
});
