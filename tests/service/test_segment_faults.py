"""``POST /segment`` through a real worker: an upload gone from the blob store before the
worker reads it is a server fault (500 ``upload_missing``), stored as the image's reason."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest

from tests.backend import images
from tests.harness import running_service


@pytest.mark.slow
def test_missing_upload_answers_500_upload_missing(tmp_path: Path) -> None:
    extra = {"SYNC_TIMEOUT_S": "180"}
    with running_service(tmp_path, extra, workers=0, wait=False) as svc:
        pause = threading.Event()
        for _ in range(200):  # the gateway alone: no worker takes the image yet
            try:
                if httpx.get(f"{svc.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            pause.wait(0.3)
        key = svc.create_user("unlucky")
        data = images.png(64, 64, 1)
        answer: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: answer.append(
                httpx.post(
                    f"{svc.url}/api/v1/segment",
                    files={"file": ("gone.png", data, "image/png")},
                    data={"model": "unet"},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=240,
                )
            )
        )
        request.start()
        upload = Path(svc.env["UPLOAD_DIR"]) / hashlib.sha256(data).hexdigest()
        for _ in range(200):
            if upload.exists() and svc.db("SELECT 1 FROM images WHERE status = 'queued'"):
                break
            pause.wait(0.1)
        upload.unlink()
        svc.start_worker()
        request.join(240)
        assert answer, "no answer from /segment:\n" + svc.diagnostics()
        r = answer[0]
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert error["code"] == "upload_missing" and error["retryable"] is True
        job = httpx.get(
            f"{svc.url}/api/v1/jobs/{error['job_id']}",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert job["images"][0]["error"]["code"] == "upload_missing"
