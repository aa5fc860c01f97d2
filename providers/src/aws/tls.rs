//! TLS listeners: which of a Service's TCP ports terminate TLS on the NLB, with which
//! certificates, security policy and ALPN policy (`-ssl-cert`, `-ssl-ports`,
//! `-ssl-negotiation-policy`, `-alpn-policy`). Parsing and the choice of ports are pure.

use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

use super::annotations::{ALPN_POLICY, SSL_CERT, SSL_POLICY, SSL_PORTS};
use super::api::Elb;
use super::plan::{CurrentListener, ElbProtocol, PlannedGroup};
use crate::bounds::quote;
use crate::{DesiredLoadBalancer, ProviderError};

/// The security policy when the Service names none (the AWS Load Balancer Controller's
/// default for NLB TLS listeners).
pub const DEFAULT_POLICY: &str = "ELBSecurityPolicy-2016-08";

/// ALPN policies ELBv2 accepts.
pub const ALPN_POLICIES: [&str; 5] = [
    "HTTP1Only",
    "HTTP2Only",
    "HTTP2Optional",
    "HTTP2Preferred",
    "None",
];

/// What the TLS annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// Certificate ARNs, the default first; empty: no TLS.
    pub certificates: Vec<String>,
    /// Port names or numbers; `None`: every TCP port.
    pub ports: Option<Vec<String>>,
    pub policy: Option<String>,
    pub alpn: Option<String>,
}

/// A TLS listener's settings, as compared with what ELBv2 reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsListener {
    /// The default certificate first, then the others.
    pub certificates: Vec<String>,
    pub policy: String,
    /// `None`: no ALPN policy.
    pub alpn: Option<String>,
}

fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

fn bad(key: &str, raw: &str, accepted: &str) -> ProviderError {
    ProviderError::invalid(
        field(key),
        format!("invalid value {}: {accepted}", quote(raw)),
    )
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',').map(|s| s.trim().to_string()).collect()
}

/// Reads the TLS annotations.
pub fn parse(ann: &BTreeMap<String, String>) -> Result<TlsSettings, ProviderError> {
    let mut out = TlsSettings::default();
    if let Some(raw) = ann.get(SSL_CERT) {
        let certs = list(raw);
        let ok = |c: &String| {
            c.starts_with("arn:") && c.len() <= 2048 && c.bytes().all(|b| b.is_ascii_graphic())
        };
        if certs.is_empty() || !certs.iter().all(ok) || certs.len() > 25 {
            return Err(bad(
                SSL_CERT,
                raw,
                "accepted values are 1 to 25 comma-separated certificate ARNs (arn:aws:acm:…)",
            ));
        }
        out.certificates = certs;
    }
    if let Some(raw) = ann.get(SSL_PORTS) {
        let ports = list(raw);
        if ports.iter().any(String::is_empty) {
            return Err(bad(
                SSL_PORTS,
                raw,
                "accepted values are comma-separated port names or numbers of the Service, or \"*\"",
            ));
        }
        out.ports = (!ports.iter().any(|p| p == "*")).then_some(ports);
    }
    if let Some(raw) = ann.get(SSL_POLICY) {
        let p = raw.trim();
        if p.is_empty()
            || p.len() > 128
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad(
                SSL_POLICY,
                raw,
                "accepted values are ELBv2 security policy names, e.g. ELBSecurityPolicy-TLS13-1-2-2021-06",
            ));
        }
        out.policy = Some(p.to_string());
    }
    if let Some(raw) = ann.get(ALPN_POLICY) {
        let p = raw.trim();
        let Some(known) = ALPN_POLICIES.iter().find(|a| a.eq_ignore_ascii_case(p)) else {
            return Err(bad(
                ALPN_POLICY,
                raw,
                "accepted values are \"HTTP1Only\", \"HTTP2Only\", \"HTTP2Optional\", \"HTTP2Preferred\" and \"None\"",
            ));
        };
        out.alpn = Some((*known).to_string());
    }
    if out.certificates.is_empty() {
        for key in [SSL_PORTS, SSL_POLICY, ALPN_POLICY] {
            if ann.contains_key(key) {
                return Err(ProviderError::invalid(
                    field(key),
                    format!(
                        "TLS listeners need a certificate: set {SSL_CERT} too (accepted values there are certificate ARNs)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The TLS listener of each chosen port of `lb` (the listener ports of `groups`). A
/// named port that is not TCP-only, or a name or number that matches no port, is invalid.
pub fn tls_ports(
    lb: &DesiredLoadBalancer,
    groups: &[PlannedGroup],
    tls: &TlsSettings,
) -> Result<BTreeMap<u16, TlsListener>, ProviderError> {
    let mut out = BTreeMap::new();
    if tls.certificates.is_empty() {
        return Ok(out);
    }
    let listener = TlsListener {
        certificates: tls.certificates.clone(),
        policy: tls
            .policy
            .clone()
            .unwrap_or_else(|| DEFAULT_POLICY.to_string()),
        alpn: tls.alpn.clone().filter(|a| a != "None"),
    };
    let tcp_only = |port: u16| {
        groups
            .iter()
            .any(|g| g.port == port && g.protocol == ElbProtocol::Tcp)
    };
    match &tls.ports {
        None => {
            for g in groups.iter().filter(|g| g.protocol == ElbProtocol::Tcp) {
                out.insert(g.port, listener.clone());
            }
        }
        Some(wanted) => {
            for w in wanted {
                let port = lb
                    .listeners
                    .iter()
                    .find(|l| l.name == *w || l.port.to_string() == *w)
                    .map(|l| l.port)
                    .ok_or_else(|| {
                        bad(
                            SSL_PORTS,
                            &wanted.join(","),
                            &format!(
                                "{} is neither the name nor the number of one of the Service's ports; accepted values are port names or numbers",
                                quote(w)
                            ),
                        )
                    })?;
                if !tcp_only(port) {
                    return Err(bad(
                        SSL_PORTS,
                        &wanted.join(","),
                        &format!(
                            "port {port} is not TCP-only; accepted values are TCP ports (TLS runs over TCP)"
                        ),
                    ));
                }
                out.insert(port, listener.clone());
            }
        }
    }
    Ok(out)
}

/// `(add, remove)`: the certificates beyond the default one to add to and remove from a
/// listener that has `current` and should have `want`.
pub fn extra_changes(current: &BTreeSet<String>, want: &TlsListener) -> (Vec<String>, Vec<String>) {
    let default = want.certificates.first();
    let wanted: BTreeSet<String> = want
        .certificates
        .iter()
        .filter(|c| Some(*c) != default)
        .cloned()
        .collect();
    (
        wanted.difference(current).cloned().collect(),
        current
            .difference(&wanted)
            .filter(|c| Some(*c) != default)
            .cloned()
            .collect(),
    )
}

/// Brings the certificates beyond the default one of each TLS listener in line with `tls`:
/// those just created (`created`: port, listener ARN), and the existing ones that should
/// have some or appear to have some. Listeners with only a default certificate cost no
/// call.
pub async fn sync_extra_certificates(
    elb: &Elb,
    tls: &BTreeMap<u16, TlsListener>,
    existing: &[CurrentListener],
    created: &[(u16, String)],
) -> Result<(), ProviderError> {
    for (port, want) in tls {
        let arn = match created.iter().find(|(p, _)| p == port) {
            Some((_, arn)) if want.certificates.len() > 1 => arn.clone(),
            Some(_) => continue,
            None => match existing.iter().find(|l| l.port == *port) {
                Some(l)
                    if want.certificates.len() > 1
                        || l.tls.as_ref().is_some_and(|t| t.certificates.len() > 1) =>
                {
                    l.arn.clone()
                }
                _ => continue,
            },
        };
        let current = elb.extra_certificates(&arn).await?;
        let (add, remove) = extra_changes(&current, want);
        if !add.is_empty() {
            elb.add_listener_certificates(&arn, &add).await?;
        }
        if !remove.is_empty() {
            elb.remove_listener_certificates(&arn, &remove).await?;
        }
        if !add.is_empty() || !remove.is_empty() {
            info!(
                port,
                added = add.len(),
                removed = remove.len(),
                "Updated listener certificates"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{annotations, plan};
    use crate::{Protocol, ServiceRef};

    const CERT: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";

    fn lb(ann: &[(&str, &str)]) -> Result<BTreeMap<u16, TlsListener>, ProviderError> {
        let service = ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let mut b = DesiredLoadBalancer::builder("test", service)
            .listener("https", 443, Protocol::Tcp, Some(30443))
            .listener("admin", 8443, Protocol::Tcp, Some(30444))
            .listener("dns", 53, Protocol::Udp, Some(30053));
        for (k, v) in ann {
            b = b.annotation(k, v);
        }
        let lb = b.build();
        let s = annotations::parse(&lb.annotations, &lb.health_check)?;
        let p = plan::plan(&lb, s.clone())?;
        tls_ports(&lb, &p.groups, &s.tls)
    }

    #[test]
    fn chosen_tcp_ports_get_tls() {
        assert!(lb(&[]).unwrap().is_empty());
        let all = lb(&[(SSL_CERT, CERT)]).unwrap();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![443, 8443]);
        assert_eq!(all[&443].policy, DEFAULT_POLICY);
        assert_eq!(all[&443].alpn, None);
        let two = format!("{CERT}, {CERT}2");
        let some = lb(&[
            (SSL_CERT, &two),
            (SSL_PORTS, "https"),
            (SSL_POLICY, "ELBSecurityPolicy-TLS13-1-2-2021-06"),
            (ALPN_POLICY, "http2preferred"),
        ])
        .unwrap();
        assert_eq!(some.keys().copied().collect::<Vec<_>>(), vec![443]);
        let l = &some[&443];
        assert_eq!(l.certificates, vec![CERT.to_string(), format!("{CERT}2")]);
        assert_eq!(l.policy, "ELBSecurityPolicy-TLS13-1-2-2021-06");
        assert_eq!(l.alpn.as_deref(), Some("HTTP2Preferred"));
        let by_number = lb(&[(SSL_CERT, CERT), (SSL_PORTS, "8443")]).unwrap();
        assert_eq!(by_number.keys().copied().collect::<Vec<_>>(), vec![8443]);
        assert_eq!(lb(&[(SSL_CERT, CERT), (SSL_PORTS, "*")]).unwrap().len(), 2);
    }

    #[test]
    fn extra_certificates_diff() {
        let want = TlsListener {
            certificates: vec!["d".into(), "a".into(), "b".into()],
            policy: DEFAULT_POLICY.into(),
            alpn: None,
        };
        let cur: BTreeSet<String> = ["b".to_string(), "c".to_string(), "d".to_string()].into();
        assert_eq!(
            extra_changes(&cur, &want),
            (vec!["a".to_string()], vec!["c".to_string()]),
            "the default certificate is never an extra one"
        );
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (ann, key) in [
            (vec![(SSL_CERT, "not-an-arn")], SSL_CERT),
            (vec![(SSL_CERT, "")], SSL_CERT),
            (vec![(SSL_CERT, CERT), (SSL_PORTS, "https,")], SSL_PORTS),
            (vec![(SSL_CERT, CERT), (SSL_PORTS, "web")], SSL_PORTS),
            (vec![(SSL_CERT, CERT), (SSL_PORTS, "dns")], SSL_PORTS),
            (vec![(SSL_CERT, CERT), (SSL_POLICY, "a b")], SSL_POLICY),
            (vec![(SSL_CERT, CERT), (ALPN_POLICY, "h3")], ALPN_POLICY),
            (vec![(SSL_PORTS, "443")], SSL_PORTS),
        ] {
            match lb(&ann) {
                Err(ProviderError::Invalid { field, message }) => {
                    assert!(field.contains(key), "{ann:?}: {field}");
                    assert!(message.contains("accepted values"), "{ann:?}: {message}");
                }
                other => panic!("{ann:?}: {other:?}"),
            }
        }
    }
}
