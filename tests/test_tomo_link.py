"""Linking per-frame detections of a tomosynthesis volume into one candidate per lesion
(serving.pipeline.tomo.link), on synthetic detections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from serving.pipeline.preprocess import Transform
from serving.pipeline.run import RawDetections
from serving.pipeline.tomo import LinkConfig, Linker, TomoCandidate, box_overlap, link_detections


@dataclass(frozen=True)
class Dets:
    """Detections of one frame (the fields of RawDetections that linking reads)."""

    boxes: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]


def dets(*items: tuple[Sequence[float], float, int]) -> Dets:
    """Detections from ``(box, score, label)`` triples."""
    return Dets(np.asarray([b for b, _, _ in items], np.float64).reshape(-1, 4),
                np.asarray([s for _, s, _ in items], np.float64),
                np.asarray([k for _, _, k in items], np.int64))


EMPTY = dets()
LESION = [100.0, 200.0, 130.0, 228.0]


def shifted(box: Sequence[float], dx: float = 0.0, grow: float = 0.0) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1 + dx - grow, y1 - grow, x2 + dx + grow, y2 + grow]


def lesion_track(frames: range, peak: int, box: Sequence[float] = LESION, label: int = 0,
                 top: float = 0.9) -> dict[int, Dets]:
    """A lesion seen in ``frames``, sharpest (highest score, smallest box) at ``peak``,
    drifting 1 px per frame and blurring (growing) away from it."""
    out = {}
    for f in frames:
        off = abs(f - peak)
        out[f] = dets((shifted(box, dx=f - peak, grow=2.0 * off), top - 0.15 * off, label))
    return out


def test_one_lesion_over_five_frames_is_one_candidate_at_its_peak() -> None:
    per_frame = lesion_track(range(10, 15), peak=12)
    hs = [0.5 + i for i in range(30)]
    cands = link_detections(per_frame, heights_mm=hs, classes=["filling_defect", "air_bubble"])
    assert len(cands) == 1
    c = cands[0]
    assert (c.best_frame, c.first_frame, c.last_frame) == (12, 10, 14)
    assert (c.best_frame_number, c.first_frame_number, c.last_frame_number) == (13, 11, 15)
    assert c.n_frames == 5
    assert c.score == pytest.approx(0.9)
    assert c.box == tuple(LESION)  # the best frame's own box, not a union
    assert c.height_mm == pytest.approx(12.5)
    assert c.label == 0 and c.label_name == "filling_defect"
    assert [p.frame for p in c.track] == [10, 11, 12, 13, 14]


def test_two_lesions_at_the_same_place_far_apart_in_height_are_two() -> None:
    per_frame = {**lesion_track(range(3, 7), peak=5), **lesion_track(range(20, 25), peak=22)}
    cands = link_detections(per_frame)
    assert sorted((c.first_frame, c.best_frame, c.last_frame) for c in cands) == [
        (3, 5, 6), (20, 22, 24)]


def test_a_one_frame_gap_is_bridged_and_a_two_frame_gap_is_not() -> None:
    per_frame = lesion_track(range(10, 15), peak=12)
    del per_frame[13]
    cands = link_detections(per_frame)
    assert len(cands) == 1 and cands[0].n_frames == 4 and cands[0].last_frame == 14
    per_frame = lesion_track(range(10, 16), peak=12)
    del per_frame[13], per_frame[14]
    cands = link_detections(per_frame)
    assert sorted((c.first_frame, c.last_frame) for c in cands) == [(10, 12), (15, 15)]
    # no gap allowed
    per_frame = lesion_track(range(10, 15), peak=12)
    del per_frame[13]
    assert len(link_detections(per_frame, config=LinkConfig(max_gap=0))) == 2


def test_a_stride_counts_gaps_in_strides() -> None:
    per_frame = {f: d for f, d in lesion_track(range(0, 13), peak=6).items() if f % 3 == 0}
    assert len(link_detections(per_frame, frame_step=3)) == 1
    assert len(link_detections(per_frame, frame_step=1)) == 5  # 3 frames apart: a 2-frame gap


def test_single_frame_noise_is_kept_as_its_own_candidate() -> None:
    per_frame = lesion_track(range(10, 15), peak=12)
    per_frame[2] = dets(([10.0, 10.0, 20.0, 20.0], 0.3, 0))
    per_frame[11] = dets(*[(b, s, k) for b, s, k in zip(per_frame[11].boxes.tolist(),
                                                          per_frame[11].scores.tolist(),
                                                          per_frame[11].labels.tolist(),
                                                          strict=True)],
                         ([400.0, 50.0, 410.0, 62.0], 0.2, 0))
    cands = link_detections(per_frame)
    assert len(cands) == 3
    assert cands[0].n_frames == 5 and cands[0].score == pytest.approx(0.9)  # best first
    assert [c.n_frames for c in cands[1:]] == [1, 1]
    assert [c.score for c in cands[1:]] == pytest.approx([0.3, 0.2])
    # requiring two frames drops them
    kept = link_detections(per_frame, config=LinkConfig(min_frames=2))
    assert [c.n_frames for c in kept] == [5]


def test_classes_are_not_linked_together() -> None:
    per_frame = lesion_track(range(0, 4), peak=1)
    per_frame.update({f: dets((LESION, 0.8, 1)) for f in (4, 5)})  # a bubble call after it
    cands = link_detections(per_frame, classes=["filling_defect", "air_bubble"])
    assert sorted((c.label_name, c.first_frame, c.last_frame) for c in cands) == [
        ("air_bubble", 4, 5), ("filling_defect", 0, 3)]


def test_side_by_side_lesions_stay_apart_and_each_box_joins_one_track() -> None:
    right = shifted(LESION, dx=60.0)
    per_frame = {f: dets((shifted(LESION, dx=0.5 * f), 0.8, 0), (shifted(right, dx=-0.5 * f),
                                                                    0.7 + 0.01 * f, 0))
                 for f in range(6)}
    cands = link_detections(per_frame)
    assert len(cands) == 2 and all(c.n_frames == 6 for c in cands)
    # left: equal scores, best frame 2 (nearest the middle, lower index); right: frame 5
    assert {round(c.box[0]) for c in cands} == {101, 160 - 2}


def test_a_box_that_grows_links_with_ios_but_not_with_iou() -> None:
    small = [100.0, 100.0, 110.0, 110.0]
    big = shifted(small, grow=5.0)  # twice the side: IoU 0.25, IoS 1
    per_frame = {0: dets((small, 0.9, 0)), 1: dets((big, 0.5, 0))}
    assert len(link_detections(per_frame)) == 1
    assert len(link_detections(per_frame, config=LinkConfig(overlap="iou",
                                                            min_overlap=0.3))) == 2


def test_box_overlap_kinds() -> None:
    a = [[0.0, 0.0, 10.0, 10.0]]
    b = [[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 5.0, 5.0], [20.0, 20.0, 20.0, 30.0]]
    assert box_overlap(a, b, "iou")[0] == pytest.approx([50 / 150, 25 / 100, 0.0])
    assert box_overlap(a, b, "ios")[0] == pytest.approx([0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="ios"):
        box_overlap(a, b, "dice")  # type: ignore[arg-type]


def test_best_frame_ties_go_to_the_middle_of_the_track() -> None:
    per_frame = {f: dets((LESION, 0.7, 0)) for f in range(4, 9)}
    (c,) = link_detections(per_frame)
    assert c.best_frame == 6


def test_linker_streams_and_matches_the_batch_function() -> None:
    per_frame = {**lesion_track(range(3, 8), peak=5), 12: dets(([0, 0, 8, 8], 0.4, 0))}
    linker = Linker(LinkConfig())
    for f in range(15):
        linker.add(f, per_frame.get(f, EMPTY), height_mm=float(f))
    streamed = linker.finish()
    assert streamed == link_detections(per_frame, heights_mm={f: float(f) for f in range(15)})
    with pytest.raises(ValueError, match="twice"):
        linker.finish()
    with pytest.raises(ValueError, match="after finish"):
        linker.add(20, EMPTY)


def test_linker_accepts_raw_detections() -> None:
    transform = Transform(stored_shape=(300, 200), flipped=False, crop=(0, 300, 0, 200),
                          scale=(1.0, 1.0), model_shape=(300, 200))
    raw = RawDetections(boxes=np.asarray([LESION], np.float32), scores=np.asarray([0.6]),
                        labels=np.asarray([0]), transform=transform)
    (c,) = link_detections({0: raw, 1: raw})
    assert isinstance(c, TomoCandidate) and c.n_frames == 2


def test_refusals() -> None:
    with pytest.raises(ValueError, match="increasing"):
        linker = Linker()
        linker.add(3, EMPTY)
        linker.add(3, EMPTY)
    with pytest.raises(ValueError, match="more than once"):
        link_detections([(1, EMPTY), (1, EMPTY)])
    with pytest.raises(ValueError, match="no height"):
        link_detections({5: lesion_track(range(5, 6), 5)[5]}, heights_mm=[1.0, 2.0])
    with pytest.raises(ValueError, match="one of each"):
        link_detections({0: Dets(np.zeros((2, 4)), np.zeros(1), np.zeros(2, np.int64))})
    with pytest.raises(ValueError, match="non-finite"):
        link_detections({0: dets(([0.0, 0.0, math.nan, 1.0], 0.5, 0))})
    with pytest.raises(ValueError, match="frame_step"):
        Linker(frame_step=0)
    for bad in ({"min_overlap": 0.0}, {"max_gap": -1}, {"min_frames": 0}, {"min_score": 2.0},
                {"overlap": "dice"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LinkConfig(**bad)


def test_min_score_drops_weak_detections_before_linking() -> None:
    per_frame = lesion_track(range(10, 15), peak=12)  # scores 0.6, 0.75, 0.9, 0.75, 0.6
    (c,) = link_detections(per_frame, config=LinkConfig(min_score=0.7))
    assert (c.first_frame, c.last_frame, c.n_frames) == (11, 13, 3)
