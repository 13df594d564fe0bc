"""Detection through a tomosynthesis volume (serving.pipeline.tomo.detect): per-slice and slab
modes, stride, lazy frame reading, timings; a fake 2D detector that reads the frame index
from the pixels, and one run of the bundled model."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from serving.pipeline.dicom_in import Image
from serving.pipeline.model import DetectorModel
from serving.pipeline.preprocess import Transform
from serving.pipeline.run import RawDetections
from serving.pipeline.tomo import (
    LinkConfig,
    combine_slab,
    predict_volume,
    run_volume,
)
from serving.pipeline.tomo.detect import STAGES
from tests.test_tomo_volume import ArrayVolume, base_image, heights

ROWS, COLS = 24, 32
LESION = (8.0, 6.0, 14.0, 12.0)
FAKE_MODEL = cast(DetectorModel, SimpleNamespace(classes=["filling_defect", "air_bubble"]))


def index_volume(n: int = 30) -> ArrayVolume:
    """Frame ``i`` holds the value ``10 * i + 5`` everywhere."""
    base = base_image(np.full((ROWS, COLS), 100, np.uint16))
    return ArrayVolume(base, lambda i: np.full((ROWS, COLS), 10.0 * i + 5.0), heights(n))


class FakeDetector:
    """A 2D detector that sees a lesion at frames 10-14 (peak 12): it reads the (mean) frame
    index ``f`` from the pixels and reports ``LESION`` with score ``0.9 - 0.15 |f - 12|``
    when ``|f - 12| <= 2``. Records what it saw and checks the volume's live frames."""

    def __init__(self, volume: ArrayVolume, max_alive: int) -> None:
        self.volume = volume
        self.max_alive = max_alive
        self.seen: list[float] = []

    def __call__(self, image: Image, model: DetectorModel) -> RawDetections:
        assert self.volume.alive() <= self.max_alive
        f = (float(image.pixels[0, 0]) - 5.0) / 10.0
        self.seen.append(f)
        off = abs(f - 12.0)
        keep = off <= 2.0
        transform = Transform(stored_shape=(ROWS, COLS), flipped=False, crop=(0, ROWS, 0, COLS),
                              scale=(1.0, 1.0), model_shape=(ROWS, COLS))
        return RawDetections(
            boxes=np.asarray([LESION] if keep else [], np.float32).reshape(-1, 4),
            scores=np.asarray([0.9 - 0.15 * off] if keep else [], np.float32),
            labels=np.zeros(int(keep), np.int64), transform=transform,
            timings_ms={"preprocess": 1.0, "inference": 2.0, "postprocess": 3.0})


def test_per_slice_mode_reports_the_lesion_once_at_its_peak() -> None:
    vol = index_volume()
    fake = FakeDetector(vol, max_alive=1)
    result = run_volume(vol, FAKE_MODEL, predictor=fake, focus=False)  # reads: detection only
    assert fake.seen == [float(i) for i in range(30)]
    assert vol.reads == list(range(30)) and result.frames_read == 30
    assert result.centres == tuple(range(30))
    (c,) = result.candidates
    assert (c.best_frame, c.first_frame, c.last_frame, c.best_frame_number) == (12, 10, 14, 13)
    assert c.box == LESION and c.score == pytest.approx(0.9)
    assert c.height_mm == pytest.approx(12.5)
    assert c.label_name == "filling_defect"
    assert result.detections[12] == 1 and result.detections[0] == 0
    assert set(result.timings_ms) == {*STAGES, "total"}
    assert result.timings_ms["inference"] == pytest.approx(60.0)  # 2 ms x 30 frames
    assert all(v >= 0 for v in result.timings_ms.values())
    again = index_volume()
    assert predict_volume(again, FAKE_MODEL, predictor=FakeDetector(again, 1),
                          focus=False) == result.candidates


@pytest.mark.parametrize(("mode", "expected"), [("mean", 5.0), ("max", 6.0)])
def test_slab_mode_combines_neighbouring_frames(mode: str, expected: float) -> None:
    vol = index_volume()
    fake = FakeDetector(vol, max_alive=3)
    result = run_volume(vol, FAKE_MODEL, slab=3, slab_mode=mode,  # type: ignore[arg-type]
                        predictor=fake, focus=False)
    assert fake.seen[5] == pytest.approx(expected)  # frames 4, 5, 6
    assert fake.seen[0] == pytest.approx(0.5 if mode == "mean" else 1.0)  # clipped: 0, 1
    assert vol.reads == list(range(30))  # each frame decoded once
    (c,) = result.candidates
    assert c.best_frame == (12 if mode == "mean" else 11)
    assert c.height_mm == pytest.approx(c.best_frame + 0.5)  # mean height of the slab


def test_stride_skips_frames_it_does_not_need() -> None:
    vol = index_volume()
    result = run_volume(vol, FAKE_MODEL, stride=4, predictor=FakeDetector(vol, 1), focus=False)
    assert result.centres == (0, 4, 8, 12, 16, 20, 24, 28)
    assert vol.reads == list(result.centres)
    (c,) = result.candidates
    assert c.best_frame == 12 and c.n_frames == 1


def test_tiled_slabs_read_each_frame_once_and_link_across_strides() -> None:
    vol = index_volume()
    fake = FakeDetector(vol, max_alive=3)
    result = run_volume(vol, FAKE_MODEL, slab=3, stride=3, predictor=fake, focus=False)
    assert result.centres == tuple(range(1, 30, 3))
    assert vol.reads == list(range(30))
    assert fake.seen == pytest.approx([float(c) for c in result.centres])
    (c,) = result.candidates
    assert (c.first_frame, c.best_frame, c.last_frame) == (10, 13, 13)


def test_min_frames_of_the_link_config_is_applied() -> None:
    vol = index_volume()
    result = run_volume(vol, FAKE_MODEL, stride=4, link=LinkConfig(min_frames=2),
                        predictor=FakeDetector(vol, 1))
    assert result.candidates == []


def test_combine_slab_and_refusals() -> None:
    vol = index_volume(4)
    frames = [vol.frame(i) for i in range(3)]
    mean = combine_slab(frames, "mean")
    assert float(mean.pixels[0, 0]) == pytest.approx(15.0)
    assert not mean.pixels.flags.writeable and mean.pixels.dtype == np.float32
    assert float(combine_slab(frames, "max").pixels[0, 0]) == pytest.approx(25.0)
    assert combine_slab(frames[:1], "mean") is frames[0]
    odd = replace(frames[0], pixels=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="differ"):
        combine_slab([frames[0], odd], "mean")
    with pytest.raises(ValueError, match="at least one"):
        combine_slab([], "mean")
    with pytest.raises(ValueError, match="slab mode"):
        combine_slab(frames, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slab_mode"):
        run_volume(vol, FAKE_MODEL, slab_mode="median",  # type: ignore[arg-type]
                   predictor=FakeDetector(vol, 4))
    with pytest.raises(ValueError, match=">= 1"):
        run_volume(vol, FAKE_MODEL, stride=0, predictor=FakeDetector(vol, 4))


def test_the_bundled_model_runs_through_a_small_volume(bundled_model: DetectorModel) -> None:
    """Three frames of a drawn breast (the real preprocessing, ONNX Runtime and decoding):
    per-slice and slab runs give candidates in stored pixels on the frames' grid."""
    from tests.test_locate import phantom_pixels

    pixels = phantom_pixels().astype(np.float32)
    base = base_image(phantom_pixels())
    vol = ArrayVolume(base, lambda i: pixels * (0.95 + 0.05 * i), heights(3, step=10.0))
    per_slice = run_volume(vol, bundled_model)
    slab = run_volume(vol, bundled_model, slab=3, stride=3)
    assert slab.centres == (1,) and per_slice.centres == (0, 1, 2)
    for result in (per_slice, slab):
        assert result.timings_ms["inference"] > 0
        for c in result.candidates:
            x1, y1, x2, y2 = c.box
            assert 0 <= x1 < x2 <= base.cols and 0 <= y1 < y2 <= base.rows
            assert c.label_name in bundled_model.classes
            assert c.first_frame <= c.best_frame <= c.last_frame
            assert c.height_mm is not None
    assert max(c.n_frames for c in per_slice.candidates) >= 2  # linked across frames


def test_frames_out_of_stack_order_are_linked_by_height() -> None:
    """DICOM order is not stack order: frame ``i`` lies at height ``perm[i]`` (and holds that
    plane's value). The lesion's planes 10-14 are linked, and frames are reported by index."""
    perm = np.random.default_rng(1).permutation(30)
    base = base_image(np.full((ROWS, COLS), 100, np.uint16))
    vol = ArrayVolume(base, lambda i: np.full((ROWS, COLS), 10.0 * perm[i] + 5.0),
                      [float(h) for h in perm])
    fake = FakeDetector(vol, max_alive=3)
    result = run_volume(vol, FAKE_MODEL, slab=3, predictor=fake, focus=False)
    # plane by plane, each a slab of its neighbouring planes (clipped at the ends)
    assert fake.seen == pytest.approx([0.5, *range(1, 29), 28.5])
    assert sorted(vol.reads) == list(range(30))
    index_of = {int(h): i for i, h in enumerate(perm)}
    (c,) = result.candidates
    assert c.best_frame == index_of[12]
    assert (c.first_frame, c.last_frame) == (index_of[10], index_of[14])
    assert [p.frame for p in c.track] == [index_of[h] for h in range(10, 15)]
    assert c.height_mm == pytest.approx(12.0)
    assert result.centres == tuple(index_of[h] for h in range(30))
