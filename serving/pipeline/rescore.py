"""Rescoring of lesion candidates with what the model saw around them and in the other view.

Physics gives two kinds of evidence the network's per-box score does not use:

- **the mimic classes at the same place**: a box that the network also calls an air bubble,
  a cyst or an extravasation (boxes overlapping by intersection over the smaller box
  >= :data:`OVERLAP_IOS`) is less likely a filling defect;
- **the other view**: a filling defect sits in the duct and appears in CC and in ML/MLO at
  the same depth behind the nipple; an air bubble moves between views (and between
  injections), so it usually has no partner there. Partners are matched one-to-one between
  the lesion candidates of the complementary views of a breast, greedily by the two-view
  matching cost of :func:`serving.pipeline.locate.pair_cost` (depth behind the nipple along
  the nipple axis, size, scores), so one lesion cannot lend its score to a bubble beside it.

The final score is a logistic model of these features, fitted on validation data at export
(``training/rescore_fit.py``) and stored in the model card's ``rescoring`` section, so no
weight is set by hand. Every feature is a function of sets (maxima over boxes), so the result
does not depend on the order of the images or boxes, and of depths and scores only, so it is
unchanged by mirroring an image. A candidate without a complementary view (a single-view
request, or no landmarks) gets ``other_view = 0`` and zero partner features: the model was
fitted on such rows too.

numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FEATURES",
    "OVERLAP_IOS",
    "CandidateEvidence",
    "RescoreModel",
    "feature_matrix",
    "intersection_over_smaller",
]

#: Feature names, in the order of :func:`feature_matrix`'s columns and the card's weights.
FEATURES: Final = ("logit_score", "logit_bubble_here", "logit_other_mimic_here", "other_view",
                   "logit_partner")
#: Scores are clipped to [EPS, 1 - EPS] before the logit; a missing score counts as EPS.
EPS: Final = 1e-3
#: A mimic box "is at the same place" as a lesion box when their intersection over the
#: smaller box's area is at least this (the same overlap rule as the nested-box suppression).
OVERLAP_IOS: Final = 0.5


def _logit(p: float) -> float:
    q = min(max(float(p), EPS), 1.0 - EPS)
    return math.log(q / (1.0 - q))


def intersection_over_smaller(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Intersection area over the smaller box's area, ``(N, M)``, for boxes ``a`` ``(N, 4)``
    and ``b`` ``(M, 4)`` ``[x1, y1, x2, y2]`` (any one pixel convention); 0 for empty boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0)


@dataclass(frozen=True)
class CandidateEvidence:
    """The evidence about one lesion candidate (inputs of :func:`feature_matrix`).

    Attributes:
        score: the network's lesion score, in [0, 1].
        bubble_here: best ``air_bubble`` score of a mimic box at the same place, or 0.
        other_mimic_here: best score of another mimic class at the same place, or 0.
        other_view: True when the breast has a complementary view (CC vs ML/MLO) in which the
            candidate could be looked for (and both views were located).
        partner: best lesion score of an admissible partner in that view, or 0.
    """

    score: float
    bubble_here: float = 0.0
    other_mimic_here: float = 0.0
    other_view: bool = False
    partner: float = 0.0


def feature_matrix(evidence: Sequence[CandidateEvidence]) -> npt.NDArray[np.float64]:
    """``(N, len(FEATURES))`` features; partner features are 0 when ``other_view`` is False."""
    rows = []
    for e in evidence:
        ov = 1.0 if e.other_view else 0.0
        rows.append([_logit(e.score), _logit(e.bubble_here), _logit(e.other_mimic_here), ov,
                     ov * _logit(e.partner)])
    return np.asarray(rows, np.float64).reshape(-1, len(FEATURES))


@dataclass(frozen=True)
class RescoreModel:
    """Logistic rescoring: ``score = sigmoid(bias + weights . features)``.

    Attributes:
        weights: one per :data:`FEATURES` name, in that order.
        bias: the intercept.
        fitted_on: where the weights came from (data, rows, positives), for the card.
    """

    weights: tuple[float, ...]
    bias: float
    fitted_on: dict[str, Any]

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES) or not all(
                math.isfinite(w) for w in (*self.weights, self.bias)):
            raise ValueError(f"rescoring needs {len(FEATURES)} finite weights "
                             f"({', '.join(FEATURES)}) and a finite bias, got "
                             f"{list(self.weights)!r} and {self.bias!r}")

    def scores(self, evidence: Sequence[CandidateEvidence]) -> npt.NDArray[np.float32]:
        """Rescored probabilities ``(N,)`` float32 for ``evidence``."""
        if not evidence:
            return np.zeros(0, np.float32)
        z = feature_matrix(evidence) @ np.asarray(self.weights, np.float64) + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The card's ``rescoring`` section."""
        return {"features": list(FEATURES), "weights": [round(w, 6) for w in self.weights],
                "bias": round(self.bias, 6), "overlap_ios": OVERLAP_IOS,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RescoreModel:
        """Inverse of :meth:`to_dict`. Raises ValueError, naming the key, on another feature
        list (a card written for other features cannot be served by this code), weights or
        a bias that are not finite numbers (a JSON string or boolean is not one), another
        ``overlap_ios`` than this code's :data:`OVERLAP_IOS`, or a ``fitted_on`` that is not
        an object."""
        if not isinstance(d, dict):
            raise ValueError(f"rescoring must be an object, got {type(d).__name__}")
        features = d.get("features")
        if not isinstance(features, list) or features != list(FEATURES):
            raise ValueError(f"rescoring.features must be {list(FEATURES)}, got {features!r}")
        weights = d.get("weights")
        if not isinstance(weights, list) or not all(_is_number(w) for w in weights):
            raise ValueError(f"rescoring.weights must be a list of {len(FEATURES)} numbers, "
                             f"got {weights!r}")
        if not _is_number(d.get("bias")):
            raise ValueError(f"rescoring.bias must be a number, got {d.get('bias')!r}")
        overlap = d.get("overlap_ios", OVERLAP_IOS)
        if not _is_number(overlap) or float(overlap) != OVERLAP_IOS:
            raise ValueError(f"rescoring.overlap_ios must be {OVERLAP_IOS} (the overlap rule "
                             f"of this code), got {overlap!r}")
        fitted_on = d.get("fitted_on", {})
        if not isinstance(fitted_on, dict):
            raise ValueError(f"rescoring.fitted_on must be an object, got {fitted_on!r}")
        return cls(weights=tuple(float(w) for w in weights), bias=float(d["bias"]),
                   fitted_on=dict(fitted_on))


def _is_number(v: Any) -> bool:
    """A JSON number: int or float, not bool (a JSON string is not one)."""
    return isinstance(v, int | float) and not isinstance(v, bool)
