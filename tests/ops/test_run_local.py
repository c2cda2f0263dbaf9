"""``make run``'s launcher: its worker's metrics port when the default one is taken."""

from __future__ import annotations

import socket

from scripts.run_local import worker_metrics_port


def test_the_metrics_port_moves_only_when_the_default_is_taken() -> None:
    assert worker_metrics_port({"WORKER_METRICS_PORT": "0"}) == "0"  # a setting is kept
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        moved = worker_metrics_port({}, default=busy)
        assert moved != str(busy) and int(moved) > 0
    assert worker_metrics_port({}, default=busy) == str(busy)  # free again
