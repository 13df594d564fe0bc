"""Every candidate of one tomosynthesis (DBT) volume, before any operating point: what
:func:`serving.pipeline.detect.detect` thresholds and reports for a volume, as
:mod:`serving.pipeline.candidates` is for a 2D image.

Steps of :func:`analyse_volume`:

1. :func:`serving.pipeline.tomo.run_volume`: the 2D detector on every ``stride``-th slab of
   ``slab`` neighbouring frames (their pixel-wise mean by default), its per-slab boxes
   linked through the stack into one :class:`~serving.pipeline.tomo.TomoCandidate` per
   object (box of the best frame, highest score, best/first/last frame, height).
2. Split by class, as the 2D path does: the lesion class (:data:`~serving.pipeline.
   candidates.LESION_CLASS`) gives the findings; every other class (air bubble, cyst,
   extravasation) is a mimic call, never a finding.
3. Nested candidates suppressed in 3D (:func:`suppress_nested_tracks`): a candidate whose
   best-frame box lies for at least the card's ``nested_ios_thresh`` inside a better one of
   the same class *and* whose frames overlap it is dropped (the 2D rule, plus "at the same
   height"). Two objects at the same place in the image but at different heights stay two.
4. :func:`serving.pipeline.tomo.locate_candidates`: landmarks on the mean of the central
   frames, each lesion's in-plane location (:class:`~serving.pipeline.locate.ViewLocation`,
   used for two-view fusion with :func:`~serving.pipeline.locate.match_views`) and its
   single-view BI-RADS location (clock face from one DBT view, the plane's height being the
   third dimension).

The detector runs one pass per slab: a model card's test-time flips apply to 2D images only
(:meth:`~serving.pipeline.model.DetectorModel.single_pass`), so that a volume's time does not
double. Scores: the candidate's score is the detector's highest slab score, and its evidence
text says so (:data:`DBT_EVIDENCE`); :attr:`VolumeCandidates.scores` are these scores until
:func:`serving.pipeline.volume_rescore.rescore_volumes` rescores them with the volume's mimic
scores and its partner in the other view of the breast (the card's
``tomosynthesis.rescoring``, fitted on DBT volumes; the card's 2D rescoring is never applied
to volumes). Which threshold applies to these scores is
chosen by :func:`serving.pipeline.volume_points.volume_points`: the card's ``tomosynthesis``
operating points (fitted on DBT validation data, ``galacto tomo-points``) when it has them;
otherwise the 2D threshold, with a warning on every volume that it was not fitted on volumes.

Defaults (:class:`TomoSettings`): slabs of 3 frames, every third frame (slabs that tile the
volume without overlap), mean; :func:`analyse_volume` without settings takes the ones the
card's tomosynthesis points were fitted with (:attr:`~serving.pipeline.model.DetectorModel.
tomo_settings`). The detector's cost is per input, not per frame: on the 2-core
development machine, shared with a training job, ``detect`` of a 48-frame volume of 957 x 1147
pixels (0.2 mm) took 38.6 s frame by frame, 37.8 s in slabs of 3 at every frame and 12.5 s in
slabs of 3 at every third frame (0.80, 0.79 and 0.26 s per frame; 15 frames of 1914 x 2294
pixels at 0.1 mm: 12.3, 11.9 and 4.7 s). Which mode detects best is to be measured on
simulated DBT. Frames are assumed to be about 1 mm apart, as DBT reconstructions usually are;
pass other settings for thinner frames.

Frame numbers in the output are DICOM frame numbers (1-based). A finding's ``first`` and
``last`` frames are the first frame of the first slab and the last frame of the last slab
it was detected in (with ``slab = 1``: the frames themselves); ``best`` is the centre frame of
its best slab, where its box is. Boxes are ``[x1, y1, x2, y2]`` stored pixels of a frame (x =
column, x2/y2 exclusive); heights in mm above the lowest frame.

numpy and onnxruntime only; never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from serving.pipeline.candidates import LESION_CLASS
from serving.pipeline.dicom_in import Image, ImageHeader
from serving.pipeline.findings import FrameOut, SingleViewLocationOut
from serving.pipeline.locate import (
    ORIENTATION_UNKNOWN,
    LandmarkError,
    Landmarks,
    stated_clock_hour,
)
from serving.pipeline.model import DetectorModel
from serving.pipeline.rescore import OVERLAP_IOS, CandidateEvidence, intersection_over_smaller
from serving.pipeline.tomo import (
    LinkConfig,
    SlabMode,
    TomoCandidate,
    TomoLocation,
    VolumeDetections,
    VolumeHeaderLike,
    VolumeLike,
    locate_candidates,
    run_volume,
    slab_bounds,
    stack_order,
)
from serving.pipeline.tomo.location import HEIGHT_AXIS_UNKNOWN

__all__ = [
    "DBT_EVIDENCE",
    "DEFAULT_SLAB",
    "DEFAULT_STRIDE",
    "FOCUS_SHARE",
    "MAX_FRAME_NOTES",
    "TomoSettings",
    "VolumeCandidates",
    "analyse_volume",
    "focus_span",
    "frame_out",
    "mimics_to_report",
    "single_view_location_out",
    "suppress_nested_tracks",
]

#: Frames per detector input by default (a slab's pixel-wise mean).
DEFAULT_SLAB: Final = 3
#: Frames between detector inputs by default (= the slab: slabs tile the volume).
DEFAULT_STRIDE: Final = 3
#: How every volume finding's evidence starts: its score is the detector's own.
DBT_EVIDENCE: Final = "tomosynthesis: detector score, not rescored"
#: Most distinct frame decoding notes copied into a volume's warnings.
MAX_FRAME_NOTES: Final = 10
#: Mimic scores at a finding's place below this are not named in its evidence.
_EVIDENCE_MIN_SCORE: Final = 0.05


@dataclass(frozen=True)
class TomoSettings:
    """How a DBT volume is run through the 2D detector (see :func:`serving.pipeline.tomo.
    run_volume`).

    Attributes:
        slab: frames per detector input, >= 1 (1: per-slice mode).
        stride: frames between detector inputs, >= 1.
        slab_mode: ``"mean"`` or ``"max"`` of a slab's frames.
        link: the linking rule (default :class:`~serving.pipeline.tomo.LinkConfig`).
        spacing_mm: the pixel spacing (mm) volumes are resampled to before the detector,
            when it differs from the model's 2D one (``preprocess.spacing_mm``); None: the
            model's. A finer 2D spacing helps small lesions on 2D images, while a volume
            runs the detector tens of times, so a card may keep volumes coarser.

    Raises:
        ValueError: a value out of range.
    """

    slab: int = DEFAULT_SLAB
    stride: int = DEFAULT_STRIDE
    slab_mode: SlabMode = "mean"
    link: LinkConfig | None = None
    spacing_mm: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.slab, bool) or not isinstance(self.slab, int) or self.slab < 1:
            raise ValueError(f"slab must be an int >= 1 frame, got {self.slab!r}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be an int >= 1 frame, got {self.stride!r}")
        if self.slab_mode not in ("mean", "max"):
            raise ValueError(f"slab_mode must be 'mean' or 'max', got {self.slab_mode!r}")
        if self.spacing_mm is not None and not (math.isfinite(self.spacing_mm)
                                                and self.spacing_mm > 0):
            raise ValueError(f"spacing_mm must be a positive number of mm, got "
                             f"{self.spacing_mm!r}")

    def describe(self) -> str:
        """E.g. ``"slabs of 3 frames (mean), every 3rd frame"`` or ``"every frame"``."""
        runs = "every frame" if self.stride == 1 else f"every {_ordinal(self.stride)} frame"
        if self.slab == 1:
            return runs
        return f"slabs of {self.slab} frames ({self.slab_mode}), {runs}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass
class VolumeCandidates:
    """All candidates of one volume.

    Attributes:
        volume: the volume (its frames stay readable, e.g. to draw a finding's best frame).
        header: the in-plane 2D header every frame shares (rows, cols, spacing, laterality,
            view, UIDs, warnings).
        number_of_frames: frames in the volume.
        settings: how the detector ran.
        detections: what :func:`~serving.pipeline.tomo.run_volume` returned (every class,
            unsuppressed; frames used and timings).
        lesions: lesion-class candidates, best score first, nested ones suppressed.
        lesion_frames: per lesion, its frames (:func:`frame_out`).
        locations: per lesion, its location from this view, or None without landmarks.
        evidence: per lesion, the text of its ``evidence`` field.
        lesion_evidence: per lesion, the rescoring's inputs
            (:class:`~serving.pipeline.rescore.CandidateEvidence`); ``other_view`` and
            ``partner`` are filled in the copies :func:`serving.pipeline.volume_rescore.
            rescore_volumes` returns.
        scores: per lesion, its final score: the detector's, or the rescored one in the
            copies :func:`~serving.pipeline.volume_rescore.rescore_volumes` returns with a
            model.
        rescored: True when ``scores`` are rescored.
        mimics: mimic-class candidates, best first, nested ones suppressed per class.
        mimic_labels: their class names.
        mimic_frames: per mimic, its frames.
        landmarks: found on the central frames' mean (its decoded grid), or None.
        nipple_px: the nipple ``(x, y)`` in stored pixels, or None.
        warnings: the volume header's warnings, frame decoding notes, landmark failures and
            what this analysis assumed.
        timings_ms: per stage (``read``, ``slab``, ``preprocess``, ``inference``,
            ``postprocess``, ``link``, ``locate``), summed over the volume.
    """

    volume: VolumeLike
    header: ImageHeader
    number_of_frames: int
    settings: TomoSettings
    detections: VolumeDetections
    lesions: list[TomoCandidate]
    lesion_frames: list[FrameOut]
    locations: list[TomoLocation | None]
    evidence: list[str]
    lesion_evidence: list[CandidateEvidence]
    scores: list[float]
    rescored: bool
    mimics: list[TomoCandidate]
    mimic_labels: list[str]
    mimic_frames: list[FrameOut]
    landmarks: Landmarks | None
    nipple_px: tuple[float, float] | None
    warnings: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)


class _NotedVolume:
    """``volume`` whose decoded frames' own warnings (beyond the header's) are collected,
    each once, at most :data:`MAX_FRAME_NOTES` (then counted)."""

    def __init__(self, volume: VolumeLike) -> None:
        self.volume = volume
        self.header: VolumeHeaderLike = volume.header
        self._known = set(volume.header.image.warnings)
        self.notes: list[str] = []
        self.more = 0

    def frame(self, index: int) -> Image:
        image = self.volume.frame(index)
        for note in image.warnings:
            if note in self._known:
                continue
            self._known.add(note)
            if len(self.notes) < MAX_FRAME_NOTES:
                self.notes.append(note)
            else:
                self.more += 1
        return image


def _positions(heights_mm: Sequence[float]) -> list[int]:
    """Frame index -> its position in stack order (:func:`~serving.pipeline.tomo.
    stack_order`)."""
    order = stack_order(heights_mm)
    pos = [0] * len(order)
    for p, i in enumerate(order):
        pos[i] = p
    return pos


def _span(c: TomoCandidate, pos: Sequence[int]) -> tuple[int, int]:
    """The stack positions ``[first, last]`` (inclusive) of a candidate's detections."""
    ps = [pos[p.frame] for p in c.track] or [pos[c.best_frame]]
    return min(ps), max(ps)


@dataclass(frozen=True)
class _Places:
    """Best-frame boxes ``(N, 4)`` and detected stack spans ``lo``/``hi`` ``(N,)`` of
    candidates, computed once for the pairwise same-place tests."""

    boxes: npt.NDArray[np.float64]
    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]

    @classmethod
    def of(cls, candidates: Sequence[TomoCandidate], pos: Sequence[int]) -> _Places:
        spans = [_span(c, pos) for c in candidates]
        return cls(np.array([c.box for c in candidates], np.float64).reshape(-1, 4),
                   np.array([a for a, _ in spans], np.int64),
                   np.array([b for _, b in spans], np.int64))

    def same_place(self, i: int, others: npt.NDArray[np.intp], ios_thresh: float,
                   of: _Places | None = None) -> npt.NDArray[np.bool_]:
        """Per index in ``others`` (into ``of``, default these places): its box covers at
        least ``ios_thresh`` of the smaller of it and box ``i``, and the two were detected at
        overlapping stack positions."""
        of = self if of is None else of
        if not len(others):
            return np.zeros(0, bool)
        ios = intersection_over_smaller(self.boxes[i:i + 1], of.boxes[others])[0]
        return (ios >= ios_thresh) & (of.lo[others] <= self.hi[i]) & \
            (self.lo[i] <= of.hi[others])


def suppress_nested_tracks(candidates: Sequence[TomoCandidate], heights_mm: Sequence[float],
                           ios_thresh: float) -> list[int]:
    """Indices of the candidates kept, best score first: greedy by decreasing score (stable
    for ties), a candidate is dropped when a kept candidate of the same class lies at the
    same place (best-frame boxes with intersection over the smaller box >= ``ios_thresh``)
    and was detected at overlapping stack positions (:func:`~serving.pipeline.tomo.
    stack_order` of ``heights_mm``, one height per frame, mm).

    Raises:
        ValueError: ``ios_thresh`` outside (0, 1].
    """
    if not 0.0 < ios_thresh <= 1.0:
        raise ValueError(f"ios_thresh must be in (0, 1], got {ios_thresh!r}")
    places = _Places.of(candidates, _positions(heights_mm))
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    kept: dict[object, list[int]] = {}
    out: list[int] = []
    for i in order:
        same = kept.setdefault(candidates[i].label, [])
        if places.same_place(i, np.array(same, np.intp), ios_thresh).any():
            continue
        same.append(i)
        out.append(i)
    return out


#: A finding's frame range is where its score is at least this share of its best score
#: (the full width at half maximum of the score along the stack).
FOCUS_SHARE: Final = 0.5


def focus_span(c: TomoCandidate, pos: Sequence[int], share: float = FOCUS_SHARE
               ) -> tuple[int, int]:
    """The stack positions ``[first, last]`` (inclusive) of the run of detections around the
    best one that score at least ``share`` of the best score, stopping at the first weaker
    detection on either side, widened to include the candidate's best frame (its in-focus
    frame, :mod:`serving.pipeline.tomo.focus`, may lie outside that run). Out-of-plane blur
    keeps a defect detectable far from its plane (on a narrow sweep a 3 mm void stays
    visible over 20 frames, at falling scores); the half-maximum run is where it is in
    focus."""
    points = sorted(c.track, key=lambda p: pos[p.frame])
    best = pos[c.best_frame]
    if not points:
        return best, best
    k = max(range(len(points)), key=lambda i: points[i].score)
    floor = share * points[k].score
    lo = hi = k
    while lo > 0 and points[lo - 1].score >= floor:
        lo -= 1
    while hi < len(points) - 1 and points[hi + 1].score >= floor:
        hi += 1
    return min(pos[points[lo].frame], best), max(pos[points[hi].frame], best)


def frame_out(c: TomoCandidate, heights_mm: Sequence[float], slab: int) -> FrameOut:
    """The frames of a candidate as DICOM frame numbers: ``best`` its best (centre) frame,
    ``first``/``last`` the outer frames of the first and last slab of its in-focus run
    (:func:`focus_span`; for ``slab = 1`` frames), ``height_mm`` the best frame's (slab's
    mean) height, mm."""
    n = len(heights_mm)
    order = stack_order(heights_mm)
    pos = _positions(heights_mm)
    lo, hi = focus_span(c, pos)
    first = order[slab_bounds(lo, slab, n)[0]]
    last = order[slab_bounds(hi, slab, n)[1] - 1]
    height = c.height_mm if c.height_mm is not None else float(heights_mm[c.best_frame])
    return FrameOut(best=c.best_frame + 1, first=first + 1, last=last + 1,
                    height_mm=round(float(height), 2))


def single_view_location_out(loc: TomoLocation) -> SingleViewLocationOut:
    """The schema form of a DBT view's location, with what it had to assume."""
    assumptions = []
    if loc.angle_assumed and loc.angle_deg is not None:
        assumptions.append(f"MLO C-arm angle {loc.angle_deg:g} degrees assumed: "
                           "PositionerPrimaryAngle not usable")
    if loc.orientation_assumed:
        assumptions.append(ORIENTATION_UNKNOWN)
    if loc.height_axis is None:
        assumptions.append(f"{HEIGHT_AXIS_UNKNOWN} ({loc.view})")
    return SingleViewLocationOut(
        clock_hour=stated_clock_hour(loc.clock_hour, loc.quadrant), quadrant=loc.quadrant,
        depth=loc.depth,
        distance_from_nipple_mm=round(loc.distance_mm, 1),
        distance_from_nipple_cm=loc.distance_cm, assumptions=assumptions, phrase=loc.phrase)


def mimics_to_report(vc: VolumeCandidates, reported: Sequence[int], threshold: float
                     ) -> list[int]:
    """Indices of the mimics of ``vc`` to report: scoring at least ``threshold`` and not at
    the place of a reported lesion (``reported``: indices into ``vc.lesions``) at overlapping
    heights, the 2D rule (:data:`~serving.pipeline.rescore.OVERLAP_IOS`) in 3D."""
    pos = _positions(vc.volume.header.frame_heights_mm)
    mimics = _Places.of(vc.mimics, pos)
    found = _Places.of([vc.lesions[i] for i in reported], pos)
    everyone = np.arange(len(reported), dtype=np.intp)
    return [k for k, m in enumerate(vc.mimics)
            if m.score >= threshold
            and not mimics.same_place(k, everyone, OVERLAP_IOS, of=found).any()]


def _evidence(c: int, lesions: _Places, mimics: _Places, scores: Sequence[float],
              bubble: npt.NDArray[np.bool_], n_frames: int, runs: int,
              settings: TomoSettings, score: float) -> tuple[str, CandidateEvidence]:
    """Lesion ``c``'s evidence: the text (``DBT_EVIDENCE``, in how many detector inputs it
    was seen, ``n_frames``, and the mimic scores at its place, as the 2D evidence names them)
    and the rescoring's inputs from this volume alone (``score`` its detector score; the
    best ``air_bubble`` mimic, marked by ``bubble``, and other mimic at its place)."""
    unit = "frames" if settings.slab == 1 else "slabs"
    parts = [DBT_EVIDENCE, f"detected in {n_frames} of {runs} {unit}"]
    here = lesions.same_place(c, np.arange(len(scores)), OVERLAP_IOS, of=mimics)
    values = np.asarray(scores, np.float64).reshape(-1)
    best_bubble = float(values[here & bubble].max(initial=0.0))
    best_other = float(values[here & ~bubble].max(initial=0.0))
    if best_bubble >= _EVIDENCE_MIN_SCORE:
        parts.append(f"air-bubble score here {best_bubble:.2f}")
    if best_other >= _EVIDENCE_MIN_SCORE:
        parts.append(f"other mimic score here {best_other:.2f}")
    return "; ".join(parts), CandidateEvidence(score, best_bubble, best_other, False, 0.0)


def _evidences(lesions: Sequence[TomoCandidate], mimics: Sequence[TomoCandidate],
               labels: Sequence[str], pos: Sequence[int], runs: int,
               settings: TomoSettings) -> list[tuple[str, CandidateEvidence]]:
    """:func:`_evidence` of every lesion candidate."""
    at, of = _Places.of(lesions, pos), _Places.of(mimics, pos)
    scores = [m.score for m in mimics]
    bubble = np.array([n == "air_bubble" for n in labels], bool)
    return [_evidence(k, at, of, scores, bubble, c.n_frames, runs, settings, c.score)
            for k, c in enumerate(lesions)]


def analyse_volume(volume: VolumeLike, model: DetectorModel,
                   settings: TomoSettings | None = None) -> VolumeCandidates:
    """Candidates of one DBT volume (see the module docstring), threshold-free.

    Args:
        volume: the volume (:class:`serving.pipeline.dicom_in.Volume`, or any
            :class:`~serving.pipeline.tomo.VolumeLike`).
        model: the 2D detector.
        settings: slab, stride, slab mode and linking (default: the card's,
            ``model.tomo_settings``).

    Raises:
        serving.pipeline.errors.IntakeError: a frame cannot be decoded (it names the frame).
        ValueError: a malformed volume header (frame count or heights).
    """
    settings = settings if settings is not None else model.tomo_settings
    noted = _NotedVolume(volume)
    detections = run_volume(noted, model.for_volumes(settings.spacing_mm), slab=settings.slab,
                            stride=settings.stride,
                            slab_mode=settings.slab_mode, link=settings.link)
    heights = volume.header.frame_heights_mm
    n = int(volume.header.number_of_frames)
    pos = _positions(heights)
    t0 = time.perf_counter()
    all_c = detections.candidates
    keep = suppress_nested_tracks(all_c, heights, model.decode.nested_ios_thresh)
    kept = [all_c[i] for i in keep]
    lesions = [c for c in kept if _name(c, model) == LESION_CLASS]
    mimics = [c for c in kept if _name(c, model) != LESION_CLASS]
    labels = [_name(c, model) for c in mimics]
    header = volume.header.image
    warnings = list(header.warnings)
    landmarks: Landmarks | None = None
    locations: list[TomoLocation | None] = [None] * len(lesions)
    try:
        located = locate_candidates(noted, lesions)
        landmarks = located.landmarks
        locations = list(located.locations)
    except LandmarkError as exc:
        warnings.append(f"no location: {exc}")
    warnings += noted.notes
    if noted.more:
        warnings.append(f"{noted.more} more frame decoding note(s) not listed")
    runs = len(detections.centres)
    warnings.append(
        f"tomosynthesis: the 2D detector ran on {settings.describe()} ({runs} of {n} frames "
        "as centres)")
    nipple = None
    if landmarks is not None:
        scale = max(1, round(header.rows / max(landmarks.shape[0], 1)))
        nipple = (landmarks.nipple_xy[0] * scale, landmarks.nipple_xy[1] * scale)
    evidence = _evidences(lesions, mimics, labels, pos, runs, settings)
    timings = {k: v for k, v in detections.timings_ms.items() if k != "total"}
    timings["locate"] = (time.perf_counter() - t0) * 1e3
    return VolumeCandidates(
        volume=volume, header=header, number_of_frames=n, settings=settings,
        detections=detections, lesions=lesions,
        lesion_frames=[frame_out(c, heights, settings.slab) for c in lesions],
        locations=locations,
        evidence=[text for text, _ in evidence], lesion_evidence=[e for _, e in evidence],
        scores=[c.score for c in lesions], rescored=False,
        mimics=mimics, mimic_labels=labels,
        mimic_frames=[frame_out(c, heights, settings.slab) for c in mimics],
        landmarks=landmarks, nipple_px=nipple, warnings=warnings, timings_ms=timings)


def _name(c: TomoCandidate, model: DetectorModel) -> str:
    """A candidate's class name (``label_name``, else from the model's classes)."""
    if c.label_name is not None:
        return c.label_name
    return model.classes[c.label] if 0 <= c.label < len(model.classes) else str(c.label)
