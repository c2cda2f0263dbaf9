"""A folder of your own annotated images, checked and read for training.

Naming rule (as Cellpose names its training data): every image ``NAME.png``, ``NAME.tif``,
``NAME.tiff``, ``NAME.jpg`` or ``NAME.jpeg`` has its instance label mask beside it, named
``NAME_masks.png``, ``NAME_masks.tif`` or ``NAME_masks.tiff``. A mask is a one-channel integer
image of the image's size: 0 is background, each object has its own value (8- or 16-bit PNG,
any integer TIFF). A mask whose only non-zero value is one number is read as a binary mask and
its 8-connected components become the objects. Files of other types and hidden files are
ignored; subfolders are not searched.

Images are decoded exactly as the engine decodes uploads, turned grey and percentile-normalised
as the engine does. Every problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from scipy import ndimage as ndi

from ml_service.errors import EngineError
from ml_service.imaging.imageio import decode_image
from ml_service.imaging.preprocess import normalize_percentile, to_grey_float

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
MASK_TAG = "_masks"
MIN_PAIRS = 2
"""Fewest image/mask pairs a folder must hold: one to train on and one to validate on."""
MAX_PIXELS = 64_000_000


class DataError(ValueError):
    """The training data is unusable; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Pair:
    """One annotated image: ``image`` (H, W) float32 normalised, ``labels`` (H, W) int32."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``folder`` by the naming rule, sorted by name.

    Raises:
        DataError: the folder is missing, an image has no mask, a mask has no image, a name is
            taken twice, or there are fewer than :data:`MIN_PAIRS` pairs.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.stem.endswith(MASK_TAG) and suffix in MASK_SUFFIXES:
            table, stem = masks, path.stem.removesuffix(MASK_TAG)
        elif suffix in IMAGE_SUFFIXES and not path.stem.endswith(MASK_TAG):
            table, stem = images, path.stem
        else:
            log.debug("ignoring %s", path)
            continue
        if stem in table:
            raise DataError(f"{path}: {table[stem].name} has the same name; keep one of them")
        table[stem] = path
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(f"{path}: mask without an image (expected {stem}.png, .tif or .jpg)")
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"{path}: image without a mask (expected {stem}{MASK_TAG}.png or .tif)")
    if len(images) < MIN_PAIRS:
        raise DataError(
            f"{folder}: {len(images)} image/mask pair(s); at least {MIN_PAIRS} are needed "
            "(one to train on, one to validate on)"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def read_image(path: Path) -> np.ndarray:
    """``(H, W)`` float32 normalised grey image, as the engine prepares an upload."""
    try:
        raw = decode_image(path.read_bytes(), MAX_PIXELS)
        return normalize_percentile(to_grey_float(raw))
    except (OSError, EngineError) as exc:
        raise DataError(f"{path}: cannot read the image: {exc}") from None


def _read_mask_pixels(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".png":
            data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        else:
            data = tifffile.imread(path)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
        raise DataError(f"{path}: cannot read the mask: {exc}") from None
    if data is None or np.asarray(data).size == 0:
        raise DataError(f"{path}: cannot read the mask: no pixels decoded")
    return np.asarray(data)


def read_mask(path: Path) -> np.ndarray:
    """``(H, W)`` int32 instance labels from a label image (see the module's naming rule)."""
    data = np.squeeze(_read_mask_pixels(path))
    if data.ndim != 2:
        raise DataError(f"{path}: a mask must be a one-channel label image, got shape {data.shape}")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise DataError(f"{path}: mask values must be whole numbers (instance labels)")
    elif data.dtype.kind not in "uib":
        raise DataError(f"{path}: mask of type {data.dtype} is not a label image")
    if data.min() < 0 or data.max() > np.iinfo(np.int32).max:
        raise DataError(f"{path}: mask values must be labels from 0 to 2^31-1")
    labels = data.astype(np.int32)
    values = np.unique(labels)
    values = values[values != 0]
    if values.size == 0:
        raise DataError(f"{path}: mask has no labelled object (every pixel is 0)")
    if values.size == 1:
        labels = np.asarray(ndi.label(labels > 0, structure=np.ones((3, 3)))[0], np.int32)
        log.info("%s: one label value, read as a binary mask (%d objects)", path, labels.max())
    return labels


def load_pairs(folder: Path) -> list[Pair]:
    """Every annotated image of ``folder``, checked.

    Raises:
        DataError: see :func:`find_pairs`, plus an unreadable file, a mask that is not a label
            image, a mask with no object, or a mask whose size differs from its image's.
    """
    pairs = []
    for image_path, mask_path in find_pairs(folder):
        image = read_image(image_path)
        labels = read_mask(mask_path)
        if labels.shape != image.shape:
            raise DataError(
                f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} px but its image "
                f"{image_path.name} is {image.shape[1]}x{image.shape[0]} px"
            )
        pairs.append(Pair(image_path.stem, image, labels))
    return pairs


def fingerprint(folder: Path) -> str:
    """sha256 over the sorted names and contents of the folder's image and mask files."""
    digest = hashlib.sha256()
    for image_path, mask_path in find_pairs(folder):
        for path in (image_path, mask_path):
            digest.update(path.name.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def split(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/validation split: at least one pair on each side."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs))))
    val = [pairs[i] for i in sorted(order[:n_val])]
    train = [pairs[i] for i in sorted(order[n_val:])]
    return train, val
