"""The detection network: MONAI RetinaNet on a MONAI ResNet + FPN, built without torchvision.

Tensors are ``(B, 1, H, W)`` (H = rows). MONAI's 2D boxes are ``[r1, c1, r2, c2]`` (its "x"
is the first spatial axis, our row); conversion to the project's ``[x1, y1, x2, y2]``
(x = column) happens only in :mod:`serving.pipeline.boxes` (:func:`xyxy_to_monai` /
:func:`monai_to_xyxy`, re-exported here).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from monai.networks.nets.resnet import ResNet
from torch import Tensor, nn

from serving.pipeline.boxes import monai_to_xyxy as monai_to_xyxy  # re-exported
from serving.pipeline.boxes import xyxy_to_monai as xyxy_to_monai  # re-exported
from training.config import ModelConfig


class ResNetFPN(nn.Module):
    """A MONAI ResNet trunk whose stages feed a MONAI FeaturePyramidNetwork.

    Output: ordered dict of FPN maps, highest resolution first, each ``(B, out_channels,
    H / s, W / s)`` with stride ``s = 2 ** (stage + 1)`` for the returned stages.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk = ResNet(block=cfg.block, layers=cfg.layers, block_inplanes=cfg.widths,
                            spatial_dims=2, n_input_channels=1, conv1_t_size=7,
                            conv1_t_stride=2, feed_forward=False)
        expansion = 4 if cfg.block == "bottleneck" else 1
        self.returned = list(cfg.returned_layers)
        for stage in range(max(self.returned) + 1, 5):  # stages past the deepest returned
            setattr(self.trunk, f"layer{stage}", nn.Identity())  # are never run: drop them
        in_channels = [cfg.widths[i - 1] * expansion for i in self.returned]
        self.fpn = FeaturePyramidNetwork(spatial_dims=2, in_channels_list=in_channels,
                                         out_channels=cfg.fpn_channels)
        self.out_channels = cfg.fpn_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        t = self.trunk
        x = t.maxpool(t.act(t.bn1(t.conv1(x))))
        feats: OrderedDict[str, Tensor] = OrderedDict()
        for i, layer in enumerate((t.layer1, t.layer2, t.layer3, t.layer4), start=1):
            x = layer(x)
            if i in self.returned:
                feats[f"p{i}"] = x
            if i >= max(self.returned):
                break
        out: dict[str, Tensor] = self.fpn(feats)
        return out


def size_divisible(cfg: ModelConfig) -> int:
    """Input sides must be multiples of this (the deepest returned stride)."""
    return int(2 ** (max(cfg.returned_layers) + 1))


def build_network(cfg: ModelConfig) -> RetinaNet:
    """The RetinaNet network (heads on every FPN level), outputs per level
    ``classification`` ``(B, A*K, h, w)`` and ``box_regression`` ``(B, A*4, h, w)``."""
    return RetinaNet(spatial_dims=2, num_classes=cfg.num_classes,
                     num_anchors=len(cfg.base_anchor_shapes),
                     feature_extractor=ResNetFPN(cfg), size_divisible=size_divisible(cfg))


def build_anchor_generator(cfg: ModelConfig) -> AnchorGeneratorWithAnchorShape:
    """MONAI anchor generator matching :func:`build_network`'s levels."""
    return AnchorGeneratorWithAnchorShape(
        feature_map_scales=cfg.feature_map_scales,
        base_anchor_shapes=[tuple(s) for s in cfg.base_anchor_shapes],
    )


class FlatOutputs(nn.Module):
    """Export wrapper: returns ``(cls_level_0, ..., cls_level_L, box_level_0, ...)`` so the
    ONNX graph has plain tensor outputs named ``cls_<l>`` and ``box_<l>``."""

    def __init__(self, net: RetinaNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.net(images)
        return (*out["classification"], *out["box_regression"])


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def set_prior_bias(net: RetinaNet, prior: float = 0.01) -> None:
    """Initialise the classification bias so that every anchor starts at ``prior``
    foreground probability (RetinaNet's focal-loss initialisation)."""
    bias = -float(np.log((1 - prior) / prior))
    head = net.classification_head
    with torch.no_grad():
        head.cls_logits.bias.fill_(bias)
