"""Which score threshold a request applies to tomosynthesis (DBT) volumes, and what the
response says about it.

A volume candidate's score is the 2D detector's highest slab score, rescored with the other
view only by the card's own tomosynthesis rescoring, so the card's 2D operating points (chosen
on rescored 2D images) do not hold for it: applied to raw volume scores, the 2D ``balanced``
threshold gave hundreds of false findings per volume on simulated DBT. A model card may carry
a ``tomosynthesis`` section (:class:`~serving.pipeline.model.TomoCard`, fitted on DBT
validation data by ``galacto tomo-points``): thresholds for the same point names, with the
false positives per volume measured there, the slab settings they were fitted with, and the
rescoring they apply to.

:func:`volume_points` resolves, for one request:

- a ``score_threshold`` given by the caller: that threshold (the warning says its false
  findings per volume were not measured);
- else, with a ``tomosynthesis`` section: its point of the requested name (a name the section
  lacks, e.g. a site calibration's own point, falls back to the card's default point, and the
  warning says so); volumes run with the card's slab settings unless the caller's
  :class:`~serving.pipeline.detect_volume.TomoSettings` differ, which the warning states;
- else: the 2D threshold, with :data:`NO_TOMO_POINTS_WARNING` in every volume's warnings, so
  that the response never reads as a calibrated one.

It reads the loaded card only and runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serving.pipeline.detect_volume import TomoSettings
from serving.pipeline.model import DetectorModel, TomoOperatingPoint

__all__ = [
    "NO_TOMO_POINTS_WARNING",
    "VolumePoints",
    "volume_points",
]

#: The sentence in every volume's warnings when the card has no tomosynthesis points.
NO_TOMO_POINTS_WARNING: Final = (
    "the model card has no tomosynthesis operating points: the 2D threshold was applied to "
    "raw volume scores, expect many false findings")


@dataclass(frozen=True)
class VolumePoints:
    """The operating point applied to the volumes of one request.

    Attributes:
        name: the point's name (as requested; a fallback is named in ``source``).
        score_threshold: volume findings have a final score ``>= score_threshold``.
        source: where the threshold is from, e.g. ``"volumes: model card tomosynthesis point
            balanced, score >= 0.812"`` (appended to the response's
            ``operating_point.source``).
        settings: how volumes are run (slab, stride, slab mode).
        thresholds: the named points a volume finding is listed as passing
            (``FindingOut.operating_points``): the card's tomosynthesis points, else its 2D
            points.
        warnings: sentences added to every volume's warnings.
        calibrated: the threshold is a tomosynthesis point of the card, fitted with these
            settings.
        point: the card's tomosynthesis point applied (what it measured on DBT validation
            data); ``None`` when the threshold is the request's or the 2D one.
        thresholds_2d: the threshold is the 2D point's (the card has no tomosynthesis
            points).
        rescored: volume scores are rescored with the other view (the card has a
            ``tomosynthesis.rescoring``, :mod:`serving.pipeline.volume_rescore`).
    """

    name: str
    score_threshold: float
    source: str
    settings: TomoSettings
    thresholds: dict[str, float]
    warnings: tuple[str, ...]
    calibrated: bool
    point: TomoOperatingPoint | None = None
    thresholds_2d: bool = False
    rescored: bool = False

    def passes(self, score: float) -> list[str]:
        """The names of :attr:`thresholds` that ``score`` reaches."""
        return [name for name, t in self.thresholds.items() if score >= t]


def _same_settings(a: TomoSettings, b: TomoSettings) -> bool:
    return (a.slab, a.stride, a.slab_mode) == (b.slab, b.stride, b.slab_mode)


def _point_text(p: TomoOperatingPoint) -> str:
    """E.g. ``"0.94 false positives per volume, sensitivity 62 %"`` (what was measured)."""
    parts = []
    if p.fp_per_volume is not None:
        parts.append(f"{p.fp_per_volume:.2f} false positives per volume")
    if p.sensitivity is not None:
        parts.append(f"sensitivity {100 * p.sensitivity:.0f} %")
    return ", ".join(parts) if parts else "no measure stated"


def volume_points(model: DetectorModel, operating_point: str | None = None,
                  score_threshold: float | None = None,
                  tomo: TomoSettings | None = None) -> VolumePoints:
    """The threshold, settings and wording for the volumes of a request (see the module
    docstring).

    Args:
        model: the loaded model (its card's ``tomosynthesis`` section, if any).
        operating_point: the requested point's name (None: the model's default).
        score_threshold: the caller's threshold, overriding every operating point.
        tomo: the caller's settings (None: the card's, see
            :attr:`~serving.pipeline.model.DetectorModel.tomo_settings`).

    Raises:
        serving.pipeline.model.ModelError: an unknown operating point.
    """
    op = model.operating_point(operating_point)
    card_settings = model.tomo_settings
    settings = tomo if tomo is not None else card_settings
    run = f"volumes ran on {settings.describe()}"
    card = model.tomo
    rescored = model.tomo_rescoring is not None
    if card is None:
        thresholds = {n: p.score_threshold for n, p in model.operating_points.items()}
    else:
        thresholds = {n: p.score_threshold for n, p in card.operating_points.items()}
    if score_threshold is not None:
        t = float(score_threshold)
        return VolumePoints(
            name=op.name, score_threshold=t, settings=settings, thresholds=thresholds,
            source=f"volumes: score >= {t:g} set by the request",
            warnings=(f"tomosynthesis: the request's score threshold {t:g} was applied to "
                      f"volume scores ({run}); its false findings per volume were not "
                      "measured",),
            calibrated=False, rescored=rescored)
    if card is None:
        t = op.score_threshold
        return VolumePoints(
            name=op.name, score_threshold=t, settings=settings, thresholds=thresholds,
            source=f"volumes: the 2D threshold of {op.name}, not fitted on tomosynthesis",
            warnings=(f"tomosynthesis: {NO_TOMO_POINTS_WARNING} (operating point {op.name}, "
                      f"score >= {t:.3f})",),
            calibrated=False, thresholds_2d=True, rescored=rescored)
    warnings: list[str] = []
    point = model.tomo_operating_point(op.name)
    if point is None:
        fallback = str(model.card.get("default_operating_point", ""))
        point = card.operating_points.get(fallback) or next(iter(card.operating_points.values()))
        warnings.append(f"tomosynthesis: the model card has no tomosynthesis operating point "
                        f"{op.name!r}; its point {point.name} was applied to volumes")
    warnings.append(f"tomosynthesis: operating point {point.name} of the model card's "
                    f"tomosynthesis points applied to volume scores: score >= "
                    f"{point.score_threshold:.3f} ({_point_text(point)} on DBT validation "
                    f"data, {card_settings.describe()})")
    if point.note:
        warnings.append(f"tomosynthesis: operating point {point.name}: {point.note}")
    same = _same_settings(settings, card_settings)
    if not same:
        warnings.append(f"tomosynthesis: the card's tomosynthesis points were fitted on "
                        f"{card_settings.describe()}, but these {run}: their false findings "
                        "per volume were not measured for these settings")
    return VolumePoints(
        name=op.name, score_threshold=point.score_threshold, settings=settings,
        thresholds=thresholds,
        source=f"volumes: model card tomosynthesis point {point.name}, score >= "
               f"{point.score_threshold:.3f}",
        warnings=tuple(warnings), calibrated=same, point=point, rescored=rescored)
