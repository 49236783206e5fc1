"""deploy/kubernetes without a cluster: every manifest against the Kubernetes schemas, the
kustomization rendered, and the workloads against what the daemons read (their twistd
Options, etc/bbd.toml, the data path of docker-compose.yml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kustomize import load_kustomization, load_resources, pod_spec, render, retag

from bbd import cli, config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still widely run, and the newest the schemas know.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
DATA = "/app/dados"
PLUGINS = {"bbd-server": "bbd.services.server", "bbd-reference": "bbd.services.reference",
           "bbd-broker": "bbd.services.broker", "bbd-proxy": "bbd.services.proxy",
           "bbd-dashboard": "bbd.services.dashboard"}
KEYS = "/app/chaves"  # where the Secret bbd-chaves is mounted


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in render(DEPLOY)}


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


# -- schemas and kustomize ----------------------------------------------------------------

@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    docs = load_resources(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        # strict: an unknown (misspelt) field fails too, not only a wrong type
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    doc = load_resources(DEPLOY / "servidor.yaml")[1]
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    k = load_kustomization(DEPLOY)
    assert sorted(k["resources"]) == [p.name for p in manifests()]


def test_rendered_deployment_is_valid_and_complete(objects: dict) -> None:
    part_of = ("app.kubernetes.io/part-of", "bulletinboard")
    for obj in objects.values():
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)
        assert part_of in obj["metadata"]["labels"].items()
        if pod_spec(obj):  # its pods too, so `kubectl get pods -l` finds them
            assert part_of in obj["spec"]["template"]["metadata"]["labels"].items()
    assert set(objects) == {
        ("StatefulSet", "servidor"), ("Service", "servidor"),
        ("PodDisruptionBudget", "servidor"),
        ("StatefulSet", "referencia"), ("Service", "referencia"),
        ("Deployment", "broker"), ("Service", "broker"), ("Service", "broker-publico"),
        ("Deployment", "proxy"), ("Service", "proxy"), ("Service", "proxy-publico"),
        ("Deployment", "cliente-automatico"),
        ("Deployment", "painel"), ("Service", "painel"),
        ("NetworkPolicy", "servidor"), ("NetworkPolicy", "referencia"),
        ("NetworkPolicy", "broker"), ("NetworkPolicy", "proxy"), ("NetworkPolicy", "painel"),
    }
    images = {c["image"] for o in objects.values() if pod_spec(o)
              for c in pod_spec(o)["containers"]}
    assert images == {"bulletinboard-python:0.1.0", "bulletinboard-bot:0.1.0"}


def test_image_rules_follow_kustomize() -> None:
    rule = {"name": "bulletinboard-python", "newName": "reg.example:5000/bb", "newTag": "2"}
    assert retag("bulletinboard-python", rule) == "reg.example:5000/bb:2"
    assert retag("bulletinboard-python:1", rule) == "reg.example:5000/bb:2"
    assert retag("bulletinboard-bot:1", rule) == "bulletinboard-bot:1"
    assert retag("bulletinboard-python", {"name": "bulletinboard-python", "digest":
                                          "sha256:ab"}) == "bulletinboard-python@sha256:ab"


def test_python_rendering_matches_kubectl_kustomize(objects: dict) -> None:
    """Where a kustomize exists (kubectl's built-in), its output is the Python one."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python rendering stands alone")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    theirs = {(r["kind"], r["metadata"]["name"]): r for r in yaml.safe_load_all(out) if r}
    assert theirs == objects


# -- the workloads against what the daemons read ------------------------------------------

def container(obj: dict) -> dict:
    (c,) = pod_spec(obj)["containers"]
    return c


def env_of(obj: dict) -> dict[str, str]:
    """The container's environment as the kubelet makes it: the pod's own name for a
    fieldRef metadata.name (ordinal 0 of a StatefulSet), $(VAR) expanded in order."""
    env: dict[str, str] = {}
    for e in container(obj).get("env", []):
        if "valueFrom" in e:
            assert e["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[e["name"]] = f"{obj['metadata']['name']}-0"
        else:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
    return env


def daemon_options(obj: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """The plugin's own Options, parsed from the container's command and environment."""
    import importlib

    cmd = container(obj)["command"]
    assert cmd[:2] == ["twistd", "-n"] and "--logfile" in cmd  # logs to stdout
    plugin = next(a for a in cmd if a in PLUGINS)
    for var in ("BBD_NAME", "BBD_HOST"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env_of(obj).items():
        monkeypatch.setenv(var, value)
    # The keys are a Secret mounted in the pod: the options may only check it is named.
    from bbd import auth

    monkeypatch.setattr(auth, "load", lambda directory: ("keys of", str(directory)))
    opts = importlib.import_module(PLUGINS[plugin]).Options()
    opts.parseOptions(cmd[cmd.index(plugin) + 1:])
    return plugin, opts


def port_of(endpoint: str) -> tuple[str, int]:
    u = urlsplit(endpoint)
    return u.hostname, u.port


def container_ports(obj: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(obj).get("ports", [])}


def workload_of(objects: dict, endpoint: str) -> dict:
    """The workload whose pods the Service of ``tcp://SERVICE:PORT`` selects."""
    selector = objects[("Service", port_of(endpoint)[0])]["spec"]["selector"]
    (w,) = [o for (kind, _), o in objects.items() if kind in ("Deployment", "StatefulSet")
            and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
    return w


def service_reaches(objects: dict, endpoint: str, workload: dict) -> None:
    """``tcp://SERVICE:PORT`` is a Service in the deployment that selects ``workload``'s
    pods and sends PORT to a port the container declares."""
    host, port = port_of(endpoint)
    svc = objects[("Service", host)]
    assert svc["spec"]["selector"].items() <= \
        workload["spec"]["template"]["metadata"]["labels"].items()
    (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    assert container_ports(workload)[sp["targetPort"]] == port


def volume_path(obj: dict, name: str) -> str:
    (m,) = [m for m in container(obj)["volumeMounts"] if m["name"] == name]
    return m["mountPath"]


def probe_args(obj: dict, which: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The probe's exec command parsed by bbd's own command line (a typo fails here)."""
    cmd = container(obj)[which]["exec"]["command"]
    assert cmd[:2] == ["bbd", "probe"]
    seen: list = []
    monkeypatch.setattr("bbd.probe.probe", lambda *a: seen.append(a) or (True, "ok"))
    assert cli.main(cmd[1:]) == 0
    daemon, endpoint, ready, _timeout, keys = seen[0]
    assert str(keys) == "/app/chaves"  # the board's keys, from the Secret
    return daemon, endpoint, ready


def test_servers_statefulset_agrees_with_the_server(objects: dict, monkeypatch) -> None:
    sts, svc = objects[("StatefulSet", "servidor")], objects[("Service", "servidor")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "servidor" and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    plugin, o = daemon_options(sts, monkeypatch)
    assert plugin == "bbd-server"
    # Name from the pod, address = its DNS name under the headless Service.
    assert o["name"] == "servidor-0"
    assert o["host"] == f"{o['name']}.{sts['spec']['serviceName']}"
    assert o["bind"] == "*"
    ports = container_ports(sts)
    assert ports == {"sync": o["sync-port"], "replication": o["replication-port"],
                     "metrics": o["metrics-port"]}
    assert (o["sync-port"], o["replication-port"]) == \
        (config.port("sync"), config.port("replication"))
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports
    assert all(ports[p["targetPort"]] == p["port"] for p in svc["spec"]["ports"])
    # Its volume is where it keeps its data, the same path as in Compose.
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert o["data"] == volume_path(sts, claim["metadata"]["name"]) == DATA
    # Every endpoint it connects to is a Service of this deployment on the right port.
    service_reaches(objects, o["broker"], objects[("Deployment", "broker")])
    service_reaches(objects, o["publish"], objects[("Deployment", "proxy")])
    service_reaches(objects, o["subscribe"], objects[("Deployment", "proxy")])
    service_reaches(objects, o["reference"], objects[("StatefulSet", "referencia")])
    assert port_of(o["broker"])[1] == config.port("backend")
    assert port_of(o["publish"])[1] == config.port("xsub")
    assert port_of(o["subscribe"])[1] == config.port("xpub")
    assert port_of(o["reference"])[1] == config.port("reference")


def test_server_probes_ask_its_own_status_port(objects: dict, monkeypatch) -> None:
    sts = objects[("StatefulSet", "servidor")]
    port = container_ports(sts)["sync"]
    for which, needs_ready in [("startupProbe", False), ("livenessProbe", False),
                               ("readinessProbe", True)]:
        daemon, endpoint, ready = probe_args(sts, which, monkeypatch)
        assert daemon == "server" and ready is needs_ready
        from bbd import probe

        assert port_of(endpoint or probe.default_endpoint(daemon)) == ("127.0.0.1", port)
        # The probe's own answer wait fits in the kubelet's timeout.
        assert container(sts)[which]["timeoutSeconds"] >= 2


def test_reference_statefulset_agrees_with_the_reference(objects: dict, monkeypatch) -> None:
    sts = objects[("StatefulSet", "referencia")]
    assert sts["spec"]["replicas"] == 1
    plugin, o = daemon_options(sts, monkeypatch)
    assert plugin == "bbd-reference"
    assert port_of(o["listen"])[1] == container_ports(sts)["reference"] == \
        config.port("reference")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert o["data"] == volume_path(sts, claim["metadata"]["name"])
    for which in ("livenessProbe", "readinessProbe"):
        daemon, endpoint, _ = probe_args(sts, which, monkeypatch)
        assert daemon == "reference" and endpoint is None  # default: the configured port


@pytest.mark.parametrize("name,sides", [("broker", ("frontend", "backend")),
                                        ("proxy", ("xsub", "xpub"))])
def test_broker_and_proxy_agree_with_their_daemons(objects: dict, monkeypatch, name: str,
                                                   sides: tuple[str, str]) -> None:
    dep = objects[("Deployment", name)]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    plugin, o = daemon_options(dep, monkeypatch)
    assert plugin == f"bbd-{name}"
    ports = container_ports(dep)
    for side in sides:
        assert port_of(o[side])[1] == ports[side] == config.port(side)
        service_reaches(objects, f"tcp://{name}:{ports[side]}", dep)
    for which in ("livenessProbe", "readinessProbe"):
        assert container(dep)[which]["tcpSocket"]["port"] in ports


def served(root: Any, path: str) -> bool:
    """Does a twisted.web resource tree have a child at ``path``?"""
    node = root
    for segment in path.strip("/").split("/"):
        node = node.children.get(segment.encode())
        if node is None:
            return False
    return True


def dashboard_site() -> Any:
    from bbd.services import dashboard
    from bbd.watch import BoardWatch

    watch = BoardWatch(lambda: 0.0)
    return dashboard.site(watch, dashboard.EventStreams(watch), None).resource


def test_dashboard_deployment_agrees_with_the_dashboard(objects: dict, monkeypatch) -> None:
    dep = objects[("Deployment", "painel")]
    assert dep["spec"]["replicas"] == 1
    plugin, o = daemon_options(dep, monkeypatch)
    assert plugin == "bbd-dashboard"
    # Its page on every interface of the pod, at the port of etc/bbd.toml, behind its Service.
    assert container_ports(dep) == {"http": o["port"]}
    assert o["port"] == config.port("dashboard") and o["interface"] == ""
    service_reaches(objects, f"tcp://painel:{o['port']}", dep)
    # No demo buttons: nothing here owns the processes the way `bbd up --demo` does.
    assert o["demo-control"] is None
    # What it watches: the reference and the proxy's publications, the broker's channels.
    service_reaches(objects, o["reference"], objects[("StatefulSet", "referencia")])
    service_reaches(objects, o["subscribe"], objects[("Deployment", "proxy")])
    service_reaches(objects, o["broker"], objects[("Deployment", "broker")])
    assert port_of(o["reference"])[1] == config.port("reference")
    assert port_of(o["subscribe"])[1] == config.port("xpub")
    assert port_of(o["broker"])[1] == config.port("frontend")
    # Probes ask a page the dashboard serves, on its port.
    root = dashboard_site()
    for which in ("livenessProbe", "readinessProbe"):
        get = container(dep)[which]["httpGet"]
        assert get["port"] == "http" and served(root, get["path"]), which


@pytest.mark.parametrize("service,kind,name", [
    ("referencia", "StatefulSet", "referencia"), ("broker", "Deployment", "broker"),
    ("proxy", "Deployment", "proxy"), ("servidor-1", "StatefulSet", "servidor"),
    ("painel", "Deployment", "painel")])
def test_workloads_run_compose_s_commands(objects: dict, service: str, kind: str,
                                          name: str) -> None:
    """The same daemons with the same options as Compose, the keys' mount point aside."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    theirs = compose["services"][service]["command"]
    assert "/claves" in theirs
    assert container(objects[(kind, name)])["command"] == \
        [KEYS if a == "/claves" else a for a in theirs]


def annotations(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("annotations", {})


def test_scrape_annotations_point_at_the_metrics_pages(objects: dict, monkeypatch) -> None:
    from prometheus_client import CollectorRegistry

    from bbd import metrics

    for workload, port in scrapes(objects):
        plugin, o = daemon_options(workload, monkeypatch)
        if plugin == "bbd-server":
            assert o["metrics-port"] == port == container_ports(workload)["metrics"]
            root = metrics.site_service(CollectorRegistry(), port, "").args[1].resource
        else:
            assert plugin == "bbd-dashboard"
            assert o["port"] == port == container_ports(workload)["http"]
            root = dashboard_site()
        assert served(root, annotations(workload)["prometheus.io/path"])


def docs_resources(kind: str) -> list[dict]:
    """The resources of that kind in docs/kubernetes.md's YAML blocks."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    return [doc for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
            for doc in yaml.safe_load_all(block) if doc and doc.get("kind") == kind]


def test_docs_service_monitor_finds_every_metrics_port(objects: dict) -> None:
    """The documented ServiceMonitor (Prometheus Operator) finds by Service label and port
    name exactly the pods the annotations name, at the same port and path."""
    (monitor,) = docs_resources("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    services = [o for (kind, _), o in objects.items() if kind == "Service"
                and selects(monitor["spec"]["selector"], o["metadata"]["labels"])]
    found = set()
    for endpoint in monitor["spec"]["endpoints"]:
        for svc in services:
            for sp in svc["spec"]["ports"]:
                if sp["name"] != endpoint["port"]:
                    continue
                workload = workload_of(objects, f"tcp://{svc['metadata']['name']}:{sp['port']}")
                ann = annotations(workload)
                assert endpoint["path"] == ann["prometheus.io/path"]
                assert container_ports(workload)[sp["targetPort"]] == \
                    int(ann["prometheus.io/port"])
                found.add(workload["metadata"]["name"])
    assert found == {w["metadata"]["name"] for w, _ in scrapes(objects)}


def test_only_the_client_ports_are_public(objects: dict) -> None:
    public = {name: o for (kind, name), o in objects.items()
              if kind == "Service" and o["spec"].get("type") in ("LoadBalancer", "NodePort")}
    assert set(public) == {"broker-publico", "proxy-publico"}
    exposed = {p["port"] for o in public.values() for p in o["spec"]["ports"]}
    assert exposed == {config.port("frontend"), config.port("xpub")}
    service_reaches(objects, f"tcp://broker-publico:{config.port('frontend')}",
                    objects[("Deployment", "broker")])
    service_reaches(objects, f"tcp://proxy-publico:{config.port('xpub')}",
                    objects[("Deployment", "proxy")])


def test_bots_reach_the_broker_and_proxy(objects: dict) -> None:
    bots = objects[("Deployment", "cliente-automatico")]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert bots["spec"]["replicas"] == \
        compose["services"]["cliente_automatico"]["deploy"]["replicas"]
    cmd = container(bots)["command"]
    assert cmd[:2] == ["node", "clients/js/bot.js"]
    env = env_of(bots)
    for flag, var, workload in [("--broker", "BROKER", "broker"), ("--proxy", "PROXY", "proxy")]:
        assert cmd[cmd.index(flag) + 1] == env[var]
        service_reaches(objects, env[var], objects[("Deployment", workload)])


def test_data_path_is_compose_s(objects: dict) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service, workload in [("servidor-1", "servidor"), ("servidor-3", "servidor"),
                              ("referencia", "referencia")]:
        mounts = [v.split(":", 1)[1] for v in compose["services"][service]["volumes"]]
        assert mounts[0] == DATA  # then the keys, read-only
        assert volume_path(objects[("StatefulSet", workload)], "dados") == DATA


def test_a_drain_takes_one_server_and_replicas_spread(objects: dict) -> None:
    sts = objects[("StatefulSet", "servidor")]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    pdb = objects[("PodDisruptionBudget", "servidor")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (term,) = pod_spec(sts)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_every_daemon_has_requests_and_a_memory_limit(objects: dict) -> None:
    for obj in objects.values():
        if pod_spec(obj) is None:
            continue
        res = container(obj)["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]), obj["metadata"]["name"]
        assert "memory" in res["limits"], obj["metadata"]["name"]


def test_keys_come_from_a_secret_never_from_the_deployment(objects: dict) -> None:
    assert not [k for k, _ in objects if k == "Secret"]
    mounted = []
    for obj in objects.values():
        spec = pod_spec(obj)
        if spec is None:
            continue
        for v in spec.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] == "bbd-chaves"
                (m,) = [m for m in container(obj)["volumeMounts"] if m["name"] == v["name"]]
                assert m["readOnly"] is True and m["mountPath"] == "/app/chaves"
                mounted.append(obj["metadata"]["name"])
    # Every daemon with an internal port, and with it the keys' option.
    assert sorted(mounted) == ["broker", "painel", "proxy", "referencia", "servidor"]
    for name in mounted:
        workload = next(o for (k, n), o in objects.items() if n == name and "spec" in o
                        and pod_spec(o) is not None)
        cmd = container(workload)["command"]
        assert cmd[cmd.index("--keys") + 1] == "/app/chaves"


def docker_ignores(path: str, patterns: list[str]) -> bool:
    """Does the build context leave ``path`` out? Docker's rules for these patterns: ``**``
    any number of directories, ``*`` and ``?`` within one, and a directory left out takes
    everything under it."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        return out

    parts = path.split("/")
    return any(re.fullmatch(regex(p.strip("/")), "/".join(parts[:n]))
               for p in patterns for n in range(1, len(parts) + 1))


def test_keys_made_as_documented_never_reach_an_image(tmp_path: Path) -> None:
    from bbd import auth

    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    made = re.search(r"^bbd keys (\S+?)/?$", docs, re.M)
    assert made is not None and f"--from-file={made[1]}/" in docs
    auth.create(tmp_path / made[1])
    keys = [f"{made[1]}/{f.name}" for f in (tmp_path / made[1]).iterdir()]
    assert len(keys) == 2  # the public and the secret key
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")]  # no exception re-includes them
    # Made where the docs say (the checkout's root, the context of `docker build .`), or
    # anywhere else in it, the keys stay out of the build context.
    for key in keys + [f"deploy/kubernetes/{k}" for k in keys] + ["run/x/board.key_secret",
                                                                   "a/b/board.key"]:
        assert docker_ignores(key, patterns), key
    for source in ("bbd/auth.py", "deploy/kubernetes/servidor.yaml", "etc/bbd.toml",
                   "bbd/web/index.html", "twisted/plugins/bbd_plugins.py"):
        assert not docker_ignores(source, patterns), source


def test_docs_give_the_commands(objects: dict) -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "kubectl apply -k deploy/kubernetes" in docs
    assert "kubectl create secret generic bbd-chaves" in docs
    run = next(line for line in docs.splitlines() if "kubectl run" in line)
    assert "-it" in run and "BROKER=tcp://broker:5555" in run and \
        "PROXY=tcp://proxy:5558" in run
    # The README's deployment section gives the same client and dashboard lines.
    readme = (ROOT / "README.md").read_text().splitlines()
    assert run in readme
    assert next(line for line in docs.splitlines() if "kubectl port-forward" in line) \
        .split("#")[0].strip() in readme
    # The dashboard through a port-forward to its Service's port...
    forward = re.search(r"kubectl port-forward svc/([\w-]+) (\d+):(\d+)", docs)
    assert forward is not None
    svc = objects[("Service", forward[1])]
    assert int(forward[3]) in [p["port"] for p in svc["spec"]["ports"]]
    service_reaches(objects, f"tcp://{forward[1]}:{forward[3]}",
                    objects[("Deployment", "painel")])
    # ... and the namespace label the scrapers' NetworkPolicy entries ask for.
    label = re.search(r"kubectl label namespace monitoring ([\w./-]+)=(\w+)", docs)
    assert label is not None
    asked = {(k, v) for (kind, _), o in objects.items() if kind == "NetworkPolicy"
             for rule in o["spec"]["ingress"] for f in rule.get("from", [])
             for k, v in f.get("namespaceSelector", {}).get("matchLabels", {}).items()}
    assert asked == {(label[1], label[2])}


# -- NetworkPolicy: every connection the daemons make is let through, nothing else ---------

SCRAPE = "bulletinboard.io/scrape"  # the label of a namespace whose pods may scrape metrics
HERE = {"kubernetes.io/metadata.name": "board"}  # the board's namespace
MONITORING = {"kubernetes.io/metadata.name": "monitoring", SCRAPE: "true"}
ELSEWHERE = {"kubernetes.io/metadata.name": "other"}


@dataclass(frozen=True)
class Peer:
    """Where a connection comes from: a pod (its labels, its namespace's labels, the
    board's workload it belongs to) or, with ``namespace`` None, outside the cluster."""

    what: str
    labels: dict[str, str]
    namespace: dict[str, str] | None
    workload: str | None = None


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def as_peer(workload: dict) -> Peer:
    name = workload["metadata"]["name"]
    return Peer(name, pod_labels(workload), HERE, name)


def selects(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is modelled here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_matches(rule_peer: dict, source: Peer) -> bool:
    """Kubernetes' rules for one ``from`` entry: a podSelector alone selects pods of the
    policy's namespace, a namespaceSelector alone every pod of the namespaces it selects,
    both together the selected pods of the selected namespaces. No ipBlock is used."""
    assert set(rule_peer) <= {"podSelector", "namespaceSelector"}, rule_peer
    if source.namespace is None:
        return False  # only an ipBlock admits what is not a pod
    if "namespaceSelector" in rule_peer:
        in_namespace = selects(rule_peer["namespaceSelector"], source.namespace)
    else:
        in_namespace = source.namespace == HERE
    return in_namespace and selects(rule_peer.get("podSelector", {}), source.labels)


def admits(objects: dict, target: dict, port: int, source: Peer) -> bool:
    """Would the NetworkPolicies let ``source`` reach ``port`` on ``target``'s pods?"""
    named = container_ports(target)
    policies = [o for (kind, _), o in objects.items() if kind == "NetworkPolicy" and
                selects(o["spec"]["podSelector"], pod_labels(target))]
    if not policies:
        return True
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            ports = [named.get(p["port"], p["port"]) for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            froms = rule.get("from")
            if not froms or any(peer_matches(f, source) for f in froms):
                return True
    return False


def flows(objects: dict, monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict, dict, int]]:
    """Every (source, target, port) the deployment's daemons connect to, from their
    parsed options: a server to the broker, proxy, reference and its peers, the dashboard
    to the reference, each server's sync port, the broker and the proxy, a bot to the
    broker and proxy."""
    server = objects[("StatefulSet", "servidor")]
    _, o = daemon_options(server, monkeypatch)
    out = [(server, workload_of(objects, o[k]), port_of(o[k])[1])
           for k in ("broker", "publish", "subscribe", "reference")]
    out += [(server, server, o["sync-port"]), (server, server, o["replication-port"])]
    painel = objects[("Deployment", "painel")]
    _, d = daemon_options(painel, monkeypatch)
    out += [(painel, workload_of(objects, d[k]), port_of(d[k])[1])
            for k in ("reference", "subscribe", "broker")]
    # Each server's sync endpoint comes from the reference's list: the one the server
    # registers, at its pod's DNS name (POD.SERVICE) under the headless Service.
    pod, headless = o["host"].split(".", 1)
    assert pod == o["name"]
    out += [(painel, workload_of(objects, f"tcp://{headless}:{o['sync-port']}"),
             o["sync-port"])]
    bots = objects[("Deployment", "cliente-automatico")]
    out += [(bots, workload_of(objects, v), port_of(v)[1]) for v in env_of(bots).values()]
    return out


def scrapes(objects: dict) -> list[tuple[dict, int]]:
    """(workload, port) of every pod a Prometheus finds by the scrape annotations."""
    return [(o, int(a["prometheus.io/port"])) for (kind, _), o in objects.items()
            if kind in ("Deployment", "StatefulSet") and
            (a := o["spec"]["template"]["metadata"].get("annotations", {}))
            .get("prometheus.io/scrape") == "true"]


def blocked(objects: dict, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """The connections the board needs that the policies would refuse: its daemons' own,
    and Prometheus scraping from this namespace and from a labelled monitoring one."""
    out = [(a["metadata"]["name"], b["metadata"]["name"], port)
           for a, b, port in flows(objects, monkeypatch)
           if not admits(objects, b, port, as_peer(a))]
    for scraper in (Peer("prometheus here", {"app": "prometheus"}, HERE),
                    Peer("prometheus", {"app": "prometheus"}, MONITORING)):
        out += [(scraper.what, w["metadata"]["name"], port) for w, port in scrapes(objects)
                if not admits(objects, w, port, scraper)]
    return out


def test_network_policy_lets_every_connection_through(objects: dict, monkeypatch) -> None:
    assert len(flows(objects, monkeypatch)) == 12
    assert {w["metadata"]["name"] for w, _ in scrapes(objects)} == {"servidor", "painel"}
    assert blocked(objects, monkeypatch) == []


@pytest.mark.parametrize("policy,drop,refused", [
    ("referencia", "painel", ("painel", "referencia", 5559)),
    ("servidor", "painel", ("painel", "servidor", 5561)),
    ("servidor", SCRAPE, ("prometheus", "servidor", 9100)),
    ("painel", SCRAPE, ("prometheus", "painel", 8080)),
    ("painel", "{}", ("prometheus here", "painel", 8080)),
])
def test_network_policy_check_fails_without_a_rule(objects: dict, monkeypatch, policy: str,
                                                   drop: str, refused: tuple) -> None:
    """Without the dashboard's or the scrapers' entry, the check above would fail."""
    import copy

    objects = copy.deepcopy(objects)
    for rule in objects[("NetworkPolicy", policy)]["spec"]["ingress"]:
        rule["from"] = [f for f in rule["from"] if drop not in str(f)] or \
            [{"podSelector": {"matchLabels": {"nobody": "x"}}}]
    assert refused in blocked(objects, monkeypatch)


# Who may reach each port of the board: everyone, the scrapers (any pod of the board's
# namespace or of a namespace labelled SCRAPE), or only the named workloads' pods.
ALLOWED: dict[tuple[str, str], str | set[str]] = {
    ("broker", "frontend"): "everyone", ("proxy", "xpub"): "everyone",
    ("broker", "backend"): {"servidor"}, ("proxy", "xsub"): {"servidor"},
    ("servidor", "replication"): {"servidor"},
    ("referencia", "reference"): {"servidor", "painel"},
    ("servidor", "sync"): {"servidor", "painel"},
    ("servidor", "metrics"): "scrapers", ("painel", "http"): "scrapers",
}


def expected(source: Peer, allowed: str | set[str]) -> bool:
    if allowed == "everyone":
        return True
    if allowed == "scrapers":
        return source.namespace in (HERE, MONITORING)
    return source.namespace == HERE and source.workload in allowed


def test_network_policy_admits_nothing_else(objects: dict) -> None:
    workloads = [o for (kind, _), o in objects.items() if kind in ("Deployment", "StatefulSet")]
    ports = {(w["metadata"]["name"], name): (w, port) for w in workloads
             for name, port in container_ports(w).items()}
    assert set(ports) == set(ALLOWED)  # a new port needs a decision here
    server, painel = pod_labels(objects[("StatefulSet", "servidor")]), \
        pod_labels(objects[("Deployment", "painel")])
    sources = [as_peer(w) for w in workloads] + [
        Peer("a pod run in the namespace", {"run": "cliente"}, HERE),
        Peer("prometheus", {"app": "prometheus"}, MONITORING),
        Peer("a pod labelled as a server elsewhere", server, ELSEWHERE),
        Peer("a pod labelled as the dashboard elsewhere", painel, ELSEWHERE),
        Peer("an unlabelled namespace's pod", {"app": "prometheus"}, ELSEWHERE),
        Peer("outside the cluster", {}, None),
    ]
    for (name, port_name), (target, port) in ports.items():
        for source in sources:
            assert admits(objects, target, port, source) is \
                expected(source, ALLOWED[(name, port_name)]), (source.what, name, port_name)
