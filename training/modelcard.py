"""The model card (``model.json``): everything serving needs, and what a reader should know.

Built from the training config and checkpoint at export; serving validates it in
``serving.pipeline.model.load_model``. Training-side objects are converted to serving's
config classes here and nowhere else, so no constant is duplicated between the two.
"""

from __future__ import annotations

from typing import Any

from serving.pipeline.model import CARD_SCHEMA_VERSION
from serving.pipeline.postprocess import AnchorConfig, DecodeConfig
from training.config import DecodeSection, ModelConfig, TrainConfig
from training.data import preprocess_config

INTENDED_USE = (
    "Research software. Detects intraductal filling defects (papilloma-like lesions) on "
    "galactograms (ductograms) as an aid to reading. Trained only on synthetic galactograms; "
    "not validated on patient data; NOT FOR CLINICAL DIAGNOSIS."
)


def anchor_config(cfg: ModelConfig) -> AnchorConfig:
    """Serving's anchor settings for a training model config."""
    return AnchorConfig.from_dict({
        "feature_map_scales": list(cfg.feature_map_scales),
        "base_anchor_shapes": [list(s) for s in cfg.base_anchor_shapes],
    })


def decode_config(cfg: DecodeSection, mimic_score_thresh: float | None = None
                  ) -> DecodeConfig:
    """Serving's decoding settings for a training decode section (and the mimic reporting
    threshold chosen at export, when given)."""
    extra = {} if mimic_score_thresh is None else {"mimic_score_thresh": mimic_score_thresh}
    return DecodeConfig.from_dict({**extra,
        "nested_ios_thresh": cfg.nested_ios_thresh,
        "box_coder_weights": list(cfg.box_coder_weights),
        "score_thresh": cfg.score_thresh,
        "topk_candidates_per_level": cfg.topk_candidates_per_level,
        "nms_thresh": cfg.nms_thresh,
        "detections_per_img": cfg.detections_per_img,
        "test_time_flips": list(cfg.test_time_flips),
    })


def build_card(cfg: TrainConfig, *, version: str, onnx_file: str, onnx_sha256: str,
               opset: int, num_levels: int, checkpoint_meta: dict[str, Any],
               operating_points: dict[str, dict[str, Any]], default_operating_point: str,
               parity: dict[str, Any], metrics: dict[str, Any], training: dict[str, Any],
               rescoring: dict[str, Any] | None = None,
               mimic_score_thresh: float | None = None,
               trained_config: TrainConfig | None = None) -> dict[str, Any]:
    """Assemble ``model.json`` (with the ``rescoring`` section when given).

    ``cfg`` is what serving runs (``preprocess``, ``decode``); ``trained_config`` the config
    the weights were trained with, written to ``training.config`` (default ``cfg``). When
    their input spacings differ, ``training.input_spacing_mm`` records both."""
    trained = cfg if trained_config is None else trained_config
    spacing_note = ({} if trained.preprocess.spacing_mm == cfg.preprocess.spacing_mm else
                    {"input_spacing_mm": {"trained": trained.preprocess.spacing_mm,
                                          "served": cfg.preprocess.spacing_mm}})
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": cfg.name,
        "version": version,
        "intended_use": INTENDED_USE,
        "input": {"name": "image", "shape": ["batch", 1, "height", "width"],
                  "dtype": "float32", "layout": "NCHW, height = image rows",
                  "size_divisible": cfg.preprocess.size_divisible},
        "outputs": {"classification": [f"cls_{i}" for i in range(num_levels)],
                    "box_regression": [f"box_{i}" for i in range(num_levels)],
                    "layout": "per FPN level, highest resolution first: classification "
                              "(1, A*K, h, w) logits, box_regression (1, A*4, h, w) MONAI "
                              "box-coder deltas in the network's row/column order"},
        "preprocess": preprocess_config(cfg.preprocess).to_dict(),
        "anchors": anchor_config(cfg.model).to_dict(),
        "decode": decode_config(cfg.decode, mimic_score_thresh).to_dict(),
        "classes": list(cfg.model.class_names),
        "operating_points": operating_points,
        "default_operating_point": default_operating_point,
        "onnx": {"file": onnx_file, "sha256": onnx_sha256, "opset": opset},
        "export_parity": parity,
        "metrics": metrics,
        "training": {**training, **spacing_note, "config": trained.model_dump(mode="json"),
                     "git_commit": checkpoint_meta.get("git_commit"),
                     "dataset_fingerprint": checkpoint_meta.get("dataset_fingerprint"),
                     "epoch": checkpoint_meta.get("epoch"),
                     "validation_during_training": checkpoint_meta.get("validation")},
        "versions": checkpoint_meta.get("versions", {}),
    }
    if rescoring is not None:
        card["rescoring"] = rescoring
    return card
