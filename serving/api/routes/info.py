"""``GET /v1/models``: the loaded model and a summary of its card."""

from __future__ import annotations

from typing import Any

from serving.api.auth import keyed_router
from serving.api.deps import ModelDep, StateDep
from serving.api.schemas import ModelInfo, OperatingPointInfo

router = keyed_router({503: "model not ready"}, prefix="/v1", tags=["operations"])
#: Error statuses of the router's operations (every body is ErrorOut).
ERRORS = router.responses

#: Card keys summarised by ``GET /v1/models``.
CARD_SUMMARY = ("intended_use", "metrics", "versions")


@router.get("/models", response_model=list[ModelInfo], summary="The loaded model")
async def models(state: StateDep, model: ModelDep) -> list[ModelInfo]:
    """Name, version, operating points (with where their thresholds come from), input
    spacing, classes, the ONNX file's SHA-256 and a summary of the model card."""
    card: dict[str, Any] = model.card
    ops = [OperatingPointInfo(name=o.name, score_threshold=o.score_threshold,
                              max_fp_per_image=o.max_fp_per_image, sensitivity=o.sensitivity,
                              fp_per_image=o.fp_per_image,
                              source=model.operating_points_source)
           for o in model.operating_points.values()]
    return [ModelInfo(name=model.name, version=model.version,
                      default_operating_point=state.settings.operating_point
                      or model.default_operating_point,
                      operating_points=ops, spacing_mm=model.preprocess.spacing_mm,
                      classes=model.classes,
                      sha256=card.get("onnx", {}).get("sha256"),
                      card={k: card[k] for k in CARD_SUMMARY if k in card})]
