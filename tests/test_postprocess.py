"""numpy post-processing against MONAI's RetinaNetDetector on the same raw head outputs.

This test (not serving) imports torch and monai. The tiny network is built from MONAI parts that
need no torchvision: strided convolutions and MONAI's ``FeaturePyramidNetwork``.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import batched_nms as monai_batched_nms
from monai.data.box_utils import non_max_suppression
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

from serving.pipeline.postprocess import (
    AnchorConfig,
    DecodeConfig,
    anchors_for,
    batched_nms,
    decode,
    decode_boxes,
    monai_to_xyxy,
    nms,
    top_k_stable,
)

SHAPES = ((8.0, 8.0), (12.0, 6.0), (6.0, 12.0))
SCALES = (1.0, 2.0, 4.0)


class TinyFPN(nn.Module):
    """Four stride-2 convolutions and an FPN: levels at strides 4, 8 and 16, ``out_channels``."""

    def __init__(self, width: int = 8, out_channels: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 2, 1), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU())
        self.fpn = FeaturePyramidNetwork(2, [width, 2 * width, 2 * width], out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return self.fpn(OrderedDict([("0", c1), ("1", c2), ("2", c3)]))


def tiny_retinanet(num_classes: int, seed: int) -> RetinaNet:
    """A random RetinaNet whose scores spread around the thresholds (perturbed head biases)."""
    torch.manual_seed(seed)
    net = RetinaNet(spatial_dims=2, num_classes=num_classes, num_anchors=len(SHAPES),
                    feature_extractor=TinyFPN(), size_divisible=32)
    with torch.no_grad():
        bias = net.classification_head.cls_logits.bias.view(len(SHAPES), num_classes)
        bias.copy_(torch.randn(len(SHAPES), 1).mul(1.5).expand_as(bias))
        bias[1::2, 1:] += 0.5  # with 2 classes, some anchor shapes favour class 1
        net.regression_head.bbox_reg.weight.mul_(5.0)
    return net.eval()


def detector(net: RetinaNet, dcfg: DecodeConfig) -> RetinaNetDetector:
    det = RetinaNetDetector(net, AnchorGeneratorWithAnchorShape(SCALES, SHAPES))
    det.set_box_coder_weights(dcfg.box_coder_weights)
    det.set_box_selector_parameters(
        score_thresh=dcfg.score_thresh,
        topk_candidates_per_level=dcfg.topk_candidates_per_level,
        nms_thresh=dcfg.nms_thresh,
        detections_per_img=dcfg.detections_per_img,
    )
    return det.eval()


CASES = [
    # (input H, W), num_classes, decode settings
    ((128, 96), 1, DecodeConfig(score_thresh=0.3, topk_candidates_per_level=50, nms_thresh=0.4,
                                detections_per_img=30)),
    ((160, 224), 1, DecodeConfig()),
    ((100, 90), 1, DecodeConfig(score_thresh=0.2, nms_thresh=0.3, detections_per_img=25)),
    ((160, 224), 2, DecodeConfig(box_coder_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.25,
                                 topk_candidates_per_level=80, nms_thresh=0.5,
                                 detections_per_img=60)),
]


@pytest.mark.parametrize(("shape", "num_classes", "dcfg"), CASES)
def test_decode_matches_monai_detector(
    shape: tuple[int, int], num_classes: int, dcfg: DecodeConfig
) -> None:
    """Same boxes (after the convention swap), scores and labels as RetinaNetDetector in eval
    mode; inputs not divisible by 32 are padded at the end as MONAI does and clipped to the
    original size."""
    net = tiny_retinanet(num_classes, seed=sum(shape) + num_classes)
    det = detector(net, dcfg)
    acfg = AnchorConfig(SCALES, SHAPES)
    padded = (math.ceil(shape[0] / 32) * 32, math.ceil(shape[1] / 32) * 32)
    torch.manual_seed(1)
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        expected = det(x)[0]
        heads = net(nn.functional.pad(x, (0, padded[1] - shape[1], 0, padded[0] - shape[0])))
    cls = [t.numpy() for t in heads["classification"]]
    reg = [t.numpy() for t in heads["box_regression"]]
    boxes, scores, labels = decode(cls, reg, padded, acfg, dcfg, clip_shape=shape)

    monai_boxes = expected["boxes"].numpy()
    assert len(monai_boxes) >= 10, "the test network should produce detections"
    assert boxes.shape == monai_boxes.shape and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes, monai_boxes[:, [1, 0, 3, 2]], atol=1e-3, rtol=0)
    np.testing.assert_allclose(scores, expected["labels_scores"].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(labels, expected["labels"].numpy())
    assert np.all(np.diff(scores) <= 0)
    assert np.all(boxes[:, 2] <= shape[1]) and np.all(boxes[:, 3] <= shape[0])
    if num_classes == 2:
        assert set(labels.tolist()) == {0, 1}


def test_monai_detector_inference_needs_no_torchvision() -> None:
    """The premise of the parity test: torchvision is absent, and inference still runs."""
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    det = detector(tiny_retinanet(1, seed=0), DecodeConfig())
    with torch.no_grad():
        out = det(torch.zeros(1, 1, 64, 64))
    assert set(out[0]) == {"boxes", "labels", "labels_scores"}


def test_no_score_above_threshold_gives_empty_arrays() -> None:
    acfg = AnchorConfig(SCALES, SHAPES)
    cls = [np.full((1, 3, s, s), -20.0, np.float32) for s in (16, 8, 4)]
    reg = [np.zeros((1, 12, s, s), np.float32) for s in (16, 8, 4)]
    boxes, scores, labels = decode(cls, reg, (64, 64), acfg, DecodeConfig())
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    assert labels.dtype == np.int64


def test_decode_rejects_mismatched_outputs() -> None:
    acfg = AnchorConfig(SCALES, SHAPES)
    cls = [np.zeros((1, 3, s, s), np.float32) for s in (16, 8)]
    reg = [np.zeros((1, 12, s, s), np.float32) for s in (16, 8)]
    with pytest.raises(ValueError, match="feature_map_scales"):
        decode(cls, reg, (64, 64), acfg, DecodeConfig())
    with pytest.raises(ValueError, match="box regression"):
        decode(cls, [r[:, :8] for r in reg], (64, 64), AnchorConfig((1, 2), SHAPES),
               DecodeConfig())


# --------------------------------------------------------------------------------- parts


@pytest.mark.parametrize(
    ("image", "features", "scales", "shapes"),
    [
        ((128, 96), [(32, 24), (16, 12), (8, 6)], SCALES, SHAPES),
        ((100, 90), [(25, 23), (13, 12), (7, 6), (4, 3)], (1.0, 1.5, 3.0, 5.0),
         ((5.0, 7.0), (9.0, 3.0))),
    ],
)
def test_anchors_match_monai_generator(
    image: tuple[int, int],
    features: list[tuple[int, int]],
    scales: tuple[float, ...],
    shapes: tuple[tuple[float, float], ...],
) -> None:
    gen = AnchorGeneratorWithAnchorShape(scales, shapes)
    expected = gen(torch.zeros(1, 1, *image), [torch.zeros(1, 1, *f) for f in features])[0]
    got = anchors_for(features, image, AnchorConfig(scales, shapes))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.numpy())


def test_box_decoding_matches_monai_box_coder() -> None:
    rng = np.random.default_rng(0)
    anchors = anchors_for([(12, 10)], (48, 40), AnchorConfig((1.0,), SHAPES))
    codes = rng.normal(0, 2, size=anchors.shape).astype(np.float32)
    codes[:5, 2:] = 50.0  # beyond the log-size clamp
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        cfg = DecodeConfig(box_coder_weights=weights)
        expected = BoxCoder(weights=weights).decode_single(
            torch.from_numpy(codes), torch.from_numpy(anchors)
        )
        np.testing.assert_allclose(decode_boxes(codes, anchors, cfg), expected.numpy(),
                                   rtol=1e-6, atol=1e-4)


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    lo = rng.uniform(0, 100, size=(n, 2))
    return np.concatenate([lo, lo + rng.uniform(2, 40, size=(n, 2))], axis=1).astype(np.float32)


@pytest.mark.parametrize("max_proposals", [-1, 7])
def test_nms_matches_monai(max_proposals: int) -> None:
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    scores[::10] = 0.5  # ties are broken by input order in both
    for thresh in (0.1, 0.3, 0.5, 0.7):
        expected = non_max_suppression(torch.from_numpy(boxes), torch.from_numpy(scores),
                                       thresh, max_proposals)
        got = nms(boxes, scores, thresh, max_proposals)
        np.testing.assert_array_equal(got, expected.numpy())
        if max_proposals > 0:
            assert len(got) == max_proposals


def test_batched_nms_matches_monai() -> None:
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 200)
    scores = rng.uniform(size=200).astype(np.float32)
    labels = rng.integers(0, 3, size=200).astype(np.int64)
    expected = monai_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                 torch.from_numpy(labels), 0.3, 50)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.3, 50), expected.numpy())
    assert len(nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)) == 0


def test_monai_to_xyxy_swaps_rows_and_columns() -> None:
    monai_box = np.array([[10.0, 20.0, 30.0, 60.0]])  # rows 10..30, columns 20..60
    np.testing.assert_array_equal(monai_to_xyxy(monai_box), [[20.0, 10.0, 60.0, 30.0]])


# --------------------------------------------------------------------------------- configs


def test_configs_round_trip_through_json() -> None:
    acfg = AnchorConfig((1, 2, 4), ((8, 8), (12, 6)))
    dcfg = DecodeConfig(score_thresh=0.1, detections_per_img=20)
    assert AnchorConfig.from_dict(json.loads(json.dumps(acfg.to_dict()))) == acfg
    assert DecodeConfig.from_dict(json.loads(json.dumps(dcfg.to_dict()))) == dcfg
    assert acfg.num_anchors == 2 and acfg.feature_map_scales == (1.0, 2.0, 4.0)


@pytest.mark.parametrize(
    ("cls", "d", "message"),
    [
        (AnchorConfig, {"feature_map_scales": [1], "base_anchor_shapes": [[8, 8]], "x": 1},
         "'x'"),
        (AnchorConfig, {"feature_map_scales": [1]}, "base_anchor_shapes"),
        (AnchorConfig, {"feature_map_scales": [0], "base_anchor_shapes": [[8, 8]]}, r"\[0\]"),
        (AnchorConfig, {"feature_map_scales": [1], "base_anchor_shapes": [[8, 8, 8]]},
         r"\[\[8, 8, 8\]\]"),
        (DecodeConfig, {"nms": 0.5}, "'nms'"),
        (DecodeConfig, {"score_thresh": 1.5}, "score_thresh.*1.5"),
        (DecodeConfig, {"detections_per_img": 0}, "detections_per_img.*0"),
        (DecodeConfig, {"topk_candidates_per_level": 10.0}, "topk_candidates_per_level.*10.0"),
        (DecodeConfig, {"box_coder_weights": [1, 1, 1]}, r"box_coder_weights.*\[1, 1, 1\]"),
    ],
)
def test_config_errors_name_key_and_value(cls: type, d: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls.from_dict(d)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(values=hnp.arrays(np.float32, st.integers(0, 60),
                         elements=st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])),
       k=st.integers(0, 70))
def test_top_k_stable_is_the_stable_sort_cut(values: np.ndarray, k: int) -> None:
    """Many ties: the partition-based selection returns exactly what sorting all and cutting
    returns (the decoder's candidates, and so its boxes, do not change)."""
    want = np.argsort(-values, kind="stable")[:k]
    assert top_k_stable(values, k).tolist() == want.tolist()


def test_top_k_stable_refuses_a_negative_k() -> None:
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_k_stable(np.zeros(3, np.float32), -1)
