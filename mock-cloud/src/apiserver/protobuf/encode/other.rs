//! The messages of the other groups' kinds served in protobuf, and of `meta/v1`.

use super::*;

msg! {
    discovery::EndpointSlice { metadata, address_type, endpoints, ports }
    discovery::EndpointSliceList { metadata, items }
    events::Event {
        metadata, event_time, series, reporting_controller, reporting_instance, action, reason,
        regarding, related, note, r#type, deprecated_source, deprecated_first_timestamp,
        deprecated_last_timestamp, deprecated_count,
    }
    events::EventList { metadata, items }
    coordination::Lease { metadata, spec }
    coordination::LeaseList { metadata, items }
    rbac::Role { metadata, rules }
    rbac::RoleList { metadata, items }
    rbac::RoleBinding { metadata, subjects, role_ref }
    rbac::RoleBindingList { metadata, items }
    rbac::ClusterRole { metadata, rules, aggregation_rule }
    rbac::ClusterRoleList { metadata, items }
    rbac::ClusterRoleBinding { metadata, subjects, role_ref }
    rbac::ClusterRoleBindingList { metadata, items }
    apps::Deployment { metadata, spec, status }
    apps::DeploymentList { metadata, items }
    apps::ReplicaSet { metadata, spec, status }
    apps::ReplicaSetList { metadata, items }
    apps::DaemonSet { metadata, spec, status }
    apps::DaemonSetList { metadata, items }
    policy::PodDisruptionBudget { metadata, spec, status }
    policy::PodDisruptionBudgetList { metadata, items }
    autoscaling::Scale { metadata, spec, status }
    meta::Status { metadata, status, message, reason, details, code }
    meta::ObjectMeta {
        name, generate_name, namespace, self_link, uid, resource_version, generation,
        creation_timestamp, deletion_timestamp, deletion_grace_period_seconds, labels,
        annotations, owner_references, finalizers, managed_fields,
    }
    meta::ListMeta { self_link, resource_version, r#continue, remaining_item_count }
    discovery::Endpoint {
        addresses, conditions, hostname, target_ref, deprecated_topology, node_name, zone,
        hints,
    }
    discovery::EndpointPort { name, protocol, port, app_protocol }
    events::EventSeries { count, last_observed_time }
    coordination::LeaseSpec {
        holder_identity, lease_duration_seconds, acquire_time, renew_time, lease_transitions,
        strategy, preferred_holder,
    }
    rbac::PolicyRule { verbs, api_groups, resources, resource_names, non_resource_ur_ls }
    rbac::Subject { kind, api_group, name, namespace }
    rbac::RoleRef { api_group, kind, name }
    rbac::AggregationRule { cluster_role_selectors }
    apps::DeploymentSpec {
        replicas, selector, template, strategy, min_ready_seconds, revision_history_limit,
        paused, progress_deadline_seconds,
    }
    apps::DeploymentStatus {
        observed_generation, replicas, updated_replicas, ready_replicas, available_replicas,
        unavailable_replicas, terminating_replicas, conditions, collision_count,
    }
    apps::ReplicaSetSpec { replicas, min_ready_seconds, selector, template }
    apps::ReplicaSetStatus {
        replicas, fully_labeled_replicas, ready_replicas, available_replicas,
        terminating_replicas, observed_generation, conditions,
    }
    apps::DaemonSetSpec {
        selector, template, update_strategy, min_ready_seconds, revision_history_limit,
    }
    apps::DaemonSetStatus {
        current_number_scheduled, number_misscheduled, desired_number_scheduled, number_ready,
        observed_generation, updated_number_scheduled, number_available, number_unavailable,
        collision_count, conditions,
    }
    policy::PodDisruptionBudgetSpec {
        min_available, selector, max_unavailable, unhealthy_pod_eviction_policy,
    }
    policy::PodDisruptionBudgetStatus {
        observed_generation, disrupted_pods, disruptions_allowed, current_healthy,
        desired_healthy, expected_pods, conditions,
    }
    autoscaling::ScaleSpec { replicas }
    autoscaling::ScaleStatus { replicas, selector }
    meta::StatusDetails { name, group, kind, uid, causes, retry_after_seconds }
    meta::OwnerReference { api_version, kind, name, uid, controller, block_owner_deletion }
    meta::ManagedFieldsEntry {
        manager, operation, api_version, time, fields_type, fields_v1, subresource,
    }
    meta::Condition {
        r#type, status, observed_generation, last_transition_time, reason, message,
    }
    discovery::EndpointConditions { ready, serving, terminating }
    discovery::EndpointHints { for_zones, for_nodes }
    meta::LabelSelector { match_labels, match_expressions }
    apps::DeploymentStrategy { r#type, rolling_update }
    apps::DeploymentCondition {
        r#type, status, last_update_time, last_transition_time, reason, message,
    }
    apps::ReplicaSetCondition { r#type, status, last_transition_time, reason, message }
    apps::DaemonSetUpdateStrategy { r#type, rolling_update }
    apps::DaemonSetCondition { r#type, status, last_transition_time, reason, message }
    meta::StatusCause { reason, message, field }
    discovery::ForZone { name }
    discovery::ForNode { name }
    meta::LabelSelectorRequirement { key, operator, values }
    apps::RollingUpdateDeployment { max_unavailable, max_surge }
    apps::RollingUpdateDaemonSet { max_unavailable, max_surge }
}
