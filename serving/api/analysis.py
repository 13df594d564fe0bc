"""The blocking work of one request, run in an inference worker thread: decode the parts
triage accepted (:mod:`serving.api.triage`: parsed once, header and result UIDs checked),
detect, and build DICOM results. Shared by ``/v1/detect``, ``/v1/render`` and STOW-RS.

A tomosynthesis volume is read with :func:`serving.pipeline.dicom_in.read_volume` (its frames
are decoded during detection, one at a time) and analysed as the model card's tomosynthesis
settings say, or ``GALACTO_TOMO_SLAB`` / ``GALACTO_TOMO_STRIDE`` when set (``tomo``); its
results' source header is
:attr:`Volume.dataset`. A volume whose frame cannot be decoded is refused with the intake's
code beside the other parts (:func:`serving.gateway.volumes.detect_refusing_volumes`), never
a 500.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from serving.api.body import Part
from serving.api.schemas import RejectedOut
from serving.api.triage import Checked, Triaged, intake_refusal
from serving.gateway.volumes import IntakeLimits, detect_refusing_volumes
from serving.outputs import results
from serving.outputs.common import (
    OperatingPointPerformance,
    ResultKind,
    VolumePromise,
    volume_promise,
)
from serving.pipeline.detect_volume import TomoSettings
from serving.pipeline.dicom_in import Image, Volume, read_instance, read_volume
from serving.pipeline.errors import IntakeError
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.model import DetectorModel


@dataclass
class Analysis:
    """What one request produced.

    ``images[i]`` / ``headers[i]`` / ``parts[i]`` belong to the response's image index ``i``;
    an image is a 2D :class:`Image` or a tomosynthesis :class:`Volume` (whose header is its
    :attr:`Volume.dataset`).
    """

    response: DetectionResponse | None
    images: list[Image | Volume] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    rejected: list[RejectedOut] = field(default_factory=list)
    rejected_headers: list[Dataset | None] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    performance: OperatingPointPerformance | None = None
    """What the applied operating point promises (stated in the DICOM results)."""
    volume_promise: VolumePromise | None = None
    """What the operating point applied to tomosynthesis volumes promises."""


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


def _read(checked: Checked, model: DetectorModel, limits: IntakeLimits
          ) -> tuple[Image | Volume, Dataset, str | None]:
    """``(image or volume, its header, its SOP Instance UID)`` from a part's parsed data set.

    Raises:
        IntakeError: the part is refused (its header, when parsed, in ``exc.dataset``).
    """
    if checked.volume:
        volume = read_volume(checked.dataset, max_frames=limits.max_frames,
                             max_pixels=limits.max_volume_pixels)
        return volume, volume.dataset, volume.header.image.sop_instance_uid
    instance = read_instance(checked.dataset, max_pixels=limits.max_pixels,
                             reduce_to_spacing_mm=model.preprocess.spacing_mm)
    return instance.image, instance.dataset, instance.image.sop_instance_uid


def read_parts(triaged: Triaged, model: DetectorModel, limits: IntakeLimits) -> Analysis:
    """Decode every part triage accepted (:func:`read_instance`, or :func:`read_volume` for a
    volume, on its parsed data set: no second parse); a part refused now is listed with its
    header, beside triage's refusals. An instance sent twice in one request is analysed once:
    the GSPS of a study cannot reference the same instance twice (highdicom refused it: a
    500, found by tests/test_schemathesis.py)."""
    out = refused(triaged)
    seen: dict[str, int] = {}  # SOP Instance UID -> part index
    for checked in triaged.accepted:
        part = checked.part
        try:
            item, header, uid = _read(checked, model, limits)
        except IntakeError as exc:
            out.rejected.append(intake_refusal(part, exc))
            out.rejected_headers.append(exc.dataset)
            continue
        if uid is not None and uid in seen:
            out.rejected.append(_duplicate(part, seen[uid]))
            out.rejected_headers.append(header)
            continue
        if uid is not None:
            seen[uid] = part.index
        out.images.append(item)
        out.headers.append(header)
        out.parts.append(part)
    _in_part_order(out)
    return out


def run_detection(analysis: Analysis, model: DetectorModel, operating_point: str | None,
                  request_id: str | None, tomo: TomoSettings | None) -> None:
    """Detect on ``analysis.images`` (grouped into studies) and set ``analysis.response``,
    with the operating point's validation performance and the volumes' promise that the
    result objects state (``analysis.performance``, ``analysis.volume_promise``); a volume
    whose frame cannot be decoded moves to the refused parts with the intake's code
    (``analysis.response`` is None when nothing is left)."""
    detected = detect_refusing_volumes(analysis.images, model, operating_point,
                                       sources=[p.name for p in analysis.parts], tomo=tomo,
                                       request_id=request_id)
    for failure in detected.failures:
        refusal = intake_refusal(analysis.parts[failure.index], failure.error)
        refusal.message = failure.describe(refusal.message)
        analysis.rejected.append(refusal)
        analysis.rejected_headers.append(analysis.headers[failure.index])
    if detected.failures:
        keep = detected.kept
        analysis.images = [analysis.images[i] for i in keep]
        analysis.headers = [analysis.headers[i] for i in keep]
        analysis.parts = [analysis.parts[i] for i in keep]
        _in_part_order(analysis)
    analysis.response = detected.response
    if analysis.response is not None:  # what every result object states of the point
        analysis.performance = OperatingPointPerformance.of(
            model.operating_point(operating_point))
        analysis.volume_promise = volume_promise(model, operating_point, tomo)


def _duplicate(part: Part, first: int) -> RejectedOut:
    return RejectedOut(part=part.index, name=part.name, detail="duplicate_instance", status=409,
                       message=f"the same SOP Instance UID as part {first} of this request; "
                               "each instance is analysed once")


def analyse(triaged: Triaged, model: DetectorModel, operating_point: str | None,
            limits: IntakeLimits, request_id: str | None, tomo: TomoSettings | None
            ) -> Analysis:
    """Decode the parts (:func:`read_parts`) and detect on the accepted images and volumes
    (:func:`run_detection`)."""
    t0 = time.perf_counter()
    out = read_parts(triaged, model, limits)
    t1 = time.perf_counter()
    if out.images:
        run_detection(out, model, operating_point, request_id, tomo)
    t2 = time.perf_counter()
    out.timings_ms = {"read": round((t1 - t0) * 1e3, 1), "detect": round((t2 - t1) * 1e3, 1)}
    return out


def build_results(analysis: Analysis, kinds: Sequence[ResultKind]) -> list[Dataset]:
    """The DICOM result objects of ``kinds`` for every study, in study then kind order."""
    if analysis.response is None:
        return []
    return results.build_results(analysis.response, analysis.headers, kinds,
                                 analysis.performance, analysis.volume_promise)
