//! `berth demo`: mock-cloud (API server, nodes, load balancer API) plus the controller with
//! the http provider, a Deployment `demo` of two replicas, and a LoadBalancer Service in front
//! of it that answers on its own address.

use anyhow::Context;
use berth_controller::run::{ControllerOptions, Running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use mock_cloud::{Config as CloudConfig, MockCloud};
use serde_json::json;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// API server address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Load balancer API address.
    #[arg(long, default_value = "127.0.0.1:0")]
    lb_api_listen: SocketAddr,
    /// Where to write the kubeconfig. Default: a file in the system temp directory.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Exit after showing the Service answers, instead of running until Ctrl-C.
    #[arg(long)]
    check: bool,
}

fn demo_deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "demo", "labels": {"app": "demo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {"containers": [{
                    "name": "app", "image": "example.com/demo:1",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 5353, "protocol": "UDP"}]
                }]}
            }
        }
    }))
    .expect("valid deployment")
}

fn demo_service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "demo"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "demo"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}
            ]
        }
    }))
    .expect("valid service")
}

/// One HTTP GET through the load balancer; returns the answering pod's name.
fn http_get(addr: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().context("address")?,
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let body = buf
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    anyhow::ensure!(!body.is_empty(), "empty answer");
    Ok(body)
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let kubeconfig = a.kubeconfig.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("berth-demo-{}.kubeconfig", std::process::id()))
    });
    let cloud = MockCloud::start(CloudConfig {
        listen: a.listen,
        nodes: a.nodes,
        kubeconfig: Some(kubeconfig.clone()),
        lb_api_listen: Some(a.lb_api_listen),
        ..Default::default()
    })
    .await
    .context("Cannot start mock-cloud")?;
    let lb_url = cloud
        .lb_api_url()
        .context("mock-cloud started without its load balancer API")?;
    let client = kube::Client::try_from(kube::Config::new(cloud.url().parse()?))?;
    let cli = berth_controller::cli::ControllerArgs {
        provider: Some(berth_controller::factory::ProviderKind::Http),
        http_endpoint: Some(lb_url.clone()),
        cluster_name: Some("demo".into()),
        default_class: true,
        leader_elect: Some(false),
        metrics_listen: Some("127.0.0.1:0".into()),
        resync: Some(Duration::from_secs(30)),
        gc_interval: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let opts: ControllerOptions = cli.options()?;
    let metrics = Arc::new(berth_controller::metrics::Metrics::default());
    let spec = cli.class_specs()?.remove(0);
    let provider =
        berth_controller::factory::build(&spec, metrics.for_class(&spec.class))?.provider;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Running>();
    let controller = tokio::spawn(berth_controller::run::run(
        client.clone(),
        provider,
        opts,
        stop_rx,
        Some(started_tx),
        metrics,
    ));
    let running = started_rx.await.context("The controller did not start")?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &demo_deployment())
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(&PostParams::default(), &demo_service())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ip = loop {
        let svc = services.get("demo").await?;
        if let Some(ip) = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().find_map(|i| i.ip))
        {
            break ip;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "The demo Service got no address within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kc = kubeconfig.display();
    println!("berth demo is running.");
    println!("  Kubernetes API (mock-cloud): {}", cloud.url());
    println!("  kubeconfig:                  {kc}");
    println!("  load balancer API:           {lb_url}");
    if let Some(m) = running.admin_addr {
        println!("  berth metrics:               http://{m}/metrics");
    }
    println!();
    println!("Deployment default/demo (2 replicas) behind Service demo (LoadBalancer) at {ip}:");
    for line in try_commands(&ip, on_path) {
        println!("{line}");
    }
    println!("  export KUBECONFIG={kc}");
    println!("  kubectl get all");
    println!("  kubectl scale deployment demo --replicas=4");
    println!("  kubectl set image deployment/demo '*=example.com/demo:2'");
    println!("  kubectl rollout status deployment/demo   # then rollout undo");
    println!("  kubectl logs POD                         # one line per request it answered");
    println!();
    println!("Your own app, the same way:");
    println!("  kubectl create deployment web --image=nginx --replicas=2 --port=8080");
    println!("  kubectl expose deployment web --type=LoadBalancer --port=80 --target-port=8080");
    println!("  kubectl get svc web                      # EXTERNAL-IP within seconds; curl it");

    let answer = {
        let addr = format!("{ip}:80");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a2 = addr.clone();
            match tokio::task::spawn_blocking(move || http_get(&a2)).await? {
                Ok(pod) => break pod,
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("The demo Service's address {addr} did not answer: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    println!("curl http://{ip}/ -> {answer}");
    if !a.check {
        println!("Press Ctrl-C to stop.");
        let mut sig = crate::shutdown_on_signals();
        let _ = sig.wait_for(|s| *s).await;
    }
    println!("Stopping.");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    cloud.shutdown().await;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

/// Whether `cmd` is an executable on $PATH.
fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(cmd))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The lines that show how to reach the demo Service, with the tools this machine has: curl
/// or wget for HTTP, nc for UDP (bash's /dev/udp otherwise, which sends but cannot show the
/// answer).
fn try_commands(ip: impl std::fmt::Display, has: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    if has("curl") {
        lines.push(format!(
            "  curl http://{ip}/                       # answers with the pod's name"
        ));
    } else if has("wget") {
        lines.push(format!(
            "  wget -qO- http://{ip}/                  # answers with the pod's name"
        ));
    } else {
        lines.push(format!(
            "  http://{ip}/ in a browser               # answers with the pod's name"
        ));
    }
    if has("nc") {
        lines.push(format!(
            "  echo hi | nc -u -w1 {ip} 53              # UDP too"
        ));
    } else if has("bash") {
        lines.push(format!("  echo hi > /dev/udp/{ip}/53               # UDP too (bash; install nc to see the answer)"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::try_commands;

    #[test]
    fn suggests_only_tools_the_machine_has() {
        let all = try_commands("127.0.0.9", |_| true).join("\n");
        assert!(
            all.contains("curl http://127.0.0.9/") && all.contains("nc -u"),
            "{all}"
        );
        let none = try_commands("127.0.0.9", |_| false).join("\n");
        assert!(
            !none.contains("curl") && !none.contains("nc ") && !none.contains("wget"),
            "{none}"
        );
        let bash_wget = try_commands("127.0.0.9", |c| c == "bash" || c == "wget").join("\n");
        assert!(bash_wget.contains("wget -qO-") && bash_wget.contains("/dev/udp/127.0.0.9/53"));
        assert!(!bash_wget.contains("nc -u"));
    }
}
