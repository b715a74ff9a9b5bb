//! iscsi service (placeholder: being written).

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::watch;

use crate::config::Config;

/// Runs the iscsi service until `stop` turns true.
pub async fn run(config: Arc<Config>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let _ = config;
    let _ = stop.wait_for(|s| *s).await;
    Ok(())
}
