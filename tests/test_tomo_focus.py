"""One candidate per place, on its in-focus frame (serving.pipeline.tomo.focus): merging of
tracks at the same place, the focus measure, and run_volume with a detector that fires
hardest on an out-of-focus smear."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from serving.pipeline.dicom_in import Image
from serving.pipeline.model import DetectorModel
from serving.pipeline.preprocess import Transform
from serving.pipeline.run import RawDetections
from serving.pipeline.tomo import TomoCandidate, TrackPoint, run_volume
from serving.pipeline.tomo.focus import (
    FocusMap,
    focus_map,
    gradient_energy,
    merge_same_place,
    refocus,
)
from tests.test_tomo_volume import ArrayVolume, base_image, heights

ROWS, COLS = 48, 64
VOID = (20.0, 16.0, 30.0, 26.0)  # x1, y1, x2, y2: a 10 px void centred at (25, 21)
IN_FOCUS = 14  # the plane through the void
FAKE_MODEL = cast(DetectorModel, SimpleNamespace(classes=["filling_defect", "air_bubble"]))


def candidate(box: tuple[float, float, float, float], score: float, frames: range,
              label: int = 0, best: int | None = None) -> TomoCandidate:
    track = tuple(TrackPoint(frame=f, box=box, score=score if f == best else score / 2,
                             height_mm=f + 0.5) for f in frames)
    b = frames[len(frames) // 2] if best is None else best
    return TomoCandidate(box=box, score=score, label=label, best_frame=b,
                         first_frame=frames[0], last_frame=frames[-1], height_mm=b + 0.5,
                         track=track)


def void_plane(i: int) -> np.ndarray:
    """A bright duct with a dark round void, sharp on plane ``IN_FOCUS`` and blurred (a
    wider, softer edge) the further the plane is from it, as a reconstruction smears it."""
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    r = np.hypot(xx - 25.0, yy - 21.0)
    width = 0.3 + 1.5 * abs(i - IN_FOCUS)
    return np.asarray(1000.0 - 600.0 / (1.0 + np.exp((r - 5.0) / width)), np.float64)


def test_tracks_at_one_place_become_one_candidate_and_other_places_do_not() -> None:
    a = candidate((10, 10, 20, 20), 0.9, range(5, 9), best=6)
    b = candidate((11, 11, 21, 21), 0.8, range(12, 16))  # same place, later frames
    inner = candidate((13, 13, 16, 16), 0.7, range(3, 5))  # inside a's box: same place
    bubble = candidate((11, 11, 21, 21), 0.75, range(5, 9), label=1)  # another class
    apart = candidate((40, 40, 50, 50), 0.6, range(5, 9))
    for order in itertools.permutations([a, b, inner, bubble, apart]):
        merged = merge_same_place(order)
        assert [c.score for c in merged] == [0.9, 0.75, 0.6]
        top = merged[0]
        assert (top.box, top.label, top.best_frame, top.height_mm) == (a.box, 0, 6, 6.5)
        assert (top.first_frame, top.last_frame) == (3, 15)
        assert [p.frame for p in top.track] == [3, 4, 5, 6, 7, 8, 12, 13, 14, 15]
        assert merged[1] == bubble and merged[2] == apart
    # on a frame both tracks have, the higher-scoring detection is kept
    twin = candidate((10, 10, 20, 20), 0.95, range(6, 7), best=6)
    (one,) = merge_same_place([a, twin])
    assert [p.score for p in one.track if p.frame == 6] == [0.95]
    # candidates under FOCUS_MIN_SCORE are left as they are, after the others
    low = candidate((10, 10, 20, 20), 0.2, range(20, 22))
    assert merge_same_place([low, a]) == [a, low]
    assert merge_same_place([low, a], min_score=0.1)[0].last_frame == 21
    with pytest.raises(ValueError, match="min_overlap"):
        merge_same_place([a], min_overlap=0.0)


def _void_volume(n: int = 30) -> ArrayVolume:
    base = base_image(np.full((ROWS, COLS), 100, np.uint16))
    return ArrayVolume(base, void_plane, heights(n))


def test_the_focus_measure_is_highest_on_the_sharp_plane() -> None:
    vol = _void_volume()
    crop = (slice(11, 31), slice(15, 35))  # the void and a margin of half its side
    energies = [gradient_energy(void_plane(i)[crop]) for i in range(30)]
    assert int(np.argmax(energies)) == IN_FOCUS
    assert energies[IN_FOCUS] > 2 * energies[IN_FOCUS + 3]
    assert gradient_energy(np.ones((1, 5))) == 0.0 and gradient_energy(np.ones((4, 4))) == 0.0
    maps = [focus_map(vol.frame(i)) for i in range(30)]
    assert (maps[0].cells.shape, maps[0].cell_rows, maps[0].cell_cols) == ((23, 31), 2.0, 2.0)
    in_map = [m.energy(VOID) for m in maps]
    assert int(np.argmax(in_map)) == IN_FOCUS
    assert maps[0].energy((200, 200, 210, 210)) == 0.0  # outside the image (last row, column
    # of the 47 x 63 forward differences dropped: 23 x 31 cells)
    # the map is in stored pixels whatever the decoded grid: a 0.05 mm image is averaged
    # in 4 x 4 blocks to 0.2 mm and its cells span 8 stored pixels
    fine = base_image(np.full((64, 64), 100, np.uint16), spacing=0.05)
    m = focus_map(fine)
    assert (m.cells.shape, m.cell_rows, m.cell_cols) == ((7, 7), 8.0, 8.0)
    with pytest.raises(ValueError, match="at least 4 x 4"):
        focus_map(base_image(np.full((3, 8), 100, np.uint16)))


def test_refocus_moves_a_candidate_to_its_sharpest_input() -> None:
    vol = _void_volume()
    maps = {f: focus_map(vol.frame(f)) for f in range(0, 30, 2)}  # every 2nd frame ran
    hs = {f: f + 0.5 for f in maps}
    smeared = candidate(VOID, 0.9, range(8, 13), best=10)  # peak score on the smear
    weak = candidate((40, 30, 50, 40), 0.1, range(0, 30), best=3)
    out = refocus([smeared, weak], maps, hs, pad=2)  # looks at 6..14
    assert out[0].best_frame == IN_FOCUS and out[0].height_mm == IN_FOCUS + 0.5
    assert (out[0].first_frame, out[0].last_frame) == (8, IN_FOCUS)  # grown to include it
    assert (out[0].box, out[0].score, out[0].track) == (VOID, 0.9, smeared.track)
    assert out[1] == weak  # under FOCUS_MIN_SCORE: left alone
    assert refocus([smeared], maps, hs)[0].best_frame == 12  # no pad: the best in 8..12
    kept = refocus([smeared], maps, None, pad=2)
    assert kept[0].best_frame == IN_FOCUS and kept[0].height_mm == smeared.height_mm
    assert refocus([smeared], {}, hs) == [smeared]  # no input in its range
    flat = {f: FocusMap(np.zeros((24, 32), np.float32), 2.0, 2.0) for f in maps}
    assert refocus([smeared], flat, hs, pad=2)[0].best_frame == 10  # ties: nearest
    with pytest.raises(ValueError, match="pad"):
        refocus([smeared], maps, pad=-1)


class SmearDetector:
    """Reports the void on planes within 5 of the plane through it, with a score that is
    highest 4 planes away (the smear) and lowest on the plane itself, and misses planes 2
    and 3 away, so that the lesion is cut into two tracks. Reads the plane from the pixels."""

    def __call__(self, image: Image, model: DetectorModel) -> RawDetections:
        crop = (slice(11, 31), slice(15, 35))
        energy = gradient_energy(image.pixels[crop])
        plane = min(range(30), key=lambda i: abs(gradient_energy(void_plane(i)[crop]) - energy))
        off = abs(plane - IN_FOCUS)
        keep = off <= 5 and off not in (2, 3)
        transform = Transform(stored_shape=(ROWS, COLS), flipped=False, crop=(0, ROWS, 0, COLS),
                              scale=(1.0, 1.0), model_shape=(ROWS, COLS))
        return RawDetections(
            boxes=np.asarray([VOID] if keep else [], np.float32).reshape(-1, 4),
            scores=np.asarray([0.5 + 0.1 * min(off, 4)] if keep else [], np.float32),
            labels=np.zeros(int(keep), np.int64), transform=transform, timings_ms={})


def test_run_volume_reports_a_smeared_lesion_once_on_its_in_focus_frame() -> None:
    plain = run_volume(_void_volume(), FAKE_MODEL, predictor=SmearDetector(), focus=False)
    assert len(plain.candidates) == 3  # below, on, above the plane: three tracks
    assert all(c.best_frame != IN_FOCUS for c in plain.candidates if c.score > 0.5)
    vol = _void_volume()
    result = run_volume(vol, FAKE_MODEL, predictor=SmearDetector())
    (c,) = result.candidates
    assert c.best_frame == IN_FOCUS and c.best_frame_number == IN_FOCUS + 1
    assert c.score == pytest.approx(0.9) and c.height_mm == pytest.approx(IN_FOCUS + 0.5)
    assert (c.first_frame, c.last_frame) == (IN_FOCUS - 5, IN_FOCUS + 5)
    assert result.frames_read == 30 and vol.reads == list(range(30))  # none read twice
    assert result.timings_ms["focus"] > 0
