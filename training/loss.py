"""Training targets and losses for the RetinaNet, from MONAI parts that need no torchvision.

Follows MONAI ``RetinaNetDetector.compute_loss`` (ATSS matching, hard-negative sampling,
focal classification loss, GIoU or smooth-L1 box loss) in a small module of our own, because
that class's training path requires torchvision. Images without any lesion are ordinary
inputs here: every anchor is a negative and only the classification loss sees them.

Boxes are MONAI 2D boxes ``[r1, c1, r2, c2]`` in input pixels (see :mod:`serving.pipeline.boxes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher, Matcher
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler
from monai.data.box_utils import box_iou
from monai.losses.focal_loss import FocalLoss
from monai.losses.giou_loss import BoxGIoULoss
from torch import Tensor, nn

from training.config import MatcherConfig


def reshape_head(maps: list[Tensor], k: int) -> Tensor:
    """``[(B, A*k, h, w)] per level`` -> ``(B, sum(h*w*A), k)`` in MONAI's anchor order
    (per level: rows, columns, then anchors)."""
    out = []
    for m in maps:
        b, ak, h, w = m.shape
        a = ak // k
        out.append(m.view(b, a, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, k))
    return torch.cat(out, dim=1)


class IoUMatcher(Matcher):
    """Max-IoU matching (torchvision ``Matcher`` semantics, re-implemented) on MONAI's
    :class:`~monai.apps.detection.utils.ATSS_matcher.Matcher` contract.

    An anchor takes the ground-truth box it overlaps most. It is positive when that IoU is
    above ``fg_iou``, negative (``BELOW_LOW_THRESHOLD``) below ``bg_iou`` and ignored
    (``BETWEEN_THRESHOLDS``) in between; each ground-truth box also keeps the anchors of its
    highest positive IoU, whatever their value (low-quality matches).

    Args:
        fg_iou: IoU above which an anchor is positive.
        bg_iou: IoU below which an anchor is negative; at most ``fg_iou``.
        similarity_fn: ``(N, 4) x (A, 4) -> (N, A)`` similarity, MONAI's ``box_iou`` by
            default.

    Raises:
        ValueError: ``fg_iou < bg_iou``.
    """

    def __init__(self, fg_iou: float, bg_iou: float,
                 similarity_fn: Callable[[Tensor, Tensor], Tensor] = box_iou,  # type: ignore[assignment]
                 ) -> None:
        if fg_iou < bg_iou:
            raise ValueError(f"matcher.fg_iou ({fg_iou}) must be >= matcher.bg_iou ({bg_iou})")
        super().__init__(similarity_fn=similarity_fn)
        self.fg, self.bg = fg_iou, bg_iou

    def compute_matches(self, boxes: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int],
                        num_anchors_per_loc: int) -> tuple[Tensor, Tensor]:
        """Match the anchors of one image to its ground-truth boxes (at least one).

        Args:
            boxes: ``(N, 4)`` ground-truth boxes, MONAI 2D ``[r1, c1, r2, c2]``, pixels.
            anchors: ``(A, 4)`` anchors, same order and units.
            num_anchors_per_level: unused (max-IoU matching does not look at levels).
            num_anchors_per_loc: unused.

        Returns:
            The ``(N, A)`` IoU matrix and the ``(A,)`` int64 matched box index per anchor
            (``BELOW_LOW_THRESHOLD`` = -1 for a negative, ``BETWEEN_THRESHOLDS`` = -2 for an
            ignored anchor).
        """
        iou = torch.as_tensor(self.similarity_fn(boxes, anchors))
        best, idx = iou.max(dim=0)
        matches = idx.clone()
        matches[best < self.bg] = self.BELOW_LOW_THRESHOLD
        matches[(best >= self.bg) & (best <= self.fg)] = self.BETWEEN_THRESHOLDS
        best_per_gt = iou.max(dim=1, keepdim=True).values
        gt_i, anc_i = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        matches[anc_i] = gt_i
        return iou, matches


def build_matcher(cfg: MatcherConfig) -> Matcher:
    """The anchor matcher that ``cfg.kind`` names: MONAI's ATSS (``num_candidates``,
    ``center_in_gt``) or :class:`IoUMatcher` (``fg_iou``, ``bg_iou``)."""
    if cfg.kind == "atss":
        return ATSSMatcher(cfg.num_candidates, box_iou, cfg.center_in_gt,  # type: ignore[arg-type]
                           debug=False)
    return IoUMatcher(cfg.fg_iou, cfg.bg_iou)


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
        self.matcher = build_matcher(cfg)
        self.sampler = HardNegativeSampler(batch_size_per_image=cfg.batch_size_per_image,
                                           positive_fraction=cfg.positive_fraction,
                                           min_neg=cfg.min_neg, pool_size=cfg.pool_size)
        self.cls_loss = FocalLoss(use_softmax=False, gamma=cfg.focal_gamma, reduction="mean")
        self.box_loss: nn.Module = (BoxGIoULoss(reduction="mean") if cfg.box_loss == "giou"
                                    else nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean"))

    def match(self, gt: Tensor, anchors: Tensor, num_locs_per_level: list[int]) -> Tensor:
        """Matched ground-truth index per anchor.

        Args:
            gt: ``(M, 4)`` ground-truth boxes of one image, MONAI 2D ``[r1, c1, r2, c2]``,
                pixels (``M`` may be 0: every anchor is then a negative).
            anchors: ``(A, 4)`` anchors of that image, same order and units.
            num_locs_per_level: feature-map locations (``h * w``) per pyramid level.

        Returns:
            ``(A,)`` int64 on ``anchors``' device: the box index, ``-1``
            (``Matcher.BELOW_LOW_THRESHOLD``, negative) or ``-2``
            (``Matcher.BETWEEN_THRESHOLDS``, ignored).
        """
        _, matched = self.matcher(gt, anchors, num_locs_per_level, self.num_anchors_per_loc)
        return matched.to(anchors.device)

    def forward(self, head: dict[str, list[Tensor]], anchors: list[Tensor],
                boxes: list[Tensor], labels: list[Tensor]) -> dict[str, Tensor]:
        """Loss of one batch of ``B`` images.

        Args:
            head: the network's ``classification`` maps ``[(B, A*K, h, w)]`` (logits, ``K``
                classes) and ``box_regression`` maps ``[(B, A*4, h, w)]``, one per level.
            anchors: per image, ``(sum(h*w*A), 4)`` anchors, MONAI 2D ``[r1, c1, r2, c2]``,
                input pixels, in MONAI's anchor order.
            boxes: per image, ``(M, 4)`` ground-truth boxes, same order and units (``M`` may
                be 0).
            labels: per image, ``(M,)`` int64 class indices.

        Returns:
            ``{"cls": focal loss, "box": box loss, "loss": their sum}``, each a scalar tensor.
        """
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
