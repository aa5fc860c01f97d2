//! Conversions of the `apps/v1` messages kubectl sends.

use super::*;

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
