"""The detection result schema (pydantic): what ``galacto detect`` writes as JSON and what the
HTTP API returns. One schema for every adapter.

Conventions: ``box_px`` is ``[x1, y1, x2, y2]`` in pixels of the stored DICOM image (x =
column, y = row, origin at the top-left corner of the top-left pixel, x2/y2 exclusive);
``box_mm`` is the same box in mm from that corner (pixels times PixelSpacing).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ViewLocationOut(BaseModel):
    """What one view tells about a finding's location."""

    distance_from_nipple_mm: float = Field(description="estimated, uncompressed breast (mm)")
    distance_from_nipple_cm: int = Field(description="whole cm, as radiologists state it")
    depth: str = Field(description="anterior, middle or posterior third of the PNL")
    depth_fraction: float = Field(description="0 at the nipple, 1 at the chest wall/pectoral")
    half: str | None = Field(description="outer/inner (CC) or upper/lower (ML, MLO); None "
                             "when the view cannot tell or the orientation was assumed")
    oblique: bool = Field(description="MLO: upper/lower mixes superior with lateral")
    orientation_assumed: bool = Field(default=False, description="PatientOrientation did not "
                                      "give the image orientation: the half is not stated")
    text: str = Field(description="e.g. 'Left breast, outer half (from the CC view), ...'")


class FrameOut(BaseModel):
    """Where a finding lies in a tomosynthesis volume. Frame numbers are DICOM frame numbers
    (1-based, as Referenced Frame Number (0008,1160) counts them)."""

    best: int = Field(ge=1, description="the frame where the finding scores highest (in focus); "
                      "box_px is drawn on it")
    first: int = Field(ge=1, description="first frame it is detected in")
    last: int = Field(ge=1, description="last frame it is detected in")
    height_mm: float = Field(description="height of the best frame's plane above the breast "
                             "support (detector), mm")


class SingleViewLocationOut(BaseModel):
    """The BI-RADS location one tomosynthesis view gives (clock face from one volume)."""

    clock_hour: int | None = Field(description="1-12; None where the view or orientation "
                                   "cannot tell, and for a lesion within 10 mm of the nipple "
                                   "axis (quadrant 'retroareolar' or 'central': BI-RADS "
                                   "states no clock face there)")
    quadrant: str | None
    depth: str
    distance_from_nipple_mm: float
    distance_from_nipple_cm: int
    assumptions: list[str] = Field(default_factory=list, description="what had to be "
                                   "assumed, e.g. the MLO angle")
    phrase: str


class FindingOut(BaseModel):
    """One detected filling defect on one image."""

    id: str = Field(description="unique within the response: '<image index>.<finding index>'")
    label: str
    score: float = Field(ge=0.0, le=1.0, description="the score operating points compare: "
                         "the detector's score rescored with the other view(s) of the same "
                         "breast in the request when the model card has a rescoring model")
    detector_score: float | None = Field(default=None, ge=0.0, le=1.0,
                                         description="the network's own score for this box")
    evidence: str | None = Field(default=None, description="what the rescoring used, e.g. "
                                 "'partner in MLO at 2 mm depth difference' or 'single view'")
    operating_points: list[str] = Field(description="the model's operating points it passes")
    box_px: list[float] = Field(min_length=4, max_length=4)
    box_mm: list[float] = Field(min_length=4, max_length=4)
    center_px: list[float] = Field(min_length=2, max_length=2)
    center_mm: list[float] = Field(min_length=2, max_length=2)
    size_mm: list[float] = Field(min_length=2, max_length=2, description="[width, height]")
    location: ViewLocationOut | None = None
    frame: FrameOut | None = Field(default=None, description="tomosynthesis volumes only: "
                                   "the planes the finding lies in; None for a 2D image")
    single_view_location: SingleViewLocationOut | None = Field(
        default=None, description="tomosynthesis volumes only: the location one volume gives "
        "(the plane's height is the third dimension)")


class MimicOut(BaseModel):
    """Something the model recognised as a lesion mimic (air bubble, cyst, extravasation).
    Never a finding: it is not counted, fused, or written into result objects as a lesion."""

    label: str = Field(description="the mimic class, e.g. 'air_bubble'")
    text: str = Field(description="e.g. 'probable air bubble'")
    score: float = Field(ge=0.0, le=1.0)
    box_px: list[float] = Field(min_length=4, max_length=4)
    box_mm: list[float] = Field(min_length=4, max_length=4)
    frame: FrameOut | None = Field(default=None, description="tomosynthesis volumes only")


class ImageOut(BaseModel):
    """The result for one image (instance)."""

    index: int
    source: str | None = Field(default=None, description="file name, when read from a file")
    sop_instance_uid: str | None
    series_instance_uid: str | None
    study_instance_uid: str | None
    laterality: str
    view: str | None
    rows: int
    cols: int
    spacing_mm: list[float]
    spacing_source: str
    number_of_frames: int | None = Field(default=None, description="tomosynthesis volumes: "
                                         "the number of frames; None for a 2D image")
    nipple_px: list[float] | None = None
    pnl_length_mm: float | None = None
    findings: list[FindingOut]
    mimics: list[MimicOut] = Field(default_factory=list, description="probable mimics at the "
                                   "operating point's threshold; not lesions")
    orientation_assumed: bool = Field(default=False, description="PatientOrientation does "
                                      "not give the direction this view needs: the standard "
                                      "hanging was assumed, and no half, clock face or "
                                      "quadrant is stated for its findings")
    timings_ms: dict[str, float]
    warnings: list[str] = Field(default_factory=list)


class FusedFindingOut(BaseModel):
    """A finding matched across CC and ML/MLO of one breast, located as in BI-RADS."""

    laterality: str
    finding_ids: list[str] = Field(description="[CC finding id, ML/MLO finding id]")
    score: float
    clock_hour: int | None = Field(description="1-12; None when unknown, and for a lesion "
                                   "within 10 mm of the nipple axis (quadrant 'retroareolar' "
                                   "or 'central': BI-RADS states no clock face there)")
    quadrant: str | None
    depth: str
    distance_from_nipple_mm: float
    distance_from_nipple_cm: int
    oblique: bool
    orientation_assumed: bool = Field(default=False, description="a view's orientation was "
                                      "assumed: clock face and quadrant are not stated")
    phrase: str = Field(description="e.g. 'Right breast, 10 o'clock, middle depth, 3 cm "
                                    "from nipple'")


class StudyOut(BaseModel):
    """All images of one study (StudyInstanceUID) and their two-view fusion."""

    study_instance_uid: str | None
    images: list[ImageOut]
    fused: list[FusedFindingOut]


class ModelOut(BaseModel):
    name: str
    version: str


class OperatingPointOut(BaseModel):
    """The operating point applied: its name, threshold, and where the threshold is from."""

    name: str
    score_threshold: float
    source: str = Field(default="model card", description="'model card', or 'site "
                        "calibration <file name>, <created date>' (galacto calibrate)")


class DetectionResponse(BaseModel):
    """The whole answer: model, operating point applied, studies."""

    model: ModelOut
    operating_point: OperatingPointOut
    studies: list[StudyOut]
    request_id: str | None = None
