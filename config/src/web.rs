//! `[web]`: the status page, `/api/stations` and `/metrics`.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[web]`. Off unless `listen` is set: the page shows every station's
/// MAC, address and disks, so an administrator chooses where it is seen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Address and port of the HTTP listener, e.g. `"127.0.0.1:8080"`.
    pub listen: Option<SocketAddr>,
    /// Bearer token that requests changing state must carry
    /// (`Authorization: Bearer <token>`); without one they are refused.
    /// Reading the page, the API and the metrics needs none.
    pub token: Option<String>,
}
