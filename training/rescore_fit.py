"""Fit the rescoring model (``serving.pipeline.rescore``) on validation data.

Each lesion candidate of each validation case, run through serving's own
:func:`serving.pipeline.candidates.analyse_study` without rescoring, gives one row of
features (:data:`serving.pipeline.rescore.FEATURES`) and a label: 1 when it hits a true
lesion (the evaluation's hit rule, :func:`training.metrics.hits`), else 0. Every row also
appears a second time as a single-view row (``other_view = 0``, no partner), so the same
weights serve requests that carry only one view. Only candidates the network scores at least
:data:`FIT_MIN_SCORE` enter the fit. The fit is an L2-penalised logistic regression (scipy
L-BFGS); the penalty (``l2``) is fixed and recorded in the card's ``fitted_on`` section.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

from serving.pipeline.candidates import ImageCandidates, analyse_study, finish
from serving.pipeline.dicom_in import read_image
from serving.pipeline.model import DetectorModel
from serving.pipeline.rescore import FEATURES, CandidateEvidence, RescoreModel, feature_matrix
from training.datasets import study_groups
from training.metrics import hits

#: L2 penalty on the weights (not the bias), per unit of total row weight.
L2 = 1e-3
#: Candidates the network scores below this are left out of the fit: the operating points
#: all lie far above it, and the many near-zero candidates would otherwise dominate the fit.
FIT_MIN_SCORE = 0.1


def analyse_items(model: DetectorModel, items: list[dict[str, Any]], *, rescore: bool = True,
                  final: bool = True, desc: str = "analyse") -> list[ImageCandidates]:
    """Candidates of every item, in item order, analysed study by study (both views of a case
    together: :func:`training.datasets.study_groups`), as
    :func:`serving.pipeline.candidates.analyse_study` with ``rescore`` and ``final``."""
    out: list[ImageCandidates | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, unit="img")
    for members in study_groups(items):
        images = [read_image(Path(items[i]["_root"]) / items[i]["image"],
                             reduce_to_spacing_mm=model.preprocess.spacing_mm)
                  for i in members]
        analysed = analyse_study(images, model, rescore=rescore, final=final)
        for i, c in zip(members, analysed, strict=True):
            out[i] = c
        bar.update(len(members))
    bar.close()
    return [c for c in out if c is not None]


def evidence_rows(evidence: Sequence[CandidateEvidence], labels: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(R, F)``, labels ``(R,)`` and row weights ``(R,)`` of the candidates whose
    detector score is at least :data:`FIT_MIN_SCORE`: each as given, and again as a
    single-view row (``other_view = 0``, no partner). ``labels`` ``(N,)``: 1.0 for a
    candidate that hits a true lesion, else 0.0."""
    use = [k for k, e in enumerate(evidence) if e.score >= FIT_MIN_SCORE]
    paired = [evidence[k] for k in use]
    single = [replace(e, other_view=False, partner=0.0) for e in paired]
    y = np.asarray(labels, np.float64).reshape(-1)[use]
    x = np.concatenate([feature_matrix(paired), feature_matrix(single)])
    return x, np.concatenate([y, y]), np.ones(len(x))


def stack_rows(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`evidence_rows` of many images or volumes, concatenated.

    Raises:
        ValueError: no candidate at all (nothing to fit on).
    """
    rows = [r for r in rows if len(r[1])]
    if not rows:
        raise ValueError("no candidates on the validation data: nothing to fit the "
                         "rescoring on")
    return (np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]),
            np.concatenate([r[2] for r in rows]))


def training_rows(items: Sequence[dict[str, Any]], cands: Sequence[ImageCandidates]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(R, F)``, labels ``(R,)`` and row weights ``(R,)``: every candidate as
    analysed, and again as a single-view row (:func:`evidence_rows`)."""
    rows = []
    for it, c in zip(items, cands, strict=True):
        if not len(c.boxes):
            continue
        truth = np.asarray(it.get("boxes", []), np.float64).reshape(-1, 4)
        hit = np.asarray(hits(c.boxes, truth).any(axis=1) if len(truth)
                         else np.zeros(len(c.boxes), bool), dtype=bool)
        rows.append(evidence_rows(c.evidence, hit.astype(np.float64)))
    return stack_rows(rows)


def _loss(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float
          ) -> tuple[float, np.ndarray]:
    z = x @ theta[1:] + theta[0]
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    eps = 1e-12
    total = w.sum()
    nll = -np.sum(w * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))) / total
    grad_z = w * (p - y) / total
    grad = np.concatenate([[grad_z.sum()], x.T @ grad_z])
    grad[1:] += 2 * l2 * theta[1:]
    return float(nll + l2 * np.sum(theta[1:] ** 2)), grad


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = L2,
        fitted_on: dict[str, Any] | None = None) -> RescoreModel:
    """L2-penalised weighted logistic regression on ``x`` ``(R, F)``, ``y`` ``(R,)`` in
    {0, 1}, ``w`` ``(R,)`` > 0.

    Raises:
        ValueError: one label class is missing or the optimiser fails.
    """
    if y.min() == y.max():
        raise ValueError("the rescoring fit needs both true-lesion and false candidates")
    theta0 = np.zeros(x.shape[1] + 1)
    theta0[1] = 1.0  # start from the detector's own score
    res = minimize(_loss, theta0, args=(x, y, w, l2), jac=True, method="L-BFGS-B")
    if not res.success and not np.isfinite(res.fun):
        raise ValueError(f"rescoring fit failed: {res.message}")
    info = {"rows": len(y), "positives": int(y.sum()), "l2": l2,
            "loss": round(float(res.fun), 5), **(fitted_on or {})}
    return RescoreModel(weights=tuple(float(v) for v in res.x[1:]), bias=float(res.x[0]),
                        fitted_on=info)


def fit_on(model: DetectorModel, items: list[dict[str, Any]], data: str
           ) -> tuple[RescoreModel, list[ImageCandidates]]:
    """Analyse ``items`` without rescoring, fit, and return the model and the analysis."""
    cands = analyse_items(model, items, rescore=False, final=False, desc="rescoring features")
    x, y, w = training_rows(items, cands)
    return fit(x, y, w, fitted_on={"data": data, "images": len(items),
                                   "features": list(FEATURES)}), cands


def predictions(cands: Sequence[ImageCandidates], model: DetectorModel,
                rescoring: RescoreModel | None) -> list[dict[str, Any]]:
    """Evaluation predictions per image from unfinished candidates (``final=False``) with
    ``rescoring`` applied (no new network pass): ``boxes``, ``scores`` (final, nested boxes
    suppressed), ``mimic_boxes``, ``mimic_scores``, ``mimic_labels``, ``spacing_mm``."""
    out = []
    for c in cands:
        f = finish(c, rescoring, model.decode.nested_ios_thresh)
        out.append({"boxes": f.boxes, "scores": np.asarray(f.scores, np.float64),
                    "mimic_boxes": f.mimic_boxes, "mimic_scores": f.mimic_scores,
                    "mimic_labels": list(f.mimic_labels),
                    "spacing_mm": list(c.image.spacing_mm or ())})
    return out


#: Mimic calls are shown from the lowest score at which at least this share of the calls at
#: or above it are right (hit a true mimic of the same kind) on validation data.
MIMIC_PRECISION = 0.8


def mimic_threshold(items: Sequence[dict[str, Any]], preds: Sequence[dict[str, Any]],
                    precision: float = MIMIC_PRECISION) -> tuple[float, dict[str, Any]]:
    """The mimic reporting threshold: the lowest mimic-call score ``t`` such that the calls
    scoring ``>= t`` have at least ``precision`` right on ``items``; 1.0 when none does.
    Returns the threshold and a summary (calls, right, true mimics found)."""
    scored: list[tuple[float, bool]] = []
    truths = 0
    for it, p in zip(items, preds, strict=True):
        mimics = [m for m in it.get("mimics", []) if isinstance(m, dict)]
        truths += len(mimics)
        boxes = np.asarray(p.get("mimic_boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        for box, score, label in zip(boxes, p.get("mimic_scores", []),
                                     p.get("mimic_labels", []), strict=True):
            same = np.asarray([m["box"] for m in mimics if m.get("kind") == label],
                              np.float64).reshape(-1, 4)
            is_right = bool(len(same)) and bool(hits(box[None], same).any())
            scored.append((float(score), is_right))
    scored.sort(key=lambda t: -t[0])
    best = 1.0
    right = 0
    for k, (score, ok) in enumerate(scored, start=1):
        right += int(ok)
        if right / k >= precision:
            best = score
    calls = sum(s >= best for s, _ in scored)
    correct = sum(ok for s, ok in scored if s >= best)
    return round(best, 6), {"precision_target": precision, "calls": calls, "right": correct,
                            "true_mimics": truths}
