//! The l2 speaker tests' cluster: network namespaces, mock-cloud, the l2 controller and one
//! speaker per node, with the helpers the tests share (ownership, failover timing).

use super::*;

pub(crate) struct Cluster {
    pub(crate) topo: Topology,
    pub(crate) dir: PathBuf,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) _cloud: Proc,
    pub(crate) _servers: Vec<Proc>,
    pub(crate) controller: Option<Proc>,
    pub(crate) speakers: Vec<Option<Proc>>,
    pub(crate) restarts: usize,
    /// VIPs made local on every node so far.
    pub(crate) local_vips: BTreeSet<String>,
}

impl Cluster {
    /// The topology, mock-cloud (dual-stack Service ranges), the CRDs, pools and
    /// advertisement, three nodes with their speakers, and — with `controller` — the l2
    /// controller.
    pub(crate) fn start(controller: bool) -> Cluster {
        kubectl_path();
        let topo = Topology::new(3);
        let dir = scratch_dir("l2-speaker");
        let kubeconfig = dir.join("kubeconfig");
        let mut cmd = topo.client.cmd(&[]);
        cmd.arg(binary("mock-cloud"))
            .args(["serve", "--nodes", "0"])
            .args(["--listen", &format!("{}:{API_PORT}", topo.client.ip4)])
            .args([
                "--service-cluster-ip-range",
                "10.96.0.0/12,fd00:10:96::/112",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        let mut cloud = Proc::spawn("mock-cloud[l2]", cmd, dir.join("mock-cloud.log"));
        cloud.wait_for_line("mock-cloud: fault injection at", Duration::from_secs(30));
        let mut servers = vec![];
        for (i, h) in topo.nodes.iter().enumerate() {
            let mut c = h.cmd(&[]);
            c.arg(std::env::current_exe().expect("test exe"))
                .args(["--exact", "helper_node_server", "--nocapture"])
                .env("BERTH_L2_SERVER", format!("node-{}", i + 1));
            servers.push(Proc::spawn(
                &format!("server[node-{}]", i + 1),
                c,
                dir.join(format!("server-{}.log", i + 1)),
            ));
        }
        let mut c = Cluster {
            topo,
            dir,
            kubeconfig,
            _cloud: cloud,
            _servers: servers,
            controller: None,
            speakers: vec![],
            restarts: 0,
            local_vips: BTreeSet::new(),
        };
        c.install_pools();
        let nodes: Vec<Value> = c
            .topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("node-{}", i + 1)},
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": h.ip4}],
                        "conditions": [{"type": "Ready", "status": "True"}]
                    }
                })
            })
            .collect();
        c.apply(&nodes);
        for (i, h) in c.topo.nodes.clone().iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let n = c.get("node", &name).expect("node exists");
            if n["status"]["addresses"][0]["address"] != h.ip4.as_str() {
                c.kubectl(&[
                    "patch",
                    "node",
                    &name,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &json!({"status": {"addresses": [{"type": "InternalIP", "address": h.ip4}]}})
                        .to_string(),
                ])
                .expect("patch node address");
            }
        }
        for i in 0..3 {
            c.speakers.push(None);
            c.start_speaker(i);
        }
        if controller {
            c.start_controller();
        }
        c
    }

    /// The CRDs from deploy/, the pools, and one L2Advertisement for `bridge` and `bulk`.
    pub(crate) fn install_pools(&self) {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
        self.kubectl(&["apply", "-f", crds.to_str().expect("utf-8 path")])
            .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
        wait_for(
            "the berth.io resources to be served",
            Duration::from_secs(20),
            || {
                self.kubectl(&["get", "ipaddresspools,l2advertisements"])
                    .ok()
            },
        );
        let pool = |name: &str, addresses: &[&str], auto_assign: bool| {
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
                   "metadata": {"name": name},
                   "spec": {"addresses": addresses, "autoAssign": auto_assign}})
        };
        self.apply(&[
            pool("bridge", &BRIDGE_POOL, true),
            pool("bulk", &[BULK_POOL], false),
            pool("dark", &[DARK_POOL], false),
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "L2Advertisement",
                   "metadata": {"name": "bridge"},
                   "spec": {"ipAddressPools": ["bridge", "bulk"]}}),
        ]);
    }

    /// `berth controller --provider l2`, in the client namespace.
    pub(crate) fn start_controller(&mut self) {
        let mut c = self.topo.client.cmd(&[]);
        c.arg(binary("berth"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--provider", "l2", "--cluster-name", "l2-speaker"])
            .args(["--leader-elect", "false", "--metrics-listen", "off"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        self.restarts += 1;
        let mut p = Proc::spawn(
            "berth[l2 controller]",
            c,
            self.dir.join(format!("controller-{}.log", self.restarts)),
        );
        p.wait_for_line("Caches synced; reconciling", Duration::from_secs(30));
        self.controller = Some(p);
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.topo.client.ns])
            .arg(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub(crate) fn apply(&self, objs: &[Value]) {
        let f = self.dir.join(format!("m-{}.json", rand_name()));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objs});
        std::fs::write(&f, list.to_string()).expect("write manifest");
        self.kubectl(&["apply", "-f", f.to_str().expect("utf8")])
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }

    pub(crate) fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.kubectl(&["get", kind, name, "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    pub(crate) fn start_speaker(&mut self, i: usize) {
        let h = &self.topo.nodes[i];
        let mut c = h.cmd(&[]);
        c.arg(binary("berth"))
            .arg("speaker")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &format!("node-{}", i + 1)])
            .args(["--memberlist-bind", &h.ip4])
            .arg("--membership-key-file")
            .arg(self.key_file())
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        self.restarts += 1;
        let mut p = Proc::spawn(
            &format!("speaker[node-{}]", i + 1),
            c,
            self.dir
                .join(format!("speaker-{}-{}.log", i + 1, self.restarts)),
        );
        p.wait_for_line("taking part in elections", Duration::from_secs(30));
        self.speakers[i] = Some(p);
    }

    /// A LoadBalancer Service of our class: returns the VIP the controller gives it, made
    /// local on every node (the listener stands in for kube-proxy).
    pub(crate) fn service(&mut self, name: &str, port: u16, extra: Value) -> String {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                     "selector": {"app": name},
                     "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}]}
        });
        json_merge(&mut svc, &extra);
        self.apply(&[svc]);
        let vip = wait_for(
            &format!("the controller to give {name} a VIP"),
            Duration::from_secs(20),
            || {
                let s = self.get("service", name)?;
                let ing = &s["status"]["loadBalancer"]["ingress"][0];
                assert!(
                    ing.is_null() || ing["ipMode"] == "VIP",
                    "{name}: ingress {ing}"
                );
                ing["ip"].as_str().map(str::to_string)
            },
        );
        if self.local_vips.insert(vip.clone()) {
            self.topo.add_vip_everywhere(&vip);
        }
        println!("l2: the controller gave {name} {vip}");
        vip
    }

    pub(crate) fn announcing(&self, svc: &str) -> Option<String> {
        let s = self.get("service", svc)?;
        s["metadata"]["annotations"]["berth.io/announcing-node"]
            .as_str()
            .map(str::to_string)
    }

    /// The membership key file every speaker reads (written with [`KEY_1`] at first).
    pub(crate) fn key_file(&self) -> PathBuf {
        let f = self.dir.join("membership-key");
        if !f.exists() {
            std::fs::write(&f, format!("{KEY_1}\n")).expect("write the key file");
        }
        f
    }

    pub(crate) fn node_index(name: &str) -> usize {
        name.trim_start_matches("node-")
            .parse::<usize>()
            .expect("node-N")
            - 1
    }
}

pub(crate) fn json_merge(a: &mut Value, b: &Value) {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(x) if x.is_object() && v.is_object() => json_merge(x, v),
                _ => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Whether `ip` lies in `range` (`FIRST-LAST`).
pub(crate) fn in_range(ip: &str, range: &str) -> bool {
    let (a, b) = range.split_once('-').expect("FIRST-LAST");
    let p = |s: &str| s.parse::<std::net::IpAddr>().expect("an address");
    (p(a)..=p(b)).contains(&p(ip))
}

pub(crate) fn rand_name() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The one MAC answering `vip` (ARP or NDP) once things settle; panics on two.
pub(crate) fn single_owner(c: &Cluster, vip: &str) -> String {
    wait_for(
        &format!("exactly one MAC answering {vip}"),
        Duration::from_secs(20),
        || {
            let macs = if vip.contains(':') {
                ndisc6_macs(&c.topo.client, vip)
            } else {
                arping_macs(&c.topo.client, vip, "1")
            };
            assert!(macs.len() <= 1, "two MACs answer {vip}: {macs:?}");
            macs.into_iter().next()
        },
    )
}

/// Samples ARP for a VIP until stopped; returns (samples, samples with two MACs).
pub(crate) fn sampler(
    client: Host,
    vip: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<Vec<String>>)> {
    std::thread::spawn(move || {
        let (mut n, mut bad) = (0, vec![]);
        while !stop.load(Ordering::Relaxed) {
            let m = arping_macs(&client, &vip, "1");
            n += 1;
            if m.len() > 1 {
                bad.push(m);
            }
        }
        (n, bad)
    })
}

pub(crate) fn stats(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s[s.len() / 2], *s.last().expect("runs"))
}

/// Kills (or cuts off) the node announcing `vip`; returns the time until the client's
/// neighbour entry for the VIP names another node (whose server TCP must then reach).
pub(crate) fn failover_once(c: &mut Cluster, vip: &str, cut_link: bool) -> Duration {
    let owner_mac = single_owner(c, vip);
    let owner = c.topo.node_by_mac(&owner_mac).expect("owner is a node");
    // The client talks to the VIP: its neighbour entry holds the owner's MAC.
    let who = wait_for(
        "the VIP to answer over TCP",
        Duration::from_secs(10),
        || tcp_ask(&c.topo.client, vip, PORT, "1"),
    );
    assert_eq!(who, format!("node-{}", owner + 1));
    assert_eq!(
        neigh(&c.topo.client, vip).as_deref(),
        Some(owner_mac.as_str())
    );
    let t0 = Instant::now();
    if cut_link {
        c.topo.set_port(&c.topo.nodes[owner].clone(), false);
    } else if let Some(p) = c.speakers[owner].as_mut() {
        p.kill();
    }
    // The figure is the moment the client's neighbour entry names another node, polled as
    // fast as `ip neigh` answers (a 100 ms poll would add up to 100 ms); then TCP must reach
    // that node through the VIP (not counted).
    let (took, new) = loop {
        if let Some(new) = neigh(&c.topo.client, vip)
            .and_then(|mac| c.topo.node_by_mac(&mac))
            .filter(|n| *n != owner)
        {
            break (t0.elapsed(), new);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the VIP never moved from node-{}",
            owner + 1
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_for(
        "TCP through the VIP to reach the new node",
        Duration::from_secs(10),
        || {
            let who = tcp_ask(&c.topo.client, vip, PORT, "0.5")?;
            (who == format!("node-{}", new + 1)).then_some(())
        },
    );
    if cut_link {
        c.topo.set_port(&c.topo.nodes[owner].clone(), true);
    } else {
        c.speakers[owner] = None;
        c.start_speaker(owner);
    }
    // Let the returning node rejoin (the VIP may move back to it, by handover).
    std::thread::sleep(Duration::from_secs(3));
    took
}
