//! Where CHAP secrets could be read by someone they do not belong to, for
//! `sanboot check`: a config file others can read, scripts the TFTP server
//! would hand to anyone, weak or reused secrets, and targets that per-host
//! secrets do not actually close.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::script::carries_secret;
use crate::stations::learns_addresses;
use crate::{BootKind, Chap, Config, Host};

/// RFC 7143 §12.1.3: CHAP secrets should be at least 12 bytes (96 bits).
const MIN_CHAP_SECRET_LEN: usize = 12;

fn has_secrets(config: &Config) -> bool {
    config.targets.iter().any(|t| t.chap.is_some()) || config.hosts.iter().any(|h| h.chap.is_some())
}

fn name(host: &Host) -> &str {
    host.hostname.as_deref().unwrap_or(&host.mac)
}

/// The config file holds secrets and its group or others may read it.
pub fn file_mode_warning(config: &Config, path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (has_secrets(config) && mode & 0o044 != 0).then(|| {
        format!(
            "{}: holds CHAP secrets and is readable by {} (mode {:04o}); \
             chmod 600 it (or 640 with a group only sanboot's user is in)",
            path.display(),
            if mode & 0o004 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        )
    })
}

/// Secret quality: length, a half-set mutual pair, a reused secret.
pub(crate) fn chap_quality(what: &str, chap: &Chap, w: &mut Vec<String>) {
    if chap.secret.len() < MIN_CHAP_SECRET_LEN {
        w.push(format!(
            "{what}: CHAP secret is shorter than {MIN_CHAP_SECRET_LEN} bytes \
             (RFC 7143 12.1.3); many initiators refuse it"
        ));
    }
    match (&chap.mutual_user, &chap.mutual_secret) {
        (Some(_), None) | (None, Some(_)) => w.push(format!(
            "{what}: mutual CHAP needs both mutual_user and mutual_secret; it is off"
        )),
        (Some(_), Some(ms)) if *ms == chap.secret => w.push(format!(
            "{what}: mutual_secret equals secret (RFC 7143 forbids reusing it)"
        )),
        _ => {}
    }
}

/// Scripts with secrets that would go to anyone, and per-host secrets that
/// leave their target open to everyone else.
pub fn script_warnings(config: &Config, w: &mut Vec<String>) {
    for host in &config.hosts {
        if let Some(chap) = &host.chap {
            chap_quality(&format!("[[host]] {} [host.chap]", name(host)), chap, w);
        }
    }
    let secret_hosts: Vec<&Host> = config
        .hosts
        .iter()
        .filter(|h| carries_secret(config, h))
        .collect();
    if !secret_hosts.is_empty() && !learns_addresses(config) {
        let why = "[dhcp] mode = \"off\": sanboot never sees a station's address";
        for h in &secret_hosts {
            w.push(format!(
                "[[host]] {}: its script carries a CHAP secret and {why}; TFTP gives its \
                 {}.ipxe to anyone who asks",
                name(h),
                h.mac.replace(':', "-").to_ascii_lowercase()
            ));
        }
    }
    if config.boot.direct && !secret_hosts.is_empty() {
        w.push(format!(
            "[boot] direct = true: {} holds the CHAP secrets of {} host(s) and goes to anyone \
             who asks; use the chain (direct = false) so each script goes only to its station",
            config.boot.script,
            secret_hosts.len()
        ));
    }
    for t in &config.targets {
        if t.chap.is_some() || !t.initiators.is_empty() {
            continue;
        }
        let guarded: Vec<&str> = config
            .hosts
            .iter()
            .filter(|h| {
                h.chap.is_some()
                    && h.boot != BootKind::Chain
                    && h.target
                        .as_deref()
                        .is_some_and(|i| i.eq_ignore_ascii_case(&t.iqn))
            })
            .map(name)
            .collect();
        if !guarded.is_empty() {
            w.push(format!(
                "[[target]] {}: [host.chap] of {} applies to their initiator names only; \
                 any other initiator logs in without a secret (give the target an \
                 `initiators` list or its own chap)",
                t.iqn,
                guarded.join(", ")
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::script::check_warnings;

    fn config(dhcp: &str, extra: &str) -> Config {
        let text = format!(
            r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [dhcp]
            {dhcp}
            [[target]]
            iqn = "iqn.2024-01.test:a"
            [[target.lun]]
            id = 0
            image = "/nonexistent/a.img"
            size = 16777216
            [[host]]
            mac = "52:54:00:00:00:01"
            hostname = "pc1"
            target = "iqn.2024-01.test:a"
            initiator_iqn = "iqn.2024-01.test:pc1"
            [host.chap]
            user = "pc1"
            secret = "pc1-secret-123"
            {extra}
            "#
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    fn warnings(c: &Config) -> String {
        let mut w = Vec::new();
        script_warnings(c, &mut w);
        w.join("\n")
    }

    #[test]
    fn dhcp_off_means_scripts_go_to_anyone() {
        let w = warnings(&config("mode = \"off\"", ""));
        assert!(
            w.contains("[[host]] pc1: its script carries a CHAP secret"),
            "{w}"
        );
        assert!(w.contains("never sees a station's address"), "{w}");
        assert!(w.contains("52-54-00-00-00-01.ipxe to anyone"), "{w}");
        // Proxy mode sees the station's REQUEST to the router, 4011 or not.
        for proxy in ["mode = \"proxy\"", "mode = \"proxy\"\npxe_port = false"] {
            let w = warnings(&config(proxy, ""));
            assert!(!w.contains("to anyone"), "{w}");
        }
    }

    #[test]
    fn an_open_target_behind_host_chap_is_flagged() {
        let w = warnings(&config("mode = \"proxy\"", ""));
        assert!(
            w.contains("any other initiator logs in without a secret"),
            "{w}"
        );
        let mut c = config("mode = \"proxy\"", "");
        c.targets[0].initiators = vec!["iqn.2024-01.test:pc1".into()];
        assert_eq!(warnings(&c), "");
        // And through `sanboot check`.
        let c = config("mode = \"proxy\"", "");
        assert!(check_warnings(&c)
            .iter()
            .any(|l| l.contains("logs in without a secret")));
    }

    #[test]
    fn direct_mode_and_weak_host_secrets_are_flagged() {
        let mut c = config("mode = \"proxy\"", "");
        c.boot.direct = true;
        assert!(warnings(&c).contains("[boot] direct = true"));
        let mut c = config("mode = \"proxy\"", "");
        let chap = c.hosts[0].chap.as_mut().unwrap();
        chap.secret = "short".into();
        chap.mutual_user = Some("tgt".into());
        let w = warnings(&c);
        assert!(
            w.contains("[[host]] pc1 [host.chap]: CHAP secret is shorter"),
            "{w}"
        );
        assert!(
            w.contains("needs both mutual_user and mutual_secret"),
            "{w}"
        );
    }

    #[test]
    fn a_readable_config_with_secrets_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sanboot.toml");
        std::fs::write(&path, "").unwrap();
        let c = config("mode = \"proxy\"", "");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = file_mode_warning(&c, &path).unwrap();
        assert!(w.contains("readable by everyone (mode 0644)"), "{w}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(file_mode_warning(&c, &path).unwrap().contains("its group"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(file_mode_warning(&c, &path), None);
        // No secrets, nothing to say.
        let mut c = c;
        c.hosts[0].chap = None;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(file_mode_warning(&c, &path), None);
    }
}
