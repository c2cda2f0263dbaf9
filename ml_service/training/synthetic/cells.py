"""Small objects: single cells and nuclei, dense clusters of touching nuclei, rings.

Every drawer writes the exact instance labels and the noise-free signal into a
:class:`~ml_service.training.synthetic.scene.Scene`. Sizes are in pixels at the scene's scale.
"""

from __future__ import annotations

import math

import numpy as np

from ml_service.training.synthetic.scene import Point, Scene, ellipse, place

DEFOCUS_FRACTION = 0.1
"""Share of small objects drawn out of focus (into the scene's blurred layer)."""


def draw_cell(
    rng: np.random.Generator,
    scene: Scene,
    center: Point,
    radius: float,
    *,
    base: float | None = None,
    aspect: tuple[float, float] = (0.65, 1.0),
) -> None:
    """One filled elliptical cell with a nucleus-like region and a few spots inside.

    ``base`` is the object's stain density (random when None); the inside varies by a brighter
    or darker inner region and spots, so intensity differs within an object as well as between
    objects. About :data:`DEFOCUS_FRACTION` of cells go to the out-of-focus layer.
    """
    label = scene.new_label(center, radius)
    axes = (radius, radius * rng.uniform(*aspect))
    angle = float(rng.uniform(0, 180))
    base = float(rng.uniform(0.3, 1.0)) if base is None else base
    layer = scene.defocused if rng.random() < DEFOCUS_FRACTION else scene.signal
    ellipse(scene.labels, center, axes, angle, label)
    ellipse(layer, center, axes, angle, base)
    if rng.random() < 0.8:
        off = rng.normal(0.0, 0.15 * radius, 2)
        frac = rng.uniform(0.35, 0.6)
        factor = rng.uniform(1.25, 1.6) if rng.random() < 0.6 else rng.uniform(0.5, 0.75)
        nucleus_axes = (axes[0] * frac, axes[1] * frac * rng.uniform(0.8, 1.0))
        ellipse(
            layer,
            (center[0] + off[0], center[1] + off[1]),
            nucleus_axes,
            float(rng.uniform(0, 180)),
            base * factor,
        )
    for _ in range(int(rng.integers(0, 4))):
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * axes[1]
        spot = (center[0] + dist * math.cos(ang), center[1] + dist * math.sin(ang))
        r_spot = rng.uniform(1.0, max(1.5, radius / 6))
        ellipse(layer, spot, (r_spot, r_spot), 0.0, base * rng.uniform(0.6, 1.5))


def draw_mitotic(rng: np.random.Generator, scene: Scene, center: Point) -> None:
    """A small, very bright, condensed nucleus (a mitotic figure): elongated, radius 3-6 px."""
    radius = float(rng.uniform(3.0, 6.0))
    label = scene.new_label(center, radius)
    axes = (radius, radius * rng.uniform(0.35, 0.7))
    angle = float(rng.uniform(0, 180))
    ellipse(scene.labels, center, axes, angle, label)
    ellipse(scene.signal, center, axes, angle, float(rng.uniform(1.6, 2.6)))


def draw_cells(rng: np.random.Generator, scene: Scene) -> None:
    """Many small cells: mostly apart, ~20 % touching a neighbour, ~10 % overlapping one."""
    size = scene.size
    n = round(rng.uniform(12, 45) * (size / 256) ** 2)
    for _ in range(max(n, 3)):
        radius = float(rng.uniform(6, 20))
        u = rng.random()
        center: Point | None
        if scene.centers and u < 0.3:
            i = int(rng.integers(len(scene.centers)))
            # touching: centre distance ~ sum of radii; overlapping: clearly less
            f = rng.uniform(0.92, 1.0) if u < 0.2 else rng.uniform(0.55, 0.8)
            ang = rng.uniform(0, 2 * np.pi)
            d = f * (scene.radii[i] + radius)
            cx, cy = scene.centers[i]
            center = (cx + d * math.cos(ang), cy + d * math.sin(ang))
        else:
            center = place(rng, scene, radius, min_clearance=2.0)
        if center is not None:
            draw_cell(rng, scene, center, radius)


def draw_clusters(rng: np.random.Generator, scene: Scene) -> None:
    """Dense clusters of touching nuclei, plus a few isolated and mitotic ones.

    Each cluster grows from a seed nucleus: every new nucleus touches a random member (centre
    distance 0.9-1.0 times the sum of radii) and is kept only if it does not bury another
    member. Nuclei within one cluster differ in brightness by up to 4x.
    """
    size = scene.size
    area = (size / 256) ** 2
    scale = float(rng.uniform(0.7, 1.3))  # one nucleus size per image, as in one experiment
    for _ in range(max(1, round(rng.uniform(1, 4) * area))):
        radius = scale * float(rng.uniform(6, 13))
        seed = place(rng, scene, radius, min_clearance=4.0, margin=radius)
        if seed is None:
            continue
        members = [len(scene.centers)]
        draw_cell(rng, scene, seed, radius, aspect=(0.7, 1.0))
        for _ in range(int(rng.integers(10, 40))):
            i = members[int(rng.integers(len(members)))]
            r_new = scale * float(rng.uniform(5, 13))
            ang = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0.9, 1.0) * (scene.radii[i] + r_new)
            cx, cy = scene.centers[i]
            c = (cx + d * math.cos(ang), cy + d * math.sin(ang))
            inside = -r_new < c[0] < size + r_new and -r_new < c[1] < size + r_new
            if inside and scene.clearance(c, r_new) > -0.3 * r_new:
                members.append(len(scene.centers))
                if rng.random() < 0.06:
                    draw_mitotic(rng, scene, c)
                else:
                    draw_cell(rng, scene, c, r_new, aspect=(0.7, 1.0))
    for _ in range(round(rng.uniform(2, 10) * area)):
        radius = scale * float(rng.uniform(5, 12))
        center = place(rng, scene, radius, min_clearance=2.0)
        if center is None:
            continue
        if rng.random() < 0.2:
            draw_mitotic(rng, scene, center)
        else:
            draw_cell(rng, scene, center, radius)


def draw_rings(rng: np.random.Generator, scene: Scene) -> None:
    """Annuli (hole = background) mixed with filled cells, placed apart or touching."""
    area = (scene.size / 256) ** 2
    for _ in range(max(2, round(rng.uniform(3, 8) * area))):
        r_out = float(rng.uniform(10, 28))
        center = place(rng, scene, r_out, min_clearance=1.0)
        if center is None:
            continue
        label = scene.new_label(center, r_out)
        angle = float(rng.uniform(0, 180))
        axes = (r_out, r_out * rng.uniform(0.75, 1.0))
        hole = rng.uniform(0.4, 0.7)
        hole_axes = (axes[0] * hole, axes[1] * hole)
        base = float(rng.uniform(0.5, 1.0))
        ellipse(scene.labels, center, axes, angle, label)
        ellipse(scene.signal, center, axes, angle, base)
        ellipse(scene.labels, center, hole_axes, angle, 0)
        ellipse(scene.signal, center, hole_axes, angle, 0.0)
    for _ in range(max(2, round(rng.uniform(5, 18) * area))):
        radius = float(rng.uniform(6, 16))
        center = place(rng, scene, radius, min_clearance=0.0)
        if center is not None:
            draw_cell(rng, scene, center, radius)
