//! The iPXE scripts TFTP serves from memory: the seed chain and each
//! host's script, rendered from the config by `sanboot_config::script`.

use sanboot_core::ipxe::{mac_from_script_name, HexHyp, Script, DEFAULT_SCRIPT};

use crate::config::script::{render_direct, render_host, script_dir, to_string};
use crate::config::Config;

/// A file TFTP serves from memory instead of from its root: the seed chain
/// (`boot.ipxe`, `default.ipxe`) and each host's `<mac-hexhyp>.ipxe`.
/// `path` is the request as the client sent it, already normalised by TFTP
/// (no leading `/`, `\` turned into `/`). `None` means "not a virtual file".
///
/// `default.ipxe` and `<mac>.ipxe` are found under the root path directory
/// and at the top; names compare case-insensitively. An unknown MAC is
/// `None`, so the client gets "file not found" and `default.ipxe` explains.
pub fn virtual_file(config: &Config, path: &str) -> Option<Vec<u8>> {
    let path = path.trim_start_matches('/');
    if path.eq_ignore_ascii_case(config.boot.script.trim_start_matches('/')) {
        let rendered = if config.boot.direct {
            render_direct(config)
        } else {
            to_string(Script::Boot {
                root_path: config.boot.root_path.as_deref(),
            })
        };
        return match rendered {
            Ok(text) => Some(text.into_bytes()),
            Err(e) => {
                tracing::warn!(file = path, "cannot render the boot script: {e}");
                None
            }
        };
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if !dir.is_empty() && !dir.eq_ignore_ascii_case(&script_dir(config)) {
        return None;
    }
    if name.eq_ignore_ascii_case(DEFAULT_SCRIPT) {
        return to_string(Script::Default).ok().map(String::into_bytes);
    }
    let mac = mac_from_script_name(name)?;
    let Some(host) = config.host(mac) else {
        tracing::info!(mac = %HexHyp(mac), "no [[host]] for this MAC: script not found");
        return None;
    };
    match render_host(config, host) {
        Ok(text) => Some(text.into_bytes()),
        Err(e) => {
            tracing::warn!(mac = %HexHyp(mac), "cannot render the host's script: {e}");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
            [server]
            address = "192.0.2.1"
            interface = "br0"
            [boot]
            root_path = "/scripts"
            initiator_iqn = "iqn.2007-11.ru.pp.livid:%hostname%-%mac%"
            [[target]]
            iqn = "iqn.2024-01.test.e2e:sanboot"
            [[target.lun]]
            id = 1
            image = "/nonexistent/disk.img"
            size = 16777216
            [[host]]
            mac = "52:54:00:E2:E0:01"
            hostname = "pc1"
            target = "iqn.2024-01.test.e2e:sanboot"
            lun = 1
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        c
    }

    const PC1: &str = "#!ipxe\nset initiator-iqn iqn.2007-11.ru.pp.livid:pc1-52-54-00-e2-e0-01\n\
                       sanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n";

    fn text(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn tftp_serves_the_whole_chain() {
        let c = config();
        assert_eq!(
            text(virtual_file(&c, "boot.ipxe")).as_deref(),
            Some("#!ipxe\nchain /scripts/default.ipxe\n")
        );
        let default = text(virtual_file(&c, "scripts/default.ipxe")).unwrap();
        assert!(default.starts_with("#!ipxe\nchain ${mac:hexhyp}.ipxe || goto failed\n"));
        assert_eq!(
            text(virtual_file(&c, "scripts/52-54-00-e2-e0-01.ipxe")).as_deref(),
            Some(PC1)
        );
        assert_eq!(
            text(virtual_file(&c, "SCRIPTS/52-54-00-E2-E0-01.IPXE")).as_deref(),
            Some(PC1)
        );
        assert_eq!(
            text(virtual_file(&c, "52-54-00-e2-e0-01.ipxe")).as_deref(),
            Some(PC1)
        );
        assert_eq!(virtual_file(&c, "scripts/52-54-00-e2-e0-02.ipxe"), None);
        assert_eq!(virtual_file(&c, "other/52-54-00-e2-e0-01.ipxe"), None);
        assert_eq!(virtual_file(&c, "undionly.kpxe"), None);
    }

    #[test]
    fn direct_mode_serves_one_file() {
        let mut c = config();
        c.boot.direct = true;
        let boot = text(virtual_file(&c, "boot.ipxe")).unwrap();
        assert!(boot.starts_with(
            "#!ipxe\niseq ${mac:hexhyp} 52-54-00-e2-e0-01 && goto 52-54-00-e2-e0-01 ||\n"
        ));
        assert!(boot.contains("\nsanboot iscsi:192.0.2.1:::1:iqn.2024-01.test.e2e:sanboot\n"));
    }
}
