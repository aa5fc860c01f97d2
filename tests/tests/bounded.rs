//! `berth controller --provider http` against a load balancer API that misbehaves
//! ([`FakeLb`]), with `mock-cloud serve` as the Kubernetes API: berth's calls, events,
//! memory, log lines and messages stay bounded whatever the API answers, and credentials in
//! the endpoint URL never show.

use berth_tests::fake_lb::{FakeLb, HUGE_BODY_BYTES, Mode, peak_rss_bytes, start_controller};
use berth_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The window the call and event budgets are measured over.
const WINDOW: Duration = Duration::from_secs(40);

/// How many times an event was emitted (one object may stand for several).
fn emissions(e: &Value) -> u64 {
    e["count"]
        .as_u64()
        .or_else(|| e["series"]["count"].as_u64())
        .unwrap_or(1)
        .max(1)
}

fn warnings(cloud: &Cloud, name: &str) -> (u64, Vec<String>) {
    let events = cloud.events(name);
    let w: Vec<&Value> = events.iter().filter(|e| e["type"] == "Warning").collect();
    (
        w.iter().map(|e| emissions(e)).sum(),
        w.iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

fn all_emissions(cloud: &Cloud, name: &str) -> u64 {
    cloud.events(name).iter().map(emissions).sum()
}

/// A cloud, a fake LB API in `mode` and a controller driving it, with the Service `web`.
fn setup(tag: &str, mode: Mode) -> (Cloud, FakeLb, Controller) {
    let cloud = Cloud::start(tag);
    let lb = FakeLb::start(mode);
    let berth = start_controller(
        &cloud,
        &lb.url(),
        &format!("berth-{tag}"),
        &["--default-class"],
    );
    cloud.apply(&[pod("web-1", "web", None), tcp_service("web", "web", 80)]);
    (cloud, lb, berth)
}

/// The longest line of a log, in bytes.
fn longest_line(text: &str) -> usize {
    text.lines().map(str::len).max().unwrap_or(0)
}

/// The LB API rejects every write with a message that differs each time (a request id):
/// berth backs off and does not publish a new Warning per attempt.
#[test]
fn rejected_writes_with_changing_messages_cost_few_calls_and_events() {
    let (cloud, lb, berth) = setup("reject", Mode::RejectWrites);
    wait_for("the first rejected PUT", DEADLINE, || {
        (lb.count(Some("PUT"), "/v1/loadbalancers/") > 0).then_some(())
    });
    let started = Instant::now();
    let before = lb.calls_to_load_balancers();
    std::thread::sleep(WINDOW.saturating_sub(started.elapsed()));
    let calls = lb.calls_to_load_balancers() - before;
    let (warned, notes) = warnings(&cloud, "web");
    println!(
        "rejected writes: {calls} provider calls in {WINDOW:?} ({:?}); {warned} Warning events",
        lb.counts()
    );
    for n in notes.iter().take(3) {
        println!("  note: {n}");
    }
    assert!(berth.proc.output().contains("Reconcile failed"));
    assert!(calls <= 8, "{calls} provider calls in {WINDOW:?}");
    assert!(warned <= 8, "{warned} Warning events: {notes:?}");
}

/// The LB API accepts the load balancer but never gives it an address: berth looks again
/// with growing pauses and does not publish an event per look.
#[test]
fn pending_address_is_polled_with_backoff() {
    let (cloud, lb, _berth) = setup("pending", Mode::Pending);
    wait_for("the load balancer to be created", DEADLINE, || {
        (lb.stored() > 0).then_some(())
    });
    let started = Instant::now();
    let before = lb.calls_to_load_balancers();
    let events_before = all_emissions(&cloud, "web");
    std::thread::sleep(WINDOW.saturating_sub(started.elapsed()));
    let calls = lb.calls_to_load_balancers() - before;
    let events = all_emissions(&cloud, "web") - events_before;
    println!(
        "pending address: {calls} GETs/PUTs and {events} events in {WINDOW:?} ({:?})",
        lb.counts()
    );
    let svc = cloud.service("web").expect("Service web");
    assert!(ingress_ip(&svc).is_none(), "no address was ever given");
    assert!(calls <= 8, "{calls} GETs/PUTs in {WINDOW:?}");
    assert!(events <= 2, "{events} events in {WINDOW:?}");
}

/// Every answer is a 200 MiB body: berth reads at most 1 MiB of it, says so, and keeps
/// running with a small memory footprint.
#[test]
fn a_200_mib_response_body_does_not_blow_up_memory() {
    let (cloud, lb, mut berth) = setup("huge-body", Mode::HugeBody);
    let line = berth
        .proc
        .wait_for_line("Reconcile failed", Duration::from_secs(60));
    // A few more attempts, each meeting the 200 MiB body again.
    wait_for("three calls to the LB API", Duration::from_secs(60), || {
        (lb.calls_to_load_balancers() >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        berth.proc.try_exit().is_none(),
        "berth exited:\n{}",
        berth.proc.output()
    );
    let peak = peak_rss_bytes(berth.pid()).expect("VmHWM of berth");
    println!(
        "200 MiB body ({HUGE_BODY_BYTES} bytes): {} calls, berth peak RSS {:.1} MiB; error line: {}",
        lb.calls_to_load_balancers(),
        peak as f64 / (1024.0 * 1024.0),
        &line[..line.len().min(300)]
    );
    assert!(
        line.contains("larger than 1 MiB"),
        "the error says why: {}",
        &line[..line.len().min(2000)]
    );
    assert!(peak < 100 * 1024 * 1024, "peak RSS {peak} bytes");
    drop(cloud);
}

/// A 5 MB error message neither becomes a 5 MB log line nor a 5 MB event note or condition.
#[test]
fn a_5_mb_error_message_is_not_logged_or_published_whole() {
    let (cloud, lb, berth) = setup("huge-error", Mode::HugeError(5_000_000));
    wait_for("two rejected PUTs", Duration::from_secs(60), || {
        (lb.count(Some("PUT"), "/v1/") >= 2).then_some(())
    });
    wait_for("a failed reconcile", Duration::from_secs(60), || {
        berth
            .proc
            .output()
            .contains("Reconcile failed")
            .then_some(())
    });
    // Time for the event and the condition to be written.
    std::thread::sleep(Duration::from_secs(3));
    let log = berth.proc.output();
    let longest_log = longest_line(&log);
    let events = cloud.events("web");
    let longest_note = events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().len())
        .max()
        .unwrap_or(0);
    let svc = cloud.service("web").expect("Service web");
    let cond = condition(&svc).map(|c| c["message"].as_str().unwrap_or_default().len());
    println!(
        "5 MB error message: longest log line {longest_log} bytes, longest event note \
         {longest_note} bytes, condition message {cond:?} bytes"
    );
    let (warned, _) = warnings(&cloud, "web");
    assert!(warned > 0, "a Warning event was published");
    assert!(longest_log <= 4096, "a log line of {longest_log} bytes");
    assert!(
        longest_note <= 1024,
        "an event note of {longest_note} bytes"
    );
    assert!(
        cond.is_some_and(|c| c <= 1024),
        "condition message of {cond:?} bytes"
    );
}

/// `http://user:password@host/` as the endpoint: the password (and the user) never appear
/// in berth's log, the Service's events or its conditions, whatever fails.
#[test]
fn credentials_in_the_endpoint_never_show() {
    const SECRET: &str = "s3cr3t-Pa55";
    const USER: &str = "lb-admin";
    let cloud = Cloud::start("creds");
    let lb = FakeLb::start(Mode::HangUp);
    let endpoint = format!("http://{USER}:{SECRET}@{}/", lb.addr());
    let berth = start_controller(&cloud, &endpoint, "berth-creds", &["--default-class"]);
    cloud.apply(&[pod("web-1", "web", None), tcp_service("web", "web", 80)]);

    let leaks = |what: &str| -> Result<(), String> {
        let log = berth.proc.output();
        let svc = cloud
            .service("web")
            .map(|s| s.to_string())
            .unwrap_or_default();
        let events: Vec<String> = cloud.events("web").iter().map(Value::to_string).collect();
        for (place, text) in [
            ("log", log.as_str()),
            ("Service", svc.as_str()),
            ("events", &events.join("\n")),
        ] {
            for needle in [SECRET, USER] {
                if text.contains(needle) {
                    let at = text.find(needle).unwrap_or(0);
                    let from = at.saturating_sub(200);
                    return Err(format!(
                        "{what}: {needle:?} appears in the {place}: …{}…",
                        &text[from..(at + 100).min(text.len())]
                    ));
                }
            }
        }
        Ok(())
    };

    // Connections dropped without an answer: reqwest's errors name the URL.
    wait_for("a failed reconcile", Duration::from_secs(60), || {
        berth
            .proc
            .output()
            .contains("Reconcile failed")
            .then_some(())
    });
    wait_for("a Warning event", Duration::from_secs(60), || {
        (warnings(&cloud, "web").0 > 0).then_some(())
    });
    leaks("connections dropped").unwrap();

    // Rejections.
    lb.set_mode(Mode::RejectWrites);
    let puts = lb.count(Some("PUT"), "/v1/");
    wait_for("a rejected PUT", Duration::from_secs(60), || {
        (lb.count(Some("PUT"), "/v1/") > puts).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    leaks("writes rejected").unwrap();

    // And success.
    lb.set_mode(Mode::Normal);
    wait_for("an address", Duration::from_secs(120), || {
        cloud
            .service("web")
            .and_then(|s| s.pointer("/status/loadBalancer/ingress/0/ip").cloned())
    });
    leaks("load balancer ready").unwrap();
    let log = berth.proc.output();
    println!(
        "credentials: checked {} log bytes, {} events, the Service's conditions",
        log.len(),
        cloud.events("web").len()
    );
}
