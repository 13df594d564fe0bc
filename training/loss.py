"""Training targets and losses for the RetinaNet, from MONAI parts that need no torchvision.

Follows MONAI ``RetinaNetDetector.compute_loss`` (ATSS matching, hard-negative sampling,
focal classification loss, GIoU or smooth-L1 box loss) in a small module of our own, because
that class's training path requires torchvision. Images without any lesion are ordinary
inputs here: every anchor is a negative and only the classification loss sees them.

Boxes are MONAI 2D boxes ``[r1, c1, r2, c2]`` in input pixels (see :mod:`serving.pipeline.boxes`).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from monai.data.box_utils import box_iou
from monai.losses.focal_loss import FocalLoss
from monai.losses.giou_loss import BoxGIoULoss
from torch import Tensor, nn

from training.config import MatcherConfig

BELOW_LOW = -1
BETWEEN = -2


def reshape_head(maps: list[Tensor], k: int) -> Tensor:
    """``[(B, A*k, h, w)] per level`` -> ``(B, sum(h*w*A), k)`` in MONAI's anchor order
    (per level: rows, columns, then anchors)."""
    out = []
    for m in maps:
        b, ak, h, w = m.shape
        a = ak // k
        out.append(m.view(b, a, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, k))
    return torch.cat(out, dim=1)


class IoUMatcher:
    """Max-IoU matching (torchvision ``Matcher`` semantics, re-implemented): an anchor is
    positive when its best IoU > ``fg``, negative below ``bg``, ignored in between; each
    ground-truth box also keeps its best anchors (low-quality matches)."""

    def __init__(self, fg: float, bg: float) -> None:
        if fg < bg:
            raise ValueError(f"matcher.fg_iou ({fg}) must be >= matcher.bg_iou ({bg})")
        self.fg, self.bg = fg, bg

    def __call__(self, gt: Tensor, anchors: Tensor) -> Tensor:
        iou = torch.as_tensor(box_iou(gt, anchors))  # (M, A)
        best, idx = iou.max(dim=0)
        matched = idx.clone()
        matched[best < self.bg] = BELOW_LOW
        matched[(best >= self.bg) & (best <= self.fg)] = BETWEEN
        best_per_gt = iou.max(dim=1, keepdim=True).values
        gt_i, anc_i = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        matched[anc_i] = gt_i
        return matched


class DetectionLoss(nn.Module):
    """Classification + box-regression loss of a RetinaNet batch.

    Call with the network's head outputs, the per-image anchors from MONAI's anchor generator
    and the targets; returns ``{"cls": ..., "box": ..., "loss": ...}``.
    """

    def __init__(self, cfg: MatcherConfig, num_anchors_per_loc: int,
                 box_coder_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_anchors_per_loc = num_anchors_per_loc
        self.box_coder = BoxCoder(weights=box_coder_weights)
        self.atss = ATSSMatcher(cfg.num_candidates, box_iou, cfg.center_in_gt,  # type: ignore[arg-type]
                                debug=False)
        self.iou = IoUMatcher(cfg.fg_iou, cfg.bg_iou)
        self.sampler = HardNegativeSampler(batch_size_per_image=cfg.batch_size_per_image,
                                           positive_fraction=cfg.positive_fraction,
                                           min_neg=cfg.min_neg, pool_size=cfg.pool_size)
        self.cls_loss = FocalLoss(use_softmax=False, gamma=cfg.focal_gamma, reduction="mean")
        self.box_loss: nn.Module = (BoxGIoULoss(reduction="mean") if cfg.box_loss == "giou"
                                    else nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean"))

    def match(self, gt: Tensor, anchors: Tensor, num_locs_per_level: list[int]) -> Tensor:
        """Matched ground-truth index per anchor (``-1`` negative, ``-2`` ignored)."""
        if gt.numel() == 0:
            return torch.full((anchors.shape[0],), BELOW_LOW, dtype=torch.int64,
                              device=anchors.device)
        if self.cfg.kind == "atss":
            _, matched = self.atss(gt, anchors, num_locs_per_level, self.num_anchors_per_loc)
            return matched
        return self.iou(gt, anchors)

    def forward(self, head: dict[str, list[Tensor]], anchors: list[Tensor],
                boxes: list[Tensor], labels: list[Tensor]) -> dict[str, Tensor]:
        cls_maps, box_maps = head["classification"], head["box_regression"]
        k = cls_maps[0].shape[1] // self.num_anchors_per_loc
        cls = reshape_head(cls_maps, k)
        reg = reshape_head(box_maps, 4)
        num_locs = [int(m.shape[2] * m.shape[3]) for m in cls_maps]
        cls_in, cls_tg, reg_in, reg_tg = [], [], [], []
        for i in range(cls.shape[0]):
            matched = self.match(boxes[i], anchors[i], num_locs)
            fg = matched >= 0
            target = torch.zeros_like(cls[i])
            if fg.any():
                target[fg, labels[i][matched[fg]].long()] = 1.0
            max_logit = cls[i].detach().float().max(dim=1).values
            pos, neg = self.sampler([matched + 1], max_logit)
            keep = torch.cat([torch.where(pos[0])[0], torch.where(neg[0])[0]])
            cls_in.append(cls[i][keep])
            cls_tg.append(target[keep])
            if fg.any():
                fg_idx = torch.where(fg)[0]
                gt = boxes[i][matched[fg_idx]].to(reg.dtype)
                anc = anchors[i][fg_idx]
                if self.cfg.box_loss == "giou":
                    reg_in.append(self.box_coder.decode_single(reg[i][fg_idx], anc))
                    reg_tg.append(gt)
                else:
                    reg_in.append(reg[i][fg_idx])
                    reg_tg.append(self.box_coder.encode_single(gt, anc))
        loss_cls = self.cls_loss(torch.cat(cls_in), torch.cat(cls_tg))
        if reg_in:
            loss_box = self.box_loss(torch.cat(reg_in), torch.cat(reg_tg))
        else:
            loss_box = reg.sum() * 0.0  # keeps the graph connected on all-negative batches
        return {"cls": loss_cls, "box": loss_box, "loss": loss_cls + loss_box}


def targets_from_numpy(boxes: list[np.ndarray], labels: list[np.ndarray], device: torch.device
                       ) -> tuple[list[Tensor], list[Tensor]]:
    """Per-image MONAI boxes ``(M, 4)`` and labels ``(M,)`` as tensors (M may be 0)."""
    tb = [torch.as_tensor(b.reshape(-1, 4), dtype=torch.float32, device=device) for b in boxes]
    tl = [torch.as_tensor(lab.reshape(-1), dtype=torch.int64, device=device) for lab in labels]
    return tb, tl
