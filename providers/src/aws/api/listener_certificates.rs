//! The certificates of a TLS listener beyond its default one.

use aws_sdk_elasticloadbalancingv2::types::Certificate;
use std::collections::BTreeSet;

use super::{ApiError, Elb};

/// DescribeListenerCertificates pages read at most (400 certificates each; a listener takes
/// 25).
const MAX_PAGES: usize = 4;

fn certs(arns: &[String]) -> Vec<Certificate> {
    arns.iter()
        .map(|a| Certificate::builder().certificate_arn(a).build())
        .collect()
}

impl Elb {
    /// The listener's certificates that are not its default one.
    pub async fn extra_certificates(&self, listener: &str) -> Result<BTreeSet<String>, ApiError> {
        let mut out = BTreeSet::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let m = marker.clone();
            let page = self
                .call("DescribeListenerCertificates", |c| {
                    c.describe_listener_certificates()
                        .listener_arn(listener)
                        .set_marker(m.clone())
                        .send()
                })
                .await?;
            out.extend(
                page.certificates()
                    .iter()
                    .filter(|c| c.is_default() != Some(true))
                    .filter_map(|c| c.certificate_arn().map(str::to_string)),
            );
            marker = page
                .next_marker()
                .filter(|m| !m.is_empty())
                .map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    pub async fn add_listener_certificates(
        &self,
        listener: &str,
        arns: &[String],
    ) -> Result<(), ApiError> {
        self.call("AddListenerCertificates", |c| {
            c.add_listener_certificates()
                .listener_arn(listener)
                .set_certificates(Some(certs(arns)))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn remove_listener_certificates(
        &self,
        listener: &str,
        arns: &[String],
    ) -> Result<(), ApiError> {
        self.call("RemoveListenerCertificates", |c| {
            c.remove_listener_certificates()
                .listener_arn(listener)
                .set_certificates(Some(certs(arns)))
                .send()
        })
        .await
        .map(|_| ())
    }
}
