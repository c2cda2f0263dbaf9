"""The run manifest: replay, parameters check, torn last line (pure, files only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellseg_client.cli.manifest import MANIFEST_NAME, Manifest, ManifestError, RunParams

PARAMS = RunParams("hrnet", 0.5, 50)


def test_a_reopened_manifest_remembers_everything(tmp_path: Path) -> None:
    m = Manifest.open(tmp_path, PARAMS)
    b1 = m.record_pending(["h1", "h2"], ["a.png", "b.png"])
    m.record_uploaded(b1, "job1", {"h1": "i1", "h2": "i2"})
    b2 = m.record_pending(["h3"], ["c.png"])
    b3 = m.record_pending(["h4"], ["d.png"])
    m.record_abandoned(b3)
    m.record_rejected("h5", "invalid_image", "corrupt")
    m.close()
    again = Manifest.open(tmp_path, PARAMS)
    state = again.state
    assert {h: (u.job_id, u.image_id) for h, u in state.uploaded.items()} == {
        "h1": ("job1", "i1"),
        "h2": ("job1", "i2"),
    }
    assert list(state.pending) == [b2] and state.pending[b2].filenames == ["c.png"]
    assert state.rejected == {"h5": ("invalid_image", "corrupt")}
    again.record_forgotten("job1")
    assert state.uploaded == {} and state.job_ids == []


def test_other_parameters_are_refused(tmp_path: Path) -> None:
    Manifest.open(tmp_path, PARAMS).close()
    for other in (
        RunParams("unet", 0.5, 50),
        RunParams("hrnet", 0.6, 50),
        RunParams("hrnet", 0.5, 51),
    ):
        with pytest.raises(ManifestError, match="another --out"):
            Manifest.open(tmp_path, other)
    Manifest.open(tmp_path, RunParams("hrnet", 0.5, 50)).close()


def test_a_line_torn_by_a_crash_is_dropped_and_the_log_goes_on(tmp_path: Path) -> None:
    m = Manifest.open(tmp_path, PARAMS)
    batch = m.record_pending(["h1"], ["a.png"])
    m.close()
    with (tmp_path / MANIFEST_NAME).open("a") as f:
        f.write('{"op":"uploaded","batch":"' + batch + '","job_')
    m = Manifest.open(tmp_path, PARAMS)
    assert list(m.state.pending) == [batch]
    m.record_uploaded(batch, "j", {"h1": "i1"})
    m.close()
    assert Manifest.open(tmp_path, PARAMS).state.uploaded["h1"].job_id == "j"


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    Manifest.open(tmp_path, PARAMS).close()
    with (tmp_path / MANIFEST_NAME).open("a") as f:
        f.write("garbage\n{}\n")
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.open(tmp_path, PARAMS)


@pytest.mark.parametrize(
    "head",
    [
        '{"op": "uploaded", "model": "unet"}',
        '{"op": "run"}',
        '{"op": "run", "model": "unet", "threshold": "high", "min_area": 5}',
        "[1, 2]",
    ],
)
def test_a_file_that_is_not_a_manifest_is_refused_clearly(tmp_path: Path, head: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(head + "\n")
    with pytest.raises(ManifestError, match="not a cellseg manifest"):
        Manifest.open(tmp_path, PARAMS)


def test_a_run_with_nothing_uploaded_can_forget_its_manifest(tmp_path: Path) -> None:
    m = Manifest.open(tmp_path, PARAMS)
    m.record_abandoned(m.record_pending(["h1"], ["a.png"]))  # the server refused the request
    m.close()
    assert m.forget_if_unused() and not (tmp_path / MANIFEST_NAME).exists()
    Manifest.open(tmp_path, RunParams("unet", 0.5, 50)).close()  # other parameters: welcome


def test_a_run_with_an_upload_keeps_its_manifest(tmp_path: Path) -> None:
    m = Manifest.open(tmp_path, PARAMS)
    m.record_uploaded(m.record_pending(["h1"], ["a.png"]), "job1", {"h1": "i1"})
    m.close()
    assert not m.forget_if_unused() and (tmp_path / MANIFEST_NAME).exists()
    m = Manifest.open(tmp_path, PARAMS)
    m.record_pending(["h2"], ["b.png"])  # cut off: the server may have it
    m.close()
    assert not m.forget_if_unused()
