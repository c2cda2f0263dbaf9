"""ONNX export cache: the source checksum travels in the metadata; a stale or corrupt export is
rebuilt and never run; random weights and unwritable caches never leave a file behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ml_service.runtimes.onnx_export import (
    EXPORT_VERSION,
    META_MODEL,
    META_SOURCE,
    META_VERSION,
    OnnxArtifact,
    ensure_onnx,
    export_onnx,
    onnx_path,
    verify_onnx,
)
from ml_service.runtimes.onnxruntime import OnnxRuntime
from ml_service.runtimes.torch import TorchRuntime
from models.registry import get_spec
from models.weights import load_weights

SPEC = get_spec("hrnet", "small")  # the smallest model: exports in a fraction of a second


@pytest.fixture(scope="module")
def module_and_sha() -> tuple[nn.Module, str]:
    module = SPEC.build().eval()
    sidecar = load_weights(module, SPEC)
    return module, str(sidecar["sha256"])


@pytest.fixture(scope="module")
def good_export(
    module_and_sha: tuple[nn.Module, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A valid cached export to copy into each test's own cache directory."""
    module, sha = module_and_sha
    return Path(str(ensure_onnx(module, SPEC, sha, tmp_path_factory.mktemp("good")).path))


def cache_with(good_export: Path, tmp_path: Path) -> Path:
    target = onnx_path(SPEC, tmp_path)
    shutil.copyfile(good_export, target)
    return target


def metadata(data: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}


def assert_runs_like_torch(artifact: OnnxArtifact, module: nn.Module) -> None:
    x = np.random.default_rng(0).random((2, 1, 256, 256), dtype=np.float32)
    ort = OnnxRuntime(artifact.data, torch.device("cpu"), threads=1, resident_bytes=0)
    np.testing.assert_allclose(
        ort.run(x), TorchRuntime(module, torch.device("cpu")).run(x), atol=1e-4
    )


def test_export_records_its_source_and_has_a_dynamic_batch_axis(
    module_and_sha: tuple[nn.Module, str], tmp_path: Path
) -> None:
    module, sha = module_and_sha
    first = ensure_onnx(module, SPEC, sha, tmp_path)
    assert first.rebuilt and first.reason == "no export yet"
    assert first.path == tmp_path / "hrnet-small.onnx" and first.path.read_bytes() == first.data
    meta = metadata(first.data)
    assert meta[META_SOURCE] == sha and meta[META_MODEL] == "hrnet/small"
    assert meta[META_VERSION] == EXPORT_VERSION
    batch_dim = onnx.load_from_string(first.data).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    again = ensure_onnx(module, SPEC, sha, tmp_path)
    assert not again.rebuilt and again.reason == "cached" and again.data == first.data
    assert_runs_like_torch(again, module)


def test_export_of_older_weights_is_stale_and_rebuilt(
    module_and_sha: tuple[nn.Module, str], tmp_path: Path
) -> None:
    module, sha = module_and_sha
    path = onnx_path(SPEC, tmp_path)
    path.write_bytes(export_onnx(SPEC.build(), SPEC, "0" * 64))  # other weights, other sha
    assert verify_onnx(path.read_bytes(), SPEC, sha) == (
        f"stale: exported from weights {'0' * 64}, now {sha}"
    )
    artifact = ensure_onnx(module, SPEC, sha, tmp_path)
    assert artifact.rebuilt and artifact.reason.startswith("stale")
    assert metadata(path.read_bytes())[META_SOURCE] == sha
    assert_runs_like_torch(artifact, module)


def test_export_from_an_older_exporter_is_stale(
    module_and_sha: tuple[nn.Module, str], good_export: Path, tmp_path: Path
) -> None:
    module, sha = module_and_sha
    model = onnx.load(str(good_export))
    for prop in model.metadata_props:
        if prop.key == META_VERSION:
            prop.value = "0"
    onnx.save(model, str(onnx_path(SPEC, tmp_path)))
    artifact = ensure_onnx(module, SPEC, sha, tmp_path)
    assert artifact.rebuilt and artifact.reason.startswith("stale: export version '0'")


def _flip_weight_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x10  # the initializers fill most of the file: a weight changes
    return bytes(out)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_weight_byte, "corrupt: graph checksum mismatch"),
        (lambda data: data[: len(data) // 3], "corrupt: does not parse"),
        (lambda data: b"not an onnx file", "corrupt: does not parse"),
        (lambda data: b"", "corrupt"),
    ],
    ids=["flipped-weight", "truncated", "garbage", "empty"],
)
def test_corrupt_export_is_rebuilt_and_never_run(
    module_and_sha: tuple[nn.Module, str],
    good_export: Path,
    tmp_path: Path,
    damage: object,
    reason: str,
) -> None:
    module, sha = module_and_sha
    path = cache_with(good_export, tmp_path)
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    problem = verify_onnx(path.read_bytes(), SPEC, sha)
    assert problem is not None and problem.startswith(reason)
    artifact = ensure_onnx(module, SPEC, sha, tmp_path)
    assert artifact.rebuilt and artifact.reason.startswith(reason)
    assert verify_onnx(path.read_bytes(), SPEC, sha) is None
    assert artifact.data == path.read_bytes()
    assert_runs_like_torch(artifact, module)


def test_export_of_another_model_is_not_used(
    module_and_sha: tuple[nn.Module, str], tmp_path: Path
) -> None:
    module, sha = module_and_sha
    unet = get_spec("unet", "small")
    onnx_path(SPEC, tmp_path).write_bytes(export_onnx(unet.build(), unet, sha))
    artifact = ensure_onnx(module, SPEC, sha, tmp_path)
    assert artifact.rebuilt
    assert artifact.reason == "corrupt: made for 'unet/small', not 'hrnet/small'"


def test_random_weights_are_exported_in_memory_only(
    module_and_sha: tuple[nn.Module, str], tmp_path: Path
) -> None:
    module, _ = module_and_sha
    artifact = ensure_onnx(module, SPEC, None, tmp_path)
    assert artifact.path is None and artifact.rebuilt
    assert list(tmp_path.iterdir()) == []
    assert_runs_like_torch(artifact, module)


def test_unusable_cache_directory_falls_back_to_an_in_memory_export(
    module_and_sha: tuple[nn.Module, str], tmp_path: Path
) -> None:
    module, sha = module_and_sha
    (tmp_path / "a-file").write_text("not a directory")
    artifact = ensure_onnx(module, SPEC, sha, tmp_path / "a-file" / "onnx")
    assert artifact.path is None and artifact.reason.startswith("cache not usable")
    assert verify_onnx(artifact.data, SPEC, sha) is None


def test_export_leaves_a_gpu_or_half_module_untouched(tmp_path: Path) -> None:
    module = SPEC.build().eval().half()
    export_onnx(module, SPEC, "x" * 64)
    assert next(module.parameters()).dtype == torch.float16
