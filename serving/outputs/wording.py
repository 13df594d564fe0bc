"""What the result objects say about a finding, in one place for the CAD SR, the TID 1500 SR
and the GSPS: which lesion it is, where it is, and what its score means.

- **Lesions**: every two-view fused finding is one lesion (its CC and ML/MLO findings), every
  finding not in a pair is a lesion of its own; they are numbered from 1 in that order
  ("Filling defect 1"), so the GSPS labels, the CAD SR impressions and the TID 1500 tracking
  identifiers name the same lesion the same way.
- **Where**: the BI-RADS location of ``serving.pipeline.locate``, except the parts that rest on
  which way the image rows run. When PatientOrientation (0020,0020) does not tell it
  (:func:`orientation_assumed`, the rule of ``locate``), the pipeline assumed the standard
  hanging; the results then leave out the clock face, the quadrant and the outer/inner or
  upper/lower half, and say why. Depth and distance from the nipple do not depend on it.
- **Tomosynthesis**: a finding on a DBT volume names its frame, e.g. "frame 23 of 48 (height
  21 mm)", and the frames it is seen in; one DBT view gives the whole BI-RADS location (the
  plane's height is the third dimension), so a finding seen on one DBT view only is located
  with that view's own phrase (``FindingOut.single_view_location``).
- **Score**: the model's lesion score from 0 to 1 (rescored with the other view when the model
  card has a rescoring model), a ranking for marks and not a probability of cancer; the
  operating point's threshold and its validation sensitivity and false-positive rate say what
  marking at that score means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from serving.outputs.common import (
    OperatingPointPerformance,
    ResultInput,
    VolumePromise,
    is_volume,
)
from serving.pipeline.findings import (
    FindingOut,
    FrameOut,
    FusedFindingOut,
    ImageOut,
    MimicOut,
    ModelOut,
    OperatingPointOut,
    SingleViewLocationOut,
)
from serving.pipeline.locate import ORIENTATION_UNKNOWN
from serving.pipeline.locate import orientation_assumed as _assumed

SIDE: dict[str, str] = {"L": "Left breast", "R": "Right breast"}
#: Why an orientation-dependent part of a location is left out.
ORIENTATION_NOTE = f"not stated: {ORIENTATION_UNKNOWN}"
FINDING_NAME = "Filling defect"


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """PatientOrientation (0020,0020) as ``(row, column)`` directions, upper case, or ``None``
    when absent or not two values of the letters A, P, R, L, H, F."""
    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str | bytes):
        return None
    items = [str(v).strip().upper() for v in value]
    if len(items) != 2 or not all(v and set(v) <= set("APRLHF") for v in items):
        return None
    return items[0], items[1]


def orientation_assumed(source: Dataset, image: ImageOut) -> bool:
    """True when the location of a finding on ``image`` rests on an assumed hanging: its
    PatientOrientation does not give the direction the view needs (``locate``'s rule: CC the
    lateral direction, ML/LM the superior one, MLO-like views both). For a tomosynthesis
    volume, whose orientation is in its functional groups (Plane Orientation), the
    pipeline's own verdict, ``ImageOut.orientation_assumed``."""
    if is_volume(source):
        return image.orientation_assumed
    return _assumed(image.view, image.laterality, patient_orientation(source))


def _distance(cm: int) -> str:
    return "less than 1 cm from nipple" if cm < 1 else f"{cm} cm from nipple"


def _millimetres(value: float) -> str:
    """e.g. "21 mm" or "20.5 mm" (0.1 mm)."""
    return f"{round(value, 1):g} mm"


def frame_text(frame: FrameOut, frames: int | None = None) -> str:
    """The frame a tomosynthesis mark is drawn on, e.g. "frame 23 of 48 (height 21 mm)"
    (``frames``: the volume's number of frames, left out when unknown)."""
    of = f" of {frames}" if frames else ""
    return f"frame {frame.best}{of} (height {_millimetres(frame.height_mm)})"


def frame_range_text(frame: FrameOut) -> str:
    """The frames a tomosynthesis finding is detected in, e.g. "frames 20-26" or "frame 23"."""
    if frame.first == frame.last:
        return f"frame {frame.first}"
    return f"frames {frame.first}-{frame.last}"


@dataclass(frozen=True)
class Where:
    """A lesion's location as the results state it (orientation-dependent parts removed when
    the orientation was assumed)."""

    laterality: str
    region: str | None = None
    """Clock face ("10 o'clock"), "retroareolar", "central" or a quadrant (fused only)."""
    clock_hour: int | None = None
    quadrant: str | None = None
    half: str | None = None
    """"outer half" or "upper half (oblique view)" (a single view)."""
    views: str | None = None
    """"CC only" or "CC and MLO"."""
    depth: str | None = None
    distance_cm: int | None = None
    distance_mm: float | None = None
    left_out: str | None = None
    """What was left out because the orientation was assumed (or, for a tomosynthesis view,
    because the view does not give it), e.g. "clock face or quadrant"."""
    left_out_reason: str = "orientation unknown"
    """Why, in a label line."""
    stated: str | None = None
    """A tomosynthesis view's own location phrase (``SingleViewLocationOut.phrase``), said as
    it is."""

    @property
    def side(self) -> str:
        return SIDE.get(self.laterality, "Breast of unknown laterality")

    def phrase(self) -> str:
        """e.g. "Left breast, 10 o'clock, middle depth, 3 cm from nipple" (the views are said
        apart)."""
        if self.stated:
            return self.stated
        parts = [self.side]
        if self.region:
            parts.append(self.region)
        if self.half:
            parts.append(self.half)
        if self.depth:
            parts.append(f"{self.depth} depth")
        if self.distance_cm is not None:
            parts.append(_distance(self.distance_cm))
        text = ", ".join(parts)
        return f"{text}; {self.left_out} {ORIENTATION_NOTE}" if self.left_out else text

    def label_lines(self) -> list[str]:
        """Two or three short lines for an image annotation."""
        first = ", ".join(p for p in (self.side, self.region or "", self.half or "") if p)
        if self.views and (self.views.endswith("only") or "unknown" in self.views):
            first += f" ({self.views})"
        second = ", ".join(p for p in (f"{self.depth} depth" if self.depth else "",
                                       _distance(self.distance_cm)
                                       if self.distance_cm is not None else "") if p)
        lines = [first] + ([second] if second else [])
        if self.left_out:
            lines.append(f"no {self.left_out}: {self.left_out_reason}")
        return lines


@dataclass(frozen=True)
class Lesion:
    """One lesion: a fused CC + ML/MLO pair or a single-view finding."""

    number: int
    members: list[tuple[int, FindingOut]]
    """(image index in the study, finding), CC first for a pair."""
    fused: FusedFindingOut | None
    where: Where

    @property
    def name(self) -> str:
        return f"{FINDING_NAME} {self.number}"


def _region(quadrant: str | None, clock_hour: int | None) -> str | None:
    """What a location names first after the breast: "retroareolar" or "central", else the
    clock face ("10 o'clock"), else the quadrant; ``None`` when neither is known."""
    if quadrant in ("retroareolar", "central"):
        return quadrant
    if clock_hour is not None:
        return f"{clock_hour} o'clock"
    return quadrant


def _where_fused(lesion: FusedFindingOut, views: str, assumed: bool) -> Where:
    if assumed:
        return Where(lesion.laterality, views=views, depth=lesion.depth,
                     distance_cm=lesion.distance_from_nipple_cm,
                     distance_mm=lesion.distance_from_nipple_mm,
                     left_out="clock face or quadrant")
    region = _region(lesion.quadrant, lesion.clock_hour)
    return Where(lesion.laterality, region=region, clock_hour=lesion.clock_hour,
                 quadrant=lesion.quadrant, views=views, depth=lesion.depth,
                 distance_cm=lesion.distance_from_nipple_cm,
                 distance_mm=lesion.distance_from_nipple_mm)


def _where_volume(image: ImageOut, views: str, loc: SingleViewLocationOut) -> Where:
    """One tomosynthesis view's whole location (its phrase already says what it leaves out
    and why)."""
    left_out = "clock face or quadrant" if loc.clock_hour is None and loc.quadrant is None \
        else None
    return Where(image.laterality, region=_region(loc.quadrant, loc.clock_hour),
                 clock_hour=loc.clock_hour, quadrant=loc.quadrant, views=views, depth=loc.depth,
                 distance_cm=loc.distance_from_nipple_cm, distance_mm=loc.distance_from_nipple_mm,
                 left_out=left_out, left_out_reason="not given by this view", stated=loc.phrase)


def _where_single(image: ImageOut, finding: FindingOut, assumed: bool) -> Where:
    views = f"{image.view} only" if image.view else "one view of unknown type"
    if finding.single_view_location is not None:
        return _where_volume(image, views, finding.single_view_location)
    loc = finding.location
    if loc is None:
        return Where(image.laterality, views=views)
    half = None
    if loc.half and not assumed:
        half = f"{loc.half} half" + (" (oblique view)" if loc.oblique else "")
    left_out = None
    if assumed and loc.half is not None:
        left_out = "outer/inner half" if loc.half in ("outer", "inner") else "upper/lower half"
    return Where(image.laterality, half=half, views=views, depth=loc.depth,
                 distance_cm=loc.distance_from_nipple_cm, distance_mm=loc.distance_from_nipple_mm,
                 left_out=left_out)


@dataclass
class StudyWords:
    """The lesions of one study's result, numbered, with their locations."""

    result: ResultInput
    lesions: list[Lesion] = field(init=False)
    assumed: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        images = self.result.study.images
        self.assumed = [orientation_assumed(s, img) for s, img in self.result.pairs]
        index = {f.id: (i, f) for i, img in enumerate(images) for f in img.findings}
        lesions: list[Lesion] = []
        used: set[str] = set()
        for fused in self.result.study.fused:
            for fid in fused.finding_ids:
                if fid not in index:
                    raise ValueError(f"fused finding {fused.finding_ids} names finding {fid!r}, "
                                     f"expected one of the study's finding ids {sorted(index)}")
                if fid in used:
                    raise ValueError(f"finding {fid!r} is in more than one fused finding; "
                                     "expected each finding in at most one CC/ML-MLO pair")
                used.add(fid)
            members = [index[fid] for fid in fused.finding_ids]
            views = " and ".join(images[i].view or "a view of unknown type" for i, _ in members)
            assumed = any(self.assumed[i] for i, _ in members)
            lesions.append(Lesion(len(lesions) + 1, members, fused,
                                  _where_fused(fused, views, assumed)))
        for i, img in enumerate(images):
            for f in img.findings:
                if f.id not in used:
                    lesions.append(Lesion(len(lesions) + 1, [(i, f)], None,
                                          _where_single(img, f, self.assumed[i])))
        self.lesions = lesions

    def lesion_of(self, finding_id: str) -> Lesion:
        """The lesion a finding belongs to."""
        for lesion in self.lesions:
            if any(f.id == finding_id for _, f in lesion.members):
                return lesion
        raise KeyError(finding_id)


# --------------------------------------------------------------------------------------------
# Scores and operating points
# --------------------------------------------------------------------------------------------


def rescored(result: ResultInput) -> bool:
    """Whether the scores were rescored (the model card has a rescoring model: every finding
    then states its evidence)."""
    return any(f.evidence for img in result.study.images for f in img.findings)


def score_meaning(model: ModelOut, was_rescored: bool) -> str:
    """What every score in the results is."""
    how = (" after rescoring with the other view of the breast and the mimic classes"
           if was_rescored else "")
    return (f"scores are {model.name} {model.version} lesion scores from 0 to 1{how}: they "
            "rank the marks and are not probabilities of cancer")


def finding_score(finding: FindingOut) -> str:
    """e.g. "score 0.80 (network 0.75; other view: partner scored 0.83)"."""
    text = f"score {finding.score:.2f}"
    notes = []
    if finding.detector_score is not None and round(finding.detector_score, 2) != round(
            finding.score, 2):
        notes.append(f"network {finding.detector_score:.2f}")
    if finding.evidence:
        notes.append(finding.evidence)
    return f"{text} ({'; '.join(notes)})" if notes else text


def lesion_score(lesion: Lesion) -> str:
    """The lesion's score: a single view's, or the geometric mean of a pair's."""
    if lesion.fused is None:
        return finding_score(lesion.members[0][1])
    each = " and ".join(f"{f.score:.2f}" for _, f in lesion.members)
    return f"score {lesion.fused.score:.2f} (geometric mean of the two views' {each})"


def performance_text(op: OperatingPointOut, perf: OperatingPointPerformance | None) -> str:
    """What the operating point promises, e.g. "on validation data 83.6 % of lesions were
    marked at 0.50 false marks per image" ("" when unknown)."""
    if perf is None or perf.fp_per_image is None:
        return ""
    if perf.sensitivity is not None:
        return (f"on validation data {perf.sensitivity * 100:.1f} % of lesions were marked at "
                f"{perf.fp_per_image:.2f} false marks per image")
    return (f"{perf.fp_per_image:.2f} false marks per image on the site's normal studies "
            f"({op.source}); sensitivity not measured there")


def threshold_text(op: OperatingPointOut, perf: OperatingPointPerformance | None) -> str:
    """e.g. "marked because score >= 0.81 (operating point balanced, model card; on validation
    data 83.6 % of lesions were marked at 0.50 false marks per image)"."""
    inner = f"operating point {op.name}, {op.source}"
    promise = performance_text(op, perf)
    if promise:
        inner += f"; {promise}"
    return f"marked because score >= {op.score_threshold:.2f} ({inner})"


#: What a tomosynthesis volume's score is when the card has no tomosynthesis rescoring.
VOLUME_SCORE_MEANING = ("tomosynthesis volume scores are the detector's own (its highest slab "
                        "score), not rescored with the other view")
#: What it is when the card's tomosynthesis rescoring applied.
VOLUME_RESCORED_MEANING = ("tomosynthesis volume scores are the detector's highest slab score "
                           "rescored with the other view of the breast and the mimic classes "
                           "(a model fitted on tomosynthesis volumes)")


def volume_score_meaning(rescored: bool) -> str:
    """:data:`VOLUME_RESCORED_MEANING` when the volumes were rescored, else
    :data:`VOLUME_SCORE_MEANING`."""
    return VOLUME_RESCORED_MEANING if rescored else VOLUME_SCORE_MEANING


def volume_promise_text(promise: VolumePromise) -> str:
    """What the volumes' operating point promises, e.g. "on DBT validation data 62.0 % of
    lesions were found at 0.94 false positives per volume" ("" when not measured)."""
    if promise.fp_per_volume is None:
        return ""
    if promise.sensitivity is not None:
        return (f"on DBT validation data {promise.sensitivity * 100:.1f} % of lesions were "
                f"found at {promise.fp_per_volume:.2f} false positives per volume")
    return (f"{promise.fp_per_volume:.2f} false positives per volume on DBT validation data; "
            "sensitivity not measured")


def volume_threshold_text(promise: VolumePromise) -> str:
    """e.g. "marked on the tomosynthesis volume because score >= 0.81 (model card
    tomosynthesis point balanced; on DBT validation data ...)"."""
    inner = promise.source
    measured = volume_promise_text(promise)
    inner += f"; {measured}" if measured else "; false positives per volume not measured"
    return (f"marked on the tomosynthesis volume because score >= "
            f"{promise.score_threshold:.2f} ({inner})")


def on_volume(lesion: Lesion) -> bool:
    """Whether a member of ``lesion`` is on a tomosynthesis volume."""
    return any(f.frame is not None for _, f in lesion.members)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def lesion_frames(lesion: Lesion, images: Sequence[ImageOut]) -> str:
    """Where a lesion lies in its tomosynthesis volume(s), e.g. "Tomosynthesis: best seen on
    frame 23 of 48 (height 21 mm), detected in frames 20-26" (each view named for a two-view
    lesion); "" when no member is on a volume."""
    parts = []
    for index, finding in lesion.members:
        if finding.frame is None:
            continue
        image = images[index]
        view = f"{image.view} " if lesion.fused is not None and image.view else ""
        parts.append(f"{view}best seen on {frame_text(finding.frame, image.number_of_frames)}, "
                     f"detected in {frame_range_text(finding.frame)}")
    return f"Tomosynthesis: {'; '.join(parts)}" if parts else ""


def impression(lesion: Lesion, result: ResultInput) -> str:
    """The Impression Description of one lesion in the CAD SR."""
    seen = f"seen on {lesion.where.views}"
    frames = lesion_frames(lesion, result.study.images)
    promise = result.volume_point
    if promise is not None and on_volume(lesion):
        threshold = volume_threshold_text(promise)
        meaning = (f"{_sentence(score_meaning(result.model, False))}; "
                   f"{volume_score_meaning(promise.rescored)}.")
    else:
        threshold = threshold_text(result.operating_point, result.performance)
        meaning = f"{_sentence(score_meaning(result.model, rescored(result)))}."
    return (f"{lesion.name} (intraluminal, galactography), {seen}: {lesion.where.phrase()}. "
            + (f"{frames}. " if frames else "")
            + f"{_sentence(lesion_score(lesion))}; {threshold}. {meaning}")


def finding_label(lesion: Lesion, finding: FindingOut, frames: int | None = None) -> list[str]:
    """The GSPS label of one finding (on its own image), e.g. ["Filling defect 1, score 0.93",
    "Left breast, 10 o'clock", "middle depth, 3 cm from nipple"], and on a tomosynthesis
    volume (``frames``: its number of frames) also e.g. "frame 23 of 48 (height 21 mm)"."""
    lines = [f"{lesion.name}, score {finding.score:.2f}", *lesion.where.label_lines()]
    if finding.frame is not None:
        lines.append(frame_text(finding.frame, frames))
    return lines


def mimic_label(mimic: MimicOut, frames: int | None = None) -> list[str]:
    """e.g. ["Probable air bubble", "not a lesion, score 0.71"], and on a tomosynthesis volume
    its frame, e.g. "frame 4 of 8 (height 3 mm)"."""
    lines = [_sentence(mimic.text), f"not a lesion, score {mimic.score:.2f}"]
    if mimic.frame is not None:
        lines.append(frame_text(mimic.frame, frames))
    return lines


def _volume_notes(op: OperatingPointOut, promise: VolumePromise) -> list[str]:
    return [f"operating point {op.name} on tomosynthesis volumes: findings with score >= "
            f"{promise.score_threshold:g}",
            f"tomosynthesis threshold source: {promise.source}"]


def algorithm_notes(result: ResultInput, *, full: bool = True, volume: bool = False
                    ) -> list[str]:
    """Algorithm Parameters text of both SRs: the operating point, its threshold and source;
    with ``full``, also what it promises and what the scores are. When the study has volumes
    (and :attr:`ResultInput.volume_promise`), ``full`` adds the volumes' point, its promise
    and what volume scores are (:func:`volume_score_meaning`); ``volume`` (the notes of a
    mark on a volume) gives the volumes' point instead of the 2D one."""
    op = result.operating_point
    promise = result.volume_point
    if volume and promise is not None and not full:
        return _volume_notes(op, promise)
    notes = [f"operating point {op.name}: findings with score >= {op.score_threshold:g}",
             f"threshold source: {op.source}"]
    if full:
        measured = performance_text(op, result.performance)
        if promise is not None:
            if measured:
                notes.append(f"2D images: {measured}")
            notes.extend(_volume_notes(op, promise))
            notes.append(volume_promise_text(promise)
                         or "false positives per volume not measured")
        elif measured:
            notes.append(measured)
        meaning = score_meaning(result.model, rescored(result))
        notes.append(meaning if promise is None else f"on 2D images, {meaning}")
        if promise is not None:
            notes.append(volume_score_meaning(promise.rescored))
    return notes


__all__ = [
    "ORIENTATION_NOTE",
    "VOLUME_RESCORED_MEANING",
    "VOLUME_SCORE_MEANING",
    "Lesion",
    "StudyWords",
    "Where",
    "algorithm_notes",
    "finding_label",
    "finding_score",
    "frame_range_text",
    "frame_text",
    "impression",
    "lesion_frames",
    "lesion_score",
    "mimic_label",
    "on_volume",
    "orientation_assumed",
    "patient_orientation",
    "performance_text",
    "rescored",
    "score_meaning",
    "threshold_text",
    "volume_promise_text",
    "volume_score_meaning",
    "volume_threshold_text",
]
