"""One study job's analysis: triage and read its instances, detect, build the result objects.

Runs in a gateway worker thread. Each spooled instance is parsed once, under the intake's
guards (:func:`serving.pipeline.intake.parse.parsed`: inflation and element budgets, pixel
limit), which gives both the image and the header the results are built from: a 2D image by
:func:`serving.pipeline.dicom_in.read_instance`, a tomosynthesis volume (Breast Tomosynthesis
Image, multi-frame grayscale Secondary Capture; :func:`serving.gateway.volumes.
reads_as_volume`) by :func:`serving.pipeline.dicom_in.read_volume` within
``GALACTO_GATEWAY_MAX_FRAMES`` and ``GALACTO_GATEWAY_MAX_VOLUME_PIXELS``, its frames decoded
during detection. Instances that are not galactogram images are skipped with a reason
(:mod:`serving.gateway.triage` on that header, else the intake's typed refusal); the others
go through the same :func:`serving.pipeline.detect.detect` as every other adapter (a volume
whose frame cannot be decoded is skipped with the intake's reason and the others analysed:
:func:`serving.gateway.volumes.detect_refusing_volumes`), and the configured result objects
are built from a :class:`serving.outputs.common.ResultInput` per study (a volume's source
header is :attr:`Volume.dataset`; its marks reference their frames).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from serving.gateway.spool import InstanceRecord, Skipped
from serving.gateway.triage import skip_reason
from serving.gateway.volumes import IntakeLimits, detect_refusing_volumes, reads_as_volume
from serving.outputs.common import OperatingPointPerformance, ResultKind, volume_promise
from serving.outputs.results import build_results
from serving.pipeline.detect_volume import TomoSettings
from serving.pipeline.dicom_in import Image, Volume, read_instance, read_volume
from serving.pipeline.errors import IntakeError
from serving.pipeline.intake.parse import parsed
from serving.pipeline.model import DetectorModel

log = logging.getLogger("galacto.gateway")


@dataclass
class StudyAnalysis:
    """What the analysis of one job produced.

    Attributes:
        results: the result objects, in study then kind order (empty when nothing analysed).
        analysed: instances the detector ran on.
        skipped: instances not analysed, with the reason.
        findings: findings reported on all images.
        timings_ms: ``read`` (triage and decode), ``detect`` and ``results`` in ms.
    """

    results: list[Dataset] = field(default_factory=list)
    analysed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    findings: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Read:
    images: list[Image | Volume] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _parse(inst: InstanceRecord, model: DetectorModel, limits: IntakeLimits
           ) -> tuple[Image | Volume, Dataset]:
    """The image or volume and its header from one guarded parse of the spooled file.

    Raises:
        IntakeError: refused (the header parsed, if any, in ``exc.dataset``).
        OSError: the file cannot be read.
    """
    with parsed(inst.path, header_only=False, max_pixels=limits.parse_pixels) as ds:
        if reads_as_volume(ds):
            volume = read_volume(ds, max_frames=limits.max_frames,
                                 max_pixels=limits.max_volume_pixels)
            return volume, volume.dataset
        instance = read_instance(ds, max_pixels=limits.max_pixels,
                                 reduce_to_spacing_mm=model.preprocess.spacing_mm)
        return instance.image, instance.dataset


def _read_one(inst: InstanceRecord, model: DetectorModel, limits: IntakeLimits
              ) -> tuple[Image | Volume, Dataset] | str:
    """The image (or volume) and its header from one guarded parse of the spooled file, or
    the reason it is skipped (``code: explanation``): the triage's reason when the header
    shows one (also for an instance the intake refused, from the header it parsed), else the
    intake's."""
    if not inst.present:
        return "missing_file: the instance file was deleted from the spool"
    try:
        item, header = _parse(inst, model, limits)
    except IntakeError as exc:
        refused = exc.dataset if isinstance(exc.dataset, Dataset) else None
        reason = skip_reason(refused) if refused is not None else None
        return reason or f"{exc.code}: {exc}"
    except OSError as exc:
        return f"missing_file: the instance file cannot be read ({type(exc).__name__})"
    return skip_reason(header) or (item, header)


def _skip(out: _Read, uid: str, reason: str) -> None:
    out.skipped.append(Skipped(uid, reason))
    code = reason.split(":", 1)[0]
    log.info("instance skipped (%s)", code, extra={"reason": code})


def read_instances(instances: Sequence[InstanceRecord], model: DetectorModel,
                   limits: IntakeLimits) -> _Read:
    """Triage and read each instance; the skipped ones are listed with the reason."""
    out = _Read()
    for inst in instances:
        got = _read_one(inst, model, limits)
        if isinstance(got, str):
            _skip(out, inst.sop_instance_uid, got)
            continue
        out.images.append(got[0])
        out.headers.append(got[1])
        out.uids.append(inst.sop_instance_uid)
    return out


def analyse_study(instances: Sequence[InstanceRecord], model: DetectorModel, *,
                  operating_point: str | None, kinds: Sequence[ResultKind],
                  limits: IntakeLimits, tomo: TomoSettings | None, job_id: int
                  ) -> StudyAnalysis:
    """Analyse one job's instances (2D images and tomosynthesis volumes, run as ``tomo``
    says; None: as the model card says).

    Raises:
        Exception: whatever detection or result building raised (the caller fails the job
            with the reason); intake refusals of single instances (also a volume frame that
            cannot be decoded during detection) are not raised.
    """
    t0 = time.perf_counter()
    read = read_instances(instances, model, limits)
    t1 = time.perf_counter()
    out = StudyAnalysis(analysed=len(read.images), skipped=read.skipped,
                        timings_ms={"read": round((t1 - t0) * 1e3, 1)})
    if not read.images:
        return out
    detected = detect_refusing_volumes(read.images, model, operating_point,
                                       sources=[None] * len(read.images), tomo=tomo,
                                       request_id=f"job-{job_id}")
    for failure in detected.failures:
        error = failure.error
        _skip(read, read.uids[failure.index], f"{error.code}: {failure.describe(str(error))}")
    out.skipped = read.skipped
    out.analysed = len(detected.kept)
    t2 = time.perf_counter()
    out.timings_ms["detect"] = round((t2 - t1) * 1e3, 1)
    if detected.response is None:
        return out
    headers = [read.headers[i] for i in detected.kept]
    out.results = build_results(detected.response, headers, kinds,
                                OperatingPointPerformance.of(model.operating_point(operating_point)),
                                volume_promise(model, operating_point, tomo))
    t3 = time.perf_counter()
    out.findings = sum(len(img.findings) for s in detected.response.studies
                       for img in s.images)
    out.timings_ms["results"] = round((t3 - t2) * 1e3, 1)
    return out
