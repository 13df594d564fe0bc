"""All DICOM result objects of a detection response: one entry point for every adapter
(HTTP ``/v1/detect`` and STOW-RS, the DICOM gateway)."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from serving.outputs.cad_sr import build_cad_sr
from serving.outputs.common import (
    OperatingPointPerformance,
    ResultInput,
    ResultKind,
    VolumePromise,
)
from serving.outputs.gsps import build_gsps
from serving.outputs.tid1500 import build_tid1500
from serving.pipeline.findings import DetectionResponse


def result_inputs(response: DetectionResponse, headers: Sequence[Dataset],
                  performance: OperatingPointPerformance | None = None,
                  volume_promise: VolumePromise | None = None) -> list[ResultInput]:
    """One :class:`ResultInput` per study of ``response``; ``headers[i]`` is the source
    instance of the response's image index ``i``; ``performance`` is what the applied
    operating point promises (the model's ``OperatingPoint``, see
    :meth:`OperatingPointPerformance.of`); ``volume_promise`` what the point applied to
    tomosynthesis volumes promises (:func:`serving.outputs.common.volume_promise`)."""
    return [ResultInput(sources=[headers[img.index] for img in study.images], study=study,
                        model=response.model, operating_point=response.operating_point,
                        performance=performance, volume_promise=volume_promise)
            for study in response.studies]


def build_results(response: DetectionResponse, headers: Sequence[Dataset],
                  kinds: Sequence[ResultKind],
                  performance: OperatingPointPerformance | None = None,
                  volume_promise: VolumePromise | None = None) -> list[Dataset]:
    """The result objects of ``kinds`` for every study of ``response``, in study then kind
    order (GSPS may give several objects per study)."""
    results: list[Dataset] = []
    for item in result_inputs(response, headers, performance, volume_promise):
        for kind in kinds:
            if kind is ResultKind.CAD_SR:
                results.append(build_cad_sr(item))
            elif kind is ResultKind.TID1500:
                results.append(build_tid1500(item))
            else:
                results.extend(build_gsps(item))
    return results
