"""Validates rendered manifests: built-in kinds with kubernetes-validate (strict: unknown
fields are errors) against one Kubernetes version; custom resources against the
openAPIV3Schema of their CustomResourceDefinition (from the same files), also strictly.

Usage: python validate.py K8S_VERSION FILE...   Prints one line per object; exit 1 on failure.
"""
import copy
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """Structural schemas prune unknown fields; make them errors instead."""
    s = copy.deepcopy(schema)
    s.pop("nullable", None)
    if isinstance(s.get("properties"), dict):
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    if isinstance(s.get("items"), dict):
        s["items"] = strict(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict(s["additionalProperties"])
    return s


def main():
    version, files = sys.argv[1], sys.argv[2:]
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [(f, d) for d in yaml.safe_load_all(fh) if d]
    crds = {}
    for _, d in docs:
        if d["kind"] == "CustomResourceDefinition":
            for v in d["spec"]["versions"]:
                key = (d["spec"]["group"] + "/" + v["name"], d["spec"]["names"]["kind"])
                crds[key] = (d["spec"]["scope"], v["schema"]["openAPIV3Schema"])
    failed = 0
    for f, d in docs:
        name = "%s/%s %s" % (d.get("apiVersion"), d.get("kind"), d.get("metadata", {}).get("name"))
        key = (d.get("apiVersion"), d.get("kind"))
        try:
            if key in crds:
                scope, schema = crds[key]
                body = {k: v for k, v in d.items() if k not in ("apiVersion", "kind", "metadata")}
                schema = strict(schema)
                schema["properties"].pop("metadata", None)
                schema["properties"].pop("apiVersion", None)
                schema["properties"].pop("kind", None)
                jsonschema.Draft7Validator(schema).validate(body)
                if scope == "Cluster" and d["metadata"].get("namespace"):
                    raise ValueError("cluster-scoped %s has a namespace" % d["kind"])
                print("ok  %s (CRD schema)" % name)
            else:
                kubernetes_validate.validate(d, version, strict=True)
                print("ok  %s (Kubernetes %s)" % (name, version))
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            failed += 1
            print("BAD %s in %s: %s" % (name, f, str(e).splitlines()[0]))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
