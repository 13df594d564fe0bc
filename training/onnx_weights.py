"""The PyTorch network of an exported model (``models/<name>/<version>/``), for fine-tuning.

A model folder has no checkpoint, only ``model.onnx`` and its card. The card holds the training
config (so the architecture), and the ONNX graph holds every weight: the FPN's and the heads'
under their PyTorch names (``net.<name>``), the heads' group-norm scales and shifts as
``(C, 1, 1)`` constants of the ``Mul``/``Add`` nodes named after their module, and the ResNet
trunk's convolutions with their batch norms folded in (``W * g / s``, ``b - m * g / s``). The
folded convolutions are loaded as they are and each batch norm becomes the identity plus that
shift (mean 0, variance ``1 - eps``, scale 1), which computes exactly what the graph computes in
eval mode; training keeps those batch norms in eval mode (:func:`training.train.
held_norm_prefixes`), as detection fine-tuning usually does with a pretrained backbone.

The result is checked against ONNX Runtime on a random image before it is returned.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from training.config import TrainConfig
from training.model import FlatOutputs, build_network

if TYPE_CHECKING:
    from onnx import GraphProto

#: Largest difference from ONNX Runtime accepted for the rebuilt network.
IMPORT_TOLERANCE = 1e-3


class WeightImportError(ValueError):
    """The model folder's weights could not be mapped onto the PyTorch network."""


def _module_name(node_name: str, modules: dict[str, nn.Module]) -> str | None:
    """The PyTorch module of an ONNX node (``/net/feature_extractor/layer1/layer1.0/conv1/
    Conv`` -> ``feature_extractor.trunk.layer1.0.conv1``), None when there is none."""
    scope = node_name.split("/")[2:-1]  # drop the leading '', 'net' and the op
    parts = [s for i, s in enumerate(scope)
             if not (i + 1 < len(scope) and scope[i + 1].startswith(s + "."))]
    name = ".".join(parts)
    for candidate in (name, name.replace("feature_extractor.", "feature_extractor.trunk.", 1)):
        if candidate in modules:
            return candidate
    return None


def _norm_of(conv: str) -> str:
    """The batch norm that follows trunk convolution ``conv`` (``conv2`` -> ``bn2``,
    ``downsample.0`` -> ``downsample.1``)."""
    if conv.endswith("downsample.0"):
        return conv[: -len("0")] + "1"
    return re.sub(r"conv(\d+)$", r"bn\1", conv)


def _load_folded(state: dict[str, Tensor], conv: str, weight: np.ndarray, bias: np.ndarray,
                 eps: float) -> list[str]:
    """Put a folded convolution into ``state``: the weight as it is, its batch norm as the
    identity plus ``bias`` (the convolution's own bias, if any, at zero). Returns the keys
    set."""
    bn = _norm_of(conv)
    c = bias.shape[0]
    state[f"{conv}.weight"] = torch.from_numpy(weight.copy())
    state[f"{bn}.weight"] = torch.ones(c)
    state[f"{bn}.bias"] = torch.from_numpy(bias.copy())
    state[f"{bn}.running_mean"] = torch.zeros(c)
    state[f"{bn}.running_var"] = torch.full((c,), 1.0 - eps)
    keys = [f"{conv}.weight", f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean",
            f"{bn}.running_var"]
    if f"{conv}.bias" in state:  # a convolution with its own bias: folded into ``bias`` too
        state[f"{conv}.bias"] = torch.zeros(c)
        keys.append(f"{conv}.bias")
    return keys


def _graph_state(graph: GraphProto, net: nn.Module) -> dict[str, Tensor]:
    """``net``'s state dict with every weight taken from the ONNX ``graph``.

    Raises:
        WeightImportError: a weight of ``net`` has no counterpart in the graph.
    """
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    modules = dict(net.named_modules())
    state = dict(net.state_dict())
    done = {key[4:] for key in inits if key.startswith("net.") and key[4:] in state}
    for key in done:
        state[key] = torch.from_numpy(inits["net." + key].copy())
    for node in graph.node:
        params = [i for i in node.input if i in inits and not i.startswith("net.")]
        module = _module_name(node.name, modules) if params else None
        if module is None:
            continue
        if node.op_type == "Conv" and isinstance(modules[module], nn.Conv2d):
            eps = float(getattr(modules[_norm_of(module)], "eps", 1e-5))
            done.update(_load_folded(state, module, inits[params[0]], inits[params[1]], eps))
        elif node.op_type in ("Mul", "Add") and isinstance(modules[module], nn.GroupNorm):
            key = f"{module}.{'weight' if node.op_type == 'Mul' else 'bias'}"
            state[key] = torch.from_numpy(inits[params[0]].reshape(-1).copy())
            done.add(key)
    missing = [k for k in state if k not in done and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightImportError(f"no weights in the ONNX graph for {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return state


def _check_against_onnx(net: nn.Module, onnx_path: Path) -> float:
    """Largest difference between ``net`` and ONNX Runtime on a random 256 x 256 image.

    Raises:
        WeightImportError: beyond :data:`IMPORT_TOLERANCE`.
    """
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(0.3, 0.5, (1, 1, 256, 256)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ours = [t.numpy() for t in FlatOutputs(net).eval()(torch.from_numpy(x))]  # type: ignore[arg-type]
    theirs = sess.run(None, {"image": x})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    if diff > IMPORT_TOLERANCE:
        raise WeightImportError(f"{onnx_path}: the rebuilt network differs from the ONNX graph by "
                           f"{diff:.2e} (> {IMPORT_TOLERANCE})")
    return diff


def network_from_model(folder: Path) -> tuple[TrainConfig, nn.Module]:
    """The training config (from the card) and the PyTorch network (eval mode, the ONNX
    graph's weights) of exported model ``folder``.

    Raises:
        WeightImportError: the card has no training config, or the weights do not map onto the
            network its config builds (checked against ONNX Runtime).
        serving.pipeline.model.ModelError: no readable card.
    """
    import onnx

    from serving.pipeline.model import read_card

    card = read_card(folder)
    config = card.get("training", {}).get("config")
    if not isinstance(config, dict):
        raise WeightImportError(f"{folder / 'model.json'}: no training.config to rebuild the "
                           "network from")
    cfg = TrainConfig.model_validate(config)
    net = build_network(cfg.model)
    onnx_path = folder / str(card["onnx"].get("file", "model.onnx"))
    net.load_state_dict(_graph_state(onnx.load(str(onnx_path)).graph, net))
    net.eval()
    _check_against_onnx(net, onnx_path)
    return cfg, net
