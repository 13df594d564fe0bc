"""Every candidate of a study, before any operating point: the network's boxes split into
lesion candidates and mimic calls, located, rescored with the evidence of the same image and
of the other view, and with nested boxes suppressed.

:func:`analyse_study` is what :func:`serving.pipeline.detect.detect` thresholds, what
``galacto calibrate`` counts on normal studies, and what evaluation and the rescoring fit
read, so all of them see the same scores.

Boxes are ``[x1, y1, x2, y2]`` stored-image pixels (x = column, x2/y2 exclusive).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.locate import (
    LandmarkError,
    Landmarks,
    ViewLocation,
    find_landmarks,
    locate_in_view,
    pair_cost,
)
from serving.pipeline.locate.breast_frame import view_group
from serving.pipeline.model import DetectorModel
from serving.pipeline.postprocess import suppress_nested
from serving.pipeline.rescore import (
    OVERLAP_IOS,
    CandidateEvidence,
    RescoreModel,
    intersection_over_smaller,
)
from serving.pipeline.run import decoded_grid, predict

#: the lesion class of every model (class index 0)
LESION_CLASS = "filling_defect"


@dataclass
class ImageCandidates:
    """All candidates of one image.

    Attributes:
        image: the intake image.
        landmarks: nipple etc., or None when they could not be found (then no location).
        warnings: intake and landmark warnings.
        boxes: ``(N, 4)`` lesion candidate boxes, best final score first.
        detector_scores: ``(N,)`` the network's lesion scores.
        scores: ``(N,)`` final scores (rescored when the card has a rescoring model).
        evidence: per candidate, what the rescoring used.
        locations: per candidate, its location in this view (None without landmarks).
        mimic_boxes, mimic_scores, mimic_labels: the mimic-class boxes ``(K, 4)``, ``(K,)``
            and their class names, best first, nested ones suppressed per class.
        timings_ms: per stage.
    """

    image: Image
    landmarks: Landmarks | None
    warnings: list[str]
    boxes: np.ndarray
    detector_scores: np.ndarray
    scores: np.ndarray
    evidence: list[CandidateEvidence]
    locations: list[ViewLocation | None]
    mimic_boxes: np.ndarray
    mimic_scores: np.ndarray
    mimic_labels: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)


def rescore_model(model: DetectorModel) -> RescoreModel | None:
    """The card's rescoring model, or None when the card has none (single-score models).
    Raises ValueError on a malformed ``rescoring`` section."""
    section = model.card.get("rescoring")
    return None if section is None else RescoreModel.from_dict(section)


def _landmarks(image: Image, warnings: list[str]) -> Landmarks | None:
    try:
        return find_landmarks(image)
    except LandmarkError as exc:
        warnings.append(f"no location: {exc}")
        return None


def _here(boxes: np.ndarray, mimic_boxes: np.ndarray, mimic_scores: np.ndarray,
          mask: np.ndarray) -> np.ndarray:
    """Per lesion box, the best score of a ``mask``-selected mimic box at the same place."""
    out = np.zeros(len(boxes))
    if not len(boxes) or not mask.any():
        return out
    ios = intersection_over_smaller(boxes, mimic_boxes[mask])
    best = np.where(ios >= OVERLAP_IOS, mimic_scores[mask][None, :], 0.0)
    return np.asarray(best.max(axis=1), dtype=np.float64)


def _first_pass(image: Image, model: DetectorModel) -> ImageCandidates:
    """Network, class split and per-view location of one image (no rescoring yet)."""
    warnings = list(image.warnings)
    raw = predict(image, model)
    t0 = time.perf_counter()
    grid = decoded_grid(image)  # landmarks work on the decoded pixels' own grid
    scale = float(image.decode_scale)
    marks = _landmarks(grid, warnings)
    lesion = raw.labels == 0
    boxes, scores = raw.boxes[lesion], raw.scores[lesion]
    locs = [locate_in_view(b / scale, grid, marks, score=float(s)) if marks else None
            for b, s in zip(boxes, scores, strict=True)]
    mimic = ~lesion
    m_boxes, m_scores = raw.boxes[mimic], raw.scores[mimic]
    m_labels = raw.labels[mimic]
    keep = suppress_nested(m_boxes, m_scores, m_labels, model.decode.nested_ios_thresh)
    names = [model.classes[int(k)] for k in m_labels[keep]]
    bubble = np.array([n == "air_bubble" for n in names], bool)
    mb, ms = m_boxes[keep], m_scores[keep]
    bubble_here = _here(boxes, mb, ms, bubble)
    other_here = _here(boxes, mb, ms, ~bubble)
    evidence = [CandidateEvidence(score=float(s), bubble_here=float(b),
                                  other_mimic_here=float(o))
                for s, b, o in zip(scores, bubble_here, other_here, strict=True)]
    timings = dict(raw.timings_ms)
    timings["locate"] = (time.perf_counter() - t0) * 1e3
    return ImageCandidates(image=image, landmarks=marks, warnings=warnings, boxes=boxes,
                           detector_scores=scores, scores=scores.copy(), evidence=evidence,
                           locations=locs, mimic_boxes=mb, mimic_scores=ms, mimic_labels=names,
                           timings_ms=timings)


def partner_scores(cc: Sequence[tuple[ViewLocation, float]],
                   other: Sequence[tuple[ViewLocation, float]]) -> tuple[list[float], list[float]]:
    """One-to-one partners between the lesion candidates of the CC and the ML/MLO views of
    one breast: each candidate's ``(location, detector score)`` in, each one's partner's
    detector score out (0 when unmatched), for ``cc`` and ``other`` in their given order.

    As in the two-view fusion, the admissible pairs (:func:`serving.pipeline.locate.
    pair_cost`: depth behind the nipple, size, scores and, when both views give one, the
    single-view 3D position of a tomosynthesis candidate) are taken in increasing cost, each
    candidate at most once, so one lesion cannot lend its score to a bubble beside it. Pairs
    are ordered by (cost, CC box, other box), not by input order, so the result does not
    depend on the order of the images or of the candidates."""
    pairs = []
    for i, (la, _) in enumerate(cc):
        for j, (lb, _) in enumerate(other):
            cost = pair_cost(la, lb)
            if cost is not None:
                pairs.append((cost, la.box, lb.box, i, j))
    partner_cc = [0.0] * len(cc)
    partner_ot = [0.0] * len(other)
    used_cc: set[int] = set()
    used_ot: set[int] = set()
    for _, _, _, i, j in sorted(pairs, key=lambda p: (p[0], p[1], p[2])):
        if i in used_cc or j in used_ot:
            continue
        used_cc.add(i)
        used_ot.add(j)
        partner_cc[i] = float(other[j][1])
        partner_ot[j] = float(cc[i][1])
    return partner_cc, partner_ot


def _add_other_view(study: list[ImageCandidates]) -> None:
    """Fill ``other_view`` and ``partner`` of every lesion candidate from the complementary
    views of the same breast in ``study`` (:func:`partner_scores`)."""
    for lat in ("L", "R"):
        side = [c for c in study if c.landmarks is not None and c.image.laterality == lat]
        groups = {g: [c for c in side if view_group(c.image.view) == g] for g in ("cc", "other")}
        if not groups["cc"] or not groups["other"]:
            continue
        cc = [(c, k) for c in groups["cc"] for k in range(len(c.evidence))]
        ot = [(c, k) for c in groups["other"] for k in range(len(c.evidence))]

        def located(rows: list[tuple[ImageCandidates, int]]) -> list[tuple[ViewLocation, float]]:
            out = []
            for c, k in rows:
                loc = c.locations[k]
                assert loc is not None
                out.append((loc, float(c.detector_scores[k])))
            return out

        partner_cc, partner_ot = partner_scores(located(cc), located(ot))
        for items, partners in ((cc, partner_cc), (ot, partner_ot)):
            for (c, k), partner in zip(items, partners, strict=True):
                ev = c.evidence[k]
                c.evidence[k] = CandidateEvidence(ev.score, ev.bubble_here,
                                                  ev.other_mimic_here, True, partner)


def finish(c: ImageCandidates, rescoring: RescoreModel | None, ios_thresh: float
           ) -> ImageCandidates:
    """A copy of ``c`` with final scores (``rescoring`` applied, if any), nested boxes
    suppressed (:func:`serving.pipeline.postprocess.suppress_nested`) and best-first order."""
    scores = rescoring.scores(c.evidence) if rescoring is not None else c.detector_scores
    keep = suppress_nested(c.boxes, scores, np.zeros(len(c.boxes), np.int64), ios_thresh)
    locs = [c.locations[int(i)] for i in keep]
    locs = [None if loc is None else _with_score(loc, float(scores[i]))  # matching weighs
            for loc, i in zip(locs, keep, strict=True)]                  # by the final score
    return replace(c, boxes=c.boxes[keep], scores=np.asarray(scores)[keep],
                   detector_scores=c.detector_scores[keep],
                   evidence=[c.evidence[int(i)] for i in keep], locations=locs,
                   timings_ms=dict(c.timings_ms))


def _with_score(loc: ViewLocation, score: float) -> ViewLocation:
    return replace(loc, score=score)


def analyse_study(images: Sequence[Image], model: DetectorModel, rescore: bool = True,
                  final: bool = True) -> list[ImageCandidates]:
    """Candidates of the images of ONE study (any views and breasts), in input order.

    Args:
        images: intake images of one study.
        model: the detector.
        rescore: apply the card's rescoring model (False: final score = detector score).
        final: apply :func:`finish` (False: every lesion candidate, unsuppressed, with
            ``scores`` = detector scores: what the rescoring fit reads; call :func:`finish`
            on each later).

    Raises:
        ValueError: the card's rescoring section is malformed.
    """
    study = [_first_pass(im, model) for im in images]
    t0 = time.perf_counter()
    _add_other_view(study)
    rescoring = rescore_model(model) if rescore else None
    if final:
        study = [finish(c, rescoring, model.decode.nested_ios_thresh) for c in study]
    share = (time.perf_counter() - t0) * 1e3 / max(len(study), 1)
    for c in study:
        c.timings_ms["rescore"] = share
    return study
