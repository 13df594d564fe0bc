"""Single-view DBT clock face against the simulator's truth, geometry only.

Synthetic tomosynthesis cases (:func:`training.synth.dbt.generate_dbt_case`: CC with ML or
MLO, left and right breasts, standard and mirrored hangings) are written as Breast
Tomosynthesis Image files (:func:`training.synth.dicom_out_dbt.write_dbt_view`) and read back
with :func:`serving.pipeline.intake.read_volume`. Each lesion's TRUE box and TRUE best frame
(``dataset.json``'s ``boxes`` and ``best_frames``), not a detection, becomes a
:class:`~serving.pipeline.tomo.TomoCandidate` and is located from that one view; its clock
hour is compared with the truth (:func:`training.synth.anatomy.clock_hour` of the lesion
centre, ``dataset.json``'s ``lesions[].clock_hour``). This checks that the writer, the reader
(frame heights toward the X-ray source, C-arm angle) and the locator (height axis, image up
axis, mid-height, stretch) agree on the conventions, apart from detection.

Two locations per lesion:

- **geometry**: :func:`~serving.pipeline.tomo.locate_in_volume` on the volume's
  :func:`~serving.pipeline.tomo.central_image` with the landmarks
  :func:`~serving.pipeline.locate.find_landmarks` finds there, the nipple set to the
  simulator's (``nipple_xy``): the clock hour must be within one hour of the truth for at
  least :data:`MIN_GEOMETRY` of the lesions of every view kind (CC, ML, MLO);
- **pipeline**: :func:`~serving.pipeline.tomo.locate_candidates` as served, nipple found on
  the image: at least :data:`MIN_PIPELINE`. The synthetic frames' outline is cut on a
  coarse tissue mask and the nipple barely protrudes, so the nipple found on some volumes
  lies 5-13 mm from the simulator's; a lesion a few mm off the nipple axis then gets a
  wrong hour whatever the geometry.

Volumes are coarse (the ``test`` profile's 102 x 77 mm field at 0.8 mm pixels, 2 mm slices,
3 projections) and the cases few (:func:`case_indices`), so the module runs in well under a
minute. ``pytest -s`` prints the per-view tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from serving.pipeline.intake import read_volume
from serving.pipeline.tomo import (
    TomoCandidate,
    central_image,
    locate_candidates,
    locate_in_volume,
)
from training.synth.case import CaseParams, draw_case
from training.synth.dbt import DbtParams, generate_dbt_case
from training.synth.dicom_out_dbt import write_dbt_view
from training.synth.profiles import get_profile

PROFILE = get_profile("test")
SEED = 7
#: Every case has lesions; the second view is ML or MLO with equal odds.
CASE_PARAMS = CaseParams(normal_p=0.0, mlo_p=0.5)
DBT_PARAMS = DbtParams(spacing_mm=0.8, slice_mm=2.0, projections=3)
#: Lesions wanted for each (ML or MLO, laterality); CC gets every case's lesions.
LESIONS_PER_GROUP = 8
#: Share of the lesions of each view kind whose clock hour must be within one hour.
MIN_GEOMETRY = 0.9
MIN_PIPELINE = 0.75
VIEW_KINDS = ("CC", "ML", "MLO")


def case_indices() -> list[int]:
    """Case indices of :data:`SEED`, in order, each kept while its (second view, laterality)
    group has fewer than :data:`LESIONS_PER_GROUP` lesions (chosen from the drawn views and
    sides only, before anything is rendered or located)."""
    count: Counter[tuple[str, str]] = Counter()
    groups = [(view, side) for view in ("ML", "MLO") for side in ("L", "R")]
    kept: list[int] = []
    index = 0
    while min(count[g] for g in groups) < LESIONS_PER_GROUP:
        draws = draw_case(SEED, index, PROFILE, CASE_PARAMS)
        group = (draws.views[1], draws.laterality)
        if count[group] < LESIONS_PER_GROUP:
            kept.append(index)
            count[group] += len(draws.phantom.lesions)
        index += 1
    return kept


@dataclass(frozen=True)
class ViewRead:
    """One written view as read back: its frame heights and C-arm angle against the
    simulator's."""

    case: int
    view: str
    laterality: str
    heights_mm: tuple[float, ...]
    truth_heights_mm: tuple[float, ...]
    angle_deg: float | None
    angle_assumed: bool
    truth_angle_deg: float


@dataclass(frozen=True)
class Row:
    """One lesion in one view: the truth and the two single-view clock hours."""

    case: int
    view: str
    laterality: str
    orientation: str
    truth_hour: int
    truth_position_mm: tuple[float, ...]
    geometry_hour: int | None
    pipeline_hour: int | None
    pipeline_position_mm: tuple[float, ...]


def hour_error(truth: int, hour: int | None) -> int:
    """Clock-face distance in whole hours (12 when no hour was stated)."""
    if hour is None:
        return 12
    d = abs(truth - hour) % 12
    return min(d, 12 - d)


def _locate_case(index: int, out: Path) -> Iterator[Row | ViewRead]:
    """Write the case's views, read them back and locate every lesion from its truth."""
    res = generate_dbt_case(SEED, index, PROFILE, CASE_PARAMS, DBT_PARAMS)
    truth = {les["id"]: les for les in res.ground_truth["lesions"]}
    for vi, (view, item) in enumerate(zip(res.views, res.items, strict=True)):
        path = out / f"case{index}_{vi}.dcm"
        write_dbt_view(view, res.header, PROFILE, path)
        volume = read_volume(path)
        candidates = [
            TomoCandidate(box=(box[0], box[1], box[2], box[3]), score=1.0, label=0,
                          best_frame=best - 1, first_frame=first - 1, last_frame=last - 1,
                          height_mm=None, track=())
            for box, best, (first, last) in zip(item["boxes"], item["best_frames"],
                                                item["frame_ranges"], strict=True)]
        served = locate_candidates(volume, candidates)
        image, _ = central_image(volume, mid_mm=served.mid_height_mm)
        nipple = (float(item["nipple_xy"][0]), float(item["nipple_xy"][1]))
        marks = replace(served.landmarks, nipple_xy=nipple)
        heights = volume.header.frame_heights_mm
        first = served.locations[0]
        yield ViewRead(case=index, view=item["view"], laterality=item["laterality"],
                       heights_mm=tuple(heights),
                       truth_heights_mm=tuple(float(z) for z in view.heights_mm),
                       angle_deg=first.angle_deg, angle_assumed=first.angle_assumed,
                       truth_angle_deg=view.positioner_primary_angle_deg)
        for candidate, loc, lesion_id in zip(candidates, served.locations,
                                             item["lesion_ids"], strict=True):
            geometry = locate_in_volume(candidate, image, marks, served.mid_height_mm,
                                        frame_heights_mm=heights)
            les = truth[lesion_id]
            yield Row(case=index, view=item["view"], laterality=item["laterality"],
                      orientation=item["patient_orientation"], truth_hour=les["clock_hour"],
                      truth_position_mm=tuple(les["position_mm"]),
                      geometry_hour=geometry.clock_hour, pipeline_hour=loc.clock_hour,
                      pipeline_position_mm=tuple(round(v, 1) for v in loc.position_mm))


@pytest.fixture(scope="module")
def located(tmp_path_factory: pytest.TempPathFactory) -> list[Row | ViewRead]:
    out = tmp_path_factory.mktemp("dbt_truth")
    return [found for index in case_indices() for found in _locate_case(index, out)]


@pytest.fixture(scope="module")
def rows(located: list[Row | ViewRead]) -> list[Row]:
    return [r for r in located if isinstance(r, Row)]


@pytest.fixture(scope="module")
def views(located: list[Row | ViewRead]) -> list[ViewRead]:
    return [r for r in located if isinstance(r, ViewRead)]


def _share(rows: list[Row], kind: str, pipeline: bool) -> float:
    sel = [r for r in rows if r.view == kind]
    ok = sum(hour_error(r.truth_hour, r.pipeline_hour if pipeline else r.geometry_hour) <= 1
             for r in sel)
    return ok / len(sel)


def table(rows: list[Row]) -> str:
    """Per view kind and laterality: lesions and those within one hour (geometry, pipeline)."""
    lines = [f"{'view':<5} {'side':<4} {'lesions':>7} {'geometry <=1 h':>15} "
             f"{'pipeline <=1 h':>15}"]
    for kind in VIEW_KINDS:
        for side in ("L", "R", "all"):
            sel = [r for r in rows if r.view == kind and side in ("all", r.laterality)]
            cells = []
            for pipeline in (False, True):
                ok = sum(hour_error(r.truth_hour, r.pipeline_hour if pipeline
                                    else r.geometry_hour) <= 1 for r in sel)
                cells.append(f"{ok:>3} ({ok / len(sel):>4.0%})" if sel else "-")
            lines.append(f"{kind:<5} {side:<4} {len(sel):>7} {cells[0]:>15} {cells[1]:>15}")
    return "\n".join(lines)


def test_cases_cover_every_view_kind_and_side(rows: list[Row]) -> None:
    for kind in VIEW_KINDS:
        for side in ("L", "R"):
            n = sum(r.view == kind and r.laterality == side for r in rows)
            assert n >= LESIONS_PER_GROUP, (kind, side, n)


def test_frame_heights_rise_toward_the_source_as_simulated(views: list[ViewRead]) -> None:
    """Heights read from the file are the simulator's heights above the breast support,
    measured from the lowest frame, in every view (CC: superior, ML: medial, MLO:
    superomedial)."""
    for v in views:
        lowest = v.truth_heights_mm[0]
        expected = [z - lowest for z in v.truth_heights_mm]
        assert v.heights_mm == pytest.approx(expected, abs=1e-3), (v.case, v.laterality,
                                                                    v.view)


def test_mlo_c_arm_angle_is_read(views: list[ViewRead]) -> None:
    """The MLO locator uses the view's own C-arm angle, not the assumed one."""
    oblique = [v for v in views if v.view == "MLO"]
    assert oblique
    for v in oblique:
        assert not v.angle_assumed, (v.case, v.laterality)
        assert v.angle_deg == pytest.approx(v.truth_angle_deg), (v.case, v.laterality)


def test_geometry_clock_within_one_hour_of_the_truth(rows: list[Row]) -> None:
    print("\n" + table(rows))
    for kind in VIEW_KINDS:
        share = _share(rows, kind, pipeline=False)
        assert share >= MIN_GEOMETRY, f"{kind}: {share:.0%}\n{table(rows)}"


def test_pipeline_clock_within_one_hour_of_the_truth(rows: list[Row]) -> None:
    for r in rows:
        if hour_error(r.truth_hour, r.pipeline_hour) > 1:
            print(f"  pipeline miss: case {r.case} {r.laterality} {r.view} {r.orientation}: "
                  f"truth {r.truth_hour} h at {r.truth_position_mm}, located "
                  f"{r.pipeline_hour} h at {r.pipeline_position_mm}")
    for kind in VIEW_KINDS:
        share = _share(rows, kind, pipeline=True)
        assert share >= MIN_PIPELINE, f"{kind}: {share:.0%}\n{table(rows)}"
