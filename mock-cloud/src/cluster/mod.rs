//! Simulated nodes and pods with a real data path. (Placeholder interface; being built.)

use crate::apiserver::ApiCore;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::sync::watch;

/// Where the simulated cluster lives: every address is inside 127.{block}.0.0/16.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub ip_block: u8,
    pub initial_nodes: usize,
}

pub struct Cluster {
    pub cfg: ClusterConfig,
    pub core: Arc<ApiCore>,
}

impl Cluster {
    pub async fn start(
        core: Arc<ApiCore>,
        cfg: ClusterConfig,
        _shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Cluster> {
        Ok(Cluster { cfg, core })
    }

    /// The InternalIP of node number `index` (0-based).
    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, self.cfg.ip_block, 1, (index + 1) as u8)
    }

    pub async fn shutdown(self) {}
}

impl Cluster {
    /// Human-readable lines saying where the simulated nodes listen.
    pub fn describe(&self) -> Vec<String> {
        (0..self.cfg.initial_nodes)
            .map(|i| format!("node-{} at {}", i + 1, self.node_ip(i)))
            .collect()
    }
}
