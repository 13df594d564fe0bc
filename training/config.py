"""Training configuration: one YAML file per experiment, validated into pydantic models.

The resolved configuration is saved inside every checkpoint and model card. Override any value
from the command line with ``--set section.key=value`` (the value is parsed as YAML, so
``--set optim.lr=0.001`` and ``--set model.layers=[1,1,1,1]`` work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.pipeline.detect_volume import DEFAULT_SLAB
from serving.pipeline.preprocess import PreprocessConfig

_PRE = PreprocessConfig()


#: Class 0 of every model: the lesion. Other classes name mimic kinds of the simulator's truth
#: (``air_bubble``, ``cyst``, ``extravasation``), learnt so that they are told apart.
LESION_CLASS = "filling_defect"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the data are. Paths are relative to the config file's working directory."""

    train: str | list[str] = Field(
        description="dataset folder(s) whose 'training' split is used; several folders (e.g. "
                    "a small real set and a synthetic one, for fine-tuning) are pooled, so "
                    "each contributes patches in proportion to its number of images")
    val: str | list[str] = Field(
        description="dataset folder(s) whose 'validation' split is used; several folders "
                    "(e.g. the training style and an unseen style) are pooled")
    cache: str = Field(default="runs/cache", description="folder for preprocessed arrays")
    val_max_images: int = Field(default=120, ge=1,
                                description="cap on validation images per folder")
    dbt_frames_per_volume: int = Field(
        default=4, ge=0,
        description="tomosynthesis volumes in a data folder: frames drawn per volume as 2D "
                    "training images (half with a lesion in focus, half clean; see "
                    "training.data_dbt), so a volume weighs like this many 2D images; 0 "
                    "leaves volumes out")
    dbt_slab: int = Field(
        default=DEFAULT_SLAB, ge=1,
        description="frames averaged around each drawn tomosynthesis frame (their pixel-wise "
                    "mean: the detector input serving builds, GALACTO_TOMO_SLAB, default 3); "
                    "1 takes the frame alone")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.train_dirs or not self.val_dirs:
            raise ValueError("data.train and data.val need at least one folder each")
        return self

    @property
    def train_dirs(self) -> list[str]:
        """The training folders as a list (one or more)."""
        return [self.train] if isinstance(self.train, str) else list(self.train)

    @property
    def val_dirs(self) -> list[str]:
        """The validation folders as a list (one or more)."""
        return [self.val] if isinstance(self.val, str) else list(self.val)


class PreprocessSection(_Strict):
    """Mirror of ``serving.pipeline.preprocess.PreprocessConfig`` (model spacing etc.); the
    defaults are serving's, so they are stated once."""

    spacing_mm: float = Field(default=_PRE.spacing_mm, gt=0.02, le=2.0)
    crop_margin_mm: float = Field(default=_PRE.crop_margin_mm, ge=0.0)
    low_percentile: float = Field(default=_PRE.low_percentile, ge=0.0, lt=50.0)
    high_percentile: float = Field(default=_PRE.high_percentile, gt=50.0, le=100.0)
    size_divisible: int = Field(default=_PRE.size_divisible, ge=1)


class ModelConfig(_Strict):
    """RetinaNet with a MONAI ResNet + FPN backbone (no torchvision).

    ``layers``/``widths``: blocks and channels of the four ResNet stages (strides 4, 8, 16,
    32 px with the stem's stride-2 conv and max-pool). ``returned_layers``: stages fed to the
    FPN (1-based). Anchors are ``base_anchor_shapes`` (pixels at the first returned level's
    input scale) times ``feature_map_scales`` per level.
    """

    block: Literal["basic", "bottleneck"] = "basic"
    layers: list[int] = Field(default_factory=lambda: [1, 1, 1, 1])
    widths: list[int] = Field(default_factory=lambda: [16, 32, 64, 128])
    returned_layers: list[int] = Field(default_factory=lambda: [1, 2, 3])
    fpn_channels: int = Field(default=32, ge=8)
    base_anchor_shapes: list[list[float]] = Field(
        default_factory=lambda: [[8.0, 8.0], [12.0, 12.0], [18.0, 18.0]])
    num_classes: int = 1
    class_names: list[str] = Field(default_factory=lambda: ["filling_defect"])

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if len(self.layers) != 4 or len(self.widths) != 4:
            raise ValueError(f"model.layers and model.widths need 4 values, got "
                             f"{self.layers} and {self.widths}")
        if not self.returned_layers or any(r not in (1, 2, 3, 4) for r in self.returned_layers):
            raise ValueError(f"model.returned_layers must be within 1..4, got "
                             f"{self.returned_layers}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"model.class_names has {len(self.class_names)} names for "
                             f"num_classes={self.num_classes}")
        if self.class_names[0] != LESION_CLASS or len(set(self.class_names)) != len(
                self.class_names):
            raise ValueError(f"model.class_names must start with {LESION_CLASS!r} and be "
                             f"distinct (the others name mimic kinds, e.g. air_bubble), got "
                             f"{self.class_names}")
        return self

    @property
    def feature_map_scales(self) -> list[int]:
        """Scale of each returned level relative to the first one (1, 2, 4, ...)."""
        first = self.returned_layers[0]
        return [2 ** (r - first) for r in self.returned_layers]


class MatcherConfig(_Strict):
    """Anchor matching and sampling for the loss."""

    kind: Literal["atss", "iou"] = "atss"
    num_candidates: int = Field(default=4, ge=1)
    center_in_gt: bool = False
    fg_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    bg_iou: float = Field(default=0.4, ge=0.0, le=1.0)
    batch_size_per_image: int = Field(default=64, ge=1)
    positive_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    min_neg: int = Field(default=16, ge=0)
    pool_size: float = Field(default=20.0, ge=1.0)
    box_loss: Literal["giou", "smooth_l1"] = "giou"
    focal_gamma: float = Field(default=2.0, ge=0.0)


class OptimConfig(_Strict):
    """Optimizer, schedule and batching (patch training, full-image validation)."""

    epochs: int = Field(default=20, ge=1)
    steps_per_epoch: int = Field(default=100, ge=1)
    batch_size: int = Field(default=8, ge=1)
    patch_size: int = Field(default=256, ge=32)
    positive_patch_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    mimic_patch_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of patches centred on a labelled mimic (air bubble, cyst, "
                    "extravasation): hard negatives; the rest are centred at random")
    ema_decay: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="exponential moving average of the weights, updated every step (0: off; "
                    "0.998 averages over about 500 steps); validation, best.pt and export use "
                    "the average")
    init_from: str | None = Field(
        default=None, description="checkpoint (RUN_DIR/best.pt) or exported model folder "
                                  "(models/<name>/<version>) whose weights start this run, "
                                  "for fine-tuning; its architecture must match")
    freeze: list[str] = Field(
        default_factory=list,
        description="parts of the network kept as they are (fine-tuning): 'backbone' (the "
                    "ResNet trunk: stem and stages), 'stem', 'stage1' .. 'stage4', 'fpn', "
                    "or a parameter-name prefix such as 'classification_head.conv'; their "
                    "batch-norm statistics stay fixed too")
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=10.0, gt=0.0)
    amp: bool = Field(default=True, description="mixed precision (CUDA only)")
    num_workers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        total = self.positive_patch_fraction + self.mimic_patch_fraction
        if total > 1.0:
            raise ValueError(f"optim.positive_patch_fraction + optim.mimic_patch_fraction must "
                             f"be at most 1, got {total:g}")
        return self


class AugmentConfig(_Strict):
    """Box-aware spatial augmentations (MONAI) and intensity augmentations."""

    flip_p: float = 0.5
    rot90_p: float = 0.5
    zoom_p: float = 0.3
    zoom_range: tuple[float, float] = (0.8, 1.25)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.75, 1.3)
    shift_range: float = 0.15
    noise_std: float = 0.04
    blur_p: float = 0.2


class DecodeSection(_Strict):
    """Inference post-processing (also written into the model card)."""

    score_thresh: float = 0.05
    topk_candidates_per_level: int = 1000
    nms_thresh: float = 0.22
    detections_per_img: int = 100
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    test_time_flips: list[Literal["rows", "cols", "rows+cols"]] = Field(
        default_factory=list,
        description="serving: extra passes on flipped inputs, averaged with the plain pass "
                    "(validation during training uses the plain pass only)")
    nested_ios_thresh: float = Field(
        default=0.6, gt=0.0, le=1.0,
        description="a box covering this share of a smaller or larger better box of the same "
                    "class (intersection over the smaller box) is the same object: dropped")


class TrainConfig(_Strict):
    """A whole experiment."""

    name: str = "galacto-small"
    seed: int = 0
    output: str = "runs"
    data: DataConfig
    preprocess: PreprocessSection = Field(default_factory=PreprocessSection)
    model: ModelConfig = Field(default_factory=ModelConfig)
    matcher: MatcherConfig = Field(default_factory=MatcherConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    decode: DecodeSection = Field(default_factory=DecodeSection)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {dotted}: {k!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def load_config(path: Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, and validate.

    Raises:
        ValueError: unreadable YAML, a malformed override, or a value that fails
            validation (the message names the key).
    """
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a YAML mapping, got {type(loaded).__name__}")
        tree.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    try:
        return TrainConfig.model_validate(tree)
    except Exception as exc:  # pydantic.ValidationError: keep its field-by-field message
        raise ValueError(f"invalid training config: {exc}") from None
