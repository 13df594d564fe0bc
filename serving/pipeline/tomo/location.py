"""Where a tomosynthesis candidate is, from ONE DBT view: clock face, quadrant, depth third and
distance from the nipple (ACR BI-RADS, DOMAIN.md).

A 2D view tells only half of a location: its image plane holds the depth behind the nipple and
one coronal direction (CC: lateral/medial; ML: superior/inferior; MLO: superolateral). A DBT
view adds the other coronal direction: the height of the lesion's plane above the detector.
So one DBT view gives the whole location, without matching a second view.

Steps (:func:`locate_candidates` runs them for a volume):

1. **Landmarks** once per volume, on the mean of :data:`CENTRAL_FRAMES` frames around the
   breast's mid-height (:func:`central_image`), with :func:`serving.pipeline.locate.
   find_landmarks`. Not on each candidate's best frame: planes near the compression paddle or
   the breast support cut the rounded breast edge short, so their outline and "nipple" lie
   inside the true ones, while the nipple lies near mid-thickness; one landmark set also gives
   every candidate of a volume the same nipple and posterior nipple line, and the mean of a
   few planes is less noisy than one.
2. **In-plane**: :func:`serving.pipeline.locate.locate_in_view` of the candidate's box on that
   image: distance behind the nipple along the nipple axis (``axial_mm``), offset along the
   image's up axis (``offset_mm``), depth fraction of the posterior nipple line.
3. **Height**: ``height - mid``, the lesion's plane above the breast's mid-height plane
   (:func:`mid_height_mm`), along the view's height axis (:func:`height_axis`).
4. **Breast frame** (mm, origin at the nipple, ``d`` posterior, ``u`` superior, ``l``
   lateral, see :mod:`serving.pipeline.locate.breast_frame`): the in-plane offset is the
   position's component along the up axis, the height offset its component along the height
   axis; solving the two gives ``(u, l)``, as :func:`serving.pipeline.locate.match_views`
   solves two views. Then :func:`~serving.pipeline.locate.clock_hour` (with the laterality),
   :func:`~serving.pipeline.locate.quadrant`, the depth third and the distance in whole cm.

Height axis: the direction of increasing height (away from the detector, towards the X-ray
tube) in the coronal plane ``(u, l)``, from where the detector lies in each view (DOMAIN.md;
the beam runs from the tube through the breast to the detector):

- CC, XCCL, XCCM (detector under the breast): superior ``(1, 0)``; FB (from below): inferior.
- ML (beam medial to lateral, detector lateral): medial ``(0, -1)``; LM: lateral ``(0, 1)``.
- MLO (beam superomedial to inferolateral) at C-arm angle ``a`` (0 = CC, 90 = ML):
  superomedial ``(cos a, -sin a)``, perpendicular to the image's superolateral up axis
  ``(sin a, cos a)``. ``a`` is PositionerPrimaryAngle's magnitude when in (0, 90)
  (:attr:`serving.pipeline.locate.ViewLocation.angle_deg`), else ``mlo_angle_deg``
  (default 45, as in :func:`~serving.pipeline.locate.match_views`) and ``angle_assumed``.
- Other views (LMO, SIO, ISO, unknown): not stated; the location then has depth and distance
  but no clock face or quadrant.

Assumptions (stated, not measured on patients):

- Mid-height: the breast fills the reconstructed stack, from the breast support to the
  paddle, and the nipple lies at the middle of that span: ``mid = (min + max) / 2`` of the
  frame heights. (Half the top frame's height assumes in addition that the lowest plane is
  at the detector; the span's middle does not.) Pass ``mid_height_mm`` when the compressed
  thickness is known otherwise.
- In-plane distances are divided by the compression spread, as in ``locate``
  (:data:`~serving.pipeline.locate.COMPRESSION_SPREAD`, 1.1). Heights are multiplied by
  :data:`HEIGHT_STRETCH` = spread squared: tissue is nearly incompressible, so a breast
  spread by ``s`` along both in-plane axes is squeezed by ``s**2`` along the compression axis.
- Every frame shares the in-plane pixel grid and spacing of the volume header.

Boxes are ``[x1, y1, x2, y2]`` stored pixels (x = column, x2/y2 exclusive); frame indices
0-based; heights mm above the detector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.locate import (
    COMPRESSION_SPREAD,
    DEFAULT_MLO_ANGLE_DEG,
    ORIENTATION_UNKNOWN,
    Depth,
    Landmarks,
    Quadrant,
    ViewLocation,
    clock_hour,
    find_landmarks,
    locate_in_view,
    location_phrase,
    quadrant,
)
from serving.pipeline.locate.birads import whole_cm
from serving.pipeline.locate.breast_frame import CC_VIEWS
from serving.pipeline.run import decoded_grid
from serving.pipeline.tomo.link import TomoCandidate
from serving.pipeline.tomo.volume import VolumeLike, check_volume

__all__ = [
    "CENTRAL_FRAMES",
    "HEIGHT_AXIS_UNKNOWN",
    "HEIGHT_STRETCH",
    "TomoLocation",
    "VolumeLocations",
    "central_frames",
    "central_image",
    "height_axis",
    "locate_candidates",
    "locate_in_volume",
    "mid_height_mm",
]

#: Frames averaged for the landmarks (:func:`central_image`), around the mid-height.
CENTRAL_FRAMES: Final = 5
#: Compressed height -> uncompressed: the compression spread squared (volume conservation).
HEIGHT_STRETCH: Final = COMPRESSION_SPREAD**2
#: Why a DBT location states no clock face or quadrant for some views.
HEIGHT_AXIS_UNKNOWN: Final = "the height axis of this tomosynthesis view is not known"

#: |det| of the (up axis, height axis) system below which the two do not separate u from l.
_MIN_DET: Final = 0.2


@dataclass(frozen=True)
class TomoLocation:
    """Where one tomosynthesis candidate lies, from one DBT view.

    Attributes:
        view: the view (``"CC"``, ``"MLO"``, ...; ``"?"`` when unknown).
        laterality: ``"L"``, ``"R"`` or ``"U"``.
        in_plane: the in-plane location of the candidate's box
            (:func:`serving.pipeline.locate.locate_in_view`) on the landmark image (its
            points on the decoded grid when the frames were decoded at a reduced
            resolution, as in :mod:`serving.pipeline.candidates`), its
            :attr:`~serving.pipeline.locate.ViewLocation.coronal_mm` set to ``(u, l)`` of
            :attr:`position_mm` when both are known and the orientation was not assumed.
        height_mm: the candidate's plane above the detector, mm.
        mid_height_mm: the breast's mid-height plane above the detector, mm.
        height_offset_mm: ``height_mm - mid_height_mm`` (compressed breast, mm).
        up_axis: the image's up axis ``(superior, lateral)`` in the breast frame, from
            PatientOrientation and the laterality (unit length for CC, ML/LM and MLO; a
            component is 0 where they do not tell it, e.g. CC of unknown laterality).
        height_axis: the direction of increasing height ``(superior, lateral)``, unit
            length, or ``None`` when the view does not tell it (:func:`height_axis`).
        angle_deg: the C-arm angle used for an oblique (MLO-like) view, degrees, else
            ``None``.
        angle_assumed: True when that angle is ``mlo_angle_deg``, not the image's own.
        position_mm: ``(d, u, l)`` in the uncompressed breast frame (mm, origin at the
            nipple): ``d`` posterior, ``u`` superior, ``l`` lateral; ``u`` and ``l`` are
            ``nan`` when the axes do not separate them.
        distance_mm: distance from the nipple in the uncompressed breast, mm:
            ``sqrt(d**2 + p**2 + q**2)`` with ``p`` the in-plane offset / spread and ``q``
            the height offset * stretch (valid whatever the axes' directions, since the
            height axis is perpendicular to the image plane).
        distance_cm: whole cm.
        depth_fraction: the in-plane posterior-nipple-line fraction (0 nipple, 1 chest wall).
        depth: its third.
        clock_hour: 1-12, or ``None`` (unknown laterality, axes or orientation).
        quadrant: BI-RADS region, or ``None``.
        orientation_assumed: PatientOrientation did not give the in-plane direction: clock
            face and quadrant are withheld unless the lesion is retroareolar or central.
        phrase: the BI-RADS location phrase, e.g. ``"Right breast, 11 o'clock, middle depth,
            3 cm from nipple"``, with the reason when a part is not stated.
    """

    view: str
    laterality: str
    in_plane: ViewLocation
    height_mm: float
    mid_height_mm: float
    height_offset_mm: float
    up_axis: tuple[float, float]
    height_axis: tuple[float, float] | None
    angle_deg: float | None
    angle_assumed: bool
    position_mm: tuple[float, float, float]
    distance_mm: float
    distance_cm: int
    depth_fraction: float
    depth: Depth
    clock_hour: int | None
    quadrant: Quadrant | None
    orientation_assumed: bool
    phrase: str


@dataclass(frozen=True)
class VolumeLocations:
    """The result of :func:`locate_candidates`.

    Attributes:
        landmarks: found on :func:`central_image` (its decoded grid).
        central_frames: the frame indices averaged for them.
        mid_height_mm: the mid-height used, mm above the detector.
        locations: one per candidate, in the candidates' order.
    """

    landmarks: Landmarks
    central_frames: tuple[int, ...]
    mid_height_mm: float
    locations: list[TomoLocation]


def mid_height_mm(frame_heights_mm: Sequence[float]) -> float:
    """The breast's mid-height plane, mm above the detector: the middle of the frames'
    height span, ``(min + max) / 2`` (see the module docstring for why).

    Raises:
        ValueError: no heights, or a height that is not finite.
    """
    h = [float(v) for v in frame_heights_mm]
    if not h or not all(math.isfinite(v) for v in h):
        raise ValueError(f"frame heights must be finite and not empty, got {h[:5]!r}")
    return (min(h) + max(h)) / 2


def central_frames(frame_heights_mm: Sequence[float], n: int = CENTRAL_FRAMES,
                   mid_mm: float | None = None) -> tuple[int, ...]:
    """The indices of the ``n`` frames (all when fewer) whose heights lie nearest ``mid_mm``
    (default :func:`mid_height_mm`), ties to the lower index, in increasing index order.

    Raises:
        ValueError: ``n < 1``, or heights :func:`mid_height_mm` refuses.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 frame, got {n!r}")
    mid = mid_height_mm(frame_heights_mm) if mid_mm is None else float(mid_mm)
    order = sorted(range(len(frame_heights_mm)),
                   key=lambda i: (abs(float(frame_heights_mm[i]) - mid), i))
    return tuple(sorted(order[:n]))


def central_image(volume: VolumeLike, n: int = CENTRAL_FRAMES,
                  mid_mm: float | None = None) -> tuple[Image, tuple[int, ...]]:
    """The mean of the :func:`central_frames` of ``volume`` (float32, read-only pixels, the
    header of the frame nearest the mid-height) and the frame indices used. Frames are read
    one at a time into a running sum (at most that frame and the one whose header is kept
    are held).

    Raises:
        ValueError: a malformed volume header, or frames of different shapes.
    """
    n_frames = check_volume(volume)
    heights = volume.header.frame_heights_mm
    mid = mid_height_mm(heights) if mid_mm is None else float(mid_mm)
    used = central_frames(heights, min(n, n_frames), mid)
    nearest = min(used, key=lambda i: (abs(float(heights[i]) - mid), i))
    total: np.ndarray | None = None
    base: Image | None = None
    for i in used:
        frame = volume.frame(i)
        if total is None:
            total = np.array(frame.pixels, dtype=np.float64, copy=True)
        elif frame.pixels.shape != total.shape:
            raise ValueError(f"frame {i} has pixel shape {frame.pixels.shape}, frame "
                             f"{used[0]} {total.shape}")
        else:
            total += frame.pixels
        if i == nearest:
            base = frame
        del frame
    assert total is not None and base is not None
    mean = (total / len(used)).astype(np.float32)
    mean.setflags(write=False)
    return replace(base, pixels=mean), used


def height_axis(view: str | None, angle_deg: float | None = None) -> tuple[float, float] | None:
    """The direction of increasing height above the detector in the breast frame,
    ``(superior, lateral)``, unit length, or ``None`` for a view where it is not known (see
    the module docstring).

    Args:
        view: the view, e.g. ``"CC"``, ``"ML"``, ``"MLO"``.
        angle_deg: the MLO C-arm angle in (0, 90) degrees (required for ``"MLO"``).

    Raises:
        ValueError: ``"MLO"`` without an angle in (0, 90).
    """
    v = (view or "").upper()
    if v == "FB":
        return (-1.0, 0.0)
    if v in CC_VIEWS:
        return (1.0, 0.0)
    if v == "ML":
        return (0.0, -1.0)
    if v == "LM":
        return (0.0, 1.0)
    if v == "MLO":
        if angle_deg is None or not 0.0 < angle_deg < 90.0:
            raise ValueError(f"MLO height axis needs a C-arm angle in (0, 90), got {angle_deg!r}")
        a = math.radians(angle_deg)
        return (math.cos(a), -math.sin(a))
    return None


def _up_axis(loc: ViewLocation, angle_deg: float | None) -> tuple[float, float]:
    """The image's up axis ``(superior, lateral)`` from the in-plane location's signs (an
    oblique view at ``angle_deg``)."""
    if loc.oblique and angle_deg is not None:
        a = math.radians(angle_deg)
        return (loc.up_superior * math.sin(a), loc.up_lateral * math.cos(a))
    return (float(loc.up_superior), float(loc.up_lateral))


def locate_in_volume(
    candidate: TomoCandidate,
    image: Image,
    landmarks: Landmarks,
    mid_mm: float,
    *,
    frame_heights_mm: Sequence[float] | None = None,
    spread: float = COMPRESSION_SPREAD,
    height_stretch: float = HEIGHT_STRETCH,
    mlo_angle_deg: float = DEFAULT_MLO_ANGLE_DEG,
) -> TomoLocation:
    """Locate one candidate of a DBT view (see the module docstring).

    Args:
        candidate: the linked candidate (its box in stored px, score, height).
        image: the image of the volume's in-plane grid the landmarks were found on (e.g.
            :func:`central_image`); its header gives view, laterality, orientation and
            C-arm angle.
        landmarks: :func:`~serving.pipeline.locate.find_landmarks` of
            ``decoded_grid(image)`` (``image`` itself unless it was decoded at a reduced
            resolution; boxes are then scaled to that grid).
        mid_mm: the breast's mid-height plane, mm above the detector (:func:`mid_height_mm`).
        frame_heights_mm: the volume's frame heights, used when ``candidate.height_mm`` is
            ``None`` (the best frame's height).
        spread: in-plane compression spread (> 0).
        height_stretch: factor from compressed height offsets to the uncompressed breast (> 0).
        mlo_angle_deg: C-arm angle assumed for an MLO without a usable PositionerPrimaryAngle,
            degrees in (0, 90).

    Raises:
        ValueError: no height for the candidate, a non-finite ``mid_mm``, parameters out of
            range, or a malformed box.
    """
    if not spread > 0 or not height_stretch > 0:
        raise ValueError(f"spread and height_stretch must be > 0, got {spread!r}, "
                         f"{height_stretch!r}")
    if not 0.0 < mlo_angle_deg < 90.0:
        raise ValueError(f"mlo_angle_deg must be in (0, 90), got {mlo_angle_deg!r}")
    if not math.isfinite(mid_mm):
        raise ValueError(f"mid_mm must be finite, got {mid_mm!r}")
    height = candidate.height_mm
    if height is None:
        if frame_heights_mm is None or not 0 <= candidate.best_frame < len(frame_heights_mm):
            raise ValueError(f"candidate has no height_mm and no frame height is given for "
                             f"frame index {candidate.best_frame}")
        height = float(frame_heights_mm[candidate.best_frame])
    scale = float(image.decode_scale)
    grid = decoded_grid(image)
    box = [float(v) / scale for v in candidate.box]
    loc = locate_in_view(box, grid, landmarks, score=candidate.score, spread=spread)
    view = loc.view
    angle: float | None = None
    angle_assumed = False
    if loc.oblique:  # the image's own PositionerPrimaryAngle when usable (locate_in_view)
        own = loc.angle_deg
        angle, angle_assumed = (own, False) if own is not None else (mlo_angle_deg, True)
    up = _up_axis(loc, angle)
    h_axis = height_axis(view, angle)
    offset = height - mid_mm
    p = loc.offset_mm / spread
    q = offset * height_stretch
    d = loc.axial_mm / spread
    distance = math.sqrt(d * d + p * p + q * q)
    u = lat = math.nan
    region: Quadrant | None = None
    clock: int | None = None
    if h_axis is not None:
        det = up[0] * h_axis[1] - up[1] * h_axis[0]
        if abs(det) > _MIN_DET:
            u = (p * h_axis[1] - up[1] * q) / det
            lat = (up[0] * q - h_axis[0] * p) / det
            region = quadrant(d, u, lat)
            clock = clock_hour(u, lat, loc.laterality) if loc.laterality in ("L", "R") else None
    cm = whole_cm(distance)
    phrase = location_phrase(loc.laterality, clock, region, loc.depth, cm)
    assumed = loc.orientation_assumed
    if h_axis is None:
        phrase += f"; clock face and quadrant not stated: {HEIGHT_AXIS_UNKNOWN} ({view})"
    elif assumed and region not in ("retroareolar", "central"):
        left_out = clock is not None or region is not None
        clock, region = None, None
        phrase = location_phrase(loc.laterality, None, None, loc.depth, cm) + (
            f"; clock face and quadrant not stated: {ORIENTATION_UNKNOWN}" if left_out else "")
    if math.isfinite(u) and math.isfinite(lat) and not assumed:
        loc = replace(loc, coronal_mm=(u, lat))
    return TomoLocation(
        view=view, laterality=loc.laterality, in_plane=loc, height_mm=float(height),
        mid_height_mm=float(mid_mm), height_offset_mm=float(offset), up_axis=up,
        height_axis=h_axis, angle_deg=angle, angle_assumed=angle_assumed,
        position_mm=(d, u, lat), distance_mm=distance, distance_cm=cm,
        depth_fraction=loc.depth_fraction, depth=loc.depth, clock_hour=clock, quadrant=region,
        orientation_assumed=assumed, phrase=phrase)


def locate_candidates(
    volume: VolumeLike,
    candidates: Sequence[TomoCandidate],
    *,
    n_central: int = CENTRAL_FRAMES,
    mid_mm: float | None = None,
    spread: float = COMPRESSION_SPREAD,
    height_stretch: float = HEIGHT_STRETCH,
    mlo_angle_deg: float = DEFAULT_MLO_ANGLE_DEG,
) -> VolumeLocations:
    """Landmarks of ``volume`` (on :func:`central_image`) and the location of every candidate
    (:func:`locate_in_volume`).

    Args:
        volume: the DBT view the candidates were found in.
        candidates: its candidates (:func:`serving.pipeline.tomo.detect.predict_volume`).
        n_central: frames averaged for the landmarks, >= 1.
        mid_mm: the breast's mid-height, mm above the detector (default
            :func:`mid_height_mm` of the frame heights).
        spread, height_stretch, mlo_angle_deg: see :func:`locate_in_volume`.

    Raises:
        serving.pipeline.locate.LandmarkError: no spacing, or no breast found.
        ValueError: a malformed volume header or bad parameters.
    """
    check_volume(volume)
    heights = volume.header.frame_heights_mm
    mid = mid_height_mm(heights) if mid_mm is None else float(mid_mm)
    image, used = central_image(volume, n_central, mid)
    landmarks = find_landmarks(decoded_grid(image))
    locs = [locate_in_volume(c, image, landmarks, mid, frame_heights_mm=heights, spread=spread,
                             height_stretch=height_stretch, mlo_angle_deg=mlo_angle_deg)
            for c in candidates]
    return VolumeLocations(landmarks=landmarks, central_frames=used, mid_height_mm=mid,
                           locations=locs)
