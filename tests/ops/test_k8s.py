"""Static checks of the Kubernetes manifests (deploy/k8s), rendered by
``kubectl kustomize`` for every overlay; no cluster needed.

The rendered objects pass kubernetes-validate (strict) and KEDA's ScaledObject schema; every
variable set for our containers is one the settings read, and every setting is set or
documented as left unset; probe paths and ports exist in the app; the worker's grace period
covers the longest image; one GPU worker pool per queue, all of them in DISPATCH_QUEUES; KEDA
scales each pool from zero on metrics the gateway exports; and the selectors, references,
ingress annotations and PostgreSQL connection budget agree with each other."""

from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from starlette.routing import Match

from backend.cli import ASGI_APP
from contracts.settings import Settings
from ml_service.settings import EngineSettings
from tests.ops.test_grafana import gateway_metric_names, load_dashboard, promql_metric_names
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = json.loads((K8S / "schemas" / "keda.sh_v1alpha1_scaledobject.json").read_text())
KUBERNETES_VERSION = "1.32.0"  # the kubectl on the build machines; kubernetes-validate has it

OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
CPU_OVERLAYS = ["dev-cpu"]
GPU_OVERLAYS = [o for o in OVERLAYS if o not in CPU_OVERLAYS]

# read by boto3/botocore for STORAGE_URL=s3://..., not by our settings classes
AWS_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}
# never in a ConfigMap or a plain env value
SECRET_NAMES = {
    "DATABASE_URL",
    "REDIS_URL",
    "ADMIN_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
# external PostgreSQL: docs/deploy.md asks for max_connections >= this
PG_MAX_CONNECTIONS = 200
# connections a gateway process holds besides its pool (the /readyz probe's, the dispatcher's)
GATEWAY_EXTRA_CONNECTIONS = 2


# --- rendering ---------------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl (with kustomize) is needed to render deploy/k8s: install kubectl")
    return path


@cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in the render"
    return found[0]


def config_data(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return data | obj.get("stringData", {})
    return dict(obj.get("data", {}))


def ours(deployment: dict[str, Any]) -> bool:
    return deployment["metadata"]["name"].startswith("cellseg-")


def component(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(objs: tuple[dict[str, Any], ...], role: str) -> list[dict[str, Any]]:
    return [d for d in of_kind(objs, "Deployment") if ours(d) and component(d) == role]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"]["containers"][0])


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container_env(
    objs: tuple[dict[str, Any], ...], container: dict[str, Any]
) -> dict[str, tuple[str, str]]:
    """NAME → (value, where it comes from: "ConfigMap", "Secret" or "env")."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                obj = named(objs, kind, source[key]["name"])
                prefix = source.get("prefix", "")
                env |= {prefix + k: (v, kind) for k, v in config_data(obj).items()}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = (str(var["value"]), "env")
        else:
            ref = var["valueFrom"]
            kind, key = ("Secret", "secretKeyRef") if "secretKeyRef" in ref else ("ConfigMap", "")
            assert key, f"{var['name']}: only values and secretKeyRef are expected"
            obj = named(objs, kind, ref[key]["name"])
            env[var["name"]] = (config_data(obj)[ref[key]["key"]], kind)
    return env


def env_values(objs: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, (v, _) in container_env(objs, container).items()}


@lru_cache(maxsize=1)
def served_gateway() -> Any:
    """The ASGI app that ``python -m backend serve`` runs (Socket.IO around FastAPI)."""
    module, _, factory = ASGI_APP.partition(":")
    return getattr(importlib.import_module(module), factory)()


def gateway_serves(path: str) -> bool:
    """Whether a GET of ``path`` reaches a route of the served gateway (no lifespan needed)."""
    app = served_gateway().other_asgi_app
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "path_params": {}}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


def setting(env: dict[str, str], field: str) -> str:
    """A gateway setting as the pod gets it: its variable, else the Settings default."""
    return env.get(field.upper(), str(setting_default(field)))


def scaled_objects_for(objs: tuple[dict[str, Any], ...], name: str) -> list[dict[str, Any]]:
    return [
        so
        for so in of_kind(objs, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == name
        and so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    ]


def every_overlay() -> Iterator[tuple[str, tuple[dict[str, Any], ...]]]:
    for overlay in OVERLAYS:
        yield overlay, render(f"overlays/{overlay}")


# --- what the settings read ---------------------------------------------------------------------


def env_fields(model: type[BaseSettings]) -> dict[str, set[str]]:
    """Field → the environment variables it is read from (prefix, aliases; case-insensitive)."""
    prefix = str(model.model_config.get("env_prefix") or "")
    fields: dict[str, set[str]] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            fields[name] = {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            fields[name] = {alias.upper()}
        else:
            fields[name] = {f"{prefix}{name}".upper()}
    return fields


GATEWAY_FIELDS = {f"Settings.{k}": v for k, v in env_fields(Settings).items()}
WORKER_FIELDS = (
    GATEWAY_FIELDS
    | {f"WorkerSettings.{k}": v for k, v in env_fields(WorkerSettings).items()}
    | {f"EngineSettings.{k}": v for k, v in env_fields(EngineSettings).items()}
)
# the worker reads the shared Settings too, but its own part is these (the rest: the gateway's)
WORKER_OWN_FIELDS = {f"WorkerSettings.{k}": v for k, v in env_fields(WorkerSettings).items()} | {
    f"EngineSettings.{k}": v for k, v in env_fields(EngineSettings).items()
}
GATEWAY_READS = set().union(*GATEWAY_FIELDS.values()) | AWS_NAMES
WORKER_READS = set().union(*WORKER_FIELDS.values()) | AWS_NAMES


def documented_unset() -> set[str]:
    """Variables the env files list as deliberately left at their default ("# NAME: unset")."""
    names: set[str] = set()
    for path in K8S.rglob("*.env"):
        names |= set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*): unset\b", path.read_text(), re.M))
    return names


# --- tests ---------------------------------------------------------------------------------------


def test_kubectl_renders_every_overlay() -> None:
    assert kubectl()
    assert {"h100", "a100", "h100-a100", "dev-cpu"} <= set(OVERLAYS)
    for overlay, objs in every_overlay():
        kinds = {o["kind"] for o in objs}
        assert {"Deployment", "Service", "ConfigMap", "Secret", "Ingress"} <= kinds, overlay
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds, overlay
        assert all(o["metadata"].get("namespace") for o in objs), overlay


@pytest.mark.parametrize("path", ["base", *[f"overlays/{o}" for o in OVERLAYS]])
def test_manifests_pass_kubernetes_validate_and_the_keda_schema(path: str) -> None:
    for obj in render(path):
        what = f"{path}: {obj['kind']} {obj['metadata']['name']}"
        if obj["apiVersion"].startswith("keda.sh/"):
            assert obj["kind"] == "ScaledObject", f"{what}: no schema vendored for this CRD"
            errors = list(jsonschema.Draft202012Validator(KEDA_SCHEMA).iter_errors(obj))
            assert not errors, f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}"
        else:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{what}: {exc.message} at {list(exc.absolute_path)}")


def test_the_keda_schema_rejects_broken_scaled_objects() -> None:
    good = of_kind(render("overlays/h100"), "ScaledObject")[0]
    validator = jsonschema.Draft202012Validator(KEDA_SCHEMA)
    assert validator.is_valid(good)
    broken = json.loads(json.dumps(good))
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 300  # metadata values are strings
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(good))
    broken["spec"]["minReplicas"] = 0  # the HPA's field name, not KEDA's
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(good))
    del broken["spec"]["scaleTargetRef"]
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(good))
    broken["spec"]["fallback"] = {"replicas": 1}
    assert not validator.is_valid(broken)


def test_every_variable_set_is_read_by_the_settings() -> None:
    for overlay, objs in every_overlay():
        for role, reads in (("gateway", GATEWAY_READS), ("worker", WORKER_READS)):
            for deployment in deployments(objs, role):
                for container in containers(deployment):
                    unknown = sorted(set(container_env(objs, container)) - reads)
                    assert not unknown, (
                        f"{overlay}: {deployment['metadata']['name']}/{container['name']} "
                        f"sets variables nothing reads: {unknown}"
                    )


def test_every_setting_is_set_or_documented_as_left_unset() -> None:
    unset = documented_unset()
    stale = sorted(unset - WORKER_READS)
    assert not stale, f"documented as unset but read by no setting: {stale}"
    for overlay, objs in every_overlay():
        for role, fields in (("gateway", GATEWAY_FIELDS), ("worker", WORKER_OWN_FIELDS)):
            for deployment in deployments(objs, role):
                env = set(container_env(objs, main_container(deployment)))
                missing = sorted(
                    field for field, names in fields.items() if not names & (env | unset)
                )
                assert not missing, (
                    f"{overlay}: {deployment['metadata']['name']} neither sets nor documents "
                    f"{missing} (set it in an env file, or add '# NAME: unset (why)')"
                )


def test_credentials_come_only_from_secrets() -> None:
    for overlay, objs in every_overlay():
        for cm in of_kind(objs, "ConfigMap"):
            leaked = sorted(SECRET_NAMES & set(cm.get("data", {})))
            assert not leaked, f"{overlay}: ConfigMap {cm['metadata']['name']} holds {leaked}"
        for deployment in [*deployments(objs, "gateway"), *deployments(objs, "worker")]:
            for container in containers(deployment):
                env = container_env(objs, container)
                for name in SECRET_NAMES & set(env):
                    assert env[name][1] == "Secret", f"{overlay}: {name} not from a Secret"
                for name in ("DATABASE_URL", "REDIS_URL"):
                    assert env[name][1] == "Secret", f"{overlay}: {name} missing"


def test_config_and_secret_references_exist() -> None:
    for overlay, objs in every_overlay():
        names = {(o["kind"], o["metadata"]["name"]) for o in objs}
        for deployment in of_kind(objs, "Deployment") + of_kind(objs, "StatefulSet"):
            spec = deployment["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                for source in container.get("envFrom", []):
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in source:
                            assert (kind, source[key]["name"]) in names, (overlay, source)
            for volume in spec.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in names, (overlay, claim)


def test_gateway_probes_and_ports_exist_in_the_app() -> None:
    assert all(gateway_serves(p) for p in ("/healthz", "/readyz", "/metrics"))
    assert not gateway_serves("/no-such-path")
    for overlay, objs in every_overlay():
        (gateway,) = deployments(objs, "gateway")
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        env = env_values(objs, container)
        port = int(setting(env, "gateway_port"))
        assert env.get("GATEWAY_HOST") == "0.0.0.0", f"{overlay}: gateway listens on loopback"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": port}, overlay
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            assert gateway_serves(http["path"]), f"{overlay}: {probe} {http['path']}"
            assert ports.get(http["port"], http["port"]) == port, f"{overlay}: {probe} port"
        annotations = gateway["spec"]["template"]["metadata"]["annotations"]
        assert gateway_serves(annotations["prometheus.io/path"])
        assert int(annotations["prometheus.io/port"]) == port


def test_gateway_readiness_does_not_wait_for_a_worker() -> None:
    """/readyz needs a live worker; workers scale to zero, so gating the gateway's endpoints on
    it would leave nothing to accept the upload that should wake a worker up."""
    for overlay, objs in every_overlay():
        (gateway,) = deployments(objs, "gateway")
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz", overlay


def test_worker_probes_and_ports_exist_in_the_worker() -> None:
    from workers.metrics import HEALTH_PATHS  # ("/healthz", "/readyz", "/metrics")

    assert {"/healthz", "/readyz", "/metrics"} <= set(HEALTH_PATHS)
    for overlay, objs in every_overlay():
        for worker in deployments(objs, "worker"):
            (container,) = worker["spec"]["template"]["spec"]["containers"]
            env = env_values(objs, container)
            default_port = WorkerSettings.model_fields["worker_metrics_port"].default
            port = int(env.get("WORKER_METRICS_PORT", default_port))
            assert port > 0, f"{overlay}: WORKER_METRICS_PORT=0 serves no probes"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"metrics": port}, overlay
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                http = container[probe]["httpGet"]
                assert http["path"] in HEALTH_PATHS, f"{overlay}: {probe} {http['path']}"
                assert ports.get(http["port"], http["port"]) == port, f"{overlay}: {probe} port"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            annotations = worker["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/path"] in HEALTH_PATHS
            assert int(annotations["prometheus.io/port"]) == port


def test_grace_periods_cover_the_longest_work() -> None:
    for overlay, objs in every_overlay():
        for worker in deployments(objs, "worker"):
            (container,) = worker["spec"]["template"]["spec"]["containers"]
            env = env_values(objs, container)
            limit = int(setting(env, "task_time_limit_s"))
            grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace > limit, f"{overlay}: {worker['metadata']['name']} {grace} <= {limit}"
            assert container["command"] == ["python", "-m", "workers"]
        (gateway,) = deployments(objs, "gateway")
        env = env_values(objs, main_container(gateway))
        sync = float(setting(env, "sync_timeout_s"))
        assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > sync


def test_one_worker_pool_per_gpu_type_and_every_queue_dispatched() -> None:
    for overlay, objs in every_overlay():
        workers = deployments(objs, "worker")
        assert workers, overlay
        queues = [env_values(objs, main_container(w))["WORKER_QUEUE"] for w in workers]
        assert len(set(queues)) == len(queues), f"{overlay}: two pools share a queue {queues}"
        (gateway,) = deployments(objs, "gateway")
        dispatch = env_values(objs, main_container(gateway))
        listed = [q.strip() for q in dispatch["DISPATCH_QUEUES"].split(",") if q.strip()]
        assert sorted(listed) == sorted(queues), f"{overlay}: DISPATCH_QUEUES {listed} {queues}"
        products = []
        for worker in workers:
            spec = worker["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            env = env_values(objs, container)
            limits = container["resources"].get("limits", {})
            if overlay in CPU_OVERLAYS:
                assert "nvidia.com/gpu" not in limits and env["ML_DEVICE"] == "cpu", overlay
                assert "nodeSelector" not in spec, overlay
                continue
            assert int(limits["nvidia.com/gpu"]) == 1, f"{overlay}: one GPU per worker pod"
            requests = container["resources"].get("requests", {})
            assert int(requests.get("nvidia.com/gpu", 1)) == 1
            assert env["ML_DEVICE"] in ("cuda", "cuda:0"), overlay
            products.append(spec["nodeSelector"]["nvidia.com/gpu.product"])
            assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), overlay
        assert len(set(products)) == len(products), f"{overlay}: two pools on one GPU type"


def test_keda_scales_each_gpu_pool_from_zero_on_exported_metrics() -> None:
    exported = gateway_metric_names()
    for overlay in GPU_OVERLAYS:
        objs = render(f"overlays/{overlay}")
        (gateway,) = deployments(objs, "gateway")
        gw_env = env_values(objs, main_container(gateway))
        fixed = gw_env.get("DISPATCH_IN_FLIGHT_PER_QUEUE")  # unset: each worker's window
        for worker in deployments(objs, "worker"):
            name = worker["metadata"]["name"]
            env = env_values(objs, main_container(worker))
            (scaled,) = scaled_objects_for(objs, name)
            spec = scaled["spec"]
            assert "replicas" not in worker["spec"], f"{name}: KEDA owns the replica count"
            assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1, name
            assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
            threads = int(env["ML_INFERENCE_WORKERS"])
            # the window from the heartbeat is at most the worker's task threads
            per_worker = int(fixed) if fixed else threads
            triggers = {t["name"]: t for t in spec["triggers"]}
            for trigger in triggers.values():
                meta = trigger["metadata"]
                assert trigger["type"] == "prometheus", name
                assert urlparse(meta["serverAddress"]).scheme in ("http", "https")
                used = promql_metric_names(meta["query"])
                assert used and used <= exported, f"{name}: {used - exported} not exported"
                assert float(meta["threshold"]) > 0
                assert float(meta["activationThreshold"]) >= 0
            backlog = triggers["backlog"]["metadata"]
            # every gateway replica reports the same backlog (from PostgreSQL): max, not sum
            assert re.search(r"\bmax\s*\(\s*cellseg_queue_depth\s*\)", backlog["query"])
            assert float(backlog["activationThreshold"]) == 0, "one queued image wakes a pool"
            in_flight = triggers["in-flight"]["metadata"]
            assert f'queue="{env["WORKER_QUEUE"]}"' in in_flight["query"], name
            assert "cellseg_queue_in_flight" in in_flight["query"]
            # it keeps a pool awake while its images run and never asks for a second worker:
            # its threshold is the most the queue can hold (per live worker x max workers)
            assert float(in_flight["threshold"]) >= per_worker * spec["maxReplicaCount"], name


def test_gateway_autoscales_on_cpu() -> None:
    for overlay, objs in every_overlay():
        (gateway,) = deployments(objs, "gateway")
        assert "replicas" not in gateway["spec"], f"{overlay}: the HPA owns the replica count"
        (hpa,) = of_kind(objs, "HorizontalPodAutoscaler")
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", gateway["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"]["type"] == "Utilization"
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"]["cpu"], "utilization needs a CPU request"


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_disruption_budgets_and_services_select_our_pods() -> None:
    for overlay, objs in every_overlay():
        workloads = of_kind(objs, "Deployment") + of_kind(objs, "StatefulSet")
        pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads}
        for workload in workloads:
            assert _selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))
        covered: set[str] = set()
        for pdb in of_kind(objs, "PodDisruptionBudget"):
            selector = pdb["spec"]["selector"]["matchLabels"]
            matched = [n for n, labels in pods.items() if _selects(selector, labels)]
            assert len(matched) == 1, f"{overlay}: PDB {pdb['metadata']['name']} selects {matched}"
            covered |= set(matched)
        for deployment in of_kind(objs, "Deployment"):
            assert deployment["metadata"]["name"] in covered, f"{overlay}: no PDB"
        for service in of_kind(objs, "Service"):
            selector = service["spec"]["selector"]
            matched = [n for n, labels in pods.items() if _selects(selector, labels)]
            assert len(matched) == 1, f"{overlay}: Service {service['metadata']['name']}"
            (workload,) = [w for w in workloads if w["metadata"]["name"] == matched[0]]
            port_names = {p.get("name") for p in main_container(workload).get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"{overlay}: {port}"


def test_ingress_serves_uploads_and_websockets() -> None:
    for overlay, objs in every_overlay():
        (gateway,) = deployments(objs, "gateway")
        env = env_values(objs, main_container(gateway))
        max_upload = int(setting(env, "max_upload_mb"))
        sync = float(setting(env, "sync_timeout_s"))
        services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
        ingresses = {i["metadata"]["name"]: i for i in of_kind(objs, "Ingress")}
        by_path: dict[str, dict[str, Any]] = {}
        for ingress in ingresses.values():
            assert ingress["spec"]["ingressClassName"] == "nginx"
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    service = services[backend["name"]]
                    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                    by_path[path["path"]] = ingress["metadata"].get("annotations", {})
        nginx = "nginx.ingress.kubernetes.io/"
        socketio_path = served_gateway().engineio_path.rstrip("/")
        api, sio = by_path["/"], by_path[socketio_path]
        # the gateway enforces MAX_UPLOAD_MB exactly while streaming; 1 MB for multipart framing
        assert api[nginx + "proxy-body-size"] == f"{max_upload + 1}m", overlay
        assert int(api[nginx + "proxy-read-timeout"]) > sync, "POST /segment waits SYNC_TIMEOUT_S"
        assert int(sio[nginx + "proxy-read-timeout"]) >= 3600
        assert int(sio[nginx + "proxy-send-timeout"]) >= 3600
        # Socket.IO's long-polling transport needs its session on one replica
        assert sio.get(nginx + "upstream-hash-by") or sio.get(nginx + "affinity") == "cookie"


def test_postgresql_connections_fit_at_full_scale() -> None:
    for overlay, objs in every_overlay():
        max_connections = PG_MAX_CONNECTIONS
        for statefulset in of_kind(objs, "StatefulSet"):
            args = " ".join(main_container(statefulset).get("args", []))
            if found := re.search(r"max_connections=(\d+)", args):
                max_connections = int(found.group(1))
        (gateway,) = deployments(objs, "gateway")
        gw = env_values(objs, main_container(gateway))
        (hpa,) = of_kind(objs, "HorizontalPodAutoscaler")
        processes = hpa["spec"]["maxReplicas"] * int(gw.get("GATEWAY_WORKERS", 1))
        pool = int(setting(gw, "database_connection_pool_size"))
        total = processes * (pool + GATEWAY_EXTRA_CONNECTIONS)
        for worker in deployments(objs, "worker"):
            env = env_values(objs, main_container(worker))
            scaled = scaled_objects_for(objs, worker["metadata"]["name"])
            spec = scaled[0]["spec"] if scaled else worker["spec"]
            replicas = spec.get("maxReplicaCount", spec.get("replicas"))
            total += replicas * int(env.get("WORKER_DB_POOL_SIZE", 4))
        assert total <= max_connections, f"{overlay}: {total} connections > {max_connections}"


def test_gpu_overlays_name_a_registry_image() -> None:
    for overlay in GPU_OVERLAYS:
        for deployment in of_kind(render(f"overlays/{overlay}"), "Deployment"):
            for container in containers(deployment):
                image = container["image"]
                assert "/" in image and ":" in image.rsplit("/", 1)[1], f"{overlay}: {image}"


def test_the_grafana_dashboard_ships_with_the_base() -> None:
    (dashboard,) = [
        cm
        for cm in of_kind(render("base"), "ConfigMap")
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    (text,) = dashboard["data"].values()
    assert json.loads(text) == load_dashboard()
