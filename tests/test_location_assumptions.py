"""What a location rests on is said, and what cannot be known is not stated (field case Q3),
and the MLO C-arm angle comes from the image (PositionerPrimaryAngle (0018,1510))."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from test_locate import view_loc

from serving.pipeline.detect import ORIENTATION_WARNING, detect
from serving.pipeline.dicom_in import read_image
from serving.pipeline.locate import describe_view, match_views
from serving.pipeline.model import DetectorModel


def test_mlo_takes_its_own_c_arm_angle() -> None:
    point = (50.0, 0.0, -30.0)  # medial: 9 o'clock on the left
    mlo = replace(view_loc("MLO", "L", point, angle=60.0), angle_deg=60.0)
    (m,) = match_views([view_loc("CC", "L", point)], [mlo])  # default angle is 45
    assert m.position_mm == pytest.approx(point)
    assert m.clock_hour == 9


def test_fused_location_states_no_clock_face_when_an_orientation_was_assumed() -> None:
    point = (40.0, 20.0, 15.0)
    cc = replace(view_loc("CC", "L", point), orientation_assumed=True)
    (m,) = match_views([cc], [view_loc("MLO", "L", point)])
    assert m.orientation_assumed
    assert m.clock_hour is None and m.quadrant is None
    assert "o'clock" not in m.phrase and "clock face and quadrant not stated" in m.phrase
    assert m.phrase.startswith("Left breast, middle depth, 5 cm from nipple")


def test_view_phrase_names_its_view_and_hides_an_assumed_half() -> None:
    loc = replace(view_loc("CC", "U", (40.0, 0.0, 10.0)), half=None)
    assert describe_view(loc).startswith("Breast of unknown laterality (from the CC view), ")
    known = replace(view_loc("CC", "L", (40.0, 0.0, 10.0)), half="outer")
    assert "outer half (from the CC view)" in describe_view(known)
    assumed = replace(known, orientation_assumed=True)
    text = describe_view(assumed)
    assert "outer" not in text and "half not stated" in text


def test_detect_reports_an_assumed_orientation(galactogram_files: list[Path],
                                               bundled_model: DetectorModel) -> None:
    ds = pydicom.dcmread(galactogram_files[0])
    assert "PatientOrientation" in ds
    stripped = copy.deepcopy(ds)
    del stripped.PatientOrientation
    with_o, without_o = read_image(ds), read_image(stripped)
    result = detect([without_o], bundled_model, "high_sensitivity")
    image = result.studies[0].images[0]
    assert image.orientation_assumed
    assert ORIENTATION_WARNING in image.warnings
    assert image.findings, "the study's lesion should be found at high sensitivity"
    for finding in image.findings:
        assert finding.location is not None
        assert finding.location.orientation_assumed and finding.location.half is None
    known = detect([with_o], bundled_model, "high_sensitivity").studies[0].images[0]
    assert not known.orientation_assumed and ORIENTATION_WARNING not in known.warnings


def test_intake_reads_the_c_arm_angle(galactogram_files: list[Path]) -> None:
    angles = {read_image(p).view: read_image(p).positioner_primary_angle
              for p in galactogram_files}
    oblique = [a for v, a in angles.items() if v in ("MLO", "ML")]
    assert oblique and all(a is not None and math.isfinite(a) for a in oblique)
