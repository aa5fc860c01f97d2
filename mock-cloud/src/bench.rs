//! `mock-cloud bench`: starts `mock-cloud serve` as a child process and measures it over
//! HTTP as a client sees it — creates, lists, watch-event latency — and its peak RSS.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Services to create.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Concurrent watchers of all Services.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
    /// Concurrent writers (one connection each).
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Full lists to time.
    #[arg(long, default_value_t = 5)]
    list_runs: usize,
    /// Creates per second, paced across the writers (open loop: each create is due at a
    /// fixed time and its latencies count from then, so a stalled server cannot hide its
    /// backlog). 0: as fast as the writers go, which measures the server saturated.
    #[arg(long, default_value_t = 0)]
    rate: u32,
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the mock-cloud binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--nodes", "0", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mock-cloud serve")?;
        let out = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(out).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(u) = line.strip_prefix("mock-cloud: API server listening on http://") {
                addr = Some(u.trim().to_string());
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.context("mock-cloud serve did not print its address")?;
        Ok(Server { child, addr })
    }

    /// Peak resident set size of the server, in KiB (VmHWM).
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(
    s: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mock-cloud")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    s.ready().await?;
    let resp = s.send_request(req).await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// N of an ADDED event's `bench-N` Service, from a watch line as mock-cloud writes it
/// (`{"type":"ADDED","object":{..."metadata":{"name":"bench-N",...`).
fn added_bench_index(line: &[u8]) -> Option<usize> {
    const ADDED: &[u8] = br#"{"type":"ADDED","#;
    const NAME: &[u8] = br#""name":"bench-"#;
    if !line.starts_with(ADDED) {
        return None;
    }
    let at = line.windows(NAME.len()).position(|w| w == NAME)? + NAME.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// One watcher: records when each `bench-N` Service's ADDED event arrives.
async fn watch_all(
    addr: String,
    rv: String,
    n: usize,
    origin: Instant,
) -> anyhow::Result<Vec<Option<Duration>>> {
    let mut s = connect(&addr).await?;
    let req = hyper::Request::builder()
        .uri(format!("/api/v1/services?watch=1&resourceVersion={rv}"))
        .header("host", "mock-cloud")
        .body(Full::new(Bytes::new()))?;
    let resp = s.send_request(req).await?;
    let mut body = resp.into_body();
    let mut seen: Vec<Option<Duration>> = vec![None; n];
    let mut got = 0;
    let mut buf: Vec<u8> = Vec::new();
    while got < n {
        let Some(frame) = body.frame().await else {
            bail!("watch ended after {got} of {n} events")
        };
        let at = origin.elapsed();
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        // The instrument must not compete with the server for the CPU: each line is
        // scanned for its type and the object's name, not parsed (10 watchers parsing
        // 10,000 events each took a fifth of the machine's CPU while the server ran).
        let mut start = 0;
        while let Some(len) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + len];
            start += len + 1;
            if let Some(i) = added_bench_index(line)
                && i < n
                && seen[i].is_none()
            {
                seen[i] = Some(at);
                got += 1;
            }
        }
        buf.drain(..start);
    }
    Ok(seen)
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.services > 0 && a.writers > 0,
        "--services and --writers must be > 0"
    );
    let server = Server::start()?;
    let addr = server.addr.clone();
    println!(
        "mock-cloud bench: {} Services, {} writers, {} watchers, {}, server at {addr}",
        a.services,
        a.writers,
        a.watchers,
        if a.rate > 0 {
            format!("{} creates/s offered", a.rate)
        } else {
            "creates as fast as the writers go".to_string()
        }
    );
    let mut c = connect(&addr).await?;
    let (_, list) = request(&mut c, "GET", "/api/v1/services?limit=1", Vec::new()).await?;
    let list: serde_json::Value = serde_json::from_slice(&list)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();

    let origin = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..a.watchers {
        watchers.push(tokio::spawn(watch_all(
            addr.clone(),
            rv.clone(),
            a.services,
            origin,
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Create, recording when each request was sent.
    let sent: Arc<Vec<std::sync::Mutex<Option<Duration>>>> = Arc::new(
        (0..a.services)
            .map(|_| std::sync::Mutex::new(None))
            .collect(),
    );
    // And when its response came back.
    let answered: Arc<Vec<std::sync::Mutex<Option<Duration>>>> = Arc::new(
        (0..a.services)
            .map(|_| std::sync::Mutex::new(None))
            .collect(),
    );
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..a.writers {
        let addr = addr.clone();
        let sent = sent.clone();
        let answered = answered.clone();
        let (n, writers_n, rate) = (a.services, a.writers, a.rate);
        writers.push(tokio::spawn(async move {
            let mut c = connect(&addr).await?;
            let paced_from = tokio::time::Instant::now() + Duration::from_millis(100);
            for i in (w..n).step_by(writers_n) {
                let body = serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("bench-{i}"), "labels": {"bench": "true"}},
                    "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}
                });
                let due = if rate > 0 {
                    let due = paced_from + Duration::from_secs_f64(i as f64 / f64::from(rate));
                    tokio::time::sleep_until(due).await;
                    due.into_std().saturating_duration_since(origin)
                } else {
                    origin.elapsed()
                };
                *sent[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(due);
                let (code, resp) = request(
                    &mut c,
                    "POST",
                    "/api/v1/namespaces/default/services",
                    serde_json::to_vec(&body)?,
                )
                .await?;
                *answered[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(origin.elapsed());
                if code != 201 {
                    bail!("create bench-{i}: HTTP {code}: {}", String::from_utf8_lossy(&resp));
                }
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    println!(
        "create: {} Services in {:.2} s ({:.0}/s)",
        a.services,
        create_secs,
        a.services as f64 / create_secs
    );

    let at = |v: &[std::sync::Mutex<Option<Duration>>], i: usize| {
        v[i].lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_default()
    };
    let mut round_trips: Vec<f64> = (0..a.services)
        .map(|i| at(&answered, i).saturating_sub(at(&sent, i)).as_secs_f64() * 1000.0)
        .collect();
    round_trips.sort_by(|x, y| x.total_cmp(y));
    println!(
        "create request latency (sent -> 201 received): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
        round_trips.last().copied().unwrap_or(f64::NAN)
    );

    let mut latencies = Vec::new();
    for w in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .context("watchers did not see every event within 120 s")???;
        for (i, at) in seen.into_iter().enumerate() {
            let sent_at = sent[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_default();
            if let Some(at) = at {
                latencies.push(at.saturating_sub(sent_at).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    if a.watchers > 0 {
        println!(
            "watch-event latency (create sent -> ADDED received), {} watchers, {} events: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            a.watchers,
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN)
        );
    }

    let mut full = Vec::new();
    let mut items = 0;
    for _ in 0..a.list_runs.max(1) {
        let t = Instant::now();
        let (code, body) = request(&mut c, "GET", "/api/v1/services", Vec::new()).await?;
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(code == 200, "list: HTTP {code}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        items = v["items"].as_array().map(|a| a.len()).unwrap_or(0);
    }
    full.sort_by(|x, y| x.total_cmp(y));
    let mut paged = Vec::new();
    for _ in 0..a.list_runs.max(1) {
        let t = Instant::now();
        let mut cont = String::new();
        loop {
            let path = format!("/api/v1/services?limit=500&continue={cont}");
            let (code, body) = request(&mut c, "GET", &path, Vec::new()).await?;
            anyhow::ensure!(code == 200, "paged list: HTTP {code}");
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            match v["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => cont = next.to_string(),
                _ => break,
            }
        }
        paged.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    paged.sort_by(|x, y| x.total_cmp(y));
    println!(
        "list all ({items} items): median {:.1} ms over {} runs; in pages of 500: median {:.1} ms",
        percentile(&full, 0.5),
        full.len(),
        percentile(&paged, 0.5)
    );
    match server.peak_rss_kib() {
        Some(kib) => println!("server peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS: unavailable (no /proc)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::added_bench_index;

    #[test]
    fn a_watch_line_gives_its_bench_index_only_when_added() {
        let added = br#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"bench":"true"},"name":"bench-42","namespace":"default"}}}"#;
        assert_eq!(added_bench_index(added), Some(42));
        let modified = br#"{"type":"MODIFIED","object":{"metadata":{"name":"bench-42"}}}"#;
        assert_eq!(added_bench_index(modified), None);
        let other = br#"{"type":"ADDED","object":{"metadata":{"name":"web"}}}"#;
        assert_eq!(added_bench_index(other), None);
    }
}
