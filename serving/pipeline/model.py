"""A released detector: ``models/<name>/<version>/model.onnx`` plus its card ``model.json``.

Serving reads everything it needs from the card (preprocessing, anchors, decoding, classes,
operating points) and refuses a model whose card is missing, incomplete or inconsistent with
the ONNX graph, with a :class:`ModelError` saying what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from serving.pipeline.postprocess import FLIP_AXES, AnchorConfig, DecodeConfig, unflip_outputs
from serving.pipeline.preprocess import PreprocessConfig

CARD_SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "name", "version", "intended_use", "input", "outputs",
                 "preprocess", "anchors", "decode", "classes", "operating_points",
                 "default_operating_point", "onnx")


class ModelError(Exception):
    """The model folder cannot be served; the message says which file/key and why."""


@dataclass(frozen=True)
class OperatingPoint:
    """A named score threshold with the FP rate and sensitivity it had on validation data."""

    name: str
    score_threshold: float
    max_fp_per_image: float
    sensitivity: float | None
    fp_per_image: float | None


@dataclass
class DetectorModel:
    """A loaded ONNX detector and its validated card.

    ``run(array)`` takes one ``(H, W)`` float32 preprocessed image (H, W multiples of
    ``preprocess.size_divisible``) and returns per-level classification logits
    ``(1, A*K, h, w)`` and box regressions ``(1, A*4, h, w)``.

    ``operating_points`` are the card's, or a site calibration's
    (:mod:`serving.pipeline.calibration`); ``operating_points_source`` says which, as
    responses state it: ``"model card"`` or ``"site calibration <file>, <date>"``.
    """

    path: Path
    card: dict[str, Any]
    session: ort.InferenceSession
    preprocess: PreprocessConfig
    anchors: AnchorConfig
    decode: DecodeConfig
    classes: list[str]
    operating_points: dict[str, OperatingPoint]
    default_operating_point: str
    input_name: str
    cls_outputs: list[str]
    box_outputs: list[str]
    operating_points_source: str = "model card"

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    def run(self, array: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Network outputs for one image ``(H, W)`` float32: the plain pass, averaged with
        the card's test-time flips (``decode.test_time_flips``) mapped back, if any."""
        cls, reg = self.run_once(array)
        flips = self.decode.test_time_flips
        if not flips:
            return cls, reg
        cls_sum = [c.astype(np.float32) for c in cls]
        reg_sum = [r.astype(np.float32) for r in reg]
        shape = (int(array.shape[0]), int(array.shape[1]))
        for name in flips:
            axes = FLIP_AXES[name]
            c_f, r_f = self.run_once(np.flip(array, axis=axes))
            c_b, r_b = unflip_outputs(c_f, r_f, axes, shape, self.anchors.num_anchors)
            cls_sum = [a + b for a, b in zip(cls_sum, c_b, strict=True)]
            reg_sum = [a + b for a, b in zip(reg_sum, r_b, strict=True)]
        n = np.float32(1 + len(flips))
        return [c / n for c in cls_sum], [r / n for r in reg_sum]

    def run_once(self, array: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One plain network pass for one image ``(H, W)`` float32."""
        x = np.ascontiguousarray(array, dtype=np.float32)[None, None]
        outs = self.session.run(self.cls_outputs + self.box_outputs, {self.input_name: x})
        n = len(self.cls_outputs)
        return [np.asarray(o) for o in outs[:n]], [np.asarray(o) for o in outs[n:]]

    def operating_point(self, name: str | None) -> OperatingPoint:
        """The named operating point (the card's default when ``name`` is None)."""
        key = name or self.default_operating_point
        if key not in self.operating_points:
            raise ModelError(f"unknown operating point {key!r}; this model has "
                             f"{sorted(self.operating_points)}")
        return self.operating_points[key]


DEFAULT_MODEL_NAME = "galacto-small"
#: File in a models root naming its default model as ``<name>/<version>``.
DEFAULT_MARKER = "DEFAULT"


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in v.split("."))


def _model_roots() -> tuple[Path, ...]:
    """Where models are looked for: ``./models``, then ``models/`` beside the package."""
    return (Path.cwd() / "models", Path(__file__).resolve().parents[2] / "models")


def read_default_marker(root: Path) -> str | None:
    """The ``<name>/<version>`` that ``root/DEFAULT`` names, None when there is no such file.

    Raises:
        ModelError: the file is not one ``<name>/<version>`` line.
    """
    marker = root / DEFAULT_MARKER
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    parts = text.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ModelError(f"{marker}: expected one line <name>/<version> (e.g. "
                         f"{DEFAULT_MODEL_NAME}/0.4.0), got {text!r}")
    return text


def _marked_default(root: Path) -> Path | None:
    """The model folder ``root/DEFAULT`` names (None without the file).

    Raises:
        ModelError: a malformed marker, or one naming a folder without ``model.json``.
    """
    named = read_default_marker(root)
    if named is None:
        return None
    folder = root / named
    if not (folder / "model.json").is_file():
        raise ModelError(f"{root / DEFAULT_MARKER} names {named}, but {folder} has no "
                         "model.json")
    return folder


def default_model_dir() -> Path:
    """The model to serve when none is named.

    In order: ``$GALACTO_MODEL``; the model named by ``models/DEFAULT`` (``<name>/<version>``)
    in the working directory, else beside the package; where neither root has a ``DEFAULT``
    file (older layouts), the highest version of ``models/galacto-small/``. ``galacto export``
    writes ``DEFAULT`` only with ``--make-default``.
    """
    env = os.environ.get("GALACTO_MODEL")
    if env:
        return Path(env)
    roots = _model_roots()
    for root in roots:
        marked = _marked_default(root)
        if marked is not None:
            return marked
    for root in roots:
        base = root / DEFAULT_MODEL_NAME
        versions = [p for p in base.glob("*") if (p / "model.json").is_file()]
        if versions:
            return max(versions, key=lambda p: _version_key(p.name))
    raise ModelError("no model found: set GALACTO_MODEL or pass --model (looked for "
                     f"models/{DEFAULT_MARKER} and models/{DEFAULT_MODEL_NAME}/<version>/"
                     "model.json)")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_card(folder: Path) -> dict[str, Any]:
    """Parse ``folder/model.json`` and check its required keys."""
    card_path = folder / "model.json"
    if not card_path.is_file():
        raise ModelError(f"{card_path}: model card missing (every model folder needs "
                         f"model.json beside model.onnx)")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{card_path}: not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"{card_path}: missing key(s) {missing}")
    if card["schema_version"] != CARD_SCHEMA_VERSION:
        raise ModelError(f"{card_path}: schema_version {card['schema_version']!r}, this "
                         f"galacto reads {CARD_SCHEMA_VERSION}")
    return card


def _operating_points(card: dict[str, Any], where: Path) -> dict[str, OperatingPoint]:
    ops = {}
    for name, op in card["operating_points"].items():
        try:
            ops[name] = OperatingPoint(name=name, score_threshold=float(op["score_threshold"]),
                                       max_fp_per_image=float(op["max_fp_per_image"]),
                                       sensitivity=op.get("sensitivity"),
                                       fp_per_image=op.get("fp_per_image"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: operating point {name!r} is malformed ({exc})"
                             ) from None
    if card["default_operating_point"] not in ops:
        raise ModelError(f"{where}: default_operating_point "
                         f"{card['default_operating_point']!r} is not one of {sorted(ops)}")
    return ops


#: ONNX Runtime execution providers by the short names GALACTO_ORT_PROVIDERS takes.
PROVIDER_NAMES: Final[dict[str, str]] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def resolve_providers(names: Sequence[str] | None) -> list[str]:
    """ONNX Runtime provider names for ``names`` (short names of :data:`PROVIDER_NAMES` or
    full provider names), in order of preference, with the CPU provider always last as the
    fallback for operators another provider lacks. ``None`` or empty: CPU only.

    Raises:
        ModelError: a name is unknown, or its provider is not in the installed ONNX Runtime
            (e.g. ``cuda`` without the ``onnxruntime-gpu`` package): the message lists the
            available ones.
    """
    available = ort.get_available_providers()
    wanted: list[str] = []
    for name in names or []:
        full = PROVIDER_NAMES.get(name.strip().lower(), name.strip())
        if full not in PROVIDER_NAMES.values() and full not in available:
            raise ModelError(f"unknown ONNX Runtime provider {name!r}; expected one of "
                             f"{', '.join(PROVIDER_NAMES)} (or a full provider name)")
        if full not in available:
            raise ModelError(f"ONNX Runtime provider {full} is not available in this "
                             f"installation (available: {', '.join(available)}); for CUDA "
                             "or TensorRT install the onnxruntime-gpu package")
        if full not in wanted:
            wanted.append(full)
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


def _session(onnx_path: Path, threads: int | None,
             providers: Sequence[str] | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    opts.inter_op_num_threads = 1
    # Every image has its own crop size, so input shapes vary from call to call; ORT's CPU
    # arena keeps growing with new shapes under load. Without it memory stays flat.
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(onnx_path), sess_options=opts,
                                providers=resolve_providers(providers))


def load_model(folder: str | Path, *, threads: int | None = None,
               providers: Sequence[str] | None = None) -> DetectorModel:
    """Load and validate ``folder`` (``model.onnx`` + ``model.json``), on the ONNX Runtime
    ``providers`` (see :func:`resolve_providers`; default CPU) with ``threads`` intra-op
    threads (default: cores, at most 4).

    Raises:
        ModelError: missing files, card keys or values, a checksum mismatch, or input and
            output names/shapes that do not match the card.
    """
    folder = Path(folder)
    card = read_card(folder)
    onnx_path = folder / str(card["onnx"].get("file", "model.onnx"))
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: ONNX file missing")
    expected = card["onnx"].get("sha256")
    if expected and sha256_file(onnx_path) != expected:
        raise ModelError(f"{onnx_path}: sha256 differs from the card's onnx.sha256 (the "
                         f"model file was changed or truncated)")
    try:
        pre = PreprocessConfig.from_dict(card["preprocess"])
        anchors = AnchorConfig.from_dict(card["anchors"])
        decode = DecodeConfig.from_dict(card["decode"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{folder / 'model.json'}: {exc}") from None
    session = _session(onnx_path, threads, providers)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    in_name = card["input"].get("name")
    cls_names = list(card["outputs"].get("classification", []))
    box_names = list(card["outputs"].get("box_regression", []))
    if inputs != [in_name]:
        raise ModelError(f"{folder}: card input {in_name!r} but the graph has inputs {inputs}")
    if sorted(cls_names + box_names) != sorted(outputs) or len(cls_names) != len(box_names):
        raise ModelError(f"{folder}: card outputs {cls_names + box_names} do not match the "
                         f"graph outputs {outputs}")
    if len(cls_names) != len(anchors.feature_map_scales):
        raise ModelError(f"{folder}: {len(cls_names)} output levels but "
                         f"{len(anchors.feature_map_scales)} anchor levels in the card")
    classes = [str(c) for c in card["classes"]]
    ops = _operating_points(card, folder / "model.json")
    return DetectorModel(path=folder, card=card, session=session, preprocess=pre,
                         anchors=anchors, decode=decode, classes=classes,
                         operating_points=ops,
                         default_operating_point=str(card["default_operating_point"]),
                         input_name=in_name, cls_outputs=cls_names, box_outputs=box_names)
