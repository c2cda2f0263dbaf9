"""Preprocessing: decoded image -> batch of model inputs, and model outputs -> full-size map.

All functions are pure (array in, array out). The path an image takes:

1. :func:`to_grey_float` - RGB/RGBA to luminance, float32 ``(H, W)``;
2. :func:`normalize_percentile` - low/high percentiles to 0/1, the same for 8- and 16-bit data;
3. :func:`plan_input` picks one of (:func:`plan_restore` gives the geometry from the shape alone)
   - :func:`letterbox` - images not much larger than the model input are shrunk (never
     enlarged) to fit one ``size x size`` input, padded right/bottom with 0;
     :func:`unletterbox` inverts it;
   - :func:`tile` - larger images are cut at native resolution into overlapping
     ``size x size`` tiles; :func:`untile` stitches per-tile outputs so each pixel comes from the
     one tile whose central region holds it.

:func:`prepare` runs the whole path and returns the batch plus a :class:`Restore` that maps the
model's outputs back to an ``(H, W)`` map in original pixel coordinates.

Errors: a bad image shape raises :class:`~ml_service.errors.InvalidImage`, a bad ``size``,
``overlap`` or percentile :class:`~ml_service.errors.InvalidParameters`. Model outputs of the
wrong shape handed to the inverse functions are a bug in the caller and raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import cv2
import numpy as np

from ml_service.errors import InvalidImage, InvalidParameters

NORMALIZED_RANGE: tuple[float, float] = (-0.5, 1.5)
"""Normalised values are clipped to this range, so hot pixels cannot dominate the input."""

PAD_VALUE = 0.0
"""Value of padding added by :func:`letterbox` and :func:`tile`."""


def to_grey_float(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image to grey float32.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA array of
            any real dtype (typically uint8, uint16 or float32).

    Returns:
        ``(H, W)`` float32: grey passes through unchanged in value; colour becomes Rec. 601
        luminance ``0.299 R + 0.587 G + 0.114 B`` (alpha is dropped), in the input's units.

    Raises:
        InvalidImage: any other shape, or a non-real dtype.
    """
    check_image(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image.astype(np.float32)
    code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), code)


def check_image(image: np.ndarray) -> None:
    """Raise :class:`InvalidImage` unless ``image`` is a non-empty real ``(H, W)``,
    ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array (what :func:`to_grey_float` takes)."""
    if image.dtype.kind not in "uif" or image.size == 0:
        raise InvalidImage(f"expected a non-empty real-valued image, got {image.dtype}")
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        raise InvalidImage(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {image.shape}")


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of an image to 0/1.

    The mapping is affine in the pixel values, so it does not depend on the bit depth: 8-bit
    data and 16-bit data holding the same picture in 0..4095 or 30000..31000 give the same
    result.

    Args:
        image: ``(H, W)`` (or any shape) array of real values, e.g. uint8, uint16, float32.
        low: lower percentile, in ``[0, 100)``.
        high: upper percentile, in ``(low, 100]``.

    Returns:
        float32 array of the input's shape, ``(x - p_low) / (p_high - p_low)`` clipped to
        :data:`NORMALIZED_RANGE`; all zeros when ``p_high == p_low`` (a constant image).

    Raises:
        InvalidParameters: percentiles out of range.
        InvalidImage: empty or non-real input.
    """
    if not 0.0 <= low < high <= 100.0:
        raise InvalidParameters(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    if image.dtype.kind not in "uif" or image.size == 0:
        raise InvalidImage(f"expected a non-empty real-valued image, got {image.dtype}")
    p_low, p_high = np.percentile(image, [low, high])
    span = float(p_high) - float(p_low)
    if not span > 0.0:
        return np.zeros(image.shape, np.float32)
    out = image.astype(np.float32)
    out -= np.float32(p_low)
    out *= np.float32(1.0 / span)
    return np.clip(out, *NORMALIZED_RANGE, out=out)


# --- letterbox ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How :func:`letterbox` placed an image into a square input.

    Attributes:
        original_shape: ``(H, W)`` of the image before scaling.
        scale: factor applied to the longest side (``<= 1``; 1 when the image already fits).
        scaled_shape: ``(h, w)`` of the scaled image, placed at the top-left of the input.
        size: side of the square input.
    """

    original_shape: tuple[int, int]
    scale: float
    scaled_shape: tuple[int, int]
    size: int


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Fit an image into a ``size x size`` square, shrinking it if needed, padding right/bottom.

    Args:
        image: ``(H, W)`` real array (float32 after normalisation).
        size: side of the square model input, ``>= 1``.

    Returns:
        ``(boxed, lb)``: ``boxed`` ``(size, size)`` float32 with the image at the top-left
        (scaled by ``min(1, size / max(H, W))`` with area interpolation, aspect kept) and
        :data:`PAD_VALUE` elsewhere; ``lb`` records the transform for :func:`unletterbox`.
    """
    lb = letterbox_geometry(_check_2d(image), size)
    scaled_h, scaled_w = lb.scaled_shape
    src: np.ndarray = image.astype(np.float32, copy=False)
    if lb.scaled_shape != lb.original_shape:
        src = cv2.resize(src, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
    boxed = np.full((size, size), PAD_VALUE, np.float32)
    boxed[:scaled_h, :scaled_w] = src
    return boxed, lb


def letterbox_geometry(shape: tuple[int, int], size: int) -> Letterbox:
    """Where :func:`letterbox` puts an ``(H, W)`` image in a ``size x size`` input."""
    _check_size(size)
    height, width = shape
    scale = min(1.0, size / max(height, width))
    scaled_h = min(size, max(1, round(height * scale)))
    scaled_w = min(size, max(1, round(width * scale)))
    return Letterbox((height, width), scale, (scaled_h, scaled_w), size)


def unletterbox(prob: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Invert :func:`letterbox` on a model output.

    Args:
        prob: ``(size, size)`` real array (e.g. float32 probabilities) in letterboxed frame.
        lb: the transform :func:`letterbox` returned.

    Returns:
        ``(H, W)`` float32: the padding cropped off and the rest resized back to the original
        shape with bilinear interpolation.

    Raises:
        ValueError: ``prob`` is not ``(size, size)``.
    """
    if prob.shape != (lb.size, lb.size):
        raise ValueError(f"expected a ({lb.size}, {lb.size}) output, got {prob.shape}")
    scaled_h, scaled_w = lb.scaled_shape
    height, width = lb.original_shape
    crop = np.ascontiguousarray(prob[:scaled_h, :scaled_w], dtype=np.float32)
    if (scaled_h, scaled_w) == (height, width):
        return crop
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


# --- tiling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileGrid:
    """Where :func:`tile` cut its tiles.

    Tiles are ordered row-major: tile ``i`` has origin ``(ys[i // len(xs)], xs[i % len(xs)])``
    in the image (padded with :data:`PAD_VALUE` on the right/bottom where it is smaller than a
    tile).

    Attributes:
        image_shape: ``(H, W)`` of the tiled image.
        size: tile side.
        overlap: nominal overlap between neighbouring tiles (the last row/column of tiles is
            shifted back to end at the image border, so it may overlap more).
        ys: row origins of the tile rows.
        xs: column origins of the tile columns.
    """

    image_shape: tuple[int, int]
    size: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        """Number of tiles, ``len(ys) * len(xs)``."""
        return len(self.ys) * len(self.xs)

    @property
    def origins(self) -> list[tuple[int, int]]:
        """``(y, x)`` origin of each tile, in tile order."""
        return [(y, x) for y in self.ys for x in self.xs]


def _tile_starts(length: int, size: int, stride: int) -> tuple[int, ...]:
    """Origins along one axis: every ``stride``, the last one moved back to end at the border."""
    if length <= size:
        return (0,)
    n = -(-(length - size) // stride) + 1
    return tuple(min(i * stride, length - size) for i in range(n))


def _ownership(starts: tuple[int, ...], size: int, length: int) -> list[tuple[int, int]]:
    """Half-open range each tile owns along one axis: split at the middle of each overlap."""
    cuts = [0] + [(a + size + b) // 2 for a, b in zip(starts, starts[1:], strict=False)]
    cuts.append(length)
    return list(zip(cuts, cuts[1:], strict=False))


def tile(image: np.ndarray, size: int, overlap: int) -> tuple[np.ndarray, TileGrid]:
    """Cut an image into overlapping square tiles at native resolution.

    Tiles start every ``size - overlap`` pixels; the last tile of a row/column is moved back so
    it ends at the image border. An image side shorter than ``size`` gets one tile, padded on the
    right/bottom with :data:`PAD_VALUE`.

    Args:
        image: ``(H, W)`` real array, any ``H, W >= 1``.
        size: tile side, ``>= 1``.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < size``. Each pixel's
            output is taken from a tile where it lies at least about ``overlap / 2`` pixels from
            an inner tile edge, so ``overlap`` should exceed twice the model's edge effects.

    Returns:
        ``(tiles, grid)``: ``tiles`` ``(N, size, size)`` float32, ``grid`` for :func:`untile`.
    """
    grid = tile_grid(_check_2d(image), size, overlap)
    height, width = grid.image_shape
    padded = np.full((max(height, size), max(width, size)), PAD_VALUE, np.float32)
    padded[:height, :width] = image
    tiles = np.empty((grid.n_tiles, size, size), np.float32)
    for i, (y, x) in enumerate(grid.origins):
        tiles[i] = padded[y : y + size, x : x + size]
    return tiles, grid


def tile_grid(shape: tuple[int, int], size: int, overlap: int) -> TileGrid:
    """Where :func:`tile` cuts an ``(H, W)`` image (arguments as there)."""
    _check_size(size)
    if isinstance(overlap, bool) or not isinstance(overlap, Integral) or not 0 <= overlap < size:
        raise InvalidParameters(f"overlap must be in [0, size={size}), got {overlap}")
    height, width = shape
    stride = size - overlap
    ys = _tile_starts(height, size, stride)
    xs = _tile_starts(width, size, stride)
    return TileGrid((height, width), size, overlap, ys, xs)


def untile(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Stitch per-tile outputs back into one map; the inverse of :func:`tile`.

    Each output pixel is copied from exactly one tile: the one whose central region contains
    it (neighbouring tiles split their overlap in the middle). Objects crossing a tile border
    are therefore seen whole by the tile that supplies their pixels, and postprocessing the
    stitched map finds each object once.

    Args:
        tiles: ``(N, size, size)`` real array, one output per tile in :func:`tile`'s order.
        grid: the :class:`TileGrid` :func:`tile` returned.

    Returns:
        ``(H, W)`` float32 map; ``untile(tile(x)[0], grid) == x`` exactly.

    Raises:
        ValueError: ``tiles`` does not match ``grid``.
    """
    expected = (grid.n_tiles, grid.size, grid.size)
    if tiles.shape != expected:
        raise ValueError(f"expected tiles of shape {expected}, got {tiles.shape}")
    height, width = grid.image_shape
    out = np.empty((height, width), np.float32)
    rows = _ownership(grid.ys, grid.size, height)
    cols = _ownership(grid.xs, grid.size, width)
    for i, (y, (y0, y1)) in enumerate(zip(grid.ys, rows, strict=True)):
        for j, (x, (x0, x1)) in enumerate(zip(grid.xs, cols, strict=True)):
            out[y0:y1, x0:x1] = tiles[i * len(grid.xs) + j, y0 - y : y1 - y, x0 - x : x1 - x]
    return out


# --- planning ----------------------------------------------------------------------------------


def plan_input(shape: tuple[int, int], size: int, tile_factor: float = 1.5) -> str:
    """Choose how an image of ``shape`` is fed to a model with ``size x size`` inputs.

    Returns:
        ``"letterbox"`` when ``max(H, W) <= size * tile_factor`` (one input, shrunk at most by
        ``tile_factor``), else ``"tile"`` (native resolution, several inputs).
    """
    return "letterbox" if max(shape) <= size * tile_factor else "tile"


@dataclass(frozen=True)
class Restore:
    """Maps a batch of model outputs back to the original image frame.

    Attributes:
        transform: the :class:`Letterbox` or :class:`TileGrid` that produced the batch.
    """

    transform: Letterbox | TileGrid

    @property
    def plan(self) -> str:
        """``"letterbox"`` or ``"tile"``."""
        return "letterbox" if isinstance(self.transform, Letterbox) else "tile"

    @property
    def n_inputs(self) -> int:
        """Number of model inputs (and so of outputs expected by :meth:`restore`)."""
        return 1 if isinstance(self.transform, Letterbox) else self.transform.n_tiles

    def restore(self, outputs: np.ndarray) -> np.ndarray:
        """Map ``(N, size, size)`` model outputs to an ``(H, W)`` float32 map.

        Raises:
            ValueError: ``outputs`` does not have the shape of the batch :func:`prepare` made.
        """
        if isinstance(self.transform, Letterbox):
            size = self.transform.size
            if outputs.shape != (1, size, size):
                raise ValueError(
                    f"expected outputs of shape (1, {size}, {size}), got {outputs.shape}"
                )
            return unletterbox(outputs[0], self.transform)
        return untile(outputs, self.transform)


def plan_restore(
    shape: tuple[int, int], size: int, overlap: int, tile_factor: float = 1.5
) -> Restore:
    """The :class:`Restore` :func:`prepare` returns for an ``(H, W)`` image, from its shape alone
    (for preprocessing elsewhere, e.g. on the device: ``ml_service.imaging.device_preprocess``)."""
    if plan_input(shape, size, tile_factor) == "letterbox":
        return Restore(letterbox_geometry(shape, size))
    return Restore(tile_grid(shape, size, overlap))


def prepare(
    image: np.ndarray, size: int, overlap: int, tile_factor: float = 1.5
) -> tuple[np.ndarray, Restore]:
    """Turn a decoded image into model inputs: grey, normalise, then letterbox or tile.

    Args:
        image: decoded ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array (uint8/uint16/float32).
        size: side of the square model input.
        overlap: tile overlap in pixels, used when the image is tiled.
        tile_factor: see :func:`plan_input`.

    Returns:
        ``(batch, restore)``: ``batch`` ``(N, size, size)`` float32 (``N = 1`` when
        letterboxed) and the :class:`Restore` that maps the model's ``(N, size, size)``
        outputs back to ``(H, W)``.
    """
    grey = normalize_percentile(to_grey_float(image))
    if plan_input((grey.shape[0], grey.shape[1]), size, tile_factor) == "letterbox":
        boxed, lb = letterbox(grey, size)
        return boxed[None], Restore(lb)
    tiles, grid = tile(grey, size, overlap)
    return tiles, Restore(grid)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise InvalidParameters(f"size must be a positive integer, got {size!r}")


def _check_2d(image: np.ndarray) -> tuple[int, int]:
    if image.ndim != 2 or image.size == 0:
        raise InvalidImage(f"expected a non-empty (H, W) image, got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])
