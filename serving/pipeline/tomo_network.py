"""The network tomosynthesis volumes run, when it is not the card's 2D network.

A model card may name a second ONNX network for DBT volumes in its ``tomosynthesis`` section::

    "network": {"file": "tomosynthesis.onnx", "sha256": "<hex>",
                "preprocess": {...}, "decode": {...},
                "source": {"name": "galacto-small", "version": "0.8.0", "sha256": "<hex>", ...}}

It has the card's architecture (the same input and output names, anchors and classes, checked
when the model loads) but other weights: e.g. weights fine-tuned at another pixel spacing that
find more lesions in reconstructed slabs, while 2D images keep the network whose bubble
rejection was measured on them. ``preprocess`` and ``decode`` are the source model's card
sections (:class:`~serving.pipeline.preprocess.PreprocessConfig`,
:class:`~serving.pipeline.postprocess.DecodeConfig`); the section's own ``spacing_mm`` still
sets the volumes' input spacing. ``source`` records which exported model the file came from.
The section's operating points and rescoring are fitted on this network's scores
(``galacto tomo-points --network-from``, ``galacto export --dbt-network``).

The file is loaded and checked by :func:`serving.pipeline.model.load_model`; this module only
parses the section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from serving.pipeline.postprocess import DecodeConfig
from serving.pipeline.preprocess import PreprocessConfig

#: The file name a volume network is stored under in its model folder.
TOMO_NETWORK_FILE: Final = "tomosynthesis.onnx"
#: A plain file name in the model folder (no directory part, no leading dot).
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.onnx")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TomoNetworkSpec:
    """A parsed ``tomosynthesis.network`` section.

    Attributes:
        file: the ONNX file's name in the model folder.
        sha256: its hex SHA-256 (checked when the model loads).
        preprocess: how volumes' slabs become its input (the section's ``spacing_mm``
            overrides the spacing).
        decode: how its outputs become boxes (test-time flips are never applied to volumes).
        source: the exported model the network came from (``name``, ``version``,
            ``sha256``, ...), as written.
        raw: the section as written (kept when the points are refitted).
    """

    file: str
    sha256: str
    preprocess: PreprocessConfig
    decode: DecodeConfig
    source: dict[str, Any]
    raw: dict[str, Any]

    @property
    def label(self) -> str:
        """``"<name> <version>"`` of the source model, as outputs state it."""
        return f"{self.source.get('name', '?')} {self.source.get('version', '?')}"


def parse_network(section: Any) -> TomoNetworkSpec:
    """Validate a ``tomosynthesis.network`` section (see the module docstring).

    Raises:
        ValueError: naming the key (``network.file``, ``network.sha256``, ...) that is missing
            or malformed: a file name with a directory part, a SHA-256 that is not 64 hex
            digits, a preprocess or decode section the configs refuse, a source that is not
            an object with the source model's ``name`` and ``version``.
    """
    if not isinstance(section, dict):
        raise ValueError(f"network must be an object, got {type(section).__name__}")
    file = section.get("file")
    if not isinstance(file, str) or not _FILE_NAME.fullmatch(file):
        raise ValueError("network.file must be a plain .onnx file name in the model folder, "
                         f"got {file!r}")
    sha = section.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ValueError(f"network.sha256 must be 64 lowercase hex digits, got {sha!r}")
    configs: dict[str, Any] = {}
    for key, cls in (("preprocess", PreprocessConfig), ("decode", DecodeConfig)):
        value = section.get(key)
        if not isinstance(value, dict):
            raise ValueError(f"network.{key} must be an object, got {value!r}")
        try:
            configs[key] = cls.from_dict(value)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"network.{key}: {exc}") from None
    source = section.get("source")
    if not isinstance(source, dict) or not all(
            isinstance(source.get(k), str) and source.get(k) for k in ("name", "version")):
        raise ValueError("network.source must be an object naming the model the network came "
                         f"from (name, version), got {source!r}")
    return TomoNetworkSpec(file=file, sha256=sha, preprocess=configs["preprocess"],
                           decode=configs["decode"], source=dict(source), raw=dict(section))
