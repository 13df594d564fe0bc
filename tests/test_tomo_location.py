"""Location of a tomosynthesis candidate from one DBT view (serving.pipeline.tomo.location),
with known geometry: a drawn breast, boxes placed relative to its nipple, and heights above
and below the mid-height plane."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from serving.pipeline.detect_volume import single_view_location_out
from serving.pipeline.dicom_in import Image
from serving.pipeline.locate import (
    COMPRESSION_SPREAD,
    ORIENTATION_UNKNOWN,
    Landmarks,
    clock_hour,
    find_landmarks,
)
from serving.pipeline.locate.birads import CLOCKLESS_REGIONS
from serving.pipeline.tomo import (
    HEIGHT_STRETCH,
    TomoCandidate,
    TrackPoint,
    central_frames,
    central_image,
    height_axis,
    locate_candidates,
    locate_in_volume,
    mid_height_mm,
)
from serving.pipeline.tomo.location import HEIGHT_AXIS_UNKNOWN
from tests.test_tomo_volume import ArrayVolume, base_image, heights

SPACING = 0.2  # mm
ROWS, COLS = 500, 360
MID = 25.0  # mid-height of a 50-frame, 1 mm stack from 0.5 mm


def breast_pixels() -> npt.NDArray[np.uint16]:
    """A breast seen in one plane, chest wall at column 0, nipple pointing right: a half
    ellipse (64 mm deep, 46 mm half-height) with a nipple bump, mild texture, air 100."""
    rng = np.random.default_rng(3)
    r, c = np.mgrid[0:ROWS, 0:COLS].astype(np.float64) + 0.5
    body = np.sqrt(((r - 250) / 230) ** 2 + (c / 300) ** 2)
    bump = np.sqrt(((r - 250) / 30) ** 2 + ((c - 300) / 20) ** 2)
    tissue = np.clip(np.maximum((1 - body) / 0.05, (1 - bump) / 0.3), 0, 1)
    img = 100 + tissue * (1800 + 100 * np.sin(r / 9.0) * np.cos(c / 13.0)
                          + rng.normal(0, 10, r.shape))
    return np.clip(np.round(img), 0, 4095).astype(np.uint16)


PIXELS = breast_pixels()


def image(view: str = "CC", laterality: str = "R", col_dir: str = "L",
          angle: float | None = None) -> Image:
    """The drawn breast as a ``view`` image (``"?"``: no view) of ``laterality``, rows
    running to ``col_dir``, PositionerPrimaryAngle ``angle``."""
    base = base_image(PIXELS, spacing=SPACING, laterality=laterality,
                      orientation=("A", col_dir))
    return replace(base, view=None if view == "?" else view, positioner_primary_angle=angle)


@pytest.fixture(scope="module")
def landmarks() -> Landmarks:
    return find_landmarks(image())


def candidate(marks: Landmarks, behind_mm: float, up_mm: float, height_mm: float | None,
              size_mm: float = 4.0, frame: int = 0) -> TomoCandidate:
    """A candidate centred ``behind_mm`` behind the nipple and ``up_mm`` above it in the image
    (nipple pointing right), at ``height_mm`` above the detector."""
    nx, ny = marks.nipple_xy
    cx, cy = nx - behind_mm / SPACING, ny - up_mm / SPACING
    h = size_mm / SPACING / 2
    box = (cx - h, cy - h, cx + h, cy + h)
    return TomoCandidate(box=box, score=0.8, label=0, best_frame=frame, first_frame=frame,
                         last_frame=frame, height_mm=height_mm,
                         track=(TrackPoint(frame, box, 0.8, height_mm),))


def test_the_nipple_of_the_drawn_breast(landmarks: Landmarks) -> None:
    assert not landmarks.mirrored
    assert landmarks.nipple_xy[0] == pytest.approx(320, abs=5)
    assert landmarks.nipple_xy[1] == pytest.approx(250, abs=5)


# ------------------------------------------------------------------------- CC


@pytest.mark.parametrize(("laterality", "col_dir", "hour"), [
    ("R", "L", 11),  # right CC, rows run to the patient's left (medial): up is lateral
    ("L", "R", 1),  # the mirror-image left breast
])
def test_cc_above_mid_height_and_lateral(landmarks: Landmarks, laterality: str, col_dir: str,
                                         hour: int) -> None:
    """15 mm lateral of the nipple axis in the image, 20 mm above mid-height (superior):
    upper outer, about 30 degrees from 12 towards the axilla."""
    img = image("CC", laterality, col_dir)
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0), img, landmarks, MID)
    assert loc.clock_hour == hour
    assert loc.quadrant == "UOQ"
    assert loc.height_axis == (1.0, 0.0)
    assert loc.up_axis == (0.0, 1.0)
    d, u, lat = loc.position_mm
    assert u == pytest.approx(20.0 * HEIGHT_STRETCH)
    assert lat == pytest.approx(15.0 / COMPRESSION_SPREAD, abs=0.5)
    assert d == pytest.approx(30.0 / COMPRESSION_SPREAD, abs=0.5)
    assert loc.distance_mm == pytest.approx(math.sqrt(d * d + u * u + lat * lat))
    assert loc.distance_cm == 4
    assert loc.depth == "middle"  # 30 of about 64 mm
    side = "Right" if laterality == "R" else "Left"
    assert loc.phrase == f"{side} breast, {hour} o'clock, middle depth, 4 cm from nipple"
    assert not loc.orientation_assumed and loc.angle_deg is None


@pytest.mark.parametrize(("laterality", "col_dir", "hour"), [("R", "L", 5), ("L", "R", 7)])
def test_cc_below_mid_height_and_medial(landmarks: Landmarks, laterality: str, col_dir: str,
                                        hour: int) -> None:
    img = image("CC", laterality, col_dir)
    loc = locate_in_volume(candidate(landmarks, 30.0, -15.0, MID - 20.0), img, landmarks, MID)
    assert loc.clock_hour == hour
    assert loc.quadrant == "LIQ"


def test_cc_stored_with_lateral_down(landmarks: Landmarks) -> None:
    """The same right breast hung with medial up (rows run lateral, ``"A\\R"``): a finding
    above the nipple in the image is now medial."""
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0),
                           image("CC", "R", "R"), landmarks, MID)
    assert loc.up_axis == (0.0, -1.0)
    assert loc.quadrant == "UIQ" and loc.clock_hour == 1


def test_on_the_axis_at_mid_height_is_retroareolar(landmarks: Landmarks) -> None:
    loc = locate_in_volume(candidate(landmarks, 10.0, 0.0, MID + 1.0), image(), landmarks, MID)
    assert loc.quadrant == "retroareolar"
    assert loc.phrase.startswith("Right breast, retroareolar, anterior depth")


def test_height_alone_moves_a_finding_round_the_clock(landmarks: Landmarks) -> None:
    """On the nipple axis in the image: above mid-height is 12 o'clock, below is 6."""
    img = image()
    up = locate_in_volume(candidate(landmarks, 40.0, 0.0, MID + 15.0), img, landmarks, MID)
    down = locate_in_volume(candidate(landmarks, 40.0, 0.0, MID - 15.0), img, landmarks, MID)
    assert (up.clock_hour, down.clock_hour) == (12, 6)
    assert up.height_offset_mm == pytest.approx(15.0)


# ------------------------------------------------------------------------- ML / MLO


@pytest.mark.parametrize(("laterality", "hour"), [("L", 10), ("R", 2)])
def test_ml_height_is_medial(landmarks: Landmarks, laterality: str, hour: int) -> None:
    """ML: superior up in the image (rows run to the feet), detector lateral, so above
    mid-height is medial: 15 mm superior and 20 mm above mid-height is upper inner."""
    img = image("ML", laterality, "F")
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0), img, landmarks, MID)
    assert loc.height_axis == (0.0, -1.0)
    assert loc.quadrant == "UIQ"
    assert loc.clock_hour == hour


@pytest.mark.parametrize(("laterality", "col_dir", "hour"), [("L", "FR", 10), ("R", "FL", 2)])
def test_mlo_height_is_superomedial_at_the_c_arm_angle(landmarks: Landmarks, laterality: str,
                                                       col_dir: str, hour: int) -> None:
    """MLO at 60 degrees, on the nipple axis in the image, 20 mm above mid-height: 60
    degrees from superior towards medial (10 o'clock on the left, 2 on the right)."""
    img = image("MLO", laterality, col_dir, angle=60.0)
    loc = locate_in_volume(candidate(landmarks, 30.0, 0.0, MID + 20.0), img, landmarks, MID)
    assert loc.angle_deg == 60.0 and not loc.angle_assumed
    assert loc.height_axis == pytest.approx((0.5, -math.sqrt(3) / 2))
    assert loc.up_axis == pytest.approx((math.sqrt(3) / 2, 0.5))
    assert loc.clock_hour == hour
    _, u, lat = loc.position_mm
    assert u == pytest.approx(20.0 * HEIGHT_STRETCH * 0.5, abs=0.3)
    assert lat == pytest.approx(-20.0 * HEIGHT_STRETCH * math.sqrt(3) / 2, abs=0.3)


def test_mlo_without_an_angle_assumes_45(landmarks: Landmarks) -> None:
    img = image("MLO", "L", "FR")
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID), img, landmarks, MID)
    assert loc.angle_deg == 45.0 and loc.angle_assumed
    # in the image plane only: superolateral, as a 2D MLO says
    _, u, lat = loc.position_mm
    assert u == pytest.approx(lat, abs=0.5) and u > 0
    assert loc.quadrant == "UOQ"


def test_the_clock_matches_the_birads_rule_for_many_positions(landmarks: Landmarks) -> None:
    """For a right CC (up lateral), the clock face equals clock_hour of the expected
    breast-frame position."""
    img = image("CC", "R", "L")
    for up_mm, dh in [(10.0, 3.0), (-12.0, 8.0), (5.0, -14.0), (-8.0, -2.0), (14.0, 14.0)]:
        loc = locate_in_volume(candidate(landmarks, 35.0, up_mm, MID + dh), img, landmarks,
                               MID)
        expected = clock_hour(dh * HEIGHT_STRETCH, up_mm / COMPRESSION_SPREAD, "R")
        assert loc.clock_hour == expected, (up_mm, dh)


# ------------------------------------------------------------------------- what is not stated


def test_a_lesion_on_the_nipple_axis_states_its_region_and_no_clock_face(
        landmarks: Landmarks) -> None:
    """Within 10 mm of the nipple axis the direction from the axis is a few millimetres of
    measurement, not a position: the JSON states "retroareolar"/"central" and no clock hour,
    as the phrase does (BI-RADS); off the axis the clock hour is stated."""
    img = image("CC", "R", "L")
    near = locate_in_volume(candidate(landmarks, 15.0, 1.0, MID + 0.5), img, landmarks, MID)
    deep = locate_in_volume(candidate(landmarks, 45.0, -1.0, MID - 0.5), img, landmarks, MID)
    off = locate_in_volume(candidate(landmarks, 35.0, 10.0, MID + 14.0), img, landmarks, MID)
    assert (near.quadrant, deep.quadrant) == ("retroareolar", "central")
    assert near.clock_hour is not None and deep.clock_hour is not None  # measured, kept inside
    for loc in (near, deep):
        out = single_view_location_out(loc)
        assert out.clock_hour is None and out.quadrant == loc.quadrant
        assert loc.quadrant in out.phrase and "o'clock" not in out.phrase
    out = single_view_location_out(off)
    assert off.quadrant not in CLOCKLESS_REGIONS
    assert out.clock_hour == off.clock_hour is not None
    assert f"{off.clock_hour} o'clock" in out.phrase


def test_unknown_orientation_withholds_clock_and_quadrant(landmarks: Landmarks) -> None:
    img = replace(image(), patient_orientation=None)
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0), img, landmarks, MID)
    assert loc.orientation_assumed
    assert loc.clock_hour is None and loc.quadrant is None
    assert ORIENTATION_UNKNOWN in loc.phrase and "middle depth" in loc.phrase


@pytest.mark.parametrize("view", ["LMO", "SIO", "?"])
def test_views_without_a_known_height_axis(landmarks: Landmarks, view: str) -> None:
    img = image(view, "L", "FR")
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0), img, landmarks, MID)
    assert loc.height_axis is None
    assert loc.clock_hour is None and loc.quadrant is None
    assert math.isnan(loc.position_mm[1]) and math.isnan(loc.position_mm[2])
    assert HEIGHT_AXIS_UNKNOWN in loc.phrase
    # the distance does not need the directions
    assert loc.distance_mm == pytest.approx(
        math.hypot(30 / COMPRESSION_SPREAD, 15 / COMPRESSION_SPREAD, 20 * HEIGHT_STRETCH),
        abs=0.5)


def test_unknown_laterality_has_no_clock(landmarks: Landmarks) -> None:
    img = image("ML", "U", "F")
    loc = locate_in_volume(candidate(landmarks, 30.0, 15.0, MID + 20.0), img, landmarks, MID)
    assert loc.clock_hour is None
    assert loc.quadrant == "UIQ"  # ML: superior from the image, medial from the height


# ------------------------------------------------------------------------- helpers


def test_height_axes() -> None:
    assert height_axis("CC") == (1.0, 0.0)
    assert height_axis("XCCL") == (1.0, 0.0)
    assert height_axis("FB") == (-1.0, 0.0)
    assert height_axis("ML") == (0.0, -1.0)
    assert height_axis("LM") == (0.0, 1.0)
    assert height_axis("LMO") is None and height_axis(None) is None
    # MLO lies between CC (0 degrees) and ML (90 degrees), perpendicular to its up axis
    assert height_axis("MLO", 1e-6) == pytest.approx((1.0, 0.0), abs=1e-6)
    assert height_axis("MLO", 90 - 1e-6) == pytest.approx((0.0, -1.0), abs=1e-6)
    for a in (40.0, 50.0, 60.0):
        hs, hl = height_axis("MLO", a) or (math.nan, math.nan)
        r = math.radians(a)
        assert hs * math.sin(r) + hl * math.cos(r) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="angle"):
        height_axis("MLO")


def test_mid_height_and_central_frames() -> None:
    assert mid_height_mm([0.5 + i for i in range(50)]) == pytest.approx(25.0)
    assert mid_height_mm([60.0, 50.0, 40.0, 30.0]) == pytest.approx(45.0)  # any order
    assert central_frames([0.5 + i for i in range(50)], 5) == (22, 23, 24, 25, 26)
    assert central_frames([60.0, 50.0, 40.0, 30.0], 2) == (1, 2)
    assert central_frames([1.0, 2.0], 5) == (0, 1)
    with pytest.raises(ValueError, match="finite"):
        mid_height_mm([])
    with pytest.raises(ValueError, match=">= 1"):
        central_frames([1.0], 0)


def test_central_image_is_the_mean_of_the_central_frames() -> None:
    base = base_image(np.full((8, 6), 100, np.uint16))
    vol = ArrayVolume(base, lambda i: np.full((8, 6), float(i)), heights(11))
    img, used = central_image(vol, 3)
    assert used == (4, 5, 6)
    assert float(img.pixels[0, 0]) == pytest.approx(5.0)
    assert vol.reads == [4, 5, 6]
    assert not img.pixels.flags.writeable


def test_locate_candidates_of_a_volume() -> None:
    """A 50-frame right CC volume whose every plane shows the breast; a candidate at frame
    44 (44.5 mm, 19.5 mm above mid-height), 15 mm lateral in the image."""
    base = image("CC", "R", "L")
    vol = ArrayVolume(base, lambda i: PIXELS.astype(np.float32), heights(50))
    marks = find_landmarks(base)
    cand = candidate(marks, 30.0, 15.0, None, frame=44)
    result = locate_candidates(vol, [cand])
    assert result.mid_height_mm == pytest.approx(MID)
    assert result.central_frames == (22, 23, 24, 25, 26)
    assert sorted(set(vol.reads)) == [22, 23, 24, 25, 26]
    (loc,) = result.locations
    assert loc.height_mm == pytest.approx(44.5)  # from the header: the candidate had none
    assert loc.clock_hour == 11 and loc.quadrant == "UOQ"
    assert result.landmarks.nipple_xy == pytest.approx(marks.nipple_xy)


def test_refusals(landmarks: Landmarks) -> None:
    img = image()
    with pytest.raises(ValueError, match="no height_mm"):
        locate_in_volume(candidate(landmarks, 30.0, 0.0, None, frame=3), img, landmarks, MID)
    with pytest.raises(ValueError, match="spread"):
        locate_in_volume(candidate(landmarks, 30.0, 0.0, MID), img, landmarks, MID, spread=0)
    with pytest.raises(ValueError, match="mlo_angle_deg"):
        locate_in_volume(candidate(landmarks, 30.0, 0.0, MID), img, landmarks, MID,
                         mlo_angle_deg=90.0)
    with pytest.raises(ValueError, match="mid_mm"):
        locate_in_volume(candidate(landmarks, 30.0, 0.0, MID), img, landmarks, math.nan)
