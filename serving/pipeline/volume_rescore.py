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
  volume of the same request or study, and the detector score of the candidate's one-to-one
  partner there (:func:`serving.pipeline.candidates.partner_scores`, whose pair cost adds the
  single-view 3D gate of :func:`serving.pipeline.locate.pair_cost` for volumes).

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

from serving.pipeline.candidates import partner_scores, view_group
from serving.pipeline.detect_volume import DBT_EVIDENCE, VolumeCandidates
from serving.pipeline.locate import ViewLocation
from serving.pipeline.rescore import RescoreModel

__all__ = ["DBT_RESCORED_EVIDENCE", "add_other_view", "rescore_volumes"]

#: How a rescored volume finding's evidence starts (instead of ``DBT_EVIDENCE``).
DBT_RESCORED_EVIDENCE: Final = "tomosynthesis: rescored"


def _located(vc: VolumeCandidates) -> list[tuple[int, ViewLocation]]:
    """``(lesion index, in-plane location)`` of the lesions of ``vc`` that were located."""
    return [(k, loc.in_plane) for k, loc in enumerate(vc.locations) if loc is not None]


def add_other_view(volumes: Sequence[VolumeCandidates]) -> None:
    """Fill ``other_view`` and ``partner`` of every located lesion candidate's
    ``lesion_evidence`` from the complementary volumes of the same breast in ``volumes``
    (one request's or study's volumes; CC against ML/MLO, per laterality, all volumes of one
    breast and view family pooled). Candidates of a breast without a located complementary
    volume keep ``other_view = False``."""
    for lat in ("L", "R"):
        side = [vc for vc in volumes if vc.landmarks is not None and vc.header.laterality == lat]
        groups = {g: [vc for vc in side if view_group(vc.header.view) == g]
                  for g in ("cc", "other")}
        if not groups["cc"] or not groups["other"]:
            continue
        rows = {g: [(vc, k, loc) for vc in groups[g] for k, loc in _located(vc)]
                for g in ("cc", "other")}
        if not rows["cc"] or not rows["other"]:
            continue
        partners = partner_scores(
            [(loc, float(vc.lesions[k].score)) for vc, k, loc in rows["cc"]],
            [(loc, float(vc.lesions[k].score)) for vc, k, loc in rows["other"]])
        for g, found in zip(("cc", "other"), partners, strict=True):
            for (vc, k, _), partner in zip(rows[g], found, strict=True):
                vc.lesion_evidence[k] = replace(vc.lesion_evidence[k], other_view=True,
                                                partner=partner)


def _text(vc: VolumeCandidates, k: int) -> str:
    """Lesion ``k``'s evidence text once rescored: what the other view gave."""
    ev = vc.lesion_evidence[k]
    if not ev.other_view:
        view = "no other view of this breast in the request"
    elif ev.partner > 0:
        view = f"other view: partner scored {ev.partner:.2f}"
    else:
        view = "other view: no partner at this depth and position"
    head = f"{DBT_RESCORED_EVIDENCE} (detector score {vc.lesions[k].score:.2f}; {view})"
    return vc.evidence[k].replace(DBT_EVIDENCE, head, 1)


def rescore_volumes(volumes: Sequence[VolumeCandidates], rescoring: RescoreModel | None
                    ) -> None:
    """Rescore, in place, the lesion candidates of one request's or study's ``volumes``:
    :func:`add_other_view`, then ``scores`` from ``rescoring`` (the card's
    ``tomosynthesis.rescoring``), ``rescored`` set and each ``evidence`` text saying what the
    other view gave. With ``rescoring`` None, ``scores`` stay the detector's (the partner
    evidence is still filled in, for the fit).

    Raises:
        ValueError: never for well-formed candidates; a malformed model is refused when the
            card is loaded (:func:`serving.pipeline.model.parse_tomo_section`).
    """
    add_other_view(volumes)
    if rescoring is None:
        return
    for vc in volumes:
        vc.scores = [float(s) for s in rescoring.scores(vc.lesion_evidence)]
        vc.evidence = [_text(vc, k) for k in range(len(vc.lesions))]
        vc.rescored = True
