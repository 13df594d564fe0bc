"""A released detector: ``models/<name>/<version>/model.onnx`` plus its card ``model.json``.

Serving reads everything it needs from the card (preprocessing, anchors, decoding, classes,
operating points) and refuses a model whose card is missing, incomplete or inconsistent with
the ONNX graph, with a :class:`ModelError` saying what is wrong.

An optional ``tomosynthesis`` section holds operating points for DBT volumes, fitted on DBT
validation data (``galacto tomo-points``): the slab settings they were fitted with and, per
point, the threshold on a volume candidate's detector score with the false positives per
volume and sensitivity measured there (:class:`TomoCard`). Cards without it still load.
The section may name a second network that volumes run instead of the 2D one
(:mod:`serving.pipeline.tomo_network`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import onnxruntime as ort

from serving.pipeline.postprocess import FLIP_AXES, AnchorConfig, DecodeConfig, unflip_outputs
from serving.pipeline.preprocess import PreprocessConfig
from serving.pipeline.rescore import RescoreModel
from serving.pipeline.tomo_network import TomoNetworkSpec, parse_network

if TYPE_CHECKING:
    from serving.pipeline.detect_volume import TomoSettings

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


#: The card's section of tomosynthesis operating points (optional).
TOMO_SECTION: Final = "tomosynthesis"
#: How a volume's frames may be combined into one detector input (``TomoSettings.slab_mode``).
TOMO_SLAB_MODES: Final = ("mean", "max")


@dataclass(frozen=True)
class TomoOperatingPoint:
    """A named score threshold for tomosynthesis volumes, applied to a volume candidate's
    detector score (its highest slab score), with what it gave on DBT validation data.

    Attributes:
        name: e.g. ``"balanced"``.
        score_threshold: findings have ``score >= score_threshold``; 1.01 when no threshold
            met the target (the point reports nothing, ``note`` says why).
        fp_per_volume: false positives per volume (one DBT view) at the threshold.
        sensitivity: share of lesions found there (frame rule), None when unknown.
        target_fp_per_volume: the false-positive rate the threshold was chosen for.
        note: why the target was unreachable or not reached, else None.
    """

    name: str
    score_threshold: float
    fp_per_volume: float | None
    sensitivity: float | None
    target_fp_per_volume: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class TomoCard:
    """The card's ``tomosynthesis`` section: how volumes were run when the points were
    fitted (``slab`` frames per detector input, every ``stride``-th frame, ``slab_mode``,
    and ``spacing_mm``, the input pixel spacing when it is not the 2D one),
    the points, and the validation data's summary (``validation``: ``data``, ``volumes``,
    ``lesions``, ``cpm``, ``sensitivity_at_1_fp_per_volume``, ...). ``rescoring``: the
    two-view rescoring of volume candidates the points apply to
    (:mod:`serving.pipeline.volume_rescore`), fitted on the same volumes; None: the points
    apply to the detector's scores. ``network``: the network volumes run when it is not the
    2D one (:mod:`serving.pipeline.tomo_network`), else None."""

    slab: int
    stride: int
    slab_mode: Literal["mean", "max"]
    operating_points: dict[str, TomoOperatingPoint]
    validation: dict[str, Any]
    spacing_mm: float | None = None
    rescoring: RescoreModel | None = None
    network: TomoNetworkSpec | None = None


@dataclass
class DetectorModel:
    """A loaded ONNX detector and its validated card.

    ``run(array)`` takes one ``(H, W)`` float32 preprocessed image (H, W multiples of
    ``preprocess.size_divisible``) and returns per-level classification logits
    ``(1, A*K, h, w)`` and box regressions ``(1, A*4, h, w)``.

    ``operating_points`` are the card's, or a site calibration's
    (:mod:`serving.pipeline.calibration`); ``operating_points_source`` says which, as
    responses state it: ``"model card"`` or ``"site calibration <file>, <date>"``.
    ``tomo`` is the card's ``tomosynthesis`` section (None without one): operating points
    for DBT volumes (a site calibration does not change them). ``tomo_session`` is the
    session of the section's own network (``tomo.network``), None when volumes run the 2D
    one; :meth:`for_volumes` switches to it.
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
    tomo: TomoCard | None = None
    tomo_session: ort.InferenceSession | None = None

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

    def single_pass(self) -> DetectorModel:
        """This model without the card's test-time flips: one network pass per input. What
        tomosynthesis volumes run (a slab already averages frames, and a volume has tens of
        inputs, so a flip would double its time); the same object when the card has none."""
        if not self.decode.test_time_flips:
            return self
        return replace(self, decode=replace(self.decode, test_time_flips=()))

    @property
    def tomo_network(self) -> TomoNetworkSpec | None:
        """The network volumes run when it is not the 2D one (``tomosynthesis.network``)."""
        return None if self.tomo is None else self.tomo.network

    def for_volumes(self, spacing_mm: float | None = None) -> DetectorModel:
        """This model as tomosynthesis volumes run it: the card's volume network with its
        preprocessing and decoding when the card names one (:attr:`tomo_network`), else the 2D
        network; :meth:`single_pass`; resampling to ``spacing_mm`` (None: the card's
        ``tomosynthesis.spacing_mm``, else the network's ``preprocess.spacing_mm``). The same
        object when nothing changes."""
        net = self.tomo_network
        base = self
        if net is not None and self.tomo_session is not None:
            base = replace(self, session=self.tomo_session, preprocess=net.preprocess,
                           decode=net.decode, tomo_session=None)
        model = base.single_pass()
        spacing = spacing_mm if spacing_mm is not None else (
            None if self.tomo is None else self.tomo.spacing_mm)
        if spacing is None or spacing == model.preprocess.spacing_mm:
            return model
        return replace(model, preprocess=replace(model.preprocess, spacing_mm=float(spacing)))

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

    def tomo_operating_point(self, name: str | None) -> TomoOperatingPoint | None:
        """The card's tomosynthesis operating point ``name`` (the card's default point when
        None); None when the card has no ``tomosynthesis`` section or no point of that name
        (e.g. a site calibration's own point)."""
        if self.tomo is None:
            return None
        return self.tomo.operating_points.get(name or self.default_operating_point)

    @property
    def tomo_rescoring(self) -> RescoreModel | None:
        """The card's two-view rescoring of tomosynthesis candidates
        (``tomosynthesis.rescoring``), None when the card has none."""
        return None if self.tomo is None else self.tomo.rescoring

    @property
    def tomo_settings(self) -> TomoSettings:
        """How volumes are run by default: the slab, stride and slab mode the card's
        tomosynthesis points were fitted with, else
        :class:`~serving.pipeline.detect_volume.TomoSettings`' defaults."""
        # detect_volume imports this module (through serving.pipeline.tomo): import late.
        from serving.pipeline.detect_volume import TomoSettings

        if self.tomo is None:
            return TomoSettings()
        return TomoSettings(slab=self.tomo.slab, stride=self.tomo.stride,
                            slab_mode=self.tomo.slab_mode, spacing_mm=self.tomo.spacing_mm)


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
                         f"{DEFAULT_MODEL_NAME}/0.9.0), got {text!r}")
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
    """Parse ``folder/model.json`` and check its required keys (and the optional
    ``tomosynthesis`` section, :func:`parse_tomo_section`)."""
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
    _tomo_card(card, card_path)
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


def _optional_number(value: Any, what: str, low: float = 0.0,
                     high: float = float("inf")) -> float | None:
    """``value`` as a float in ``[low, high]``, None for None.

    Raises:
        ValueError: not a number, or out of range (the message names ``what``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not low <= v <= high:
        raise ValueError(f"{what} must be in [{low:g}, {high:g}], got {value!r}")
    return v


def _tomo_point(name: str, op: Any) -> TomoOperatingPoint:
    """One point of the ``tomosynthesis`` section (see :class:`TomoOperatingPoint`).

    Raises:
        ValueError: a missing or malformed value.
    """
    if not isinstance(op, dict):
        raise ValueError(f"operating point {name!r} must be an object, got {op!r}")
    if "score_threshold" not in op:
        raise ValueError(f"operating point {name!r} has no score_threshold")
    threshold = _optional_number(op["score_threshold"], f"{name}.score_threshold", 0.0, 2.0)
    note = op.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"{name}.note must be text, got {note!r}")
    return TomoOperatingPoint(
        name=name, score_threshold=float(threshold or 0.0),
        fp_per_volume=_optional_number(op.get("fp_per_volume"), f"{name}.fp_per_volume"),
        sensitivity=_optional_number(op.get("sensitivity"), f"{name}.sensitivity", 0.0, 1.0),
        target_fp_per_volume=_optional_number(op.get("target_fp_per_volume"),
                                              f"{name}.target_fp_per_volume"),
        note=note)


def parse_tomo_section(section: Any) -> TomoCard:
    """Validate a card's ``tomosynthesis`` section::

        {"slab": 3, "stride": 3, "slab_mode": "mean",
         "operating_points": {"balanced": {"score_threshold": 0.8, "fp_per_volume": 0.94,
                                           "sensitivity": 0.62}, ...},
         "validation": {"data": "...", "volumes": 16, "lesions": 13, ...},
         "rescoring": {"features": [...], "weights": [...], "bias": -4.2, ...}}

    ``rescoring`` is optional (:meth:`serving.pipeline.rescore.RescoreModel.from_dict`).

    Raises:
        ValueError: what is missing or malformed, by key.
    """
    if not isinstance(section, dict):
        raise ValueError(f"must be an object, got {type(section).__name__}")
    for key in ("slab", "stride"):
        v = section.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be an int >= 1 (frames), got {v!r}")
    mode = section.get("slab_mode", "mean")
    if mode not in TOMO_SLAB_MODES:
        raise ValueError(f"slab_mode must be one of {list(TOMO_SLAB_MODES)}, got {mode!r}")
    points = section.get("operating_points")
    if not isinstance(points, dict) or not points:
        raise ValueError("operating_points must be a non-empty object of named points")
    validation = section.get("validation", {})
    if not isinstance(validation, dict):
        raise ValueError(f"validation must be an object, got {validation!r}")
    spacing = section.get("spacing_mm")
    if spacing is not None and (isinstance(spacing, bool) or not isinstance(spacing, int | float)
                                or not math.isfinite(spacing) or not 0.02 < spacing <= 2.0):
        raise ValueError(f"spacing_mm must be a number of mm in (0.02, 2], got {spacing!r}")
    rescoring = section.get("rescoring")
    tomo_rescoring = None if rescoring is None else RescoreModel.from_dict(rescoring)
    network = section.get("network")
    return TomoCard(slab=int(section["slab"]), stride=int(section["stride"]),
                    slab_mode="max" if mode == "max" else "mean",
                    operating_points={str(k): _tomo_point(str(k), v) for k, v in points.items()},
                    validation=dict(validation),
                    spacing_mm=None if spacing is None else float(spacing),
                    rescoring=tomo_rescoring,
                    network=None if network is None else parse_network(network))


def _tomo_card(card: dict[str, Any], where: Path) -> TomoCard | None:
    """The card's ``tomosynthesis`` section, None when absent.

    Raises:
        ModelError: the section is malformed (the message names the key).
    """
    if card.get(TOMO_SECTION) is None:
        return None
    try:
        return parse_tomo_section(card[TOMO_SECTION])
    except ValueError as exc:
        raise ModelError(f"{where}: {TOMO_SECTION}: {exc}") from None


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
    tomo = _tomo_card(card, folder / "model.json")
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
    model = DetectorModel(path=folder, card=card, session=session, preprocess=pre,
                          anchors=anchors, decode=decode, classes=classes,
                          operating_points=ops,
                          default_operating_point=str(card["default_operating_point"]),
                          input_name=in_name, cls_outputs=cls_names, box_outputs=box_names,
                          tomo=tomo)
    if tomo is None or tomo.network is None:
        return model
    return with_tomo_network(model, tomo.network, folder / tomo.network.file,
                             threads=threads, providers=providers)


def _same_static_dims(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two ONNX output shapes agree in rank and in every dimension both fix (a named
    or unknown dimension, e.g. ``height``, matches anything)."""
    if len(a) != len(b):
        return False
    return all(x == y for x, y in zip(a, b, strict=True)
               if isinstance(x, int) and isinstance(y, int))


def with_tomo_network(model: DetectorModel, network: TomoNetworkSpec, onnx_path: Path, *,
                      threads: int | None = None,
                      providers: Sequence[str] | None = None) -> DetectorModel:
    """``model`` with ``network`` as the network its volumes run (:meth:`DetectorModel.
    for_volumes`), loaded from ``onnx_path`` (the model folder's file, or, while the section
    is being fitted, the source model's).

    Raises:
        ModelError: ``model`` has no tomosynthesis section, the file is missing, its SHA-256
            is not ``network.sha256``, its graph's input and output names are not the card's,
            or its outputs' fixed dimensions (anchors x classes per level) are not the 2D
            network's (another architecture).
    """
    where = f"{TOMO_SECTION}.network {onnx_path}"
    if not onnx_path.is_file():
        raise ModelError(f"{where}: ONNX file missing")
    if sha256_file(onnx_path) != network.sha256:
        raise ModelError(f"{where}: sha256 differs from the card's {TOMO_SECTION}.network."
                         "sha256 (the file was changed or truncated)")
    session = _session(onnx_path, threads, providers)
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected = {o.name: o.shape for o in model.session.get_outputs()}
    if inputs != [model.input_name] or sorted(outputs) != sorted(expected):
        raise ModelError(f"{where}: graph inputs {inputs} and outputs {sorted(outputs)} are "
                         "not the card's (a volume network must have the 2D network's "
                         "architecture)")
    shapes = [f"{name} {outputs[name]} (2D network: {expected[name]})" for name in expected
              if not _same_static_dims(outputs[name], expected[name])]
    if shapes:
        raise ModelError(f"{where}: output shapes differ from the 2D network's: "
                         f"{'; '.join(shapes)} (another number of anchors or classes cannot be "
                         "decoded with this card)")
    if model.tomo is None:
        raise ModelError(f"{where}: the card has no {TOMO_SECTION} section")
    return replace(model, tomo=replace(model.tomo, network=network), tomo_session=session)
