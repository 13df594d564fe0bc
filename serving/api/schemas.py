"""Request/response models of the HTTP API beyond the pipeline's result schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from serving.pipeline.findings import DetectionResponse


class RejectedOut(BaseModel):
    """An uploaded part the intake refused; the others were analysed."""

    part: int = Field(description="0-based position of the part in the request body")
    name: str | None = Field(description="the part's file name, when it had one")
    detail: str = Field(description="stable code, e.g. 'not_dicom', 'color_image'")
    status: int = Field(description="the HTTP status this part alone would have received")
    message: str


class DetectResponse(DetectionResponse):
    """``POST /v1/detect`` JSON: the detection result, the refused parts, request timings."""

    rejected: list[RejectedOut] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict,
                                         description="queue (receiving the body and waiting for a "
                                         "slot), analysis and total (ms)")


class ErrorOut(BaseModel):
    """Every error response."""

    detail: str = Field(description="stable snake_case code")
    message: str = Field(description="what was expected and what was found")
    request_id: str | None = None
    rejected: list[RejectedOut] | None = None


def error_responses(codes: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route: each error status with its description, every
    body an :class:`ErrorOut` (also the 422 of invalid parameters, which FastAPI would
    otherwise document as ``HTTPValidationError``), so that the OpenAPI schema lists what
    clients, and ``tests/test_schemathesis.py``, can rely on."""
    return {code: {"model": ErrorOut, "description": text} for code, text in codes.items()}


class OperatingPointInfo(BaseModel):
    name: str
    score_threshold: float
    max_fp_per_image: float
    sensitivity: float | None
    fp_per_image: float | None
    source: str = Field(default="model card", description="where the threshold is from: "
                        "'model card' or 'site calibration <file name>, <created date>'")


class TomoOperatingPointInfo(BaseModel):
    """An operating point for tomosynthesis volumes (the card's ``tomosynthesis`` section):
    applied to a volume finding's detector score, with what it gave on DBT validation."""

    name: str
    score_threshold: float
    target_fp_per_volume: float | None
    fp_per_volume: float | None
    sensitivity: float | None
    note: str | None = Field(default=None, description="why the target was not reached, "
                             "or that two points share a threshold")


class TomoNetworkInfo(BaseModel):
    """The network tomosynthesis volumes run when it is not the 2D one (the card's
    ``tomosynthesis.network``)."""

    file: str = Field(description="ONNX file in the model folder")
    sha256: str
    source: str = Field(description="the exported model it came from, '<name> <version>'")
    spacing_mm: float = Field(description="pixel spacing volumes are resampled to before it")


class ModelInfo(BaseModel):
    """``GET /v1/models`` entry: the loaded model and a summary of its card."""

    name: str
    version: str
    default_operating_point: str
    operating_points: list[OperatingPointInfo]
    tomosynthesis_operating_points: list[TomoOperatingPointInfo] = Field(
        default_factory=list, description="the thresholds volumes take, by the same names "
        "(empty: the card has none, volumes take the 2D ones and say so)")
    spacing_mm: float
    classes: list[str]
    sha256: str | None
    tomosynthesis_network: TomoNetworkInfo | None = Field(
        default=None, description="the network volumes run (null: the 2D one, `sha256`)")
    card: dict[str, object] = Field(description="card summary: description, training data, "
                                                "metrics")


class Health(BaseModel):
    status: str
    model: str | None = None
