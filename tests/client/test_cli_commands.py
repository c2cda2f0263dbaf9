"""``cellseg`` commands and exit codes against the real service."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cellseg_client import Client
from cellseg_client.cli.main import Exit, main
from tests.client.conftest import User, image_rows, run_cli, write_pngs
from tests.harness import Service, free_port


def test_models_jobs_status_cancel_health(
    service: Service, user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(service.url, user.key, "models") == Exit.OK
    shown = capsys.readouterr().out
    assert "hrnet" in shown and "100 files and 50 MB per job" in shown
    with Client(service.url, user.key) as client:
        job = client.submit(write_pngs(tmp_path, 2, seed=6), "hrnet").jobs[0]
        list(client.watch(job.id))
    assert run_cli(service.url, user.key, "jobs") == Exit.OK
    assert job.id in capsys.readouterr().out
    assert run_cli(service.url, user.key, "status", job.id, "--json") == Exit.OK
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    assert run_cli(service.url, user.key, "status", job.id[:8]) == Exit.OK  # as the page shows
    assert f"job {job.id}: done" in capsys.readouterr().out
    assert run_cli(service.url, user.key, "status", "ffffffff") == Exit.REFUSED
    assert "no job of yours starts with 'ffffffff'" in capsys.readouterr().err
    assert run_cli(service.url, user.key, "cancel", job.id) == Exit.OK
    assert "0 cancelled" in capsys.readouterr().out
    assert run_cli(service.url, user.key, "health") == Exit.OK
    assert "ready" in capsys.readouterr().out


def test_url_and_key_come_from_the_environment(
    service: Service, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLSEG_URL", service.url)
    monkeypatch.setenv("CELLSEG_API_KEY", user.key)
    assert main(["jobs"]) == Exit.OK
    monkeypatch.delenv("CELLSEG_API_KEY")
    with pytest.raises(SystemExit) as usage:
        main(["jobs"])
    assert usage.value.code == Exit.USAGE


def test_failed_images_give_exit_1_and_a_one_line_summary(
    service: Service, user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    write_pngs(src, 2, seed=7)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # PNG, corrupt header
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert (
        run_cli(service.url, user.key, "segment", src, "--model", "hrnet", "--out", out, "-q")
        == Exit.FAILED
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("2 of 3 images done, 1 failed (1 x invalid_image: ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {
        "images": 3,
        "done": 2,
        "failed": 0,
        "cancelled": 0,
        "rejected": 1,
        "skipped": 1,
    }
    assert len(image_rows(service, user)) == 2
    # a re-run does not send the refused file again
    assert (
        run_cli(service.url, user.key, "segment", src, "--model", "hrnet", "--out", out, "-q")
        == Exit.FAILED
    )
    assert len(image_rows(service, user)) == 2


def test_usage_refusal_and_unreachable_exit_codes(
    service: Service, user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    out = tmp_path / "out"
    seg = ["segment", empty, "--model", "hrnet", "--out", out, "-q"]
    assert run_cli(service.url, user.key, *seg) == Exit.USAGE
    assert "skipping" in caplog.text and "no PNG, JPEG or TIFF images" in caplog.text
    src = write_pngs(tmp_path / "src", 1, seed=8)[0].parent
    seg[1] = src
    assert run_cli(service.url, "wrong-key", *seg) == Exit.REFUSED
    assert run_cli(service.url, user.key, "status", "no-such-job") == Exit.USAGE  # not an id
    assert run_cli(service.url, user.key, "status", "0123abcd") == Exit.REFUSED  # none of theirs
    assert run_cli(service.url, user.key, "status", str(uuid.uuid4())) == Exit.REFUSED
    dead = f"http://127.0.0.1:{free_port()}"
    assert run_cli(dead, user.key, "--retry-for", "0.5", "jobs") == Exit.UNAVAILABLE
    assert image_rows(service, user) == []  # nothing of the refused runs was stored


@pytest.mark.parametrize(
    "bad",
    [["--format", "xml"], ["--format", ","], ["--concurrency", "0"], ["--max-files-per-job", "-1"]],
)
def test_bad_segment_options_are_usage_errors(bad: list[str], tmp_path: Path) -> None:
    argv = ["--url", "http://127.0.0.1:1", "--api-key", "k", "segment", str(tmp_path)]
    with pytest.raises(SystemExit) as usage:
        main([*argv, "--model", "hrnet", "--out", str(tmp_path / "out"), *bad])
    assert usage.value.code == Exit.USAGE
    assert not (tmp_path / "out").exists()
