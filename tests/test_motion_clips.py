"""Tests for perennial.motion clips (``.npz``, resampling, rotations) and motion banks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from perennial.body.rig import ANNY_BONES
from perennial.motion import MotionClip, MotionFormatError, import_bank, load_bank, load_motion
from perennial.motion.clip import quat_to_rotvec, rotmat_to_quat, rotvec_to_quat

# shared/ sits beside the repository (CI clones it there too)
CMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "motion" / "cmu"
needs_cmu = pytest.mark.skipif(
    not (CMU / "131_01.bvh").is_file(), reason="CMU sample clips not found"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------
# clips


def _random_clip(frames: int = 40, fps: float = 120.0) -> MotionClip:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, frames)[:, None, None]
    a, b = (
        torch.randn(1, len(ANNY_BONES), 3, generator=g),
        torch.randn(1, len(ANNY_BONES), 3, generator=g),
    )
    rv = 0.6 * torch.sin(3 * t * a + b)  # smooth, |angle| < pi
    tr = torch.cat([t[:, 0] * 2, torch.zeros(frames, 1), 0.9 + 0.05 * torch.sin(6 * t[:, 0])], 1)
    return MotionClip(rv, tr, fps, source="test")


def test_clip_npz_round_trip(tmp_path):
    clip = _random_clip()
    path = clip.save(tmp_path / "c.npz")
    with np.load(path, allow_pickle=False) as z:  # no pickled objects inside
        assert str(z["format"]) == "perennial-motion" and z["rotvec"].dtype == np.float32
    back = MotionClip.load(path)
    assert torch.equal(back.rotvec, clip.rotvec) and torch.equal(back.translation, clip.translation)
    assert back.fps == clip.fps and back.source == "test" and back.bones == ANNY_BONES
    assert torch.equal(load_motion(path).rotvec, clip.rotvec)


def test_clip_load_errors(tmp_path):
    clip = _random_clip()
    arrays = {
        "format": np.array("perennial-motion"),
        "version": np.array(1),
        "bones": np.array(ANNY_BONES),
        "rotvec": clip.rotvec.numpy(),
        "fps": np.array(30.0),
    }
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(MotionFormatError, match=r"missing\.npz: missing field 'translation'"):
        MotionClip.load(tmp_path / "missing.npz")
    bad = arrays | {
        "translation": clip.translation.numpy(),
        "bones": np.array(("hips",) + ANNY_BONES[1:]),
    }
    np.savez(tmp_path / "bones.npz", **bad)
    with pytest.raises(MotionFormatError, match="field 'bones'"):
        MotionClip.load(tmp_path / "bones.npz")
    with pytest.raises(ValueError, match="unsupported motion file type"):
        load_motion(tmp_path / "clip.fbx")


def test_resample_keeps_duration_and_samples():
    clip = _random_clip(frames=121, fps=120.0)
    low = clip.resample(30.0)
    assert low.fps == 30.0 and low.num_frames == 30
    assert abs(low.duration - clip.duration) <= 0.5 / 30 + 1e-9
    # frame k at 30 fps shows time k/30 = frame 4k at 120 fps
    torch.testing.assert_close(low.rotvec, clip.rotvec[::4][:30], atol=1e-5, rtol=0)
    torch.testing.assert_close(low.translation, clip.translation[::4][:30], atol=1e-6, rtol=0)
    up = clip.resample(240.0)
    assert abs(up.duration - clip.duration) <= 0.5 / 240 + 1e-9
    # an in-between frame is the rotation half-way (slerp): equal angles to both ends
    q0, qm, q1 = (
        rotvec_to_quat(x.double()) for x in (clip.rotvec[0], up.rotvec[1], clip.rotvec[1])
    )

    def angle(a, b):
        return 2 * torch.arccos((a * b).sum(-1).abs().clamp(max=1))

    torch.testing.assert_close(angle(q0, qm), angle(qm, q1), atol=1e-5, rtol=0)
    torch.testing.assert_close(2 * angle(q0, qm), angle(q0, q1), atol=1e-5, rtol=0)


def test_rotation_conversions():
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(
        torch.randn(2000, 3, generator=g, dtype=torch.float64), dim=-1
    )
    angle = torch.rand(2000, 1, generator=g, dtype=torch.float64) * math.pi
    angle[:5] = 0.0
    angle[5:10] = math.pi - 1e-12  # near half turns, where naive formulas lose precision
    rv = axis * angle
    q = rotvec_to_quat(rv)
    # quaternion -> matrix by the usual formula, then back through Shepperd's method
    x, y, z, w = q.unbind(-1)
    R = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    q2 = rotmat_to_quat(R)
    torch.testing.assert_close((q2 * q).sum(-1).abs(), torch.ones(2000, dtype=torch.float64))
    back = quat_to_rotvec(q2)
    torch.testing.assert_close(back[10:], rv[10:], atol=1e-9, rtol=0)
    torch.testing.assert_close(back[:5], torch.zeros(5, 3, dtype=torch.float64))


# ---------------------------------------------------------------------------
# banks


@needs_cmu
def test_import_bank_reports_skipped_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    text = (CMU / "131_01.bvh").read_text().splitlines()
    motion = text.index("MOTION")
    head, frames = text[: motion + 1], text[motion + 3 : motion + 3 + 48]
    good = head + ["Frames: 48", "Frame Time: .0083333"] + frames
    _write(src, "walk.bvh", "\n".join(good) + "\n")
    broken = good.copy()
    broken[motion + 3 + 5] = broken[motion + 3 + 5].rsplit(" ", 1)[0]  # a value short
    _write(src, "broken.bvh", "\n".join(broken) + "\n")
    clip_npz = _random_clip(frames=24, fps=60.0).save(src / "clip.npz")
    notes = _write(tmp_path, "notes.txt", "not motion")
    report = import_bank(
        [src, notes, tmp_path / "missing.bvh"], tmp_path / "bank", fps=30.0, progress=False
    )
    by_name = {Path(e.source).name: e for e in report.entries}
    assert by_name["walk.bvh"].status == "ok" and by_name["walk.bvh"].frames_in == 48
    assert by_name["walk.bvh"].frames_out == 12
    assert by_name["clip.npz"].status == "ok" and by_name["clip.npz"].frames_out == 12
    bad = by_name["broken.bvh"]
    assert (
        bad.status == "skipped"
        and f"line {motion + 3 + 5 + 1}" in bad.reason
        and "95 values" in bad.reason
    )
    assert (
        by_name["notes.txt"].status == "skipped"
        and "unsupported file type" in by_name["notes.txt"].reason
    )
    assert (
        by_name["missing.bvh"].status == "skipped"
        and "no such file" in by_name["missing.bvh"].reason
    )
    assert report.frames_in == 48 + 24 and report.frames_per_second > 0
    assert "broken.bvh" in report.summary()
    bank = load_bank(tmp_path / "bank")
    assert sorted(bank.names) == ["clip", "walk"] and bank.fps == 30.0
    rv, tr, ids = bank.poses()
    assert (
        rv.shape == (24, len(ANNY_BONES), 3) and tr.shape == (24, 3) and ids.tolist().count(1) == 12
    )
    index = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert len(index["skipped"]) == 3 and clip_npz.exists()
    with pytest.raises(FileExistsError):
        import_bank([src], tmp_path / "bank", progress=False)
