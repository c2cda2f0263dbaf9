"""Procedural microscopy-like images with exact ground truth, for training and validation.

A sample is built in two stages:

1. **Scene** (:mod:`.scene`, :mod:`.cells`, :mod:`.spheroids`): objects are drawn into an
   instance-label image and a noise-free *signal* image (stain density, 0 on background).
   Kinds (:data:`KINDS`):

   - ``"cells"``: many small round/elliptical cells (radius 6-20 px), some touching, some
     overlapping, with a nucleus-like brighter or darker region and small spots inside.
   - ``"spheroids"``: 1-4 large blobs (radius 40-100 px) with a perturbed outline, a brighter
     rim and a necrotic core that is either dim tissue or a real hole.
   - ``"rings"``: annulus-shaped objects (the mask has a hole) mixed with filled cells.
   - ``"clusters"``: dense clusters of touching nuclei of one size per image, brightness
     differing up to 4x between nuclei, bright small mitotic figures, a few isolated nuclei.
   - ``"large"``: 1-2 very large spheroids or organoids (radius up to 150 px) that may run past
     the border, their inside flat, textured or with a bright rim, sometimes hollow.

   About 10 % of small objects are out of focus (strongly blurred, still labelled).

2. **Imaging** (:mod:`.camera`): fluorescence, brightfield or phase contrast (with halos),
   textured and uneven background, optical blur, shot and read noise, 8- or 16-bit.

Instance labels are exact: the label drawn last at a pixel owns it. Everything is drawn from the
``numpy.random.Generator`` the caller passes, so a seed fixes a sample.
"""

from ml_service.training.synthetic.camera import POLARITIES
from ml_service.training.synthetic.sample import (
    KINDS,
    MIN_SIZE,
    Sample,
    generate_sample,
    make_dataset,
    make_labelled_dataset,
)

__all__ = [
    "KINDS",
    "MIN_SIZE",
    "POLARITIES",
    "Sample",
    "generate_sample",
    "make_dataset",
    "make_labelled_dataset",
]
