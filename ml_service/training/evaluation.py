"""Segmentation metrics and a classical (non-learned) reference segmentation.

- :func:`iou` and :func:`dice` compare two binary masks.
- :func:`classical_labels` / :func:`classical_segmentation` are the textbook pipeline a learned
  model must beat: grey conversion, Gaussian smoothing, Otsu threshold with the object
  polarity detected automatically, removal of small specks and small holes, then a distance
  transform watershed seeded by ``peak_local_max`` to split touching objects.
- :func:`real_sample_images` returns real microscopy images that ship inside scikit-image's
  wheel, read from disk (never downloaded), for qualitative checks on non-synthetic data.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from scipy import ndimage as ndi
from skimage import color, exposure, feature, filters, io, measure, morphology, segmentation

POLARITIES: tuple[str, ...] = ("auto", "bright", "dark")
"""Object polarities :func:`classical_labels` accepts."""


def _binary_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of one shape (non-zero is foreground)."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs target {target.shape}")
    return pred.astype(bool), target.astype(bool)


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two binary masks.

    Args:
        pred: ``(...)`` mask, any dtype; non-zero is foreground.
        target: mask of the same shape.

    Returns:
        ``|pred & target| / |pred | target|`` in [0, 1]; 1.0 when both masks are empty.
    """
    p, t = _binary_pair(pred, target)
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & t)) / union


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient (F1 of the pixels) of two binary masks.

    Args:
        pred: ``(...)`` mask, any dtype; non-zero is foreground.
        target: mask of the same shape.

    Returns:
        ``2 |pred & target| / (|pred| + |target|)`` in [0, 1]; 1.0 when both are empty.
    """
    p, t = _binary_pair(pred, target)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def _to_grey(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)`` image of any real dtype -> ``(H, W)`` float64."""
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return np.asarray(color.rgb2gray(image[..., :3]), dtype=np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0].astype(np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D grey or (H, W, 3|4) colour image, got {image.shape}")
    return image.astype(np.float64)


def _remove_small(mask: np.ndarray, max_size: int, holes: bool) -> np.ndarray:
    """Drop objects (or fill holes) of at most ``max_size`` px, across scikit-image versions.

    scikit-image 0.26 renamed ``min_size``/``area_threshold`` (remove when smaller) to
    ``max_size`` (remove when smaller or equal).
    """
    func = morphology.remove_small_holes if holes else morphology.remove_small_objects
    try:
        return np.asarray(func(mask, max_size=max_size))
    except TypeError:  # scikit-image < 0.26
        if holes:
            return np.asarray(func(mask, area_threshold=max_size + 1))
        return np.asarray(func(mask, min_size=max_size + 1))


def classical_labels(
    image: np.ndarray,
    polarity: str = "auto",
    *,
    sigma: float = 1.0,
    min_object_size: int = 20,
    max_hole_size: int = 20,
    min_distance: int = 5,
) -> np.ndarray:
    """Classical instance segmentation: Otsu foreground, then a distance-transform watershed.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3|4)`` colour image, any integer or float dtype
            (intensities are used as they are; Otsu does not depend on their scale).
        polarity: ``"bright"`` (objects brighter than background), ``"dark"``, or ``"auto"``:
            the class on the minority side of the Otsu threshold is taken as the objects.
        sigma: Gaussian smoothing before thresholding, in pixels.
        min_object_size: connected components of at most this many pixels are dropped.
        max_hole_size: holes of at most this many pixels are filled (larger holes, such as
            the lumen of a ring, are kept).
        min_distance: minimum distance between watershed seeds (peaks of the distance map).

    Returns:
        ``(H, W)`` int32 labels: 0 background, ``1..N`` one per object.

    Raises:
        ValueError: unknown ``polarity`` or an image that is not 2D grey / colour.
    """
    if polarity not in POLARITIES:
        raise ValueError(f"unknown polarity {polarity!r}; valid: {', '.join(POLARITIES)}")
    grey = _to_grey(image)
    smooth = filters.gaussian(grey, sigma=sigma, preserve_range=True) if sigma > 0 else grey
    if np.ptp(smooth) == 0:
        return np.zeros(grey.shape, np.int32)
    above = smooth > filters.threshold_otsu(smooth)
    if polarity == "auto":
        polarity = "bright" if np.count_nonzero(above) <= above.size / 2 else "dark"
    foreground = above if polarity == "bright" else ~above
    foreground = _remove_small(foreground, min_object_size, holes=False)
    foreground = _remove_small(foreground, max_hole_size, holes=True)

    distance = ndi.distance_transform_edt(foreground)
    components = measure.label(foreground)
    peaks = feature.peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds = np.zeros(grey.shape, bool)
    seeds[tuple(peaks.T)] = True
    markers = measure.label(seeds)
    labels = segmentation.watershed(-distance, markers, mask=foreground)
    # a component that received no seed would vanish; keep it as one object
    orphans = measure.label(foreground & (labels == 0))
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return np.asarray(labels, dtype=np.int32)


def classical_segmentation(image: np.ndarray, polarity: str = "auto") -> np.ndarray:
    """Foreground mask of :func:`classical_labels`.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3|4)`` colour image, any real dtype.
        polarity: ``"auto"``, ``"bright"`` or ``"dark"`` (see :func:`classical_labels`).

    Returns:
        ``(H, W)`` bool mask, True on objects.
    """
    return classical_labels(image, polarity) > 0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Min–max to 8 bits (how the real sample images are fed to the engine)."""
    lo, hi = float(image.min()), float(image.max())
    return np.round(255 * (image - lo) / max(hi - lo, 1e-9)).astype(np.uint8)


def _skimage_data_file(name: str) -> np.ndarray:
    """Read an image shipped in the scikit-image wheel's ``data`` folder (no download)."""
    path = resources.files("skimage") / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not shipped with this scikit-image installation")
    with resources.as_file(path) as local:
        return np.asarray(io.imread(local))


def real_sample_images() -> dict[str, np.ndarray]:
    """Real microscopy images bundled with scikit-image, read from disk only.

    - ``"cell"``: ``(660, 550)`` uint8, a single round cell (bright, with a dark halo) on a
      textured grey background (``skimage.data.cell``); a one-object sanity check.
    - ``"ihc_nuclei"``: ``(512, 512)`` float32 in [0, 1], the haematoxylin (nuclear stain)
      channel of ``skimage.data.immunohistochemistry`` separated with
      :func:`skimage.color.rgb2hed`; many small nuclei, bright on dark, some clustered.

    Returns:
        Mapping from name to a 2D array.

    Raises:
        FileNotFoundError: the installed scikit-image lacks one of the bundled files.
    """
    cell = _skimage_data_file("cell.png")
    if cell.ndim == 3:
        cell = cell[..., 0]
    ihc = _skimage_data_file("ihc.png")[..., :3]
    haematoxylin = color.rgb2hed(ihc)[..., 0]
    nuclei = exposure.rescale_intensity(haematoxylin, out_range=(0.0, 1.0)).astype(np.float32)
    return {"cell": cell, "ihc_nuclei": nuclei}
