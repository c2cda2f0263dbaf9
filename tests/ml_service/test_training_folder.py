"""Reading a folder of annotated images for training: the naming rule, and every kind of bad
data refused with an error that names the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from ml_service.training.folder import DataError, find_pairs, fingerprint, load_pairs, split

SIZE = 48


def _labels(seed: int, size: int = SIZE) -> np.ndarray:
    labels = np.zeros((size, size), np.uint16)
    rng = np.random.default_rng(seed)
    for i in range(1, 4):
        c = rng.integers(8, size - 8, 2)
        cv2.circle(labels, (int(c[0]), int(c[1])), 5, i, -1)
    return labels


def _image(labels: np.ndarray) -> np.ndarray:
    return np.where(labels > 0, 200, 20).astype(np.uint8)


def write_pair(folder: Path, name: str, seed: int, *, tiff_mask: bool = False) -> None:
    labels = _labels(seed)
    cv2.imwrite(str(folder / f"{name}.png"), _image(labels))
    if tiff_mask:
        tifffile.imwrite(folder / f"{name}_masks.tif", labels.astype(np.int32))
    else:
        cv2.imwrite(str(folder / f"{name}_masks.png"), labels)


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    write_pair(tmp_path, "a", 1)
    write_pair(tmp_path, "b", 2, tiff_mask=True)
    write_pair(tmp_path, "c", 3)
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_pairs_follow_the_naming_rule_and_read_as_the_engine_reads(good: Path) -> None:
    assert [(i.name, m.name) for i, m in find_pairs(good)] == [
        ("a.png", "a_masks.png"),
        ("b.png", "b_masks.tif"),
        ("c.png", "c_masks.png"),
    ]
    pairs = load_pairs(good)
    assert [p.name for p in pairs] == ["a", "b", "c"]
    for p in pairs:
        assert p.image.dtype == np.float32 and p.image.shape == (SIZE, SIZE)
        assert p.labels.dtype == np.int32 and p.labels.max() >= 1
    train, val = split(pairs, 0.2, seed=0)
    assert len(val) == 1 and len(train) == 2
    assert {p.name for p in train + val} == {"a", "b", "c"}


def test_fingerprint_follows_file_contents(good: Path) -> None:
    before = fingerprint(good)
    assert fingerprint(good) == before
    write_pair(good, "a", 9)
    assert fingerprint(good) != before


def test_binary_mask_becomes_connected_components(tmp_path: Path) -> None:
    write_pair(tmp_path, "a", 1)
    write_pair(tmp_path, "b", 2)
    binary = (_labels(5) > 0).astype(np.uint8) * 255
    cv2.imwrite(str(tmp_path / "b_masks.png"), binary)
    pairs = load_pairs(tmp_path)
    assert pairs[1].labels.max() >= 2


def _error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        load_pairs(folder)
    return str(info.value)


def test_image_without_mask(good: Path) -> None:
    cv2.imwrite(str(good / "d.png"), _image(_labels(4)))
    assert "d.png: image without a mask (expected d_masks.png" in _error(good)


def test_mask_without_image(good: Path) -> None:
    cv2.imwrite(str(good / "e_masks.png"), _labels(4))
    assert "e_masks.png: mask without an image" in _error(good)


def test_size_mismatch(good: Path) -> None:
    cv2.imwrite(str(good / "b_masks.png"), _labels(2, size=SIZE + 8))
    (good / "b_masks.tif").unlink()
    message = _error(good)
    assert "b_masks.png: mask is 56x56 px but its image b.png is 48x48 px" in message


def test_empty_mask(good: Path) -> None:
    cv2.imwrite(str(good / "c_masks.png"), np.zeros((SIZE, SIZE), np.uint16))
    assert "c_masks.png: mask has no labelled object" in _error(good)


def test_unreadable_image(good: Path) -> None:
    (good / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    message = _error(good)
    assert "a.png: cannot read the image" in message


def test_unreadable_mask(good: Path) -> None:
    (good / "b_masks.tif").write_bytes(b"II*\x00garbage")
    assert "b_masks.tif: cannot read the mask" in _error(good)


def test_colour_mask_is_not_a_label_image(good: Path) -> None:
    cv2.imwrite(str(good / "a_masks.png"), np.dstack([_labels(1).astype(np.uint8)] * 3))
    assert "a_masks.png: a mask must be a one-channel label image" in _error(good)


def test_same_name_twice(good: Path) -> None:
    tifffile.imwrite(good / "a.tif", _image(_labels(1)))
    assert "has the same name" in _error(good)


def test_too_few_images_for_a_validation_split(tmp_path: Path) -> None:
    write_pair(tmp_path, "only", 1)
    message = _error(tmp_path)
    assert str(tmp_path) in message and "1 image/mask pair(s); at least 2" in message


def test_missing_folder(tmp_path: Path) -> None:
    assert "not a folder" in _error(tmp_path / "nope")
