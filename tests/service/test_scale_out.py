"""Several hosts, simulated on one machine: two gateway replicas (two uvicorn processes on two
loopback ports) and two worker processes, each on its own device queue, sharing PostgreSQL and
Redis. Events cross replicas, the dispatcher's leadership moves when its replica dies, work goes
where there is free capacity, and SIGTERM drains a worker without losing or repeating anything.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.harness import ADMIN_KEY, Service, free_port, running_service
from tests.service.test_end_to_end import Listener, auth, make_pngs, submit, wait_done

MODEL = "unet"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Cluster:
    svc: Service
    urls: dict[str, str]  # gateway process name → base URL
    queues: dict[str, str]  # worker process name → its device queue

    def start_gateway(self, name: str) -> None:
        port = self.urls[name].rsplit(":", 1)[1]
        self.svc.start(name, ["-m", "backend", "serve"], {"GATEWAY_PORT": port})

    def start_worker(self, name: str) -> None:
        self.svc.start_worker(name, {"WORKER_QUEUE": self.queues[name]})

    def workers(self, url: str | None = None) -> list[dict[str, Any]]:
        """This cluster's live workers (Redis is shared with other tests' workers)."""
        r = httpx.get(f"{url or self.svc.url}/api/v1/workers", headers=ADMIN, timeout=10)
        r.raise_for_status()
        mine = set(self.queues.values())
        return [w for w in r.json()["workers"] if w["queue"] in mine]

    def leader(self) -> str | None:
        """The gateway whose dispatcher leads now (from its /metrics), if any answers so."""
        for name, url in self.urls.items():
            try:
                text = httpx.get(f"{url}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            if "cellseg_dispatcher_leader 1.0" in text.splitlines():
                return name
        return None

    def db_now(self) -> datetime:
        return self.svc.db("SELECT now() AS t")[0]["t"]  # type: ignore[no-any-return]


def wait_for(what: str, check: Callable[[], Any], timeout: float, cluster: Cluster) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout} s\n{cluster.svc.diagnostics()}")


def wait_serving(cluster: Cluster, timeout: float = 180) -> None:
    """Both gateways ready and both workers advertising, not draining."""
    for url in cluster.urls.values():
        wait_for(
            f"{url}/readyz",
            lambda u=url: httpx.get(f"{u}/readyz", timeout=2).status_code == 200,
            timeout,
            cluster,
        )

    seen: list[Any] = []

    def both() -> bool:
        seen[:] = cluster.workers()
        queues = {w["queue"] for w in seen if not w["draining"] and w["models"]}
        return queues == set(cluster.queues.values())

    try:
        wait_for("both workers serving", both, timeout, cluster)
    except TimeoutError as exc:
        raise TimeoutError(f"workers seen: {seen}\n{exc}") from None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tag = secrets.token_hex(3)
    queues = {"worker": f"so{tag}-gpu0", "worker2": f"so{tag}-gpu1"}
    env = {
        "DISPATCH_QUEUES": ",".join(queues.values()),
        "DISPATCH_IN_FLIGHT_PER_QUEUE": "4",
        "DISPATCH_ORPHAN_GRACE_S": "3",
        "BROKER_VISIBILITY_TIMEOUT_S": "60",
        "ML_MODELS": MODEL,
        "ML_BACKEND": "torch",
        "ML_INFERENCE_WORKERS": "4",
    }
    tmp = tmp_path_factory.mktemp("cluster")
    with running_service(tmp, env, workers=0, wait=False) as svc:
        urls = {"gateway": svc.url, "gateway2": f"http://127.0.0.1:{free_port()}"}
        c = Cluster(svc, urls, queues)
        c.start_gateway("gateway2")
        for name in queues:
            c.start_worker(name)
        wait_serving(c)
        yield c


def images_of(cluster: Cluster, job_id: str) -> list[Any]:
    return cluster.svc.db(
        "SELECT i.id, i.status, i.queue, i.attempts, i.dispatched_at, r.worker "
        "FROM images i LEFT JOIN results r ON r.image_id = i.id WHERE i.job_id = $1",
        job_id,
    )


def wait_image(
    cluster: Cluster, job_id: str, what: str, *, at_least: int = 1, **match: str
) -> None:
    """Wait until ``at_least`` images of the job have every column value in ``match``."""

    def enough() -> bool:
        rows = images_of(cluster, job_id)
        return sum(all(r[k] == v for k, v in match.items()) for r in rows) >= at_least

    wait_for(what, enough, 120, cluster)


def wait_job_done(cluster: Cluster, url: str, key: str, job_id: str, timeout: float) -> None:
    def finished() -> bool:
        r = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        return r.status_code == 200 and r.json()["status"] not in ("queued", "running")

    wait_for(f"job {job_id}", finished, timeout, cluster)
    body = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10).json()
    assert body["status"] == "done", body["counts"]


def assert_each_image_done_once(cluster: Cluster, job_id: str, n: int) -> list[Any]:
    rows = images_of(cluster, job_id)
    assert len(rows) == n
    assert {r["status"] for r in rows} == {"done"}
    assert all(r["attempts"] == 1 for r in rows), [dict(r) for r in rows if r["attempts"] != 1]
    results = cluster.svc.db(
        "SELECT count(*) AS n, count(DISTINCT r.image_id) AS d FROM results r "
        "JOIN images i ON i.id = r.image_id WHERE i.job_id = $1",
        job_id,
    )[0]
    assert results["n"] == results["d"] == n
    return rows


def post_job(url: str, key: str, images: list[bytes]) -> dict[str, Any]:
    files = [("files", (f"s{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = httpx.post(
        f"{url}/api/v1/jobs", files=files, data={"model": MODEL}, headers=auth(key), timeout=60
    )
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_workers_route_lists_both_workers_for_admins_only(cluster: Cluster) -> None:
    key = cluster.svc.create_user("not-an-admin")
    for url in cluster.urls.values():
        refused = httpx.get(f"{url}/api/v1/workers", headers=auth(key), timeout=10)
        assert refused.status_code in (401, 403)
        assert refused.json()["error"]["code"]
        anonymous = httpx.get(f"{url}/api/v1/workers", timeout=10)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"]
        workers = cluster.workers(url)
        assert sorted(w["queue"] for w in workers) == sorted(cluster.queues.values())
        for w in workers:
            assert w["device"] and w["draining"] is False
            assert [m["name"] for m in w["models"]] == [MODEL]
            assert w["batch_ceilings"][MODEL] >= 1
            assert w["free_memory_bytes"] > 0
            assert w["in_flight"] >= 0 and w["capacity"] == 4
    for port in cluster.svc.metrics_ports.values():
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_events_of_a_job_uploaded_through_one_replica_reach_a_client_of_the_other(
    cluster: Cluster,
) -> None:
    key = cluster.svc.create_user("crossing")
    images = make_pngs(300, 6)

    async def scenario() -> tuple[Listener, dict[str, Any]]:
        listener = Listener()
        await listener.connect(cluster.urls["gateway"], key)
        async with httpx.AsyncClient(base_url=cluster.urls["gateway2"], timeout=60) as http:
            job = await submit(http, key, images, MODEL)
        await wait_done(listener, job["id"], 180)
        await asyncio.sleep(0.5)  # a stray or repeated event would arrive now
        await listener.sio.disconnect()
        return listener, job

    listener, job = asyncio.run(scenario())
    own = {img["id"] for img in job["images"]}
    done = {u["image_id"] for u in listener.of("image.update") if u["status"] == "done"}
    assert done == own
    assert {u["image_id"] for u in listener.of("image.update")} == own
    assert [d["job_id"] for d in listener.of("job.done")] == [job["id"]]
    assert listener.of("job.progress"), "no job.progress event crossed replicas"


def test_work_is_spread_over_both_workers_by_free_capacity(cluster: Cluster) -> None:
    key = cluster.svc.create_user("spread")
    job = post_job(cluster.urls["gateway"], key, make_pngs(310, 24))
    wait_job_done(cluster, cluster.urls["gateway"], key, job["id"], 240)
    rows = assert_each_image_done_once(cluster, job["id"], 24)
    per_queue = {q: sum(r["queue"] == q for r in rows) for q in cluster.queues.values()}
    assert min(per_queue.values()) >= 4, per_queue  # both took a real share
    assert {r["worker"] for r in rows} == {w["name"] for w in cluster.workers()}, (
        "each image's result names the worker that ran it"
    )


def test_sigterm_drains_a_worker_and_the_other_finishes_the_job(cluster: Cluster) -> None:
    key = cluster.svc.create_user("drained")
    n = 30
    job = post_job(cluster.urls["gateway2"], key, make_pngs(320, n))
    q1 = cluster.queues["worker2"]
    wait_image(cluster, job["id"], "worker2 processing", status="processing", queue=q1)
    proc = cluster.svc.procs.pop("worker2")
    drained_name = next(w["name"] for w in cluster.workers() if w["queue"] == q1)
    port = cluster.svc.metrics_ports["worker2"]
    os.killpg(proc.pid, signal.SIGTERM)
    signalled = time.monotonic()

    def draining_seen() -> datetime | None:
        # the worker says so on its own port (503) and in its heartbeat, until it exits
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if ready.status_code == 200:
                return None  # the signal handler has not run yet
            assert ready.status_code == 503, ready.text
            assert ready.json()["error"]["code"] == "not_ready"
        except httpx.TransportError:
            pass  # already gone
        beat = [w for w in cluster.workers() if w["queue"] == q1]
        if beat and not beat[0]["draining"]:
            return None
        return cluster.db_now()

    drain_seen = wait_for("draining heartbeat", draining_seen, 15, cluster)
    try:
        code = proc.wait(timeout=60)  # the grace period: in-flight batch finished, acked
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        msg = f"worker2 did not exit after SIGTERM\n{cluster.svc.diagnostics()}"
        raise AssertionError(msg) from None
    assert code == 0, cluster.svc.log("worker2")[-3000:]
    assert time.monotonic() - signalled < 60
    log = cluster.svc.log("worker2")
    assert "Warm shutdown" in log or "warm shutdown" in log.lower()

    wait_job_done(cluster, cluster.urls["gateway"], key, job["id"], 300)
    rows = assert_each_image_done_once(cluster, job["id"], n)
    # an image the dispatcher requeued (its queue looked orphaned once the heartbeat was gone)
    # but the draining worker finished anyway has no dispatch time left: not a late dispatch
    late = [
        r
        for r in rows
        if r["queue"] == q1
        and r["dispatched_at"] is not None
        and (r["dispatched_at"] - drain_seen).total_seconds() > 1.0
    ]
    assert not late, f"{len(late)} images were sent to the draining worker's queue"
    by_worker = {r["worker"] for r in rows}
    assert drained_name in by_worker, "the drained worker finished what it held"
    assert len(by_worker) == 2
    assert not [w for w in cluster.workers() if w["queue"] == q1], "its heartbeat is gone"

    cluster.start_worker("worker2")  # back to two workers for the next tests
    wait_serving(cluster)


def test_the_other_replica_takes_over_dispatch_when_the_leader_is_killed(
    cluster: Cluster,
) -> None:
    leader = wait_for("a dispatcher leader", cluster.leader, 20, cluster)
    follower = next(name for name in cluster.urls if name != leader)
    key = cluster.svc.create_user("orphaned-by-the-leader")
    n = 24
    job = post_job(cluster.urls[follower], key, make_pngs(330, n))
    wait_image(cluster, job["id"], "first results", status="done", at_least=2)
    cluster.svc.stop(leader, sig=signal.SIGKILL)
    killed_at = cluster.db_now()
    took_over = time.monotonic()
    wait_for("the follower leads", lambda: cluster.leader() == follower, 15, cluster)
    assert time.monotonic() - took_over < 10

    wait_job_done(cluster, cluster.urls[follower], key, job["id"], 300)
    rows = assert_each_image_done_once(cluster, job["id"], n)
    after = sorted(
        (r["dispatched_at"] - killed_at).total_seconds()
        for r in rows
        if r["dispatched_at"] is not None and r["dispatched_at"] > killed_at
    )
    assert after, "nothing was dispatched after the leader died (all sent before?)"
    assert after[0] < 5.0, f"dispatch resumed {after[0]:.1f} s after the leader died"

    cluster.start_gateway(leader)  # both replicas again, for whatever runs next
    wait_serving(cluster)


def test_work_of_a_queue_whose_worker_vanished_is_sent_elsewhere(cluster: Cluster) -> None:
    """SIGKILL (no drain): what was released to its queue returns to queued after the grace
    period and the surviving worker runs it; nothing stays queued for ever."""
    key = cluster.svc.create_user("vanished")
    n = 16
    job = post_job(cluster.urls["gateway"], key, make_pngs(340, n))
    q1 = cluster.queues["worker2"]
    wait_image(cluster, job["id"], "work on worker2's queue", queue=q1)
    cluster.svc.stop("worker2", sig=signal.SIGKILL)
    wait_job_done(cluster, cluster.urls["gateway"], key, job["id"], 300)
    rows = images_of(cluster, job["id"])
    assert {r["status"] for r in rows} == {"done"}
    survivors = {w["name"] for w in cluster.workers()}
    assert len(survivors) == 1
    counts = cluster.svc.db(
        "SELECT count(*) AS n, count(DISTINCT r.image_id) AS d FROM results r "
        "JOIN images i ON i.id = r.image_id WHERE i.job_id = $1",
        job["id"],
    )[0]
    assert counts["n"] == counts["d"] == n

    cluster.start_worker("worker2")
    wait_serving(cluster)


def test_worker_probe_paths_answer(cluster: Cluster) -> None:
    from workers.metrics import HEALTH_PATHS

    port = cluster.svc.metrics_ports["worker"]
    for path in HEALTH_PATHS:
        assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200
