"""One study job's analysis: triage and read its instances, detect, build the result objects.

Runs in a gateway worker thread. Each spooled instance is parsed once, under the intake's
guards (:func:`serving.pipeline.dicom_in.read_instance`: inflation and element budgets, pixel
limit), which gives both the image and the header the results are built from. Instances that
are not galactogram images are skipped with a reason (:mod:`serving.gateway.triage` on that
header, else the intake's typed refusal); the others go through the same
:func:`serving.pipeline.detect.detect` as every other adapter, and the configured result
objects are built from a :class:`serving.outputs.common.ResultInput` per study.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from serving.gateway.spool import InstanceRecord, Skipped
from serving.gateway.triage import skip_reason
from serving.outputs.common import OperatingPointPerformance, ResultKind
from serving.outputs.results import build_results
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_instance
from serving.pipeline.errors import IntakeError
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
    images: list[Image] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _read_one(inst: InstanceRecord, model: DetectorModel, max_pixels: int
              ) -> tuple[Image, Dataset] | str:
    """The image and its header from one guarded parse of the spooled file, or the reason it
    is skipped (``code: explanation``): the triage's reason when the header shows one (also
    for an instance the intake refused, from the header it parsed), else the intake's."""
    if not inst.present:
        return "missing_file: the instance file was deleted from the spool"
    try:
        instance = read_instance(inst.path, max_pixels=max_pixels,
                                 reduce_to_spacing_mm=model.preprocess.spacing_mm)
    except IntakeError as exc:
        header = exc.dataset if isinstance(exc.dataset, Dataset) else None
        reason = skip_reason(header) if header is not None else None
        return reason or f"{exc.code}: {exc}"
    except OSError as exc:
        return f"missing_file: the instance file cannot be read ({type(exc).__name__})"
    return skip_reason(instance.dataset) or (instance.image, instance.dataset)


def read_instances(instances: Sequence[InstanceRecord], model: DetectorModel,
                   max_pixels: int) -> _Read:
    """Triage and decode each instance; the skipped ones are listed with the reason."""
    out = _Read()
    for inst in instances:
        got = _read_one(inst, model, max_pixels)
        if isinstance(got, str):
            out.skipped.append(Skipped(inst.sop_instance_uid, got))
            code = got.split(":", 1)[0]
            log.info("instance skipped (%s)", code, extra={"reason": code})
            continue
        out.images.append(got[0])
        out.headers.append(got[1])
    return out


def analyse_study(instances: Sequence[InstanceRecord], model: DetectorModel, *,
                  operating_point: str | None, kinds: Sequence[ResultKind], max_pixels: int,
                  job_id: int) -> StudyAnalysis:
    """Analyse one job's instances.

    Raises:
        Exception: whatever detection or result building raised (the caller fails the job
            with the reason); intake refusals of single instances are not raised.
    """
    t0 = time.perf_counter()
    read = read_instances(instances, model, max_pixels)
    t1 = time.perf_counter()
    out = StudyAnalysis(analysed=len(read.images), skipped=read.skipped,
                        timings_ms={"read": round((t1 - t0) * 1e3, 1)})
    if not read.images:
        return out
    response = detect(read.images, model, operating_point,
                      sources=[None] * len(read.images), request_id=f"job-{job_id}")
    t2 = time.perf_counter()
    out.results = build_results(response, read.headers, kinds,
                                OperatingPointPerformance.of(model.operating_point(operating_point)))
    t3 = time.perf_counter()
    out.findings = sum(len(img.findings) for s in response.studies for img in s.images)
    out.timings_ms.update(detect=round((t2 - t1) * 1e3, 1), results=round((t3 - t2) * 1e3, 1))
    return out
