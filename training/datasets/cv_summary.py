"""``galacto dataset cv-summary``: one line per cross-validation fold, then mean and spread.

Reads the JSON reports ``galacto evaluate --out`` wrote (one per fold) and takes from each the
image and lesion counts, the CPM and the FROC sensitivity at 1 false positive per image, with
their 95 % bootstrap intervals when the report has them (``report["froc"]["ci"]``; none with
``--bootstrap 0``). Across folds: the mean and the sample standard deviation of the CPM and of
the sensitivity (folds without a value are left out), and the image and lesion totals.
Needs no torch and no model.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

FP_RATE = 1.0  # the FROC point reported beside the CPM
Interval = list[float] | None


@dataclass(frozen=True)
class FoldResult:
    """What one evaluate report says about its fold."""

    report: str
    images: int
    lesions: int
    cpm: float | None
    cpm_ci: Interval
    sensitivity: float | None
    sensitivity_ci: Interval


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation over the folds that have a value."""

    folds: int
    mean: float | None
    sd: float | None


def _number(v: Any) -> float | None:
    """A finite float, or None (JSON null, nan)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _interval(v: Any) -> Interval:
    """``[low, high]`` as floats, or None when the report has no such interval."""
    if isinstance(v, list) and len(v) == 2 and all(_number(x) is not None for x in v):
        return [float(v[0]), float(v[1])]
    return None


def _froc_part(path: Path, raw: Any) -> dict[str, Any]:
    """The report's ``froc`` block, checked to be an evaluate report's.

    Raises:
        ValueError: the JSON is not a report of ``galacto evaluate``.
    """
    froc = raw.get("froc") if isinstance(raw, dict) else None
    needed = ("images", "lesions", "hit_rule")
    if (not isinstance(froc, dict) or any(k not in raw for k in needed)
            or not isinstance(froc.get("fp_rates"), list)
            or not isinstance(froc.get("sensitivity"), list) or "cpm" not in froc):
        raise ValueError(f"{path}: not a report of galacto evaluate --out (expected the keys "
                         "images, lesions, hit_rule and froc with fp_rates, sensitivity, cpm)")
    if FP_RATE not in froc["fp_rates"]:
        raise ValueError(f"{path}: the FROC has no point at {FP_RATE:g} FP/image "
                         f"(rates {froc['fp_rates']})")
    return froc


def read_fold(path: Path) -> FoldResult:
    """Read one evaluate report.

    Raises:
        ValueError: unreadable, not JSON, or not an evaluate report.
    """
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a JSON report ({exc})") from None
    froc = _froc_part(path, raw)
    j = froc["fp_rates"].index(FP_RATE)
    ci: Any = froc.get("ci")
    ci = ci if isinstance(ci, dict) else {}
    sens_ci: Any = ci.get("sensitivity")
    sens_ci = sens_ci if isinstance(sens_ci, list) else []
    return FoldResult(report=str(path), images=int(raw["images"]), lesions=int(raw["lesions"]),
                      cpm=_number(froc["cpm"]), cpm_ci=_interval(ci.get("cpm")),
                      sensitivity=_number(froc["sensitivity"][j]),
                      sensitivity_ci=_interval(sens_ci[j] if j < len(sens_ci) else None))


def spread(values: list[float | None]) -> Spread:
    """Mean and sample standard deviation of the values that are not None (sd needs two)."""
    got = [v for v in values if v is not None]
    mean = statistics.fmean(got) if got else None
    sd = statistics.stdev(got) if len(got) >= 2 else None
    return Spread(len(got), mean, sd)


def summary_json(folds: list[FoldResult]) -> dict[str, Any]:
    """The summary as JSON: ``folds`` (one object per report) and ``across_folds``."""
    return {"fp_rate": FP_RATE,
            "folds": [asdict(f) for f in folds],
            "across_folds": {
                "folds": len(folds),
                "images": sum(f.images for f in folds),
                "lesions": sum(f.lesions for f in folds),
                "cpm": asdict(spread([f.cpm for f in folds])),
                "sensitivity": asdict(spread([f.sensitivity for f in folds]))}}


def _value(v: float | None, ci: Interval = None) -> str:
    """``0.712 [0.601, 0.803]``; ``–`` for no value."""
    text = "–" if v is None else f"{v:.3f}"
    return text if ci is None else f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _mean_sd(s: Spread) -> str:
    """``0.712 ± 0.041`` (mean ± SD)."""
    if s.mean is None:
        return "–"
    return f"{s.mean:.3f}" + ("" if s.sd is None else f" ± {s.sd:.3f}")


def summary_table(folds: list[FoldResult]) -> Table:
    """One row per fold, then the totals and mean ± SD across folds."""
    table = Table(title=f"Cross-validation: {len(folds)} fold(s)",
                  caption=escape("[low, high]: 95 % bootstrap interval over patients; all "
                                 "folds: image and lesion totals, mean ± sample SD of the "
                                 "folds"))
    for col in ("fold", "images", "lesions", "CPM [95 % CI]",
                f"sensitivity at {FP_RATE:g} FP/image [95 % CI]"):
        table.add_column(col, justify="left" if col == "fold" else "right")
    for k, f in enumerate(folds):
        table.add_row(str(k), str(f.images), str(f.lesions), _value(f.cpm, f.cpm_ci),
                      _value(f.sensitivity, f.sensitivity_ci))
    table.add_section()
    table.add_row("all folds", str(sum(f.images for f in folds)),
                  str(sum(f.lesions for f in folds)), _mean_sd(spread([f.cpm for f in folds])),
                  _mean_sd(spread([f.sensitivity for f in folds])))
    return table
