"""The load tester against the real service (small, bounded), and its pure parts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from loadtest.images import png_bytes, synthetic_images
from loadtest.report import ImageRecord, RunResult, summarize
from loadtest.runner import NotLoopback, Workload, check_loopback, run_workload
from tests.harness import ADMIN_KEY, Service


def test_three_users_every_image_done_no_event_lost(service: Service, tmp_path: Path) -> None:
    images = synthetic_images(3, 256, tmp_path)
    work = Workload(
        url=service.url,
        users=3,
        images=images,
        models=["hrnet", "unet"],
        timeout_s=180,
        admin_key=ADMIN_KEY,
    )
    summary = summarize(asyncio.run(run_workload(work)))
    assert summary["done"] == summary["images"] == 9
    assert summary["events_lost"] == 0 and summary["errors"] == {}
    assert summary["latency_s"]["p50"] is not None and summary["latency_s"]["p50"] > 0
    assert summary["time_to_first_event_s"]["p50"] is not None
    assert 0 < summary["fairness"] <= 1
    assert summary["images_per_s"] > 0


def test_closed_mode_sends_one_image_per_job_after_the_previous_result(
    service: Service, tmp_path: Path
) -> None:
    work = Workload(
        url=service.url,
        users=2,
        images=synthetic_images(3, 256, tmp_path),
        models=["hrnet"],
        timeout_s=180,
        admin_key=ADMIN_KEY,
        mode="closed",
        think_s=0.05,
    )
    started = time.monotonic()
    run = asyncio.run(run_workload(work))
    summary = summarize(run)
    assert summary["done"] == summary["images"] == 6
    assert summary["events_lost"] == 0 and summary["errors"] == {}
    for user in (0, 1):
        mine = sorted((r for r in run.images if r.user == user), key=lambda r: r.accepted_at)
        assert len({r.job_id for r in mine}) == 3  # one job per image
        assert mine[0].accepted_at > started  # each user starts after a think time
        for before, after in zip(mine, mine[1:], strict=False):
            assert before.done_at is not None
            assert after.accepted_at > before.done_at  # waited for it (then thought)


def test_workload_refuses_bad_settings() -> None:
    base = {"url": "http://127.0.0.1:1", "users": 1, "images": [Path("a.png")], "models": ["unet"]}
    for bad in ({"mode": "open"}, {"think_s": -1}, {"users": 0}, {"images": []}, {"models": []}):
        with pytest.raises(ValueError):
            Workload(**{**base, **bad})  # type: ignore[arg-type]
    assert Workload(**base).uploads() == [[Path("a.png")]]  # type: ignore[arg-type]
    closed = Workload(**{**base, "images": [Path("a"), Path("b")], "mode": "closed"})  # type: ignore[arg-type]
    assert closed.uploads() == [[Path("a")], [Path("b")]]


def test_cli_refuses_think_time_outside_closed_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtest.cli import main

    for argv in (["--think-s", "1"], ["--mode", "closed", "--think-s", "-1"], ["--mode", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "--think-s" in capsys.readouterr().err


def test_a_user_whose_socket_is_refused_is_an_error_not_the_end_of_the_run(
    service: Service, tmp_path: Path
) -> None:
    good = service.create_user("load-good")
    work = Workload(
        url=service.url,
        users=2,
        images=synthetic_images(1, 256, tmp_path),
        models=["unet"],
        timeout_s=120,
        api_keys=(good, "not-a-key"),
    )
    summary = summarize(asyncio.run(run_workload(work)))
    assert summary["errors"] == {"socketio_refused": 1}
    assert summary["done"] == 1  # the other user's image went through


def test_only_loopback_targets() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80"):
        check_loopback(url)
    for url in ("http://10.0.0.5:8000", "http://example.com", "http://192.168.1.2"):
        with pytest.raises(NotLoopback):
            check_loopback(url)


def test_summary_counts_lost_events_errors_and_fairness() -> None:
    run = RunResult(users=2, started_at=0.0, finished_at=10.0, errors={"rate_limited": 1})
    run.images = [
        ImageRecord(0, "j0", "a", 0.0, 0.5, 2.0, "done"),
        ImageRecord(0, "j0", "b", 0.0, 0.5, 4.0, "done"),
        ImageRecord(1, "j1", "c", 0.0, 1.0, 8.0, "done"),
        ImageRecord(1, "j1", "d", 0.0, None, None, "done"),  # done by REST, event never came
        ImageRecord(1, "j1", "e", 0.0, 1.0, 9.0, "failed"),
    ]
    s = summarize(run)
    assert s["done"] == 4 and s["events_lost"] == 1
    assert s["errors"] == {"rate_limited": 1, "image_failed": 1}
    assert s["images_per_s_per_user"] == {"0": 0.5, "1": 0.125}
    assert s["fairness"] == 0.25
    assert s["latency_s"]["p50"] == 4.0


def test_closed_mode_fairness_compares_median_latencies() -> None:
    run = RunResult(users=2, mode="closed", started_at=0.0, finished_at=30.0)
    run.images = [
        ImageRecord(0, "j0", "a", 0.0, 0.1, 0.2, "done"),  # user 0: 0.2 s and 0.4 s
        ImageRecord(0, "j1", "b", 5.0, 5.1, 5.4, "done"),
        ImageRecord(1, "j2", "c", 1.0, 1.1, 1.6, "done"),  # user 1: 0.6 s, despite its
        ImageRecord(1, "j3", "d", 20.0, 20.1, 20.6, "done"),  # long think between images
    ]
    assert summarize(run)["fairness"] == 0.5  # median 0.3 s / median 0.6 s
    run.images = run.images[:2]  # a user with nothing done is as unfair as it gets
    assert summarize(run)["fairness"] == 0.0


def test_drawn_images_are_pngs_the_service_reads(tmp_path: Path) -> None:
    import cv2

    from imageheader import read_header

    paths = synthetic_images(2, 96, tmp_path, seed=3)
    assert [p.name for p in paths] == ["synthetic-0000.png", "synthetic-0001.png"]
    for path in paths:
        data = path.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape == (96, 96) and image.dtype == np.uint8
        assert image.max() > 100 > 40 > np.median(image)  # bright discs on a dark field
        assert read_header(data).width == 96
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4, 3), np.uint8))
