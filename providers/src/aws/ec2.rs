//! The EC2 Query API as berth uses it: calls signed with SigV4 and sent with reqwest rather
//! than pulling in the (very large) EC2 SDK crate, answers capped while read. Subnet
//! discovery lives here (the choice of subnets is a pure function); security groups in
//! `ec2_security_groups.rs`. Every call is paced and retried by the EC2 API budget
//! ([`super::budget`]).

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::annotations::Scheme;
use super::budget::{Bucket, Budget, EC2_BURST, EC2_RATE, Verdict};
use crate::ProviderError;
use crate::bounds::{
    self, BodyError, MAX_RESPONSE_BYTES, describe, redact_endpoint, server_message,
};

/// A subnet as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub zone: String,
    pub tags: BTreeMap<String, String>,
}

/// A failed EC2 call: the error code EC2 gave (if any) and what it means for the caller.
#[derive(Debug)]
pub struct Ec2Error {
    pub code: Option<String>,
    pub error: ProviderError,
}

impl From<Ec2Error> for ProviderError {
    fn from(e: Ec2Error) -> Self {
        e.error
    }
}

impl Ec2Error {
    fn plain(error: ProviderError) -> Self {
        Self { code: None, error }
    }

    /// Whether EC2 answered with `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// An EC2 Query API client.
pub struct Ec2 {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    budget: Arc<Budget>,
}

fn transient(m: impl Into<String>) -> ProviderError {
    ProviderError::transient(m)
}

impl Ec2 {
    pub fn new(
        endpoint: Option<&str>,
        region: &str,
        credentials: SharedCredentialsProvider,
    ) -> Result<Self, ProviderError> {
        let endpoint = endpoint.map_or_else(
            || format!("https://ec2.{region}.amazonaws.com/"),
            |e| format!("{}/", e.trim_end_matches('/')),
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| {
                ProviderError::Permanent(format!("Cannot build the EC2 client: {}", describe(&e)))
            })?;
        let bucket = Bucket::new("ec2", EC2_RATE, EC2_BURST).expect("valid defaults");
        Ok(Self {
            http,
            endpoint,
            region: region.to_string(),
            credentials,
            budget: Arc::new(Budget::new(bucket, 5)),
        })
    }

    /// Paces and retries every call through `budget`.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// DescribeSubnets with `filters` (name, values), every page.
    pub async fn describe_subnets(
        &self,
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<Subnet>, ProviderError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut form: Vec<(String, String)> = Vec::new();
            for (i, (name, values)) in filters.iter().enumerate() {
                form.push((format!("Filter.{}.Name", i + 1), name.to_string()));
                for (j, v) in values.iter().enumerate() {
                    form.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.clone()));
                }
            }
            if let Some(t) = &token {
                form.push(("NextToken".into(), t.clone()));
            }
            let text = self.query("DescribeSubnets", form).await?;
            let (subnets, next) = parse_subnets(&text)?;
            out.extend(subnets);
            token = next;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// One call of `action` with `params`: the answer's text (at most
    /// [`MAX_RESPONSE_BYTES`]), or the error classified.
    pub async fn query(
        &self,
        action: &'static str,
        params: Vec<(String, String)>,
    ) -> Result<String, Ec2Error> {
        let mut form: Vec<(String, String)> = vec![
            ("Action".into(), action.into()),
            ("Version".into(), "2016-11-15".into()),
        ];
        form.extend(params);
        let body = form_encode(&form).map_err(Ec2Error::plain)?;
        self.post(action, body).await
    }

    /// One call through the budget: each attempt takes a token; throttling, 5xx and network
    /// failures are retried with jittered backoff.
    async fn post(&self, action: &'static str, body: String) -> Result<String, Ec2Error> {
        self.budget
            .run(
                action,
                || self.post_once(action, body.clone()),
                |e: &Ec2Error| verdict(&e.error),
            )
            .await
    }

    async fn post_once(&self, action: &'static str, body: String) -> Result<String, Ec2Error> {
        let plain = Ec2Error::plain;
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| plain(ProviderError::Permanent(format!("No AWS credentials: {e}"))))?;
        let identity: Identity = creds.into();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| {
                plain(ProviderError::Permanent(format!(
                    "Cannot sign the EC2 request: {e}"
                )))
            })?
            .into();
        let host = reqwest::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
            })
            .ok_or_else(|| {
                plain(ProviderError::Permanent(format!(
                    "Invalid EC2 endpoint {:?}",
                    redact_endpoint(&self.endpoint)
                )))
            })?;
        let headers = [("content-type", content_type), ("host", host.as_str())];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| {
            plain(ProviderError::Permanent(format!(
                "Cannot sign the EC2 request: {e}"
            )))
        })?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| {
                plain(ProviderError::Permanent(format!(
                    "Cannot sign the EC2 request: {e}"
                )))
            })?
            .into_parts();
        let (signed_headers, _) = instructions.into_parts();
        let mut req = self
            .http
            .post(&self.endpoint)
            .header("content-type", content_type)
            .body(body);
        for h in signed_headers {
            req = req.header(h.name(), h.value());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| plain(transient(format!("EC2 {action} failed: {}", describe(&e)))))?;
        let status = resp.status();
        if !status.is_success() {
            // Only the start matters: the error code and message come first.
            let (body, _) = bounds::read_prefix(resp, bounds::MAX_ERROR_BODY_BYTES).await;
            return Err(error_of(action, status, &String::from_utf8_lossy(&body)));
        }
        let body = bounds::read_body(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| {
                plain(match e {
                    BodyError::TooLarge => ProviderError::Permanent(format!(
                        "EC2 {action} response was larger than 1 MiB; berth stopped reading it"
                    )),
                    BodyError::Read(e) => {
                        transient(format!("EC2 {action} failed: {}", describe(&e)))
                    }
                })
            })?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// How the budget labels a failed attempt: throttling carries a wait, other transient
/// failures do not; the rest is not retried.
fn verdict(e: &ProviderError) -> Verdict {
    match e {
        ProviderError::Transient {
            retry_after: Some(_),
            ..
        } => Verdict {
            outcome: "throttled",
            retry: true,
        },
        ProviderError::Transient { .. } => Verdict {
            outcome: "transient",
            retry: true,
        },
        _ => Verdict {
            outcome: "client_error",
            retry: false,
        },
    }
}

/// The error an EC2 error response stands for: throttling (`RequestLimitExceeded`, 429) is
/// transient with a wait, 5xx transient. The server's message is bounded.
fn error_of(action: &str, status: reqwest::StatusCode, text: &str) -> Ec2Error {
    let code = error_code(text);
    let error = if status.as_u16() == 429 || text.contains("RequestLimitExceeded") {
        ProviderError::Transient {
            message: format!("EC2 {action} failed ({status}): RequestLimitExceeded"),
            retry_after: Some(Duration::from_secs(2)),
        }
    } else if status.is_server_error() {
        transient(format!("EC2 {action} failed ({status})"))
    } else {
        let message = error_message(text).unwrap_or_else(|| text.to_string());
        ProviderError::Permanent(format!(
            "EC2 {action} failed ({status}): {}",
            server_message(&message)
        ))
    };
    Ec2Error { code, error }
}

/// `application/x-www-form-urlencoded`, as the EC2 Query API takes it.
pub(super) fn form_encode(pairs: &[(String, String)]) -> Result<String, ProviderError> {
    serde_urlencoded::to_string(pairs)
        .map_err(|e| ProviderError::Permanent(format!("Cannot encode the EC2 request: {e}")))
}

/// A `DescribeSubnetsResponse`; elements berth does not use are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeSubnetsResponse {
    #[serde(default)]
    subnet_set: Items<SubnetItem>,
    #[serde(default)]
    next_token: Option<String>,
}

/// EC2's list shape: `<xSet><item>…</item><item>…</item></xSet>`.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
pub(super) struct Items<T> {
    #[serde(default, rename = "item")]
    pub(super) items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubnetItem {
    #[serde(default)]
    subnet_id: Option<String>,
    #[serde(default)]
    vpc_id: String,
    #[serde(default)]
    availability_zone: String,
    #[serde(default)]
    tag_set: Items<TagItem>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TagItem {
    #[serde(default)]
    pub(super) key: Option<String>,
    #[serde(default)]
    pub(super) value: String,
}

/// Tags of an EC2 `tagSet`, items without a key skipped.
pub(super) fn tags_of(set: Items<TagItem>) -> BTreeMap<String, String> {
    set.items
        .into_iter()
        .filter_map(|t| Some((t.key?.trim().to_string(), t.value.trim().to_string())))
        .collect()
}

/// An EC2 error answer: `<Response><Errors><Error><Code/><Message/></Error></Errors>…`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    #[serde(default)]
    errors: ErrorList,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorList {
    #[serde(default)]
    error: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorItem {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The first error code of an EC2 error answer, if it is one and is complete.
fn error_code(text: &str) -> Option<String> {
    let e: ErrorResponse = quick_xml::de::from_str(text).ok()?;
    e.errors
        .error
        .into_iter()
        .find_map(|e| e.code)
        .map(|m| m.trim().to_string())
}

/// The first error message of an EC2 error answer, if it is one and is complete.
fn error_message(text: &str) -> Option<String> {
    let e: ErrorResponse = quick_xml::de::from_str(text).ok()?;
    e.errors
        .error
        .into_iter()
        .find_map(|e| e.message)
        .map(|m| m.trim().to_string())
}

/// The subnets and next token of a DescribeSubnetsResponse (already capped at
/// [`MAX_RESPONSE_BYTES`] while reading). Items without a subnet id are skipped.
fn parse_subnets(text: &str) -> Result<(Vec<Subnet>, Option<String>), ProviderError> {
    let answer: DescribeSubnetsResponse = quick_xml::de::from_str(text).map_err(|e| {
        ProviderError::transient(format!(
            "EC2 DescribeSubnets returned malformed XML: {}",
            server_message(&e.to_string())
        ))
    })?;
    let subnets = answer
        .subnet_set
        .items
        .into_iter()
        .filter_map(|item| {
            Some(Subnet {
                id: item.subnet_id.map(|s| s.trim().to_string())?,
                vpc_id: item.vpc_id.trim().to_string(),
                zone: item.availability_zone.trim().to_string(),
                tags: tags_of(item.tag_set),
            })
        })
        .collect();
    let next = answer
        .next_token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok((subnets, next))
}

/// The filters that find candidates: by id or Name tag for the annotation, else by the
/// scheme's role tag.
pub fn filters(
    scheme: Scheme,
    requested: Option<&[String]>,
) -> Vec<Vec<(&'static str, Vec<String>)>> {
    match requested {
        Some(list) => {
            let (ids, names): (Vec<String>, Vec<String>) =
                list.iter().cloned().partition(|s| s.starts_with("subnet-"));
            let mut out = Vec::new();
            if !ids.is_empty() {
                out.push(vec![("subnet-id", ids)]);
            }
            if !names.is_empty() {
                out.push(vec![("tag:Name", names)]);
            }
            out
        }
        None => vec![vec![("tag-key", vec![scheme.role_tag().to_string()])]],
    }
}

/// Picks the load balancer's subnets from `found`: for the annotation, every requested
/// subnet (an unknown one is an error); else those tagged for the scheme's role (value `1`
/// or empty) and not tagged for another cluster. One per zone (ours-tagged first, then by
/// id), all in one VPC. Returns (subnet ids, VPC id).
pub fn choose(
    found: &[Subnet],
    scheme: Scheme,
    requested: Option<&[String]>,
    cluster: &str,
) -> Result<(Vec<String>, String), String> {
    let cluster_tag = format!("kubernetes.io/cluster/{cluster}");
    let candidates: Vec<&Subnet> = match requested {
        Some(list) => {
            let mut picked = Vec::new();
            for want in list {
                let s = found
                    .iter()
                    .find(|s| &s.id == want || s.tags.get("Name") == Some(want))
                    .ok_or_else(|| {
                        format!(
                            "subnet {} (from the subnets annotation) does not exist",
                            bounds::quote(want)
                        )
                    })?;
                picked.push(s);
            }
            picked
        }
        None => found
            .iter()
            .filter(|s| {
                matches!(
                    s.tags.get(scheme.role_tag()).map(String::as_str),
                    Some("1" | "")
                )
            })
            .filter(|s| {
                let ours = s
                    .tags
                    .get(&cluster_tag)
                    .is_some_and(|v| v == "owned" || v == "shared");
                let other = s
                    .tags
                    .keys()
                    .any(|k| k.starts_with("kubernetes.io/cluster/") && *k != cluster_tag);
                ours || !other
            })
            .collect(),
    };
    if candidates.is_empty() {
        return Err(format!(
            "no subnet found for a {} load balancer: tag subnets with {}=1 (and {cluster_tag}=owned or shared), or name them in the service.beta.kubernetes.io/aws-load-balancer-subnets annotation",
            scheme.as_str(),
            scheme.role_tag()
        ));
    }
    // The VPC with the most candidates (ties: the smallest id).
    let mut per_vpc: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &candidates {
        *per_vpc.entry(&s.vpc_id).or_default() += 1;
    }
    let vpc = per_vpc
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let mut per_zone: BTreeMap<&str, &Subnet> = BTreeMap::new();
    let rank = |s: &Subnet| (!s.tags.contains_key(&cluster_tag), s.id.clone());
    for s in candidates.into_iter().filter(|s| s.vpc_id == vpc) {
        match per_zone.get(s.zone.as_str()) {
            Some(cur) if rank(cur) <= rank(s) => {}
            _ => {
                per_zone.insert(&s.zone, s);
            }
        }
    }
    Ok((per_zone.values().map(|s| s.id.clone()).collect(), vpc))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f</requestId>
  <subnetSet>
    <item>
      <subnetId>subnet-a</subnetId>
      <vpcId>vpc-1</vpcId>
      <availabilityZone>us-east-1a</availabilityZone>
      <tagSet>
        <item><key>Name</key><value>public-a</value></item>
        <item><key>kubernetes.io/role/elb</key><value>1</value></item>
      </tagSet>
    </item>
    <item>
      <subnetId>subnet-b</subnetId>
      <vpcId>vpc-1</vpcId>
      <availabilityZone>us-east-1b</availabilityZone>
      <tagSet><item><key>a&amp;b</key><value/></item></tagSet>
    </item>
  </subnetSet>
  <nextToken>tok</nextToken>
</DescribeSubnetsResponse>"#;

    fn subnet(id: &str, vpc: &str, zone: &str, tags: &[(&str, &str)]) -> Subnet {
        Subnet {
            id: id.into(),
            vpc_id: vpc.into(),
            zone: zone.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parses_describe_subnets() {
        let (subnets, next) = parse_subnets(ANSWER).unwrap();
        assert_eq!(next.as_deref(), Some("tok"));
        assert_eq!(subnets.len(), 2);
        assert_eq!(subnets[0].id, "subnet-a");
        assert_eq!(subnets[0].zone, "us-east-1a");
        assert_eq!(subnets[0].tags["Name"], "public-a");
        assert_eq!(subnets[1].tags["a&b"], "");
        assert!(parse_subnets("<a><b></a>").is_err());
        assert_eq!(
            error_message(
                "<Response><Errors><Error><Message>no</Message></Error></Errors></Response>"
            )
            .as_deref(),
            Some("no")
        );
    }

    /// A server on 127.0.0.1 that answers every request with `head` and then `body` until
    /// the client hangs up (at most `limit` bytes of body).
    async fn raw_server(head: &'static str, body: &'static [u8], limit: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = conn.read(&mut buf).await;
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut sent = 0;
                    while sent < limit && conn.write_all(body).await.is_ok() {
                        sent += body.len();
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn client(endpoint: &str) -> Ec2 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let creds = aws_credential_types::Credentials::new("AKID", "SECRET", None, None, "test");
        Ec2::new(
            Some(endpoint),
            "us-east-1",
            SharedCredentialsProvider::new(creds),
        )
        .unwrap()
        // One retry: network failures are retried, and these tests need not wait long.
        .with_budget(Arc::new(Budget::new(
            Bucket::new("ec2", 100.0, 100).unwrap(),
            2,
        )))
    }

    #[test]
    fn throttling_is_retried_with_a_wait_and_the_action_is_named() {
        let e = error_of(
            "DescribeSecurityGroups",
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>",
        );
        assert_eq!(verdict(&e.error).outcome, "throttled");
        assert!(verdict(&e.error).retry);
        assert!(e.is("RequestLimitExceeded"));
        assert!(
            e.error.to_string().contains("DescribeSecurityGroups"),
            "{}",
            e.error
        );
        let e = error_of(
            "DescribeSubnets",
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            "",
        );
        assert_eq!(verdict(&e.error).outcome, "transient");
        let e = error_of(
            "CreateTags",
            reqwest::StatusCode::BAD_REQUEST,
            "<Response/>",
        );
        assert!(!verdict(&e.error).retry);
        assert!(e.error.to_string().contains("CreateTags"), "{}", e.error);
    }

    #[tokio::test]
    async fn huge_answers_are_refused_while_reading() {
        // 4 KiB chunks, endlessly (up to 512 MiB): chunked, no Content-Length.
        static CHUNK: [u8; 4104] = {
            let mut c = [b'a'; 4104];
            let head = *b"1000\r\n";
            let mut i = 0;
            while i < head.len() {
                c[i] = head[i];
                i += 1;
            }
            c[4102] = b'\r';
            c[4103] = b'\n';
            c
        };
        let chunked = raw_server(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n",
            &CHUNK,
            512 << 20,
        )
        .await;
        // A Content-Length of 200 MiB.
        let declared = raw_server(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 209715200\r\n\r\n",
            &[b'b'; 4096],
            200 << 20,
        )
        .await;
        for endpoint in [chunked, declared] {
            match client(&endpoint).describe_subnets(&[]).await {
                Err(ProviderError::Permanent(m)) => {
                    assert!(m.contains("larger than 1 MiB"), "{endpoint}: {m}")
                }
                other => panic!("{endpoint}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn error_messages_are_bounded_and_endpoints_redacted() {
        static HUGE: [u8; 65536] = [b'm'; 65536];
        let endpoint = raw_server(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: 5000000\r\n\r\n<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>",
            &HUGE,
            4_900_000,
        )
        .await;
        let e = client(&endpoint).describe_subnets(&[]).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("EC2 DescribeSubnets failed (400 Bad Request): "),
            "{text}"
        );
        assert!(text.len() < 1024, "{} bytes", text.len());
        assert_eq!(e.summary(), "EC2 DescribeSubnets failed (400 Bad Request)");

        // Nothing listens on port 9 of 127.0.0.1 (discard, never bound in tests).
        let e = client("http://ak:topsecret@127.0.0.1:9")
            .describe_subnets(&[])
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn form_encoding() {
        let f =
            form_encode(&[("Filter.1.Name".into(), "tag:kubernetes.io/role/elb".into())]).unwrap();
        assert_eq!(f, "Filter.1.Name=tag%3Akubernetes.io%2Frole%2Felb");
    }

    #[test]
    fn form_encoding_round_trips_every_filter() {
        let pairs: Vec<(String, String)> = vec![
            ("Action".into(), "DescribeSubnets".into()),
            ("Filter.1.Name".into(), "tag:Name".into()),
            ("Filter.1.Value.1".into(), "a b&c=d/é~".into()),
            ("NextToken".into(), "x+y".into()),
        ];
        let body = form_encode(&pairs).unwrap();
        assert!(!body.contains(' ') && !body.contains("=d"), "{body}");
        let back: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        assert_eq!(back, pairs);
    }

    #[test]
    fn xml_answers_berth_cannot_use() {
        // A page without subnets, unknown elements, entities and CDATA.
        let (subnets, next) = parse_subnets(
            "<DescribeSubnetsResponse><x><y/></x><subnetSet/><nextToken> </nextToken></DescribeSubnetsResponse>",
        )
        .unwrap();
        assert!(subnets.is_empty());
        assert_eq!(next, None);
        let (subnets, _) = parse_subnets(
            "<R><subnetSet><item><vpcId>v</vpcId></item><item><subnetId><![CDATA[subnet-x]]></subnetId><tagSet><item><value>no key</value></item><item><key>k&lt;1&gt;</key></item></tagSet></item></subnetSet></R>",
        )
        .unwrap();
        assert_eq!(subnets.len(), 1, "an item without a subnet id is skipped");
        assert_eq!(subnets[0].id, "subnet-x");
        assert_eq!(subnets[0].tags.len(), 1);
        assert_eq!(subnets[0].tags["k<1>"], "");
        // Cut off mid-way (or not XML at all): an error, never a panic.
        for bad in [
            &ANSWER[..ANSWER.len() / 2],
            "<a",
            "&bogus;",
            "<a>&nope;</a>",
        ] {
            let e = parse_subnets(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("EC2 DescribeSubnets returned malformed XML"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            error_message(
                "<Response><Errors><Error><Code>A</Code></Error><Error><Message> x &amp; y </Message></Error></Errors><RequestID>r</RequestID></Response>"
            )
            .as_deref(),
            Some("x & y")
        );
        assert_eq!(error_message("<Response><Errors><Error><Message>cut"), None);
        assert_eq!(error_message("not xml"), None);
    }

    #[test]
    fn discovery_one_per_zone_in_one_vpc() {
        let role = "kubernetes.io/role/internal-elb";
        let found = vec![
            subnet("subnet-2", "vpc-1", "a", &[(role, "1")]),
            subnet("subnet-1", "vpc-1", "a", &[(role, "")]),
            subnet(
                "subnet-3",
                "vpc-1",
                "b",
                &[(role, "1"), ("kubernetes.io/cluster/test", "shared")],
            ),
            subnet("subnet-4", "vpc-1", "b", &[(role, "1")]),
            subnet(
                "subnet-5",
                "vpc-1",
                "c",
                &[(role, "1"), ("kubernetes.io/cluster/other", "owned")],
            ),
            subnet("subnet-6", "vpc-1", "d", &[(role, "0")]),
            subnet("subnet-7", "vpc-2", "a", &[(role, "1")]),
        ];
        let (ids, vpc) = choose(&found, Scheme::Internal, None, "test").unwrap();
        assert_eq!(vpc, "vpc-1");
        assert_eq!(ids, vec!["subnet-1", "subnet-3"]);
        let err = choose(&found, Scheme::InternetFacing, None, "test").unwrap_err();
        assert!(err.contains("kubernetes.io/role/elb"), "{err}");
    }

    #[test]
    fn requested_subnets_by_id_or_name() {
        let found = vec![
            subnet("subnet-1", "vpc-1", "a", &[("Name", "one")]),
            subnet("subnet-2", "vpc-1", "b", &[]),
        ];
        let req = vec!["one".to_string(), "subnet-2".to_string()];
        let (ids, _) = choose(&found, Scheme::Internal, Some(&req), "test").unwrap();
        assert_eq!(ids, vec!["subnet-1", "subnet-2"]);
        let req = vec!["missing".to_string()];
        assert!(choose(&found, Scheme::Internal, Some(&req), "test").is_err());
        let f = filters(Scheme::Internal, Some(&["subnet-9".into(), "x".into()]));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0][0].0, "subnet-id");
        assert_eq!(f[1][0].0, "tag:Name");
    }
}
