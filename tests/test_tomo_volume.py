"""Tomosynthesis volume helpers (serving.pipeline.tomo.volume), and the in-memory test volume
that the other ``test_tomo_*`` modules build their volumes with."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pytest

from serving.pipeline.dicom_in import Image, ImageHeader, read_image
from serving.pipeline.tomo import VolumeLike, slab_bounds, slab_centres
from serving.pipeline.tomo.volume import check_volume, slab_height_mm, stack_order
from tests.dicomgen import make_dataset

# ------------------------------------------------------------------------------ test volume


def base_image(pixels: npt.NDArray[np.uint16], *, spacing: float = 0.2, view: str = "CC",
               laterality: str = "L", orientation: tuple[str, str] = ("A", "R")) -> Image:
    """A 2D intake image of ``pixels`` (written as DICOM and read back): the header every
    frame of a test volume shares."""
    ds = make_dataset(rows=pixels.shape[0], cols=pixels.shape[1], bits_stored=12,
                      pixels=pixels, pixel_spacing=(spacing, spacing), laterality=laterality,
                      view=view, patient_orientation=orientation)
    return read_image(ds)


@dataclass(frozen=True)
class ArrayVolumeHeader:
    """The volume header of the reader's interface, for tests."""

    image: ImageHeader
    number_of_frames: int
    frame_heights_mm: tuple[float, ...]
    slice_thickness_mm: float | None = 1.0
    source: str = "test"


class ArrayVolume:
    """An in-memory volume: frame ``i`` is ``base`` with the pixels ``make(i)`` (float32,
    read-only), built only when asked for. Counts the frames built and the ones alive."""

    def __init__(self, base: Image, make: Callable[[int], npt.NDArray[np.floating]],
                 heights_mm: Sequence[float]) -> None:
        self.base = base
        self.make = make
        self.header = ArrayVolumeHeader(image=base.header, number_of_frames=len(heights_mm),
                                        frame_heights_mm=tuple(float(h) for h in heights_mm))
        self.reads: list[int] = []
        self._alive: list[weakref.ref[Image]] = []

    def frame(self, index: int) -> Image:
        if not 0 <= index < self.header.number_of_frames:
            raise IndexError(index)
        pixels = np.ascontiguousarray(self.make(index), dtype=np.float32)
        pixels.setflags(write=False)
        image = replace(self.base, pixels=pixels)
        self.reads.append(index)
        self._alive.append(weakref.ref(image))
        return image

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Image]:
        for i in range(start, self.header.number_of_frames if stop is None else stop):
            yield self.frame(i)

    def alive(self) -> int:
        """Frames built by this volume that are still referenced somewhere."""
        return sum(r() is not None for r in self._alive)


def heights(n: int, step: float = 1.0, first: float = 0.5) -> list[float]:
    """``n`` frame heights ``first, first + step, ...`` mm."""
    return [first + step * i for i in range(n)]


# ------------------------------------------------------------------------------ tests


def test_array_volume_is_a_volume() -> None:
    base = base_image(np.full((8, 6), 100, np.uint16))
    vol: VolumeLike = ArrayVolume(base, lambda i: np.full((8, 6), i, np.float32), heights(4))
    assert check_volume(vol) == 4
    assert float(vol.frame(3).pixels[0, 0]) == 3.0
    assert vol.header.image.laterality == "L"


def test_check_volume_refuses_bad_headers() -> None:
    base = base_image(np.full((8, 6), 100, np.uint16))
    vol = ArrayVolume(base, lambda i: np.zeros((8, 6)), heights(3))
    vol.header = replace(vol.header, frame_heights_mm=(1.0, 2.0))
    with pytest.raises(ValueError, match="2 values for 3 frames"):
        check_volume(vol)
    vol.header = replace(vol.header, frame_heights_mm=(1.0, float("nan"), 2.0))
    with pytest.raises(ValueError, match="not finite"):
        check_volume(vol)
    vol.header = replace(vol.header, number_of_frames=0, frame_heights_mm=())
    with pytest.raises(ValueError, match="at least 1"):
        check_volume(vol)


@pytest.mark.parametrize(("centre", "slab", "expected"), [
    (5, 1, (5, 6)), (5, 3, (4, 7)), (5, 4, (4, 8)), (0, 3, (0, 2)), (9, 5, (7, 10)),
])
def test_slab_bounds(centre: int, slab: int, expected: tuple[int, int]) -> None:
    assert slab_bounds(centre, slab, 10) == expected


def test_slab_bounds_refuses() -> None:
    with pytest.raises(ValueError, match="slab"):
        slab_bounds(2, 0, 10)
    with pytest.raises(ValueError, match="outside"):
        slab_bounds(10, 1, 10)


@pytest.mark.parametrize(("n", "slab", "stride", "expected"), [
    (5, 1, 1, [0, 1, 2, 3, 4]),
    (10, 3, 3, [1, 4, 7]),
    (10, 3, 1, list(range(10))),
    (7, 1, 2, [0, 2, 4, 6]),
    (1, 5, 5, [0]),
])
def test_slab_centres(n: int, slab: int, stride: int, expected: list[int]) -> None:
    assert list(slab_centres(n, slab, stride)) == expected


def test_slab_centres_refuses() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        slab_centres(5, 1, 0)


def test_slab_height_is_the_mean_of_its_frames() -> None:
    h = heights(6, step=2.0, first=1.0)
    assert slab_height_mm(h, 2, 3) == 5.0
    assert slab_height_mm(h, 1, 4) == 5.0
    with pytest.raises(ValueError, match="empty"):
        slab_height_mm(h, 3, 3)


def test_stack_order_keeps_monotonic_dicom_order_and_sorts_otherwise() -> None:
    assert stack_order([0.0, 1.0, 2.0]) == (0, 1, 2)
    assert stack_order([5.0, 4.0, 3.0, 2.0]) == (0, 1, 2, 3)  # falling heights: index order
    assert stack_order([2.0, 0.0, 3.0, 1.0]) == (1, 3, 0, 2)
    assert stack_order([7.0]) == (0,)
