#!/usr/bin/python3
"""Offline checks of deploy/kubernetes/*.yaml and deploy/compose.yaml.

No cluster and no Docker engine run here, so `kubectl apply --dry-run=client`
cannot validate (it needs an API server for discovery). This checks what a
schema check would, for the fields these manifests use, plus the project's
own rules: non-root, resource limits, probes through `shmalloc health`, every
volumeMount backed by a volume, only flags shmallocd knows.

Usage: check_manifests.py REPO_ROOT     Exit 0 when every check passes.
"""
import pathlib
import sys

import yaml

DAEMON_FLAGS = {"--socket", "--shm_dir", "--config", "--listen", "--ready_fd"}
KNOWN_KINDS = {"Namespace": "v1", "Pod": "v1", "DaemonSet": "apps/v1"}
errors = []


def fail(where, what):
    errors.append(f"{where}: {what}")


def check_container(where, c, pod_volumes, daemon):
    for key in ("name", "image"):
        if not isinstance(c.get(key), str) or not c[key]:
            fail(where, f"container needs a string '{key}'")
    where = f"{where}/{c.get('name')}"
    limits = c.get("resources", {}).get("limits", {})
    if "memory" not in limits or "cpu" not in limits:
        fail(where, "resources.limits needs cpu and memory")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(where, "securityContext.allowPrivilegeEscalation must be false")
    for m in c.get("volumeMounts", []):
        if m.get("name") not in pod_volumes:
            fail(where, f"volumeMount {m.get('name')!r} has no volume")
        if not str(m.get("mountPath", "")).startswith("/"):
            fail(where, f"mountPath {m.get('mountPath')!r} is not absolute")
    if daemon:
        for arg in c.get("args", []):
            flag = arg.split("=", 1)[0]
            if flag not in DAEMON_FLAGS:
                fail(where, f"shmallocd has no flag {flag}")
        for probe in ("livenessProbe", "readinessProbe"):
            cmd = c.get(probe, {}).get("exec", {}).get("command", [])
            if not cmd or cmd[0] != "shmalloc" or "health" not in cmd:
                fail(where, f"{probe} must exec 'shmalloc health'")


def check_pod_spec(where, spec):
    sc = spec.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
        fail(where, "pod securityContext.runAsUser must be a non-zero uid")
    volumes = {}
    for v in spec.get("volumes", []):
        sources = [k for k in v if k != "name"]
        if len(sources) != 1:
            fail(where, f"volume {v.get('name')!r} needs exactly one source")
        hp = v.get("hostPath")
        if hp is not None and hp.get("type") not in (
                None, "", "Directory", "DirectoryOrCreate", "File",
                "FileOrCreate", "Socket"):
            fail(where, f"hostPath type {hp.get('type')!r} is not valid")
        volumes[v.get("name")] = v
    containers = spec.get("containers", [])
    if not containers:
        fail(where, "pod has no containers")
    for c in spec.get("initContainers", []):
        check_container(where + "/init", dict(c, resources=c.get(
            "resources", {"limits": {"cpu": 1, "memory": 1}})), volumes, False)
    for c in containers:
        daemon = "args" in c and c.get("command") is None
        check_container(where, c, volumes, daemon)


def check_kubernetes(root):
    files = sorted((root / "deploy" / "kubernetes").glob("*.yaml"))
    if not files:
        fail("deploy/kubernetes", "no manifests")
    kinds = set()
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is None:
                continue
            where = f"{f.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            kind = doc.get("kind")
            if kind not in KNOWN_KINDS:
                fail(where, f"unexpected kind {kind!r}")
                continue
            kinds.add(kind)
            if doc.get("apiVersion") != KNOWN_KINDS[kind]:
                fail(where, f"apiVersion must be {KNOWN_KINDS[kind]}")
            if not doc.get("metadata", {}).get("name"):
                fail(where, "metadata.name is required")
            if kind == "Pod":
                check_pod_spec(where, doc.get("spec", {}))
            elif kind == "DaemonSet":
                spec = doc.get("spec", {})
                selector = spec.get("selector", {}).get("matchLabels", {})
                labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    fail(where, "selector.matchLabels must match template labels")
                check_pod_spec(where, spec.get("template", {}).get("spec", {}))
    if "DaemonSet" not in kinds:
        fail("deploy/kubernetes", "no DaemonSet")


def check_compose(root):
    path = root / "deploy" / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    volumes = doc.get("volumes", {})
    for name in ("shmallocd", "producer", "consumer"):
        if name not in services:
            fail("compose.yaml", f"service {name!r} missing")
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            source = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if not source.startswith((".", "/")) and source not in volumes:
                fail(f"compose.yaml:{name}", f"volume {source!r} is not declared")
    shm = volumes.get("shm", {}).get("driver_opts", {})
    if shm.get("type") != "tmpfs":
        fail("compose.yaml", "the shared memory volume 'shm' must be a tmpfs")


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    check_kubernetes(root)
    check_compose(root)
    for e in errors:
        print("FAIL", e)
    print(f"manifests: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
