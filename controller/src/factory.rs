//! One place that turns a class's settings into its provider, and into the controller-side
//! wiring that provider needs (the l2 provider's IP pools).

use crate::cli::ClassSpec;
use crate::metrics::ClassMetrics;
use crate::pools::L2Pools;
use crate::run::Extension;
use anyhow::Context;
use berth_providers::Provider;
use berth_providers::aws::budget::{ApiEvent, ApiMetricsHook};
use berth_providers::aws::{AwsProvider, AwsProviderConfig};
use berth_providers::http::{HttpProvider, HttpProviderConfig, MetricsHook};
use berth_providers::l2::L2Provider;
use std::sync::Arc;

/// The providers berth ships: `--provider` and `provider:` in the config file.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// berth's LB API over HTTP(S) (docs/http-provider.openapi.yaml).
    Http,
    /// AWS Network Load Balancers.
    Aws,
    /// Addresses from IPAddressPools, announced by `berth speaker` (ARP/NDP).
    L2,
}

impl ProviderKind {
    /// Its name as written on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Http => "http",
            ProviderKind::Aws => "aws",
            ProviderKind::L2 => "l2",
        }
    }

    /// Parses a provider name as written in the config file.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).map_err(|_| {
            anyhow::anyhow!("provider {s:?} is not supported; supported: \"http\", \"aws\", \"l2\"")
        })
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A class's provider and what the controller must run beside it.
pub struct Built {
    pub provider: Arc<dyn Provider>,
    /// The l2 provider's IP pools; none for the others.
    pub extension: Option<Arc<dyn Extension>>,
}

/// Builds the provider of one class, reporting its requests to `metrics`.
pub fn build(spec: &ClassSpec, metrics: ClassMetrics) -> anyhow::Result<Built> {
    let provider: Arc<dyn Provider> = match spec.provider {
        ProviderKind::Http => {
            let endpoint = spec.http_endpoint.clone().with_context(|| {
                format!(
                    "--http-endpoint (httpEndpoint) is required for class {} with provider http",
                    spec.class
                )
            })?;
            let mut cfg = HttpProviderConfig::new(endpoint);
            cfg.token_file = spec.http_token_file.clone();
            cfg.ca_bundle = spec.http_ca_bundle.clone();
            if let Some(t) = spec.http_timeout {
                cfg.timeout = t;
            }
            let hook: MetricsHook = Arc::new(move |op, outcome, _took| {
                metrics.provider_request("http", op, outcome);
            });
            Arc::new(
                HttpProvider::new(cfg)
                    .context("Cannot set up the http provider")?
                    .with_metrics(hook),
            )
        }
        ProviderKind::Aws => {
            let region = spec
                .aws_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .with_context(|| {
                    format!(
                        "--aws-region (awsRegion) is required for class {} with provider aws",
                        spec.class
                    )
                })?;
            let mut cfg = AwsProviderConfig::new(region);
            cfg.endpoint = spec.aws_endpoint.clone();
            cfg.adopt = spec.adopt.clone();
            cfg.adopt_cluster_id = spec.adopt_cluster_id.clone();
            if let Some(r) = spec.resync {
                cfg.full_read_every = r;
            }
            let b = spec.aws_budget;
            cfg.elb_rate = b.elb_rate.unwrap_or(cfg.elb_rate);
            cfg.elb_burst = b.elb_burst.unwrap_or(cfg.elb_burst);
            cfg.ec2_rate = b.ec2_rate.unwrap_or(cfg.ec2_rate);
            cfg.ec2_burst = b.ec2_burst.unwrap_or(cfg.ec2_burst);
            let hook: ApiMetricsHook = Arc::new(move |e| match e {
                ApiEvent::Request { op, outcome, .. } => {
                    metrics.provider_request("aws", op, outcome)
                }
                ApiEvent::Wait { api, reason, took } => {
                    metrics.provider_wait("aws", api, reason, took)
                }
            });
            Arc::new(
                AwsProvider::new(cfg)
                    .context("Cannot set up the aws provider")?
                    .with_metrics(hook),
            )
        }
        ProviderKind::L2 => {
            let l2 = Arc::new(L2Provider::new());
            return Ok(Built {
                extension: Some(Arc::new(L2Pools::new(l2.clone()))),
                provider: l2,
            });
        }
    };
    Ok(Built {
        provider,
        extension: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for k in [ProviderKind::Http, ProviderKind::Aws, ProviderKind::L2] {
            assert_eq!(ProviderKind::parse(k.name()).unwrap(), k);
        }
        let e = ProviderKind::parse("gce").unwrap_err().to_string();
        assert!(e.contains("\"gce\" is not supported"), "{e}");
        assert!(ProviderKind::parse("HTTP").is_err(), "names are lowercase");
    }
}
