"""Where the machine's CPU time goes during a load test, by role.

On a one-machine test the service's engine shares its cores with the gateway, PostgreSQL,
Redis and the load tester itself. :func:`snapshot` reads every process's CPU time (user +
system, from ``/proc`` through psutil) and the machine's busy and idle time; :func:`account`
turns two snapshots and the number of images done in between into CPU milliseconds per image
for each role and the share of the machine that stayed idle. A process belongs to the role of
its nearest ancestor (itself included) that :func:`role_of` names, so a worker's CPU-stage
processes count as the worker's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

ROLES = ("worker", "gateway", "postgres", "redis", "load_tester", "other")


def role_of(cmdline: list[str], *, load_tester_pid: int, pid: int) -> str | None:
    """The role a command line names, or None (then its parent's role applies)."""
    if pid == load_tester_pid:
        return "load_tester"
    line = " ".join(cmdline)
    if "-m workers" in line or ("celery" in line and "worker" in line):
        return "worker"
    if "-m backend serve" in line or "uvicorn" in line:
        return "gateway"
    if line.startswith(("postgres", "/usr/lib/postgresql")) or "/postgres " in line:
        return "postgres"
    if "redis-server" in line:
        return "redis"
    return None


@dataclass(frozen=True)
class Snapshot:
    cpu_s: dict[str, float]  # role -> CPU seconds of its live processes
    busy_s: float  # the whole machine, all cores
    idle_s: float


def snapshot(load_tester_pid: int | None = None) -> Snapshot:
    tester = os.getpid() if load_tester_pid is None else load_tester_pid
    procs: dict[int, tuple[int, list[str], float]] = {}
    for p in psutil.process_iter(["ppid", "cmdline", "cpu_times"]):
        times = p.info["cpu_times"]
        if times is None:  # gone, or not ours to read
            continue
        procs[p.pid] = (p.info["ppid"] or 0, p.info["cmdline"] or [], times.user + times.system)
    cpu = dict.fromkeys(ROLES, 0.0)
    for pid, (_, _, seconds) in procs.items():
        cpu[_role(pid, procs, tester)] += seconds
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    # guest time is already inside user time on Linux
    busy = sum(machine) - idle - getattr(machine, "guest", 0.0) - getattr(machine, "guest_nice", 0)
    return Snapshot(cpu, busy, idle)


def _role(pid: int, procs: dict[int, tuple[int, list[str], float]], tester: int) -> str:
    seen = set()
    while pid in procs and pid not in seen:
        seen.add(pid)
        parent, cmdline, _ = procs[pid]
        role = role_of(cmdline, load_tester_pid=tester, pid=pid)
        if role is not None:
            return role
        pid = parent
    return "other"


def account(before: Snapshot, after: Snapshot, images: int) -> dict[str, object]:
    """CPU ms per image by role, and the machine's idle share, between two snapshots.

    A process that ended in between loses its CPU time from ``after``; a role's figure is
    floored at 0 rather than going negative.
    """
    if images <= 0:
        raise ValueError("no images done: nothing to account per image")
    per_image = {
        role: round(max(0.0, after.cpu_s[role] - before.cpu_s[role]) * 1000 / images, 2)
        for role in ROLES
    }
    busy = after.busy_s - before.busy_s
    idle = after.idle_s - before.idle_s
    total = busy + idle
    return {
        "cpu_ms_per_image": per_image,
        "cpu_ms_per_image_total": round(sum(per_image.values()), 2),
        "machine_idle_share": round(idle / total, 3) if total > 0 else None,
    }
