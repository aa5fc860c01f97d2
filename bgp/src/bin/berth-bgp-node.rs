//! A small BGP node for tests and benchmarks: runs a [`Speaker`] from a JSON config, takes
//! route commands as JSON lines on stdin and prints each peer status change as a JSON line.
//! SIGTERM or SIGINT: graceful shutdown (withdraw, Cease, close), exit 0.
//!
//! Config: `{"listen": "10.0.0.2:179", "peers": [PeerConfig...], "routes": [Route...]}`.
//! Commands: `{"announce": Route}`, `{"withdraw": "10.1.0.1/32"}`, `{"set_routes": [Route...]}`.

use std::net::SocketAddr;

use berth_bgp::{IpNet, PeerConfig, Route, Speaker};
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    listen: Option<SocketAddr>,
    peers: Vec<PeerConfig>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cmd {
    Announce(Route),
    Withdraw(IpNet),
    SetRoutes(Vec<Route>),
}

/// Longest command line accepted.
const MAX_LINE: usize = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: berth-bgp-node CONFIG.json")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let cfg: Config = serde_json::from_str(&text).map_err(|e| format!("parse {path}: {e}"))?;
    let speaker = Speaker::new();
    if let Some(l) = cfg.listen {
        speaker.listen(l).await?;
    }
    speaker.set_routes(cfg.routes);
    for p in cfg.peers {
        let addr = p.address;
        let mut rx = speaker.add_peer(p)?;
        tokio::spawn(async move {
            loop {
                let line = serde_json::json!({"peer": addr, "status": &*rx.borrow_and_update()});
                println!("{line}");
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            l = lines.next_line(), if stdin_open => match l {
                Ok(Some(l)) if l.len() <= MAX_LINE => match serde_json::from_str::<Cmd>(&l) {
                    Ok(Cmd::Announce(r)) => speaker.announce(r),
                    Ok(Cmd::Withdraw(p)) => {
                        speaker.withdraw(p);
                    }
                    Ok(Cmd::SetRoutes(r)) => speaker.set_routes(r),
                    Err(e) => eprintln!("bad command: {e}"),
                },
                Ok(Some(_)) => eprintln!("command line too long"),
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
    speaker.shutdown().await;
    // Exit here: the runtime would otherwise wait for the blocking stdin reader.
    std::process::exit(0)
}
