//! berth's CRDs are enforced at `kubectl apply` time, as a real cluster enforces them: the
//! committed CRD YAML is installed in mock-cloud (which evaluates the structural schema and
//! the `x-kubernetes-validations` CEL rules as kube-apiserver does), and the real kubectl
//! applies invalid objects, each refused with the rule's message and field, nothing stored;
//! valid ones are accepted, and unknown fields pruned (or, as kubectl asks by default,
//! refused). The same CRDs and valid objects pass the Python `kubernetes-validate` checks.

use berth_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn crds() -> String {
    root()
        .join("deploy/crds/berth.io_crds.yaml")
        .to_string_lossy()
        .into_owned()
}

/// A cloud with berth's CRDs installed.
fn cloud(tag: &str) -> Cloud {
    let cloud = Cloud::start(tag);
    cloud.kubectl_ok(&["apply", "-f", &crds()]);
    wait_for(
        "the CRDs to be served",
        std::time::Duration::from_secs(20),
        || cloud.try_kubectl(&["get", "ipaddresspools,bgppeers"]).ok(),
    );
    cloud
}

fn write(cloud: &Cloud, name: &str, yaml: &str) -> String {
    let p = cloud.dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).expect("write manifest");
    p.to_string_lossy().into_owned()
}

fn pool_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: berth.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// `kubectl apply` of `yaml` must fail printing `field` and `message`, and store nothing.
fn refused(cloud: &Cloud, kind: &str, name: &str, yaml: &str, field: &str, message: &str) {
    let f = write(cloud, name, yaml);
    let err = match cloud.try_kubectl(&["apply", "-f", &f]) {
        Ok(out) => panic!("{name}: kubectl apply accepted it: {out}"),
        Err(e) => e,
    };
    assert!(
        err.contains(&format!("{field}: ")) && err.contains(message),
        "{name}: want {field}: …{message}, got:\n{err}"
    );
    assert!(err.contains("is invalid"), "{name}: {err}");
    let got = cloud.try_kubectl(&["get", kind, name]);
    assert!(
        got.as_ref().is_err_and(|e| e.contains("NotFound")),
        "{name} was stored: {got:?}"
    );
    println!("refused {name}: {}", err.trim());
}

const BAD_ADDRESS: &str = "must be a CIDR (198.51.100.0/24, 2001:db8::/120) or a range of two addresses (198.51.100.10-198.51.100.20)";

#[test]
fn invalid_pools_are_refused_by_kubectl_apply_with_the_rules_message() {
    let cloud = cloud("crd-pools");
    let cases: [(&str, &str, &str, &str); 12] = [
        (
            "bad-octet",
            "  addresses: [10.0.0.300/24]\n",
            "spec.addresses[0]",
            BAD_ADDRESS,
        ),
        (
            "reversed",
            "  addresses: [10.0.0.20-10.0.0.10]\n",
            "spec.addresses[0]",
            "the first address of a range must not be after the last",
        ),
        (
            "mixed-families",
            "  addresses: ['198.51.100.1-2001:db8::1']\n",
            "spec.addresses[0]",
            "the two ends of a range must be of the same IP family",
        ),
        (
            "garbage",
            "  addresses: [10.0.0.0/24, banana]\n",
            "spec.addresses[1]",
            BAD_ADDRESS,
        ),
        (
            "long-prefix",
            "  addresses: ['2001:db8::/129']\n",
            "spec.addresses[0]",
            BAD_ADDRESS,
        ),
        (
            "three-ends",
            "  addresses: [10.0.0.1-10.0.0.2-10.0.0.3]\n",
            "spec.addresses[0]",
            BAD_ADDRESS,
        ),
        (
            "negative-priority",
            "  addresses: [10.0.0.0/24]\n  serviceAllocation:\n    priority: -1\n",
            "spec.serviceAllocation.priority",
            "should be greater than or equal to 0",
        ),
        (
            "not-a-list",
            "  addresses: 10.0.0.0/24\n",
            "spec.addresses",
            "must be of type array",
        ),
        (
            "not-a-bool",
            "  addresses: [10.0.0.0/24]\n  autoAssign: maybe\n",
            "spec.autoAssign",
            "must be of type boolean",
        ),
        (
            "empty",
            "  addresses: []\n",
            "spec.addresses",
            "should have at least 1 items",
        ),
        (
            "bad-operator",
            "  addresses: [10.0.0.0/24]\n  serviceAllocation:\n    serviceSelectors:\n    - matchExpressions:\n      - {key: app, operator: Sometimes}\n",
            "spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator",
            "Unsupported value: \"Sometimes\"",
        ),
        (
            "in-without-values",
            "  addresses: [10.0.0.0/24]\n  serviceAllocation:\n    namespaceSelectors:\n    - matchExpressions:\n      - {key: team, operator: In}\n",
            "spec.serviceAllocation.namespaceSelectors[0].matchExpressions[0]",
            "values must be set for In and NotIn",
        ),
    ];
    for (name, spec, field, message) in cases {
        refused(
            &cloud,
            "ipaddresspool",
            name,
            &pool_yaml(name, spec),
            field,
            message,
        );
    }
    // A pool missing its addresses, and a namespace that cannot be one.
    refused(
        &cloud,
        "ipaddresspool",
        "no-addresses",
        &pool_yaml("no-addresses", "  autoAssign: false\n"),
        "spec.addresses",
        "Required value",
    );
    refused(
        &cloud,
        "ipaddresspool",
        "bad-namespace",
        &pool_yaml(
            "bad-namespace",
            "  addresses: [10.0.0.0/24]\n  serviceAllocation:\n    namespaces: [Shop]\n",
        ),
        "spec.serviceAllocation.namespaces[0]",
        "should match",
    );
    // Several problems: every one is listed.
    let f = write(
        &cloud,
        "several",
        &pool_yaml(
            "several",
            "  addresses: [10.0.0.300/24, 10.0.0.9-10.0.0.1]\n",
        ),
    );
    let err = cloud.try_kubectl(&["apply", "-f", &f]).unwrap_err();
    assert!(
        err.contains("spec.addresses[0]")
            && err.contains("spec.addresses[1]")
            && err.contains(BAD_ADDRESS)
            && err.contains("must not be after the last"),
        "{err}"
    );
    // An update that breaks a valid pool is refused too, and the pool is unchanged.
    let ok = write(
        &cloud,
        "edited",
        &pool_yaml("edited", "  addresses: [10.9.0.0/24]\n"),
    );
    cloud.kubectl_ok(&["apply", "-f", &ok]);
    let err = cloud
        .try_kubectl(&[
            "patch",
            "ipaddresspool",
            "edited",
            "--type=merge",
            "-p",
            r#"{"spec":{"addresses":["10.9.0.10-10.9.0.1"]}}"#,
        ])
        .unwrap_err();
    assert!(err.contains("must not be after the last"), "{err}");
    let got = cloud.kubectl_ok(&[
        "get",
        "ipaddresspool",
        "edited",
        "-o",
        "jsonpath={.spec.addresses}",
    ]);
    assert_eq!(got, r#"["10.9.0.0/24"]"#);
}

#[test]
fn valid_pools_are_accepted_defaulted_and_pruned() {
    let cloud = cloud("crd-valid");
    let f = write(
        &cloud,
        "valid",
        &[
            pool_yaml("v4", "  addresses: [198.51.100.0/24, 203.0.113.10-203.0.113.20]\n"),
            pool_yaml(
                "v6",
                "  addresses: ['2001:db8::/120', '2001:db8:1::10 - 2001:db8:1::20']\n  autoAssign: false\n",
            ),
            pool_yaml(
                "selective",
                "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    priority: 3\n    namespaces: [shop]\n    serviceSelectors:\n    - matchExpressions:\n      - {key: app, operator: In, values: [web]}\n      - {key: tier, operator: Exists}\n",
            ),
        ]
        .join("---\n"),
    );
    let out = cloud.kubectl_ok(&["apply", "-f", &f]);
    assert_eq!(out.matches("created").count(), 3, "{out}");
    let v6 = cloud.get("ipaddresspool", "v6").expect("v6 stored");
    assert_eq!(v6["spec"]["autoAssign"], false);
    assert_eq!(v6["spec"]["avoidBuggyIPs"], false, "defaulted: {v6}");
    let v4 = cloud.get("ipaddresspool", "v4").expect("v4 stored");
    assert_eq!(v4["spec"]["autoAssign"], true, "defaulted: {v4}");

    // kubectl explain reads the descriptions from the CRD's schema.
    let explain = cloud.kubectl_ok(&["explain", "ipaddresspool"]);
    assert!(
        explain.contains("A pool of addresses berth gives") && !explain.contains("Auto-generated"),
        "{explain}"
    );
    let explain = cloud.kubectl_ok(&["explain", "ipaddresspool.spec.addresses"]);
    assert!(explain.contains("CIDRs"), "{explain}");

    // kubectl asks for strict field validation: a misspelt field is refused by name.
    let typo = write(
        &cloud,
        "typo",
        &pool_yaml("typo", "  addresses: [10.1.0.0/24]\n  autoAsign: false\n"),
    );
    let err = cloud.try_kubectl(&["apply", "-f", &typo]).unwrap_err();
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.autoAsign""#),
        "{err}"
    );
    // Without it, unknown fields are pruned.
    cloud.kubectl_ok(&["apply", "--validate=false", "-f", &typo]);
    let stored = cloud.get("ipaddresspool", "typo").expect("typo stored");
    assert_eq!(
        stored["spec"],
        serde_json::json!({"addresses": ["10.1.0.0/24"], "autoAssign": true, "avoidBuggyIPs": false}),
        "the unknown field is pruned"
    );

    // The VALID column comes from the Valid condition (written by the controller; here by
    // hand through the status subresource).
    cloud.kubectl_ok(&[
        "patch",
        "ipaddresspool",
        "v4",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Valid","status":"False","reason":"Overlap","message":"overlaps pool v6"}]}}"#,
    ]);
    let table = cloud.kubectl_ok(&["get", "ipaddresspools"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(header.contains(&"VALID"), "{table}");
    let col = header.iter().position(|h| *h == "VALID").expect("VALID") - 1; // "AUTO ASSIGN" is two words
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("v4 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.get(col), Some(&"False"), "{table}");
    // A condition status outside the enum is refused on the status subresource too.
    let err = cloud
        .try_kubectl(&[
            "patch",
            "ipaddresspool",
            "v4",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Valid","status":"Maybe","reason":"X","message":""}]}}"#,
        ])
        .unwrap_err();
    assert!(
        err.contains("status.conditions[0].status: Unsupported value"),
        "{err}"
    );
}

#[test]
fn invalid_bgp_objects_are_refused_with_the_rules_message() {
    let cloud = cloud("crd-bgp");
    let peer = |name: &str, spec: &str| {
        format!(
            "apiVersion: berth.io/v1alpha1\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    for (name, spec, field, message) in [
        (
            "asn-zero",
            "  peerAddress: 10.0.0.1\n  peerASN: 0\n  myASN: 64512\n",
            "spec.peerASN",
            "should be greater than or equal to 1",
        ),
        (
            "asn-too-big",
            "  peerAddress: 10.0.0.1\n  peerASN: 4294967296\n  myASN: 64512\n",
            "spec.peerASN",
            "should be less than or equal to 4294967295",
        ),
        (
            "not-an-address",
            "  peerAddress: nope\n  peerASN: 64512\n  myASN: 64512\n",
            "spec.peerAddress",
            "must be an IPv4 or IPv6 address",
        ),
        (
            "port-zero",
            "  peerAddress: 10.0.0.1\n  peerASN: 64512\n  myASN: 64512\n  peerPort: 0\n",
            "spec.peerPort",
            "should be greater than or equal to 1",
        ),
        (
            "families",
            "  peerAddress: 10.0.0.1\n  sourceAddress: '2001:db8::1'\n  peerASN: 64512\n  myASN: 64512\n",
            "spec",
            "sourceAddress must be of the same IP family as peerAddress",
        ),
    ] {
        refused(&cloud, "bgppeer", name, &peer(name, spec), field, message);
    }
    let adv = "apiVersion: berth.io/v1alpha1\nkind: BGPAdvertisement\nmetadata:\n  name: adv\nspec:\n  aggregationLength: 33\n  communities: ['65536:1']\n";
    let f = write(&cloud, "adv", adv);
    let err = cloud.try_kubectl(&["apply", "-f", &f]).unwrap_err();
    assert!(
        err.contains("spec.aggregationLength") && err.contains("less than or equal to 32"),
        "{err}"
    );
    assert!(
        err.contains("spec.communities[0]") && err.contains("must be a standard community"),
        "{err}"
    );
    let bfd = "apiVersion: berth.io/v1alpha1\nkind: BFDProfile\nmetadata:\n  name: echo\nspec:\n  echoMode: true\n  detectMultiplier: 1\n";
    let f = write(&cloud, "bfd", bfd);
    let err = cloud.try_kubectl(&["apply", "-f", &f]).unwrap_err();
    assert!(
        err.contains("spec.echoMode") && err.contains("echo mode is not supported"),
        "{err}"
    );
    assert!(err.contains("spec.detectMultiplier"), "{err}");
    // Valid ones are accepted.
    let ok = [
        peer(
            "tor",
            "  peerAddress: '2001:db8::1'\n  sourceAddress: '2001:db8::2'\n  peerASN: 4200000000\n  myASN: 64512\n  holdTime: 9s\n",
        ),
        "apiVersion: berth.io/v1alpha1\nkind: BGPAdvertisement\nmetadata:\n  name: adv\nspec:\n  aggregationLength: 24\n  communities: ['65000:100', '4200000000:1:2']\n".to_string(),
    ]
    .join("---\n");
    let f = write(&cloud, "ok", &ok);
    cloud.kubectl_ok(&["apply", "-f", &f]);
}

#[test]
fn the_crds_validate_with_kubernetes_validate() {
    // The CRDs as apiextensions.k8s.io/v1 objects against Kubernetes 1.33's schemas, and
    // valid pools against the CRDs' own schemas (tests/deploy/validate.py).
    let dir = scratch_dir("crd-kv");
    let pools = dir.join("pools.yaml");
    std::fs::write(
        &pools,
        [
            pool_yaml(
                "v4",
                "  addresses: [198.51.100.0/24, 203.0.113.10-203.0.113.20]\n",
            ),
            pool_yaml(
                "v6",
                "  addresses: ['2001:db8::/120']\n  autoAssign: false\n",
            ),
        ]
        .join("---\n"),
    )
    .expect("write");
    let python = venv_python();
    let out = Command::new(&python)
        .arg(root().join("tests/deploy/validate.py"))
        .arg("1.33.0")
        .arg(crds())
        .arg(&pools)
        .output()
        .expect("run validate.py");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for kind in [
        "IPAddressPool",
        "L2Advertisement",
        "ServiceL2Status",
        "BGPPeer",
        "BGPAdvertisement",
        "BFDProfile",
        "BGPSessionStatus",
    ] {
        let line = format!(
            "ok  apiextensions.k8s.io/v1/CustomResourceDefinition {}.berth.io (Kubernetes 1.33.0)",
            plural(kind)
        );
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(text.contains("ok  berth.io/v1alpha1/IPAddressPool v6 (CRD schema)"));
    // kubernetes-validate on the CRD file directly, as an operator would run it.
    let kv = python.with_file_name("kubernetes-validate");
    let out = Command::new(&kv)
        .args(["--kubernetes-version", "1.33.0", "--strict"])
        .arg(crds())
        .output()
        .expect("run kubernetes-validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn plural(kind: &str) -> String {
    match kind {
        "ServiceL2Status" => "servicel2statuses".into(),
        "BGPSessionStatus" => "bgpsessionstatuses".into(),
        k => format!("{}s", k.to_ascii_lowercase()),
    }
}

/// The Python of `scripts/moto-venv`'s virtualenv (with kubernetes-validate).
fn venv_python() -> PathBuf {
    let dir = std::env::var_os("BERTH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("../berth-venv"))
        })
        .unwrap_or_else(|| root().join(".venv"));
    let py = dir.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks kubernetes-validate: run ./scripts/moto-venv {}",
        py.display(),
        dir.display()
    );
    py
}
