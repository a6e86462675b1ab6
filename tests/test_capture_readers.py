"""Dataset layouts to captures without SMPL files: tiny ZJU-MoCap and People-Snapshot folders the tests write
from a synthetic capture, read and fitted by ``perennial capture``; pickles that hold code are refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_capture_video import _detector_ready

from perennial.capture import read_capture
from perennial.capture.fit import FitConfig
from perennial.capture.monocular import MonocularConfig
from perennial.capture.readers import detect_layout, load_object_npy, load_pickle
from perennial.capture.sources import capture_from_source
from perennial.capture.synth import SynthConfig, synthesize
from perennial.errors import PerennialError

FAST = FitConfig(key_steps=60, steps=60, keyframes=4)


def _composited(capture, view) -> np.ndarray:
    from perennial.evaluate.capture_bench import background

    rgb = np.asarray(Image.open(capture.root / view.image), np.float32) / 255
    a = np.asarray(Image.open(capture.root / view.mask), np.float32)[..., None] / 255
    return ((rgb + background(rgb.shape[0], 1) * (1 - a)) * 255 + 0.5).astype(np.uint8)


def _zju_folder(capture, out: Path) -> Path:
    """The capture in ZJU-MoCap's layout (JPEG images per camera folder, 0/1 masks, annots.npy, T in mm)."""
    names = sorted(capture.cameras)
    ims = []
    for f in range(len(capture.frames)):
        row = []
        for c, name in enumerate(names):
            view = next(v for v in capture.views if v.camera == name and v.frame == f)
            rel = f"Camera_B{c + 1}/{f:06d}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_composited(capture, view)).save(out / rel, quality=95)
            (out / "mask" / rel).parent.mkdir(parents=True, exist_ok=True)
            m = (np.asarray(Image.open(capture.root / view.mask)) > 127).astype(np.uint8)
            Image.fromarray(m).save((out / "mask" / rel).with_suffix(".png"))
            row.append(rel)
        ims.append({"ims": row})
    cams = {"K": [capture.cameras[n].K.numpy() for n in names], "D": [np.zeros((5, 1)) for _ in names],
            "R": [capture.cameras[n].R.numpy() for n in names],
            "T": [capture.cameras[n].t.numpy().reshape(3, 1) * 1000 for n in names]}  # fmt: skip
    np.save(out / "annots.npy", np.array({"cams": cams, "ims": ims}, dtype=object))
    return out


def _people_snapshot_folder(capture, out: Path) -> Path:
    """The capture's first camera in People-Snapshot's layout (mp4, masks.hdf5, camera.pkl)."""
    import h5py

    from perennial.evaluate.capture_bench import write_video

    out.mkdir()
    views = sorted((v for v in capture.views if v.camera == "cam00"), key=lambda v: v.frame)
    write_video([_composited(capture, v) for v in views], out / "clip", fps=30.0)
    with h5py.File(out / "masks.hdf5", "w") as h:
        h["masks"] = np.stack([np.asarray(Image.open(capture.root / v.mask)) > 127 for v in views]).astype(np.uint8)
    K = capture.cameras["cam00"].K.numpy()
    with open(out / "camera.pkl", "wb") as f:
        pickle.dump({"camera_f": K[[0, 1], [0, 1]], "camera_c": K[:2, 2], "camera_k": np.zeros(5),
                     "camera_rt": np.zeros(3), "camera_t": np.zeros(3), "width": 256, "height": 256}, f)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth") / "cap"
    return synthesize(root, SynthConfig(cameras=3, frames=4, size=256, motion="wave", supersample=1,
                                        test_camera_every=0, test_frame_every=0), progress=False)  # fmt: skip


@pytest.mark.skipif(not _detector_ready(), reason="no .venv-mp (make setup creates it)")
def test_zju_mocap_layout_is_fitted_on_all_cameras(truth, tmp_path):
    src = _zju_folder(truth, tmp_path / "CoreView_test")
    assert detect_layout(src) == "zju-mocap"
    cap, layout = capture_from_source(src, tmp_path / "cap", MonocularConfig(size=256), FAST, progress=False)
    assert layout == "zju-mocap"
    cap = read_capture(cap.root)
    assert sorted(cap.cameras) == ["cam00", "cam01", "cam02"] and len(cap.frames) == 4
    for c, name in enumerate(sorted(truth.cameras)):  # the calibration is the dataset's (same size: unscaled)
        assert torch.allclose(cap.cameras[f"cam{c:02d}"].K, truth.cameras[name].K, atol=1e-3)
        assert torch.allclose(cap.cameras[f"cam{c:02d}"].t, truth.cameras[name].t, atol=1e-5)
    # known cameras fix the body in the dataset's world: the root lands where it was
    err = (cap.body.translation - truth.body.translation).norm(dim=-1)
    assert float(err.median()) < 0.15, err
    report = json.loads((cap.root / "fit.json").read_text())
    assert min(report["mask_iou_vs_masks"].values()) > 0.6, report["mask_iou_vs_masks"]
    assert {v.split for v in cap.views} == {"train", "test"}


@pytest.mark.skipif(not _detector_ready(), reason="no .venv-mp (make setup creates it)")
def test_people_snapshot_layout_uses_its_camera_and_masks(truth, tmp_path):
    src = _people_snapshot_folder(truth, tmp_path / "female-test")
    assert detect_layout(src) == "people-snapshot"
    cap, layout = capture_from_source(src, tmp_path / "cap", MonocularConfig(size=256), FAST, progress=False)
    assert layout == "people-snapshot"
    report = json.loads((cap.root / "fit.json").read_text())
    assert report["masks"] == "dataset" and report["mask_iou"] > 0.6, report
    assert abs(float(cap.cameras["cam00"].K[0, 0]) - float(truth.cameras["cam00"].K[0, 0])) < 1e-3
    masks = np.stack([np.asarray(Image.open(cap.root / v.mask)) for v in cap.views])
    truth_masks = np.stack([np.asarray(Image.open(truth.root / v.mask)) > 127
                            for v in truth.views if v.camera == "cam00"])  # fmt: skip
    assert ((masks > 127) == truth_masks[report["used"]]).mean() > 0.99  # the dataset's masks, not the detector's


def test_pickles_that_hold_code_are_refused(tmp_path):
    np.save(tmp_path / "annots.npy", np.array([Path("x")], dtype=object))
    with pytest.raises(PerennialError, match="annots.npy: holds a pathlib"):
        load_object_npy(tmp_path / "annots.npy")
    (tmp_path / "camera.pkl").write_bytes(pickle.dumps({"camera_f": print}))
    with pytest.raises(PerennialError, match="camera.pkl: holds a builtins.print"):
        load_pickle(tmp_path / "camera.pkl")
    arrays = {"K": np.eye(3), "n": [1, 2.5, "a"]}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(arrays))
    back = load_pickle(tmp_path / "ok.pkl")
    assert np.array_equal(back["K"], np.eye(3)) and back["n"] == [1, 2.5, "a"]


def test_a_zju_folder_with_a_missing_image_names_it(truth, tmp_path):
    src = _zju_folder(truth, tmp_path / "CoreView_bad")
    (src / "Camera_B2" / "000003.jpg").unlink()
    with pytest.raises(PerennialError, match="Camera_B2/000003.jpg: listed in .*annots.npy but missing"):
        capture_from_source(src, tmp_path / "cap", progress=False)
    assert not (tmp_path / "cap").exists()
