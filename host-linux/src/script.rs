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
