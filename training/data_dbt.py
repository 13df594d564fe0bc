"""Tomosynthesis (DBT) volumes as 2D training images: a few frames per volume, each with the
boxes of the lesions and mimics that are in focus on it.

A DBT item of ``dataset.json`` (``galacto synth --dbt``) is one volume: ``frames`` planes
sharing one stored pixel grid, ``boxes`` valid on every plane, and per box its
``frame_ranges`` (``[first, last]`` 1-based frame numbers, inclusive) and ``best_frames``
(the plane through the lesion's centre); each mimic has ``frame_range`` and ``best_frame``.
:func:`expand_dbt_items` turns it into frame items that the 2D loader of
:mod:`training.data` reads like images (``_frame``: the 0-based frame index).

Which boxes a frame carries (the *focus rule*)
----------------------------------------------
A lesion's box is on frame ``f`` when ``f`` lies in its frame range **and**
``|f - best| <= max(1, n // 4)`` with ``n = last - first + 1`` the frames it spans
(:func:`in_focus`). Planes through the middle of a filling defect show the void with its
contrast rim; planes near its top and bottom cut only a cap of it, and the reconstruction
blurs what lies above and below a plane into it, so there the void reads as a faint blur,
not as the dark defect the 2D model is taught to find. A 3 mm lesion at 1 mm planes
(``n = 3``) is labelled on all 3 planes, a 12 mm one on the 7 around its centre. Mimics
follow the same rule (an out-of-focus bubble is background).

Which frames are drawn (:func:`sample_frames`)
----------------------------------------------
A frame where a lesion is present but out of focus (inside its range widened by
:data:`BLUR_MARGIN` frames, outside its focus window) is never drawn: labelling it would
teach the network that a blurred defect is background, and the loss has no "ignore" region.
Of the remaining frames, half of ``k`` (rounded up) are drawn among those with a lesion in
focus and the rest among those with no lesion nearby (clean negatives, mimics included), each
pool filling in for the other when short; without replacement, deterministic in
``(seed, epoch, image)``. ``k`` is the config's ``data.dbt_frames_per_volume``, so that a
volume weighs like ``k`` 2D images in the patch sampler, not like its 40-70 planes.

Boxes are ``[x1, y1, x2, y2]`` stored pixels of a frame (x = column, x2/y2 exclusive);
frame numbers 1-based, frame indices (``_frame``) 0-based.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.intake.volume import Volume, read_volume
from serving.pipeline.tomo.detect import combine_slab
from serving.pipeline.tomo.volume import slab_bounds

__all__ = [
    "BLUR_MARGIN",
    "DBT_ONLY_KEYS",
    "DEFAULT_FRAMES_PER_VOLUME",
    "expand_dbt_items",
    "focus_halfwidth",
    "frame_item",
    "in_focus",
    "is_dbt_item",
    "is_frame_item",
    "read_frame",
    "release_volumes",
    "sample_frames",
    "usable_frames",
]

DEFAULT_FRAMES_PER_VOLUME = 4
"""Frames drawn per DBT volume when the config does not say (``data.dbt_frames_per_volume``)."""

BLUR_MARGIN = 2
"""Frames beyond a lesion's frame range in which its blur is still taken to show; such frames
and the out-of-focus frames inside the range are not drawn (the evaluation's frame rule
uses the same +/- 2)."""

DBT_ONLY_KEYS = ("frames", "frame_ranges", "best_frames", "heights_mm")
"""Item keys that describe the volume and its depth truth; a frame item does not carry them."""

_PER_BOX_KEYS = ("boxes", "labels", "lesion_ids", "lesion_kind", "lesion_size_mm")


def is_dbt_item(item: Mapping[str, Any]) -> bool:
    """Whether a ``dataset.json`` item is a tomosynthesis volume: it has ``frames``."""
    return item.get("frames") is not None


def is_frame_item(item: Mapping[str, Any]) -> bool:
    """Whether an item is one frame of a volume (made by :func:`frame_item`)."""
    return item.get("_frame") is not None


def focus_halfwidth(first: int, last: int) -> int:
    """Frames on each side of the best frame on which an object spanning frames
    ``first..last`` (inclusive) counts as in focus: ``max(1, (last - first + 1) // 4)``."""
    return max(1, (int(last) - int(first) + 1) // 4)


def in_focus(frame: int, first: int, last: int, best: int) -> bool:
    """The focus rule: ``first <= frame <= last`` and ``|frame - best| <=``
    :func:`focus_halfwidth` (all 1-based frame numbers)."""
    return first <= frame <= last and abs(frame - best) <= focus_halfwidth(first, last)


def _lesions(item: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """``(first, last, best)`` per box of a DBT item.

    Raises:
        ValueError: ``frame_ranges`` or ``best_frames`` missing or not one per box.
    """
    n = len(item.get("boxes") or [])
    ranges = item.get("frame_ranges") or []
    best = item.get("best_frames") or []
    if len(ranges) != n or len(best) != n:
        raise ValueError(f"{item.get('image')}: a DBT item needs frame_ranges and best_frames, "
                         f"one per box ({n} boxes, {len(ranges)} ranges, {len(best)} best "
                         "frames)")
    return [(int(r[0]), int(r[1]), int(b)) for r, b in zip(ranges, best, strict=True)]


def _mimic_in_focus(mimic: Mapping[str, Any], frame: int) -> bool:
    rng = mimic.get("frame_range")
    if rng is None:  # no depth truth: on every frame
        return True
    first, last = int(rng[0]), int(rng[1])
    best = int(mimic.get("best_frame", (first + last) // 2))
    return in_focus(frame, first, last, best)


def frame_item(item: Mapping[str, Any], frame: int) -> dict[str, Any]:
    """The 2D item of frame number ``frame`` (1-based) of a DBT item: the per-box lists
    (``boxes``, ``labels``, ``lesion_ids``, ``lesion_kind``, ``lesion_size_mm``) and
    ``mimics`` kept only for the objects in focus there (:func:`in_focus`), the volume-only
    keys (:data:`DBT_ONLY_KEYS`) dropped, and ``_frame`` (0-based index), ``frame_number``
    and ``volume_frames`` added. Other keys (``_root``, ``image``, ``nipple_xy``, ...) stay.

    Raises:
        ValueError: ``frame`` outside ``[1, frames]`` or malformed depth truth.
    """
    n_frames = int(item["frames"])
    if not 1 <= frame <= n_frames:
        raise ValueError(f"{item.get('image')}: frame {frame} outside [1, {n_frames}]")
    keep = [j for j, (a, b, best) in enumerate(_lesions(item)) if in_focus(frame, a, b, best)]
    out = {k: v for k, v in item.items() if k not in DBT_ONLY_KEYS}
    for key in _PER_BOX_KEYS:
        if item.get(key) is not None:
            out[key] = [item[key][j] for j in keep]
    out["mimics"] = [m for m in (item.get("mimics") or []) if _mimic_in_focus(m, frame)]
    out["_frame"] = frame - 1
    out["frame_number"] = frame
    out["volume_frames"] = n_frames
    return out


def usable_frames(item: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """Frame numbers (1-based) of a DBT item that may be drawn: ``(with_lesion, without)``.

    ``with_lesion``: some lesion in focus and none out of focus; ``without``: no lesion
    within :data:`BLUR_MARGIN` frames of its range (see the module docstring).
    """
    lesions = _lesions(item)
    with_lesion: list[int] = []
    without: list[int] = []
    for f in range(1, int(item["frames"]) + 1):
        focused = [in_focus(f, a, b, best) for a, b, best in lesions]
        near = [a - BLUR_MARGIN <= f <= b + BLUR_MARGIN for a, b, _ in lesions]
        if any(focused) and all(fo or not ne for fo, ne in zip(focused, near, strict=True)):
            with_lesion.append(f)
        elif not any(near):
            without.append(f)
    return with_lesion, without


def sample_frames(item: Mapping[str, Any], k: int, seed: int = 0, epoch: int = 0) -> list[int]:
    """``k`` (at most all usable) frame numbers of a DBT item, ascending, drawn as the module
    docstring says; the same ``(seed, epoch, item["image"])`` gives the same frames.

    Raises:
        ValueError: ``k < 0``.
    """
    if k < 0:
        raise ValueError(f"frames per volume must be >= 0, got {k}")
    pos, neg = usable_frames(item)
    key = zlib.crc32(str(item.get("image", "")).encode())
    rng = np.random.default_rng([int(seed), int(epoch), key])
    want_pos = min(len(pos), math.ceil(k / 2) if pos else 0)
    want_neg = min(len(neg), k - want_pos)
    want_pos = min(len(pos), k - want_neg)  # the lesion pool fills in for a short clean one
    chosen = [int(f) for f in rng.permutation(pos)[:want_pos]]
    chosen += [int(f) for f in rng.permutation(neg)[:want_neg]]
    return sorted(chosen)


def expand_dbt_items(items: Sequence[dict[str, Any]], frames_per_volume: int, seed: int = 0,
                     epoch: int = 0, slab: int = 1) -> list[dict[str, Any]]:
    """``items`` with every DBT volume replaced by :func:`frame_item` of each of its
    :func:`sample_frames` (``frames_per_volume`` per volume; 0 drops volumes). 2D items are
    returned as they are, the same objects, in the same order relative to each other.

    ``slab > 1`` makes each frame item the pixel-wise mean of the ``slab`` frames around the
    drawn one (``_slab``; :func:`read_frame`), the detector input serving builds
    (:func:`serving.pipeline.tomo.volume.slab_bounds`, ``GALACTO_TOMO_SLAB``); its boxes
    stay those in focus on the centre frame.

    Raises:
        ValueError: ``frames_per_volume < 0``, ``slab < 1`` or malformed depth truth.
    """
    if slab < 1:
        raise ValueError(f"slab must be >= 1 frame, got {slab}")
    out: list[dict[str, Any]] = []
    for it in items:
        if not is_dbt_item(it):
            out.append(it)
            continue
        for f in sample_frames(it, frames_per_volume, seed=seed, epoch=epoch):
            fi = frame_item(it, f)
            if slab > 1:
                fi["_slab"] = slab
            out.append(fi)
    return out


@lru_cache(maxsize=1)
def _volume(path: str, size: int, mtime_ns: int) -> Volume:
    """The last volume read (consecutive frames of one volume parse it once)."""
    return read_volume(Path(path))


def read_frame(item: Mapping[str, Any]) -> Image:
    """Frame ``item["_frame"]`` (0-based) of the volume ``item["_root"] / item["image"]``,
    decoded as a 2D :class:`Image` (the 2D intake's pixel semantics); with ``item["_slab"]``
    (frames, default 1) the pixel-wise mean of that many frames around it, cut at the
    volume's ends as serving cuts them (:func:`serving.pipeline.tomo.volume.slab_bounds`,
    :func:`serving.pipeline.tomo.detect.combine_slab`).

    Raises:
        serving.pipeline.errors.IntakeError: not a readable volume.
        IndexError: the frame is outside the volume.
    """
    path = Path(str(item["_root"])) / str(item["image"])
    st = path.stat()
    volume = _volume(str(path), st.st_size, st.st_mtime_ns)
    centre, slab = int(item["_frame"]), int(item.get("_slab", 1))
    if slab <= 1:
        return volume.frame(centre)
    if not 0 <= centre < len(volume):
        raise IndexError(f"frame index {centre} outside [0, {len(volume)})")
    start, stop = slab_bounds(centre, slab, len(volume))
    frames = [volume.frame(i) for i in range(start, stop)]
    return combine_slab(frames, "mean", centre=frames[centre - start])


def release_volumes() -> None:
    """Forget the volume :func:`read_frame` keeps for the next frame of the same file."""
    _volume.cache_clear()
