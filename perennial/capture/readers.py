"""Public dataset layouts to captures, fitted with Anny (no SMPL file is read or needed).

- **ZJU-MoCap** (``annots.npy`` with ``cams`` {K, D, R, T in millimetres} and ``ims`` [{ims: [path per
  camera]}], images under camera folders, masks in ``mask/`` or ``mask_cihp/`` with the same relative
  paths as PNG): multi-view; the landmarks are found in every camera's images and Anny is fitted to all
  cameras at once with their known calibration.
- **People-Snapshot** (``<name>.mp4``, ``masks.hdf5`` with dataset ``masks`` (F, H, W), ``camera.pkl``
  {camera_f, camera_c, camera_k, camera_rt, camera_t, width, height}): one camera of known intrinsics;
  the dataset's masks replace the detector's.

Pickled files (``annots.npy``, ``camera.pkl``) are read with an unpickler that accepts only NumPy
arrays, dicts, lists and numbers: opening a dataset runs no code from it.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from perennial.capture.detect import VIDEO_SUFFIXES
from perennial.errors import PerennialError

LAYOUTS = ("auto", "video", "zju-mocap", "people-snapshot")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays, dicts, lists, tuples, strings and numbers; refuses anything else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }  # fmt: skip

    def __init__(self, file, where: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise PerennialError(f"{self.where}: holds a {module}.{name} object; only arrays and dicts are read")


def load_pickle(path: Path):
    """A pickle of arrays and dicts (e.g. People-Snapshot's camera.pkl), loaded without running its code."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise PerennialError(f"{path}: not a readable pickle ({e})") from None


def load_object_npy(path: Path):
    """The object stored in an ``.npy`` of dtype object (ZJU-MoCap's annots.npy), loaded safely."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read(f)
            if not dtype.hasobject:
                raise PerennialError(f"{path}: expected a pickled object array, found dtype {dtype}")
            arr = _ArraysOnly(f, path).load()
    except (ValueError, pickle.UnpicklingError, EOFError) as e:
        raise PerennialError(f"{path}: not a readable .npy ({e})") from None
    return arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr


def detect_layout(src: Path) -> str:
    """Which layout ``src`` is in (see :data:`LAYOUTS`)."""
    if src.is_dir() and (src / "annots.npy").exists():
        return "zju-mocap"
    if src.is_dir() and (src / "camera.pkl").exists() and (src / "masks.hdf5").exists():
        return "people-snapshot"
    return "video"


def people_snapshot_source(src: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The video, the masks (F, H, W) bool and the intrinsics (3, 3) of a People-Snapshot folder."""
    videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise PerennialError(f"{src}: a People-Snapshot folder without a video ({', '.join(VIDEO_SUFFIXES)})")
    cam = load_pickle(src / "camera.pkl")
    for key in ("camera_f", "camera_c"):
        if not isinstance(cam, dict) or key not in cam:
            raise PerennialError(f"{src / 'camera.pkl'}: no field {key!r}")
    f, c = np.asarray(cam["camera_f"], np.float64).reshape(-1), np.asarray(cam["camera_c"], np.float64).reshape(-1)
    if len(f) != 2 or len(c) != 2 or not np.isfinite([*f, *c]).all() or (f <= 0).any():
        raise PerennialError(f"{src / 'camera.pkl'}: camera_f and camera_c must be 2 finite numbers (f > 0)")
    try:
        import h5py
    except ImportError:
        raise PerennialError("reading masks.hdf5 needs h5py: pip install 'perennial-avatar[readers]'") from None
    try:
        with h5py.File(src / "masks.hdf5", "r") as h:
            masks = np.asarray(h["masks"]) > 0
    except (OSError, KeyError) as e:
        raise PerennialError(f"{src / 'masks.hdf5'}: no readable dataset 'masks' ({e})") from None
    K = np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1]])
    return videos[0], masks, K


def zju_views(src: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[list[Path]], str | None]:
    """Camera names, K (C, 3, 3), R (C, 3, 3), t (C, 3) in metres, image paths [frame][camera] and the mask folder
    of a ZJU-MoCap folder."""
    ann = load_object_npy(src / "annots.npy")
    where = src / "annots.npy"
    try:
        cams, ims = ann["cams"], ann["ims"]
        K, R = np.asarray(cams["K"], np.float64), np.asarray(cams["R"], np.float64)
        t = np.asarray(cams["T"], np.float64).reshape(len(K), 3) / 1000.0  # millimetres
        paths = [[src / p for p in frame["ims"]] for frame in ims]
    except (KeyError, TypeError, ValueError) as e:
        raise PerennialError(f"{where}: expected cams {{K, R, T}} and ims [{{ims: [...]}}] ({e})") from None
    if K.shape[1:] != (3, 3) or R.shape != K.shape or not np.isfinite(K).all() or not np.isfinite(R).all():
        raise PerennialError(f"{where}: cams K and R must be finite 3x3 matrices, one per camera")
    if not paths or any(len(p) != len(K) for p in paths):
        raise PerennialError(f"{where}: every ims entry must list one image per camera ({len(K)})")
    missing = [p for frame in paths for p in frame if not p.exists()]
    if missing:
        raise PerennialError(f"{missing[0]}: listed in {where} but missing ({len(missing)} missing in all)")
    names = [f"cam{i:02d}" for i in range(len(K))]
    mask_dir = next((d for d in ("mask", "mask_cihp") if (src / d).is_dir()), None)
    return names, K, R, t, paths, mask_dir


def zju_mask(src: Path, mask_dir: str | None, image: Path) -> np.ndarray | None:
    """The dataset's mask of an image (same relative path under the mask folder, PNG), or None."""
    if mask_dir is None:
        return None
    rel = image.relative_to(src)
    for cand in (src / mask_dir / rel.with_suffix(".png"), src / mask_dir / rel):
        if cand.exists():
            return np.asarray(Image.open(cand).convert("L")) > 0
    raise PerennialError(f"{src / mask_dir / rel.with_suffix('.png')}: mask of {image} is missing")


def temp_dir_near(out: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder beside ``out`` (same file system), removed on exit even on failure."""
    return tempfile.TemporaryDirectory(prefix=".perennial-capture-", dir=out.parent if out.parent.exists() else None)
