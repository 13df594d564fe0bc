"""Post-processing of the RetinaNet head outputs in numpy: anchors, box decoding, selection, NMS.

Serving runs the ONNX network alone (it returns the raw per-level classification logits and
box regressions) and does here what MONAI's ``RetinaNetDetector`` does at inference
(``monai.apps.detection``, read from MONAI 1.6):

- anchors: ``AnchorGeneratorWithAnchorShape(feature_map_scales, base_anchor_shapes,
  indexing="ij")`` with the strides ``input_size // feature_size`` per axis
  (:func:`anchors_for`);
- ``RetinaNetDetector._reshape_maps``: per level ``(1, A*C, H, W) -> (H*W*A, C)``, anchors ordered
  by row, column, then anchor shape; levels concatenated in the order the network returns them;
- ``BoxSelector.select_boxes_per_image``: per level, sigmoid, keep scores ``> score_thresh``, the
  ``topk_candidates_per_level`` best, decode them (``BoxCoder.decode_single``), clip to the
  image and drop boxes under 1 pixel (``clip_boxes_to_image(remove_empty=True)``); then over all
  levels class-wise NMS (``batched_nms``: boxes offset by ``label * (max coordinate + 1)``,
  IoU ``inter / (union + eps)``, suppress IoU ``> nms_thresh``) keeping at most
  ``detections_per_img`` boxes, highest score first.

Box conventions. Inside this module boxes are in MONAI's order for a 2D tensor ``(.., d0, d1)``:
``[d0_min, d1_min, d0_max, d1_max]``, i.e. MONAI's "x" is our **row**. The project convention is
``[x1, y1, x2, y2]`` with x = column. :mod:`serving.pipeline.boxes` is the one module that
converts (its :func:`monai_to_xyxy` is re-exported here); :func:`decode` returns
project-convention boxes. Coordinates are in pixels of the network input, origin at the top-left
corner of the top-left pixel, max exclusive.

numpy only; this module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.pipeline.boxes import centre_size_to_corners, corners_to_centre_size, monai_to_xyxy

__all__ = [
    "AnchorConfig",
    "DecodeConfig",
    "anchors_for",
    "decode",
    "monai_to_xyxy",
    "nms",
    "suppress_nested",
    "top_k_stable",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: MONAI's ``BoxCoder`` default clamp of the log size deltas, ``log(1000 / 16)``.
DEFAULT_XFORM_CLIP: Final = math.log(1000.0 / 16)
#: float32 machine epsilon, added to the IoU denominator as MONAI's ``box_iou`` does.
_EPS: Final = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorConfig:
    """The anchors of the network: MONAI ``AnchorGeneratorWithAnchorShape`` arguments.

    The stride of level ``l`` along each axis is not stored: as in MONAI it is
    ``input_size // feature_size_l`` for the input actually fed to the network.

    Attributes:
        feature_map_scales: one scale per FPN level returned by the network, in that order
            (e.g. ``(1, 2, 4)``): level ``l`` uses ``feature_map_scales[l] * base_anchor_shapes``.
        base_anchor_shapes: anchor shapes ``(size_d0, size_d1)`` = (rows, cols) in input pixels
            at scale 1, MONAI's spatial order; ``A = len(base_anchor_shapes)`` anchors per
            location.
    """

    feature_map_scales: tuple[float, ...]
    base_anchor_shapes: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        scales = _float_tuple("AnchorConfig.feature_map_scales", self.feature_map_scales)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(
                f"AnchorConfig.feature_map_scales must be a non-empty list of numbers > 0, got "
                f"{self.feature_map_scales!r}"
            )
        shapes = self.base_anchor_shapes
        if not isinstance(shapes, Sequence) or isinstance(shapes, str) or not shapes:
            raise ValueError(
                f"AnchorConfig.base_anchor_shapes must be a non-empty list of (size_d0, size_d1), "
                f"got {shapes!r}"
            )
        parsed = tuple(_float_tuple("AnchorConfig.base_anchor_shapes", s) for s in shapes)
        if any(len(s) != 2 or min(s) <= 0 for s in parsed):
            raise ValueError(
                "AnchorConfig.base_anchor_shapes must be pairs (size_d0, size_d1) of numbers > 0, "
                f"got {shapes!r}"
            )
        object.__setattr__(self, "feature_map_scales", scales)
        object.__setattr__(self, "base_anchor_shapes", tuple((s[0], s[1]) for s in parsed))

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location, ``A``."""
        return len(self.base_anchor_shapes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists) for the model card."""
        return {
            "feature_map_scales": list(self.feature_map_scales),
            "base_anchor_shapes": [list(s) for s in self.base_anchor_shapes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnchorConfig:
        """Inverse of :meth:`to_dict`. Raises ValueError naming an unknown or missing key, or a
        bad value."""
        _check_keys(cls, d, required=True)
        return cls(
            feature_map_scales=d["feature_map_scales"],
            base_anchor_shapes=d["base_anchor_shapes"],
        )


#: test-time flips and the input axes they reverse (0 = rows, 1 = columns)
FLIP_AXES: dict[str, tuple[int, ...]] = {"rows": (0,), "cols": (1,), "rows+cols": (0, 1)}


@dataclass(frozen=True)
class DecodeConfig:
    """Box coder and selection settings (MONAI ``BoxCoder`` and ``set_box_selector_parameters``).

    Attributes:
        box_coder_weights: ``(w_d0, w_d1, w_size_d0, w_size_d1)``, MONAI order; each > 0.
        boxes_xform_clip: upper clamp of the decoded log size deltas (MONAI default
            ``log(1000 / 16)``).
        score_thresh: boxes need a sigmoid score strictly above this, in [0, 1).
        topk_candidates_per_level: at most this many boxes per level before NMS, >= 1.
        nms_thresh: a box whose IoU with a better box of the same class exceeds this is dropped.
        detections_per_img: at most this many boxes are returned, >= 1.
        test_time_flips: extra network passes on flipped copies of the input, each one of
            ``rows`` (upside down), ``cols`` (left-right) or ``rows+cols``; their outputs are
            flipped back and averaged with the plain pass (logits and box deltas) before
            decoding. Empty: one plain pass.
        nested_ios_thresh: after decoding (and rescoring), a box of a class whose
            intersection with a better-scoring box of the same class covers at least this
            share of the smaller box is the same object and dropped
            (:func:`suppress_nested`), so a small box inside a large one is never a second
            finding. In (0, 1].
        mimic_score_thresh: mimic-class boxes (air bubble, cyst, extravasation) scoring at
            least this are reported as probable mimics (chosen on validation data at export).
    """

    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    boxes_xform_clip: float = DEFAULT_XFORM_CLIP
    score_thresh: float = 0.05
    topk_candidates_per_level: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    test_time_flips: tuple[str, ...] = ()
    nested_ios_thresh: float = 0.6
    mimic_score_thresh: float = 0.5

    def __post_init__(self) -> None:
        weights = _float_tuple("DecodeConfig.box_coder_weights", self.box_coder_weights)
        if len(weights) != 4 or min(weights) <= 0:
            raise ValueError(
                "DecodeConfig.box_coder_weights must be 4 numbers > 0, got "
                f"{self.box_coder_weights!r}"
            )
        object.__setattr__(self, "box_coder_weights", weights)
        _check_real("boxes_xform_clip", self.boxes_xform_clip, lambda v: v > 0, "> 0")
        _check_real("score_thresh", self.score_thresh, lambda v: 0 <= v < 1, "in [0, 1)")
        _check_real("nms_thresh", self.nms_thresh, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_real("nested_ios_thresh", self.nested_ios_thresh, lambda v: 0 < v <= 1,
                    "in (0, 1]")
        _check_real("mimic_score_thresh", self.mimic_score_thresh, lambda v: 0 <= v <= 1,
                    "in [0, 1]")
        _check_int("topk_candidates_per_level", self.topk_candidates_per_level)
        _check_int("detections_per_img", self.detections_per_img)
        flips = self.test_time_flips
        if isinstance(flips, str) or not isinstance(flips, Sequence) or any(
                f not in FLIP_AXES for f in flips) or len(set(flips)) != len(flips):
            raise ValueError(
                "DecodeConfig.test_time_flips must be a list of distinct values from "
                f"{sorted(FLIP_AXES)}, got {flips!r}"
            )
        object.__setattr__(self, "test_time_flips", tuple(flips))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for the model card."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["box_coder_weights"] = list(self.box_coder_weights)
        d["test_time_flips"] = list(self.test_time_flips)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodeConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults. Raises ValueError
        naming an unknown key or a bad value."""
        _check_keys(cls, d, required=False)
        return cls(**d)


def _check_keys(cls: type, d: dict[str, Any], *, required: bool) -> None:
    known = [f.name for f in fields(cls)]
    for key in d:
        if key not in known:
            raise ValueError(
                f"unknown {cls.__name__} key {key!r} (value {d[key]!r}); known keys: "
                f"{', '.join(known)}"
            )
    missing = [k for k in known if k not in d]
    if required and missing:
        raise ValueError(f"{cls.__name__} is missing key {missing[0]!r}")


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _float_tuple(name: str, value: object) -> tuple[float, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}")
    if not all(_is_real(v) for v in value):
        raise ValueError(f"{name} must contain finite numbers only, got {value!r}")
    return tuple(float(v) for v in value)


def _check_real(name: str, value: object, ok: Callable[[float], bool], expected: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise ValueError(f"DecodeConfig.{name} must be a number {expected}, got {value!r}")


def _check_int(name: str, value: object) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"DecodeConfig.{name} must be an integer >= 1, got {value!r}")


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------


def _cell_anchors(cfg: AnchorConfig) -> list[F32]:
    """Per level ``(A, 4)`` anchors centred on 0, MONAI order, rounded half-to-even as
    ``generate_anchors_using_shape`` does (float32)."""
    shapes = np.asarray(cfg.base_anchor_shapes, dtype=np.float32)
    out = []
    for scale in cfg.feature_map_scales:
        half = (np.float32(scale) * shapes) / np.float32(2.0)
        out.append(np.round(np.concatenate([-half, half], axis=1)).astype(np.float32))
    return out


def _strides(
    feature_shapes: Sequence[tuple[int, int]], image_shape: tuple[int, int]
) -> list[tuple[int, int]]:
    """MONAI's strides: ``image_size // feature_size`` per axis."""
    return [(image_shape[0] // h, image_shape[1] // w) for h, w in feature_shapes]


def _level_anchors(
    feature_shape: tuple[int, int],
    stride: tuple[int, int],
    cell: F32,
    index: npt.NDArray[np.intp] | None = None,
) -> F32:
    """Anchors of one level, ``(H*W*A, 4)`` in MONAI order (row-major location, then shape),
    or only the rows ``index`` of that array.

    Centres are ``i * stride + stride // 2`` (integers) along each axis.
    """
    h, w = feature_shape
    a = cell.shape[0]
    if index is None:
        index = np.arange(h * w * a)
    loc, shape_idx = np.divmod(index, a)
    row, col = np.divmod(loc, w)
    c0 = (row * stride[0] + stride[0] // 2).astype(np.float32)
    c1 = (col * stride[1] + stride[1] // 2).astype(np.float32)
    centres = np.stack([c0, c1, c0, c1], axis=1)
    return (centres + cell[shape_idx]).astype(np.float32)


def anchors_for(
    feature_shapes: Sequence[tuple[int, int]], image_shape: tuple[int, int], cfg: AnchorConfig
) -> F32:
    """All anchors for a network input, exactly as MONAI's ``AnchorGeneratorWithAnchorShape``.

    Args:
        feature_shapes: ``(H_l, W_l)`` of each returned level, in the network's order.
        image_shape: ``(H, W)`` of the network input (after any padding).
        cfg: the anchor configuration (one scale per level).

    Returns:
        float32 ``(sum_l H_l * W_l * A, 4)``, MONAI order ``[d0_min, d1_min, d0_max, d1_max]``
        (d0 = row), levels concatenated in order.
    """
    _check_levels(feature_shapes, cfg)
    cells = _cell_anchors(cfg)
    strides = _strides(feature_shapes, image_shape)
    parts = [
        _level_anchors((int(fs[0]), int(fs[1])), st, c)
        for fs, st, c in zip(feature_shapes, strides, cells, strict=True)
    ]
    return np.concatenate(parts, axis=0)


def _check_levels(feature_shapes: Sequence[tuple[int, int]], cfg: AnchorConfig) -> None:
    if len(feature_shapes) != len(cfg.feature_map_scales):
        raise ValueError(
            f"{len(feature_shapes)} feature levels but AnchorConfig.feature_map_scales has "
            f"{len(cfg.feature_map_scales)} entries {cfg.feature_map_scales!r}"
        )


# --------------------------------------------------------------------------------------------
# Box coder
# --------------------------------------------------------------------------------------------


def decode_boxes(rel_codes: F32, anchors: F32, cfg: DecodeConfig) -> F32:
    """MONAI ``BoxCoder.decode_single`` in float32.

    Args:
        rel_codes: ``(N, 4)`` ``[t_d0, t_d1, t_size_d0, t_size_d1]`` regression outputs.
        anchors: ``(N, 4)`` reference boxes, MONAI order.
        cfg: weights and the log-size clamp.

    Returns:
        ``(N, 4)`` float32 boxes, MONAI order.
    """
    w = cfg.box_coder_weights
    centre, size = corners_to_centre_size(anchors)
    d_centre = rel_codes[:, :2] / np.asarray(w[:2], dtype=np.float32)
    d_size = rel_codes[:, 2:] / np.asarray(w[2:], dtype=np.float32)
    d_size = np.minimum(d_size, np.float32(cfg.boxes_xform_clip))
    pred_centre = d_centre * size + centre
    pred_size = np.exp(d_size) * size
    if not np.all(np.isfinite(pred_size)):
        raise ValueError("decoded box sizes are NaN or Inf (network output not finite)")
    return centre_size_to_corners(pred_centre, pred_size).astype(np.float32)


def _clip_and_keep(boxes: F32, size: tuple[int, int]) -> tuple[F32, npt.NDArray[np.bool_]]:
    """MONAI ``clip_boxes_to_image(remove_empty=True)``: clamp to ``[0, size]`` per axis and keep
    boxes at least 1 pixel long on both axes."""
    out = boxes.copy()
    for axis in (0, 1):
        np.clip(out[:, axis], 0, size[axis], out=out[:, axis])
        np.clip(out[:, axis + 2], 0, size[axis], out=out[:, axis + 2])
    keep = (out[:, 2] >= out[:, 0] + 1) & (out[:, 3] >= out[:, 1] + 1)
    return out[keep], keep


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------


def nms(boxes: F32, scores: F32, nms_thresh: float, max_proposals: int = -1) -> I64:
    """Greedy non-maximum suppression, as MONAI's ``non_max_suppression``.

    Boxes are visited by decreasing score (stable for ties); a box is dropped when its IoU with
    an already kept box is ``> nms_thresh``. IoU is ``inter / (union + eps32)`` in float32.

    Args:
        boxes: ``(N, 4)`` boxes ``[min0, min1, max0, max1]`` (either axis order, the same for
            all boxes).
        scores: ``(N,)``.
        nms_thresh: IoU threshold.
        max_proposals: stop after keeping this many (``-1``: no limit).

    Returns:
        int64 indices into ``boxes`` of the kept boxes, best first.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    remaining = np.arange(b.shape[0])
    picked: list[int] = []
    while remaining.size:
        i = int(remaining[0])
        picked.append(i)
        if len(picked) >= max_proposals >= 1:
            break
        rest = remaining[1:]
        lt = np.maximum(b[rest, :2], b[i, :2])
        rb = np.minimum(b[rest, 2:], b[i, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (area[rest] + area[i] - inter + np.float32(_EPS))
        remaining = rest[iou <= np.float32(nms_thresh)]
    return order[np.asarray(picked, dtype=np.int64)].astype(np.int64)


def top_k_stable(values: npt.NDArray[Any], k: int) -> I64:
    """Indices of the ``k`` largest of ``values`` ``(N,)``, largest first, ties in index
    order: exactly ``np.argsort(-values, kind="stable")[:k]``, without sorting all ``N``
    (a partition finds the k-th value; only the ``k`` selected are sorted).

    Raises:
        ValueError: ``k < 0``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    v = np.asarray(values).reshape(-1)
    if v.size <= k:
        return np.argsort(-v, kind="stable").astype(np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(v, v.size - k)[v.size - k]  # the k-th largest value
    above = np.flatnonzero(v > kth)
    ties = np.flatnonzero(v == kth)[: k - above.size]
    chosen = np.sort(np.concatenate([above, ties]))
    return chosen[np.argsort(-v[chosen], kind="stable")].astype(np.int64)


def suppress_nested(boxes: npt.NDArray[Any], scores: npt.NDArray[Any],
                    labels: npt.NDArray[Any], ios_thresh: float) -> I64:
    """Drop boxes nested in a better box of the same class.

    Greedy by decreasing score (stable for ties): a box is dropped when, for an already kept
    box of the same label, the intersection covers at least ``ios_thresh`` of the smaller of
    the two boxes (intersection over the smaller box, not IoU: a 3 mm box inside an 11 mm box
    has IoU 0.07 but is entirely inside it).

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` (either axis order, the same for all).
        scores: ``(N,)``.
        labels: ``(N,)`` class indices.
        ios_thresh: in (0, 1].

    Returns:
        int64 indices of the kept boxes, best first.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    area = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if labels[k] == labels[i]]
        if same:
            lt = np.maximum(b[same, :2], b[i, :2])
            rb = np.minimum(b[same, 2:], b[i, 2:])
            wh = np.clip(rb - lt, 0, None)
            inter = wh[:, 0] * wh[:, 1]
            smaller = np.minimum(area[same], area[i])
            ios = np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 1.0)
            if np.any(ios >= ios_thresh):
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def batched_nms(
    boxes: F32, scores: F32, labels: I64, nms_thresh: float, max_proposals: int = -1
) -> I64:
    """Class-wise NMS as MONAI's ``batched_nms``: boxes of class ``k`` are shifted by
    ``k * (max coordinate + 1)`` so that classes never overlap, then one :func:`nms`."""
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = labels.astype(np.float32) * (boxes.max() + np.float32(1.0))
    return nms(boxes + offsets[:, None], scores, nms_thresh, max_proposals)


# --------------------------------------------------------------------------------------------
# Decoding head outputs
# --------------------------------------------------------------------------------------------


def _sigmoid(x: npt.NDArray[np.float32]) -> F32:
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)


def _level_scores(logits: npt.NDArray[Any], num_anchors: int) -> tuple[F32, int]:
    """``(1, A*K, H, W)`` logits -> flat sigmoid scores in MONAI order ``((h*W + w)*A + a)*K + k``
    and ``K``."""
    _, ak, h, w = logits.shape
    k = ak // num_anchors
    maps = np.asarray(logits[0], dtype=np.float32).reshape(num_anchors, k, h, w)
    return _sigmoid(maps.transpose(2, 3, 0, 1).reshape(-1)), k


def _level_codes(
    regression: npt.NDArray[Any], num_anchors: int, index: npt.NDArray[np.intp]
) -> F32:
    """Rows ``index`` of the ``(H*W*A, 4)`` reshaped ``(1, A*4, H, W)`` regression map."""
    _, _, h, w = regression.shape
    loc, a = np.divmod(index, num_anchors)
    row, col = np.divmod(loc, w)
    maps = np.asarray(regression[0], dtype=np.float32).reshape(num_anchors, 4, h, w)
    return np.ascontiguousarray(maps[a, :, row, col], dtype=np.float32)


def _check_outputs(
    cls_logits: Sequence[npt.NDArray[Any]],
    box_regression: Sequence[npt.NDArray[Any]],
    anchor_cfg: AnchorConfig,
) -> None:
    if len(cls_logits) != len(box_regression):
        raise ValueError(
            f"{len(cls_logits)} classification levels but {len(box_regression)} regression levels"
        )
    a = anchor_cfg.num_anchors
    for level, (c, r) in enumerate(zip(cls_logits, box_regression, strict=True)):
        if c.ndim != 4 or c.shape[0] != 1 or c.shape[1] % a:
            raise ValueError(
                f"level {level}: classification logits must be (1, A*K, H, W) with A={a}, got "
                f"{c.shape}"
            )
        if r.shape != (1, 4 * a, *c.shape[2:]):
            raise ValueError(
                f"level {level}: box regression must be (1, {4 * a}, {c.shape[2]}, {c.shape[3]}), "
                f"got {r.shape}"
            )


def decode(
    cls_logits: Sequence[npt.NDArray[Any]],
    box_regression: Sequence[npt.NDArray[Any]],
    image_shape: tuple[int, int],
    anchor_cfg: AnchorConfig,
    decode_cfg: DecodeConfig,
    *,
    clip_shape: tuple[int, int] | None = None,
) -> tuple[F32, F32, I64]:
    """Detections of ONE image from the raw RetinaNet head outputs (what MONAI's
    ``RetinaNetDetector`` returns in eval mode for the same outputs).

    Args:
        cls_logits: per level ``(1, A*K, H_l, W_l)`` classification logits, in the network's
            level order.
        box_regression: per level ``(1, A*4, H_l, W_l)`` box regression.
        image_shape: ``(H, W)`` of the network input (as fed, i.e. padded); sets the strides.
        anchor_cfg: anchors of the network.
        decode_cfg: box coder and selection settings.
        clip_shape: ``(h, w)`` to clip boxes to (MONAI: the image size before padding);
            ``image_shape`` when ``None``.

    Returns:
        ``(boxes, scores, labels)``: float32 ``(N, 4)`` ``[x1, y1, x2, y2]`` (x = column) in input
        pixels, float32 ``(N,)`` sigmoid scores, int64 ``(N,)`` class indices (0-based), sorted
        by decreasing score, ``N <= detections_per_img``.
    """
    _check_outputs(cls_logits, box_regression, anchor_cfg)
    feature_shapes = [(int(c.shape[2]), int(c.shape[3])) for c in cls_logits]
    _check_levels(feature_shapes, anchor_cfg)
    strides = _strides(feature_shapes, image_shape)
    cells = _cell_anchors(anchor_cfg)
    clip = clip_shape if clip_shape is not None else image_shape
    a = anchor_cfg.num_anchors
    boxes, scores, labels = [], [], []
    for level, (logits, regression) in enumerate(zip(cls_logits, box_regression, strict=True)):
        level_scores, k = _level_scores(logits, a)
        candidates = np.flatnonzero(level_scores > np.float32(decode_cfg.score_thresh))
        top = candidates[top_k_stable(level_scores[candidates],
                                      decode_cfg.topk_candidates_per_level)]
        anchor_idx = top // k
        anchors = _level_anchors(feature_shapes[level], strides[level], cells[level], anchor_idx)
        codes = _level_codes(regression, a, anchor_idx)
        level_boxes, keep = _clip_and_keep(decode_boxes(codes, anchors, decode_cfg), clip)
        boxes.append(level_boxes)
        scores.append(level_scores[top][keep])
        labels.append((top % k)[keep].astype(np.int64))
    all_boxes = np.concatenate(boxes, axis=0)
    all_scores = np.concatenate(scores, axis=0)
    all_labels = np.concatenate(labels, axis=0)
    kept = batched_nms(
        all_boxes, all_scores, all_labels, decode_cfg.nms_thresh, decode_cfg.detections_per_img
    )
    return monai_to_xyxy(all_boxes[kept]), all_scores[kept], all_labels[kept]


def unflip_outputs(
    cls_logits: Sequence[npt.NDArray[Any]],
    box_regression: Sequence[npt.NDArray[Any]],
    axes: tuple[int, ...],
    image_shape: tuple[int, int],
    num_anchors: int,
) -> tuple[list[F32], list[F32]]:
    """Head outputs of a flipped input, mapped back onto the unflipped input's anchors.

    Reversing input axis ``d`` (0 = rows, 1 = columns) of an ``(H, W)`` input reverses that
    axis of every ``(1, C, h, w)`` output map and negates the anchor-centre delta along ``d``
    (box-coder component ``d``; the size deltas are unchanged, the anchors being symmetric
    about their centres). This is exact only when every level's stride ``H / h`` (``W / w``)
    is an even integer, so that anchor centres ``i * s + s // 2`` map onto anchor centres.

    Raises:
        ValueError: a level whose stride does not divide the input evenly.
    """
    for c in cls_logits:
        for d in axes:
            n, size = int(c.shape[2 + d]), image_shape[d]
            if n == 0 or size % n or (size // n) % 2:
                raise ValueError(
                    f"test-time flips need even integer strides: input axis {d} has {size} "
                    f"pixels but an output level has {n} cells"
                )
    map_axes = tuple(2 + d for d in axes)
    cls_back = [np.ascontiguousarray(np.flip(c, axis=map_axes), dtype=np.float32)
                for c in cls_logits]
    reg_back = []
    for r in box_regression:
        _, _, h, w = r.shape
        m = np.flip(r, axis=map_axes).reshape(1, num_anchors, 4, h, w).astype(np.float32)
        for d in axes:
            m[:, :, d] = -m[:, :, d]
        reg_back.append(np.ascontiguousarray(m.reshape(1, num_anchors * 4, h, w)))
    return cls_back, reg_back
