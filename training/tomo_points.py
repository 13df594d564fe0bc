"""Tomosynthesis (DBT) operating points and two-view rescoring for a model card, fitted on
DBT validation volumes.

The card's 2D operating points were chosen on rescored 2D images; applied to a volume
candidate's detector score (its highest slab score) they give hundreds of false findings per
volume. This module runs DBT validation volumes exactly as serving runs a study's volumes,
fits the rescoring of volume candidates with their other view, reads the per-volume FROC with
the frame rule, and chooses one threshold per target rate, written into the card's
``tomosynthesis`` section (:func:`serving.pipeline.model.parse_tomo_section` validates it;
serving applies it through :func:`serving.pipeline.volume_points.volume_points` and
:func:`serving.pipeline.volume_rescore.rescore_volumes`).

Steps of :func:`fit_tomo_points`:

1. Every volume of the split(s) through :func:`serving.pipeline.detect_volume.analyse_volume`
   with the given slab settings (:func:`training.predict_dbt.analyse_items`): the candidates
   serving thresholds (per-slab detections linked in depth, refocused, nested candidates
   suppressed in 3D, lesion class apart from mimics).
2. Unless ``rescore`` is off, :func:`fit_volume_rescoring`: partners in the other view of
   each study's breast, a logistic model of the 2D rescoring's features fitted on the
   candidates labelled by the frame rule, and the candidates rescored with it
   (:func:`training.predict_dbt.rescore_items`).
3. :func:`training.evaluate_dbt.evaluate_volumes`: matching by the frame rule
   (:func:`training.metrics.match_volumes`: the 2D box rule and the best frame within the
   lesion's frames +/- 2), the FROC per volume, its CPM and the sensitivity at 1 FP/volume.
4. Per target (:data:`TOMO_TARGETS`: ``high_specificity`` 0.25, ``balanced`` 1,
   ``high_sensitivity`` 2 false positives per volume), :func:`choose_threshold`: of the
   thresholds keeping the validation FP/volume at or under the target, the highest
   sensitivity, and the strictest threshold that reaches it (so no threshold with fewer
   false positives finds as many lesions). The threshold is stored rounded down to 6
   decimals and its FP/volume and sensitivity are measured again at the stored value.
   *Unreachable* (threshold :data:`UNREACHABLE_THRESHOLD`, the point reports nothing, the
   card's ``note`` says why): the top-scoring candidates alone exceed the target, or no
   lesion is found within it. *Not reached*: every candidate together stays under the
   target (the ``note`` gives the rate they reach).

``galacto tomo-points --model models/<name>/<version> --val DIR [DIR ...]`` rewrites that
folder's ``model.json`` section in place (:func:`write_tomo_section`, checked by loading the model
again); ``galacto export ... --dbt-val DIR`` fits it at export.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from rich.table import Table

from serving.errors import CommandError
from serving.pipeline.detect_volume import (
    DEFAULT_SLAB,
    DEFAULT_STRIDE,
    TomoSettings,
    VolumeCandidates,
)
from serving.pipeline.model import (
    TOMO_SECTION,
    DetectorModel,
    ModelError,
    TomoCard,
    load_model,
    parse_tomo_section,
    with_tomo_network,
)
from serving.pipeline.rescore import FEATURES, RescoreModel
from serving.pipeline.tomo_network import parse_network
from serving.pipeline.volume_rescore import paired_volumes
from training.data import load_split
from training.data_dbt import is_dbt_item
from training.datasets import study_groups
from training.evaluate_dbt import evaluate_volumes
from training.metrics import FRAME_HIT_RULE, FRAME_TOLERANCE, match_volumes
from training.predict_dbt import (
    analyse_items,
    candidate_labels,
    prediction_of,
    rescore_items,
)
from training.rescore_fit import FIT_MIN_SCORE, evidence_rows, fit, stack_rows
from training.tomo_network import install_network, network_section, source_onnx

__all__ = [
    "TOMO_TARGETS",
    "UNREACHABLE_THRESHOLD",
    "PointChoice",
    "choose_points",
    "choose_threshold",
    "fit_tomo_points",
    "fit_volume_rescoring",
    "format_points_table",
    "froc_points",
    "point_notes",
    "run",
    "write_tomo_section",
]

#: Target false positives per volume of the named tomosynthesis points.
TOMO_TARGETS: Final[dict[str, float]] = {"high_specificity": 0.25, "balanced": 1.0,
                                         "high_sensitivity": 2.0}
#: The threshold of an unreachable point: above every score, it reports nothing.
UNREACHABLE_THRESHOLD: Final = 1.01
#: How the thresholds were chosen, as the card states it.
RULE: Final = ("per target: of the thresholds whose validation false positives per volume "
               "are at most the target, the strictest one reaching the highest sensitivity "
               f"(frame rule +/- {FRAME_TOLERANCE} frames); stored rounded down to 6 decimals "
               "and measured again there")
#: What the thresholds apply to, as the card states it (no rescoring).
SCORES: Final = ("a volume candidate's detector score (its highest slab score; volumes are "
                 "not rescored)")
#: What the thresholds apply to, as the card states it, with a rescoring.
RESCORED_SCORES: Final = ("a volume candidate's rescored score: the logistic model of this "
                          "section's rescoring, of its detector score (highest slab score), "
                          "the mimic scores at its place and its partner in the other view "
                          "of the breast (serving.pipeline.volume_rescore)")


# --------------------------------------------------------------------------- choice

@dataclass(frozen=True)
class PointChoice:
    """The threshold chosen for one target.

    Attributes:
        score_threshold: report ``score >= score_threshold`` (:data:`UNREACHABLE_THRESHOLD`
            when unreachable).
        target_fp_per_volume: the target.
        reachable: False when no threshold finds a lesion within the target.
        note: why it is unreachable, or that the target was not reached; else None.
    """

    score_threshold: float
    target_fp_per_volume: float
    reachable: bool
    note: str | None = None


def froc_points(lesion_scores: ArrayLike, fp_scores: ArrayLike, volumes: int
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The FROC curve of matched scores: ``(thresholds, sensitivity, fp_per_volume)``, one
    point per distinct score of a found lesion or a false positive, thresholds descending
    (reporting ``score >= threshold``).

    Args:
        lesion_scores: per true lesion, the score of its highest-scoring hit (``-inf`` when
            none hits it), as :attr:`training.metrics.matching.Matched.lesion_score`.
        fp_scores: the score of every false positive.
        volumes: volumes (images) the false positives are counted over.

    Raises:
        ValueError: no lesion, or ``volumes < 1``.
    """
    les = np.sort(np.asarray(lesion_scores, np.float64).reshape(-1))
    fps = np.sort(np.asarray(fp_scores, np.float64).reshape(-1))
    if les.size == 0:
        raise ValueError("the validation volumes have no lesion: sensitivity is undefined")
    if volumes < 1:
        raise ValueError(f"volumes must be >= 1, got {volumes}")
    thresholds = np.unique(np.concatenate([les[np.isfinite(les)], fps]))[::-1]
    found = les.size - np.searchsorted(les, thresholds, side="left")
    n_fp = fps.size - np.searchsorted(fps, thresholds, side="left")
    return thresholds, found / les.size, n_fp / float(volumes)


def choose_threshold(thresholds: ArrayLike, sensitivity: ArrayLike, fp_per_volume: ArrayLike,
                     target: float) -> PointChoice:
    """The threshold for ``target`` false positives per volume on a FROC curve (thresholds
    descending, as :func:`froc_points` returns): of the curve points with FP/volume at most
    ``target``, the highest sensitivity, and the strictest (highest) threshold reaching it.

    Unreachable (:data:`UNREACHABLE_THRESHOLD`, with a note) when no point keeps the target
    or none within it finds a lesion. When every candidate together stays under the target,
    the point is chosen as usual and the note says the target was not reached.

    Raises:
        ValueError: a negative or non-finite target, or arrays of different lengths.
    """
    thr = np.asarray(thresholds, np.float64).reshape(-1)
    sens = np.asarray(sensitivity, np.float64).reshape(-1)
    fp = np.asarray(fp_per_volume, np.float64).reshape(-1)
    if not (math.isfinite(target) and target >= 0):
        raise ValueError(f"target must be a finite rate >= 0, got {target!r}")
    if not thr.size == sens.size == fp.size:
        raise ValueError(f"curve arrays differ in length: {thr.size}, {sens.size}, {fp.size}")
    within = fp <= target + 1e-12
    if not within.any():
        top = f"{fp[0]:.3f}" if fp.size else "no candidate"
        return PointChoice(UNREACHABLE_THRESHOLD, target, False,
                           f"unreachable: the top-scoring candidates alone give {top} false "
                           f"positives per volume, more than the target {target:g}; score >= "
                           f"{UNREACHABLE_THRESHOLD} reports nothing")
    best = float(sens[within].max())
    if not best > 0:
        return PointChoice(UNREACHABLE_THRESHOLD, target, False,
                           f"unreachable: no lesion is found at <= {target:g} false positives "
                           f"per volume on the validation data; score >= "
                           f"{UNREACHABLE_THRESHOLD} reports nothing")
    k = int(np.flatnonzero(within & (sens >= best))[0])
    note = None
    if fp[-1] < target:
        note = (f"target {target:g} not reached: every candidate together gives "
                f"{fp[-1]:.3f} false positives per volume")
    return PointChoice(float(thr[k]), target, True, note)


def _stored(threshold: float) -> float:
    """``threshold`` rounded down to 6 decimals (a candidate at it still passes)."""
    return math.floor(threshold * 1e6) / 1e6 if threshold < UNREACHABLE_THRESHOLD \
        else threshold


def choose_points(lesion_scores: ArrayLike, fp_scores: ArrayLike, volumes: int,
                  targets: Mapping[str, float] = TOMO_TARGETS) -> dict[str, dict[str, Any]]:
    """The card's ``operating_points`` for ``targets`` (name -> FP/volume) from matched
    scores (see :func:`froc_points`): per point ``score_threshold``, ``fp_per_volume``,
    ``sensitivity``, ``false_positives``, ``lesions_found``, ``target_fp_per_volume``,
    ``reachable`` and, when there is something to say, ``note``; the measures are taken at
    the stored threshold.

    Raises:
        ValueError: see :func:`froc_points` and :func:`choose_threshold`.
    """
    les = np.asarray(lesion_scores, np.float64).reshape(-1)
    fps = np.asarray(fp_scores, np.float64).reshape(-1)
    curve = froc_points(les, fps, volumes)
    out: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        choice = choose_threshold(*curve, float(target))
        t = _stored(choice.score_threshold)
        found = int(np.count_nonzero(les >= t))
        n_fp = int(np.count_nonzero(fps >= t))
        point: dict[str, Any] = {
            "score_threshold": t, "fp_per_volume": round(n_fp / volumes, 4),
            "sensitivity": round(found / les.size, 4), "target_fp_per_volume": float(target),
            "false_positives": n_fp, "lesions_found": found, "reachable": choice.reachable}
        if choice.note:
            point["note"] = choice.note
        out[name] = point
    return out


# --------------------------------------------------------------------------- fit

def _items(dbt_val_dirs: Sequence[str | Path], split: str, limit: int | None
           ) -> list[dict[str, Any]]:
    """The DBT items of ``split`` in every folder, in order, the first ``limit``.

    Raises:
        ValueError: a folder given twice, a volume (SOPInstanceUID) in two folders, an empty
            split, 2D items, or no lesion at all.
    """
    seen = [Path(d).resolve() for d in dbt_val_dirs]
    twice = sorted({str(d) for d in dbt_val_dirs if seen.count(Path(d).resolve()) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: given more than once (each volume would count "
                         "twice)")
    items: list[dict[str, Any]] = []
    for d in dbt_val_dirs:
        got = load_split(Path(d), split)
        if not got:
            raise ValueError(f"{d}: split {split!r} is empty")
        flat = sum(1 for it in got if not is_dbt_item(it))
        if flat:
            raise ValueError(f"{d}: {flat} of the {len(got)} items of split {split!r} are "
                             "not tomosynthesis volumes; expected a galacto synth --dbt set")
        items += got
    uids = Counter(str(it["sop_instance_uid"]) for it in items if it.get("sop_instance_uid"))
    repeated = sorted(u for u, n in uids.items() if n > 1)
    if repeated:
        raise ValueError(f"{len(repeated)} volume(s) appear more than once across the folders "
                         f"(SOPInstanceUID {repeated[0]}{', ...' if len(repeated) > 1 else ''}); "
                         "a copied dataset would count each volume twice")
    items = items[:limit]
    if not any(it.get("boxes") for it in items):
        raise ValueError(f"{', '.join(str(d) for d in dbt_val_dirs)}: split {split!r} has no "
                         "lesion to fit points on")
    return items


def fit_volume_rescoring(items: Sequence[Mapping[str, Any]],
                         analysed: Sequence[VolumeCandidates], data: str) -> RescoreModel:
    """Fit the two-view rescoring of volume candidates (:mod:`serving.pipeline.
    volume_rescore`) on analysed validation volumes: partner evidence per study
    (:func:`training.predict_dbt.rescore_items` without a model), one row per candidate and
    again as a single-view row (:func:`training.rescore_fit.evidence_rows`), labelled by the
    frame rule (:func:`training.predict_dbt.candidate_labels`), and the 2D fit's penalised
    logistic regression (:func:`training.rescore_fit.fit`).

    Raises:
        ValueError: no candidate, or no true or no false candidate, to fit on.
    """
    paired = rescore_items(items, analysed, None)
    if not any(e.other_view for vc in paired for e in vc.lesion_evidence):
        raise ValueError("no study has a located CC and ML/MLO volume of one breast, so the "
                         "rescoring cannot learn what the other view is worth; give studies "
                         "with both views, or --no-rescore")
    rows = [evidence_rows(vc.lesion_evidence, candidate_labels(it, prediction_of(vc)))
            for it, vc in zip(items, paired, strict=True)]
    x, y, w = stack_rows(rows)
    pairs = sum(len(paired_volumes([paired[i] for i in g])) for g in study_groups(items))
    return fit(x, y, w, fitted_on={"data": data, "volumes": len(items),
                                   "volume_pairs": pairs,
                                   "features": list(FEATURES),
                                   "row_rule": "each candidate scoring >= "
                                               f"{FIT_MIN_SCORE} with its other view and "
                                               "again as a single view"})


def fit_tomo_points(model_dir: str | Path, dbt_val_dir: str | Path | Sequence[str | Path], *,
                    slab: int = DEFAULT_SLAB, stride: int = DEFAULT_STRIDE,
                    slab_mode: Literal["mean", "max"] = "mean",
                    split: str = "validation", limit: int | None = None,
                    targets: Mapping[str, float] = TOMO_TARGETS, progress: bool = True,
                    spacing_mm: float | None = None, rescore: bool = True,
                    network_from: Path | None = None) -> dict[str, Any]:
    """Fit the card's ``tomosynthesis`` section for the model in ``model_dir`` on the DBT
    volumes of ``split`` in ``dbt_val_dir`` (one folder or several, pooled; see the module
    docstring).

    Args:
        model_dir: ``models/<name>/<version>`` (or an export's staging folder).
        dbt_val_dir: DBT dataset folder(s) (``galacto synth --dbt``): items with ``frames``,
            ``frame_ranges``, ``best_frames``.
        slab, stride, slab_mode: how volumes are run (:class:`~serving.pipeline.
            detect_volume.TomoSettings`); serving runs them so by default.
        split: the dataset split.
        limit: only the first ``limit`` volumes.
        targets: point name -> false positives per volume.
        progress: show a progress bar.
        spacing_mm: the pixel spacing volumes are resampled to, written to the section
            (None: the card's ``tomosynthesis.spacing_mm`` when it has one, so a refit keeps
            it; else the volume network's own, the 2D one without a volume network).
        rescore: fit the two-view rescoring (:func:`fit_volume_rescoring`) and choose the
            points on its scores; False: on the detector's scores, no ``rescoring``.
        network_from: an exported model folder whose network the volumes run from now on
            (:func:`training.tomo_network.network_section`; the section's ``network``);
            None: the card's volume network if it names one, else the 2D network.

    Returns:
        The section: ``slab``, ``stride``, ``slab_mode``, (``spacing_mm``,) ``scores``, ``rule``,
        ``operating_points`` (:func:`choose_points`), ``validation`` (``data``, ``split``,
        ``volumes``, ``normal_volumes``, ``lesions``, ``candidates_per_volume``, ``cpm``,
        ``sensitivity_at_1_fp_per_volume``, ``sensitivity_at_fp``, ``hit_rule``,
        ``frame_tolerance``, ``seconds_per_volume``, ``model_sha256`` (of the network the
        volumes ran), ``fitted``; with ``rescore``, ``detector_cpm`` and
        ``detector_sensitivity_at_1_fp_per_volume``: the same volumes on the detector's
        scores), with ``rescore``, ``rescoring``, and with a volume network, ``network``.

    Raises:
        ValueError: bad settings, a split without DBT volumes or without a lesion, a
            rescoring that cannot be fitted, or a network source that cannot serve this
            card's volumes.
        serving.pipeline.model.ModelError: the model folder cannot be loaded.
    """
    card_model = load_model(model_dir)
    if spacing_mm is None and card_model.tomo is not None:
        spacing_mm = card_model.tomo.spacing_mm  # a refit keeps the spacing volumes run at
    settings = TomoSettings(slab=slab, stride=stride, slab_mode=slab_mode, spacing_mm=spacing_mm)
    model, network = _volume_model(card_model, settings, network_from)
    dirs = [dbt_val_dir] if isinstance(dbt_val_dir, str | Path) else list(dbt_val_dir)
    data = ", ".join(str(d) for d in dirs)
    items = _items(dirs, split, limit)
    analysed, seconds = analyse_items(model, items, settings, progress=progress,
                                      desc="tomosynthesis points")
    rescoring, extra = None, {}
    if rescore:
        before = evaluate_volumes(items, [prediction_of(vc) for vc in analysed], 1.01)
        extra = {"detector_cpm": before["froc"]["cpm"],
                 "detector_sensitivity_at_1_fp_per_volume":
                     before["sensitivity_at_1_fp_per_volume"]}
        rescoring = fit_volume_rescoring(items, analysed, data)
        analysed = rescore_items(items, analysed, rescoring)
    preds = [prediction_of(vc) for vc in analysed]
    m = match_volumes(items, preds)
    points = choose_points(m.lesion_score, m.fp_score, m.n_images, targets)
    balanced = points.get("balanced") or next(iter(points.values()))
    report = evaluate_volumes(items, preds, float(balanced["score_threshold"]))
    fr = report["froc"]
    validation = {
        "data": data, "split": split, "volumes": report["volumes"],
        "normal_volumes": report["normal_volumes"], "lesions": report["lesions"],
        "candidates_per_volume": round(report["predictions"] / max(report["volumes"], 1), 1),
        "cpm": fr["cpm"],
        "sensitivity_at_1_fp_per_volume": report["sensitivity_at_1_fp_per_volume"],
        "sensitivity_at_fp": {f"{r:g}": s for r, s in
                              zip(fr["fp_rates"], fr["sensitivity"], strict=True)},
        **extra,
        "hit_rule": FRAME_HIT_RULE, "frame_tolerance": report["frame_tolerance"],
        "seconds_per_volume": round(statistics.fmean(seconds), 2),
        "model_sha256": (model.card["onnx"].get("sha256") if network is None
                         else network["sha256"]),
        "fitted": time.strftime("%Y-%m-%d"),
    }
    spacing = {} if spacing_mm is None else {"spacing_mm": float(spacing_mm)}
    section = {"slab": settings.slab, "stride": settings.stride,
               "slab_mode": settings.slab_mode, **spacing,
               "scores": SCORES if rescoring is None else RESCORED_SCORES, "rule": RULE,
               "operating_points": points, "validation": validation}
    if rescoring is not None:
        section["rescoring"] = rescoring.to_dict()
    if network is not None:
        section["network"] = network
    return section


def _volume_model(model: DetectorModel, settings: TomoSettings, network_from: Path | None
                  ) -> tuple[DetectorModel, dict[str, Any] | None]:
    """``model`` running its volumes on the network they will run once the section is
    written, and that network's entry: ``network_from``'s (:func:`training.tomo_network.
    network_section`), else the card's own volume network, else (None) the 2D one.

    Raises:
        ValueError: the source cannot serve this card's volumes.
    """
    if network_from is None:
        own = model.tomo_network
        return model, None if own is None else dict(own.raw)
    entry, onnx_path = network_section(model, network_from)
    placeholder = model.tomo or TomoCard(slab=settings.slab, stride=settings.stride,
                                         slab_mode=settings.slab_mode, operating_points={},
                                         validation={})
    try:
        volume_model = with_tomo_network(replace(model, tomo=placeholder),
                                         parse_network(entry), onnx_path)
    except ModelError as exc:
        raise ValueError(f"network source {network_from}: {exc}") from None
    return volume_model, entry


def write_tomo_section(model_dir: str | Path, section: Mapping[str, Any],
                       network_from: Path | None = None) -> Path:
    """Replace the ``tomosynthesis`` section of ``model_dir/model.json`` (atomically; every
    other key kept as it is) and check that the model loads with it. With ``network_from``
    (the model folder the section's ``network`` was taken from), its ONNX file is copied in
    first (:func:`training.tomo_network.install_network`). Returns the card path.

    Raises:
        ValueError: the section is malformed (nothing is written).
        serving.pipeline.model.ModelError: the card is missing, or the model no longer loads
            (the previous card and volume network are put back).
    """
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise ModelError(f"{path}: model card missing")
    tomo = parse_tomo_section(dict(section))
    installed = None
    if network_from is not None:
        if tomo.network is None:
            raise ValueError("a network source was given but the section has no network")
        installed = install_network(Path(model_dir), tomo.network, source_onnx(network_from))
    before = path.read_text()
    card = json.loads(before)
    card[TOMO_SECTION] = dict(section)
    tmp = path.with_name(f".model.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    tmp.replace(path)
    try:
        load_model(model_dir)
    except BaseException:  # also an interrupt: the card and its network stay a pair
        path.write_text(before)
        if installed is not None:
            installed.undo()
        raise
    if installed is not None:
        installed.commit()
    return path


# --------------------------------------------------------------------------- command

def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f} %"


def format_points_table(section: Mapping[str, Any]) -> Table:
    """The points of a ``tomosynthesis`` section as a table, the validation in the caption."""
    val = section.get("validation", {})
    title = (f"Tomosynthesis operating points (slab {section['slab']}, stride "
             f"{section['stride']}, {section['slab_mode']})")
    cpm = val.get("cpm")
    caption = (f"{val.get('volumes')} volumes, {val.get('lesions')} lesions of "
               f"{val.get('data')} ({val.get('split')}); CPM "
               f"{'–' if cpm is None else f'{cpm:.3f}'}, sensitivity at 1 FP/volume "
               f"{_pct(val.get('sensitivity_at_1_fp_per_volume'))}")
    table = Table(title=title, caption=caption)
    table.add_column("point", no_wrap=True)
    for col in ("target FP/vol", "threshold", "FP/vol (n)", "sensitivity (n)"):
        table.add_column(col, justify="right")
    table.add_column("status")
    for name, p in section["operating_points"].items():
        status = "unreachable" if not p.get("reachable", True) else (
            "target not reached" if p.get("note") else "")
        table.add_row(name, f"{p.get('target_fp_per_volume', math.nan):g}",
                      f"{p['score_threshold']:.3f}",
                      f"{p['fp_per_volume']:.3f} ({p.get('false_positives', '?')})",
                      f"{_pct(p.get('sensitivity'))} ({p.get('lesions_found', '?')})", status)
    return table


#: Below this many true-lesion rows (each hit candidate counts twice: with its other view and
#: as a single view) the rescoring fit is noted as resting on few lesions.
FEW_LESION_ROWS: Final = 40


def point_notes(section: Mapping[str, Any]) -> list[str]:
    """``"<point>: <note>"`` for every point of a section that has a note, and a note when the
    section's rescoring rests on few true-lesion rows (:data:`FEW_LESION_ROWS`)."""
    notes = [f"{name}: {p['note']}" for name, p in section["operating_points"].items()
             if p.get("note")]
    fitted = (section.get("rescoring") or {}).get("fitted_on") or {}
    positives = fitted.get("positives")
    if isinstance(positives, int) and positives < FEW_LESION_ROWS:
        notes.append(f"rescoring: fitted on {positives} true-lesion rows from "
                     f"{fitted.get('volume_pairs')} CC/ML-MLO volume pairs only (fewer than "
                     f"{FEW_LESION_ROWS}); its weights are rough, fit it on more volumes")
    return notes


def run(args: argparse.Namespace) -> int:
    """``galacto tomo-points``: fit the section on ``--val`` and rewrite ``--model``'s card.

    Raises:
        CommandError: a folder without a model card or dataset, bad settings, or data the
            points cannot be fitted on.
    """
    from rich.console import Console

    if not (args.model / "model.json").is_file():
        raise CommandError(f"--model {args.model}: no model.json there "
                           "(expected models/<name>/<version>)")
    for folder in args.val:
        if not (folder / "dataset.json").is_file():
            raise CommandError(f"--val {folder}: no dataset.json there (make one with galacto "
                               "synth --dbt)")
    try:
        section = fit_tomo_points(
            args.model, args.val, slab=args.slab or DEFAULT_SLAB,
            stride=args.stride or DEFAULT_STRIDE, slab_mode=args.slab_mode, split=args.split,
            limit=args.limit, spacing_mm=args.spacing_mm, rescore=not args.no_rescore,
            network_from=args.network_from)
        path = write_tomo_section(args.model, section, network_from=args.network_from)
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    Console().print(format_points_table(section))
    for note in point_notes(section):
        print(f"note: {note}")
    print(f"wrote the {TOMO_SECTION} section of {path}")
    network = section.get("network")
    if network is not None:
        src = network["source"]
        print(f"volumes run the network of {src.get('name')} {src.get('version')} "
              f"({network['file']}, sha256 {network['sha256'][:12]}…); 2D images keep "
              "model.onnx")
    return 0
