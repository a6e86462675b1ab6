"""tLPIPS: how far a rendered clip's frame-to-frame change is from the real clip's.

Definition (Chu et al. 2020, "Learning temporal coherence via self-supervision for
GAN-based video generation", as used by RAM-Avatar's Table 3): for a rendered clip
``p_0 .. p_{T-1}`` and the real clip ``g_0 .. g_{T-1}`` of the same camera and motion,

    tLPIPS = 1/(T-1) * sum_{t=1}^{T-1} | LPIPS(p_t, p_{t-1}) - LPIPS(g_t, g_{t-1}) |

Lower is better; 0 when the rendering changes from frame to frame exactly as much
(perceptually) as the real video does: a flickering rendering changes too much, a
frozen one too little. It is not a per-frame quality measure (a rendering that is
wrong in the same way in every frame scores 0). LPIPS is v0.1 with AlexNet by default
(:mod:`perennial.evaluate.lpips`), images in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from perennial.evaluate.metrics import lpips

__all__ = ["tlpips", "tlpips_clips"]


@torch.no_grad()
def tlpips(pred: Tensor, gt: Tensor, net: str = "alex") -> Tensor:
    """Per-pair tLPIPS terms of one clip.

    Args:
        pred: (T, 3, H, W) rendered frames in [0, 1], consecutive in time, T >= 2.
        gt: (T, 3, H, W) real frames of the same camera and times.
        net: LPIPS backbone, "alex" or "vgg".

    Returns:
        (T - 1,) ``|LPIPS(p_t, p_{t-1}) - LPIPS(g_t, g_{t-1})|``; the clip's tLPIPS is the mean.
    """
    if pred.shape != gt.shape or pred.dim() != 4 or pred.shape[0] < 2:
        raise ValueError(f"expected two (T >= 2, 3, H, W) clips of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")  # fmt: skip
    d_pred = lpips(pred[1:], pred[:-1], net)
    d_gt = lpips(gt[1:], gt[:-1], net)
    return (d_pred - d_gt).abs()


def tlpips_clips(clips: Iterable[tuple[Tensor, Tensor]], net: str = "alex") -> tuple[float, int]:
    """tLPIPS over several clips: the mean over all their consecutive pairs.

    Args:
        clips: ``(pred, gt)`` pairs of (T_i, 3, H, W) clips; clips with T_i < 2 are skipped.
        net: LPIPS backbone.

    Returns:
        ``(tlpips, pairs)``: the mean over every pair of every clip (``nan`` if none) and
        the number of pairs it averages.
    """
    terms = [tlpips(p, g, net) for p, g in clips if p.shape[0] >= 2]
    if not terms:
        return float("nan"), 0
    allterms = torch.cat(terms)
    return float(allterms.mean()), int(allterms.numel())
