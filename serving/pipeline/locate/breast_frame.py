"""The breast frame, and how the axes of one image lie in it.

- **Breast frame** (the simulator's, ``training/synth/anatomy.py``), mm, origin at the nipple:
  ``d`` depth (posterior, towards the chest wall), ``u`` superior, ``l`` lateral (towards the
  axilla of *this* breast, so the frame is the same for a left and a right breast).
- **Image up axis**: the direction of decreasing row. Its direction in the breast frame
  comes from PatientOrientation's second value (the patient direction of increasing row) and
  the laterality: ``H``/``F`` head/foot; ``L``/``R`` is lateral for a breast of the same
  side, medial otherwise. CC: ``up = +-l``; ML/LM: ``up = +-u``; MLO (C-arm angle ``a``):
  ``up = +-sin(a) u +- cos(a) l`` (superolateral for a standard MLO). See :func:`up_signs`.
- **View families**: :data:`CC_VIEWS` (up axis lateral), :data:`LATERAL_VIEWS` (up axis
  superior) and :data:`OBLIQUE_VIEWS` (both, mixed by the C-arm angle).

Assumptions (stated, not measured on patients):

- Compression spreads the breast in the image plane by :data:`COMPRESSION_SPREAD`.
- The MLO C-arm angle is the image's PositionerPrimaryAngle (0018,1510), its magnitude, when
  it lies strictly between 0 and 90 degrees (:func:`oblique_angle`); otherwise
  :data:`DEFAULT_MLO_ANGLE_DEG` is assumed.
- Without a usable PatientOrientation column direction, the standard hanging is assumed (CC:
  lateral up; ML: superior up; MLO: superolateral up); :func:`orientation_assumed` says when.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np

__all__ = [
    "CC_VIEWS",
    "COMPRESSION_SPREAD",
    "DEFAULT_MLO_ANGLE_DEG",
    "LATERAL_VIEWS",
    "OBLIQUE_VIEWS",
    "OTHER_VIEWS",
    "oblique_angle",
    "orientation_assumed",
    "up_signs",
    "view_group",
]

#: In-plane spread of the compressed breast (image mm per uncompressed mm), an assumption.
COMPRESSION_SPREAD: Final = 1.1
#: C-arm angle assumed for MLO (and other oblique) views when it is not known, degrees.
DEFAULT_MLO_ANGLE_DEG: Final = 45.0

#: MLO-like views: the up axis mixes superior with lateral (by the C-arm angle).
OBLIQUE_VIEWS: Final = frozenset({"MLO", "LMO", "SIO", "ISO"})
#: Lateral views: the up axis is superior or inferior.
LATERAL_VIEWS: Final = frozenset({"ML", "LM"})
#: Cranio-caudal-like views: the up axis is lateral or medial.
CC_VIEWS: Final = frozenset({"CC", "XCCL", "XCCM", "FB"})
#: The views two-view matching pairs with a CC-like one: lateral and oblique views.
OTHER_VIEWS: Final = LATERAL_VIEWS | OBLIQUE_VIEWS


def view_group(view: str | None) -> Literal["cc", "other"] | None:
    """``"cc"`` for a CC-like view (:data:`CC_VIEWS`), ``"other"`` for a lateral or oblique
    one (:data:`OTHER_VIEWS`), None for anything else (e.g. a spot view or no view). The one
    rule for which views are each other's "other view": the two-view rescoring of 2D images
    and volumes, the fusion of findings and the CAD SR's Summary of Analyses all use it."""
    v = (view or "").upper()
    return "cc" if v in CC_VIEWS else "other" if v in OTHER_VIEWS else None


def orientation_assumed(view: str | None, laterality: str,
                        orientation: tuple[str, str] | None) -> bool:
    """Whether a location on an image of ``view`` and ``laterality`` with PatientOrientation
    ``orientation`` rests on an assumed hanging (the orientation does not give the direction
    the view needs: CC the lateral one, ML/LM the superior one, MLO-like views both)."""
    return up_signs((view or "?").upper(), laterality, orientation)[2]


def oblique_angle(view: str, angle: float | None) -> float | None:
    """``|PositionerPrimaryAngle|`` of an oblique view when it is in (0, 90), else None."""
    if view not in OBLIQUE_VIEWS or angle is None or not math.isfinite(angle):
        return None
    return abs(angle) if 0.0 < abs(angle) < 90.0 else None


def up_signs(
    view: str, laterality: str, orientation: tuple[str, str] | None
) -> tuple[int, int, bool]:
    """Signs ``(superior, lateral, assumed)`` of the image's up axis (decreasing row) in the
    breast frame, from PatientOrientation's column direction (the direction of increasing
    row) and the laterality. ``assumed`` when the standard hanging had to be assumed."""
    down_sup, down_lat = 0, 0
    letters = (orientation[1] if orientation is not None else "").upper()
    for ch in letters:
        if ch == "H":
            down_sup += 1
        elif ch == "F":
            down_sup -= 1
        elif ch in "LR" and laterality in ("L", "R"):
            down_lat += 1 if ch == laterality else -1
    up_sup, up_lat = -int(np.sign(down_sup)), -int(np.sign(down_lat))
    lat_known = laterality in ("L", "R")
    has_lr = any(ch in "LR" for ch in letters)
    assumed = False
    if view in CC_VIEWS:
        if not has_lr:
            up_sup, up_lat, assumed = 0, (1 if lat_known else 0), True
    elif view in LATERAL_VIEWS:
        if up_sup == 0:
            up_sup, up_lat, assumed = 1, 0, True
    elif view in OBLIQUE_VIEWS:
        if up_sup == 0:
            up_sup, assumed = 1, True
        if up_lat == 0 and lat_known and not has_lr:
            # standard MLO: superolateral up; LMO-like views: superomedial up
            up_lat, assumed = (up_sup if view in ("MLO", "SIO") else -up_sup), True
    return up_sup, up_lat, assumed
