"""The run manifest in ``OUT``: what was uploaded (by content hash) and which job holds it.

An append-only JSON-lines log, flushed and fsynced line by line, so a run killed at any
instant leaves a log that says everything that happened before (a torn last line is ignored).
Records, in order of use:

- ``{"op": "run", "version", "model", "threshold", "min_area", "plane", "channel"}``: first
  line; a re-run with other parameters into the same ``OUT`` is refused. A run that ends in an
  error before any upload reached the server removes its manifest
  (:meth:`Manifest.forget_if_unused`).
- ``{"op": "pending", "batch", "hashes", "filenames", "at"}``: an upload is about to be sent.
- ``{"op": "uploaded", "batch", "job_id", "images": {hash: image_id}}``: the server took it.
- ``{"op": "abandoned", "batch"}``: a pending upload that never reached the server.
- ``{"op": "rejected", "hash", "code", "message"}``: the server (or the client) refused the file.
- ``{"op": "forgotten", "job_id"}``: the server no longer knows the job; upload again.

A batch still ``pending`` when a run starts was cut off between sending and recording the
answer; the run looks for its job on the server before uploading anything (see
:func:`cellseg_client.cli.resume.reconcile`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

MANIFEST_NAME = "cellseg-manifest.jsonl"
VERSION = 1


class ManifestError(Exception):
    """The manifest belongs to another run (other parameters) or is corrupt."""


@dataclass(frozen=True)
class RunParams:
    model: str
    threshold: float
    min_area: int
    plane: int | None = None
    channel: int | None = None

    def matches(self, other: RunParams) -> bool:
        return (
            self.model == other.model
            and abs(self.threshold - other.threshold) < 1e-9
            and self.min_area == other.min_area
            and (self.plane, self.channel) == (other.plane, other.channel)
        )


@dataclass(frozen=True)
class Upload:
    job_id: str
    image_id: str


@dataclass(frozen=True)
class Pending:
    batch: str
    hashes: list[str]
    filenames: list[str]
    at: float


@dataclass
class ManifestState:
    """What the log says now (rebuilt by replaying it)."""

    uploaded: dict[str, Upload] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def job_ids(self) -> list[str]:
        return sorted({u.job_id for u in self.uploaded.values()})

    def apply(self, rec: dict[str, Any]) -> None:
        op = rec.get("op")
        if op == "pending":
            self.pending[rec["batch"]] = Pending(
                rec["batch"], list(rec["hashes"]), list(rec["filenames"]), float(rec["at"])
            )
        elif op == "uploaded":
            self.pending.pop(rec["batch"], None)
            for digest, image_id in rec["images"].items():
                self.uploaded[digest] = Upload(rec["job_id"], image_id)
                self.rejected.pop(digest, None)
        elif op == "abandoned":
            self.pending.pop(rec["batch"], None)
        elif op == "rejected":
            self.rejected[rec["hash"]] = (rec["code"], rec["message"])
        elif op == "forgotten":
            gone = [h for h, u in self.uploaded.items() if u.job_id == rec["job_id"]]
            for digest in gone:
                del self.uploaded[digest]


class Manifest:
    """Open with :meth:`open`; every ``record_*`` call is durable when it returns."""

    def __init__(self, path: Path, params: RunParams, state: ManifestState, log: TextIO) -> None:
        self.path = path
        self.params = params
        self.state = state
        self._log = log

    @classmethod
    def open(cls, out: Path, params: RunParams) -> Manifest:
        """Load ``OUT/cellseg-manifest.jsonl`` (or start it) for a run with ``params``.

        Raises:
            ManifestError: it records a run with other parameters, its first line is not a run
                record, or a line other than the last is not JSON.
        """
        out.mkdir(parents=True, exist_ok=True)
        path = out / MANIFEST_NAME
        state = ManifestState()
        existing = _read(path)
        if existing:
            head = existing[0]
            try:
                if head.get("op") != "run":
                    raise ValueError("the first line is not a run record")
                recorded = RunParams(
                    str(head["model"]),
                    float(head["threshold"]),
                    int(head["min_area"]),
                    head.get("plane"),
                    head.get("channel"),
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ManifestError(f"{path} is not a cellseg manifest: {exc}") from None
            if not recorded.matches(params):
                raise ManifestError(
                    f"{out} holds a run with model={recorded.model} threshold="
                    f"{recorded.threshold:g} min_area={recorded.min_area} plane={recorded.plane} "
                    f"channel={recorded.channel}; use another --out for other parameters"
                )
            for rec in existing[1:]:
                state.apply(rec)
        log = path.open("a", encoding="utf-8")
        manifest = cls(path, params, state, log)
        if not existing:
            manifest._append(
                {
                    "op": "run",
                    "version": VERSION,
                    "model": params.model,
                    "threshold": params.threshold,
                    "min_area": params.min_area,
                    "plane": params.plane,
                    "channel": params.channel,
                }
            )
        return manifest

    def close(self) -> None:
        self._log.close()

    def forget_if_unused(self) -> bool:
        """Remove the manifest when no upload reached the server and none may have (nothing
        ``uploaded``, nothing ``pending``), so a later run may use other parameters. Call it
        after :meth:`close`. Returns whether it was removed."""
        if self.state.uploaded or self.state.pending:
            return False
        self.path.unlink(missing_ok=True)
        return True

    def record_pending(self, hashes: list[str], filenames: list[str]) -> str:
        batch = uuid.uuid4().hex
        self._record(
            {
                "op": "pending",
                "batch": batch,
                "hashes": hashes,
                "filenames": filenames,
                "at": time.time(),
            }
        )
        return batch

    def record_uploaded(self, batch: str, job_id: str, images: dict[str, str]) -> None:
        self._record({"op": "uploaded", "batch": batch, "job_id": job_id, "images": images})

    def record_abandoned(self, batch: str) -> None:
        self._record({"op": "abandoned", "batch": batch})

    def record_rejected(self, digest: str, code: str, message: str) -> None:
        self._record({"op": "rejected", "hash": digest, "code": code, "message": message})

    def record_forgotten(self, job_id: str) -> None:
        self._record({"op": "forgotten", "job_id": job_id})

    def _record(self, rec: dict[str, Any]) -> None:
        self._append(rec)
        self.state.apply(rec)

    def _append(self, rec: dict[str, Any]) -> None:
        self._log.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())


def _read(path: Path) -> list[dict[str, Any]]:
    """The records of the log. A last line without its newline was torn by a crash mid-write:
    it is cut off the file (or completed, if it is whole JSON)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1
    body, tail = data[:end], data[end:]
    records: list[dict[str, Any]] = []
    for i, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{path}:{i + 1} is not JSON ({exc}); remove the file to start over"
            ) from exc
    if tail:
        try:
            records.append(json.loads(tail))
            repaired = data + b"\n"
        except json.JSONDecodeError:
            repaired = body
        path.write_bytes(repaired)
    return records
