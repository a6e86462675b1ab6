"""Image quality metrics: PSNR, SSIM and LPIPS, on the full frame and on the person crop.

All functions take RGB images (B, 3, H, W) or (3, H, W) with values in [0, 1]
(data range 1) and return one value per image: a (B,) tensor, or a 0-d tensor
for unbatched input.

SSIM is the standard one (Wang et al. 2004): Gaussian window of 11 px with
sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances and a
'valid' convolution, averaged over pixels and channels. This is what
``pytorch_msssim.ssim(..., data_range=1)`` and skimage's
``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`` compute.

LPIPS is v0.1 with VGG16 and AlexNet backbones (:mod:`perennial.evaluate.lpips`,
which also says where the weights come from). The networks are built on first
use and kept in a module-level cache, one per (net, device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.errors import ConfigError
from perennial.evaluate.lpips import LPIPS

__all__ = ["BBOX_MIN_SIZE", "image_metrics", "lpips", "mask_bbox", "psnr", "ssim"]

SSIM_WINDOW = 11
"""Side of the Gaussian SSIM window in pixels."""
SSIM_SIGMA = 1.5
"""Standard deviation of the Gaussian SSIM window in pixels."""
SSIM_K1 = 0.01
SSIM_K2 = 0.03
BBOX_MIN_SIZE = 32
"""Person crops narrower than this (pixels) are grown to it, so that SSIM and both
LPIPS networks are defined on them (LPIPS-alex needs 31 px)."""


def _as_batch(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Checks two image tensors and adds a batch axis to unbatched ones."""
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}")
    if pred.dim() == 3:
        pred, gt, unbatched = pred[None], gt[None], True
    else:
        unbatched = False
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) or (3, H, W) images, got {tuple(gt.shape)}")
    return pred, gt, unbatched


def _as_mask(mask: Tensor, batch: int, height: int, width: int) -> Tensor:
    """Brings a mask to shape (B, 1, H, W) in the images' float dtype (not yet cast)."""
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != (height, width):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit images of size {(height, width)}: "
            "expected (H, W), (B, H, W) or (B, 1, H, W)"
        )
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"mask batch {mask.shape[0]} vs image batch {batch}")
    return mask.expand(batch, 1, height, width)


def psnr(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, 1].

    Args:
        pred: (B, 3, H, W) or (3, H, W) RGB in [0, 1].
        gt: same shape as ``pred``.
        mask: optional (H, W), (B, H, W) or (B, 1, H, W) weights (bool or float in
            [0, 1]); the squared error is averaged over the masked pixels and the
            three channels only.

    Returns:
        (B,) PSNR in dB (0-d for unbatched input); ``inf`` for identical images,
        ``nan`` for an empty mask.
    """
    pred, gt, unbatched = _as_batch(pred, gt)
    err = (pred - gt).square()
    if mask is None:
        mse = err.mean(dim=(1, 2, 3))
    else:
        m = _as_mask(mask, *pred.shape[:1], *pred.shape[2:]).to(err.dtype)
        mse = (err * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * pred.shape[1])
    out = -10.0 * torch.log10(mse)  # peak 1: 10 log10(1 / mse)
    return out[0] if unbatched else out


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian SSIM window, shape (SSIM_WINDOW,)."""
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(pred: Tensor, gt: Tensor) -> Tensor:
    """Structural similarity, averaged over the valid pixels and the three channels.

    Args:
        pred: (B, 3, H, W) or (3, H, W) RGB in [0, 1]; H, W >= 11.
        gt: same shape as ``pred``.

    Returns:
        (B,) SSIM (0-d for unbatched input); 1 for identical images.
    """
    pred, gt, unbatched = _as_batch(pred, gt)
    _, channels, height, width = pred.shape
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {(height, width)}")
    dtype = pred.dtype if pred.dtype.is_floating_point else torch.float32
    x, y = pred.to(dtype), gt.to(dtype)
    # The five local moments in one grouped, separable, 'valid' Gaussian filter.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    g = _gaussian_window(dtype, x.device)
    groups = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(groups, 1, 1, SSIM_WINDOW), groups=groups)
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(groups, 1, SSIM_WINDOW, 1), groups=groups)
    mu_x, mu_y, xx, yy, xy = stack.split(channels, dim=1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    out = (luminance * contrast_structure).mean(dim=(1, 2, 3))
    return out[0] if unbatched else out


_LPIPS_CACHE: dict[tuple[str, str], LPIPS] = {}


def _lpips_net(net: str, device: torch.device) -> LPIPS:
    key = (net, str(device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = LPIPS(net).to(device)
    return _LPIPS_CACHE[key]


def lpips(pred: Tensor, gt: Tensor, net: str = "vgg") -> Tensor:
    """LPIPS v0.1 distance with a cached network (lower is more similar).

    Args:
        pred: (B, 3, H, W) or (3, H, W) RGB in [0, 1].
        gt: same shape as ``pred``.
        net: "vgg" or "alex".

    Returns:
        (B,) distances (0-d for unbatched input); 0 for identical images.
    """
    return _lpips_net(net, pred.device)(pred, gt)


def mask_bbox(mask: Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """The tight bounding box of a mask's foreground.

    Args:
        mask: (H, W) or (1, H, W) mask; foreground is ``mask > threshold``.
        threshold: foreground threshold.

    Returns:
        ``(y0, y1, x0, x1)``, half-open pixel ranges, or ``None`` if the mask is empty.
    """
    fg = mask.reshape(mask.shape[-2:]) > threshold
    rows = torch.nonzero(fg.any(dim=1)).flatten()
    cols = torch.nonzero(fg.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _grow(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """Grows the range [lo, hi) about its centre to at least ``size``, within [0, limit)."""
    if hi - lo >= size:
        return lo, hi
    if limit <= size:
        return 0, limit
    lo = min(max(0, (lo + hi - size) // 2), limit - size)
    return lo, lo + size


@torch.no_grad()
def image_metrics(
    pred: Tensor,
    gt: Tensor,
    mask: Tensor | None = None,
    bbox: bool = True,
    *,
    lpips_nets: Sequence[str] = ("vgg", "alex"),
) -> dict[str, Tensor]:
    """PSNR, SSIM and LPIPS on the full frame and on the person's bounding box.

    The full-frame metrics use every pixel. With ``mask`` given and ``bbox`` true,
    the ``*_bbox`` metrics are computed on the crop of both images to the tight
    bounding box of ``mask > 0.5`` (background pixels inside the box count, as
    in the usual human-avatar evaluations); a box narrower than
    :data:`BBOX_MIN_SIZE` px is grown to it about its centre. An empty mask
    gives ``nan`` for the ``*_bbox`` values.

    Args:
        pred: (B, 3, H, W) or (3, H, W) RGB in [0, 1].
        gt: same shape as ``pred``.
        mask: optional (H, W), (B, H, W) or (B, 1, H, W) foreground mask of the
            ground truth.
        bbox: compute the ``*_bbox`` variants (needs ``mask``).
        lpips_nets: LPIPS backbones to evaluate, among "vgg" and "alex".

    Returns:
        ``psnr``, ``ssim``, ``lpips_vgg``, ``lpips_alex`` and, with a mask and
        ``bbox``, the same names with ``_bbox`` appended; each (B,) or 0-d for
        unbatched input, float32.
    """
    pred, gt, unbatched = _as_batch(pred, gt)
    for net in lpips_nets:
        if net not in ("vgg", "alex"):
            raise ConfigError(f"unknown LPIPS net {net!r}; choose alex or vgg")

    def evaluate(p: Tensor, g: Tensor) -> dict[str, Tensor]:
        out = {"psnr": psnr(p, g), "ssim": ssim(p, g)}
        for net in lpips_nets:
            out[f"lpips_{net}"] = lpips(p, g, net)
        return {k: v.float() for k, v in out.items()}

    result = evaluate(pred, gt)
    if bbox and mask is not None:
        batch, _, height, width = pred.shape
        masks = _as_mask(mask, batch, height, width)
        crops: dict[str, list[Tensor]] = {f"{k}_bbox": [] for k in result}
        for b in range(batch):
            box = mask_bbox(masks[b])
            if box is None:
                values = {k: torch.tensor(math.nan, device=pred.device) for k in result}
            else:
                y0, y1 = _grow(box[0], box[1], BBOX_MIN_SIZE, height)
                x0, x1 = _grow(box[2], box[3], BBOX_MIN_SIZE, width)
                values = evaluate(pred[b : b + 1, :, y0:y1, x0:x1], gt[b : b + 1, :, y0:y1, x0:x1])
                values = {k: v[0] for k, v in values.items()}
            for k, v in values.items():
                crops[f"{k}_bbox"].append(v)
        result.update({k: torch.stack(v) for k, v in crops.items()})
    if unbatched:
        result = {k: v[0] for k, v in result.items()}
    return result
