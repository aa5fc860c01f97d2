//! The `core/v1` messages of the kinds served in protobuf.

use super::*;

msg! {
    core::Namespace { metadata, spec, status }
    core::NamespaceList { metadata, items }
    core::Service { metadata, spec, status }
    core::ServiceList { metadata, items }
    core::Node { metadata, spec, status }
    core::NodeList { metadata, items }
    core::Pod { metadata, spec, status }
    core::PodList { metadata, items }
    core::Event {
        metadata, involved_object, reason, message, source, first_timestamp, last_timestamp,
        count, r#type, event_time, series, action, related, reporting_component,
        reporting_instance,
    }
    core::EventList { metadata, items }
    core::ConfigMap { metadata, immutable, data, binary_data }
    core::ConfigMapList { metadata, items }
    core::Secret { metadata, immutable, data, string_data, r#type }
    core::SecretList { metadata, items }
    core::ServiceAccount {
        metadata, secrets, image_pull_secrets, automount_service_account_token,
    }
    core::ServiceAccountList { metadata, items }
    core::Endpoints { metadata, subsets }
    core::EndpointsList { metadata, items }
    core::NamespaceSpec { finalizers }
    core::NamespaceStatus { phase, conditions }
    core::ServiceSpec {
        ports, selector, cluster_ip, cluster_ips, r#type, external_ips, session_affinity,
        load_balancer_ip, load_balancer_source_ranges, external_name, external_traffic_policy,
        health_check_node_port, publish_not_ready_addresses, session_affinity_config,
        ip_families, ip_family_policy, allocate_load_balancer_node_ports, load_balancer_class,
        internal_traffic_policy, traffic_distribution,
    }
    core::ServiceStatus { load_balancer, conditions }
    core::NodeSpec {
        pod_cidr, pod_cid_rs, provider_id, unschedulable, taints, config_source, external_id,
    }
    core::NodeStatus {
        capacity, allocatable, phase, conditions, addresses, daemon_endpoints, node_info,
        images, volumes_in_use, volumes_attached, config, runtime_handlers, features,
    }
    core::PodSpec {
        volumes, init_containers, containers, ephemeral_containers, restart_policy,
        termination_grace_period_seconds, active_deadline_seconds, dns_policy, node_selector,
        service_account_name, service_account, automount_service_account_token, node_name,
        host_network, host_pid, host_ipc, share_process_namespace, security_context,
        image_pull_secrets, hostname, subdomain, affinity, scheduler_name, tolerations,
        host_aliases, priority_class_name, priority, dns_config, readiness_gates,
        runtime_class_name, enable_service_links, preemption_policy, overhead,
        topology_spread_constraints, set_hostname_as_fqdn, os, host_users, scheduling_gates,
        resource_claims, resources,
    }
    core::PodStatus {
        observed_generation, phase, conditions, message, reason, nominated_node_name, host_ip,
        host_ips, pod_ip, pod_ips, start_time, init_container_statuses, container_statuses,
        qos_class, ephemeral_container_statuses, resize, resource_claim_statuses,
    }
    core::ObjectReference {
        kind, namespace, name, uid, api_version, resource_version, field_path,
    }
    core::EventSource { component, host }
    core::EventSeries { count, last_observed_time }
    core::LocalObjectReference { name }
    core::EndpointSubset { addresses, not_ready_addresses, ports }
    core::NamespaceCondition { r#type, status, last_transition_time, reason, message }
    core::ServicePort { name, protocol, app_protocol, port, target_port, node_port }
    core::SessionAffinityConfig { client_ip }
    core::LoadBalancerStatus { ingress }
    core::Taint { key, value, effect, time_added }
    core::NodeConfigSource { config_map }
    core::NodeCondition {
        r#type, status, last_heartbeat_time, last_transition_time, reason, message,
    }
    core::NodeAddress { r#type, address }
    core::NodeDaemonEndpoints { kubelet_endpoint }
    core::NodeSystemInfo {
        machine_id, system_uuid, boot_id, kernel_version, os_image, container_runtime_version,
        kubelet_version, kube_proxy_version, operating_system, architecture, swap,
    }
    core::ContainerImage { names, size_bytes }
    core::AttachedVolume { name, device_path }
    core::NodeConfigStatus { assigned, active, last_known_good, error }
    core::NodeRuntimeHandler { name, features }
    core::NodeFeatures { supplemental_groups_policy }
    core::Container {
        name, image, command, args, working_dir, ports, env_from, env, resources, resize_policy,
        restart_policy, volume_mounts, volume_devices, liveness_probe, readiness_probe,
        startup_probe, lifecycle, termination_message_path, termination_message_policy,
        image_pull_policy, security_context, stdin, stdin_once, tty,
    }
    core::PodSecurityContext {
        se_linux_options, windows_options, run_as_user, run_as_group, run_as_non_root,
        supplemental_groups, supplemental_groups_policy, fs_group, sysctls,
        fs_group_change_policy, seccomp_profile, app_armor_profile, se_linux_change_policy,
    }
    core::Affinity { node_affinity, pod_affinity, pod_anti_affinity }
    core::Toleration { key, operator, value, effect, toleration_seconds }
    core::HostAlias { ip, hostnames }
    core::PodDnsConfig { nameservers, searches, options }
    core::PodReadinessGate { condition_type }
    core::TopologySpreadConstraint {
        max_skew, topology_key, when_unsatisfiable, label_selector, min_domains,
        node_affinity_policy, node_taints_policy, match_label_keys,
    }
    core::PodOs { name }
    core::PodSchedulingGate { name }
    core::PodResourceClaim { name, resource_claim_name, resource_claim_template_name }
    core::ResourceRequirements { limits, requests, claims }
    core::PodCondition {
        r#type, observed_generation, status, last_probe_time, last_transition_time, reason,
        message,
    }
    core::HostIp { ip }
    core::PodIp { ip }
    core::ContainerStatus {
        name, state, last_state, ready, restart_count, image, image_id, container_id, started,
        allocated_resources, resources, volume_mounts, user, allocated_resources_status,
        stop_signal,
    }
    core::PodResourceClaimStatus { name, resource_claim_name }
    core::EndpointAddress { ip, hostname, node_name, target_ref }
    core::EndpointPort { name, port, protocol, app_protocol }
    core::PodTemplateSpec { metadata, spec }
    core::ClientIpConfig { timeout_seconds }
    core::LoadBalancerIngress { ip, hostname, ip_mode, ports }
    core::ConfigMapNodeConfigSource {
        namespace, name, uid, resource_version, kubelet_config_key,
    }
    core::DaemonEndpoint { port }
    core::NodeSwapStatus { capacity }
    core::NodeRuntimeHandlerFeatures { recursive_read_only_mounts, user_namespaces }
    core::VolumeSource {
        host_path, empty_dir, gce_persistent_disk, aws_elastic_block_store, git_repo, secret,
        nfs, iscsi, glusterfs, persistent_volume_claim, rbd, flex_volume, cinder, cephfs,
        flocker, downward_api, fc, azure_file, config_map, vsphere_volume, quobyte, azure_disk,
        photon_persistent_disk, projected, portworx_volume, scale_io, storageos, csi, ephemeral,
        image,
    }
    core::ContainerPort { name, host_port, container_port, protocol, host_ip }
    core::EnvFromSource { prefix, config_map_ref, secret_ref }
    core::EnvVar { name, value, value_from }
    core::ContainerResizePolicy { resource_name, restart_policy }
    core::VolumeMount {
        name, read_only, recursive_read_only, mount_path, sub_path, mount_propagation,
        sub_path_expr,
    }
    core::VolumeDevice { name, device_path }
    core::Lifecycle { post_start, pre_stop, stop_signal }
    core::SecurityContext {
        capabilities, privileged, se_linux_options, windows_options, run_as_user, run_as_group,
        run_as_non_root, read_only_root_filesystem, allow_privilege_escalation, proc_mount,
        seccomp_profile, app_armor_profile,
    }
    core::EphemeralContainerCommon {
        name, image, command, args, working_dir, ports, env_from, env, resources, resize_policy,
        restart_policy, volume_mounts, volume_devices, liveness_probe, readiness_probe,
        startup_probe, lifecycle, termination_message_path, termination_message_policy,
        image_pull_policy, security_context, stdin, stdin_once, tty,
    }
    core::SeLinuxOptions { user, role, r#type, level }
    core::WindowsSecurityContextOptions {
        gmsa_credential_spec_name, gmsa_credential_spec, run_as_user_name, host_process,
    }
    core::Sysctl { name, value }
    core::SeccompProfile { r#type, localhost_profile }
    core::AppArmorProfile { r#type, localhost_profile }
    core::NodeAffinity {
        required_during_scheduling_ignored_during_execution,
        preferred_during_scheduling_ignored_during_execution,
    }
    core::PodAffinity {
        required_during_scheduling_ignored_during_execution,
        preferred_during_scheduling_ignored_during_execution,
    }
    core::PodAntiAffinity {
        required_during_scheduling_ignored_during_execution,
        preferred_during_scheduling_ignored_during_execution,
    }
    core::PodDnsConfigOption { name, value }
    core::ResourceClaim { name, request }
    core::ContainerState { waiting, running, terminated }
    core::VolumeMountStatus { name, mount_path, read_only, recursive_read_only }
    core::ContainerUser { linux }
    core::ResourceStatus { name, resources }
    core::PortStatus { port, protocol, error }
    core::HostPathVolumeSource { path, r#type }
    core::EmptyDirVolumeSource { medium, size_limit }
    core::GcePersistentDiskVolumeSource { pd_name, fs_type, partition, read_only }
    core::AwsElasticBlockStoreVolumeSource { volume_id, fs_type, partition, read_only }
    core::GitRepoVolumeSource { repository, revision, directory }
    core::SecretVolumeSource { secret_name, items, default_mode, optional }
    core::NfsVolumeSource { server, path, read_only }
    core::IscsiVolumeSource {
        target_portal, iqn, lun, iscsi_interface, fs_type, read_only, portals,
        chap_auth_discovery, chap_auth_session, secret_ref, initiator_name,
    }
    core::GlusterfsVolumeSource { endpoints, path, read_only }
    core::PersistentVolumeClaimVolumeSource { claim_name, read_only }
    core::RbdVolumeSource {
        monitors, image, fs_type, pool, user, keyring, secret_ref, read_only,
    }
    core::FlexVolumeSource { driver, fs_type, secret_ref, read_only, options }
    core::CinderVolumeSource { volume_id, fs_type, read_only, secret_ref }
    core::CephFsVolumeSource { monitors, path, user, secret_file, secret_ref, read_only }
    core::FlockerVolumeSource { dataset_name, dataset_uuid }
    core::DownwardAPIVolumeSource { items, default_mode }
    core::FcVolumeSource { target_ww_ns, lun, fs_type, read_only, wwids }
    core::AzureFileVolumeSource { secret_name, share_name, read_only }
    core::ConfigMapVolumeSource { local_object_reference, items, default_mode, optional }
    core::VsphereVirtualDiskVolumeSource {
        volume_path, fs_type, storage_policy_name, storage_policy_id,
    }
    core::QuobyteVolumeSource { registry, volume, read_only, user, group, tenant }
    core::AzureDiskVolumeSource { disk_name, disk_uri, caching_mode, fs_type, read_only, kind }
    core::PhotonPersistentDiskVolumeSource { pd_id, fs_type }
    core::ProjectedVolumeSource { sources, default_mode }
    core::PortworxVolumeSource { volume_id, fs_type, read_only }
    core::ScaleIoVolumeSource {
        gateway, system, secret_ref, ssl_enabled, protection_domain, storage_pool, storage_mode,
        volume_name, fs_type, read_only,
    }
    core::StorageOsVolumeSource {
        volume_name, volume_namespace, fs_type, read_only, secret_ref,
    }
    core::CSIVolumeSource {
        driver, read_only, fs_type, volume_attributes, node_publish_secret_ref,
    }
    core::EphemeralVolumeSource { volume_claim_template }
    core::ImageVolumeSource { reference, pull_policy }
    core::ConfigMapEnvSource { local_object_reference, optional }
    core::SecretEnvSource { local_object_reference, optional }
    core::EnvVarSource { field_ref, resource_field_ref, config_map_key_ref, secret_key_ref }
    core::ProbeHandler { exec, http_get, tcp_socket, grpc }
    core::LifecycleHandler { exec, http_get, tcp_socket, sleep }
    core::Capabilities { add, drop }
    core::NodeSelector { node_selector_terms }
    core::PreferredSchedulingTerm { weight, preference }
    core::PodAffinityTerm {
        label_selector, namespaces, topology_key, namespace_selector, match_label_keys,
        mismatch_label_keys,
    }
    core::WeightedPodAffinityTerm { weight, pod_affinity_term }
    core::ContainerStateWaiting { reason, message }
    core::ContainerStateRunning { started_at }
    core::ContainerStateTerminated {
        exit_code, signal, reason, message, started_at, finished_at, container_id,
    }
    core::LinuxContainerUser { uid, gid, supplemental_groups }
    core::ResourceHealth { resource_id, health }
    core::KeyToPath { key, path, mode }
    core::DownwardAPIVolumeFile { path, field_ref, resource_field_ref, mode }
    core::VolumeProjection {
        secret, downward_api, config_map, service_account_token, cluster_trust_bundle,
    }
    core::PersistentVolumeClaimTemplate { metadata, spec }
    core::ObjectFieldSelector { api_version, field_path }
    core::ResourceFieldSelector { container_name, resource, divisor }
    core::ConfigMapKeySelector { local_object_reference, key, optional }
    core::SecretKeySelector { local_object_reference, key, optional }
    core::ExecAction { command }
    core::HttpGetAction { path, port, host, scheme, http_headers }
    core::TcpSocketAction { port, host }
    core::GrpcAction { port, service }
    core::SleepAction { seconds }
    core::NodeSelectorTerm { match_expressions, match_fields }
    core::SecretProjection { local_object_reference, items, optional }
    core::DownwardAPIProjection { items }
    core::ConfigMapProjection { local_object_reference, items, optional }
    core::ServiceAccountTokenProjection { audience, expiration_seconds, path }
    core::ClusterTrustBundleProjection { name, signer_name, label_selector, optional, path }
    core::PersistentVolumeClaimSpec {
        access_modes, selector, resources, volume_name, storage_class_name, volume_mode,
        data_source, data_source_ref, volume_attributes_class_name,
    }
    core::HttpHeader { name, value }
    core::NodeSelectorRequirement { key, operator, values }
    core::VolumeResourceRequirements { limits, requests }
    core::TypedLocalObjectReference { api_group, kind, name }
    core::TypedObjectReference { api_group, kind, name, namespace }
}
