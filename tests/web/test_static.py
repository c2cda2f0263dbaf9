"""``/`` and ``/static/...`` as served by the running gateway (no browser needed)."""

from __future__ import annotations

import httpx
import pytest

from backend.errors import NotFound
from backend.routes.web import STATIC_DIR, static_file
from tests.harness import Service


def test_the_page_is_served_at_the_root_with_a_strict_policy(service: Service) -> None:
    r = httpx.get(f"{service.url}/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>CellSeg Serve</title>" in r.text
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("live.js", "text/javascript; charset=utf-8"),
        ("viewer.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("vendor/socket.io.min.js", "text/javascript; charset=utf-8"),
    ],
)
def test_every_file_the_page_loads_is_served(service: Service, name: str, media_type: str) -> None:
    r = httpx.get(f"{service.url}/static/{name}", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == media_type
    assert r.content == (STATIC_DIR / name).read_bytes()


def test_the_vendored_socketio_client_names_its_version_and_licence() -> None:
    head = (STATIC_DIR / "vendor" / "socket.io.min.js").read_text()[:200]
    assert "Socket.IO v4." in head and "MIT License" in head
    assert (STATIC_DIR / "vendor" / "socket.io-client.LICENSE").exists()


@pytest.mark.parametrize("path", ["missing.js", "%2e%2e/app.py", "%2e%2e/%2e%2e/pyproject.toml"])
def test_unknown_or_escaping_paths_are_404_json(service: Service, path: str) -> None:
    r = httpx.get(f"{service.url}/static/{path}", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("relative", ["../app.py", "/etc/passwd", "vendor", ""])
def test_static_file_refuses_what_is_not_a_file_inside(relative: str) -> None:
    with pytest.raises(NotFound):
        static_file(relative)
