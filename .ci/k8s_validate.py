"""Checks one rendered overlay (`k8s_validate.py NAME FILE`), offline.

1. Every object validates against the Kubernetes JSON schemas bundled with
   kubernetes-validate, strictly (unknown fields fail), for each supported version.
   cert-manager's Issuer/Certificate have no built-in schema: only their shape is checked.
2. Every pod template passes the `restricted` Pod Security Standard (the checks of
   https://kubernetes.io/docs/concepts/security/pod-security-standards/, plus this
   project's rule: a read-only root filesystem), and the namespace enforces it.
"""

import sys

import yaml
from kubernetes_validate import utils

# The oldest version the manifests need (preStop `sleep` is on by default from 1.30) and
# the newest the pinned validator knows.
VERSIONS = ["1.30.0", "1.32.0"]
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def pod_spec(obj):
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind in POD_OWNERS:
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def restricted(name, spec):
    """The violations of the restricted profile in one pod spec."""
    bad = []
    pod_sc = spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            bad.append(f"{host} is set")
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            bad.append(f"volume {vol['name']} is of a forbidden type {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser is 0")
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            bad.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{where}: capabilities.drop must include ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{where}: adds capabilities {caps['add']}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            bad.append(f"{where}: runAsNonRoot must be true")
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if not isinstance(user, int) or user == 0:
            bad.append(f"{where}: runAsUser must be a numeric non-root user")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}: seccompProfile must be RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{where}: readOnlyRootFilesystem must be true")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{where} uses a hostPort")
    return [f"{name}: {b}" for b in bad]


def main(overlay, path):
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    errors = []
    pods = 0
    for obj in objects:
        ident = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            if set(obj) != {"apiVersion", "kind", "metadata", "spec"}:
                errors.append(f"{ident}: unexpected top-level fields {sorted(obj)}")
            continue
        for version in VERSIONS:
            try:
                utils.validate(obj, version, strict=True)
            except utils.ValidationError as e:
                where = ".".join(map(str, e.path)) or "(top)"
                errors.append(f"{ident} (Kubernetes {version}): {where}: {e.message}")
            except utils.SchemaNotFoundError:
                errors.append(f"{ident}: no Kubernetes {version} schema for this kind")
        spec = pod_spec(obj)
        if spec is not None:
            pods += 1
            errors += restricted(ident, spec)
        if obj["kind"] == "Namespace":
            labels = obj["metadata"].get("labels", {})
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                errors.append(f"{ident}: does not enforce the restricted Pod Security Standard")
    if not any(o["kind"] == "Namespace" for o in objects):
        errors.append("no Namespace object")
    if errors:
        print(f"k8s overlay {overlay}: {len(errors)} problem(s)", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        sys.exit(1)
    print(f"k8s overlay {overlay}: {len(objects)} objects valid "
          f"(Kubernetes {', '.join(VERSIONS)}), {pods} pod templates restricted")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
