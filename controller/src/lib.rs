//! berth: gives Kubernetes Services of `type: LoadBalancer` a real external load balancer.

pub mod admin;
pub mod annotation_check;
pub mod cli;
pub mod compat;
pub mod desired;
pub mod endpoints;
pub mod events;
pub mod factory;
pub mod gc;
pub mod kube_util;
pub mod leader;
pub mod metrics;
pub mod node_sync;
pub mod nodeports;
pub mod nodes;
pub mod pools;
pub mod ratelimit;
pub mod reconcile;
pub mod run;
pub mod service;
pub mod status;
pub mod text;

/// Installs the process-wide rustls crypto provider (ring, as kube, reqwest and the AWS SDK
/// are built with). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
