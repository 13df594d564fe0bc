"""Link per-frame 2D detections of a tomosynthesis volume into one candidate per lesion.

A lesion spans several reconstructed planes: it is sharp in the plane at its height and
fades, blurred, in the planes above and below. The 2D detector, run per frame (or per slab,
:mod:`serving.pipeline.tomo.detect`), therefore reports it once per plane. Linking turns
those per-frame boxes into tracks through the stack, and each track into one
:class:`TomoCandidate`, so that a lesion is reported once, not once per slice.

Linking rule (:class:`Linker`, :func:`link_detections`), frames taken in increasing index:

1. A track is *open* at frame ``f`` when its last frame ``g`` satisfies ``f - g <=
   (max_gap + 1) * frame_step``: with ``frame_step = 1`` and the default ``max_gap = 1`` it
   continues over one frame without a detection. ``frame_step`` is the spacing of the frames
   the detector ran on (the ``stride`` of :func:`~serving.pipeline.tomo.detect.run_volume`).
2. Every (open track, detection) pair of the same class whose overlap is at least
   ``min_overlap`` is admissible. The overlap is between the track's *last* box and the
   detection's box: intersection over the smaller box (``"ios"``, the default) or
   intersection over union (``"iou"``).
3. Admissible pairs are taken greedily, largest overlap first (ties: the more recent track,
   then the higher detection score, then track and detection order), each track and each
   detection at most once. A detection left over starts a new track.

Why intersection over the smaller box by default: out of its own plane a lesion's box grows
(blur) or shrinks (only its core is recognised), so the boxes of one lesion in neighbouring
planes differ in size more than in position; IoU of a box inside one twice its side is 0.25.
The threshold 0.5 is :data:`serving.pipeline.rescore.OVERLAP_IOS`, the project's rule for
"two boxes are at the same place". Both are working choices, to be measured on DBT data.

A candidate (:class:`TomoCandidate`) is a track summarised:

- **box**: the box of the best frame (the frame of the highest score), not a union of the
  track's boxes. The best frame is where the lesion is in focus; boxes from out-of-focus
  frames are blurred and would only enlarge a union; and the best frame's box is a box the
  network actually output on one plane, so it can be drawn on that frame.
- **score**: the highest frame score (no bonus for the number of frames; ``min_frames``
  drops short tracks instead, off by default).
- **best_frame**: index of the highest score; ties go to the frame nearest the middle of the
  track, then the lower index.

Boxes are ``[x1, y1, x2, y2]`` stored pixels (x = column, x2/y2 exclusive); frame indices are
0-based (DICOM frame number = index + 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from serving.pipeline.boxes import box_areas, box_intersections
from serving.pipeline.rescore import OVERLAP_IOS, intersection_over_smaller

__all__ = [
    "DEFAULT_MAX_GAP",
    "DEFAULT_MIN_OVERLAP",
    "Box",
    "FrameDetections",
    "LinkConfig",
    "Linker",
    "OverlapKind",
    "TomoCandidate",
    "TrackPoint",
    "box_overlap",
    "link_detections",
]

Box: TypeAlias = tuple[float, float, float, float]
OverlapKind: TypeAlias = Literal["ios", "iou"]

#: Default overlap threshold between a track's last box and a detection (intersection over
#: the smaller box): the project's "same place" rule, ``rescore.OVERLAP_IOS``.
DEFAULT_MIN_OVERLAP: Final = OVERLAP_IOS
#: Default number of frames without a detection that a track may bridge.
DEFAULT_MAX_GAP: Final = 1


class FrameDetections(Protocol):
    """The detections of one frame or slab (e.g. :class:`serving.pipeline.run.RawDetections`).

    Attributes:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` stored pixels.
        scores: ``(N,)`` scores in [0, 1].
        labels: ``(N,)`` class indices into the model's classes.
    """

    @property
    def boxes(self) -> npt.NDArray[np.floating]: ...

    @property
    def scores(self) -> npt.NDArray[np.floating]: ...

    @property
    def labels(self) -> npt.NDArray[np.integer]: ...


@dataclass(frozen=True)
class LinkConfig:
    """Parameters of the linking rule (see the module docstring).

    Attributes:
        overlap: ``"ios"`` (intersection over the smaller box) or ``"iou"``.
        min_overlap: a detection continues a track when the overlap is at least this, in
            (0, 1].
        max_gap: frames (in units of ``frame_step``) without a detection a track may bridge,
            >= 0.
        min_frames: candidates seen in fewer frames are dropped, >= 1 (1: keep single-frame
            detections as candidates of their own).
        min_score: detections scoring below this are ignored before linking, in [0, 1].

    Raises:
        ValueError: a value outside its range.
    """

    overlap: OverlapKind = "ios"
    min_overlap: float = DEFAULT_MIN_OVERLAP
    max_gap: int = DEFAULT_MAX_GAP
    min_frames: int = 1
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.overlap not in ("ios", "iou"):
            raise ValueError(f"overlap must be 'ios' or 'iou', got {self.overlap!r}")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {self.min_overlap!r}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0 frames, got {self.max_gap!r}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames!r}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score!r}")


@dataclass(frozen=True)
class TrackPoint:
    """One detection of a track.

    Attributes:
        frame: 0-based frame index (for slabs, the slab's centre frame).
        box: ``[x1, y1, x2, y2]`` stored pixels.
        score: the detector's score on that frame.
        height_mm: the frame's (or slab's mean) height above the detector, mm, when known.
    """

    frame: int
    box: Box
    score: float
    height_mm: float | None = None


@dataclass(frozen=True)
class TomoCandidate:
    """One lesion candidate of a volume: a linked track of per-frame detections.

    Attributes:
        box: ``[x1, y1, x2, y2]`` stored pixels, the best frame's box.
        score: the highest frame score of the track.
        label: class index into the model's classes (every point of a track has it).
        best_frame: 0-based index of the frame with the highest score.
        first_frame: 0-based index of the track's first frame (in the order the frames
            were linked: stack order, see :func:`serving.pipeline.tomo.volume.stack_order`).
        last_frame: 0-based index of its last frame (inclusive).
        height_mm: height of the best frame (slab: the slab's mean height) above the
            detector, mm; ``None`` when the linker was given no heights.
        track: every detection of the track, in increasing frame order.
        label_name: the class name, when the linker was given the class names.
    """

    box: Box
    score: float
    label: int
    best_frame: int
    first_frame: int
    last_frame: int
    height_mm: float | None
    track: tuple[TrackPoint, ...]
    label_name: str | None = None

    @property
    def best_frame_number(self) -> int:
        """The best frame as a DICOM frame number (1-based)."""
        return self.best_frame + 1

    @property
    def first_frame_number(self) -> int:
        """The first frame as a DICOM frame number (1-based)."""
        return self.first_frame + 1

    @property
    def last_frame_number(self) -> int:
        """The last frame as a DICOM frame number (1-based)."""
        return self.last_frame + 1

    @property
    def n_frames(self) -> int:
        """Frames in which the lesion was detected (gaps not counted)."""
        return len(self.track)


def box_overlap(a: npt.ArrayLike, b: npt.ArrayLike, kind: OverlapKind) -> npt.NDArray[np.float64]:
    """Pairwise overlap ``(N, M)`` of boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` ``[x1, y1,
    x2, y2]``: intersection over the smaller box (``"ios"``) or over the union (``"iou"``);
    0 where a box is empty.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "ios":
        return intersection_over_smaller(a, b)
    if kind != "iou":
        raise ValueError(f"overlap kind must be 'ios' or 'iou', got {kind!r}")
    p = np.asarray(a, np.float64).reshape(-1, 4)
    q = np.asarray(b, np.float64).reshape(-1, 4)
    inter = box_intersections(p, q)
    union = box_areas(p)[:, None] + box_areas(q)[None, :] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.where(union > 0, union, 1.0),
                                            0.0)
    return out


@dataclass
class _Track:
    label: int
    points: list[TrackPoint] = field(default_factory=list)

    @property
    def last(self) -> TrackPoint:
        return self.points[-1]


class Linker:
    """Links detections frame by frame (see the module docstring); feed frames with
    :meth:`add` in increasing index, then call :meth:`finish` once.

    Only the open tracks are compared with each new frame, so linking costs about the
    number of detections per frame squared per frame, and needs no frame pixels.

    Args:
        config: the linking parameters.
        frame_step: spacing of the frames that will be added (the detector's stride), >= 1;
            a gap is counted in these units.
        classes: class names, to fill :attr:`TomoCandidate.label_name`.

    Raises:
        ValueError: ``frame_step < 1``.
    """

    def __init__(self, config: LinkConfig | None = None, *, frame_step: int = 1,
                 classes: Sequence[str] | None = None) -> None:
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step!r}")
        self.config = config if config is not None else LinkConfig()
        self.frame_step = int(frame_step)
        self.classes = list(classes) if classes is not None else None
        self._open: list[_Track] = []
        self._closed: list[_Track] = []
        self._last_frame: int | None = None
        self._finished = False

    def add(self, frame: int, detections: FrameDetections, height_mm: float | None = None
            ) -> None:
        """Link the detections of ``frame`` (0-based index) to the open tracks.

        Args:
            frame: the frame index, larger than every frame added before.
            detections: the frame's boxes ``(N, 4)`` stored px, scores ``(N,)``, labels
                ``(N,)``.
            height_mm: the frame's height above the detector, mm, if known.

        Raises:
            ValueError: frames out of order, after :meth:`finish`, or detections whose
                arrays do not have matching lengths or contain non-finite boxes.
        """
        if self._finished:
            raise ValueError("Linker.add after finish(); start a new Linker")
        if frame < 0 or (self._last_frame is not None and frame <= self._last_frame):
            raise ValueError(f"frames must be added in increasing index order from 0; got "
                             f"{frame!r} after {self._last_frame!r}")
        self._last_frame = frame
        boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(detections.scores, np.float64).reshape(-1)
        labels = np.asarray(detections.labels).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"frame {frame}: {len(boxes)} boxes, {len(scores)} scores and "
                             f"{len(labels)} labels; one of each per detection is needed")
        if not np.isfinite(boxes).all():
            raise ValueError(f"frame {frame}: non-finite box coordinates")
        keep = scores >= self.config.min_score
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        reach = (self.config.max_gap + 1) * self.frame_step
        still: list[_Track] = []
        for t in self._open:
            (still if frame - t.last.frame <= reach else self._closed).append(t)
        self._open = still
        taken_track: set[int] = set()
        taken_det: set[int] = set()
        for _, ti, di in self._pairs(boxes, scores, labels):
            if ti in taken_track or di in taken_det:
                continue
            taken_track.add(ti)
            taken_det.add(di)
            self._open[ti].points.append(self._point(frame, boxes[di], scores[di], height_mm))
        for di in range(len(boxes)):
            if di not in taken_det:
                t = _Track(label=int(labels[di]))
                t.points.append(self._point(frame, boxes[di], scores[di], height_mm))
                self._open.append(t)

    def _pairs(self, boxes: npt.NDArray[np.float64], scores: npt.NDArray[np.float64],
               labels: npt.NDArray[np.int64]) -> list[tuple[tuple[float, ...], int, int]]:
        """Admissible (open track, detection) pairs with their sort keys, best first."""
        if not self._open or not len(boxes):
            return []
        last = np.asarray([t.last.box for t in self._open], np.float64)
        track_labels = np.asarray([t.label for t in self._open], np.int64)
        ov = box_overlap(last, boxes, self.config.overlap)
        ok = (ov >= self.config.min_overlap) & (track_labels[:, None] == labels[None, :])
        pairs: list[tuple[tuple[float, ...], int, int]] = []
        for ti, di in zip(*np.nonzero(ok), strict=True):
            t = self._open[int(ti)]
            key = (-float(ov[ti, di]), -float(t.last.frame), -float(scores[di]),
                   float(ti), float(di))
            pairs.append((key, int(ti), int(di)))
        pairs.sort()
        return pairs

    @staticmethod
    def _point(frame: int, box: npt.NDArray[np.float64], score: float,
               height_mm: float | None) -> TrackPoint:
        b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        return TrackPoint(frame=int(frame), box=b, score=float(score),
                          height_mm=None if height_mm is None else float(height_mm))

    def finish(self) -> list[TomoCandidate]:
        """Close every track and return the candidates with at least ``min_frames``
        detections, best score first (ties: lower best frame, then box).

        Raises:
            ValueError: called twice.
        """
        if self._finished:
            raise ValueError("Linker.finish called twice")
        self._finished = True
        tracks = self._closed + self._open
        self._closed, self._open = [], []
        out = [self._candidate(t) for t in tracks if len(t.points) >= self.config.min_frames]
        out.sort(key=lambda c: (-c.score, c.best_frame, c.box))
        return out

    def _candidate(self, t: _Track) -> TomoCandidate:
        pts = t.points
        middle = (pts[0].frame + pts[-1].frame) / 2
        best = min(pts, key=lambda p: (-p.score, abs(p.frame - middle), p.frame))
        name = None
        if self.classes is not None and 0 <= t.label < len(self.classes):
            name = self.classes[t.label]
        return TomoCandidate(box=best.box, score=best.score, label=t.label,
                             best_frame=best.frame, first_frame=pts[0].frame,
                             last_frame=pts[-1].frame, height_mm=best.height_mm,
                             track=tuple(pts), label_name=name)


def link_detections(
    per_frame: Mapping[int, FrameDetections] | Iterable[tuple[int, FrameDetections]],
    *,
    config: LinkConfig | None = None,
    frame_step: int = 1,
    heights_mm: Mapping[int, float] | Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
) -> list[TomoCandidate]:
    """Link the detections of a volume's frames into one candidate per lesion (see the
    module docstring for the rule).

    Args:
        per_frame: detections per 0-based frame index (a mapping, or ``(index, detections)``
            pairs in any order); frames without an entry count as frames without detections.
        config: linking parameters (default :class:`LinkConfig`).
        frame_step: spacing of the frames the detector ran on, >= 1.
        heights_mm: height above the detector (mm) per frame index, as a mapping or a
            sequence indexed by frame (e.g. ``header.frame_heights_mm``); ``None``: the
            candidates' ``height_mm`` is ``None``.
        classes: class names, for :attr:`TomoCandidate.label_name`.

    Returns:
        Candidates, best score first.

    Raises:
        ValueError: a frame index given twice or negative, a height missing or not finite
            for a frame with detections, bad parameters or malformed detections.
    """
    items = list(per_frame.items()) if isinstance(per_frame, Mapping) else list(per_frame)
    frames = [int(f) for f, _ in items]
    if len(set(frames)) != len(frames):
        raise ValueError("a frame index is given more than once")
    linker = Linker(config, frame_step=frame_step, classes=classes)
    for f, det in sorted(items, key=lambda item: int(item[0])):
        linker.add(int(f), det, _height(heights_mm, int(f)))
    return linker.finish()


def _height(heights: Mapping[int, float] | Sequence[float] | None, frame: int) -> float | None:
    """The height of ``frame`` from a mapping or sequence (see :func:`link_detections`)."""
    if heights is None:
        return None
    try:
        h = float(heights[frame])
    except (KeyError, IndexError):
        raise ValueError(f"no height for frame index {frame}") from None
    if not math.isfinite(h):
        raise ValueError(f"height of frame index {frame} is not finite: {h!r}")
    return h
