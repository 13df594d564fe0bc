"""FROC plots as PNG, drawn on matplotlib's Agg canvas (no pyplot, no global backend change)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from training.metrics.froc import DEFAULT_FP_RATES, FrocResult
from training.metrics.matching import FloatArray

__all__ = ["plot_froc"]


def _stepwise(result: FrocResult, x: FloatArray) -> FloatArray:
    """Highest sensitivity with at most ``x`` FP per image, for each ``x`` (0 when none)."""
    if result.sensitivity.size == 0:
        return np.zeros_like(x)
    sens = np.maximum.accumulate(np.nan_to_num(result.sensitivity))  # fp ascending along k
    idx = np.searchsorted(result.fp_per_image, x + 1e-12, side="right") - 1
    out: FloatArray = np.where(idx >= 0, sens[np.clip(idx, 0, None)], 0.0)
    return out


def plot_froc(result_or_results: FrocResult | Mapping[str, FrocResult], path: str | Path,
              title: str = "FROC") -> Path:
    """Write a FROC plot as PNG to ``path`` and return the path.

    One curve for a :class:`FrocResult`, or one per entry of a ``{name: FrocResult}`` mapping
    (e.g. validation per epoch, fp32 vs int8), on one axis. The x axis (mean FP per image) is
    logarithmic and spans the results' ``fp_rates``; each curve is the stepwise FROC (best
    sensitivity at most x FP/image) with markers at the rates, its CPM in the legend.
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = ({"": result_or_results} if isinstance(result_or_results, FrocResult)
               else dict(result_or_results))
    if not results:
        raise ValueError("plot_froc needs at least one FrocResult")
    rates = sorted({r for res in results.values() for r in res.fp_rates if r > 0}) or list(
        DEFAULT_FP_RATES)
    lo, hi = rates[0] / 2, rates[-1] * 2
    x = np.geomspace(lo, hi, 512)

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, res in results.items():
        label = f"{name}  CPM {res.cpm:.3f}" if name else f"CPM {res.cpm:.3f}"
        (line,) = ax.plot(x, _stepwise(res, x), label=label)
        marks = [r for r in res.fp_rates if r > 0]
        ax.plot(marks, _stepwise(res, np.asarray(marks, dtype=np.float64)), "o",
                color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(rates)
    ax.set_xticklabels([f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("mean false positives per image")
    ax.set_ylabel("sensitivity (lesions detected)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
