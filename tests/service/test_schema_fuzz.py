"""schemathesis against a running service: every operation of the OpenAPI schema, with the
keys it needs (a user's, the admin's for the admin routes), answers no 5xx.

Before fuzzing, one image goes through ``POST /segment`` (its answer must match the schema's
``SegmentAnswer``); the fuzzer then gets that job's and image's ids, so the routes under
``/jobs/{job_id}`` reach a real job instead of answering 404 to random ids.

The same command by hand, against ``make run`` (docs/api.md):
``st run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer KEY" --checks
not_a_server_error``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.schemas.results import SegmentAnswer
from tests.backend import images
from tests.harness import ADMIN_KEY, running_service

ADMIN_PATHS = ("/api/v1/users", "/api/v1/workers")


def _st() -> str:
    found = shutil.which("st") or str(Path(sys.executable).parent / "st")
    if not Path(found).exists():
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    return found


def fuzz(
    url: str, key: str, options: list[str], config: Path, tmp: Path
) -> subprocess.CompletedProcess[str]:
    """``st run`` with ``options`` (``--include-path`` / ``--exclude-path``)."""
    return subprocess.run(
        [
            _st(),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "-H",
            f"Authorization: Bearer {key}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp / "report"),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,  # schemathesis keeps a cache folder where it runs
    )


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        user_key = svc.create_user("fuzz")
        r = httpx.post(
            f"{svc.url}/api/v1/segment",
            files={"file": ("cells.png", images.png(96, 96, 1), "image/png")},
            data={"model": "unet"},
            headers={"Authorization": f"Bearer {user_key}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        answer = SegmentAnswer.model_validate(r.json())
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "[parameters]\n"
            f'"path.job_id" = "{answer.job_id}"\n'
            f'"path.image_id" = "{answer.image_id}"\n'
        )
        admin_only = [a for p in ADMIN_PATHS for a in ("--include-path", p)]
        user_only = [a for p in ADMIN_PATHS for a in ("--exclude-path", p)]
        for key, options in ((user_key, user_only), (ADMIN_KEY, admin_only)):
            run = fuzz(svc.url, key, options, config, tmp_path)
            print(run.stdout)  # shown with -s or on failure
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
            assert "passed" in run.stdout and "failed" not in run.stdout, run.stdout
