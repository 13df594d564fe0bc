"""numpy array aliases the pipeline modules annotate with: arrays are ``(rows, cols)`` images or
masks, or ``(N, k)`` rows of boxes and points."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["BoolArray", "FloatArray"]

#: A float64 array: boxes, points, profiles.
FloatArray: TypeAlias = npt.NDArray[np.float64]
#: A boolean mask.
BoolArray: TypeAlias = npt.NDArray[np.bool_]
