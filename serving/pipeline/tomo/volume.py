"""What the tomosynthesis code needs from a volume, as structural types, and the frame
arithmetic shared by detection and location.

A DBT volume is a stack of reconstructed planes parallel to the detector. Its reader is not a
dependency of this package: every function takes a :class:`VolumeLike` (any object with a
``header`` carrying ``number_of_frames``, ``frame_heights_mm`` and the in-plane ``image``
header, and a ``frame(index)`` method returning one decoded :class:`Image`), so the reader's
concrete ``Volume`` class, a test double or an in-memory stack all fit.

Conventions:

- **Frame index**: 0-based position in the volume (``frame(0)`` is DICOM frame number 1).
  Every index this package returns is 0-based; properties named ``*_number`` are 1-based.
- **Height**: ``frame_heights_mm[i]`` is the height of frame ``i``'s plane above the
  detector, mm. Frames are in DICOM order, which need not be stack order: neighbouring
  planes are neighbours in :func:`stack_order` (the index order itself when the heights
  rise or fall monotonically with it).
- **In-plane**: every frame shares the stored pixel grid of ``header.image`` (rows, cols,
  spacing); boxes are ``[x1, y1, x2, y2]`` stored pixels (x = column, x2/y2 exclusive).
- **Slab**: the ``slab`` neighbouring frames around a centre frame ``c``, frames
  ``[c - (slab - 1) // 2, c - (slab - 1) // 2 + slab)`` clipped to the volume (an even slab
  reaches one frame further towards higher indices). See :func:`slab_bounds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol

from serving.pipeline.dicom_in import Image, ImageHeader

__all__ = [
    "VolumeHeaderLike",
    "VolumeLike",
    "check_volume",
    "slab_bounds",
    "slab_centres",
    "slab_height_mm",
    "stack_order",
]


class VolumeHeaderLike(Protocol):
    """The part of a volume header this package reads.

    Attributes:
        image: the in-plane 2D description shared by every frame (rows, cols, spacing_mm,
            laterality, view, patient_orientation, positioner_primary_angle, ...).
        number_of_frames: frames in the volume, >= 1.
        frame_heights_mm: height of each frame's plane above the detector, mm, one per
            frame, index 0 = DICOM frame number 1.
    """

    @property
    def image(self) -> ImageHeader: ...

    @property
    def number_of_frames(self) -> int: ...

    @property
    def frame_heights_mm(self) -> tuple[float, ...]: ...


class VolumeLike(Protocol):
    """A tomosynthesis volume whose frames are decoded on demand."""

    @property
    def header(self) -> VolumeHeaderLike: ...

    def frame(self, index: int) -> Image:
        """Frame ``index`` (0-based) decoded, as a 2D :class:`Image` on the volume's grid."""
        ...


def check_volume(volume: VolumeLike) -> int:
    """The number of frames of ``volume``, after checking its header.

    Raises:
        ValueError: ``number_of_frames`` is below 1, or ``frame_heights_mm`` does not hold
            one finite height per frame.
    """
    header = volume.header
    n = int(header.number_of_frames)
    if n < 1:
        raise ValueError(f"volume has number_of_frames={n}; at least 1 frame is needed")
    heights = header.frame_heights_mm
    if len(heights) != n:
        raise ValueError(f"frame_heights_mm has {len(heights)} values for {n} frames; one "
                         "height per frame is needed")
    bad = [i for i, h in enumerate(heights) if not math.isfinite(float(h))]
    if bad:
        raise ValueError(f"frame_heights_mm is not finite at frame index(es) {bad[:5]}")
    return n


def slab_bounds(centre: int, slab: int, n_frames: int) -> tuple[int, int]:
    """Frames ``[start, stop)`` of the slab around ``centre``: ``start = centre - (slab - 1)
    // 2``, ``stop = start + slab``, clipped to ``[0, n_frames)``.

    Raises:
        ValueError: ``slab < 1`` or ``centre`` outside ``[0, n_frames)``.
    """
    if slab < 1:
        raise ValueError(f"slab must be >= 1 frame, got {slab!r}")
    if not 0 <= centre < n_frames:
        raise ValueError(f"centre frame index {centre!r} outside [0, {n_frames})")
    start = centre - (slab - 1) // 2
    return max(start, 0), min(start + slab, n_frames)


def slab_centres(n_frames: int, slab: int, stride: int) -> range:
    """Centre frame indices at which the detector runs: ``first, first + stride, ...`` below
    ``n_frames``, with ``first = (min(slab, stride) - 1) // 2``. So ``slab = stride`` tiles
    the volume with slabs that do not overlap (``slab = stride = 3``: centres 1, 4, 7, ...),
    and ``stride = 1`` runs at every frame.

    Raises:
        ValueError: ``n_frames``, ``slab`` or ``stride`` below 1.
    """
    if n_frames < 1 or slab < 1 or stride < 1:
        raise ValueError(f"n_frames, slab and stride must be >= 1, got {n_frames!r}, "
                         f"{slab!r}, {stride!r}")
    first = min((min(slab, stride) - 1) // 2, n_frames - 1)
    return range(first, n_frames, stride)


def slab_height_mm(heights_mm: Sequence[float], start: int, stop: int) -> float:
    """Mean height (mm above the detector) of frames ``[start, stop)``: the height a slab's
    detections are given (for one frame, that frame's height).

    Raises:
        ValueError: an empty range.
    """
    if not 0 <= start < stop <= len(heights_mm):
        raise ValueError(f"frame range [{start}, {stop}) is empty or outside "
                         f"[0, {len(heights_mm)})")
    return float(sum(float(h) for h in heights_mm[start:stop]) / (stop - start))


def stack_order(heights_mm: Sequence[float]) -> tuple[int, ...]:
    """Frame indices in stack order, so that consecutive entries are neighbouring planes:
    ``0, 1, ..., n - 1`` when the heights strictly increase or strictly decrease with the
    index (the usual case, DICOM order kept), else the indices sorted by increasing height
    (ties by index)."""
    h = [float(v) for v in heights_mm]
    steps = [b - a for a, b in pairwise(h)]
    if all(d > 0 for d in steps) or all(d < 0 for d in steps):
        return tuple(range(len(h)))
    return tuple(sorted(range(len(h)), key=lambda i: (h[i], i)))
