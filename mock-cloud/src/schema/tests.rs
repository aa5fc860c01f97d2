use super::cel::eval;
use super::*;
use crate::registry::ResourceInfo;
use serde_json::json;

fn holds(rule: &str, v: Value) -> bool {
    eval(rule, &v).unwrap_or_else(|e| panic!("{rule}: {e}"))
}

#[test]
fn kubernetes_ip_and_cidr_functions() {
    for (s, ok) in [
        ("10.0.0.1", true),
        ("2001:db8::1", true),
        ("10.0.0.300", false),
        ("010.0.0.1", false),
        ("::ffff:10.0.0.1", false),
        ("fe80::1%eth0", false),
        ("", false),
    ] {
        assert_eq!(holds("isIP(self)", json!(s)), ok, "{s}");
    }
    for (s, ok) in [
        ("10.0.0.0/24", true),
        ("10.0.0.1/24", true),
        ("2001:db8::/120", true),
        ("10.0.0.300/24", false),
        ("10.0.0.0/33", false),
        ("10.0.0.0/024", false),
        ("::/129", false),
        ("10.0.0.0", false),
        ("10.0.0.0/", false),
    ] {
        assert_eq!(holds("isCIDR(self)", json!(s)), ok, "{s}");
    }
    assert!(holds("ip(self).family() == 4", json!("192.0.2.1")));
    assert!(holds("ip(self).family() == 6", json!("2001:db8::1")));
    assert!(holds(
        "cidr(self).prefixLength() == 20",
        json!("10.0.0.0/20")
    ));
    assert!(holds(
        "cidr(self).containsIP('10.0.15.255')",
        json!("10.0.0.0/20")
    ));
    assert!(!holds(
        "cidr(self).containsIP('10.0.16.0')",
        json!("10.0.0.0/20")
    ));
    assert!(holds(
        "cidr(self).containsIP(ip('2001:db8::5'))",
        json!("2001:db8::/64")
    ));
    assert!(!holds(
        "cidr(self).containsIP('10.0.0.1')",
        json!("2001:db8::/64")
    ));
    assert!(holds("cidr(self).ip().family() == 4", json!("10.0.0.0/8")));
    assert!(holds(
        "cidr(self).containsIP('1.2.3.4')",
        json!("0.0.0.0/0")
    ));
    assert!(eval("ip(self).family() == 4", &json!("nope")).is_err());
}

#[test]
fn standard_library_strings_and_macros() {
    assert!(holds(
        "self.split('-').size() == 2 && self.split('-')[1].trim() == 'b'",
        json!("a - b")
    ));
    assert!(holds(
        "self.all(x, x > 0) && self.exists(x, x == 2)",
        json!([1, 2, 3])
    ));
    assert!(holds("int(self.split(':')[0]) <= 65535", json!("65000:1")));
    assert!(holds("self.matches('^[0-9]+$')", json!("123")));
    assert!(holds(
        "!has(self.b) && has(self.a) && size(self.a) == 1",
        json!({"a": ["x"]})
    ));
    assert!(
        eval("self +", &json!(1)).is_err(),
        "a syntax error is an error"
    );
    assert!(
        eval("self", &json!(1)).is_err(),
        "a non-bool result is an error"
    );
}

fn pool_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["addresses"],
                "x-kubernetes-validations": [
                    {"rule": "!self.strict || self.addresses.size() < 3", "message": "strict pools hold at most 2 entries"}
                ],
                "properties": {
                    "addresses": {
                        "type": "array", "minItems": 1, "maxItems": 3,
                        "items": {
                            "type": "string", "maxLength": 20,
                            "x-kubernetes-validations": [{"rule": "isCIDR(self)", "message": "must be a CIDR"}]
                        }
                    },
                    "strict": {"type": "boolean", "default": false},
                    "priority": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10},
                    "mode": {"type": "string", "enum": ["a", "b"]},
                    "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "opt": {"type": "string", "nullable": true}
                }
            },
            "status": {"type": "object", "properties": {"n": {"type": "integer"}}}
        }
    })
}

fn lines(schema: &Value, mut obj: Value) -> (Value, Vec<String>) {
    let c = check(schema, &mut obj);
    (obj, c.errors.iter().map(FieldError::line).collect())
}

#[test]
fn prunes_unknown_fields_drops_nulls_and_fills_defaults() {
    let (obj, errs) = lines(
        &pool_schema(),
        json!({
            "apiVersion": "x.io/v1", "kind": "Pool", "metadata": {"name": "p", "anything": 1},
            "top": 1,
            "spec": {"addresses": ["10.0.0.0/24"], "typo": true, "mode": null, "opt": null,
                     "labels": {"a": "b"}, "free": {"x": {"y": 1}}},
            "status": {"n": 1, "extra": "x"}
        }),
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        obj,
        json!({
            "apiVersion": "x.io/v1", "kind": "Pool", "metadata": {"name": "p", "anything": 1},
            "spec": {"addresses": ["10.0.0.0/24"], "strict": false, "opt": null,
                     "labels": {"a": "b"}, "free": {"x": {"y": 1}}},
            "status": {"n": 1}
        })
    );
}

#[test]
fn schema_errors_are_worded_as_kube_apiserver_words_them() {
    let s = pool_schema();
    let cases = [
        (
            json!({"addresses": "10.0.0.0/24"}),
            vec![
                r#"spec.addresses: Invalid value: "string": spec.addresses in body must be of type array: "string""#,
                r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
            ],
        ),
        (json!({}), vec!["spec.addresses: Required value"]),
        (
            json!({"addresses": []}),
            vec![
                "spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items",
            ],
        ),
        (
            json!({"addresses": ["10.0.0.0/8", "10.0.0.0/9", "10.0.0.0/10", "10.0.0.0/11"]}),
            vec!["spec.addresses: Too many: 4: must have at most 3 items"],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "priority": -1}),
            vec![
                "spec.priority: Invalid value: -1: spec.priority in body should be greater than or equal to 0",
            ],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "priority": 11}),
            vec![
                "spec.priority: Invalid value: 11: spec.priority in body should be less than or equal to 10",
            ],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "mode": "c"}),
            vec![r#"spec.mode: Unsupported value: "c": supported values: "a", "b""#],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "name": "A1"}),
            vec![r#"spec.name: Invalid value: "A1": spec.name in body should match '^[a-z]+$'"#],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "name": "a"}),
            vec![
                r#"spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long"#,
            ],
        ),
        (
            json!({"addresses": ["10.0.0.0/8", "x".repeat(21)]}),
            vec![
                "spec.addresses[1]: Too long: may not be more than 20 bytes",
                r#"spec.addresses[1]: Invalid value: "string": must be a CIDR"#,
            ],
        ),
        (
            json!({"addresses": ["10.0.0.300/24"]}),
            vec![r#"spec.addresses[0]: Invalid value: "string": must be a CIDR"#],
        ),
        (
            json!({"addresses": ["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16"], "strict": true}),
            vec![r#"spec: Invalid value: "object": strict pools hold at most 2 entries"#],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "priority": "1"}),
            vec![
                r#"spec.priority: Invalid value: "string": spec.priority in body must be of type integer: "string""#,
                r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
            ],
        ),
        (
            json!({"addresses": ["10.0.0.0/8"], "labels": {"a": 1}}),
            vec![
                r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#,
                r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
            ],
        ),
    ];
    for (spec, want) in cases {
        let (_, got) = lines(&s, json!({"metadata": {"name": "p"}, "spec": spec.clone()}));
        assert_eq!(got, want, "{spec}");
    }
}

fn pool_info() -> ResourceInfo {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.x.io"},
        "spec": {"group": "x.io", "scope": "Cluster",
                 "names": {"plural": "pools", "kind": "Pool"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": pool_schema()}}]}
    });
    assert_eq!(check_crd_rules(&crd), Ok(()));
    ResourceInfo::from_crd(&crd).unwrap().remove(0)
}

#[test]
fn a_refusal_is_a_422_status_with_causes() {
    let info = pool_info();
    let mut obj = json!({"apiVersion": "x.io/v1", "kind": "Pool", "metadata": {"name": "bad"},
                         "spec": {"addresses": ["10.0.0.300/24", "10.0.0.0/8"], "priority": 12}});
    let e = admit(&info, &mut obj, None, false).unwrap_err();
    assert_eq!(e.code, 422);
    let st = e.status();
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(
        st["message"],
        r#"Pool.x.io "bad" is invalid: [spec.priority: Invalid value: 12: spec.priority in body should be less than or equal to 10, spec.addresses[0]: Invalid value: "string": must be a CIDR]"#,
        "schema errors first, then the rules'"
    );
    assert_eq!(st["details"]["kind"], "Pool");
    assert_eq!(st["details"]["group"], "x.io");
    assert_eq!(
        st["details"]["causes"][1],
        json!({"reason": "FieldValueInvalid", "field": "spec.addresses[0]",
               "message": "Invalid value: \"string\": must be a CIDR"})
    );
    // A valid one is admitted, pruned and defaulted.
    let mut ok = json!({"apiVersion": "x.io/v1", "kind": "Pool", "metadata": {"name": "ok"},
                        "spec": {"addresses": ["10.0.0.0/8"], "junk": 1}});
    admit(&info, &mut ok, None, false).unwrap();
    assert_eq!(
        ok["spec"],
        json!({"addresses": ["10.0.0.0/8"], "strict": false})
    );
    // fieldValidation=Strict: an unknown field is a 400 naming it.
    let mut typo = json!({"apiVersion": "x.io/v1", "kind": "Pool", "metadata": {"name": "t"},
                          "spec": {"addresses": ["10.0.0.0/8"], "adresses": [], "labels": {"a": "b"}}});
    let e = admit(&info, &mut typo, None, true).unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        r#"Pool in version "v1" cannot be handled as a Pool: strict decoding error: unknown field "spec.adresses""#
    );
}

#[test]
fn an_update_ratchets_values_it_does_not_change() {
    let info = pool_info();
    let old = json!({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.300/24"]}});
    let mut same = json!({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.300/24"]}, "status": {"n": 2}});
    admit(&info, &mut same, Some(&old), false).unwrap();
    let mut changed = json!({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.301/24"]}});
    assert!(admit(&info, &mut changed, Some(&old), false).is_err());
}

#[test]
fn a_crd_whose_rule_does_not_compile_is_refused() {
    let crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]}}}}}]}});
    let e = check_crd_rules(&crd).unwrap_err();
    assert!(
        e.starts_with("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.a ==\": compilation failed"),
        "{e}"
    );
}
