"""Where a finding is, stated as a radiologist would (ACR BI-RADS, DOMAIN.md).

Three steps:

1. :func:`find_landmarks` (one image): the nipple, the chest-wall edge, the pectoral edge
   (ML/MLO) and the posterior nipple line (PNL).
2. :func:`locate_in_view` (one finding, one image): distance from the nipple, depth third, and
   the half of the clock face this view can tell (CC: outer/inner; ML: upper/lower; MLO:
   upper/lower *flagged oblique*).
3. :func:`match_views` (one breast, CC + ML/MLO): pairs findings across the two views and
   states the clock face, quadrant, depth and distance, e.g. ``"Right breast, 10 o'clock,
   middle depth, 3 cm from nipple"``.

Modules
-------
This package was one module, ``locate.py``; it is split by concern, and this ``__init__``
re-exports every public name the module had (its ``__all__``, plus :func:`pair_cost`,
:data:`ORIENTATION_UNKNOWN` and the tuning constants), so ``from serving.pipeline.locate
import ...`` reads as before (the pattern of pydicom ``pixels/__init__.py`` and highdicom
``sr/__init__.py``). A package rather than a facade module next to its parts, so that the
parts sit in one folder under the name callers already use. New code may import either from
here or from the module that owns a name.

- :mod:`~serving.pipeline.locate.breast_frame`: the breast frame, view families, the image's
  up axis in it (PatientOrientation), :data:`COMPRESSION_SPREAD` and the MLO C-arm angle.
- :mod:`~serving.pipeline.locate.birads`: the BI-RADS rules: clock face, quadrant, depth
  third, whole cm, the location phrase.
- :mod:`~serving.pipeline.locate.landmarks`: step 1, :func:`find_landmarks`, on the breast
  mask of :mod:`serving.pipeline.preprocess` and the helpers of
  :mod:`serving.pipeline.morphology`.
- :mod:`~serving.pipeline.locate.view_location`: step 2, :class:`ViewLocation`,
  :func:`locate_in_view` and :func:`describe_view`.
- :mod:`~serving.pipeline.locate.two_views`: step 3, :class:`Match`, :func:`match_views` and
  :func:`pair_cost`.

Coordinate conventions
----------------------
- **Stored pixels**: the DICOM image as stored (``Image.pixels``), points ``(x, y)``, x =
  column, y = row, origin at the top-left corner of the top-left pixel (pixel ``(r, c)``
  covers ``[c, c + 1) x [r, r + 1)``); boxes ``[x1, y1, x2, y2]``, x2/y2 exclusive. Every
  point and box that this package returns is in stored pixels (plus mm where stated).
- **Canonical pixels**: stored pixels mirrored left-right when
  :func:`~serving.pipeline.preprocess.needs_mirroring` says so (``x -> cols - x``), so that the
  chest wall is at column 0 and the nipple points to increasing columns. Used inside only.
- **Image mm**: stored pixels times ``Image.spacing_mm`` (row spacing for y, column spacing for
  x), measured on the compressed breast.
- **Breast frame** (mm, origin at the nipple: ``d`` depth, ``u`` superior, ``l`` lateral) and
  **image up axis** (the direction of decreasing row, placed in the breast frame by
  PatientOrientation and the laterality): see :mod:`~serving.pipeline.locate.breast_frame`.

Assumptions (stated, not measured on patients)
----------------------------------------------
- Compression spreads the breast in the image plane; image distances are divided by
  :data:`COMPRESSION_SPREAD` (1.1, the middle of the 5-20 % spread the simulator draws) to
  estimate distances in the uncompressed breast. ``image_distance_mm`` keeps the raw value.
- The MLO C-arm angle is the image's PositionerPrimaryAngle (0018,1510), its magnitude, when
  it lies strictly between 0 and 90 degrees; otherwise :func:`match_views`' ``mlo_angle_deg``
  (default 45°) is assumed and ``angle_assumed`` is set.
- The nipple is the most anterior point of the breast contour (canonical orientation: the
  right-most breast pixel). A retracted or not-in-profile nipple is not detected as such.
- Without a usable PatientOrientation column direction, the standard hanging is assumed (CC:
  lateral up; ML: superior up; MLO: superolateral up) and ``orientation_assumed`` is set.

numpy only (plus what :mod:`serving.pipeline.preprocess` uses); never torch, monai, scipy or
``training``.
"""

from __future__ import annotations

# Every re-export is spelled ``name as name`` (an explicit re-export); ``__all__`` stays the
# list that ``locate.py`` had, so ``from serving.pipeline.locate import *`` is unchanged.
from serving.pipeline.locate.birads import CENTRAL_MM as CENTRAL_MM
from serving.pipeline.locate.birads import CLOCKLESS_REGIONS as CLOCKLESS_REGIONS
from serving.pipeline.locate.birads import ORIENTATION_UNKNOWN as ORIENTATION_UNKNOWN
from serving.pipeline.locate.birads import RETROAREOLAR_MM as RETROAREOLAR_MM
from serving.pipeline.locate.birads import Depth as Depth
from serving.pipeline.locate.birads import Quadrant as Quadrant
from serving.pipeline.locate.birads import clock_hour as clock_hour
from serving.pipeline.locate.birads import depth_third as depth_third
from serving.pipeline.locate.birads import location_phrase as location_phrase
from serving.pipeline.locate.birads import quadrant as quadrant
from serving.pipeline.locate.birads import stated_clock_hour as stated_clock_hour
from serving.pipeline.locate.breast_frame import COMPRESSION_SPREAD as COMPRESSION_SPREAD
from serving.pipeline.locate.breast_frame import DEFAULT_MLO_ANGLE_DEG as DEFAULT_MLO_ANGLE_DEG
from serving.pipeline.locate.breast_frame import orientation_assumed as orientation_assumed
from serving.pipeline.locate.landmarks import FINE_OPENING_MM as FINE_OPENING_MM
from serving.pipeline.locate.landmarks import FINE_SMOOTH_MM as FINE_SMOOTH_MM
from serving.pipeline.locate.landmarks import FINE_WINDOW_MM as FINE_WINDOW_MM
from serving.pipeline.locate.landmarks import PECTORAL_EDGE_MM as PECTORAL_EDGE_MM
from serving.pipeline.locate.landmarks import PECTORAL_INLIER_MM as PECTORAL_INLIER_MM
from serving.pipeline.locate.landmarks import PECTORAL_MAX_TOP_GAP_MM as PECTORAL_MAX_TOP_GAP_MM
from serving.pipeline.locate.landmarks import PECTORAL_MIN_CONTRAST as PECTORAL_MIN_CONTRAST
from serving.pipeline.locate.landmarks import PECTORAL_MIN_DENSITY as PECTORAL_MIN_DENSITY
from serving.pipeline.locate.landmarks import PECTORAL_MIN_PLATEAU as PECTORAL_MIN_PLATEAU
from serving.pipeline.locate.landmarks import PECTORAL_MIN_ROWS as PECTORAL_MIN_ROWS
from serving.pipeline.locate.landmarks import LandmarkError as LandmarkError
from serving.pipeline.locate.landmarks import Landmarks as Landmarks
from serving.pipeline.locate.landmarks import PnlEnd as PnlEnd
from serving.pipeline.locate.landmarks import Point as Point
from serving.pipeline.locate.landmarks import find_landmarks as find_landmarks
from serving.pipeline.locate.two_views import Match as Match
from serving.pipeline.locate.two_views import match_views as match_views
from serving.pipeline.locate.two_views import pair_cost as pair_cost
from serving.pipeline.locate.view_location import Half as Half
from serving.pipeline.locate.view_location import ViewLocation as ViewLocation
from serving.pipeline.locate.view_location import describe_view as describe_view
from serving.pipeline.locate.view_location import locate_in_view as locate_in_view

__all__ = [
    "COMPRESSION_SPREAD",
    "DEFAULT_MLO_ANGLE_DEG",
    "Depth",
    "Half",
    "LandmarkError",
    "Landmarks",
    "Match",
    "Quadrant",
    "ViewLocation",
    "clock_hour",
    "depth_third",
    "describe_view",
    "find_landmarks",
    "locate_in_view",
    "location_phrase",
    "match_views",
    "orientation_assumed",
    "quadrant",
]
