//! Parsing a Service's JSON into the typed view (never panics: wrong types become
//! [`FieldError`]s).

use super::*;

pub(super) struct Parser {
    errs: Vec<FieldError>,
}

impl Parser {
    pub(super) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        match Self::get(obj, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.errs
                    .push(FieldError::type_invalid(path, other, "string"));
                None
            }
        }
    }

    pub(super) fn int(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<i64> {
        let v = Self::get(obj, key)?;
        // Go int32 fields: anything else fails decoding upstream.
        match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "integer"));
                None
            }
        }
    }

    pub(super) fn boolean(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<bool> {
        let v = Self::get(obj, key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "boolean"));
                None
            }
        }
    }

    pub(super) fn object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        let v = Self::get(obj, key)?;
        match v.as_object() {
            Some(m) => Some(m),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "object"));
                None
            }
        }
    }

    pub(super) fn array<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> &'a [Value] {
        match Self::get(obj, key) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.errs
                    .push(FieldError::type_invalid(path, other, "array"));
                &[]
            }
        }
    }

    pub(super) fn strings(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (i, v) in self.array(obj, key, path).iter().enumerate() {
            match v.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.errs.push(FieldError::type_invalid(
                    format!("{path}[{i}]"),
                    v,
                    "string",
                )),
            }
        }
        out
    }

    pub(super) fn string_map(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<BTreeMap<String, String>> {
        let m = self.object(obj, key, path)?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            match v.as_str() {
                Some(s) => {
                    out.insert(k.clone(), s.to_string());
                }
                None if v.is_null() => {}
                None => self.errs.push(FieldError::type_invalid(
                    format!("{path}[{k}]"),
                    v,
                    "string",
                )),
            }
        }
        Some(out)
    }

    pub(super) fn port(&mut self, v: &Value, path: &str) -> Option<Port> {
        let Some(obj) = v.as_object() else {
            self.errs.push(FieldError::type_invalid(path, v, "object"));
            return None;
        };
        let target = match Self::get(obj, "targetPort") {
            None => TargetPort::Int(0),
            Some(Value::String(s)) => TargetPort::Str(s.clone()),
            Some(t) => match t.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
                Some(n) => TargetPort::Int(n),
                None => {
                    let p = format!("{path}.targetPort");
                    self.errs
                        .push(FieldError::type_invalid(p, t, "integer or string"));
                    TargetPort::Int(0)
                }
            },
        };
        Some(Port {
            name: self
                .string(obj, "name", &format!("{path}.name"))
                .unwrap_or_default(),
            protocol: self
                .string(obj, "protocol", &format!("{path}.protocol"))
                .unwrap_or_default(),
            port: self.int(obj, "port", &format!("{path}.port")).unwrap_or(0),
            target,
            node_port: self
                .int(obj, "nodePort", &format!("{path}.nodePort"))
                .unwrap_or(0),
            app_protocol: self.string(obj, "appProtocol", &format!("{path}.appProtocol")),
        })
    }

    pub(super) fn metadata(&mut self, root: &Map<String, Value>, svc: &mut Svc) {
        let Some(meta) = self.object(root, "metadata", "metadata") else {
            return;
        };
        svc.name = self
            .string(meta, "name", "metadata.name")
            .unwrap_or_default();
        svc.namespace = self
            .string(meta, "namespace", "metadata.namespace")
            .unwrap_or_default();
        if let Some(ann) = self.object(meta, "annotations", "metadata.annotations") {
            let path = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
            svc.source_ranges_annotation = self.string(ann, SOURCE_RANGES_ANNOTATION, &path);
        }
    }

    pub(super) fn spec(&mut self, spec: &Map<String, Value>, svc: &mut Svc) {
        svc.ty = self.string(spec, "type", "spec.type").unwrap_or_default();
        svc.cluster_ip = self
            .string(spec, "clusterIP", "spec.clusterIP")
            .unwrap_or_default();
        svc.cluster_ips = self.strings(spec, "clusterIPs", "spec.clusterIPs");
        svc.families = self.strings(spec, "ipFamilies", "spec.ipFamilies");
        svc.policy = self.string(spec, "ipFamilyPolicy", "spec.ipFamilyPolicy");
        for (i, p) in self.array(spec, "ports", "spec.ports").iter().enumerate() {
            if let Some(port) = self.port(p, &format!("spec.ports[{i}]")) {
                svc.ports.push(port);
            }
        }
        svc.selector = self.string_map(spec, "selector", "spec.selector");
        svc.affinity = self
            .string(spec, "sessionAffinity", "spec.sessionAffinity")
            .unwrap_or_default();
        self.affinity_config(spec, svc);
        svc.external_ips = self.strings(spec, "externalIPs", "spec.externalIPs");
        svc.source_ranges = self.strings(
            spec,
            "loadBalancerSourceRanges",
            "spec.loadBalancerSourceRanges",
        );
        let path = "spec.allocateLoadBalancerNodePorts";
        svc.alloc_lb_node_ports = self.boolean(spec, "allocateLoadBalancerNodePorts", path);
        svc.lb_class = self.string(spec, "loadBalancerClass", "spec.loadBalancerClass");
        svc.etp = self
            .string(spec, "externalTrafficPolicy", "spec.externalTrafficPolicy")
            .unwrap_or_default();
        svc.itp = self.string(spec, "internalTrafficPolicy", "spec.internalTrafficPolicy");
        svc.hc_node_port = self
            .int(spec, "healthCheckNodePort", "spec.healthCheckNodePort")
            .unwrap_or(0);
        svc.external_name = self
            .string(spec, "externalName", "spec.externalName")
            .unwrap_or_default();
    }

    pub(super) fn affinity_config(&mut self, spec: &Map<String, Value>, svc: &mut Svc) {
        let Some(cfg) = self.object(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig")
        else {
            return;
        };
        svc.affinity_config = true;
        let path = "spec.sessionAffinityConfig.clientIP";
        if let Some(client) = self.object(cfg, "clientIP", path) {
            svc.affinity_timeout =
                self.int(client, "timeoutSeconds", &format!("{path}.timeoutSeconds"));
        }
    }
}

/// Parses the fields of a Service object this module manages.
pub(super) fn parse(svc: &Value) -> Result<Svc, Vec<FieldError>> {
    let mut p = Parser { errs: Vec::new() };
    let mut out = Svc::default();
    let Some(root) = svc.as_object() else {
        return Err(vec![FieldError::type_invalid("", svc, "object")]);
    };
    p.metadata(root, &mut out);
    if let Some(spec) = p.object(root, "spec", "spec") {
        p.spec(spec, &mut out);
    }
    if p.errs.is_empty() {
        Ok(out)
    } else {
        Err(p.errs)
    }
}
