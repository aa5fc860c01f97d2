//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl's typed
//! generators (`create deployment|service|configmap|secret|namespace`, `expose`, `run`) send
//! them: the `k8s\0` magic, then a `runtime.Unknown` whose `raw` holds the object.
//!
//! Messages are decoded with the `k8s-pb` types (generated from the upstream protos) and
//! turned into the JSON the rest of the server stores. Each conversion destructures its
//! message completely, so a field added upstream fails to compile instead of vanishing;
//! fields mock-cloud does not convert (probes, volumes, affinity, ...) make the request fail
//! with 415 naming the field, never get dropped silently.
//!
//! `status` is dropped: writes to the main resource never change it (protobuf status writes
//! are refused by the HTTP layer).
//!
//! Proto2 cannot tell an unset scalar from its zero value, and Go encodes every non-pointer
//! field; so empty strings, and zeros / `false` of non-pointer fields, are omitted as Go's
//! JSON encoder omits them (`omitempty`).

use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Every protobuf-encoded object starts with these bytes.
const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PbError {
    #[error("Missing the k8s protobuf envelope")]
    NoEnvelope,
    #[error("Invalid protobuf: {0}")]
    Decode(String),
    /// A kind mock-cloud does not decode from protobuf.
    #[error("No protobuf decoding for {api_version}, Kind={kind}")]
    UnknownKind { api_version: String, kind: String },
    /// A field whose conversion is not implemented.
    #[error("Field {0} is not supported in protobuf bodies; send JSON")]
    Unsupported(String),
}

type R = Result<Value, PbError>;

/// Decodes a protobuf body into the object's JSON form (with apiVersion and kind).
pub fn decode(body: &[u8]) -> R {
    let raw = body.strip_prefix(MAGIC).ok_or(PbError::NoEnvelope)?;
    let unknown = Unknown::decode(raw).map_err(|e| PbError::Decode(e.to_string()))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let enc = unknown.content_encoding.unwrap_or_default();
    if !enc.is_empty() {
        return Err(PbError::Decode(format!("content encoding {enc:?}")));
    }
    fn dec<M: Message + Default>(raw: &[u8]) -> Result<M, PbError> {
        M::decode(raw).map_err(|e| PbError::Decode(e.to_string()))
    }
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => dec::<core::Service>(&raw)?.j("")?,
        ("v1", "ConfigMap") => dec::<core::ConfigMap>(&raw)?.j("")?,
        ("v1", "Secret") => dec::<core::Secret>(&raw)?.j("")?,
        ("v1", "Namespace") => dec::<core::Namespace>(&raw)?.j("")?,
        ("v1", "Pod") => dec::<core::Pod>(&raw)?.j("")?,
        ("apps/v1", "Deployment") => dec::<apps::Deployment>(&raw)?.j("")?,
        ("apps/v1", "ReplicaSet") => dec::<apps::ReplicaSet>(&raw)?.j("")?,
        _ => return Err(PbError::UnknownKind { api_version, kind }),
    };
    if !obj.is_object() {
        obj = json!({});
    }
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// Conversion of one decoded value to JSON; `Null` means "omit". `path` names the field in
/// error messages.
trait J {
    fn j(self, path: &str) -> R;
}

fn sub(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Builds an object from `(json name, value)` pairs, omitting nulls.
macro_rules! obj {
    ($path:expr; $($key:literal => $val:expr),* $(,)?) => {{
        let mut m = Map::new();
        $(
            let v = J::j($val, &sub($path, $key))?;
            if !v.is_null() {
                m.insert($key.to_string(), v);
            }
        )*
        Ok(if m.is_empty() { Value::Null } else { Value::Object(m) })
    }};
}

/// Fields mock-cloud does not convert: fine when absent (or empty), 415 when set.
macro_rules! unsupported {
    ($($t:ty),* $(,)?) => {$(
        impl J for $t {
            fn j(self, path: &str) -> R {
                if self == <$t>::default() {
                    Ok(Value::Null)
                } else {
                    Err(PbError::Unsupported(path.to_string()))
                }
            }
        }
    )*};
}

unsupported!(
    core::Volume,
    core::EphemeralContainer,
    core::PodSecurityContext,
    core::LocalObjectReference,
    core::Affinity,
    core::Toleration,
    core::HostAlias,
    core::PodDnsConfig,
    core::PodReadinessGate,
    core::TopologySpreadConstraint,
    core::PodOs,
    core::PodSchedulingGate,
    core::PodResourceClaim,
    core::EnvFromSource,
    core::EnvVarSource,
    core::ContainerResizePolicy,
    core::VolumeMount,
    core::VolumeDevice,
    core::Probe,
    core::Lifecycle,
    core::SecurityContext,
    core::ResourceClaim,
    core::SessionAffinityConfig,
    meta::ManagedFieldsEntry,
);

impl J for String {
    fn j(self, _: &str) -> R {
        Ok(if self.is_empty() {
            Value::Null
        } else {
            Value::String(self)
        })
    }
}

impl J for bool {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl J for i32 {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl J for i64 {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl<T: J> J for Option<T> {
    fn j(self, path: &str) -> R {
        match self {
            Some(v) => v.j(path),
            None => Ok(Value::Null),
        }
    }
}

impl<T: J> J for Vec<T> {
    fn j(self, path: &str) -> R {
        if self.is_empty() {
            return Ok(Value::Null);
        }
        let mut out = Vec::with_capacity(self.len());
        for (i, v) in self.into_iter().enumerate() {
            let v = v.j(&format!("{path}[{i}]"))?;
            out.push(if v.is_null() { json!({}) } else { v });
        }
        Ok(Value::Array(out))
    }
}

impl<T: J> J for BTreeMap<String, T> {
    fn j(self, path: &str) -> R {
        if self.is_empty() {
            return Ok(Value::Null);
        }
        let mut m = Map::new();
        for (k, v) in self {
            let p = format!("{path}[{k}]");
            // Map values keep empty strings: `data: {a: ""}` is meaningful.
            let v = match v.j(&p)? {
                Value::Null => json!(""),
                v => v,
            };
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

/// A `[]byte` map (Secret data, ConfigMap binaryData): base64 strings, as in JSON.
struct Bytes(BTreeMap<String, Vec<u8>>);

impl J for Bytes {
    fn j(self, _: &str) -> R {
        if self.0.is_empty() {
            return Ok(Value::Null);
        }
        let e = base64::engine::general_purpose::STANDARD;
        Ok(Value::Object(
            self.0
                .into_iter()
                .map(|(k, v)| (k, json!(e.encode(v))))
                .collect(),
        ))
    }
}

/// A non-pointer integer: omitted when zero.
fn nz<T: PartialEq + Default>(v: Option<T>) -> Option<T> {
    v.filter(|x| *x != T::default())
}

impl J for meta::Time {
    fn j(self, _: &str) -> R {
        let meta::Time { seconds, nanos: _ } = self;
        // Go's zero time (year 1) means unset.
        match seconds.filter(|s| *s > -62_135_596_800) {
            None => Ok(Value::Null),
            Some(s) => Ok(chrono::DateTime::from_timestamp(s, 0)
                .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or(Value::Null)),
        }
    }
}

impl J for Quantity {
    fn j(self, p: &str) -> R {
        let Quantity { string } = self;
        string.j(p)
    }
}

impl J for IntOrString {
    fn j(self, _: &str) -> R {
        let IntOrString {
            r#type,
            int_val,
            str_val,
        } = self;
        Ok(match r#type {
            Some(1) => json!(str_val.unwrap_or_default()),
            _ => json!(int_val.unwrap_or(0)),
        })
    }
}

impl J for meta::ObjectMeta {
    fn j(self, p: &str) -> R {
        let meta::ObjectMeta {
            name,
            generate_name,
            namespace,
            self_link,
            uid,
            resource_version,
            generation,
            creation_timestamp,
            deletion_timestamp,
            deletion_grace_period_seconds,
            labels,
            annotations,
            owner_references,
            finalizers,
            managed_fields,
        } = self;
        obj!(p;
            "name" => name,
            "generateName" => generate_name,
            "namespace" => namespace,
            "selfLink" => self_link,
            "uid" => uid,
            "resourceVersion" => resource_version,
            "generation" => nz(generation),
            "creationTimestamp" => creation_timestamp,
            "deletionTimestamp" => deletion_timestamp,
            "deletionGracePeriodSeconds" => deletion_grace_period_seconds,
            "labels" => labels,
            "annotations" => annotations,
            "ownerReferences" => owner_references,
            "finalizers" => finalizers,
            "managedFields" => managed_fields,
        )
    }
}

impl J for meta::OwnerReference {
    fn j(self, p: &str) -> R {
        let meta::OwnerReference {
            api_version,
            kind,
            name,
            uid,
            controller,
            block_owner_deletion,
        } = self;
        obj!(p;
            "apiVersion" => api_version,
            "kind" => kind,
            "name" => name,
            "uid" => uid,
            "controller" => controller,
            "blockOwnerDeletion" => block_owner_deletion,
        )
    }
}

impl J for meta::LabelSelector {
    fn j(self, p: &str) -> R {
        let meta::LabelSelector {
            match_labels,
            match_expressions,
        } = self;
        let v: R = obj!(p;
            "matchLabels" => match_labels,
            "matchExpressions" => match_expressions,
        );
        // An empty selector is `{}` (selects everything), not absent.
        v.map(|v| if v.is_null() { json!({}) } else { v })
    }
}

impl J for meta::LabelSelectorRequirement {
    fn j(self, p: &str) -> R {
        let meta::LabelSelectorRequirement {
            key,
            operator,
            values,
        } = self;
        obj!(p; "key" => key, "operator" => operator, "values" => values)
    }
}

impl J for core::Service {
    fn j(self, p: &str) -> R {
        let core::Service {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for core::ServiceSpec {
    fn j(self, p: &str) -> R {
        let core::ServiceSpec {
            ports,
            selector,
            cluster_ip,
            cluster_ips,
            r#type,
            external_ips,
            session_affinity,
            load_balancer_ip,
            load_balancer_source_ranges,
            external_name,
            external_traffic_policy,
            health_check_node_port,
            publish_not_ready_addresses,
            session_affinity_config,
            ip_families,
            ip_family_policy,
            allocate_load_balancer_node_ports,
            load_balancer_class,
            internal_traffic_policy,
            traffic_distribution,
        } = self;
        obj!(p;
            "ports" => ports,
            "selector" => selector,
            "clusterIP" => cluster_ip,
            "clusterIPs" => cluster_ips,
            "type" => r#type,
            "externalIPs" => external_ips,
            "sessionAffinity" => session_affinity,
            "loadBalancerIP" => load_balancer_ip,
            "loadBalancerSourceRanges" => load_balancer_source_ranges,
            "externalName" => external_name,
            "externalTrafficPolicy" => external_traffic_policy,
            "healthCheckNodePort" => nz(health_check_node_port),
            "publishNotReadyAddresses" => nz(publish_not_ready_addresses),
            "sessionAffinityConfig" => session_affinity_config,
            "ipFamilies" => ip_families,
            "ipFamilyPolicy" => ip_family_policy,
            "allocateLoadBalancerNodePorts" => allocate_load_balancer_node_ports,
            "loadBalancerClass" => load_balancer_class,
            "internalTrafficPolicy" => internal_traffic_policy,
            "trafficDistribution" => traffic_distribution,
        )
    }
}

impl J for core::ServicePort {
    fn j(self, p: &str) -> R {
        let core::ServicePort {
            name,
            protocol,
            app_protocol,
            port,
            target_port,
            node_port,
        } = self;
        obj!(p;
            "name" => name,
            "protocol" => protocol,
            "appProtocol" => app_protocol,
            "port" => port,
            // Zero means "unset" (kube-apiserver then defaults it to the port).
            "targetPort" => target_port.filter(|t| t.r#type.unwrap_or(0) != 0 || t.int_val.unwrap_or(0) != 0),
            "nodePort" => nz(node_port),
        )
    }
}

impl J for core::ConfigMap {
    fn j(self, p: &str) -> R {
        let core::ConfigMap {
            metadata,
            immutable,
            data,
            binary_data,
        } = self;
        obj!(p;
            "metadata" => metadata,
            "immutable" => immutable,
            "data" => data,
            "binaryData" => Bytes(binary_data),
        )
    }
}

impl J for core::Secret {
    fn j(self, p: &str) -> R {
        let core::Secret {
            metadata,
            immutable,
            data,
            string_data,
            r#type,
        } = self;
        obj!(p;
            "metadata" => metadata,
            "immutable" => immutable,
            "data" => Bytes(data),
            "stringData" => string_data,
            "type" => r#type,
        )
    }
}

impl J for core::Namespace {
    fn j(self, p: &str) -> R {
        let core::Namespace {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for core::NamespaceSpec {
    fn j(self, p: &str) -> R {
        let core::NamespaceSpec { finalizers } = self;
        obj!(p; "finalizers" => finalizers)
    }
}

impl J for core::Pod {
    fn j(self, p: &str) -> R {
        let core::Pod {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for core::PodTemplateSpec {
    fn j(self, p: &str) -> R {
        let core::PodTemplateSpec { metadata, spec } = self;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for core::PodSpec {
    fn j(self, p: &str) -> R {
        let core::PodSpec {
            volumes,
            init_containers,
            containers,
            ephemeral_containers,
            restart_policy,
            termination_grace_period_seconds,
            active_deadline_seconds,
            dns_policy,
            node_selector,
            service_account_name,
            service_account,
            automount_service_account_token,
            node_name,
            host_network,
            host_pid,
            host_ipc,
            share_process_namespace,
            security_context,
            image_pull_secrets,
            hostname,
            subdomain,
            affinity,
            scheduler_name,
            tolerations,
            host_aliases,
            priority_class_name,
            priority,
            dns_config,
            readiness_gates,
            runtime_class_name,
            enable_service_links,
            preemption_policy,
            overhead,
            topology_spread_constraints,
            set_hostname_as_fqdn,
            os,
            host_users,
            scheduling_gates,
            resource_claims,
            resources,
        } = self;
        let v: R = obj!(p;
            "volumes" => volumes,
            "initContainers" => init_containers,
            "containers" => containers,
            "ephemeralContainers" => ephemeral_containers,
            "restartPolicy" => restart_policy,
            "terminationGracePeriodSeconds" => termination_grace_period_seconds,
            "activeDeadlineSeconds" => active_deadline_seconds,
            "dnsPolicy" => dns_policy,
            "nodeSelector" => node_selector,
            "serviceAccountName" => service_account_name,
            "serviceAccount" => service_account,
            "automountServiceAccountToken" => automount_service_account_token,
            "nodeName" => node_name,
            "hostNetwork" => nz(host_network),
            "hostPID" => nz(host_pid),
            "hostIPC" => nz(host_ipc),
            "shareProcessNamespace" => share_process_namespace,
            "securityContext" => security_context,
            "imagePullSecrets" => image_pull_secrets,
            "hostname" => hostname,
            "subdomain" => subdomain,
            "affinity" => affinity,
            "schedulerName" => scheduler_name,
            "tolerations" => tolerations,
            "hostAliases" => host_aliases,
            "priorityClassName" => priority_class_name,
            "priority" => priority,
            "dnsConfig" => dns_config,
            "readinessGates" => readiness_gates,
            "runtimeClassName" => runtime_class_name,
            "enableServiceLinks" => enable_service_links,
            "preemptionPolicy" => preemption_policy,
            "overhead" => overhead,
            "topologySpreadConstraints" => topology_spread_constraints,
            "setHostnameAsFQDN" => set_hostname_as_fqdn,
            "os" => os,
            "hostUsers" => host_users,
            "schedulingGates" => scheduling_gates,
            "resourceClaims" => resource_claims,
            "resources" => resources,
        );
        // `containers` is required: keep an empty spec an object.
        v.map(|v| if v.is_null() { json!({}) } else { v })
    }
}

impl J for core::Container {
    fn j(self, p: &str) -> R {
        let core::Container {
            name,
            image,
            command,
            args,
            working_dir,
            ports,
            env_from,
            env,
            resources,
            resize_policy,
            restart_policy,
            volume_mounts,
            volume_devices,
            liveness_probe,
            readiness_probe,
            startup_probe,
            lifecycle,
            termination_message_path,
            termination_message_policy,
            image_pull_policy,
            security_context,
            stdin,
            stdin_once,
            tty,
        } = self;
        obj!(p;
            "name" => name,
            "image" => image,
            "command" => command,
            "args" => args,
            "workingDir" => working_dir,
            "ports" => ports,
            "envFrom" => env_from,
            "env" => env,
            "resources" => resources,
            "resizePolicy" => resize_policy,
            "restartPolicy" => restart_policy,
            "volumeMounts" => volume_mounts,
            "volumeDevices" => volume_devices,
            "livenessProbe" => liveness_probe,
            "readinessProbe" => readiness_probe,
            "startupProbe" => startup_probe,
            "lifecycle" => lifecycle,
            "terminationMessagePath" => termination_message_path,
            "terminationMessagePolicy" => termination_message_policy,
            "imagePullPolicy" => image_pull_policy,
            "securityContext" => security_context,
            "stdin" => nz(stdin),
            "stdinOnce" => nz(stdin_once),
            "tty" => nz(tty),
        )
    }
}

impl J for core::ContainerPort {
    fn j(self, p: &str) -> R {
        let core::ContainerPort {
            name,
            host_port,
            container_port,
            protocol,
            host_ip,
        } = self;
        obj!(p;
            "name" => name,
            "hostPort" => nz(host_port),
            "containerPort" => container_port,
            "protocol" => protocol,
            "hostIP" => host_ip,
        )
    }
}

impl J for core::EnvVar {
    fn j(self, p: &str) -> R {
        let core::EnvVar {
            name,
            value,
            value_from,
        } = self;
        obj!(p; "name" => name, "value" => value, "valueFrom" => value_from)
    }
}

impl J for core::ResourceRequirements {
    fn j(self, p: &str) -> R {
        let core::ResourceRequirements {
            limits,
            requests,
            claims,
        } = self;
        obj!(p; "limits" => limits, "requests" => requests, "claims" => claims)
    }
}

impl J for apps::Deployment {
    fn j(self, p: &str) -> R {
        let apps::Deployment {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for apps::DeploymentSpec {
    fn j(self, p: &str) -> R {
        let apps::DeploymentSpec {
            replicas,
            selector,
            template,
            strategy,
            min_ready_seconds,
            revision_history_limit,
            paused,
            progress_deadline_seconds,
        } = self;
        obj!(p;
            "replicas" => replicas,
            "selector" => selector,
            "template" => template,
            "strategy" => strategy,
            "minReadySeconds" => nz(min_ready_seconds),
            "revisionHistoryLimit" => revision_history_limit,
            "paused" => nz(paused),
            "progressDeadlineSeconds" => progress_deadline_seconds,
        )
    }
}

impl J for apps::DeploymentStrategy {
    fn j(self, p: &str) -> R {
        let apps::DeploymentStrategy {
            r#type,
            rolling_update,
        } = self;
        obj!(p; "type" => r#type, "rollingUpdate" => rolling_update)
    }
}

impl J for apps::RollingUpdateDeployment {
    fn j(self, p: &str) -> R {
        let apps::RollingUpdateDeployment {
            max_unavailable,
            max_surge,
        } = self;
        obj!(p; "maxUnavailable" => max_unavailable, "maxSurge" => max_surge)
    }
}

impl J for apps::ReplicaSet {
    fn j(self, p: &str) -> R {
        let apps::ReplicaSet {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for apps::ReplicaSetSpec {
    fn j(self, p: &str) -> R {
        let apps::ReplicaSetSpec {
            replicas,
            min_ready_seconds,
            selector,
            template,
        } = self;
        obj!(p;
            "replicas" => replicas,
            "minReadySeconds" => nz(min_ready_seconds),
            "selector" => selector,
            "template" => template,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn deployment_as_kubectl_create_sends_it() {
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: s("web"),
                generate_name: s(""),
                labels: [("app".to_string(), "web".to_string())].into(),
                creation_timestamp: Some(meta::Time {
                    seconds: Some(-62_135_596_800),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels: [("app".to_string(), "web".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: s("nginx"),
                            image: s("nginx"),
                            ports: vec![core::ContainerPort {
                                container_port: Some(8080),
                                host_port: Some(0),
                                ..Default::default()
                            }],
                            stdin: Some(false),
                            resources: Some(Default::default()),
                            ..Default::default()
                        }],
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                strategy: Some(Default::default()),
                min_ready_seconds: Some(0),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let got = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 8080}]}]}
                    }
                }
            })
        );
    }

    #[test]
    fn service_ports_secret_bytes_and_zero_replicas() {
        let svc = core::Service {
            metadata: Some(meta::ObjectMeta {
                name: s("foo"),
                ..Default::default()
            }),
            spec: Some(core::ServiceSpec {
                r#type: s("LoadBalancer"),
                ports: vec![core::ServicePort {
                    name: s("80-8080"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                }],
                selector: [("app".to_string(), "foo".to_string())].into(),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let got = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            got["spec"],
            json!({"type": "LoadBalancer", "selector": {"app": "foo"},
                   "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]})
        );
        let sec = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: s("pw"),
                ..Default::default()
            }),
            data: [("k".to_string(), b"hi".to_vec())].into(),
            ..Default::default()
        };
        let got = decode(&envelope("v1", "Secret", sec.encode_to_vec())).unwrap();
        assert_eq!(got["data"], json!({"k": "aGk="}));
        let rs = apps::ReplicaSet {
            spec: Some(apps::ReplicaSetSpec {
                replicas: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = decode(&envelope("apps/v1", "ReplicaSet", rs.encode_to_vec())).unwrap();
        assert_eq!(
            got["spec"]["replicas"],
            json!(0),
            "a set pointer keeps zero"
        );
    }

    #[test]
    fn unknown_kinds_and_unconverted_fields_are_refused() {
        let e = decode(&envelope("batch/v1", "Job", Vec::new())).unwrap_err();
        assert!(matches!(e, PbError::UnknownKind { .. }), "{e}");
        assert_eq!(decode(b"{}").unwrap_err(), PbError::NoEnvelope);
        let pod = core::Pod {
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: s("c"),
                    liveness_probe: Some(core::Probe {
                        period_seconds: Some(3),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap_err();
        assert_eq!(
            e,
            PbError::Unsupported("spec.containers[0].livenessProbe".into())
        );
    }
}
