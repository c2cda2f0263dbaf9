"""Upload file names and temp-file hygiene (pure, no services)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backend.uploads import TEMP_PREFIX, TEMP_SUFFIX, safe_filename, sweep_stale_temps


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cells.png", "cells.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\y.png", "y.png"),
        ("C:y.png", "y.png"),
        ("/abs/path/img.tif", "img.tif"),
        ("..", "fallback"),
        ("../..", "fallback"),
        ("a..b.png", "a.b.png"),
        ("evil\x00name\r\n.png", "evilname.png"),
        ("  spaced .png  ", "spaced .png"),
        ("", "fallback"),
        (None, "fallback"),
        ("zelle-ü.png", "zelle-ü.png"),
        ("\u202egnp.exe", "gnp.exe"),  # bidi override (format character) removed
    ],
)
def test_safe_filename(raw: str | None, expected: str) -> None:
    assert safe_filename(raw, "fallback") == expected


def test_safe_filename_caps_length_keeping_the_extension() -> None:
    name = safe_filename("a" * 1000 + ".tiff", "x")
    assert len(name) == 255
    assert name.endswith(".tiff")


def test_sweep_removes_only_old_temp_files(tmp_path: Path) -> None:
    old = tmp_path / f"{TEMP_PREFIX}old{TEMP_SUFFIX}"
    new = tmp_path / f"{TEMP_PREFIX}new{TEMP_SUFFIX}"
    blob = tmp_path / ("ab" * 32)
    (tmp_path / "masks").mkdir()
    old_mask_temp = tmp_path / "masks" / f"{TEMP_PREFIX}m{TEMP_SUFFIX}"
    for path in (old, new, blob, old_mask_temp):
        path.write_bytes(b"x")
    past = time.time() - 7200
    for path in (old, blob, old_mask_temp):
        os.utime(path, (past, past))
    assert sweep_stale_temps(tmp_path, older_than_s=3600) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, blob.name, "masks"])
    assert not old_mask_temp.exists()
