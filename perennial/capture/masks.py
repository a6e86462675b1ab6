"""Person masks: distance maps and outlines for fitting, overlap, resizing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def outside_distance(masks: Tensor, factor: int = 4, reach: int = 48) -> Tensor:
    """(N, 1, H/f, W/f) distance in pixels from each point to the mask (0 inside), on a grid ``factor`` times
    coarser, by repeated 3x3 dilation (chessboard metric; capped at ``reach`` coarse pixels)."""
    m = F.max_pool2d(masks.float()[:, None], factor, factor) > 0
    d = torch.zeros(m.shape)
    cur = m.float()
    for _ in range(reach):
        d += 1.0 - cur
        cur = F.max_pool2d(cur, 3, 1, 1)
    return d * factor


def outline_points(masks: Tensor, points: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Up to ``points`` outline pixels (F, P, 2) per mask and their validity (F, P)."""
    m = masks.float()[:, None]
    inner = -F.max_pool2d(-m, 3, 1, 1)
    edge = (m - inner)[:, 0] > 0
    g = torch.Generator().manual_seed(seed)
    out, valid = torch.zeros(len(masks), points, 2), torch.zeros(len(masks), points, dtype=torch.bool)
    for f in range(len(masks)):
        yx = edge[f].nonzero().float()
        if len(yx) == 0:
            continue
        pick = torch.randperm(len(yx), generator=g)[:points]
        out[f, : len(pick)] = yx[pick].flip(-1)
        valid[f, : len(pick)] = True
    return out, valid


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F,) intersection over union of two stacks of boolean masks."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return inter / np.maximum(union, 1)


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """(F, H, W) bool masks to (F, height, width) uint8 0/255, nearest neighbour."""
    return np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.NEAREST))
                     for m in masks])  # fmt: skip
