"""Run the 2D detector through a tomosynthesis volume and link its detections in 3D.

:func:`run_volume` walks the volume plane by plane in stack order
(:func:`~serving.pipeline.tomo.volume.stack_order`: frame 0 upwards when the heights rise or
fall with the index, else sorted by height, so that neighbours are neighbouring planes). At
each centre of :func:`~serving.pipeline.tomo.volume.slab_centres` (every ``stride``-th
plane) it forms the detector's input: the frame itself (``slab = 1``, per-slice mode) or a
slab of ``slab`` neighbouring planes (:func:`~serving.pipeline.tomo.volume.slab_bounds`, in
stack positions) reduced to one image
by their pixel-wise mean (``slab_mode="mean"``, a thicker slice: less noise, less in-plane
contrast) or maximum (``"max"``, a maximum-intensity slab: bright contrast dominates, so a
dark filling defect may be filled in by contrast above or below it). It runs the 2D
:func:`serving.pipeline.run.predict` on that image and hands the detections to a
:class:`~serving.pipeline.tomo.link.Linker`, which returns one
:class:`~serving.pipeline.tomo.link.TomoCandidate` per track. Tracks at the same in-plane
place become one candidate, shown on the frame where it is in focus
(:mod:`serving.pipeline.tomo.focus`; ``focus=False`` skips both steps). Which mode, slab
and stride work best is to be measured; all are parameters.

Memory: frames are read with ``volume.frame(i)`` in stack order, each once; a frame is
released as soon as no later slab needs it, so at most ``slab`` decoded frames plus the slab
image are held at any time (and, with ``focus``, a small focus map per detector input).
Frames between slabs (``stride > slab``) are never read.

Boxes are ``[x1, y1, x2, y2]`` stored pixels (x = column, x2/y2 exclusive), frame indices
0-based, heights in mm above the detector (a slab's height: the mean of its frames').

numpy and onnxruntime only (through :mod:`serving.pipeline.run`); never torch, monai,
scipy or ``training``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias, TypedDict, Unpack

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.model import DetectorModel
from serving.pipeline.run import RawDetections, predict
from serving.pipeline.tomo.focus import FocusMap, focus_map, merge_same_place, refocus
from serving.pipeline.tomo.link import LinkConfig, Linker, TomoCandidate
from serving.pipeline.tomo.volume import (
    VolumeLike,
    check_volume,
    slab_bounds,
    slab_centres,
    slab_height_mm,
    stack_order,
)

__all__ = [
    "Predictor",
    "SlabMode",
    "VolumeDetections",
    "VolumeOptions",
    "combine_slab",
    "predict_volume",
    "run_volume",
]

SlabMode: TypeAlias = Literal["mean", "max"]
#: The 2D detector: one image -> its detections in stored pixels (default
#: :func:`serving.pipeline.run.predict`).
Predictor: TypeAlias = Callable[[Image, DetectorModel], RawDetections]


class VolumeOptions(TypedDict, total=False):
    """The keyword options of :func:`run_volume` (each described there)."""

    slab: int
    stride: int
    slab_mode: SlabMode
    link: LinkConfig | None
    predictor: Predictor
    classes: Sequence[str] | None
    focus: bool


#: Stages of :attr:`VolumeDetections.timings_ms`, in order.
STAGES = ("read", "slab", "preprocess", "inference", "postprocess", "link", "focus")


@dataclass
class VolumeDetections:
    """The result of :func:`run_volume`.

    Attributes:
        candidates: one per linked lesion candidate (every class), best score first.
        centres: the frame indices of the slab centres the detector ran on, in stack
            order (:func:`~serving.pipeline.tomo.volume.stack_order`).
        frames_read: frames decoded by the detection pass (each at most once).
        detections: per centre frame, how many detections the network returned (before
            linking and before the linker's ``min_score``).
        timings_ms: per stage, summed over the volume: ``read`` (``volume.frame``),
            ``slab`` (combining frames), ``preprocess``, ``inference``, ``postprocess``
            (from :class:`~serving.pipeline.run.RawDetections`), ``link``, ``focus``
            (focus maps, merging and the in-focus frames), and ``total``.
    """

    candidates: list[TomoCandidate]
    centres: tuple[int, ...]
    frames_read: int
    detections: dict[int, int] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


def combine_slab(frames: Sequence[Image], mode: SlabMode, centre: Image | None = None
                 ) -> Image:
    """One image from neighbouring frames: their pixel-wise mean or maximum (float32).

    The result carries the header of ``centre`` (default: the middle frame of ``frames``)
    and read-only pixels; a single frame is returned as is.

    Args:
        frames: decoded frames of one volume, same pixel array shape and decode scale.
        mode: ``"mean"`` or ``"max"``.
        centre: the frame whose header the result takes.

    Raises:
        ValueError: no frames, an unknown mode, or frames of different shapes or decode
            scales.
    """
    if mode not in ("mean", "max"):
        raise ValueError(f"slab mode must be 'mean' or 'max', got {mode!r}")
    if not frames:
        raise ValueError("a slab needs at least one frame")
    base = centre if centre is not None else frames[(len(frames) - 1) // 2]
    if len(frames) == 1:
        return frames[0]
    shape, scale = frames[0].pixels.shape, frames[0].decode_scale
    for f in frames:
        if f.pixels.shape != shape or f.decode_scale != scale:
            raise ValueError(f"slab frames differ in pixel shape or decode scale: "
                             f"{f.pixels.shape} x{f.decode_scale} vs {shape} x{scale}")
    out = np.array(frames[0].pixels, dtype=np.float32, copy=True)
    for f in frames[1:]:
        if mode == "mean":
            np.add(out, f.pixels, out=out)
        else:
            np.maximum(out, f.pixels, out=out)
    if mode == "mean":
        out /= np.float32(len(frames))
    out.setflags(write=False)
    return replace(base, pixels=out)


def run_volume(
    volume: VolumeLike,
    model: DetectorModel,
    *,
    slab: int = 1,
    stride: int = 1,
    slab_mode: SlabMode = "mean",
    link: LinkConfig | None = None,
    predictor: Predictor = predict,
    classes: Sequence[str] | None = None,
    focus: bool = True,
) -> VolumeDetections:
    """Detect in every ``stride``-th frame (or slab) of ``volume`` and link in 3D.

    Args:
        volume: the tomosynthesis volume (:class:`~serving.pipeline.tomo.volume.VolumeLike`).
        model: the 2D detector.
        slab: frames per detector input, >= 1 (1: per-slice mode).
        stride: frames between detector inputs, >= 1.
        slab_mode: how a slab becomes one image, ``"mean"`` or ``"max"``.
        link: linking parameters (default :class:`~serving.pipeline.tomo.link.LinkConfig`).
        predictor: the 2D detector function (default :func:`serving.pipeline.run.predict`).
        classes: class names for the candidates (default ``model.classes``).
        focus: merge the candidates at the same place and move each to its in-focus frame
            (:mod:`serving.pipeline.tomo.focus`); False: one candidate per track, on the
            frame of its highest score.

    Returns:
        The candidates, the frames used, and timings per stage.

    Raises:
        ValueError: ``slab``, ``stride`` or ``slab_mode`` out of range, a malformed volume
            header (:func:`~serving.pipeline.tomo.volume.check_volume`), or frames of
            different shapes within a slab.
    """
    if slab_mode not in ("mean", "max"):
        raise ValueError(f"slab_mode must be 'mean' or 'max', got {slab_mode!r}")
    n = check_volume(volume)
    positions = slab_centres(n, slab, stride)  # in stack order
    heights = volume.header.frame_heights_mm
    order = stack_order(heights)  # stack position -> frame index
    stack_heights = [float(heights[i]) for i in order]
    names = list(classes) if classes is not None else list(model.classes)
    linker = Linker(link, frame_step=stride, classes=names)
    timings = dict.fromkeys(STAGES, 0.0)
    t_start = time.perf_counter()
    window: deque[tuple[int, Image]] = deque()  # (stack position, decoded frame), increasing
    next_pos = 0
    frames_read = 0
    counts: dict[int, int] = {}
    maps: dict[int, FocusMap] = {}
    slab_heights: dict[int, float] = {}
    for c in positions:
        start, stop = slab_bounds(c, slab, n)
        while window and window[0][0] < start:
            window.popleft()
        next_pos = max(next_pos, start)
        t0 = time.perf_counter()
        while next_pos < stop:
            window.append((next_pos, volume.frame(order[next_pos])))
            next_pos += 1
            frames_read += 1
        t1 = time.perf_counter()
        members = [img for j, img in window if start <= j < stop]
        centre_image = next(img for j, img in window if j == c)
        image = combine_slab(members, slab_mode, centre_image)
        del members, centre_image
        t2 = time.perf_counter()
        raw = predictor(image, model)
        if focus:
            tf = time.perf_counter()
            maps[c] = focus_map(image)
            timings["focus"] += (time.perf_counter() - tf) * 1e3
        del image
        for stage in ("preprocess", "inference", "postprocess"):
            timings[stage] += float(raw.timings_ms.get(stage, 0.0))
        t3 = time.perf_counter()
        slab_heights[c] = slab_height_mm(stack_heights, start, stop)
        linker.add(c, raw, slab_heights[c])
        t4 = time.perf_counter()
        counts[order[c]] = len(raw.scores)
        timings["read"] += (t1 - t0) * 1e3
        timings["slab"] += (t2 - t1) * 1e3
        timings["link"] += (t4 - t3) * 1e3
    window.clear()
    t5 = time.perf_counter()
    linked = linker.finish()
    t6 = time.perf_counter()
    timings["link"] += (t6 - t5) * 1e3
    if focus:
        linked = refocus(merge_same_place(linked), maps, slab_heights, pad=stride)
        linked.sort(key=lambda c: (-c.score, c.best_frame, c.box))
        maps.clear()
    timings["focus"] += (time.perf_counter() - t6) * 1e3
    candidates = _to_frame_indices(linked, order)
    timings["total"] = (time.perf_counter() - t_start) * 1e3
    return VolumeDetections(candidates=candidates, centres=tuple(order[c] for c in positions),
                            frames_read=frames_read, detections=counts, timings_ms=timings)


def _to_frame_indices(candidates: list[TomoCandidate], order: Sequence[int]
                      ) -> list[TomoCandidate]:
    """``candidates`` linked on stack positions, with every frame given as its frame index
    (``order[position]``), best score first (ties: lower best frame, then box)."""
    if all(i == k for k, i in enumerate(order)):
        return candidates
    out = [replace(c, best_frame=order[c.best_frame], first_frame=order[c.first_frame],
                   last_frame=order[c.last_frame],
                   track=tuple(replace(p, frame=order[p.frame]) for p in c.track))
           for c in candidates]
    out.sort(key=lambda c: (-c.score, c.best_frame, c.box))
    return out


def predict_volume(volume: VolumeLike, model: DetectorModel,
                   **options: Unpack[VolumeOptions]) -> list[TomoCandidate]:
    """The linked candidates of :func:`run_volume` (same arguments), best score first;
    use :func:`run_volume` for the timings and the frames used."""
    return run_volume(volume, model, **options).candidates
