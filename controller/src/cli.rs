//! `berth controller` flags and config file. A flag given on the command line wins over the
//! config file, which wins over the default.

use crate::factory::ProviderKind;
use crate::leader::LeaseSettings;
use crate::reconcile::Settings;
use crate::run::{ControllerOptions, default_class};
use crate::service::{ClassFilter, lease_name_for};
use anyhow::{Context, bail};
use berth_providers::adopt::AdoptFrom;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use berth_api::duration::{MAX_DURATION, parse_duration};

/// Parses a `FROM-TO` port range.
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let err = || format!("invalid port range {s:?}: expected FROM-TO, e.g. 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(err)?;
    let a: u16 = a.trim().parse().map_err(|_| err())?;
    let b: u16 = b.trim().parse().map_err(|_| err())?;
    if a == 0 || a > b {
        return Err(err());
    }
    Ok(a..=b)
}

/// `berth controller`'s settings: flags, and the same keys in camelCase in the `--config`
/// file (a flag given on the command line wins).
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerArgs {
    /// Config file (YAML); keys as the flags, in camelCase (e.g. `httpEndpoint: ...`).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// kubeconfig to use; without it, in-cluster config (or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The provider.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// The http provider's API, e.g. https://lb-api.example:8443.
    #[arg(long)]
    pub http_endpoint: Option<String>,
    /// File holding the bearer token for the http provider's API (re-read on every call).
    #[arg(long)]
    pub http_token_file: Option<PathBuf>,
    /// PEM CA bundle to trust for the http provider's API.
    #[arg(long)]
    pub http_ca_bundle: Option<PathBuf>,
    /// Timeout of one http provider call.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub http_timeout: Option<Duration>,
    /// The aws provider's region, e.g. us-east-1.
    #[arg(long)]
    pub aws_region: Option<String>,
    /// Overrides the AWS endpoints (ELBv2 and EC2), e.g. http://127.0.0.1:5000 for moto.
    #[arg(long)]
    pub aws_endpoint: Option<String>,
    /// ELBv2 calls per second berth allows itself, shared by all workers. Default: 10 (AWS's
    /// documented refill rate for an account's Describe* calls).
    #[arg(long)]
    pub aws_elb_rate: Option<f64>,
    /// ELBv2 calls berth may send in a burst. Default: 40 (AWS's bucket size).
    #[arg(long)]
    pub aws_elb_burst: Option<u32>,
    /// EC2 calls per second. Default: 20 (AWS's refill rate for non-mutating calls).
    #[arg(long)]
    pub aws_ec2_rate: Option<f64>,
    /// EC2 calls in a burst. Default: 100.
    #[arg(long)]
    pub aws_ec2_burst: Option<u32>,
    /// Name of this cluster; tags every cloud resource berth creates, and garbage collection
    /// only ever deletes what carries it. Default: the uid of the `kube-system` namespace
    /// (unique per cluster). Give `kubernetes` to keep load balancers created by berth
    /// versions whose default was that name.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// The loadBalancerClass served. Default: `berth.io/<provider>`.
    #[arg(long)]
    pub class: Option<String>,
    /// Also serve Services without a loadBalancerClass.
    #[arg(long)]
    #[serde(default)]
    pub default_class: bool,
    /// Reconciles at once. Default: 16 (upstream's service controller runs 1).
    #[arg(long)]
    pub workers: Option<u16>,
    /// Re-check every load balancer against the cloud this often. Default: 5m.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub resync: Option<Duration>,
    /// Writes per second to the Kubernetes API server after a burst, as client-go's
    /// --kube-api-qps; 0 disables the limit. Default: 500 (see docs/scaling.md).
    #[arg(long)]
    pub kube_api_qps: Option<f64>,
    /// Writes the API server may receive at once before --kube-api-qps applies. Default: 1000.
    #[arg(long)]
    pub kube_api_burst: Option<u32>,
    /// A change of the node set is applied to every load balancer once the Nodes have been
    /// quiet this long (a burst of node events costs one write per load balancer). Default: 500ms.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub node_sync_quiet: Option<Duration>,
    /// ... or this long after the first change of a burst that never quiets down. Default: 10s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub node_sync_max_delay: Option<Duration>,
    /// Orphan garbage collection interval. Default: 5m.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub gc_interval: Option<Duration>,
    /// At most this many orphaned load balancers are deleted per garbage-collection pass. Default: 10.
    #[arg(long)]
    pub gc_max_deletes: Option<usize>,
    /// Bound on every Kubernetes API request other than watches. Default: 30s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub request_timeout: Option<Duration>,
    /// First retry delay after a failure (doubles up to --retry-max). Default: 1s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub retry_min: Option<Duration>,
    /// Longest retry delay. Default: 5m.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub retry_max: Option<Duration>,
    /// NodePort range berth allocates from when a Service disables allocation. Default: 30000-32767.
    #[arg(long, value_parser = parse_port_range)]
    #[serde(default, deserialize_with = "de_port_range")]
    pub node_port_range: Option<std::ops::RangeInclusive<u16>>,
    /// Run leader election (for more than one replica). Default: true.
    #[arg(long)]
    pub leader_elect: Option<bool>,
    /// Namespace of the leader Lease. Default: $POD_NAMESPACE or `kube-system`.
    #[arg(long)]
    pub leader_elect_namespace: Option<String>,
    /// Name of the leader Lease. Default: `berth-<class, '/' as '.'>`, one per class.
    #[arg(long)]
    pub leader_elect_lease_name: Option<String>,
    /// How long a leader's lease lasts without renewal; a standby takes over after it. Default: 15s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub leader_elect_lease_duration: Option<Duration>,
    /// A leader that cannot renew for this long steps down. Default: 10s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub leader_elect_renew_deadline: Option<Duration>,
    /// How often the leader renews and standbys retry. Default: 2s.
    #[arg(long, value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub leader_elect_retry_period: Option<Duration>,
    /// This replica's identity. Default: $POD_NAME or the hostname.
    #[arg(long)]
    pub identity: Option<String>,
    /// Address of /metrics, /healthz and /readyz. Default: 0.0.0.0:8080; `off` disables.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Take over the load balancers another controller made (repeatable or a comma list):
    /// `ccm-aws` (the legacy AWS cloud provider's NLBs), `aws-lbc` (the AWS Load Balancer
    /// Controller's NLBs), `metallb` (keep the addresses MetalLB assigned). See
    /// docs/adopting.md.
    #[arg(long, value_delimiter = ',', value_parser = AdoptFrom::parse)]
    #[serde(default, deserialize_with = "de_adopt")]
    pub adopt: Vec<AdoptFrom>,
    /// The cluster id the previous owner tagged its load balancers with
    /// (`kubernetes.io/cluster/<id>`, `elbv2.k8s.aws/cluster`). Default: --cluster-name.
    #[arg(long)]
    pub adopt_cluster_id: Option<String>,
    /// Several classes served by one process (config file only); instead of the
    /// single-class settings.
    #[arg(skip)]
    #[serde(default)]
    pub classes: Vec<ClassConfig>,
}

/// One class of a multi-class config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassConfig {
    pub class: Option<String>,
    pub provider: Option<String>,
    pub default_class: Option<bool>,
    pub http_endpoint: Option<String>,
    pub http_token_file: Option<PathBuf>,
    pub http_ca_bundle: Option<PathBuf>,
    pub http_timeout: Option<String>,
    pub aws_region: Option<String>,
    pub aws_endpoint: Option<String>,
    pub aws_elb_rate: Option<f64>,
    pub aws_elb_burst: Option<u32>,
    pub aws_ec2_rate: Option<f64>,
    pub aws_ec2_burst: Option<u32>,
    pub workers: Option<u16>,
    pub leader_elect_lease_name: Option<String>,
}

/// One class to serve, and its provider's settings.
#[derive(Debug, Clone)]
pub struct ClassSpec {
    pub provider: ProviderKind,
    pub class: String,
    pub default_class: bool,
    pub http_endpoint: Option<String>,
    pub http_token_file: Option<PathBuf>,
    pub http_ca_bundle: Option<PathBuf>,
    pub http_timeout: Option<Duration>,
    pub aws_region: Option<String>,
    pub aws_endpoint: Option<String>,
    /// The aws provider's API budget.
    pub aws_budget: AwsBudget,
    pub workers: Option<u16>,
    pub lease_name: Option<String>,
    /// Controllers whose load balancers are taken over.
    pub adopt: Vec<AdoptFrom>,
    /// The previous owner's cluster id (None: the cluster name).
    pub adopt_cluster_id: Option<String>,
    /// The drift resync (`--resync`): how long a provider may trust what it last wrote.
    pub resync: Option<Duration>,
}

/// The aws provider's API budget as configured (unset: AWS's documented rates).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AwsBudget {
    pub elb_rate: Option<f64>,
    pub elb_burst: Option<u32>,
    pub ec2_rate: Option<f64>,
    pub ec2_burst: Option<u32>,
}

fn dur(field: &str, v: Option<String>) -> anyhow::Result<Option<Duration>> {
    v.map(|s| parse_duration(&s).map_err(|e| anyhow::anyhow!("{field}: {e}")))
        .transpose()
}

/// A config-file duration, in the flags' syntax.
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A config-file `adopt`: a list, or one comma-separated string as the flag takes it.
fn de_adopt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<AdoptFrom>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| AdoptFrom::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A config-file port range, in the flag's syntax.
fn de_port_range<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::ops::RangeInclusive<u16>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_port_range(&s).map_err(serde::de::Error::custom))
        .transpose()
}

impl ControllerArgs {
    /// Fills flags not given on the command line from the config file.
    pub fn merge_file(mut self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("Cannot read config file {}", path.display()))?;
        let f: ControllerArgs = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("Invalid config file {}: {e}", path.display()))?;
        macro_rules! fill {
            ($($field:ident),* $(,)?) => {$(
                if self.$field.is_none() {
                    self.$field = f.$field;
                }
            )*};
        }
        fill!(
            kubeconfig,
            provider,
            http_endpoint,
            http_token_file,
            http_ca_bundle,
            http_timeout,
            aws_region,
            aws_endpoint,
            aws_elb_rate,
            aws_elb_burst,
            aws_ec2_rate,
            aws_ec2_burst,
            cluster_name,
            class,
            workers,
            resync,
            gc_interval,
            gc_max_deletes,
            request_timeout,
            kube_api_qps,
            kube_api_burst,
            node_sync_quiet,
            node_sync_max_delay,
            retry_min,
            retry_max,
            node_port_range,
            leader_elect,
            leader_elect_namespace,
            leader_elect_lease_name,
            leader_elect_lease_duration,
            leader_elect_renew_deadline,
            leader_elect_retry_period,
            identity,
            metrics_listen,
            adopt_cluster_id,
        );
        if self.adopt.is_empty() {
            self.adopt = f.adopt;
        }
        self.default_class |= f.default_class;
        if !f.classes.is_empty() {
            if self.provider.is_some() || self.class.is_some() {
                bail!(
                    "The config file {} lists classes; --provider and --class cannot be combined with it",
                    path.display()
                );
            }
            self.classes = f.classes;
        }
        Ok(self)
    }

    /// The provider, required.
    pub fn provider_kind(&self) -> anyhow::Result<ProviderKind> {
        self.provider.context(MISSING_PROVIDER)
    }

    /// The classes to serve: the config file's `classes:` list, or the one class of the
    /// flags.
    pub fn class_specs(&self) -> anyhow::Result<Vec<ClassSpec>> {
        let specs: Vec<ClassSpec> = if self.classes.is_empty() {
            let provider = self.provider_kind()?;
            vec![ClassSpec {
                class: self
                    .class
                    .clone()
                    .unwrap_or_else(|| default_class(provider.name())),
                provider,
                default_class: self.default_class,
                http_endpoint: self.http_endpoint.clone(),
                http_token_file: self.http_token_file.clone(),
                http_ca_bundle: self.http_ca_bundle.clone(),
                http_timeout: self.http_timeout,
                aws_region: self.aws_region.clone(),
                aws_endpoint: self.aws_endpoint.clone(),
                aws_budget: AwsBudget {
                    elb_rate: self.aws_elb_rate,
                    elb_burst: self.aws_elb_burst,
                    ec2_rate: self.aws_ec2_rate,
                    ec2_burst: self.aws_ec2_burst,
                },
                workers: self.workers,
                lease_name: self.leader_elect_lease_name.clone(),
                adopt: self.adopt.clone(),
                adopt_cluster_id: self.adopt_cluster_id.clone(),
                resync: self.resync,
            }]
        } else {
            if self.leader_elect_lease_name.is_some() {
                bail!(
                    "--leader-elect-lease-name names one Lease; with several classes give each its own leaderElectLeaseName"
                );
            }
            self.classes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let provider = c
                        .provider
                        .as_deref()
                        .context(MISSING_PROVIDER)
                        .and_then(ProviderKind::parse)
                        .with_context(|| format!("classes[{i}].provider"))?;
                    Ok(ClassSpec {
                        class: c
                            .class
                            .clone()
                            .unwrap_or_else(|| default_class(provider.name())),
                        provider,
                        default_class: c.default_class.unwrap_or(false),
                        http_endpoint: c.http_endpoint.clone(),
                        http_token_file: c.http_token_file.clone(),
                        http_ca_bundle: c.http_ca_bundle.clone(),
                        http_timeout: dur("httpTimeout", c.http_timeout.clone())
                            .with_context(|| format!("classes[{i}]"))?,
                        aws_region: c.aws_region.clone(),
                        aws_endpoint: c.aws_endpoint.clone(),
                        aws_budget: AwsBudget {
                            elb_rate: c.aws_elb_rate.or(self.aws_elb_rate),
                            elb_burst: c.aws_elb_burst.or(self.aws_elb_burst),
                            ec2_rate: c.aws_ec2_rate.or(self.aws_ec2_rate),
                            ec2_burst: c.aws_ec2_burst.or(self.aws_ec2_burst),
                        },
                        workers: c.workers.or(self.workers),
                        lease_name: c.leader_elect_lease_name.clone(),
                        adopt: self.adopt.clone(),
                        adopt_cluster_id: self.adopt_cluster_id.clone(),
                        resync: self.resync,
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in &specs {
            if s.class.trim().is_empty() {
                bail!("A class must not be empty");
            }
            if !seen.insert(s.class.clone()) {
                bail!(
                    "Class {:?} is listed twice; each class is served once",
                    s.class
                );
            }
        }
        if specs.iter().filter(|s| s.default_class).count() > 1 {
            bail!("Only one class can serve Services without a loadBalancerClass (defaultClass)");
        }
        Ok(specs)
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| format!("berth-{}", std::process::id()))
    }

    /// Where the admin endpoints listen.
    pub fn metrics_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        Ok(match self.metrics_listen.as_deref() {
            Some("off") => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!("--metrics-listen {a:?}: expected HOST:PORT or off")
            })?),
            None => Some("0.0.0.0:8080".parse().expect("valid")),
        })
    }

    /// Everything the controller runs with, for the single class of the flags.
    pub fn options(&self) -> anyhow::Result<ControllerOptions> {
        let specs = self.class_specs()?;
        match specs.as_slice() {
            [one] => self.options_for(one),
            _ => bail!("The config file lists several classes; use class_specs"),
        }
    }

    /// Everything one class's controller runs with. The cluster name is empty when not
    /// given: the controller then uses the `kube-system` namespace's uid.
    pub fn options_for(&self, spec: &ClassSpec) -> anyhow::Result<ControllerOptions> {
        let identity = self.identity();
        let leader = if self.leader_elect.unwrap_or(true) {
            let ns = self
                .leader_elect_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "kube-system".into());
            let name = spec
                .lease_name
                .clone()
                .unwrap_or_else(|| lease_name_for(&spec.class));
            let mut ls = LeaseSettings::new(&ns, &name, &identity);
            if let Some(d) = self.leader_elect_lease_duration {
                ls.lease_duration = d;
            }
            if let Some(d) = self.leader_elect_renew_deadline {
                ls.renew_deadline = d;
            }
            if let Some(d) = self.leader_elect_retry_period {
                ls.retry_period = d;
            }
            if ls.renew_deadline >= ls.lease_duration || ls.retry_period >= ls.renew_deadline {
                bail!(
                    "leader election needs retry period < renew deadline < lease duration (got {:?} < {:?} < {:?})",
                    ls.retry_period,
                    ls.renew_deadline,
                    ls.lease_duration
                );
            }
            Some(ls)
        } else {
            None
        };
        let workers = spec.workers.unwrap_or(16);
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(30));
        if request_timeout.is_zero() {
            bail!("--request-timeout must be more than 0");
        }
        let kube_api_qps = self.kube_api_qps.unwrap_or(500.0);
        if !kube_api_qps.is_finite() || kube_api_qps < 0.0 {
            bail!("--kube-api-qps must be 0 (no limit) or more");
        }
        let kube_api_burst = self.kube_api_burst.unwrap_or(1000);
        if kube_api_burst == 0 {
            bail!("--kube-api-burst must be at least 1");
        }
        let node_sync = crate::node_sync::NodeSyncSettings {
            quiet: self.node_sync_quiet.unwrap_or(Duration::from_millis(500)),
            max_delay: self.node_sync_max_delay.unwrap_or(Duration::from_secs(10)),
        };
        if node_sync.max_delay < node_sync.quiet {
            bail!("--node-sync-max-delay must not be shorter than --node-sync-quiet");
        }
        Ok(ControllerOptions {
            settings: Settings {
                cluster: self.cluster_name.clone().unwrap_or_default(),
                classes: ClassFilter::new(spec.class.clone(), spec.default_class),
                resync: self.resync.unwrap_or(Duration::from_secs(300)),
                retry_min: self.retry_min.unwrap_or(Duration::from_secs(1)),
                retry_max: self.retry_max.unwrap_or(Duration::from_secs(300)),
                node_port_range: self.node_port_range.clone().unwrap_or(30000..=32767),
                adopt: spec.adopt.clone(),
            },
            workers,
            gc_interval: self.gc_interval.unwrap_or(Duration::from_secs(300)),
            gc_max_deletes: self.gc_max_deletes.unwrap_or(10),
            leader,
            metrics_listen: self.metrics_listen()?,
            identity,
            request_timeout,
            node_sync,
            kube_api_qps,
            kube_api_burst,
        })
    }
}

const MISSING_PROVIDER: &str = "--provider is required (supported: \"http\", \"aws\", \"l2\")";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ranges_parse_strictly() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        let e = parse_duration("99999999999999999999h").unwrap_err();
        assert!(e.contains("at most 365 days"), "{e}");
        assert!(parse_duration("1e400").is_err());
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        assert_eq!(parse_port_range("30000-30010").unwrap(), 30000..=30010);
        assert!(parse_port_range("30010-30000").is_err());
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = std::env::temp_dir().join(format!("berth-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "provider: http\nhttpEndpoint: http://file\nworkers: 3\nresync: 1m\nclusterName: from-file\n",
        )
        .unwrap();
        let args = ControllerArgs {
            config: Some(f.clone()),
            workers: Some(7),
            ..Default::default()
        }
        .merge_file()
        .unwrap();
        assert_eq!(args.http_endpoint.as_deref(), Some("http://file"));
        let o = args.options().unwrap();
        assert_eq!(o.workers, 7);
        assert_eq!(o.settings.resync, Duration::from_secs(60));
        assert_eq!(o.settings.cluster, "from-file");
        assert_eq!(
            o.settings.classes.finalizer,
            "berth.io/cleanup.berth.io.http"
        );
        assert_eq!(o.leader.as_ref().unwrap().name, "berth-berth.io.http");
        assert_eq!(o.settings.classes.class, "berth.io/http");
        std::fs::write(&f, "provder: http\n").unwrap();
        let err = ControllerArgs {
            config: Some(f),
            ..Default::default()
        }
        .merge_file()
        .unwrap_err();
        assert!(err.to_string().contains("Invalid config file"), "{err}");
    }
    #[test]
    fn adopt_sources_come_from_flags_or_the_config_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ControllerArgs,
        }
        let t =
            T::try_parse_from(["t", "--adopt", "ccm-aws,metallb", "--adopt", "aws-lbc"]).unwrap();
        assert_eq!(
            t.a.adopt,
            vec![AdoptFrom::CcmAws, AdoptFrom::Metallb, AdoptFrom::AwsLbc]
        );
        let err = T::try_parse_from(["t", "--adopt", "ccm"]).err().unwrap();
        assert!(err.to_string().contains("ccm-aws"), "{err}");

        let dir = std::env::temp_dir().join(format!("berth-cli-adopt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        for (text, want) in [
            (
                "provider: aws\nadopt: [ccm-aws, aws-lbc]\nadoptClusterId: prod\n",
                vec![AdoptFrom::CcmAws, AdoptFrom::AwsLbc],
            ),
            (
                "provider: aws\nadopt: metallb,aws-lbc\n",
                vec![AdoptFrom::Metallb, AdoptFrom::AwsLbc],
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let a = ControllerArgs {
                config: Some(f.clone()),
                ..Default::default()
            }
            .merge_file()
            .unwrap();
            assert_eq!(a.adopt, want, "{text}");
            let spec = &a.class_specs().unwrap()[0];
            assert_eq!(spec.adopt, want);
            assert_eq!(a.options_for(spec).unwrap().settings.adopt, want);
        }
        assert_eq!(
            ControllerArgs {
                config: Some(f.clone()),
                adopt_cluster_id: Some("flag".into()),
                ..Default::default()
            }
            .merge_file()
            .unwrap()
            .adopt_cluster_id
            .as_deref(),
            Some("flag")
        );
        // A flag wins over the file.
        let a = ControllerArgs {
            config: Some(f.clone()),
            adopt: vec![AdoptFrom::CcmAws],
            ..Default::default()
        }
        .merge_file()
        .unwrap();
        assert_eq!(a.adopt, vec![AdoptFrom::CcmAws]);
        std::fs::write(&f, "provider: aws\nadopt: [ccm]\n").unwrap();
        let err = ControllerArgs {
            config: Some(f),
            ..Default::default()
        }
        .merge_file()
        .unwrap_err();
        assert!(err.to_string().contains("unknown --adopt source"), "{err}");
    }

    #[test]
    fn config_file_values_parse_as_the_flags_do() {
        let dir = std::env::temp_dir().join(format!("berth-cli-values-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        let merge = |body: &str| {
            std::fs::write(&f, body).unwrap();
            ControllerArgs {
                config: Some(f.clone()),
                ..Default::default()
            }
            .merge_file()
        };
        let a = merge(
            "provider: aws\nawsRegion: r\nnodePortRange: 30000-30010\nleaderElectLeaseDuration: 20s\ndefaultClass: true\n",
        )
        .unwrap();
        assert_eq!(a.provider, Some(ProviderKind::Aws));
        assert_eq!(a.node_port_range, Some(30000..=30010));
        assert_eq!(a.leader_elect_lease_duration, Some(Duration::from_secs(20)));
        assert!(a.default_class);
        for (body, want) in [
            ("resync: soon\n", "invalid duration \"soon\""),
            ("provider: gce\n", "gce"),
            ("nodePortRange: 5-1\n", "invalid port range"),
            ("config: other.yaml\n", "config"),
        ] {
            let err = merge(body).unwrap_err().to_string();
            assert!(
                err.contains("Invalid config file") && err.contains(want),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn a_config_file_lists_several_classes_each_with_its_own_lease_and_finalizer() {
        let dir = std::env::temp_dir().join(format!("berth-cli-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "gcInterval: 2s\nclasses:\n  - class: berth.io/http\n    provider: http\n    httpEndpoint: http://a\n    defaultClass: true\n  - class: example.com/b\n    provider: http\n    httpEndpoint: http://b\n    httpTimeout: 3s\n",
        )
        .unwrap();
        let args = ControllerArgs {
            config: Some(f.clone()),
            ..Default::default()
        }
        .merge_file()
        .unwrap();
        let specs = args.class_specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].http_timeout, Some(Duration::from_secs(3)));
        let o: Vec<_> = specs.iter().map(|s| args.options_for(s).unwrap()).collect();
        assert!(o[0].settings.classes.default_class && !o[1].settings.classes.default_class);
        assert_ne!(
            o[0].leader.as_ref().unwrap().name,
            o[1].leader.as_ref().unwrap().name
        );
        assert_ne!(
            o[0].settings.classes.finalizer,
            o[1].settings.classes.finalizer
        );
        assert_eq!(o[1].gc_interval, Duration::from_secs(2));
        assert!(
            o[0].settings.cluster.is_empty(),
            "resolved from kube-system at start"
        );

        // Flags for one class cannot be mixed with a list.
        let err = ControllerArgs {
            config: Some(f.clone()),
            provider: Some(ProviderKind::Http),
            ..Default::default()
        }
        .merge_file()
        .unwrap_err();
        assert!(err.to_string().contains("cannot be combined"), "{err}");

        for (body, want) in [
            (
                "classes:\n  - {class: a/b, provider: http}\n  - {class: a/b, provider: l2}\n",
                "listed twice",
            ),
            (
                "classes:\n  - {class: a/b, provider: http, defaultClass: true}\n  - {class: a/c, provider: http, defaultClass: true}\n",
                "Only one class",
            ),
            (
                "classes:\n  - {class: a/b, provider: gce}\n",
                "classes[0].provider",
            ),
        ] {
            std::fs::write(&f, body).unwrap();
            let err = ControllerArgs {
                config: Some(f.clone()),
                ..Default::default()
            }
            .merge_file()
            .and_then(|a| a.class_specs())
            .unwrap_err();
            assert!(format!("{err:#}").contains(want), "{body}: {err:#}");
        }
    }
}
