"""Image helpers: conversions, contact sheets, PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor


def to_uint8(img: Tensor | np.ndarray) -> np.ndarray:
    """(H, W[, C]) float in [0, 1] (tensor or array) -> uint8 array, rounded."""
    if isinstance(img, Tensor):
        img = img.detach().float().cpu().numpy()
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(
    images: list[np.ndarray], cols: int, labels: list[str] | None = None, pad: int = 2
) -> np.ndarray:
    """Tile equally sized uint8 RGB images into one grid, optionally labelled.

    Args:
        images: list of (H, W, 3) uint8 arrays of one size.
        cols: images per row.
        labels: optional caption drawn in each tile's top-left corner.
        pad: grey border between tiles, pixels.
    """
    if not images:
        raise ValueError("contact_sheet: no images")
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 64, np.uint8)
    for i, im in enumerate(images):
        if im.shape[:2] != (h, w):
            raise ValueError(f"contact_sheet: image {i} is {im.shape[:2]}, expected {(h, w)}")
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = im if im.ndim == 3 else im[..., None]
    if labels:
        pil = Image.fromarray(sheet)
        draw = ImageDraw.Draw(pil)
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            draw.text((pad + c * (w + pad) + 3, pad + r * (h + pad) + 2), text, fill=(255, 255, 0))
        sheet = np.asarray(pil)
    return sheet


def save_png(path: str | Path, img: np.ndarray | Tensor) -> Path:
    """Write an RGB or greyscale image (uint8, or float in [0, 1]) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path)
    return path


def downsample(img: Tensor, factor: int) -> Tensor:
    """Box-filter (H*f, W*f, C) -> (H, W, C): the supersampling resolve."""
    if factor == 1:
        return img
    H, W = img.shape[0] // factor, img.shape[1] // factor
    return img.reshape(H, factor, W, factor, -1).mean(dim=(1, 3))


__all__ = ["contact_sheet", "downsample", "save_png", "to_uint8"]
