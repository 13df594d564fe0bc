"""Two-view rescoring of tomosynthesis (DBT) volume candidates.

A filling defect sits in a duct: a CC volume and an ML/MLO volume of the same breast both
show it, at the same depth behind the nipple, and, because each DBT view locates a finding in
3D on its own (the plane's height is the third dimension), at the same single-view position
in the uncompressed breast (:attr:`serving.pipeline.locate.ViewLocation.coronal_mm`). An
out-of-focus smear, a duct crossing or a bubble has no such partner. The 2D rescoring
(:mod:`serving.pipeline.rescore`) uses that evidence on 2D images; this module gives volume
candidates the same features:

- ``score``: the detector's score (the track's highest slab score);
- ``bubble_here``, ``other_mimic_here``: the best mimic scores at the candidate's place in
  the same volume (in-plane overlap and overlapping frames,
  :func:`serving.pipeline.detect_volume.analyse_volume`);
- ``other_view`` and ``partner``: whether the breast's complementary view is a located
  volume of the same study, and the detector score of the candidate's one-to-one partner
  there (:func:`serving.pipeline.candidates.partner_scores`, whose pair cost adds the
  single-view 3D gate of :func:`serving.pipeline.locate.pair_cost` for volumes). Partners are
  matched per pair of volumes (a CC volume against one ML/MLO volume) and a candidate keeps
  its best partner over the pairs, so a repeated view does not take the partner from its
  twin. Two volumes are a pair only when their posterior nipple lines agree within a factor
  of :data:`MAX_PNL_RATIO`: a volume whose landmarks are implausible for the same breast
  (e.g. a failed nipple search) gives no evidence rather than "no partner".

The logistic model is the card's ``tomosynthesis.rescoring``, fitted on DBT validation volumes
by ``galacto tomo-points`` (``training/tomo_points.py``), so no weight is set by hand, and the
card's tomosynthesis operating points are chosen on its output. A card without it keeps the
detector's scores. 2D images and volumes are never partners of each other: their scores
come from different models.

Every feature is a function of sets (one-to-one matching ordered by cost and boxes), so the
result does not depend on the order of the volumes or candidates; and of depths, heights and
scores, so it is unchanged by mirroring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from serving.pipeline.candidates import partner_scores
from serving.pipeline.detect_volume import DBT_EVIDENCE, VolumeCandidates
from serving.pipeline.locate.breast_frame import view_group
from serving.pipeline.rescore import CandidateEvidence, RescoreModel

__all__ = ["DBT_RESCORED_EVIDENCE", "MAX_PNL_RATIO", "other_view_evidence", "paired_volumes",
           "rescore_volumes"]

#: How a rescored volume finding's evidence starts (instead of ``DBT_EVIDENCE``).
DBT_RESCORED_EVIDENCE: Final = "tomosynthesis: rescored"
#: A CC and an ML/MLO volume of one breast are compared only when their posterior nipple line
#: lengths (:attr:`serving.pipeline.locate.Landmarks.pnl_length_mm`) lie within this factor
#: of each other. The two views of one breast agree far closer (radiographic practice expects
#: the CC's within 1 cm of the MLO's); a factor of 2 only rejects landmarks that cannot
#: belong to the same breast.
MAX_PNL_RATIO: Final = 2.0


def _pnl_agree(a: VolumeCandidates, b: VolumeCandidates) -> bool:
    if a.landmarks is None or b.landmarks is None:
        return False
    pa, pb = a.landmarks.pnl_length_mm, b.landmarks.pnl_length_mm
    return pa > 0 and pb > 0 and max(pa, pb) <= MAX_PNL_RATIO * min(pa, pb)


def paired_volumes(volumes: Sequence[VolumeCandidates]) -> list[tuple[int, int]]:
    """``(cc index, other index)`` into ``volumes`` of every CC and ML/MLO volume pair of one
    breast (same laterality ``L`` or ``R``, both with landmarks whose posterior nipple lines
    agree within :data:`MAX_PNL_RATIO`), in index order."""
    pairs = []
    for i, a in enumerate(volumes):
        if view_group(a.header.view) != "cc" or a.header.laterality not in ("L", "R"):
            continue
        for j, b in enumerate(volumes):
            if (view_group(b.header.view) == "other" and b.header.laterality == a.header.laterality
                    and _pnl_agree(a, b)):
                pairs.append((i, j))
    return pairs


def other_view_evidence(volumes: Sequence[VolumeCandidates]
                        ) -> list[list[CandidateEvidence]]:
    """Every lesion candidate's evidence (its volume's ``lesion_evidence``) with
    ``other_view`` and ``partner`` from the paired volumes (:func:`paired_volumes`): for each
    pair, one-to-one partners among the located candidates
    (:func:`~serving.pipeline.candidates.partner_scores`); a candidate keeps its best
    partner's detector score over its pairs, and ``other_view`` is True when it was located
    and its volume has a pair. Order of the volumes does not matter."""
    out = [[replace(e, other_view=False, partner=0.0) for e in vc.lesion_evidence]
           for vc in volumes]
    for i, j in paired_volumes(volumes):
        rows = []
        for v in (i, j):
            vc = volumes[v]
            rows.append([(k, loc.in_plane) for k, loc in enumerate(vc.locations)
                         if loc is not None])
        found = partner_scores([(loc, float(volumes[i].lesions[k].score)) for k, loc in rows[0]],
                               [(loc, float(volumes[j].lesions[k].score)) for k, loc in rows[1]])
        for v, located, partners in zip((i, j), rows, found, strict=True):
            for (k, _), partner in zip(located, partners, strict=True):
                e = out[v][k]
                out[v][k] = replace(e, other_view=True, partner=max(e.partner, partner))
    return out


def _text(vc: VolumeCandidates, k: int, ev: CandidateEvidence) -> str:
    """Lesion ``k``'s evidence text once rescored: what the other view gave."""
    if not ev.other_view:
        view = ("no located volume of the other view of this breast in the study"
                if vc.locations[k] is not None else "not located in this volume: no other view "
                "compared")
    elif ev.partner > 0:
        view = f"other view: partner scored {ev.partner:.2f}"
    else:
        view = "other view: no partner at this depth and position"
    return vc.evidence[k].replace(DBT_EVIDENCE, f"{DBT_RESCORED_EVIDENCE} ({view})", 1)


def rescore_volumes(volumes: Sequence[VolumeCandidates], rescoring: RescoreModel | None
                    ) -> list[VolumeCandidates]:
    """The lesion candidates of one study's ``volumes`` (as analysed, not yet rescored) with
    their other-view evidence (:func:`other_view_evidence`) and, with ``rescoring`` (the
    card's ``tomosynthesis.rescoring``), their final ``scores``, ``rescored`` set and each
    ``evidence`` text saying what the other view gave; copies, in the given order. With
    ``rescoring`` None the scores stay the detector's (the evidence is filled, for a fit).

    Raises:
        ValueError: a volume was already rescored (its text and scores are no longer the
            detector's).
    """
    if any(vc.rescored for vc in volumes):
        raise ValueError("rescore_volumes takes volumes as analysed, not rescored ones")
    out = []
    for vc, evidence in zip(volumes, other_view_evidence(volumes), strict=True):
        if rescoring is None:
            out.append(replace(vc, lesion_evidence=evidence))
            continue
        out.append(replace(
            vc, lesion_evidence=evidence,
            scores=[float(v) for v in rescoring.scores(evidence)],
            evidence=[_text(vc, k, e) for k, e in enumerate(evidence)], rescored=True))
    return out
