"""Anchor matching of the training loss on MONAI's ``Matcher`` contract (tiny boxes, CPU).

Boxes and anchors are MONAI 2D ``[r1, c1, r2, c2]`` in pixels, as in :mod:`training.loss`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher, Matcher
from monai.data.box_utils import box_iou
from torch import Tensor

from training.config import MatcherConfig, ModelConfig
from training.loss import DetectionLoss, IoUMatcher, build_matcher, targets_from_numpy
from training.model import build_anchor_generator

Kind = Literal["atss", "iou"]
BoxLoss = Literal["giou", "smooth_l1"]

#: Loss of the seeded batch of :func:`_seeded_batch` per (matcher kind, box loss):
#: (classification, box), as computed by the matcher-branching loss this module replaced.
EXPECTED_LOSSES: dict[tuple[Kind, BoxLoss], tuple[float, float]] = {
    ("atss", "giou"): (0.49134352803230286, 0.5100582242012024),
    ("atss", "smooth_l1"): (0.49134352803230286, 0.12756986916065216),
    ("iou", "giou"): (0.7283113598823547, 0.4571814239025116),
    ("iou", "smooth_l1"): (0.7283113598823547, 0.10867541283369064),
}


def reference_matches(gt: Tensor, anchors: Tensor, fg: float, bg: float) -> Tensor:
    """Max-IoU matching as the loss did it before it used MONAI's contract: ``(A,)`` box
    index, -1 negative, -2 ignored; every box keeps its best anchors."""
    iou = torch.as_tensor(box_iou(gt, anchors))
    best, idx = iou.max(dim=0)
    matched = idx.clone()
    matched[best < bg] = -1
    matched[(best >= bg) & (best <= fg)] = -2
    best_per_gt = iou.max(dim=1, keepdim=True).values
    gt_i, anc_i = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
    matched[anc_i] = gt_i
    return matched


def numpy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of corner boxes ``(N, 4)`` and ``(M, 4)``, float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _grid_anchors(size: int, stride: int, shapes: tuple[int, ...]) -> Tensor:
    """Anchors ``(A, 4)`` of each shape (square, pixels) centred on a ``stride`` grid."""
    centres = np.arange(stride / 2, size, stride)
    rows = [[r - s / 2, c - s / 2, r + s / 2, c + s / 2]
            for r in centres for c in centres for s in shapes]
    return torch.tensor(rows, dtype=torch.float32)


def _random_boxes(rng: np.random.Generator, n: int, size: int) -> Tensor:
    """``n`` random boxes 2..14 px wide inside ``size x size``, float32."""
    lo = rng.uniform(0, size - 14, (n, 2))
    ext = rng.uniform(2, 14, (n, 2))
    return torch.tensor(np.concatenate([lo, lo + ext], axis=1), dtype=torch.float32)


def test_iou_matcher_is_a_monai_matcher_with_its_codes() -> None:
    matcher = build_matcher(MatcherConfig(kind="iou"))
    assert isinstance(matcher, IoUMatcher) and isinstance(matcher, Matcher)
    assert isinstance(build_matcher(MatcherConfig(kind="atss")), ATSSMatcher)
    assert (Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS) == (-1, -2)
    with pytest.raises(ValueError, match="fg_iou"):
        IoUMatcher(0.3, 0.5)


@pytest.mark.parametrize("seed", range(12))
def test_iou_matcher_matches_the_reference_on_random_boxes(seed: int) -> None:
    """Random tiny boxes on a 32 px grid of 4 and 8 px anchors: the matches equal the
    reference's, the returned matrix is the IoU, and each code means what it says."""
    rng = np.random.default_rng(seed)
    anchors = _grid_anchors(32, 4, (4, 8))
    gt = _random_boxes(rng, int(rng.integers(1, 5)), 32)
    fg, bg = (0.5, 0.4) if seed % 2 else (0.35, 0.2)
    matcher = IoUMatcher(fg, bg)
    iou, matches = matcher.compute_matches(gt, anchors, [64], 2)
    assert matches.dtype == torch.int64 and matches.shape == (len(anchors),)
    torch.testing.assert_close(matches, reference_matches(gt, anchors, fg, bg), rtol=0, atol=0)
    np.testing.assert_allclose(iou.numpy(), numpy_iou(gt.numpy(), anchors.numpy()), atol=1e-6)
    # through MONAI's __call__ as the loss calls it
    _, called = matcher(gt, anchors, [64], 2)
    assert torch.equal(called, matches)
    best = iou.max(dim=0).values
    best_per_gt = iou.max(dim=1, keepdim=True).values
    low_quality = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=0)
    plain = ~low_quality
    assert torch.all(matches[plain & (best > fg)] >= 0)
    assert torch.all(matches[plain & (best < bg)] == Matcher.BELOW_LOW_THRESHOLD)
    assert torch.all(matches[plain & (best >= bg) & (best <= fg)] == Matcher.BETWEEN_THRESHOLDS)
    assert torch.all(matches[low_quality] >= 0)


def test_iou_matcher_keeps_a_box_without_good_anchors_and_ignores_disjoint_ones() -> None:
    """A 2 px box overlaps every anchor poorly yet keeps its best anchor; a box off the
    anchor grid gets none."""
    anchors = torch.tensor([[0, 0, 8, 8], [8, 8, 16, 16], [4, 4, 12, 12]], dtype=torch.float32)
    gt = torch.tensor([[1, 1, 3, 3], [40, 40, 44, 44]], dtype=torch.float32)
    _, matches = IoUMatcher(0.5, 0.4).compute_matches(gt, anchors, [3], 1)
    assert matches.tolist() == [0, -1, -1]


def test_empty_ground_truth_gives_all_negatives_on_the_anchors_device() -> None:
    anchors = _grid_anchors(16, 4, (4,))
    for kind in ("atss", "iou"):
        loss = DetectionLoss(MatcherConfig(kind=kind), 1)
        matched = loss.match(torch.zeros((0, 4)), anchors, [16])
        assert matched.dtype == torch.int64 and matched.device == anchors.device
        assert matched.tolist() == [-1] * len(anchors)


def test_loss_match_is_the_configured_matcher() -> None:
    """``DetectionLoss.match`` gives exactly what the configured MONAI matcher gives."""
    rng = np.random.default_rng(3)
    anchors = _grid_anchors(32, 4, (4, 8))
    gt = _random_boxes(rng, 3, 32)
    atss = ATSSMatcher(4, box_iou, False, debug=False)  # type: ignore[arg-type]
    expected: dict[Kind, Tensor] = {"atss": atss(gt, anchors, [64], 2)[1],
                "iou": reference_matches(gt, anchors, 0.5, 0.4)}
    for kind, want in expected.items():
        got = DetectionLoss(MatcherConfig(kind=kind), 2).match(gt, anchors, [64])
        assert torch.equal(got, want), kind


def _seeded_batch(a: int) -> tuple[dict[str, list[Tensor]], list[Tensor], list[Tensor],
                                   list[Tensor]]:
    """Seeded head maps of 3 images of 64 x 64 px (levels 16, 8, 4), their MONAI anchors
    and targets: two boxes, none, one (``[r1, c1, r2, c2]`` pixels, class 0)."""
    torch.manual_seed(0)
    x = torch.zeros(3, 1, 64, 64)
    cls = [torch.randn(3, a, s, s) for s in (16, 8, 4)]
    reg = [torch.randn(3, a * 4, s, s) * 0.1 for s in (16, 8, 4)]
    boxes = [np.array([[10, 12, 22, 26], [40, 40, 52, 50]], np.float32),
             np.zeros((0, 4), np.float32), np.array([[5, 30, 17, 44]], np.float32)]
    tb, tl = targets_from_numpy(boxes, [np.zeros(len(b)) for b in boxes], torch.device("cpu"))
    anchors = build_anchor_generator(ModelConfig())(x, cls)
    return {"classification": cls, "box_regression": reg}, anchors, tb, tl


@pytest.mark.parametrize(("kind", "box_loss"), sorted(EXPECTED_LOSSES))
def test_loss_values_are_unchanged_for_both_matchers(kind: Kind, box_loss: BoxLoss) -> None:
    """On a seeded tiny batch the loss equals, for both matcher kinds and both box losses,
    the values of the loss that branched on the matcher kind."""
    a = len(ModelConfig().base_anchor_shapes)
    head, anchors, tb, tl = _seeded_batch(a)
    out = DetectionLoss(MatcherConfig(kind=kind, box_loss=box_loss), a)(head, anchors, tb, tl)
    want_cls, want_box = EXPECTED_LOSSES[(kind, box_loss)]
    assert float(out["cls"]) == pytest.approx(want_cls, rel=1e-5)
    assert float(out["box"]) == pytest.approx(want_box, rel=1e-5)
    torch.testing.assert_close(out["loss"], out["cls"] + out["box"])
