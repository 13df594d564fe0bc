"""Preprocessing: an intake :class:`~serving.pipeline.dicom_in.Image` -> the network input.

Used by training (to build its cached inputs) *and* by serving, so the network always sees
exactly the same thing. Steps, in order:

1. **Canonical orientation.** Mirror left-right so that the chest wall is at column 0 and the
   nipple points to increasing columns (PatientOrientation row direction ``A``). Rows are never
   flipped. See :func:`needs_mirroring`.
2. **Breast crop.** On a copy reduced to about 1 mm (block mean), threshold background vs breast
   (15 % of the way from the air level to the tissue level, both from Otsu's two classes),
   remove thin attachments (cannula, tubing) by a binary opening, keep the largest
   connected component, take its bounding box plus ``crop_margin_mm``, kept inside
   ``Image.image_area`` (the intake's padding and shutters are not image: they hold the
   image's lowest value, and neither the crop margin nor the orientation test reaches into
   them). The whole image when nothing is found. See
   :func:`~serving.pipeline.breast_mask.segment_breast`. Done on the mirrored view, so a
   mirrored copy of an image gives a bit-identical result.
3. **Resample** the crop to a square ``spacing_mm`` grid (Pillow mode ``"F"``, bilinear, which
   antialiases when it shrinks).
4. **Normalize** to ``(v - p_low) / (p_high - p_low)`` with the percentiles taken inside the
   breast mask, then clip to ``[-1, 3]`` (outliers only).
5. **Pad** at the end (bottom, right) with 0 to a multiple of ``size_divisible``.

Conventions:

- Arrays are ``(rows, cols)``. Boxes are ``[x1, y1, x2, y2]`` float arrays of shape ``(N, 4)``,
  x = column, y = row, origin at the top-left corner of the top-left pixel, ``x2``/``y2``
  exclusive; points are ``(N, 2)`` ``[x, y]`` in the same frame.
- "Stored" coordinates are those of the DICOM image as stored (``Image.pixels``); "model"
  coordinates are those of :attr:`Prepared.array`. :class:`Transform` converts between them.

numpy and Pillow only; this module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from serving.pipeline.arrays import BoolArray, FloatArray

# The breast segmentation is shared with the landmark search (serving.pipeline.breast_mask);
# its public names stay importable from here as before.
from serving.pipeline.breast_mask import BREAST_LEVEL as BREAST_LEVEL
from serving.pipeline.breast_mask import MIN_BREAST_FRACTION as MIN_BREAST_FRACTION
from serving.pipeline.breast_mask import OPENING_RADIUS_MM as OPENING_RADIUS_MM
from serving.pipeline.breast_mask import SEGMENTATION_SPACING_MM as SEGMENTATION_SPACING_MM
from serving.pipeline.breast_mask import reduced_breast_mask, segment_breast
from serving.pipeline.dicom_in import Image

__all__ = [
    "Prepared",
    "PreprocessConfig",
    "Transform",
    "needs_mirroring",
    "prepare",
    "segment_breast",
]

#: Share of columns at each image edge compared when the orientation comes from the pixels.
EDGE_FRACTION: Final = 0.03
#: Percentiles are computed on at most about this many breast pixels (a regular subsample).
PERCENTILE_SAMPLES: Final = 250_000
#: Normalized values are clipped to this range to bound outliers.
CLIP_RANGE: Final = (-1.0, 3.0)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the network input; saved in the model card (:meth:`to_dict`).

    Attributes:
        spacing_mm: model pixel spacing, mm, the same along rows and columns; in (0, 10].
        crop_margin_mm: margin added on every side of the breast bounding box, mm; >= 0.
        low_percentile: percentile of the breast pixels mapped to 0; in [0, 100).
        high_percentile: percentile of the breast pixels mapped to 1; in (low, 100].
        size_divisible: the padded array's height and width are multiples of this; >= 1.
    """

    spacing_mm: float = 0.2
    crop_margin_mm: float = 4.0
    low_percentile: float = 1.0
    high_percentile: float = 99.5
    size_divisible: int = 32

    def __post_init__(self) -> None:
        _check_number("spacing_mm", self.spacing_mm, float)
        _check_number("crop_margin_mm", self.crop_margin_mm, float)
        _check_number("low_percentile", self.low_percentile, float)
        _check_number("high_percentile", self.high_percentile, float)
        _check_number("size_divisible", self.size_divisible, int)
        _require("spacing_mm", self.spacing_mm, 0.0 < self.spacing_mm <= 10.0, "in (0, 10] mm")
        _require("crop_margin_mm", self.crop_margin_mm, self.crop_margin_mm >= 0.0, ">= 0 mm")
        _require("low_percentile", self.low_percentile, 0.0 <= self.low_percentile < 100.0,
                 "in [0, 100)")
        _require("high_percentile", self.high_percentile,
                 self.low_percentile < self.high_percentile <= 100.0,
                 f"in (low_percentile={self.low_percentile}, 100]")
        _require("size_divisible", self.size_divisible, self.size_divisible >= 1, ">= 1")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (for the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Build from :meth:`to_dict` output; missing keys take their defaults.

        Raises:
            ValueError: an unknown key, or a value of the wrong type or out of range; the
                message names the key and the value.
        """
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(
                    f"unknown PreprocessConfig key {key!r} (value {d[key]!r}); "
                    f"known keys: {', '.join(sorted(known))}"
                )
        return cls(**d)


def _check_number(name: str, value: object, kind: type) -> None:
    """Raise ValueError unless ``value`` is a finite number of ``kind`` (int accepted for float)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and kind is int:
        ok = isinstance(value, int)
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if not ok:
        raise ValueError(f"PreprocessConfig.{name} must be a finite {kind.__name__}, got {value!r}")


def _require(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"PreprocessConfig.{name} must be {expected}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Transform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """The geometric map between stored-image pixels and model pixels.

    ``model = (canonical - crop_origin) * scale``, where ``canonical`` is the stored coordinate,
    mirrored (``x -> cols - x``) when :attr:`flipped`. Pixel edges map onto pixel edges: model
    pixel ``i`` covers canonical columns ``[c0 + i / sx, c0 + (i + 1) / sx)``.

    Attributes:
        stored_shape: ``(rows, cols)`` of the stored image.
        flipped: True when the image was mirrored left-right (chest wall at column 0, nipple
            towards increasing columns, in the model array).
        crop: ``(r0, r1, c0, c1)``, the cropped region in (mirrored, when flipped) stored pixels,
            end exclusive.
        scale: ``(sy, sx)``, model pixels per stored pixel along rows and columns.
        model_shape: ``(h, w)`` of the valid (unpadded) part of the model array.
    """

    stored_shape: tuple[int, int]
    flipped: bool
    crop: tuple[int, int, int, int]
    scale: tuple[float, float]
    model_shape: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` reverses it."""
        return {
            "stored_shape": list(self.stored_shape),
            "flipped": self.flipped,
            "crop": list(self.crop),
            "scale": list(self.scale),
            "model_shape": list(self.model_shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """Rebuild from :meth:`to_dict` (or ``dataclasses.asdict``) output."""
        r, c = d["stored_shape"]
        r0, r1, c0, c1 = d["crop"]
        sy, sx = d["scale"]
        h, w = d["model_shape"]
        return cls(
            stored_shape=(int(r), int(c)),
            flipped=bool(d["flipped"]),
            crop=(int(r0), int(r1), int(c0), int(c1)),
            scale=(float(sy), float(sx)),
            model_shape=(int(h), int(w)),
        )

    def stored_to_model(self, boxes: npt.ArrayLike) -> FloatArray:
        """Boxes ``(N, 4)`` ``[x1, y1, x2, y2]`` in stored pixels -> model pixels (not clipped)."""
        b = _as_boxes(boxes)
        if self.flipped:
            b = self._mirror_boxes(b)
        return self._affine_boxes(b, inverse=False)

    def model_to_stored(self, boxes: npt.ArrayLike) -> FloatArray:
        """Boxes ``(N, 4)`` ``[x1, y1, x2, y2]`` in model pixels -> stored pixels, clipped to the
        stored image (``0 <= x <= cols``, ``0 <= y <= rows``). The exact inverse of
        :meth:`stored_to_model` for boxes inside the stored image."""
        b = self._affine_boxes(_as_boxes(boxes), inverse=True)
        if self.flipped:
            b = self._mirror_boxes(b)
        rows, cols = self.stored_shape
        np.clip(b[:, 0::2], 0.0, cols, out=b[:, 0::2])
        np.clip(b[:, 1::2], 0.0, rows, out=b[:, 1::2])
        return b

    def stored_to_model_points(self, points: npt.ArrayLike) -> FloatArray:
        """Points ``(N, 2)`` ``[x, y]`` in stored pixels -> model pixels (not clipped)."""
        p = _as_points(points)
        if self.flipped:
            p[:, 0] = self.stored_shape[1] - p[:, 0]
        return self._affine_points(p, inverse=False)

    def model_to_stored_points(self, points: npt.ArrayLike) -> FloatArray:
        """Points ``(N, 2)`` ``[x, y]`` in model pixels -> stored pixels, clipped to the image."""
        p = self._affine_points(_as_points(points), inverse=True)
        if self.flipped:
            p[:, 0] = self.stored_shape[1] - p[:, 0]
        np.clip(p[:, 0], 0.0, self.stored_shape[1], out=p[:, 0])
        np.clip(p[:, 1], 0.0, self.stored_shape[0], out=p[:, 1])
        return p

    def _mirror_boxes(self, b: FloatArray) -> FloatArray:
        cols = self.stored_shape[1]
        out = b.copy()
        out[:, 0] = cols - b[:, 2]
        out[:, 2] = cols - b[:, 0]
        return out

    def _affine_points(self, p: FloatArray, *, inverse: bool) -> FloatArray:
        r0, _, c0, _ = self.crop
        sy, sx = self.scale
        out = p.copy()
        if inverse:
            out[:, 0] = p[:, 0] / sx + c0
            out[:, 1] = p[:, 1] / sy + r0
        else:
            out[:, 0] = (p[:, 0] - c0) * sx
            out[:, 1] = (p[:, 1] - r0) * sy
        return out

    def _affine_boxes(self, b: FloatArray, *, inverse: bool) -> FloatArray:
        corners = self._affine_points(b.reshape(-1, 2), inverse=inverse)
        return corners.reshape(-1, 4)


def _as_rows(values: npt.ArrayLike, width: int, what: str) -> FloatArray:
    """``values`` as a float64 ``(N, width)`` array (an empty input gives ``(0, width)``)."""
    a = np.array(values, dtype=np.float64)
    if a.size == 0:
        a = a.reshape(-1, width)
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must have shape (N, {width}), got {a.shape}")
    return a


def _as_boxes(boxes: npt.ArrayLike) -> FloatArray:
    return _as_rows(boxes, 4, "boxes")


def _as_points(points: npt.ArrayLike) -> FloatArray:
    return _as_rows(points, 2, "points")


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Prepared:
    """The network input for one image.

    Attributes:
        array: float32 ``(H, W)``, ``H`` and ``W`` multiples of ``size_divisible``; the valid part
            is ``array[:h, :w]`` with ``(h, w) = transform.model_shape``, the rest is 0.
            Normalized intensity: 0 at ``intensity_window[0]``, 1 at ``intensity_window[1]``,
            clipped to [-1, 3]. Canonical orientation (chest wall at column 0).
        transform: the map between stored and model pixels.
        breast_mask: bool ``(H, W)``, True on the breast (False in the padding).
        intensity_window: ``(p_low, p_high)``, the intake pixel values mapped to 0 and 1.
    """

    array: npt.NDArray[np.float32]
    transform: Transform
    breast_mask: BoolArray
    intensity_window: tuple[float, float]


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def prepare(image: Image, cfg: PreprocessConfig | None = None) -> Prepared:
    """Turn an intake image into the network input (see the module docstring for the steps).

    Args:
        image: a decoded intake image (larger pixel value = more attenuation) with a spacing.
        cfg: preprocessing settings (the defaults when ``None``).

    Raises:
        ValueError: ``image.spacing_mm`` is ``None`` (the message names the attribute).
    """
    cfg = cfg or PreprocessConfig()
    if image.spacing_mm is None:
        raise ValueError(
            "Image.spacing_mm is None (no PixelSpacing/ImagerPixelSpacing): preprocessing needs "
            "the pixel spacing to resample to the model spacing"
        )
    row_mm, col_mm = (float(v) for v in image.spacing_mm)
    pixels = image.pixels
    area = _image_area(image)
    flipped = needs_mirroring(pixels[area[0]:area[1], area[2]:area[3]],
                              image.patient_orientation)
    canonical = pixels[:, ::-1] if flipped else pixels  # a view; copied only inside the crop
    if flipped:
        area = (area[0], area[1], pixels.shape[1] - area[3], pixels.shape[1] - area[2])
    reduced = reduced_breast_mask(canonical, (row_mm, col_mm))
    small_mask, factor = reduced.mask, reduced.factor
    crop = _crop_box(small_mask, factor, pixels.shape, (row_mm, col_mm), cfg.crop_margin_mm)
    crop = _inside(crop, area)
    transform = _make_transform(pixels.shape, flipped, crop, (row_mm, col_mm), cfg.spacing_mm)
    model = _resample(canonical, transform)
    mask = _mask_to_model(small_mask, factor, transform)
    window = _intensity_window(model, mask, cfg)
    normalized = _normalize(model, window)
    return Prepared(
        array=_pad(normalized, cfg.size_divisible, 0.0),
        transform=transform,
        breast_mask=_pad(mask, cfg.size_divisible, False),
        intensity_window=window,
    )


def _image_area(image: Image) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)`` of the pixels that are image (``Image.image_area``, padding and
    shuttered borders excluded), the whole array when there is none."""
    rows, cols = image.pixels.shape
    area = getattr(image, "image_area", None)
    if area is None:
        return (0, rows, 0, cols)
    r0, r1, c0, c1 = (int(v) for v in area)
    r0, r1, c0, c1 = max(0, r0), min(rows, r1), max(0, c0), min(cols, c1)
    if r1 <= r0 or c1 <= c0:
        return (0, rows, 0, cols)
    return (r0, r1, c0, c1)


def _inside(
    crop: tuple[int, int, int, int], area: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """``crop`` clipped to ``area`` (the margin never reaches into padding); ``area`` when
    they do not overlap."""
    r0, r1 = max(crop[0], area[0]), min(crop[1], area[1])
    c0, c1 = max(crop[2], area[2]), min(crop[3], area[3])
    if r1 <= r0 or c1 <= c0:
        return area
    return (r0, r1, c0, c1)


# --------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------


def needs_mirroring(
    pixels: npt.NDArray[np.floating[Any]], patient_orientation: tuple[str, str] | None
) -> bool:
    """Whether to mirror left-right so that the chest wall is at column 0.

    From PatientOrientation's first value (the patient direction of increasing column): ``P``
    (posterior, so the chest wall is on the right) -> True; ``A`` -> False. When it is absent or
    names neither (a rotated image), from the pixels: the chest wall is on the side whose outer
    ``EDGE_FRACTION`` of columns is brighter on average (more tissue), compared on a subsample
    of rows and columns.

    Args:
        pixels: ``(rows, cols)`` intake pixels, larger = more attenuation.
        patient_orientation: ``(row direction, column direction)`` or ``None``.
    """
    if patient_orientation is not None:
        row_direction = patient_orientation[0].upper()
        if "P" in row_direction:
            return True
        if "A" in row_direction:
            return False
    rows, cols = pixels.shape
    k = max(1, round(EDGE_FRACTION * cols))
    step = max(1, rows // 512)
    left = float(np.mean(pixels[::step, :k], dtype=np.float64))
    right = float(np.mean(pixels[::step, cols - k:], dtype=np.float64))
    return right > left


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _crop_box(
    small_mask: BoolArray,
    factor: tuple[int, int],
    shape: tuple[int, ...],
    spacing: tuple[float, float],
    margin_mm: float,
) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)``: the mask's bounding box in full-resolution pixels plus the margin,
    clipped to the image (the whole image when the mask is empty)."""
    rows, cols = int(shape[0]), int(shape[1])
    rr = np.flatnonzero(small_mask.any(axis=1))
    cc = np.flatnonzero(small_mask.any(axis=0))
    if rr.size == 0:
        return (0, rows, 0, cols)
    fy, fx = factor
    mr = math.ceil(margin_mm / spacing[0])
    mc = math.ceil(margin_mm / spacing[1])
    r0 = max(0, int(rr[0]) * fy - mr)
    r1 = min(rows, (int(rr[-1]) + 1) * fy + mr)
    c0 = max(0, int(cc[0]) * fx - mc)
    c1 = min(cols, (int(cc[-1]) + 1) * fx + mc)
    return (r0, r1, c0, c1)


def _make_transform(
    shape: tuple[int, ...],
    flipped: bool,
    crop: tuple[int, int, int, int],
    spacing: tuple[float, float],
    target_mm: float,
) -> Transform:
    """The transform for a crop resampled from ``spacing`` (row, col mm) to ``target_mm``; the
    model size is rounded to whole pixels and the scale made exact for it."""
    r0, r1, c0, c1 = crop
    h = max(1, round((r1 - r0) * spacing[0] / target_mm))
    w = max(1, round((c1 - c0) * spacing[1] / target_mm))
    return Transform(
        stored_shape=(int(shape[0]), int(shape[1])),
        flipped=flipped,
        crop=crop,
        scale=(h / (r1 - r0), w / (c1 - c0)),
        model_shape=(h, w),
    )


def _resample(
    canonical: npt.NDArray[np.floating[Any]], t: Transform
) -> npt.NDArray[np.float32]:
    """The crop of the canonical image resampled to ``t.model_shape``: Pillow mode ``"F"``,
    bilinear, which widens the filter when it shrinks (antialiasing). Only the crop is copied;
    the filter sees nothing outside it (edge weights renormalized)."""
    r0, r1, c0, c1 = t.crop
    h, w = t.model_shape
    crop = np.ascontiguousarray(canonical[r0:r1, c0:c1], dtype=np.float32)
    out = PILImage.fromarray(crop).resize((w, h), resample=PILImage.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def _mask_to_model(small_mask: BoolArray, factor: tuple[int, int], t: Transform) -> BoolArray:
    """Nearest-neighbour lookup of the reduced mask at every model pixel centre."""
    r0, _, c0, _ = t.crop
    sy, sx = t.scale
    h, w = t.model_shape
    fy, fx = factor
    rows = ((r0 + (np.arange(h) + 0.5) / sy) // fy).astype(np.intp)
    cols = ((c0 + (np.arange(w) + 0.5) / sx) // fx).astype(np.intp)
    rows = np.clip(rows, 0, small_mask.shape[0] - 1)
    cols = np.clip(cols, 0, small_mask.shape[1] - 1)
    return np.asarray(small_mask[np.ix_(rows, cols)])


# --------------------------------------------------------------------------------------------
# Intensity
# --------------------------------------------------------------------------------------------


def _intensity_window(
    model: npt.NDArray[np.float32], mask: BoolArray, cfg: PreprocessConfig
) -> tuple[float, float]:
    """``(p_low, p_high)`` of the breast pixels (all pixels when the mask is empty), computed on
    a regular subsample of at most about :data:`PERCENTILE_SAMPLES` pixels."""
    count = int(mask.sum())
    if count == 0:
        mask = np.ones_like(mask)
        count = mask.size
    step = max(1, math.ceil(math.sqrt(count / PERCENTILE_SAMPLES)))
    values = model[::step, ::step][mask[::step, ::step]]
    if values.size == 0:
        values = model[mask]
    lo, hi = np.percentile(values, [cfg.low_percentile, cfg.high_percentile])
    return float(lo), float(hi)


def _normalize(
    model: npt.NDArray[np.float32], window: tuple[float, float]
) -> npt.NDArray[np.float32]:
    """``(v - lo) / (hi - lo)`` clipped to :data:`CLIP_RANGE` (``hi - lo`` of 0 counts as 1)."""
    lo, hi = window
    span = hi - lo if hi > lo else 1.0
    out = (model - np.float32(lo)) * np.float32(1.0 / span)
    np.clip(out, CLIP_RANGE[0], CLIP_RANGE[1], out=out)
    return out.astype(np.float32, copy=False)


def _pad(array: npt.NDArray[Any], multiple: int, value: float | bool) -> npt.NDArray[Any]:
    """Pad at the bottom and right with ``value`` to multiples of ``multiple``."""
    h, w = array.shape
    ph = -h % multiple
    pw = -w % multiple
    if ph == 0 and pw == 0:
        return array
    return np.pad(array, ((0, ph), (0, pw)), constant_values=value)
