"""Give a model a network of its own for tomosynthesis volumes: the ``network`` entry of the
card's ``tomosynthesis`` section (:mod:`serving.pipeline.tomo_network`), taken from another
exported model of the same architecture.

Why: weights that find more lesions in reconstructed DBT slabs may flag more air bubbles on
2D images (a finer input spacing makes a small bubble and a small filling defect look more
alike). A model can then run each kind of image on the network measured best for it, under
one name and version, with one card that states both.

``galacto tomo-points --network-from DIR`` and ``galacto export --dbt-network DIR`` use it:
:func:`network_section` checks the source and builds the entry, the fit of the section's
rescoring and points runs the volumes on that network, and :func:`install_network` copies the
file into the model folder when the section is written
(:func:`training.tomo_points.write_tomo_section`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.pipeline.model import DetectorModel, ModelError, load_model, read_card, sha256_file
from serving.pipeline.tomo_network import TOMO_NETWORK_FILE, TomoNetworkSpec, parse_network

#: Training facts of the source model copied into the entry's ``source``.
_SOURCE_TRAINING_KEYS = ("git_commit", "dataset_fingerprint", "epoch")


def load_source(source_dir: Path) -> DetectorModel:
    """The exported model in ``source_dir`` as a volume network's source (loaded, one thread).

    Raises:
        ValueError: it cannot be loaded, or its volumes run a network of their own (name the
            model that network came from instead).
    """
    try:
        source = load_model(source_dir, threads=1)
    except ModelError as exc:
        raise ValueError(f"network source {source_dir}: {exc}") from None
    if source.tomo_network is not None:
        raise ValueError(f"network source {source_dir}: its volumes run a network of their "
                         f"own (from {source.tomo_network.label}); name that model instead")
    return source


def source_onnx(source_dir: Path) -> Path:
    """The 2D network file of the model in ``source_dir`` (its card's ``onnx.file``, default
    ``model.onnx``), read from the card alone (no network is loaded).

    Raises:
        ModelError: the folder has no valid card.
    """
    return source_dir / str(read_card(source_dir)["onnx"].get("file", "model.onnx"))


def network_section(model: DetectorModel, source_dir: Path) -> tuple[dict[str, Any], Path]:
    """The ``tomosynthesis.network`` entry that makes ``model``'s volumes run the 2D network
    of the exported model in ``source_dir``, and the path of that network's ONNX file.

    The entry holds the source card's ``preprocess`` and ``decode`` sections, the file name
    it will have in ``model``'s folder (:data:`TOMO_NETWORK_FILE`), its SHA-256, and
    ``source``: the source model's name, version, ONNX SHA-256 and training facts.

    Raises:
        ValueError: the source cannot be loaded (:func:`load_source`), names a volume network
            of its own, is ``model``'s own 2D network (nothing to add), or has another
            architecture than ``model`` (input and output names, anchors, classes), so its
            outputs could not be decoded with this card.
    """
    source = load_source(source_dir)
    differs = [what for what, a, b in (
        ("input", source.input_name, model.input_name),
        ("outputs", source.cls_outputs + source.box_outputs,
         model.cls_outputs + model.box_outputs),
        ("anchors", source.anchors, model.anchors),
        ("classes", source.classes, model.classes)) if a != b]
    if differs:
        raise ValueError(f"network source {source_dir}: its {', '.join(differs)} differ from "
                         f"{model.name} {model.version}'s; a volume network must have the "
                         "same architecture and classes")
    onnx_path = source_onnx(source.path)
    sha = sha256_file(onnx_path)
    if sha == sha256_file(model.path / str(model.card["onnx"].get("file", "model.onnx"))):
        raise ValueError(f"network source {source_dir}: its network is {model.name} "
                         f"{model.version}'s 2D network already; volumes run it without a "
                         "network entry")
    training = source.card.get("training") or {}
    entry = {
        "file": TOMO_NETWORK_FILE,
        "sha256": sha,
        "preprocess": source.preprocess.to_dict(),
        "decode": source.decode.to_dict(),
        "source": {"name": source.name, "version": source.version, "sha256": sha,
                   **{k: training[k] for k in _SOURCE_TRAINING_KEYS if k in training}},
    }
    parse_network(entry)
    return entry, onnx_path


@dataclass(frozen=True)
class Installed:
    """A volume network copied into a model folder by :func:`install_network`, until the
    card that names it is known to load (:meth:`commit`) or not (:meth:`undo`)."""

    target: Path
    previous: Path | None
    copied: bool

    def commit(self) -> None:
        """Keep the copy; drop the file it replaced."""
        if self.previous is not None:
            self.previous.unlink(missing_ok=True)

    def undo(self) -> None:
        """Put back the file the copy replaced, or remove the copy when there was none."""
        if not self.copied:
            return
        if self.previous is not None:
            self.previous.replace(self.target)
        else:
            self.target.unlink(missing_ok=True)


def install_network(model_dir: Path, network: TomoNetworkSpec, onnx_path: Path) -> Installed:
    """Copy the volume network at ``onnx_path`` into ``model_dir`` as ``network.file``
    (atomically; nothing is copied when the same bytes are already there). A file it replaces
    is moved aside until :meth:`Installed.commit` or :meth:`Installed.undo`.

    Raises:
        ModelError: the copy's SHA-256 is not ``network.sha256`` (nothing is replaced).
    """
    target = model_dir / network.file
    if target.is_file() and sha256_file(target) == network.sha256:
        return Installed(target=target, previous=None, copied=False)
    tmp = model_dir / f".{network.file}.{os.getpid()}.tmp"
    shutil.copyfile(onnx_path, tmp)
    if sha256_file(tmp) != network.sha256:
        tmp.unlink()
        raise ModelError(f"{onnx_path}: its sha256 is not the network entry's "
                         f"{network.sha256[:12]}… (the file changed)")
    previous = None
    if target.exists():
        previous = model_dir / f".{network.file}.{os.getpid()}.previous"
        target.replace(previous)
    tmp.replace(target)
    return Installed(target=target, previous=previous, copied=True)
