//! iPXE scripts for `sanboot script` and the TFTP virtual files (placeholder: being written).

use anyhow::Result;

use crate::config::Config;

/// Problems a boot would hit that the config is still valid without.
pub fn check_warnings(config: &Config) -> Vec<String> {
    let _ = config;
    Vec::new()
}

/// The script a machine with this MAC gets.
pub fn render_for_mac(config: &Config, mac: [u8; 6]) -> Result<String> {
    let _ = (config, mac);
    anyhow::bail!("not written yet")
}

/// A file TFTP serves from memory instead of from its root: the seed chain
/// (`boot.ipxe`, `default.ipxe`) and each host's `<mac-hexhyp>.ipxe`.
/// `path` is the request as the client sent it, already normalised by TFTP
/// (no leading `/`, `\` turned into `/`). `None` means "not a virtual file".
pub fn virtual_file(config: &Config, path: &str) -> Option<Vec<u8>> {
    let _ = (config, path);
    None
}
