"""CPU accounting by role: the pure parts, and a real snapshot of this machine."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from loadtest.cpu_accounting import ROLES, Snapshot, account, role_of, snapshot


def test_roles_from_command_lines() -> None:
    def role(line: str, pid: int = 10) -> str | None:
        return role_of(line.split(), load_tester_pid=1, pid=pid)

    assert role("/srv/.venv/bin/python -m workers") == "worker"
    assert role("celery -A workers.celery_app worker") == "worker"
    assert role("/srv/.venv/bin/python -m backend serve") == "gateway"
    assert role("postgres: 15/main: postgres cellseg 127.0.0.1(5) idle") == "postgres"
    assert role("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql") == "postgres"
    assert role("redis-server 127.0.0.1:6379") == "redis"
    assert role("anything", pid=1) == "load_tester"
    assert role("python -c from multiprocessing.spawn import spawn_main") is None  # parent's


def test_account_per_image_and_idle_share() -> None:
    zero = dict.fromkeys(ROLES, 0.0)
    before = Snapshot(zero, busy_s=100.0, idle_s=50.0)
    after = Snapshot({**zero, "worker": 2.0, "gateway": 0.5, "redis": -1.0}, 115.0, 55.0)
    got = account(before, after, images=100)
    assert got["cpu_ms_per_image"]["worker"] == 20.0
    assert got["cpu_ms_per_image"]["gateway"] == 5.0
    assert got["cpu_ms_per_image"]["redis"] == 0.0  # a process ended: floored, not negative
    assert got["cpu_ms_per_image_total"] == 25.0
    assert got["machine_idle_share"] == 0.25
    with pytest.raises(ValueError):
        account(before, after, images=0)


def test_snapshot_counts_children_as_their_ancestors_role() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    before = snapshot()
    child = subprocess.Popen([sys.executable, "-c", burn + "\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while True:  # until the child has burnt its CPU (it then sleeps, still alive)
            after = snapshot()
            if after.cpu_s["load_tester"] - before.cpu_s["load_tester"] >= 0.5:
                break
            assert time.monotonic() < deadline, "the child's CPU time was not counted as ours"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    assert set(after.cpu_s) == set(ROLES)
    assert after.busy_s > before.busy_s and after.idle_s >= before.idle_s
