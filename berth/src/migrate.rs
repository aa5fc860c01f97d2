//! `berth migrate metallb`: MetalLB manifests in, the equivalent berth manifests out.
//!
//! berth's IPAddressPool and L2Advertisement have MetalLB's shapes, so most of a migration is
//! a rename of the API group; what berth cannot carry is said in a `#` comment above the
//! object it belongs to (or in place of an object berth has no kind for), never dropped
//! without a word.

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// The most YAML read from a file or stdin.
const MAX_INPUT: u64 = 16 << 20;
/// berth's API group and version.
const BERTH_API: &str = "berth.io/v1alpha1";

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub from: From,
}

#[derive(clap::Subcommand)]
pub enum From {
    /// Print berth manifests equivalent to MetalLB's (IPAddressPool, L2Advertisement, BGPPeer,
    /// BGPAdvertisement, BFDProfile, Community): `-f FILE` (repeatable) or stdin,
    /// multi-document YAML.
    Metallb(MetallbArgs),
}

#[derive(clap::Args)]
pub struct MetallbArgs {
    /// MetalLB manifests to read (`-` or none: stdin).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let From::Metallb(a) = args.from;
    let mut inputs = Vec::new();
    if a.files.is_empty() || a.files.iter().any(|f| f.as_os_str() == "-") {
        inputs.push(("stdin".to_string(), read_capped(std::io::stdin().lock())?));
    }
    for f in a.files.iter().filter(|f| f.as_os_str() != "-") {
        let file =
            std::fs::File::open(f).with_context(|| format!("Cannot open {}", f.display()))?;
        let text = read_capped(file).with_context(|| format!("Cannot read {}", f.display()))?;
        inputs.push((f.display().to_string(), text));
    }
    let mut docs = Vec::new();
    for (name, text) in &inputs {
        let parsed: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| anyhow::anyhow!("{name} is not valid YAML: {e}"))?;
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    print!("{}", metallb(&docs)?);
    Ok(())
}

fn read_capped(r: impl Read) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    r.take(MAX_INPUT + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_INPUT {
        bail!("input over {} MiB", MAX_INPUT >> 20);
    }
    String::from_utf8(buf).context("input is not UTF-8")
}

/// One output document: comments, then the object (None: only the comments).
struct Out {
    notes: Vec<String>,
    object: Option<Value>,
}

/// The berth manifests for MetalLB's `docs`, as multi-document YAML with comments.
pub fn metallb(docs: &[Value]) -> anyhow::Result<String> {
    // Pools by name with their labels, to resolve L2Advertisement ipAddressPoolSelectors.
    let pools: BTreeMap<String, Value> = docs
        .iter()
        .filter(|d| is_metallb(d) && d["kind"] == "IPAddressPool")
        .filter_map(|d| {
            Some((
                d["metadata"]["name"].as_str()?.to_string(),
                d["metadata"]["labels"].clone(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("");
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let what = format!("{kind} {name}");
        if !is_metallb(d) {
            out.push(Out {
                notes: vec![format!(
                    "{what} ({}) is not a MetalLB object; not carried",
                    d["apiVersion"].as_str().unwrap_or("no apiVersion")
                )],
                object: None,
            });
            continue;
        }
        out.push(match kind {
            "IPAddressPool" => pool(d),
            "L2Advertisement" => l2_advertisement(d, &pools),
            "BGPPeer" | "BGPAdvertisement" | "BFDProfile" | "Community" => Out {
                notes: vec![format!(
                    "{what}: berth announces VIPs with ARP/NDP (L2) only; BGP objects are not carried"
                )],
                object: None,
            },
            other => Out {
                notes: vec![format!("{other} {name}: berth has no equivalent; not carried")],
                object: None,
            },
        });
    }
    let mut text = String::new();
    for o in out {
        text.push_str("---\n");
        for n in &o.notes {
            text.push_str(&format!("# {n}\n"));
        }
        if let Some(obj) = o.object {
            text.push_str(&serde_saphyr::to_string(&obj).context("cannot write YAML")?);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    Ok(text)
}

fn is_metallb(d: &Value) -> bool {
    d["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("metallb.io/"))
}

/// metadata for a cluster-scoped berth object: name, labels, annotations; the rest noted.
fn metadata(d: &Value, notes: &mut Vec<String>) -> Value {
    let m = &d["metadata"];
    let mut out = Map::new();
    out.insert("name".into(), m["name"].clone());
    for k in ["labels", "annotations"] {
        if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(ns) = m["namespace"].as_str() {
        notes.push(format!(
            "metadata.namespace {ns}: berth's pools and advertisements are cluster-scoped"
        ));
    }
    Value::Object(out)
}

/// Copies `carried` keys of `spec`; notes every other key.
fn carry(
    spec: &Value,
    carried: &[&str],
    what: &str,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(obj) = spec.as_object() {
        for (k, v) in obj {
            if carried.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            } else {
                notes.push(format!(
                    "{what}.spec.{k}: berth has no such field; not carried"
                ));
            }
        }
    }
    out
}

fn pool(d: &Value) -> Out {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let what = format!("IPAddressPool {name}");
    let mut notes = Vec::new();
    let meta = metadata(d, &mut notes);
    let spec = carry(
        &d["spec"],
        &[
            "addresses",
            "autoAssign",
            "avoidBuggyIPs",
            "serviceAllocation",
        ],
        &what,
        &mut notes,
    );
    Out {
        object: Some(json!({
            "apiVersion": BERTH_API,
            "kind": "IPAddressPool",
            "metadata": meta,
            "spec": spec,
        })),
        notes,
    }
}

fn l2_advertisement(d: &Value, pools: &BTreeMap<String, Value>) -> Out {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let what = format!("L2Advertisement {name}");
    let mut notes = Vec::new();
    let meta = metadata(d, &mut notes);
    let mut spec = carry(
        &d["spec"],
        &[
            "ipAddressPools",
            "interfaces",
            "nodeSelectors",
            "ipAddressPoolSelectors",
        ],
        &what,
        &mut notes,
    );
    // berth names pools; MetalLB's selectors are resolved against the pools given here.
    if let Some(selectors) = spec.remove("ipAddressPoolSelectors") {
        let mut names: Vec<String> = spec
            .get("ipAddressPools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut matched = Vec::new();
        for (pool, labels) in pools {
            if selectors
                .as_array()
                .is_some_and(|ss| ss.iter().any(|s| selector_matches(s, labels)))
            {
                matched.push(pool.clone());
            }
        }
        notes.push(format!(
            "{what}.spec.ipAddressPoolSelectors resolved against the pools in this input: {}",
            if matched.is_empty() {
                "none matched".to_string()
            } else {
                matched.join(", ")
            }
        ));
        for m in matched {
            if !names.contains(&m) {
                names.push(m);
            }
        }
        if names.is_empty() {
            // Left empty, berth's list would mean every pool; MetalLB advertises none here.
            notes.push(format!(
                "{what}: its selectors match no pool of this input, so it advertises nothing; not carried"
            ));
            return Out {
                notes,
                object: None,
            };
        }
        spec.insert("ipAddressPools".into(), json!(names));
    }
    Out {
        object: Some(json!({
            "apiVersion": BERTH_API,
            "kind": "L2Advertisement",
            "metadata": meta,
            "spec": spec,
        })),
        notes,
    }
}

/// A Kubernetes label selector (matchLabels, matchExpressions) against `labels`, by kube's
/// selector matcher; one that does not parse or that kube refuses matches nothing.
fn selector_matches(sel: &Value, labels: &Value) -> bool {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::core::{Selector, SelectorExt};
    let labels: BTreeMap<String, String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    serde_json::from_value::<LabelSelector>(sel.clone())
        .ok()
        .and_then(|s| Selector::try_from(s).ok())
        .is_some_and(|s| s.matches(&labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        serde_saphyr::from_multiple::<Value>(yaml)
            .unwrap()
            .into_iter()
            .filter(|d| !d.is_null())
            .collect()
    }

    #[test]
    fn pools_and_advertisements_are_renamed_and_the_rest_is_said() {
        let input = docs(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: first-pool\n  namespace: metallb-system\n  labels: {zone: a}\nspec:\n  addresses: [192.168.10.0/24, 192.168.9.1-192.168.9.5]\n  autoAssign: false\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: l2\n  namespace: metallb-system\nspec:\n  ipAddressPoolSelectors:\n  - matchLabels: {zone: a}\n  interfaces: [eth0]\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: peer, namespace: metallb-system}\nspec: {myASN: 64500, peerASN: 64501, peerAddress: 10.0.0.1}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        );
        let out = metallb(&input).unwrap();
        let back: Vec<Value> = docs(&out);
        assert_eq!(back.len(), 2, "{out}");
        assert_eq!(back[0]["apiVersion"], "berth.io/v1alpha1");
        assert_eq!(back[0]["kind"], "IPAddressPool");
        assert_eq!(back[0]["spec"]["autoAssign"], false);
        assert_eq!(back[0]["metadata"].get("namespace"), None);
        assert_eq!(back[1]["spec"]["ipAddressPools"], json!(["first-pool"]));
        assert_eq!(back[1]["spec"]["interfaces"], json!(["eth0"]));
        assert!(out.contains("# metadata.namespace metallb-system"), "{out}");
        assert!(out.contains("# BGPPeer peer: berth announces VIPs with ARP/NDP (L2) only"));
        assert!(out.contains("# ConfigMap x (v1) is not a MetalLB object"));
        assert!(out.contains(
            "ipAddressPoolSelectors resolved against the pools in this input: first-pool"
        ));
    }

    #[test]
    fn unknown_fields_are_named() {
        let input = docs(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [10.0.0.0/28]\n  somethingNew: 1\n",
        );
        let out = metallb(&input).unwrap();
        assert!(
            out.contains(
                "# IPAddressPool p.spec.somethingNew: berth has no such field; not carried"
            ),
            "{out}"
        );
        // Selectors that match nothing advertise nothing (an empty list would mean every pool).
        let input = docs(
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: none}\nspec:\n  ipAddressPoolSelectors:\n  - matchLabels: {zone: nowhere}\n",
        );
        let out = metallb(&input).unwrap();
        assert!(docs(&out).is_empty(), "{out}");
        assert!(out.contains("advertises nothing; not carried"), "{out}");
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let l = json!({"a": "1", "b": "2"});
        assert!(selector_matches(&json!({"matchLabels": {"a": "1"}}), &l));
        assert!(!selector_matches(&json!({"matchLabels": {"a": "2"}}), &l));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}]}),
            &l
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            &l
        ));
    }
}
