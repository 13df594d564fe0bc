"""The blocking work of one request, run in an inference worker thread: read the parts with
the intake, detect, and build DICOM results. Shared by ``/v1/detect`` and STOW-RS.

The UIDs a DICOM result copies from its sources are checked at intake, per instance, when
the request asks for DICOM results (:data:`UidCheck`): an instance with an empty, multi-valued
or malformed one is refused as ``invalid_uid`` (400) beside the others, instead of failing
the whole request while its results are built (a 500, after part of them was stored).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from serving.api.body import Part
from serving.api.errors import intake_status, public_message
from serving.api.schemas import RejectedOut
from serving.api.store import UID_RE
from serving.outputs import results
from serving.outputs.common import OperatingPointPerformance, ResultKind
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_instance
from serving.pipeline.errors import IntakeError
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.intake.values import attr
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


#: Which source UIDs :func:`read_parts` checks: none (JSON results), those DICOM results copy
#: (``outputs``: one value of UI syntax), or those and a Study Instance UID the result store
#: can file (``store``: also no leading zeros, :data:`serving.api.store.UID_RE`).
UidCheck = Literal["none", "outputs", "store"]
#: Source attributes every DICOM result copies or references.
RESULT_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: The UI value representation: digits and dots, at most 64 characters (PS3.5 6.2).
UI_RE = re.compile(r"[0-9.]{1,64}")


def uid_problem(ds: Dataset, check: UidCheck) -> str | None:
    """What is wrong with the result UIDs of ``ds`` (naming the attribute, never quoting
    its value), or None."""
    if check == "none":
        return None
    for keyword in RESULT_UIDS:
        try:
            value = ds.get(keyword)
        except Exception:  # a value pydicom cannot convert
            return f"{attr(keyword)} cannot be read"
        if isinstance(value, MultiValue | list):
            return f"{attr(keyword)} has {len(value)} values"
        text = "" if value is None else str(value)
        if not text:
            return f"{attr(keyword)} is {'empty' if keyword in ds else 'absent'}"
        if not UI_RE.fullmatch(text):
            return f"{attr(keyword)} is not a valid UID"
        if check == "store" and keyword == "StudyInstanceUID" and not UID_RE.fullmatch(text):
            return f"{attr(keyword)} is not a UID results can be stored under (no empty " \
                   "components, no leading zeros)"
    return None


def _invalid_uid(part: Part, problem: str) -> RejectedOut:
    return RejectedOut(part=part.index, name=part.name, detail="invalid_uid", status=400,
                       message=f"{problem}; expected one DICOM UID (digits and dots, at most 64 "
                               "characters)")


def read_parts(parts: Sequence[Part], model: DetectorModel, max_pixels: int,
               uids: UidCheck = "none") -> Analysis:
    """Read every part with the intake, once (:func:`read_instance` gives the image and the
    header the results are built from); refused parts are listed, not raised, with the header
    the intake had parsed, if any (never parsed again); so are parts whose result UIDs fail
    ``uids`` (``invalid_uid``, :func:`uid_problem`). An instance sent twice in one request
    is analysed once: the GSPS of a study cannot reference the same instance twice (highdicom
    refused it: a 500, found by tests/test_schemathesis.py)."""
    out = Analysis(response=None)
    seen: dict[str, int] = {}  # SOP Instance UID -> part index
    for part in parts:
        try:
            instance = read_instance(part.data, max_pixels=max_pixels,
                                     reduce_to_spacing_mm=model.preprocess.spacing_mm)
        except IntakeError as exc:
            out.rejected.append(RejectedOut(part=part.index, name=part.name, detail=exc.code,
                                            status=intake_status(exc),
                                            message=public_message(exc)))
            out.rejected_headers.append(exc.dataset)
            continue
        problem = uid_problem(instance.dataset, uids)
        if problem is not None:
            out.rejected.append(_invalid_uid(part, problem))
            out.rejected_headers.append(instance.dataset)
            continue
        image = instance.image
        uid = image.sop_instance_uid
        if uid is not None and uid in seen:
            out.rejected.append(RejectedOut(
                part=part.index, name=part.name, detail="duplicate_instance", status=409,
                message=f"the same SOP Instance UID as part {seen[uid]} of this request; "
                        "each instance is analysed once"))
            out.rejected_headers.append(instance.dataset)
            continue
        if uid is not None:
            seen[uid] = part.index
        out.images.append(image)
        out.headers.append(instance.dataset)
        out.parts.append(part)
    return out


def analyse(parts: Sequence[Part], model: DetectorModel, operating_point: str | None,
            max_pixels: int, request_id: str | None, uids: UidCheck = "none") -> Analysis:
    """Read the parts (:func:`read_parts`) and detect on the accepted images (grouped into
    studies)."""
    t0 = time.perf_counter()
    out = read_parts(parts, model, max_pixels, uids)
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
