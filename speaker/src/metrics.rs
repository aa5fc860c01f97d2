//! The speaker's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// `arp` or `ndp`.
    pub protocol: String,
    pub interface: String,
}

pub struct SpeakerMetrics {
    pub registry: Registry,
    pub announced: Gauge,
    pub answered: Family<LinkLabels, Counter>,
    pub gratuitous: Family<LinkLabels, Counter>,
    pub membership: std::sync::Arc<super::membership::Metrics>,
    pub takeovers: Counter,
    pub releases: Counter,
    pub bgp: std::sync::Arc<super::bgp::Metrics>,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth_speaker");
        let announced = Gauge::default();
        registry.register(
            "announced_vips",
            "VIPs this speaker announces now",
            announced.clone(),
        );
        let answered = Family::<LinkLabels, Counter>::default();
        registry.register(
            "requests_answered",
            "ARP requests and neighbor solicitations answered, by protocol and interface",
            answered.clone(),
        );
        let gratuitous = Family::<LinkLabels, Counter>::default();
        registry.register(
            "gratuitous_sent",
            "Gratuitous ARP frames and unsolicited neighbor advertisements sent",
            gratuitous.clone(),
        );
        let membership = std::sync::Arc::new(super::membership::Metrics::default());
        membership.register(&mut registry);
        let takeovers = Counter::default();
        registry.register(
            "failovers",
            "VIPs this speaker took over (started announcing)",
            takeovers.clone(),
        );
        let releases = Counter::default();
        registry.register(
            "releases",
            "VIPs this speaker stopped announcing",
            releases.clone(),
        );
        let bgp = std::sync::Arc::new(super::bgp::Metrics::default());
        bgp.register(&mut registry);
        SpeakerMetrics {
            bgp,
            registry,
            announced,
            answered,
            gratuitous,
            membership,
            takeovers,
            releases,
        }
    }
}

impl SpeakerMetrics {
    pub fn label(protocol: &str, interface: &str) -> LinkLabels {
        LinkLabels {
            protocol: protocol.into(),
            interface: interface.into(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
