//! Allocation time for 10,000 Services with the l2 allocator: first allocation, re-ensure
//! (keep), restore at start-up, and release. `cargo bench -p berth-providers --bench l2_alloc`.

use berth_providers::l2::{AllocRequest, Allocator, PoolSpec, ServiceAllocation};
use berth_providers::{IpFamily, Protocol};
use std::time::{Duration, Instant};

const N: usize = 10_000;

fn request(i: usize) -> AllocRequest {
    AllocRequest {
        uid: format!("uid-{i}"),
        namespace: format!("ns-{}", i % 50),
        name: format!("svc-{i}"),
        requested_field: "spec.loadBalancerIP".into(),
        ports: vec![(80, Protocol::Tcp), (443, Protocol::Tcp)],
        families: vec![IpFamily::IPv4],
        // Every tenth Service shares an address with its neighbours (disjoint ports).
        sharing_key: i.is_multiple_of(10).then(|| format!("key-{}", i / 100)),
        ..Default::default()
    }
}

fn pools() -> Vec<PoolSpec> {
    let mut v: Vec<PoolSpec> = (0..8)
        .map(|p| PoolSpec {
            name: format!("small-{p}"),
            addresses: vec![format!("10.{p}.0.0/28")],
            auto_assign: true,
            avoid_buggy_ips: true,
            allocation: Some(ServiceAllocation {
                priority: 1,
                namespaces: vec![format!("ns-{p}")],
                ..Default::default()
            }),
        })
        .collect();
    v.push(PoolSpec {
        name: "big".into(),
        addresses: vec!["172.16.0.0/16".into(), "2001:db8::/112".into()],
        auto_assign: true,
        avoid_buggy_ips: true,
        allocation: None,
    });
    v
}

fn report(what: &str, mut samples: Vec<Duration>) {
    let total: Duration = samples.iter().sum();
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "{what:<34} total {:>9.3} ms   median {:>7.2} µs   p99 {:>7.2} µs   max {:>8.2} µs",
        total.as_secs_f64() * 1e3,
        pct(50).as_secs_f64() * 1e6,
        pct(99).as_secs_f64() * 1e6,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
}

fn main() {
    let reqs: Vec<AllocRequest> = (0..N).map(request).collect();
    let mut a = Allocator::new();
    let (res, _) = a.set_pools(&pools());
    assert!(res.iter().all(|r| r.result.is_ok()));

    let mut first = Vec::with_capacity(N);
    for r in &reqs {
        let t = Instant::now();
        a.assign(r).expect("allocation");
        first.push(t.elapsed());
    }
    report(&format!("allocate {N} Services"), first);

    let mut keep = Vec::with_capacity(N);
    for r in &reqs {
        let t = Instant::now();
        a.assign(r).expect("keep");
        keep.push(t.elapsed());
    }
    report(&format!("re-ensure {N} (keep address)"), keep);

    let published: Vec<_> = reqs
        .iter()
        .map(|r| a.assignment(&r.uid).expect("assigned").ips.clone())
        .collect();
    let mut b = Allocator::new();
    b.set_pools(&pools());
    let mut restore = Vec::with_capacity(N);
    for (r, ips) in reqs.iter().zip(&published) {
        let t = Instant::now();
        b.restore(r, ips).expect("restore");
        restore.push(t.elapsed());
    }
    report(&format!("restore {N} at start-up"), restore);

    let mut release = Vec::with_capacity(N);
    for r in &reqs {
        let t = Instant::now();
        a.release(&r.uid);
        release.push(t.elapsed());
    }
    report(&format!("release {N}"), release);

    let t = Instant::now();
    let stats = b.stats();
    println!(
        "stats over {} pools                  {:>9.3} ms   (big: {} assigned)",
        stats.len(),
        t.elapsed().as_secs_f64() * 1e3,
        stats["big"].assigned_ipv4
    );
}
