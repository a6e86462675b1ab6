"""The StyleUNet generator of the texture avatar."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.generator import StyleUNet
from perennial.numerics import BF16_UNIT_ROUNDOFF


def _inputs(h=37, w=50, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g), torch.randn(8, generator=g)


def test_shapes_any_size_and_range():
    torch.manual_seed(0)
    net = StyleUNet(7, 8, (4, 8, 12, 16), autocast_mode="off")
    for h, w in ((37, 50), (16, 16), (1, 9)):
        x, z = _inputs(h, w)
        rgb, alpha = net(x, z)
        assert rgb.shape == (1, 3, h, w) and alpha.shape == (1, 1, h, w)
        assert rgb.dtype == torch.float32 and (rgb >= 0).all() and (rgb <= 1).all()
        assert (alpha >= 0).all() and (alpha <= 1).all()
    assert net.multiple == 8
    with pytest.raises(ValueError, match="levels"):
        StyleUNet(7, 8, (4,))


def test_style_changes_the_output_and_gradients_flow():
    torch.manual_seed(0)
    net = StyleUNet(7, 8, (4, 8, 12), autocast_mode="off")
    x, z = _inputs()
    z.requires_grad_(True)
    x.requires_grad_(True)
    rgb1, a1 = net(x, z)
    rgb2, a2 = net(x, torch.randn(8, generator=torch.Generator().manual_seed(5)))
    assert (rgb1 - rgb2).abs().mean() > 1e-3 and (a1 - a2).abs().mean() > 1e-4
    (rgb1.sum() + a1.sum()).backward()
    assert z.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_path_close_to_fp32():
    """bf16 autocast (forced on, whatever the CPU) stays within a bound derived from its roundoff."""
    torch.manual_seed(0)
    net = StyleUNet(7, 8, (8, 16, 24, 32), autocast_mode="off")
    x, z = _inputs(40, 48)
    ref_rgb, ref_a = net(x, z)
    net.autocast_mode = "on"
    rgb, a = net(x, z)
    u = BF16_UNIT_ROUNDOFF
    # every conv rounds its inputs and weights to 8 significant bits (relative error <= u each);
    # over the ~12 layers of this UNet the logits' errors add up to a few u on average, and the
    # sigmoid's slope (<= 1/4) shrinks them: mean <= u, worst pixel <= 8u (measured: 0.2u, 1.1u)
    for got, ref in ((rgb, ref_rgb), (a, ref_a)):
        err = (got - ref).abs()
        assert err.mean() < u and err.max() < 8 * u
    (rgb.sum() + a.sum()).backward()
    assert net.stem.weight.grad is not None and torch.isfinite(net.stem.weight.grad).all()
