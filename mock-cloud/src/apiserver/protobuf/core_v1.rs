//! Conversions of the `core/v1` messages kubectl sends.

use super::*;

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
