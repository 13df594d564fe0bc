"""The tallies that every report is made of: a count over a total, and their ratio.

- :class:`Sensitivity`: true lesions detected of all true lesions.
- :class:`FalsePositives`: false positives over the images they were counted on.
- :class:`Count`: items hit of all such items (air bubbles flagged, mimics recognised; used by
  :mod:`training.mimic_metrics`).

Each ratio is nan when the total is 0 (``None`` in JSON, see :mod:`training.metrics.report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Count", "FalsePositives", "Sensitivity"]


@dataclass(frozen=True)
class Sensitivity:
    """``detected`` of ``lesions`` true lesions found; ``value`` is nan without lesions."""

    detected: int
    lesions: int

    @property
    def value(self) -> float:
        return self.detected / self.lesions if self.lesions else math.nan


@dataclass(frozen=True)
class FalsePositives:
    """``count`` false positives over ``images`` images; ``per_image`` is their ratio."""

    count: int
    images: int

    @property
    def per_image(self) -> float:
        return self.count / self.images if self.images else math.nan


@dataclass(frozen=True)
class Count:
    """``hit`` of ``total`` items (bubbles flagged, mimics recognised); ``value`` nan if none."""

    hit: int
    total: int

    @property
    def value(self) -> float:
        return self.hit / self.total if self.total else math.nan
