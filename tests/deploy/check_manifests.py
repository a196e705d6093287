#!/usr/bin/python3
"""Offline checks of deploy/kubernetes/*.yaml, deploy/compose.yaml and the
Grafana dashboards in deploy/grafana/ (valid JSON; every shmalloc_ metric a
query names is one server/metrics_exporter.cc exports).

No cluster and no Docker engine run here, so `kubectl apply --dry-run=client`
cannot validate (it needs an API server for discovery). This checks what a
schema check would, for the fields these manifests use, plus the project's
own rules: non-root, resource limits, probes through `shmalloc health`, every
volumeMount backed by a volume, only flags shmallocd knows, and a daemon that
serves --metrics_listen declares that port and the prometheus.io scrape
annotations for it.

Usage: check_manifests.py REPO_ROOT     Exit 0 when every check passes.
"""
import json
import pathlib
import re
import sys

import yaml

DAEMON_FLAGS = {"--socket", "--shm_dir", "--config", "--listen",
                "--metrics_listen", "--ready_fd"}
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


def metrics_port(args):
    """The port of a --metrics_listen=HOST:PORT argument, else None."""
    for arg in args:
        if arg.startswith("--metrics_listen="):
            return int(arg.split("=", 1)[1].rsplit(":", 1)[-1])
    return None


def check_scrape(where, annotations, port, declared_ports):
    """A daemon serving metrics on `port` is annotated for scraping."""
    if port not in declared_ports:
        fail(where, f"metrics port {port} is not a declared container port")
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}
    for key, value in want.items():
        if str((annotations or {}).get(key)) != value:
            fail(where, f"annotation {key} must be {value!r}")


def check_pod_spec(where, spec, annotations=None):
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
        port = metrics_port(c.get("args", [])) if daemon else None
        if port is not None:
            check_scrape(f"{where}/{c.get('name')}", annotations, port,
                         {p.get("containerPort") for p in c.get("ports", [])})


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
                check_pod_spec(where, doc.get("spec", {}),
                               doc.get("metadata", {}).get("annotations"))
            elif kind == "DaemonSet":
                spec = doc.get("spec", {})
                selector = spec.get("selector", {}).get("matchLabels", {})
                labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    fail(where, "selector.matchLabels must match template labels")
                template = spec.get("template", {})
                check_pod_spec(where, template.get("spec", {}),
                               template.get("metadata", {}).get("annotations"))
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
    daemon = services.get("shmallocd", {})
    port = metrics_port(daemon.get("command", []))
    if port is not None:
        published = {int(str(p).rsplit(":", 1)[-1]) for p in daemon.get("ports", [])}
        check_scrape("compose.yaml:shmallocd", daemon.get("labels"), port,
                     published)
    shm = volumes.get("shm", {}).get("driver_opts", {})
    if shm.get("type") != "tmpfs":
        fail("compose.yaml", "the shared memory volume 'shm' must be a tmpfs")


def check_dashboards(root):
    exporter = root / "server" / "metrics_exporter.cc"
    exported = set(re.findall(r'"(shmalloc_[a-z_]+)"', exporter.read_text()))
    files = sorted((root / "deploy" / "grafana").glob("*.json"))
    if not files:
        fail("deploy/grafana", "no dashboard")
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except ValueError as e:
            fail(f.name, f"not JSON: {e}")
            continue
        for panel in doc.get("panels", []):
            for target in panel.get("targets", []):
                for name in re.findall(r"shmalloc_[a-z_]+", target.get("expr", "")):
                    base = re.sub(r"_(bucket|count|sum)$", "", name)
                    if name not in exported and base not in exported:
                        fail(f"{f.name}:{panel.get('title')}",
                             f"metric {name} is not exported")


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    check_kubernetes(root)
    check_compose(root)
    check_dashboards(root)
    for e in errors:
        print("FAIL", e)
    print(f"manifests: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
