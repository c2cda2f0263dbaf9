"""Training from a folder end to end (a few steps on tiny images): the weights and sidecar it
writes are loaded and served by the engine as they are; bad data stops it naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from safetensors.torch import load_file

from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.settings import EngineSettings
from ml_service.training.folder import fingerprint
from ml_service.training.train import main
from models.registry import get_spec
from tests.ml_service.test_training_folder import write_pair


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i, name in enumerate(("one", "two", "three")):
        write_pair(data, name, i)
    return data


def _train(folder: Path, out: Path) -> None:
    main(
        [
            "--model",
            "hrnet",
            "--data",
            str(folder),
            "--init",
            "scratch",
            "--steps",
            "2",
            "--eval-every",
            "1",
            "--batch-size",
            "2",
            "--crop",
            "64",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )


@pytest.mark.slow
def test_training_from_a_folder_writes_weights_the_engine_serves(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "weights"
    _train(folder, out)
    sidecar = json.loads((out / "hrnet-small.json").read_text())
    assert sidecar["training"]["data_fingerprint"] == fingerprint(folder)
    assert sidecar["train_diameter_px"] == pytest.approx(11.0, abs=1.5)  # discs of radius 5
    assert 0.0 <= sidecar["validation"]["ap50"] <= 1.0
    assert [h["step"] for h in sidecar["training"]["history"]] == [1, 2]
    tensors = load_file(str(out / "hrnet-small.safetensors"))
    assert set(tensors) == set(get_spec("hrnet").build().state_dict())  # no optimizer state

    settings = EngineSettings(
        device="cpu",
        models=("hrnet",),
        weights_dir=out,
        backend="torch",
        profiles_path=tmp_path / "batch_sizes.json",
        onnx_cache_dir=tmp_path / "onnx",
    )
    image = cv2.imencode(".png", cv2.imread(str(folder / "one.png")))[1].tobytes()
    with Engine.from_settings(settings) as engine:
        assert engine.describe()["models"][0]["weights"]["sha256"] == sidecar["sha256"]
        result = engine.segment(image, "hrnet", SegmentationParams(0.5, 0))
    assert result.labels.shape == (48, 48)


def test_bad_data_stops_training_naming_the_file(folder: Path, tmp_path: Path) -> None:
    (folder / "two_masks.png").unlink()
    with pytest.raises(SystemExit, match=r"two\.png: image without a mask"):
        _train(folder, tmp_path / "weights")
    assert not (tmp_path / "weights").exists()


def test_help_states_the_naming_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "NAME_masks.png" in capsys.readouterr().out
