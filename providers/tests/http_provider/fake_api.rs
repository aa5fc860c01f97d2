//! A fake load balancer API (plain HTTP or TLS) with fault injection and a record of what it saw, and the fixtures the http provider tests share.

use super::*;

/// One request the server saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    /// Path and query.
    pub(crate) uri: String,
    pub(crate) if_match: Option<String>,
    pub(crate) if_none_match: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) prefer: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) at: Instant,
}

/// The next request (of `method`, or any when `None`) fails with `status`.
pub(crate) struct Fault {
    pub(crate) method: Option<Method>,
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<u64>,
}

pub(crate) struct Stored {
    pub(crate) spec: Value,
    pub(crate) etag: String,
    pub(crate) generation: u64,
    pub(crate) address: String,
}

#[derive(Default)]
pub(crate) struct Api {
    pub(crate) lbs: Mutex<BTreeMap<String, Stored>>,
    pub(crate) seen: Mutex<Vec<Seen>>,
    pub(crate) faults: Mutex<VecDeque<Fault>>,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub(crate) token: Mutex<Option<String>>,
    pub(crate) writes: AtomicUsize,
}

impl Api {
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn seen_methods(&self) -> Vec<String> {
        self.seen().iter().map(|s| s.method.to_string()).collect()
    }

    pub(crate) fn puts(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::PUT)
            .collect()
    }

    pub(crate) fn fail_next(
        &self,
        method: Option<Method>,
        status: u16,
        retry_after: Option<u64>,
        times: usize,
    ) {
        let mut faults = self.faults.lock().unwrap();
        for _ in 0..times {
            faults.push_back(Fault {
                method: method.clone(),
                status: StatusCode::from_u16(status).unwrap(),
                retry_after,
            });
        }
    }

    /// Stores a load balancer directly, as another client would have.
    pub(crate) fn insert(&self, id: &str, spec: Value) {
        self.lbs.lock().unwrap().insert(
            id.to_string(),
            Stored {
                spec,
                etag: "\"foreign\"".into(),
                generation: 1,
                address: "192.0.2.200".into(),
            },
        );
    }

    pub(crate) fn spec_of(&self, id: &str) -> Option<Value> {
        self.lbs.lock().unwrap().get(id).map(|s| s.spec.clone())
    }
}

pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> Response {
    let mut body = json!({"error": {"code": code, "message": message}});
    if let Some(field) = field {
        body["error"]["field"] = json!(field);
    }
    (status, axum::Json(body)).into_response()
}

pub(crate) fn lb_response(status: StatusCode, id: &str, lb: &Stored) -> Response {
    let body = json!({
        "id": id,
        "spec": lb.spec,
        "status": {"addresses": [{"ip": lb.address}], "targets": []},
        "etag": lb.etag,
        "generation": lb.generation,
    });
    (status, [(header::ETAG, lb.etag.clone())], axum::Json(body)).into_response()
}

pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(handle).with_state(api)
}

/// Accepts TLS connections for axum; failed handshakes are dropped.
pub(crate) struct TlsListener {
    pub(crate) tcp: TcpListener,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A fresh CA and a certificate for 127.0.0.1 signed by it: (CA PEM, server config).
pub(crate) fn test_pki() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "berth test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), config)
}

pub(crate) fn install_crypto() {
    // The binary installs ring once at start-up; tests share a process, so ignore "already".
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn config(endpoint: &str) -> HttpProviderConfig {
    HttpProviderConfig {
        max_retries: 3,
        timeout: Duration::from_secs(5),
        ..HttpProviderConfig::new(endpoint)
    }
}

pub(crate) fn provider(cfg: HttpProviderConfig) -> HttpProvider {
    install_crypto();
    HttpProvider::new(cfg).unwrap()
}

/// Service `default/<name>` in `cluster`: port 80/TCP on NodePort 30080, one node.
pub(crate) fn desired(cluster: &str, name: &str) -> DesiredLoadBalancer {
    let service = ServiceRef {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    };
    DesiredLoadBalancer::builder(cluster, service)
        .listener("http", 80, Protocol::Tcp, Some(30080))
        .target(node("node-a", "10.0.0.1"))
        .build()
}

pub(crate) fn node(name: &str, ip: &str) -> NodeTarget {
    NodeTarget::new(name, Some(ip.parse().unwrap()))
}

pub(crate) fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("berth-providers-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}
