"""Retries and typed errors over real HTTP, against scripted stub servers on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cellseg_client import (
    ApiError,
    Client,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServiceUnavailable,
    TransportError,
    ValidationFailed,
)
from tests.client.stub import Reply, Scripted, ServerThread, error_json
from tests.harness import free_port

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05)
JOB = (
    b'{"id": "j1", "status": "queued", "model": "hrnet", "threshold": 0.5, "min_area": 50,'
    b' "images": [{"id": "i1", "filename": "a.png", "status": "queued"}]}'
)


def reply_429(retry_after: str) -> Reply:
    return Reply(
        429,
        error_json("too_many_requests", "slow down"),
        {"content-type": "application/json", "retry-after": retry_after},
    )


def test_429_is_retried_after_retry_after_then_succeeds() -> None:
    app = Scripted(reply_429("1"), Reply(200, JOB))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        job = client.job("j1")
    assert job.id == "j1" and len(app.seen) == 2
    assert app.seen[1].at - app.seen[0].at >= 0.95  # waited Retry-After, not FAST's backoff


def test_an_upload_refused_with_429_is_sent_again_in_full(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 5000)
    app = Scripted(reply_429("0"), Reply(202, JOB))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        job = client.create_job([image], "hrnet")
    assert job.images[0].id == "i1"
    assert [s.method for s in app.seen] == ["POST", "POST"]
    assert app.seen[0].body_bytes == app.seen[1].body_bytes > 5000


def test_retries_end_with_the_typed_error_of_the_last_answer() -> None:
    app = Scripted(Reply(503, error_json("service_unavailable", "Redis is unavailable")))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        with pytest.raises(ServiceUnavailable) as info:
            client.jobs()
    assert info.value.code == "service_unavailable" and "Redis" in info.value.message
    assert len(app.seen) == FAST.max_attempts


def test_429_forever_raises_rate_limited() -> None:
    app = Scripted(reply_429("0"))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        with pytest.raises(RateLimited):
            client.models()
    assert len(app.seen) == FAST.max_attempts


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(404, "not_found", NotFound), (422, "unknown_model", ValidationFailed)],
)
def test_a_4xx_that_will_not_change_is_not_retried(
    status: int, code: str, cls: type[ApiError]
) -> None:
    app = Scripted(Reply(status, error_json(code, "no")))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        with pytest.raises(cls) as info:
            client.job("nope")
    assert info.value.code == code and len(app.seen) == 1


def test_a_lost_answer_is_retried_for_reads_but_not_for_uploads(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    slow = Reply(200, JOB, delay_s=1.0)
    app = Scripted(slow, Reply(200, JOB))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST, timeout=0.3) as client:
        assert client.job("j1").id == "j1"  # the first answer came too late: asked again
        assert len(app.seen) == 2
        app.replies, app.seen = [slow], []
        with pytest.raises(TransportError):
            client.create_job([image], "hrnet")  # maybe taken: never sent twice
        time.sleep(1.0)
    assert [s.method for s in app.seen] == ["POST"]


def test_no_server_at_all_is_a_transport_error_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(url, "k", retry=FAST) as client, pytest.raises(TransportError):
        client.jobs()
    assert time.monotonic() - started < 5


def test_bad_arguments_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    app = Scripted(Reply(200, JOB))
    with ServerThread(app) as srv, Client(srv.url, "k", retry=FAST) as client:
        with pytest.raises(ValueError, match="unknown format 'xml'"):
            client.results("j1", "xml")
        with pytest.raises(ValueError, match="unknown format 'png'"):
            client.image_result("j1", "i1", "png")
        with pytest.raises(ValueError, match="filenames must name every file"):
            client.create_job([image], "hrnet", filenames=["a.png", "b.png"])
    assert app.seen == []
    with pytest.raises(ValueError, match="max_concurrency"):
        Client("http://127.0.0.1:1", "k", max_concurrency=0)


@pytest.mark.parametrize(
    ("ready", "checks", "message"),
    [
        (
            Reply(
                503,
                b'{"error": {"code": "not_ready", "message": "no worker",'
                b' "checks": {"redis": {"ok": true}}}}',
            ),
            {"redis": {"ok": True}},
            "no worker",
        ),
        (Reply(200, b'{"checks": {"postgres": {"ok": true}}}'), {"postgres": {"ok": True}}, ""),
        (Reply(503, b'["not", "an", "object"]'), {}, ""),
        (Reply(502, b"<html>Bad Gateway</html>", {"content-type": "text/html"}), {}, ""),
    ],
)
def test_health_reads_any_readyz_answer(
    ready: Reply, checks: dict[str, object], message: str
) -> None:
    app = Scripted(Reply(200, b'{"status": "ok"}'), ready)
    with ServerThread(app) as srv, Client(srv.url, None) as client:
        health = client.health()
    assert [s.path for s in app.seen] == ["/healthz", "/readyz"]  # probes are never retried
    assert health.alive and health.ready == (ready.status == 200)
    assert (health.checks, health.message) == (checks, message)
