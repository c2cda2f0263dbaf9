"""``cellseg segment`` against the real service: a folder in, results and a table out."""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg_client.cli.manifest import MANIFEST_NAME, Manifest, RunParams
from ml_service.training.synthetic import generate_sample
from tests.client.conftest import User, image_rows, run_cli, spawn_cli, write_pngs
from tests.client.stub import Proxy, ServerThread
from tests.harness import Service


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_across_two_models_gives_results_and_a_matching_table(
    service: Service, user: User, tmp_path: Path
) -> None:
    src = tmp_path / "plate"
    write_pngs(src / "a", 6, seed=1)
    write_pngs(src / "b", 6, seed=2)
    for model in ("hrnet", "unet"):
        out = tmp_path / f"out-{model}"
        code = run_cli(
            service.url,
            user.key,
            "segment",
            src,
            "--model",
            model,
            "--out",
            out,
            "--format",
            "json,geojson,coco,mask",
            "-q",
        )
        assert code == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["counts"]["images"] == summary["counts"]["done"] == 12
        for entry in summary["images"]:
            stem = entry["image"].rsplit(".", 1)[0]
            for suffix in (".json", ".geojson", ".coco.json", ".mask.png"):
                assert (out / (stem + suffix)).is_file()
        rows = read_csv(out / "objects.csv")
        per_image = Counter(r["image"] for r in rows)
        server = {(r["job_id"], r["id"]): r["objects"] for r in image_rows(service, user)}
        for entry in summary["images"]:
            assert server[(entry["job_id"], entry["image_id"])] == entry["objects"]
            assert per_image.get(entry["image"], 0) == entry["objects"]
    models = {
        r["model"]
        for r in service.db(
            "SELECT j.model FROM jobs j JOIN users u ON u.id = j.user_id WHERE u.name = $1",
            user.name,
        )
    }
    assert models == {"hrnet", "unet"}


def comparable(out: Path) -> dict[str, object]:
    """Everything a run wrote, minus what names the server's jobs (ids, timings)."""
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["images"]:
        entry.pop("job_id"), entry.pop("image_id"), entry.pop("path")
    summary.pop("jobs"), summary.pop("server")
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix in (".geojson", ".png", ".csv")
    }
    results = {}
    for p in sorted(out.glob("**/*.json")):
        if p.name not in ("summary.json",) and not p.name.endswith(".coco.json"):
            body = json.loads(p.read_text())
            body.pop("timings_ms", None), body.pop("batch_sizes", None)
            results[p.relative_to(out).as_posix()] = body
    return {"summary": summary, "files": files, "results": results}


def wait_for_upload(manifest: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if manifest.exists() and '"op":"uploaded"' in manifest.read_text():
            return
        time.sleep(0.02)
    raise TimeoutError("no job was uploaded")


def test_killed_mid_run_it_resumes_without_uploading_anything_twice(
    service: Service, small_gateway: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_pngs(src, 12, seed=3)
    args = [
        "segment",
        src,
        "--model",
        "cbam_resunet",
        "--concurrency",
        "1",
        "--format",
        "json,geojson,mask",
        "-q",
    ]
    reference, victim = User("", ""), User("", "")
    for u in (reference, victim):
        u.name = "resume-" + secrets.token_hex(4)
        u.key = service.create_user(u.name)
    assert run_cli(small_gateway, reference.key, *args, "--out", tmp_path / "ref") == 0

    # Through a link that holds each upload's answer 1 s: killed 0.5 s after the first job is
    # recorded, the second job is on the server but only "pending" in the manifest.
    out = tmp_path / "out"
    with ServerThread(Proxy(small_gateway, post_answer_delay_s=1.0)) as slow:
        proc = spawn_cli(slow.url, victim.key, *args, "--out", out, "--poll-interval", "0.5")
        try:
            wait_for_upload(out / MANIFEST_NAME)
            time.sleep(0.5)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    before = image_rows(service, victim)
    cut_off = Manifest.open(out, RunParams("cbam_resunet", 0.5, 50))
    cut_off.close()
    assert len(cut_off.state.uploaded) == 4 and len(before) == 8, "not killed mid-upload"
    assert len(cut_off.state.pending) == 1  # taken by the server, its answer never recorded

    assert run_cli(small_gateway, victim.key, *args, "--out", out) == 0
    rows = image_rows(service, victim)
    assert len(rows) == len({r["sha256"] for r in rows}) == 12  # none uploaded twice
    assert {r["status"] for r in rows} == {"done"}
    assert len({r["job_id"] for r in rows}) == 3  # 12 files, 4 per job
    assert comparable(out) == comparable(tmp_path / "ref")

    assert run_cli(small_gateway, victim.key, *args, "--out", out) == 0  # done: nothing to do
    assert len(image_rows(service, victim)) == 12


def test_a_refused_run_leaves_out_free_and_a_bad_file_is_named(
    service: Service, user: User, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "plate"
    good = write_pngs(src, 3, seed=7)
    (src / "notes.png").write_bytes(b"not an image, just renamed")  # the client skips it
    (src / "cut.png").write_bytes(good[0].read_bytes()[:60])  # the server refuses it
    out = tmp_path / "out"
    code = run_cli(service.url, user.key, "segment", src, "--model", "resnet", "--out", out, "-q")
    assert code != 0
    assert "unknown_model" in capsys.readouterr().err
    assert not (out / MANIFEST_NAME).exists()  # the refused run did not lock OUT
    code = run_cli(service.url, user.key, "segment", src, "--model", "unet", "--out", out, "-q")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["done"] == 3 and summary["counts"]["rejected"] == 1
    assert [s["path"].rsplit("/", 1)[-1] for s in summary["skipped"]] == ["notes.png"]
    bad = next(e for e in summary["images"] if e["image"] == "cut.png")
    assert bad["error"]["code"] == "invalid_image"
    assert bad["error"]["message"].startswith("cut.png (file ")


def test_a_z_stack_needs_a_plane_and_is_segmented_at_the_one_named(
    service: Service, user: User, tmp_path: Path
) -> None:
    src = tmp_path / "stacks"
    src.mkdir()
    cells = generate_sample(np.random.default_rng(4), 256, "cells").image
    stack = np.zeros((5, 256, 256), np.uint8)
    stack[3] = cells
    tifffile.imwrite(src / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "no-plane"
    run_cli(service.url, user.key, "segment", src, "--model", "unet", "--out", out, "-q")
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["status"] == "rejected"
    assert entry["error"]["code"] == "choose_plane_or_channel"
    assert "z.tif (file 1) holds 5 planes of 256×256; choose one with plane=0..4" in (
        entry["error"]["message"]
    )
    out = tmp_path / "plane-3"
    code = run_cli(
        service.url, user.key, "segment", src, "--model", "unet", "--plane", "3", "--out", out, "-q"
    )
    assert code == 0
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["status"] == "done" and entry["objects"] > 0  # plane 3 holds the cells
