"""Site calibration: operating points re-chosen on a site's own normal (lesion-free) studies.

A model card's operating points are score thresholds chosen for a maximum number of false
positives per image on the project's validation data. On another site's images the same
threshold can give several times that rate. ``galacto calibrate`` runs the model on the
site's normal studies (every finding there is a false positive), picks for each target rate
the lowest threshold whose measured rate is within it, and writes a small JSON file. The
service, the gateway and ``galacto detect`` then replace the card's operating points by the
calibrated ones (:func:`calibrated_model`), and every response names where its thresholds
came from (:attr:`DetectorModel.operating_points_source`).

The file (``schema_version`` 1)::

    {"schema_version": 1, "kind": "galacto-site-calibration",
     "model": {"name": "galacto-small", "version": "0.3.0", "onnx_sha256": "..."},
     "created": "2026-11-21T10:00:00+00:00", "images": 24, "studies": 12,
     "default_operating_point": "balanced",
     "size_rule": "...",
     "operating_points": {"balanced": {"score_threshold": 0.8342, "target_fp_per_image": 0.5,
                                       "fp_per_image": 0.4583, "false_positives": 11,
                                       "images": 24, "card_score_threshold": 0.810153}},
     "inputs": {"normals": "...", "target_fp": null, "model": "...", "files": 24,
                "refused": 0}}

Size rule: the false positives on N images are a Poisson count with mean ``r * N``, so the
relative standard error of the estimated rate is ``1 / sqrt(r * N)`` (the standard deviation
of a Poisson count is the square root of its mean). Requiring it to be at most 30 % needs
``N >= 1 / (0.09 * r)``: 23 images for 0.5 FP/image, 89 for 0.125, 6 for 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.pipeline.model import (
    DetectorModel,
    ModelError,
    OperatingPoint,
    read_card,
    sha256_file,
)

SCHEMA_VERSION = 1
KIND = "galacto-site-calibration"
#: Largest accepted relative standard error of a calibrated FP/image rate.
MAX_RELATIVE_SE = 0.30
#: ``operating_points_source`` of a model whose thresholds are its card's.
CARD_SOURCE = "model card"
SIZE_RULE = ("Poisson counting: the relative standard error of a rate r estimated from N "
             "images is 1/sqrt(r*N); at most 30 % needs N >= 1/(0.09*r)")
#: Scores in responses are rounded to this many decimals; thresholds are chosen on them.
SCORE_DECIMALS = 4


class CalibrationError(ModelError):
    """A calibration file cannot be used (unreadable, malformed, or made for another model),
    or a calibration set cannot support the requested rates; the message says why."""


@dataclass(frozen=True)
class CalibratedPoint:
    """One operating point chosen on a site's normals.

    Attributes:
        name: operating point name (the card's name when the target is a card budget).
        score_threshold: findings with a score >= this are reported, in [0, 1].
        target_fp_per_image: the FP/image budget it was chosen for.
        fp_per_image: false positives per image measured on the normals at this threshold.
        false_positives: their number.
        images: number of normal images it was measured on.
        card_score_threshold: the card's threshold of the same name, if any (for comparison).
    """

    name: str
    score_threshold: float
    target_fp_per_image: float
    fp_per_image: float
    false_positives: int
    images: int
    card_score_threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The point as stored in the file (without its name, which is the key)."""
        out = dataclasses.asdict(self)
        del out["name"]
        return out


@dataclass(frozen=True)
class SiteCalibration:
    """A site calibration of one model (see the module docstring for the file format).

    Attributes:
        model_name, model_version: the calibrated model's card name and version.
        onnx_sha256: the card's ``onnx.sha256``; a model with another one is refused.
        created: when it was made (timezone-aware, UTC).
        images, studies: size of the calibration set.
        default_operating_point: the point used when a request names none.
        points: the calibrated operating points by name.
        inputs: the command's inputs (normals folder, targets, model folder, files read).
        path: the file it was read from or written to, if any.
    """

    model_name: str
    model_version: str
    onnx_sha256: str
    created: datetime
    images: int
    studies: int
    default_operating_point: str
    points: dict[str, CalibratedPoint]
    inputs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def source(self) -> str:
        """``"site calibration <file name>, <created date>"``, as responses state it."""
        name = self.path.name if self.path is not None else "(not saved)"
        return f"site calibration {name}, {self.created.date().isoformat()}"

    def to_json(self) -> dict[str, Any]:
        """The JSON document written by :func:`write_calibration`."""
        return {"schema_version": SCHEMA_VERSION, "kind": KIND,
                "model": {"name": self.model_name, "version": self.model_version,
                          "onnx_sha256": self.onnx_sha256},
                "created": self.created.isoformat(timespec="seconds"),
                "images": self.images, "studies": self.studies,
                "default_operating_point": self.default_operating_point,
                "size_rule": SIZE_RULE,
                "operating_points": {n: p.to_json() for n, p in self.points.items()},
                "inputs": self.inputs}


# --------------------------------------------------------------------------------------------
# Choosing thresholds
# --------------------------------------------------------------------------------------------


def min_images(rate: float, max_relative_se: float = MAX_RELATIVE_SE) -> int:
    """Fewest images that estimate an FP/image ``rate`` with a relative standard error of at
    most ``max_relative_se`` (Poisson: ``1/sqrt(rate*N) <= se`` -> ``N >= 1/(se**2 rate)``).

    Raises:
        ValueError: ``rate`` or ``max_relative_se`` not > 0.
    """
    if rate <= 0 or max_relative_se <= 0:
        raise ValueError(f"the rate and the relative error must be > 0; got {rate}, "
                         f"{max_relative_se}")
    return math.ceil(1.0 / (max_relative_se ** 2 * rate) - 1e-9)


def check_set_size(images: int, targets: Mapping[str, float]) -> None:
    """Refuse a calibration set of ``images`` images too small for any of ``targets``
    (name -> FP/image) under :func:`min_images`.

    Raises:
        CalibrationError: naming each target that needs more images, and how many.
    """
    short = [(n, r, min_images(r)) for n, r in targets.items() if images < min_images(r)]
    if not short:
        return
    needs = "; ".join(f"{n} ({r:g} FP/image) needs at least {k} images"
                      for n, r, k in short)
    raise CalibrationError(
        f"{images} normal image(s) are too few to estimate these false-positive rates: "
        f"{needs} ({SIZE_RULE}). Add normal studies or choose a higher --target-fp.")


def point_names(card_points: Mapping[str, OperatingPoint],
                targets: Sequence[float] | None) -> dict[str, float]:
    """Name -> target FP/image for the points to calibrate.

    Without ``targets``: the card's points and their ``max_fp_per_image``. With them: one
    point per distinct target, named as the card's point with that budget when there is one,
    else ``site_<target>`` (e.g. ``site_0.75``); in increasing order of target.

    Raises:
        CalibrationError: a target that is not a finite number > 0.
    """
    if not targets:
        return {n: p.max_fp_per_image for n, p in card_points.items()}
    by_budget = {p.max_fp_per_image: n for n, p in card_points.items()}
    names: dict[str, float] = {}
    for target in sorted(set(targets)):
        if not math.isfinite(target) or target <= 0:
            raise CalibrationError(f"--target-fp must be a number > 0 (false positives per "
                                   f"image); got {target}")
        names[by_budget.get(target, f"site_{target:g}")] = float(target)
    return names


def threshold_for_rate(scores: Iterable[float], images: int, target: float, floor: float
                       ) -> tuple[float, int]:
    """Lowest score threshold at which the findings per image on normals are <= ``target``.

    Args:
        scores: the score of every finding on the ``images`` normal images (all of them false
            positives), as reported (rounded to :data:`SCORE_DECIMALS` decimals).
        images: number of normal images (> 0).
        target: FP/image budget (> 0).
        floor: the lowest threshold the pipeline applies (the card's ``decode.score_thresh``:
            it returns no candidate below it); used when every candidate fits the budget.

    Returns:
        ``(threshold, false_positives)``: the threshold (rounded to :data:`SCORE_DECIMALS`
        decimals) and the number of the given scores >= it. Since the pipeline compares
        unrounded scores, this count is an upper bound of what it will report.
    """
    ranked = sorted((float(s) for s in scores), reverse=True)
    allowed = math.floor(target * images + 1e-9)
    if len(ranked) <= allowed:
        threshold = round(floor, SCORE_DECIMALS)
    else:  # just above the first score that does not fit
        step = 10.0 ** -SCORE_DECIMALS
        threshold = max(round(ranked[allowed] + step, SCORE_DECIMALS), round(floor, SCORE_DECIMALS))
    return threshold, sum(1 for s in ranked if s >= threshold)


def calibrate_points(scores: Sequence[float], images: int, targets: Mapping[str, float],
                     card_points: Mapping[str, OperatingPoint], floor: float
                     ) -> dict[str, CalibratedPoint]:
    """One :class:`CalibratedPoint` per target (see :func:`threshold_for_rate`).

    Raises:
        CalibrationError: no image, or too few for a target (:func:`check_set_size`).
    """
    if images <= 0:
        raise CalibrationError("no readable normal image: nothing to calibrate on")
    check_set_size(images, targets)
    points = {}
    for name, target in targets.items():
        threshold, fps = threshold_for_rate(scores, images, target, floor)
        card = card_points.get(name)
        points[name] = CalibratedPoint(
            name=name, score_threshold=threshold, target_fp_per_image=target,
            fp_per_image=round(fps / images, 4), false_positives=fps, images=images,
            card_score_threshold=card.score_threshold if card is not None else None)
    return points


def default_point(targets: Mapping[str, float], card_default: OperatingPoint) -> str:
    """The card's default name if calibrated, else the point whose target is nearest its
    budget (the lower one on a tie)."""
    if card_default.name in targets:
        return card_default.name
    return min(targets, key=lambda n: (abs(targets[n] - card_default.max_fp_per_image),
                                       targets[n]))


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------


def card_sha256(card: Mapping[str, Any], folder: Path) -> str:
    """The card's ``onnx.sha256`` (load_model checks it), else the ONNX file's sha256."""
    onnx = card.get("onnx", {})
    declared = onnx.get("sha256")
    if declared:
        return str(declared)
    return sha256_file(folder / str(onnx.get("file", "model.onnx")))


def model_sha256(model: DetectorModel) -> str:
    """The loaded model's ONNX sha256 (see :func:`card_sha256`)."""
    return card_sha256(model.card, model.path)


def write_calibration(calibration: SiteCalibration, path: Path) -> SiteCalibration:
    """Write ``calibration`` as JSON to ``path`` (parent folders created); returns it with
    ``path`` set. Raises ``OSError`` when the file cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
    return dataclasses.replace(calibration, path=path)


def _number(value: object, what: str, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not low <= float(value) <= high:
        raise ValueError(f"{what} must be a number in [{low:g}, {high:g}]; found {value!r}")
    return float(value)


def _point(name: str, data: object) -> CalibratedPoint:
    if not isinstance(data, dict):
        raise ValueError(f"operating point {name!r} must be an object")
    where = f"operating point {name!r}:"
    card = data.get("card_score_threshold")
    return CalibratedPoint(
        name=name,
        score_threshold=_number(data.get("score_threshold"), f"{where} score_threshold",
                                low=0.0, high=1.0 + 10.0 ** -SCORE_DECIMALS),
        target_fp_per_image=_number(data.get("target_fp_per_image"),
                                    f"{where} target_fp_per_image", low=1e-12),
        fp_per_image=_number(data.get("fp_per_image"), f"{where} fp_per_image", low=0.0),
        false_positives=int(_number(data.get("false_positives"), f"{where} false_positives",
                                    low=0)),
        images=int(_number(data.get("images"), f"{where} images", low=1)),
        card_score_threshold=None if card is None else _number(
            card, f"{where} card_score_threshold", low=0.0, high=1.0))


def parse_calibration(data: object, path: Path | None = None) -> SiteCalibration:
    """A :class:`SiteCalibration` from the parsed JSON document.

    Raises:
        CalibrationError: wrong kind or schema version, missing or malformed keys.
    """
    where = str(path) if path is not None else "calibration"
    try:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"not a galacto site calibration (expected \"kind\": \"{KIND}\")")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, this galacto "
                             f"reads {SCHEMA_VERSION}")
        model, ops = data.get("model"), data.get("operating_points")
        if not isinstance(model, dict) or not isinstance(ops, dict) or not ops:
            raise ValueError("\"model\" and a non-empty \"operating_points\" are required")
        points = {str(n): _point(str(n), p) for n, p in ops.items()}
        default = data.get("default_operating_point")
        if default not in points:
            raise ValueError(f"default_operating_point {default!r} is not one of "
                             f"{sorted(points)}")
        created = datetime.fromisoformat(str(data.get("created")))
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        inputs = data.get("inputs")
        return SiteCalibration(
            model_name=str(model["name"]), model_version=str(model["version"]),
            onnx_sha256=str(model["onnx_sha256"]), created=created,
            images=int(_number(data.get("images"), "images", low=1)),
            studies=int(_number(data.get("studies"), "studies", low=0)),
            default_operating_point=str(default), points=points,
            inputs=inputs if isinstance(inputs, dict) else {}, path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: {exc}") from None


def read_calibration(path: str | Path) -> SiteCalibration:
    """Read and validate a calibration file.

    Raises:
        CalibrationError: missing or unreadable file, invalid JSON or content.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CalibrationError(f"{path}: calibration file cannot be read ({exc.strerror or exc})"
                               ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: not valid JSON ({exc})") from None
    return parse_calibration(data, path)


def _check_same(calibration: SiteCalibration, card: Mapping[str, Any], folder: Path) -> None:
    sha = card_sha256(card, folder)
    if calibration.onnx_sha256 != sha:
        where = calibration.path if calibration.path is not None else "the calibration"
        raise CalibrationError(
            f"{where} was made for model {calibration.model_name} {calibration.model_version} "
            f"(onnx sha256 {calibration.onnx_sha256[:12]}...) but the model is "
            f"{card.get('name')} {card.get('version')} (onnx sha256 {sha[:12]}...) from "
            f"{folder}; run `galacto calibrate` again with this model")


def check_model(calibration: SiteCalibration, model: DetectorModel) -> None:
    """Refuse a calibration made for another model (its ONNX sha256 differs).

    Raises:
        CalibrationError: naming the calibration's model and the loaded one.
    """
    _check_same(calibration, model.card, model.path)


def check_file_for_folder(path: str | Path, folder: str | Path) -> SiteCalibration:
    """Read the calibration at ``path`` and check it against the model folder's card
    without loading the ONNX graph (a quick start-up check).

    Raises:
        CalibrationError: unreadable or malformed file, or made for another model.
        ModelError: the model folder's card is missing or invalid.
    """
    calibration = read_calibration(path)
    _check_same(calibration, read_card(Path(folder)), Path(folder))
    return calibration


def apply_calibration(model: DetectorModel, calibration: SiteCalibration) -> DetectorModel:
    """A copy of ``model`` (same ONNX session) whose operating points are the calibrated ones
    (``max_fp_per_image``: the target; ``fp_per_image``: measured on the site's normals;
    ``sensitivity``: unknown) and whose ``operating_points_source`` names the file.

    Raises:
        CalibrationError: the calibration was made for another model (:func:`check_model`).
    """
    check_model(calibration, model)
    ops = {n: OperatingPoint(name=n, score_threshold=p.score_threshold,
                             max_fp_per_image=p.target_fp_per_image, sensitivity=None,
                             fp_per_image=p.fp_per_image)
           for n, p in calibration.points.items()}
    return dataclasses.replace(model, operating_points=ops,
                               default_operating_point=calibration.default_operating_point,
                               operating_points_source=calibration.source)


def calibrated_model(model: DetectorModel, path: str | Path | None) -> DetectorModel:
    """``model`` with the calibration file at ``path`` applied; ``model`` itself when
    ``path`` is None. The one function serve, the gateway and ``galacto detect`` call.

    Raises:
        CalibrationError: the file is unreadable, malformed or made for another model.
    """
    if path is None:
        return model
    return apply_calibration(model, read_calibration(path))
