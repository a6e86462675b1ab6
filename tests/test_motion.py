"""Tests for perennial.motion: BVH reading and kinematics, bone maps, retargeting onto Anny.

Clips and banks: tests/test_motion_clips.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from perennial.body.rig import ANNY_BONES
from perennial.motion import (
    CMU_BONE_MAP,
    BoneMap,
    BVHError,
    RetargetError,
    load_bone_map,
    load_motion,
    parse_bvh,
    read_bvh,
    rest_info,
    retarget,
)
from perennial.motion.bonemap import axes_matrix
from perennial.motion.kinematics import end_site_positions, forward_kinematics
from perennial.motion.rest import anny_forward_joints
from perennial.motion.retarget import retarget_world

# shared/ sits beside the repository (CI clones it there too)
CMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "motion" / "cmu"
needs_cmu = pytest.mark.skipif(
    not (CMU / "131_01.bvh").is_file(), reason="CMU sample clips not found"
)

# A small hierarchy: 6-channel root, joints with different rotation orders, a
# 6-channel non-root joint, End Sites, a brace on the JOINT line.
SMALL_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Arm {
    OFFSET 1 0 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Hand
    {
      OFFSET 0 1 0
      CHANNELS 3 Yrotation Zrotation Xrotation
      End Site
      {
        OFFSET 0 0 2
      }
    }
  }
  JOINT Slider
  {
    OFFSET 0 5 0
    CHANNELS 6 Xposition Yposition Zposition Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 1 0 0
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.04
0 0 0  0 0 0   0 0 0   0 0 0   0 5 0  0 0 0
1 2 3  90 0 0  90 0 0  0 0 0   0 0 7  0 0 0
0 0 0  0 0 0   90 90 0 0 0 0   0 5 0  0 0 0
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------
# BVH parser and kinematics


def test_parse_small_bvh_structure():
    bvh = parse_bvh(SMALL_BVH, "small.bvh")
    assert bvh.names == ["Hips", "Arm", "Hand", "Slider"]
    assert bvh.parents == [-1, 0, 1, 0]
    np.testing.assert_array_equal(bvh.offsets, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 5, 0]])
    assert bvh.joints[0].channels[3:] == ("Zrotation", "Xrotation", "Yrotation")
    assert bvh.joints[2].channels == ("Yrotation", "Zrotation", "Xrotation")
    assert [j.channel_start for j in bvh.joints] == [0, 6, 9, 12]
    assert bvh.motion.shape == (3, 18)
    assert (
        bvh.num_frames == 3
        and bvh.frame_time == pytest.approx(0.04)
        and bvh.fps == pytest.approx(25.0)
    )
    np.testing.assert_array_equal(bvh.joints[2].end_sites, [[0, 0, 2]])
    assert len(bvh.joints[1].end_sites) == 0


def test_bvh_forward_kinematics_known_values():
    bvh = parse_bvh(SMALL_BVH, "small.bvh")
    pos, rot = forward_kinematics(bvh)
    # frame 0: rest pose, the Slider's position channels equal its offset
    np.testing.assert_allclose(pos[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 5, 0]], atol=1e-12)
    np.testing.assert_allclose(rot[0], np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-12)
    # frame 1: root at (1, 2, 3) turned 90 deg about Z; Arm turned 90 deg about X
    #   Arm  = root + Rz90 (1, 0, 0) = (1, 3, 3)
    #   Hand = Arm + Rz90 Rx90 (0, 1, 0) = Arm + Rz90 (0, 0, 1) = (1, 3, 4)
    #   End Site of Hand = Hand + Rz90 Rx90 (0, 0, 2) = Hand + Rz90 (0, -2, 0) = (3, 3, 4)
    #   Slider: position channels (0, 0, 7) replace its offset: root + Rz90 (0, 0, 7)
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [1, 3, 3], [1, 3, 4], [1, 2, 10]], atol=1e-12)
    sites = end_site_positions(bvh, pos, rot)
    np.testing.assert_allclose(sites[2][1, 0], [3, 3, 4], atol=1e-12)
    np.testing.assert_allclose(sites[3][1, 0], [1, 3, 10], atol=1e-12)  # Rz90 (1, 0, 0) = (0, 1, 0)
    # frame 2: Arm "Xrotation Yrotation Zrotation" = (90, 90, 0) composes as Rx90 @ Ry90:
    #   Hand = Arm + Rx90 Ry90 (0, 1, 0) = Arm + Rx90 (0, 1, 0) = (1, 0, 0) + (0, 0, 1)
    #   End Site = Hand + Rx90 Ry90 (0, 0, 2) = Hand + Rx90 (2, 0, 0) = (3, 0, 1)
    #   (the other order, Ry90 @ Rx90, would put the End Site at (1, -2, 1))
    np.testing.assert_allclose(pos[2, 2], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(sites[2][2, 0], [3, 0, 1], atol=1e-12)


def test_read_real_cmu_file():
    if not (CMU / "131_01.bvh").is_file():
        pytest.skip("CMU sample clips not found")
    bvh = read_bvh(CMU / "131_01.bvh")
    assert len(bvh.joints) == 31 and bvh.num_frames == 994
    assert bvh.fps == pytest.approx(120, rel=1e-4)
    assert bvh.joints[bvh.index("LeftShoulder")].channels == ("Zrotation", "Xrotation", "Yrotation")
    with pytest.raises(KeyError, match="no joint 'Tail'"):
        bvh.index("Tail")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (SMALL_BVH.split("MOTION")[0], None, "no MOTION section"),
        (SMALL_BVH.replace("0 0 0  0 0 0   90 90 0", "0 0 0  0 0 0   90 90"), 34, "has 17 values"),
        (SMALL_BVH.replace("1 2 3  90 0 0", "1 2 3  9O 0 0"), 33, "bad number '9O'"),
        (SMALL_BVH.replace("Frames: 3", "Frames: 4"), None, "3 of the 4 frames"),
        (
            SMALL_BVH.replace(
                "CHANNELS 3 Yrotation Zrotation Xrotation", "CHANNELS 3 Yrotation Zrotation"
            ),
            12,
            "declares 3",
        ),
        (
            SMALL_BVH.replace(
                "CHANNELS 3 Xrotation Yrotation Zrotation",
                "CHANNELS 3 Xrotation Yrotation Wrotation",
            ),
            8,
            "unknown channel",
        ),
        (
            SMALL_BVH.replace("OFFSET 1 0 0\n", "OFFSET 1 0\n"),
            7,
            "OFFSET of joint 'Arm' needs 3 numbers",
        ),
        (SMALL_BVH.replace("HIERARCHY", "HIERARCHIE"), 1, "expected HIERARCHY"),
    ],
)
def test_malformed_bvh_names_file_and_line(tmp_path, text, line, message):
    path = _write(tmp_path, "broken.bvh", text)
    with pytest.raises(BVHError, match=message) as info:
        read_bvh(path)
    err = info.value
    assert str(path) in str(err)
    if line is None:
        assert err.line is not None  # end-of-file errors point at the last line
    else:
        assert err.line == line and f"line {line}" in str(err)


def test_bvh_not_text(tmp_path):
    path = tmp_path / "binary.bvh"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BVHError, match="binary.bvh"):
        read_bvh(path)


# ---------------------------------------------------------------------------
# bone maps


def test_axes_matrix_cmu():
    C = axes_matrix("+y", "+z")
    np.testing.assert_allclose(C @ [0, 1, 0], [0, 0, 1])  # up -> +Z
    np.testing.assert_allclose(C @ [0, 0, 1], [0, -1, 0])  # forward -> -Y
    np.testing.assert_allclose(C @ [1, 0, 0], [1, 0, 0])  # left -> +X
    assert np.linalg.det(C) == pytest.approx(1.0)


def test_bone_map_json(tmp_path):
    path = _write(tmp_path, "cmu.json", json.dumps(CMU_BONE_MAP.to_dict()))
    bmap = load_bone_map(path)
    assert bmap.bones == CMU_BONE_MAP.bones and bmap.modes == CMU_BONE_MAP.modes
    assert bmap.scale == pytest.approx(0.056444)
    bad = CMU_BONE_MAP.to_dict() | {"bones": {"root": "Hips", "thigh.L": "LeftHip"}}
    with pytest.raises(RetargetError, match=r"bad\.json.*unknown Anny bone 'thigh\.L'"):
        load_bone_map(_write(tmp_path, "bad.json", json.dumps(bad)))
    with pytest.raises(RetargetError, match=r"unknown field\(s\) \['bone'\]"):
        load_bone_map(_write(tmp_path, "typo.json", json.dumps({"scale": 1, "bone": {}})))
    with pytest.raises(RetargetError, match=r"broken\.json, line 2: invalid JSON"):
        load_bone_map(_write(tmp_path, "broken.json", '{"scale": 1,\n "bones": }'))
    with pytest.raises(RetargetError, match="mode 'twist'"):
        BoneMap({"root": "Hips", "head": "Head"}, {"head": "twist"}, scale=1.0)
    # a map naming joints the file lacks fails with the missing names
    small = parse_bvh(SMALL_BVH, "small.bvh")
    with pytest.raises(RetargetError, match="small.bvh.*LeftHip"):
        retarget(small, bone_map=CMU_BONE_MAP)


# ---------------------------------------------------------------------------
# retargeting on the real CMU clip


@pytest.fixture(scope="module")
def template():
    from perennial.body.anny import load_template

    return load_template()


@needs_cmu
def test_retarget_cmu_meets_targets(template):
    from perennial.motion.evaluate import motion_figures

    bvh = read_bvh(CMU / "131_01.bvh").subset(slice(0, 60))
    clip = retarget(bvh, template)
    assert clip.num_frames == 60 and clip.fps == pytest.approx(120, rel=1e-4)
    assert clip.rotvec.shape == (60, len(ANNY_BONES), 3) and torch.isfinite(clip.rotvec).all()
    # unmapped bones follow their parent: zero local-ref rotation
    unmapped = [i for i, b in enumerate(ANNY_BONES) if b not in CMU_BONE_MAP.bones]
    assert unmapped and clip.rotvec[:, unmapped].abs().max() == 0
    figs = motion_figures(bvh, clip, template)
    assert figs["mean_joint_error_cm"] <= 5.0, figs
    assert figs["worst_foot_penetration_cm"] <= 2.0, figs
    assert figs["max_bone_rotation_deg"] <= 90.0, figs
    # the feet touch the floor (not floating): the lowest foot vertex is within 3 cm of z = 0
    assert figs["median_foot_height_cm"] <= 3.0, figs


@needs_cmu
def test_retarget_kinematics_match_anny(template):
    """The vectorised kinematics used for floor placement equal Anny's forward pass."""
    bvh = read_bvh(CMU / "131_03.bvh").subset(slice(0, 400, 40))
    rest = rest_info(template)
    G, trans, info = retarget_world(bvh, rest)
    clip = retarget(bvh, rest)
    with torch.no_grad():
        out = template(clip.rotvec, clip.translation)
    ours = anny_forward_joints(G, trans, rest)
    np.testing.assert_allclose(out.joints.double().numpy(), ours, atol=1e-4)
    assert set(info) >= {"floor_shift_m", "lifted_frames"}


@needs_cmu
def test_load_motion_bvh_resampled():
    clip = load_motion(CMU / "131_02.bvh", fps=30)
    assert clip.fps == 30 and abs(clip.duration - 1247 / 120) <= 0.5 / 30 + 1e-6


@needs_cmu
def test_frame_strip(tmp_path, template):
    from perennial.motion.evaluate import write_frame_strip

    bvh = read_bvh(CMU / "131_01.bvh").subset(slice(0, 120, 40))
    clip = retarget(bvh, template)
    path = write_frame_strip(clip, tmp_path / "strip.png", template, frames=3, size=64, bvh=bvh)
    from PIL import Image

    img = np.asarray(Image.open(path))
    assert img.shape[0] > 64 and img.shape[1] > 3 * 64
    assert img.std() > 10  # a figure was drawn


def test_angles_are_radians_in_clip_from_small_bvh():
    """A custom JSON-style map on a tiny skeleton: a 90 deg source turn becomes pi/2 on Anny's root."""
    bvh = parse_bvh(SMALL_BVH, "small.bvh")
    bmap = BoneMap({"root": "Hips"}, scale=1.0, up="+y", forward="+z", name="tiny")
    rest = rest_info()
    clip = retarget(bvh, rest, bone_map=bmap, floor="source")
    # frame 1: the root turns 90 deg about source Z (forward) = Anny -Y
    torch.testing.assert_close(
        clip.rotvec[1, 0], torch.tensor([0.0, -math.pi / 2, 0.0]), atol=1e-5, rtol=0
    )
    # with no hip anchors the root follows the source root: (1, 2, 3) -> (1, -3, 2)
    torch.testing.assert_close(
        clip.translation[1], torch.tensor([1.0, -3.0, 2.0]), atol=1e-6, rtol=0
    )
    assert clip.rotvec[:, 1:].abs().max() == 0
