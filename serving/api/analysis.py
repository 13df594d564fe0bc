"""The blocking work of one request, run in an inference worker thread: decode the parts
triage accepted (:mod:`serving.api.triage`: parsed once, header and result UIDs checked),
detect, and build DICOM results. Shared by ``/v1/detect``, ``/v1/render`` and STOW-RS.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from serving.api.body import Part
from serving.api.schemas import RejectedOut
from serving.api.triage import Triaged, intake_refusal
from serving.outputs import results
from serving.outputs.common import OperatingPointPerformance, ResultKind
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_instance
from serving.pipeline.errors import IntakeError
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.model import DetectorModel


@dataclass
class Analysis:
    """What one request produced.

    ``images[i]`` / ``headers[i]`` / ``parts[i]`` belong to the response's image index ``i``.
    """

    response: DetectionResponse | None
    images: list[Image] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    rejected: list[RejectedOut] = field(default_factory=list)
    rejected_headers: list[Dataset | None] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    performance: OperatingPointPerformance | None = None
    """What the applied operating point promises (stated in the DICOM results)."""


def refused(triaged: Triaged) -> Analysis:
    """The analysis of a request whose parts triage refused: nothing to run."""
    return Analysis(response=None, rejected=list(triaged.rejected),
                    rejected_headers=list(triaged.rejected_headers))


def _in_part_order(out: Analysis) -> None:
    """Sort the refused parts by part index (triage's and the slot's refusals merged)."""
    pairs = sorted(zip(out.rejected, out.rejected_headers, strict=True),
                   key=lambda pair: pair[0].part)
    out.rejected = [r for r, _ in pairs]
    out.rejected_headers = [h for _, h in pairs]


def read_parts(triaged: Triaged, model: DetectorModel, max_pixels: int) -> Analysis:
    """Decode every part triage accepted (:func:`read_instance` on its parsed data set: no
    second parse); a part refused now is listed with its header, beside triage's refusals.
    An instance sent twice in one request is analysed once: the GSPS of a study cannot
    reference the same instance twice (highdicom refused it: a 500, found by
    tests/test_schemathesis.py)."""
    out = refused(triaged)
    seen: dict[str, int] = {}  # SOP Instance UID -> part index
    for checked in triaged.accepted:
        part = checked.part
        try:
            instance = read_instance(checked.dataset, max_pixels=max_pixels,
                                     reduce_to_spacing_mm=model.preprocess.spacing_mm)
        except IntakeError as exc:
            out.rejected.append(intake_refusal(part, exc))
            out.rejected_headers.append(exc.dataset)
            continue
        uid = instance.image.sop_instance_uid
        if uid is not None and uid in seen:
            out.rejected.append(_duplicate(part, seen[uid]))
            out.rejected_headers.append(instance.dataset)
            continue
        if uid is not None:
            seen[uid] = part.index
        out.images.append(instance.image)
        out.headers.append(instance.dataset)
        out.parts.append(part)
    _in_part_order(out)
    return out


def _duplicate(part: Part, first: int) -> RejectedOut:
    return RejectedOut(part=part.index, name=part.name, detail="duplicate_instance", status=409,
                       message=f"the same SOP Instance UID as part {first} of this request; "
                               "each instance is analysed once")


def analyse(triaged: Triaged, model: DetectorModel, operating_point: str | None,
            max_pixels: int, request_id: str | None) -> Analysis:
    """Decode the parts (:func:`read_parts`) and detect on the accepted images (grouped into
    studies)."""
    t0 = time.perf_counter()
    out = read_parts(triaged, model, max_pixels)
    t1 = time.perf_counter()
    if out.images:
        out.response = detect(out.images, model, operating_point,
                              sources=[p.name for p in out.parts], request_id=request_id)
        out.performance = OperatingPointPerformance.of(model.operating_point(operating_point))
    t2 = time.perf_counter()
    out.timings_ms = {"read": round((t1 - t0) * 1e3, 1), "detect": round((t2 - t1) * 1e3, 1)}
    return out


def build_results(analysis: Analysis, kinds: Sequence[ResultKind]) -> list[Dataset]:
    """The DICOM result objects of ``kinds`` for every study, in study then kind order."""
    if analysis.response is None:
        return []
    return results.build_results(analysis.response, analysis.headers, kinds,
                                 analysis.performance)
