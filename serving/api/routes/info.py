"""``GET /v1/models``: the loaded model and a summary of its card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.api.auth import keyed_router
from serving.api.deps import ModelDep, StateDep
from serving.api.schemas import (
    ModelInfo,
    OperatingPointInfo,
    TomoNetworkInfo,
    TomoOperatingPointInfo,
)
from serving.pipeline.model import DetectorModel, TomoOperatingPoint

router = keyed_router({503: "model not ready"}, prefix="/v1", tags=["operations"])
#: Error statuses of the router's operations (every body is ErrorOut).
ERRORS = router.responses

#: Card keys summarised by ``GET /v1/models``.
CARD_SUMMARY = ("intended_use", "metrics", "versions")


@router.get("/models", response_model=list[ModelInfo], summary="The loaded model")
async def models(state: StateDep, model: ModelDep) -> list[ModelInfo]:
    """Name, version, operating points (with where their thresholds come from), input
    spacing, classes, the ONNX file's SHA-256, the network volumes run when it is another
    one, and a summary of the model card."""
    card: dict[str, Any] = model.card
    ops = [OperatingPointInfo(name=o.name, score_threshold=o.score_threshold,
                              max_fp_per_image=o.max_fp_per_image, sensitivity=o.sensitivity,
                              fp_per_image=o.fp_per_image,
                              source=model.operating_points_source)
           for o in model.operating_points.values()]
    tomo = [] if model.tomo is None else [
        TomoOperatingPointInfo(name=o.name, score_threshold=o.score_threshold,
                               target_fp_per_volume=o.target_fp_per_volume,
                               fp_per_volume=o.fp_per_volume, sensitivity=o.sensitivity,
                               note=o.note or _shared(o, model.tomo.operating_points))
        for o in model.tomo.operating_points.values()]
    return [ModelInfo(name=model.name, version=model.version,
                      default_operating_point=state.settings.operating_point
                      or model.default_operating_point,
                      operating_points=ops, tomosynthesis_operating_points=tomo,
                      spacing_mm=model.preprocess.spacing_mm,
                      classes=model.classes,
                      sha256=card.get("onnx", {}).get("sha256"),
                      tomosynthesis_network=_tomo_network(model),
                      card={k: card[k] for k in CARD_SUMMARY if k in card})]


def _shared(point: TomoOperatingPoint, points: Mapping[str, TomoOperatingPoint]) -> str | None:
    """``"same threshold as <names>"`` when other volume points share this one's threshold
    (asking for either gives the same findings), else None."""
    same = [n for n, o in points.items()
            if n != point.name and o.score_threshold == point.score_threshold]
    return f"same threshold as {', '.join(same)}" if same else None


def _tomo_network(model: DetectorModel) -> TomoNetworkInfo | None:
    """The card's volume network, None when volumes run the 2D one."""
    net = model.tomo_network
    if net is None:
        return None
    return TomoNetworkInfo(file=net.file, sha256=net.sha256, source=net.label,
                           spacing_mm=model.for_volumes().preprocess.spacing_mm)
