//! Column definitions of the built-in kinds, as kube-apiserver's printers declare them.

use super::apps::{binding_cells, daemonset_cells, deployment_cells, pdb_cells, replicaset_cells};
use super::custom::custom_resource_printer;
use super::misc::{
    configmap_cells, created_at_cells, event_cells, lease_cells, name_age_cells, namespace_cells,
    secret_cells, serviceaccount_cells,
};
use super::network::{endpoints_cells, endpointslice_cells, service_cells};
use super::pods::{node_cells, pod_cells};
use super::*;

/// The printer for a resource.
pub(super) fn printer_for(info: &ResourceInfo) -> Printer {
    if info.crd_name.is_some() {
        return custom_resource_printer(info);
    }
    let p = |specs: &[(&str, &str, i64)], cells: CellFn| Printer {
        columns: cols(specs),
        cells,
    };
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Service") => p(
            &[
                ("Name", "", 0),
                ("Type", "string", 0),
                ("Cluster-IP", "string", 0),
                ("External-IP", "string", 0),
                ("Port(s)", "string", 0),
                ("Age", "", 0),
                ("Selector", "string", 1),
            ],
            service_cells,
        ),
        ("", "Node") => p(
            &[
                ("Name", "", 0),
                ("Status", "string", 0),
                ("Roles", "string", 0),
                ("Age", "", 0),
                ("Version", "string", 0),
                ("Internal-IP", "string", 1),
                ("External-IP", "string", 1),
                ("OS-Image", "string", 1),
                ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1),
            ],
            node_cells,
        ),
        ("", "Pod") => p(
            &[
                ("Name", "", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        ("", "Namespace") => p(
            &[("Name", "", 0), ("Status", "string", 0), ("Age", "", 0)],
            namespace_cells,
        ),
        ("", "Event") | ("events.k8s.io", "Event") => p(
            &[
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Subobject", "string", 1),
                ("Source", "string", 1),
                ("Message", "string", 0),
                ("First Seen", "string", 1),
                ("Count", "string", 1),
                ("Name", "", 1),
            ],
            event_cells,
        ),
        ("", "ConfigMap") => p(
            &[("Name", "", 0), ("Data", "string", 0), ("Age", "", 0)],
            configmap_cells,
        ),
        ("", "Secret") => p(
            &[
                ("Name", "", 0),
                ("Type", "string", 0),
                ("Data", "string", 0),
                ("Age", "", 0),
            ],
            secret_cells,
        ),
        ("", "ServiceAccount") => p(
            &[("Name", "", 0), ("Secrets", "string", 0), ("Age", "", 0)],
            serviceaccount_cells,
        ),
        ("", "Endpoints") => p(
            &[("Name", "", 0), ("Endpoints", "string", 0), ("Age", "", 0)],
            endpoints_cells,
        ),
        ("discovery.k8s.io", "EndpointSlice") => p(
            &[
                ("Name", "", 0),
                ("AddressType", "string", 0),
                ("Ports", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "", 0),
            ],
            endpointslice_cells,
        ),
        ("coordination.k8s.io", "Lease") => p(
            &[("Name", "", 0), ("Holder", "string", 0), ("Age", "", 0)],
            lease_cells,
        ),
        ("apps", "Deployment") => p(
            &[
                ("Name", "", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            deployment_cells,
        ),
        ("apps", "ReplicaSet") => p(
            &[
                ("Name", "", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            replicaset_cells,
        ),
        ("apps", "DaemonSet") => p(
            &[
                ("Name", "", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Node Selector", "string", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            daemonset_cells,
        ),
        ("policy", "PodDisruptionBudget") => p(
            &[
                ("Name", "", 0),
                ("Min Available", "string", 0),
                ("Max Unavailable", "string", 0),
                ("Allowed Disruptions", "integer", 0),
                ("Age", "", 0),
            ],
            pdb_cells,
        ),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => p(
            &[
                ("Name", "", 0),
                ("Role", "string", 0),
                ("Age", "", 0),
                ("Users", "string", 1),
                ("Groups", "string", 1),
                ("ServiceAccounts", "string", 1),
            ],
            binding_cells,
        ),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => p(
            &[("Name", "", 0), ("Created At", "date", 0)],
            created_at_cells,
        ),
        _ => p(&[("Name", "", 0), ("Age", "", 0)], name_age_cells),
    }
}
