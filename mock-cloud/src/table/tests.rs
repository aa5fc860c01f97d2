use super::custom::{Step, parse_json_path};
use super::format::parse_time;
use super::*;
use crate::registry::{Registry, builtin_resources};

fn now() -> DateTime<Utc> {
    parse_time("2025-01-01T12:00:00Z").unwrap()
}

fn info(group: &str, kind: &str) -> ResourceInfo {
    builtin_resources()
        .into_iter()
        .find(|i| i.group == group && i.kind == kind)
        .unwrap()
}

fn headers(t: &Value) -> Vec<(String, i64)> {
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn names(t: &Value) -> Vec<String> {
    headers(t).into_iter().map(|(n, _)| n).collect()
}

fn table1(group: &str, kind: &str, obj: &Value) -> Value {
    to_table(
        &info(group, kind),
        &[obj],
        true,
        "Metadata",
        json!({}),
        now(),
    )
}

fn cells(t: &Value) -> &Vec<Value> {
    t["rows"][0]["cells"].as_array().unwrap()
}

#[test]
fn accept_detection() {
    assert!(wants_table(
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    ));
    assert!(wants_table(
        "application/json; as=Table; v=v1beta1; g=meta.k8s.io"
    ));
    assert!(!wants_table("application/json"));
    assert!(!wants_table(
        "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    ));
    assert!(!wants_table("application/json;as=Table;v=v2;g=meta.k8s.io"));
}

#[test]
fn durations() {
    let d = chrono::TimeDelta::seconds;
    assert_eq!(human_duration(d(-5)), "<invalid>");
    assert_eq!(human_duration(d(-1)), "0s");
    assert_eq!(human_duration(d(5)), "5s");
    assert_eq!(human_duration(d(119)), "119s");
    assert_eq!(human_duration(d(192)), "3m12s");
    assert_eq!(human_duration(d(300)), "5m");
    assert_eq!(human_duration(d(600)), "10m");
    assert_eq!(human_duration(d(179 * 60)), "179m");
    assert_eq!(human_duration(d(4 * 3600 + 120)), "4h2m");
    assert_eq!(human_duration(d(5 * 3600)), "5h");
    assert_eq!(human_duration(d(30 * 3600)), "30h");
    assert_eq!(human_duration(d(3 * 86400)), "3d");
    assert_eq!(human_duration(d(3 * 86400 + 7200)), "3d2h");
    assert_eq!(human_duration(d(100 * 86400)), "100d");
    assert_eq!(human_duration(d(800 * 86400)), "2y70d");
    assert_eq!(human_duration(d(3650 * 86400)), "10y");
}

fn lb_service(ingress: Value) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2025-01-01T11:56:48Z", "resourceVersion": "7"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"b": "2", "a": "1"},
            "ports": [
                {"port": 80, "nodePort": 31234, "protocol": "TCP"},
                {"port": 53, "nodePort": 31234, "protocol": "UDP"}
            ]
        },
        "status": {"loadBalancer": {"ingress": ingress}}
    })
}

#[test]
fn service_columns_and_cells() {
    let t = table1("", "Service", &lb_service(json!([])));
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        headers(&t),
        [
            ("Name".to_string(), 0),
            ("Type".into(), 0),
            ("Cluster-IP".into(), 0),
            ("External-IP".into(), 0),
            ("Port(s)".into(), 0),
            ("Age".into(), 0),
            ("Selector".into(), 1)
        ]
    );
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(
        cells(&t),
        &vec![
            json!("web"),
            json!("LoadBalancer"),
            json!("10.96.0.10"),
            json!("<pending>"),
            json!("80:31234/TCP,53:31234/UDP"),
            json!("3m12s"),
            json!("a=1,b=2"),
        ]
    );
    let obj = &t["rows"][0]["object"];
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert!(obj.get("spec").is_none());

    let t = table1(
        "",
        "Service",
        &lb_service(json!([{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}])),
    );
    assert_eq!(cells(&t)[3], "192.0.2.1,lb.example.com");
}

#[test]
fn cluster_ip_service_defaults() {
    let svc = json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "None"}});
    let t = table1("", "Service", &svc);
    let c = cells(&t);
    assert_eq!(c[1], "ClusterIP");
    assert_eq!(c[2], "None");
    assert_eq!(c[3], "<none>");
    assert_eq!(c[4], "<none>");
    assert_eq!(c[5], "<unknown>");
    assert_eq!(c[6], "<none>");
    let svc = json!({"metadata": {"name": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 30443}], "externalIPs": ["1.2.3.4"]}});
    let c = table1("", "Service", &svc)["rows"][0]["cells"].clone();
    assert_eq!(c[3], "1.2.3.4");
    assert_eq!(c[4], "443:30443/TCP");
}

#[test]
fn node_columns_and_status() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": "2024-12-29T12:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Mock OS"}
        }
    });
    let t = table1("", "Node", &node);
    assert_eq!(
        names(&t),
        [
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(
        cells(&t),
        &vec![
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("3d"),
            json!("v1.33.0"),
            json!("10.0.0.5"),
            json!("<none>"),
            json!("Mock OS"),
            json!("<unknown>"),
            json!("<unknown>"),
        ]
    );
    let nr = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    assert_eq!(cells(&table1("", "Node", &nr))[1], "NotReady");
    assert_eq!(cells(&table1("", "Node", &nr))[2], "<none>");
}

#[test]
fn pod_cells_basic() {
    let pod = json!({
        "metadata": {"name": "p", "creationTimestamp": "2025-01-01T11:59:55Z"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
        "status": {
            "phase": "Running", "podIP": "10.244.0.3",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"finishedAt": "2025-01-01T11:58:00Z"}}}
            ]
        }
    });
    let t = table1("", "Pod", &pod);
    assert_eq!(
        headers(&t),
        [
            ("Name".to_string(), 0),
            ("Ready".into(), 0),
            ("Status".into(), 0),
            ("Restarts".into(), 0),
            ("Age".into(), 0),
            ("IP".into(), 1),
            ("Node".into(), 1),
            ("Nominated Node".into(), 1),
            ("Readiness Gates".into(), 1)
        ]
    );
    assert_eq!(
        cells(&t),
        &vec![
            json!("p"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("3 (2m ago)"),
            json!("5s"),
            json!("10.244.0.3"),
            json!("n1"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
    let pending = json!({"metadata": {"name": "q", "deletionTimestamp": "x"}, "spec": {"containers": [{}]}, "status": {"phase": "Pending"}});
    let c = table1("", "Pod", &pending)["rows"][0]["cells"].clone();
    assert_eq!(c[1], "0/1");
    assert_eq!(c[2], "Terminating");
    assert_eq!(c[3], "0");
}

#[test]
fn small_kinds() {
    let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
    let t = table1("", "Namespace", &ns);
    assert_eq!(names(&t), ["Name", "Status", "Age"]);
    assert_eq!(cells(&t)[1], "Active");

    let cm =
        json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
    let t = table1("", "ConfigMap", &cm);
    assert_eq!(names(&t), ["Name", "Data", "Age"]);
    assert_eq!(cells(&t)[1], 3);

    let sec = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    let t = table1("", "Secret", &sec);
    assert_eq!(names(&t), ["Name", "Type", "Data", "Age"]);
    assert_eq!(cells(&t)[1], "kubernetes.io/tls");
    assert_eq!(cells(&t)[2], 2);

    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "berth-0"}});
    let t = table1("coordination.k8s.io", "Lease", &lease);
    assert_eq!(names(&t), ["Name", "Holder", "Age"]);
    assert_eq!(cells(&t)[1], "berth-0");

    let crd = json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2025-01-01T10:00:00Z"}});
    let t = table1("apiextensions.k8s.io", "CustomResourceDefinition", &crd);
    assert_eq!(names(&t), ["Name", "Created At"]);
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(cells(&t)[1], "2025-01-01T10:00:00Z");

    let sa = json!({"metadata": {"name": "default", "creationTimestamp": "2025-01-01T11:00:00Z"}});
    let t = table1("", "ServiceAccount", &sa);
    assert_eq!(cells(&t), &vec![json!("default"), json!(0), json!("60m")]);
}

#[test]
fn endpointslice_cells_format() {
    let es = json!({
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"port": 80, "name": "http"}, {"name": "dns"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
            {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4", "10.0.0.5"]}
        ]
    });
    let t = table1("discovery.k8s.io", "EndpointSlice", &es);
    assert_eq!(
        names(&t),
        ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    );
    let c = cells(&t);
    assert_eq!(c[1], "IPv4");
    assert_eq!(c[2], "80,dns");
    assert_eq!(c[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    let c = table1("discovery.k8s.io", "EndpointSlice", &empty)["rows"][0]["cells"].clone();
    assert_eq!(c[2], "<unset>");
    assert_eq!(c[3], "<unset>");
}

#[test]
fn endpoints_cells_format() {
    let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
    assert_eq!(
        cells(&table1("", "Endpoints", &ep))[1],
        "10.0.0.1:80,[fd00::1]:80"
    );
}

#[test]
fn core_event_cells() {
    let ev = json!({
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Service", "name": "web"},
        "type": "Normal", "reason": "EnsuringLoadBalancer",
        "message": "Ensuring load balancer ",
        "firstTimestamp": "2025-01-01T11:50:00Z", "lastTimestamp": "2025-01-01T11:59:30Z",
        "count": 3, "source": {"component": "berth"}
    });
    let t = table1("", "Event", &ev);
    assert_eq!(
        headers(&t),
        [
            ("Last Seen".to_string(), 0),
            ("Type".into(), 0),
            ("Reason".into(), 0),
            ("Object".into(), 0),
            ("Subobject".into(), 1),
            ("Source".into(), 1),
            ("Message".into(), 0),
            ("First Seen".into(), 1),
            ("Count".into(), 1),
            ("Name".into(), 1)
        ]
    );
    assert_eq!(
        cells(&t),
        &vec![
            json!("30s"),
            json!("Normal"),
            json!("EnsuringLoadBalancer"),
            json!("service/web"),
            json!(""),
            json!("berth"),
            json!("Ensuring load balancer"),
            json!("10m"),
            json!(3),
            json!("web.1"),
        ]
    );
}

#[test]
fn events_k8s_io_event_cells() {
    let ev = json!({
        "metadata": {"name": "e"},
        "regarding": {"kind": "Node", "name": "n1"},
        "type": "Warning", "reason": "R", "note": "hi",
        "eventTime": "2025-01-01T11:59:00.000000Z",
        "reportingController": "berth", "reportingInstance": "berth-0"
    });
    let t = table1("events.k8s.io", "Event", &ev);
    let c = cells(&t);
    assert_eq!(c[0], "60s");
    assert_eq!(c[3], "node/n1");
    assert_eq!(c[5], "berth, berth-0");
    assert_eq!(c[6], "hi");
    assert_eq!(c[8], 1);
}

#[test]
fn workloads_and_rbac() {
    let d = json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    let t = table1("apps", "Deployment", &d);
    assert_eq!(
        names(&t),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let c = cells(&t);
    assert_eq!(c[1], "2/3");
    assert_eq!(c[2], 3);
    assert_eq!(c[5], "c");
    assert_eq!(c[6], "nginx");
    assert_eq!(c[7], "app=x");

    let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "berth", "namespace": "kube-system"}, {"kind": "User", "name": "alice"}]});
    let t = table1("rbac.authorization.k8s.io", "RoleBinding", &rb);
    assert_eq!(
        names(&t),
        ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    );
    let c = cells(&t);
    assert_eq!(c[1], "ClusterRole/view");
    assert_eq!(c[3], "alice");
    assert_eq!(c[5], "kube-system/berth");

    let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    let c = table1("policy", "PodDisruptionBudget", &pdb)["rows"][0]["cells"].clone();
    assert_eq!(c[1], "50%");
    assert_eq!(c[2], "N/A");
    assert_eq!(c[3], 1);
}

#[test]
fn fallback_name_age() {
    let mut i = info("", "Service");
    i.kind = "Other".into();
    let o = json!({"metadata": {"name": "o", "creationTimestamp": "2025-01-01T11:59:00Z"}});
    let t = to_table(&i, &[&o], true, "None", json!({}), now());
    assert_eq!(names(&t), ["Name", "Age"]);
    assert_eq!(cells(&t), &vec![json!("o"), json!("60s")]);
    assert!(t["rows"][0].get("object").is_none());
}

fn widget_registry(columns: Value) -> ResourceInfo {
    let reg = Registry::with_builtins();
    let crd = json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "additionalPrinterColumns": columns}]}
    });
    reg.install_crd(&crd).unwrap().remove(0)
}

#[test]
fn custom_resource_columns() {
    let info = widget_registry(json!([
        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "First", "type": "string", "jsonPath": ".spec.items[*].name", "priority": 1},
        {"name": "Zero", "type": "string", "jsonPath": ".spec.items[0].name"},
        {"name": "App", "type": "string", "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
        {"name": "Missing", "type": "string", "jsonPath": ".spec.nope"},
        {"name": "Created", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]));
    let w = json!({
        "metadata": {"name": "w", "creationTimestamp": "2025-01-01T11:00:00Z", "labels": {"app.kubernetes.io/name": "demo"}},
        "spec": {"size": 3.0, "items": [{"name": "a"}, {"name": "b"}]},
        "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}
    });
    let t = to_table(
        &info,
        &[&w],
        true,
        "Object",
        json!({"resourceVersion": "9"}),
        now(),
    );
    assert_eq!(
        names(&t),
        [
            "Name", "Size", "Ready", "First", "Zero", "App", "Missing", "Created"
        ]
    );
    assert_eq!(t["columnDefinitions"][3]["priority"], 1);
    assert_eq!(
        t["columnDefinitions"][1]["description"],
        "Custom resource definition column (in JSONPath format): .spec.size"
    );
    assert_eq!(
        cells(&t),
        &vec![
            json!("w"),
            json!(3),
            json!("True"),
            json!("a"),
            json!("a"),
            json!("demo"),
            Value::Null,
            json!("60m"),
        ]
    );
    assert_eq!(t["metadata"]["resourceVersion"], "9");
    assert_eq!(t["rows"][0]["object"]["spec"]["size"], 3.0);
}

#[test]
fn custom_resource_default_age() {
    let info = widget_registry(json!([]));
    let w = json!({"metadata": {"name": "w", "creationTimestamp": "2025-01-01T11:59:58Z"}});
    let t = to_table(&info, &[&w], true, "Metadata", json!({}), now());
    assert_eq!(names(&t), ["Name", "Age"]);
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(cells(&t), &vec![json!("w"), json!("2s")]);
}

#[test]
fn watch_event_without_headers() {
    let svc = lb_service(json!([]));
    let t = to_table(
        &info("", "Service"),
        &[&svc],
        false,
        "Metadata",
        Value::Null,
        now(),
    );
    assert_eq!(t["columnDefinitions"], json!([]));
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
}

#[test]
fn json_path_parsing() {
    assert_eq!(
        parse_json_path("{.a[0].b}").unwrap(),
        vec![
            Step::Field("a".into()),
            Step::Index(0),
            Step::Field("b".into())
        ]
    );
    assert!(parse_json_path(".a[").is_none());
    assert!(parse_json_path("a.b").is_none());
}
