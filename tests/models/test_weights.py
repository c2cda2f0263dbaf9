from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.errors import WeightsError
from models.registry import REGISTRY, get_spec
from models.weights import (
    DEFAULT_WEIGHTS_DIR,
    import_checkpoint,
    load_weights,
    read_sidecar,
    save_weights,
    sha256_file,
    weight_paths,
)

SPEC = get_spec("hrnet", "small")


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    model = SPEC.build()
    paths = save_weights(model, SPEC, tmp_path, validation={"iou": 0.9}, dtype=torch.float32)
    sidecar = read_sidecar(paths)
    assert sidecar["sha256"] == sha256_file(paths.tensors)
    assert sidecar["validation"] == {"iou": 0.9}
    fresh = SPEC.build()
    load_weights(fresh, SPEC, tmp_path)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weight file missing"):
        load_weights(SPEC.build(), SPEC, tmp_path)


def test_corrupt_file_fails_checksum(tmp_path: Path) -> None:
    paths = save_weights(SPEC.build(), SPEC, tmp_path)
    data = bytearray(paths.tensors.read_bytes())
    data[-1] ^= 0xFF
    paths.tensors.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_weights(SPEC.build(), SPEC, tmp_path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    unet = get_spec("unet", "small")
    paths = save_weights(unet.build(), unet, tmp_path)
    # pretend they are hrnet's: rename files and patch the sidecar's identity (checksum intact)
    target = weight_paths(SPEC, tmp_path)
    paths.tensors.rename(target.tensors)
    sidecar = json.loads(paths.sidecar.read_text())
    sidecar.update(name="hrnet", variant="small")
    target.sidecar.write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="does not fit architecture"):
        load_weights(SPEC.build(), SPEC, tmp_path)


def test_sidecar_for_another_variant_is_refused(tmp_path: Path) -> None:
    paths = save_weights(SPEC.build(), SPEC, tmp_path)
    sidecar = json.loads(paths.sidecar.read_text())
    sidecar["variant"] = "full"
    paths.sidecar.write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="variant"):
        load_weights(SPEC.build(), SPEC, tmp_path)


@pytest.mark.parametrize("layout", ["bare", "training", "ddp"])
def test_import_checkpoint_drops_optimizer_state(tmp_path: Path, layout: str) -> None:
    model = SPEC.build()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 1, 64, 64)).mean().backward()
    opt.step()
    state = model.state_dict()
    if layout == "bare":
        ckpt: object = state
    elif layout == "training":
        ckpt = {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": opt.state_dict()}
    else:
        ckpt = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    src = tmp_path / "ckpt.pt"
    torch.save(ckpt, src)
    paths = import_checkpoint(src, SPEC, tmp_path / "out")
    tensors = load_file(str(paths.tensors))
    assert set(tensors) == set(state)  # model tensors only: no optimizer state
    assert paths.tensors.stat().st_size < src.stat().st_size or layout != "training"
    fresh = SPEC.build()
    load_weights(fresh, SPEC, tmp_path / "out")
    assert torch.equal(fresh.state_dict()["head.3.weight"], state["head.3.weight"])


def test_import_refuses_checkpoint_of_another_model(tmp_path: Path) -> None:
    src = tmp_path / "unet.pt"
    torch.save(get_spec("unet", "small").build().state_dict(), src)
    with pytest.raises(WeightsError, match="does not fit hrnet/small"):
        import_checkpoint(src, SPEC, tmp_path)
    src.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        import_checkpoint(src, SPEC, tmp_path)


@pytest.mark.parametrize("key", [k for k in sorted(REGISTRY) if k[1] == "small"])
def test_committed_demo_weights_load_verified_and_are_small(key: tuple[str, str]) -> None:
    spec = get_spec(*key)
    paths = weight_paths(spec, DEFAULT_WEIGHTS_DIR)
    if not paths.tensors.exists():
        pytest.fail(f"demo weights for {spec.key} are not committed: {paths.tensors}")
    sidecar = load_weights(spec.build(), spec, DEFAULT_WEIGHTS_DIR)
    assert paths.tensors.stat().st_size < 20 * 1024 * 1024
    validation = sidecar["validation"]
    assert validation.get("iou", validation.get("iou_mean", 0.0)) >= 0.85
    assert sidecar["training"]["source"].startswith(
        ("python -m ml_service.train ", "python -m ml_service.training.train")
    )
