"""Static checks of the Docker files (no Docker engine exists here): the compose file parses,
every build context and Dockerfile exists and every file they COPY exists, every variable set
for our services is one the settings read, and ports and healthcheck paths exist in the app."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from backend.app import create_app
from tests.test_docs import env_names

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NGINX_TEMPLATE = (ROOT / "nginx" / "nginx.conf.template").read_text()


def built_services() -> dict[str, Any]:
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def test_compose_has_the_expected_services() -> None:
    assert {"postgres", "redis", "gateway1", "gateway2", "worker-gpu0", "nginx"} <= set(SERVICES)
    assert "noeviction" in " ".join(SERVICES["redis"]["command"])
    gpu = SERVICES["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["device_ids"] == ["0"]
    assert {"uploads", "pgdata"} <= set(COMPOSE["volumes"])


def test_build_contexts_dockerfiles_and_copied_files_exist() -> None:
    for name, svc in built_services().items():
        context = (DOCKER / svc["build"]["context"]).resolve()
        dockerfile = context / svc["build"]["dockerfile"]
        assert context.is_dir(), name
        assert dockerfile.is_file(), name
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                *sources, _ = line.split()[1:]
                for src in sources:
                    assert (context / src).exists(), f"{dockerfile.name}: COPY {src} missing"


def test_gateway_image_has_no_torch() -> None:
    text = (DOCKER / "Dockerfile.gateway").read_text()
    assert ".[gateway]" in text and "torch" not in text.replace("No torch", "")
    assert "COPY models" not in text and "COPY ml_service" not in text


def test_worker_image_bakes_in_weights_and_pins_torch() -> None:
    text = (DOCKER / "Dockerfile.worker").read_text()
    assert "COPY models ./models" in text  # models/weights/*.safetensors travel in the image
    assert "torch==2.14.1 torchvision==0.29.1" in text
    assert "cuda" in text.split("FROM", 1)[0].lower()


def test_every_variable_set_for_our_services_is_read_by_the_settings() -> None:
    known = env_names() | {"MAX_IMAGE_PIXELS"}
    for name, svc in built_services().items():
        unknown = sorted(set(svc["environment"]) - known)
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_nginx_gets_exactly_the_template_variables() -> None:
    needed = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", NGINX_TEMPLATE))
    nginx = SERVICES["nginx"]
    assert set(nginx["environment"]) == needed
    substituted = set(re.findall(r"\$\$\{([A-Z_]+)\}", " ".join(nginx["command"])))
    assert substituted == needed


def test_ports_and_healthcheck_paths_exist_in_the_app() -> None:
    paths = set(create_app().openapi()["paths"])
    for name in ("gateway1", "gateway2"):
        svc = SERVICES[name]
        check = " ".join(svc["healthcheck"]["test"])
        port, path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", check).groups()  # type: ignore[union-attr]
        assert port == svc["environment"]["GATEWAY_PORT"]
        assert path in paths
    for dockerfile in ("Dockerfile.gateway",):
        text = (DOCKER / dockerfile).read_text()
        assert re.search(r"127\.0\.0\.1:8000/readyz", text) and "/readyz" in paths
        assert "EXPOSE 8000" in text and "GATEWAY_PORT=8000" in text
    assert "server gateway1:8000" in SERVICES["nginx"]["environment"]["UPSTREAM_SERVERS"]


def test_images_copy_every_project_package_their_code_imports() -> None:
    project = {"imageheader", "models", "ml_service", "contracts", "backend", "workers"}
    for dockerfile, entry in (("Dockerfile.gateway", "backend"), ("Dockerfile.worker", "workers")):
        copied = set(re.findall(r"^COPY (\w+) ", (DOCKER / dockerfile).read_text(), re.M))
        needed, todo = set(), [entry]
        while todo:
            package = todo.pop()
            needed.add(package)
            for path in (ROOT / package).rglob("*.py"):
                for name in re.findall(r"^(?:from|import) (\w+)", path.read_text(), re.M):
                    if name in project and name not in needed:
                        todo.append(name)
        assert needed <= copied, f"{dockerfile} lacks {sorted(needed - copied)}"
        assert copied <= needed, f"{dockerfile} copies unused {sorted(copied - needed)}"
