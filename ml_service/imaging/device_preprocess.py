"""Preprocessing on the device: ``ml_service.imaging.preprocess``'s path in torch ops.

With ``ML_DEVICE_PREPROCESS`` on, the CPU stage only decodes and plans
(``ml_service.serving.cpu_stages.decode_and_plan``: the ``Restore`` from the image's shape) and the
decoded pixels go to the device as they are (uint8 or uint16: a quarter or half of the bytes of
the float32 input); grey conversion, percentile normalisation and letterbox or tiling happen
there, and the model inputs never leave the device. :func:`prepare_on_device` gives the inputs
:func:`ml_service.imaging.preprocess.prepare` gives, within :data:`INPUT_TOLERANCE`:

- grey: Rec. 601 luminance in float32 for colour (cv2 rounds its float sums differently: ≤ 2
  ulp, measured); grey images as they are;
- percentiles: numpy's ``linear`` method, computed as ``np.percentile`` does (virtual index,
  the two order statistics, their difference in float32, the lerp in float64): bit-identical.
  Order statistics come from a histogram (``bincount``) for uint8/uint16 data, from a sort
  otherwise;
- normalisation: the same float32 operations as the CPU: bit-identical;
- letterbox shrink: area interpolation as ``cv2.INTER_AREA`` (each output pixel the mean of
  the input area it covers, partial pixels weighted by their covered fraction), along rows then
  columns; cv2 accumulates in another order (≤ 1e-6 apart, measured);
- tiles: the same slices of the same padded image: bit-identical.

Pure functions: tensor in, tensor out, on the tensor's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ml_service.imaging.preprocess import (
    NORMALIZED_RANGE,
    PAD_VALUE,
    Letterbox,
    Restore,
    TileGrid,
    check_image,
)

INPUT_TOLERANCE = 1e-5
"""Largest difference from the CPU path's model inputs (normalised units, range −0.5..1.5);
measured on the CPU ≤ 3e-7, from colour and from shrinking letterboxes (float rounding)."""

_LUMA = (0.299, 0.587, 0.114)
_HISTOGRAM_BINS = {torch.uint8: 256, torch.uint16: 65536}


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """``(H, W)``/``(H, W, 1)`` as they are; ``(H, W, 3)`` RGB / ``(H, W, 4)`` RGBA →
    float32 ``(H, W)`` Rec. 601 luminance (alpha dropped), as ``preprocess.to_grey_float``.
    Grey keeps its dtype (the percentiles of integer data are taken from a histogram)."""
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 2:
        return image
    r, g, b = (plane.to(torch.float32) for plane in image.permute(2, 0, 1)[:3].contiguous())
    return r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]


def _virtual_index(n: int, q: float) -> tuple[int, int, float]:
    """numpy's ``linear`` method: the two order statistics (0-based) around the virtual index
    ``(n - 1) * q / 100`` and the weight of the second, as ``np.percentile`` computes them."""
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    below = math.floor(virtual)
    return below, below + 1, virtual - below


def _order_statistics(grey: torch.Tensor, ranks: list[int]) -> torch.Tensor:
    """The ``ranks``-th smallest values (0-based) of ``grey`` as float32 (the CPU path takes
    percentiles of the float32 grey image)."""
    flat = grey.reshape(-1)
    bins = _HISTOGRAM_BINS.get(grey.dtype)
    if bins is not None:
        counts = torch.bincount(flat.to(torch.int32), minlength=bins).cumsum(0)
        wanted = torch.tensor(ranks, dtype=counts.dtype, device=grey.device)
        return torch.searchsorted(counts, wanted, right=True).to(torch.float32)
    ordered = flat.to(torch.float32).sort().values
    return ordered[torch.tensor(ranks, device=grey.device)]


def percentiles(grey: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``(2,)`` float64: the ``low`` and ``high`` percentiles of ``grey``, as ``np.percentile``
    (method ``linear``) gives them for its float32 values, to the bit."""
    n = grey.numel()
    (b0, a0, g0), (b1, a1, g1) = _virtual_index(n, low), _virtual_index(n, high)
    stats = _order_statistics(grey, [b0, a0, b1, a1]).reshape(2, 2)
    below, above = stats[:, 0], stats[:, 1]
    weight = torch.tensor([g0, g1], dtype=torch.float64, device=grey.device)
    diff = (above - below).to(torch.float64)  # numpy's _lerp: the difference in float32
    below, above = below.to(torch.float64), above.to(torch.float64)
    # from the nearer end, so weight 1 gives ``above`` exactly
    return torch.where(weight >= 0.5, above - diff * (1 - weight), below + diff * weight)


def normalize_percentile(grey: torch.Tensor, low: float = 1.0, high: float = 99.8) -> torch.Tensor:
    """float32 ``(x - p_low) / (p_high - p_low)`` clipped to ``NORMALIZED_RANGE``; zeros for a
    constant image: ``preprocess.normalize_percentile`` on the device (no host round trip)."""
    p = percentiles(grey, low, high)
    span = p[1] - p[0]
    scale = torch.where(span > 0, 1.0 / span, torch.zeros_like(span)).to(torch.float32)
    out = (grey.to(torch.float32) - p[0].to(torch.float32)) * scale
    return out.clamp_(*NORMALIZED_RANGE)


def area_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrinking ``n_in`` samples to ``n_out`` by area: output ``i`` is the mean of the input
    cell ``[i·s, (i+1)·s)``, ``s = n_in / n_out``, each input pixel weighted by the fraction of
    it the cell covers (``cv2.INTER_AREA`` when shrinking). Returns ``(n_out, k)`` int64 input
    indices and float32 weights (rows sum to 1), ``k = ceil(s) + 1``."""
    scale = n_in / n_out
    start = torch.arange(n_out, dtype=torch.float64) * scale
    index = start.floor()[:, None] + torch.arange(math.ceil(scale) + 1, dtype=torch.float64)
    lo = torch.maximum(start[:, None], index)
    hi = torch.minimum(start[:, None] + scale, index + 1)
    weight = (hi - lo).clamp_(min=0).masked_fill_(index >= n_in, 0)
    weight /= weight.sum(1, keepdim=True)
    index = index.clamp_(max=n_in - 1).to(torch.int64)
    return index.to(device), weight.to(torch.float32).to(device)


def resize_area(grey: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """float32 ``(H, W)`` → ``shape`` (each side ≤ the input's) with :func:`area_taps` along
    rows, then columns: gathers and float32 sums (no matmul, so no TF32 rounding on a GPU)."""
    rows, row_w = area_taps(grey.shape[0], shape[0], grey.device)
    cols, col_w = area_taps(grey.shape[1], shape[1], grey.device)
    tall = (grey[rows] * row_w[:, :, None]).sum(1)  # (h, W)
    return (tall[:, cols] * col_w).sum(2)  # (h, w)


def letterbox(grey: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """``(size, size)`` float32: ``grey`` (normalised ``(H, W)``) shrunk with area interpolation
    to ``lb.scaled_shape`` at the top-left, ``PAD_VALUE`` elsewhere (``preprocess.letterbox``)."""
    scaled_h, scaled_w = lb.scaled_shape
    src = grey if lb.scaled_shape == lb.original_shape else resize_area(grey, lb.scaled_shape)
    boxed = torch.full((lb.size, lb.size), PAD_VALUE, dtype=torch.float32, device=grey.device)
    boxed[:scaled_h, :scaled_w] = src
    return boxed


def tile(grey: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """``(N, size, size)`` float32 tiles of ``grey`` at ``grid``'s origins (``preprocess.tile``)."""
    height, width = grid.image_shape
    size = grid.size
    padded = torch.full(
        (max(height, size), max(width, size)), PAD_VALUE, dtype=torch.float32, device=grey.device
    )
    padded[:height, :width] = grey
    return torch.stack([padded[y : y + size, x : x + size] for y, x in grid.origins])


def prepare_on_device(image: np.ndarray, restore: Restore, device: torch.device) -> torch.Tensor:
    """A decoded image → its ``(N, size, size)`` float32 model inputs on ``device``, as
    ``preprocess.prepare`` makes them (within :data:`INPUT_TOLERANCE`) for the transform
    ``restore`` holds (``preprocess.plan_restore`` of the image's shape).

    The pixels are copied as they are (uint8 stays uint8). On CUDA this returns once the inputs
    are ready, so another thread's stream may read them.

    Raises:
        InvalidImage: not an image ``preprocess.to_grey_float`` would take.
    """
    check_image(image)
    native = image.dtype.newbyteorder("=")  # torch takes native byte order only
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=native)).to(device)
    grey = normalize_percentile(to_grey(pixels))
    transform = restore.transform
    if isinstance(transform, Letterbox):
        inputs = letterbox(grey, transform)[None]
    else:
        inputs = tile(grey, transform)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return inputs


def use_device_preprocess(
    setting: str, runtime: str, device: torch.device, takes_tensors: bool
) -> tuple[bool, str]:
    """Whether a model behind ``runtime`` (its name) on ``device`` preprocesses on the device,
    and why. ``ML_DEVICE_PREPROCESS=on``/``off`` decide for a runtime that ``takes_tensors``
    already on its device (torch); ``auto`` is on for CUDA devices only (on the CPU, torch ops
    would only move the work out of the CPU worker processes into the engine's). Other
    runtimes take host arrays: never."""
    if not takes_tensors:
        return False, f"the {runtime} runtime takes host arrays"
    if setting != "auto":
        return setting == "on", f"ML_DEVICE_PREPROCESS={setting}"
    on = device.type == "cuda"
    return on, f"auto: {'a CUDA device' if on else f'{device.type}, not CUDA'}"
