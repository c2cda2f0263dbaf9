"""``make run``'s launcher: its worker's metrics port when the default one is taken."""

from __future__ import annotations

import socket
from pathlib import Path

from scripts.run_local import demo_key, port_taken, worker_metrics_port


def test_the_metrics_port_moves_only_when_the_default_is_taken() -> None:
    assert worker_metrics_port({"WORKER_METRICS_PORT": "0"}) == "0"  # a setting is kept
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        moved = worker_metrics_port({}, default=busy)
        assert moved != str(busy) and int(moved) > 0
    assert worker_metrics_port({}, default=busy) == str(busy)  # free again


def test_a_restart_prints_the_same_demo_users_key(tmp_path: Path) -> None:
    """One demo user across restarts (its jobs stay listed), a new one only when the saved key
    is gone or no longer taken (e.g. a fresh database)."""
    saved = tmp_path / "demo-api-key-cellseg"
    made: list[str] = []

    def create() -> str:
        made.append(f"csk_{len(made)}")
        return made[-1]

    first = demo_key(saved, lambda k: True, create)
    assert first == "csk_0" and saved.read_text().strip() == "csk_0"
    assert saved.stat().st_mode & 0o077 == 0  # a secret: the owner's only
    assert demo_key(saved, lambda k: k == "csk_0", create) == "csk_0"
    assert made == ["csk_0"]
    assert demo_key(saved, lambda k: False, create) == "csk_1"  # refused: a new user, saved
    assert saved.read_text().strip() == "csk_1"


def test_a_gateway_port_in_use_is_seen_before_starting() -> None:
    """Otherwise another service's gateway answers the readiness checks and its key is printed
    as if this one were up."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_taken(port)
    assert not port_taken(port)
