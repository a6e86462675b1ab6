"""Skeleton recognition, ASF/AMC, fingers, ``motion inspect`` and bench motion.

Conventions other than CMU are generated from the CMU samples
(:mod:`tests.motion_conventions`): same world motion, other names, nesting, units,
axes, rest pose, channels and helper bones. Retargeting them without a map must give
the CMU map's motion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from perennial.body.rig import ANNY_BONES
from perennial.motion import CMU_BONE_MAP, parse_bvh, read_bvh, rest_info
from perennial.motion.bonemap import EVAL_BONES, RetargetError, load_bone_map
from perennial.motion.names import joint_name
from perennial.motion.rest import anny_forward_joints
from perennial.motion.retarget import retarget_world
from perennial.motion.skeleton_detect import SkeletonError, detect_skeleton

sys.path.insert(0, str(Path(__file__).parent))
from motion_conventions import Convention, conventions, convert, write_asf_amc  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "motion"
CMU = DATA / "cmu"
needs_cmu = pytest.mark.skipif(not (CMU / "131_01.bvh").is_file(), reason="CMU sample clips not found")
BODY = [i for i, b in enumerate(ANNY_BONES) if not b.startswith(("finger", "metacarpal", "toe", "eye"))]
EXPECTED_UNITS = {"mixamo": 0.01, "unreal": 0.01, "daz": 0.01, "biped": 0.0254, "cc": 0.01, "unity": 1.0,
                  "rokoko": 0.001, "motionbuilder": 0.01}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "side", "role", "helper"),
    [
        ("mixamorig:LeftUpLeg", "L", "thigh", False), ("CC_Base_R_Calf", "R", "shin", False),
        ("Bip01 L Thigh", "L", "thigh", False), ("thigh_l", "L", "thigh", False), ("lThighBend", "L", "thigh", False),
        ("lThighTwist", "L", "thigh", True), ("lfemur", "L", "thigh", False), ("LeftHip", "L", "thigh", False),
        ("LHipJoint", "L", "pelvis_side", True), ("hip", "", "pelvis", False), ("Hips", "", "pelvis", False),
        ("LeftLeg", "L", "shin", False), ("rtibia", "R", "shin", False), ("LeftAnkle", "L", "foot", False),
        ("ball_r", "R", "toe", False), ("LeftToe_End", "L", "toe", True), ("LeftShoulder", "L", "shoulder", False),
        ("LeftCollar", "L", "clavicle", False), ("lShldrBend", "L", "upperarm", False), ("LeftArm", "L", "upperarm", False),
        ("LeftForeArm", "L", "forearm", False), ("lowerarm_r", "R", "forearm", False), ("lhand", "L", "hand", False),
        ("LeftHandIndex1", "L", "finger", False), ("Left Thumb Proximal", "L", "finger", False),
        ("Bip01 R Finger12", "R", "finger", False), ("upperarm_twist_01_l", "L", "upperarm", True),
        ("CC_Base_NeckTwist01", "", "neck", False), ("CC_Base_L_ForearmTwist01", "L", "forearm", True),
        ("abdomenLower", "", "spine", False), ("lowerback", "", "spine", False), ("Spine2", "", "spine", False),
        ("HeadTop_End", "", "", True), ("CC_Base_L_Eye", "L", "", True), ("ik_foot_root", "", "", True),
    ],
)  # fmt: skip
def test_joint_names(name, side, role, helper):
    j = joint_name(name)
    assert (j.side, j.role, j.helper) == (side, role, helper), j


@pytest.fixture(scope="module")
def cmu_walk():
    return read_bvh(CMU / "131_01.bvh").subset(slice(0, 600, 20))  # 30 frames: standing, then walking


def _posture_error(J: np.ndarray, J0: np.ndarray) -> float:
    """Mean distance (m) between two posed skeletons (F, J, 3) after removing each frame's
    mean position and one turn of the whole clip about the vertical."""
    a, b = J - J.mean(1, keepdims=True), J0 - J0.mean(1, keepdims=True)
    M = np.einsum("fji,fjk->ik", a[..., :2], b[..., :2])
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    a[..., :2] = a[..., :2] @ R
    return float(np.linalg.norm(a - b, axis=-1).mean())


@needs_cmu
def test_cmu_is_recognised_as_the_builtin_map(cmu_walk):
    det = detect_skeleton(cmu_walk)
    m = det.bone_map
    assert (m.bones, m.modes, m.evaluate) == (CMU_BONE_MAP.bones, CMU_BONE_MAP.modes, CMU_BONE_MAP.evaluate)
    assert m.scale == pytest.approx(0.056444, rel=1e-4) and (m.up, m.forward, m.reference) == ("+y", "+z", "rest")
    assert det.convention == "cmu" and set(det.ignored) == {"LHipJoint", "RHipJoint", "LeftWrist", "RightWrist",
                                                            "LFingers", "LThumb", "RFingers", "RThumb"}  # fmt: skip
    assert any("neutral" in n for n in det.notes)  # one joint per finger: hands stay neutral


@needs_cmu
@pytest.mark.parametrize("key", list(EXPECTED_UNITS))
def test_conventions_match_the_cmu_map(cmu_walk, key, template):
    from perennial.motion.evaluate import motion_figures
    from perennial.motion.retarget import retarget

    conv: Convention = conventions()[key]
    bvh = parse_bvh(convert(cmu_walk, conv), f"{key}.bvh")
    det = detect_skeleton(bvh)
    m = det.bone_map
    assert det.convention == conv.label
    assert m.scale == pytest.approx(EXPECTED_UNITS[key], rel=1e-6)
    assert (m.up, m.forward) == (conv.up, conv.forward)
    assert (m.reference == "auto") == (conv.orient is not None)  # a rest along local axes is no pose
    rest = rest_info(template)
    G0, t0, _ = retarget_world(cmu_walk, rest, CMU_BONE_MAP)
    G, t, _ = retarget_world(bvh, rest, m)
    J0, J = anny_forward_joints(G0, t0, rest), anny_forward_joints(G, t, rest)
    assert _posture_error(J, J0) < 0.03  # every bone within 3 cm on average
    assert _posture_error(J[:, BODY], J0[:, BODY]) < 0.03
    if conv.orient is None:  # same rest pose: the same motion up to rounding
        np.testing.assert_allclose(J, J0, atol=1e-3)
    clip = retarget(bvh, rest, bone_map=m)
    figs = motion_figures(bvh, clip, template, m)
    assert figs["mean_joint_error_cm"] <= 5.0, figs
    assert figs["worst_foot_penetration_cm"] <= 1.0, figs
    assert figs["torso_lean_deg"] <= 5.0, figs
    fingers = [i for i, b in enumerate(ANNY_BONES) if b.startswith(("finger", "metacarpal"))]
    assert clip.rotvec[:, fingers].abs().max() == 0  # no finger joints: Anny's neutral hands


@needs_cmu
def test_fingers_drive_anny(cmu_walk, template):
    conv = conventions()["daz"]
    conv.fingers = {"lHand": "l{f}{k}", "rHand": "r{f}{k}"}
    bvh = parse_bvh(convert(cmu_walk, conv), "fingers.bvh")
    m = detect_skeleton(bvh).bone_map
    rest = rest_info(template)
    G, _, _ = retarget_world(bvh, rest, m)
    from perennial.motion.kinematics import forward_kinematics

    P, _ = forward_kinematics(bvh)
    C, q = m.axes(), rest.joints
    for s in "LR":
        for k, word in enumerate(("Thumb", "Index", "Mid", "Ring", "Pinky"), 1):
            for i in (1, 2):  # the two aimed phalanges of each finger
                b, c = ANNY_BONES.index(f"finger{k}-{i}.{s}"), ANNY_BONES.index(f"finger{k}-{i + 1}.{s}")
                assert m.bones[ANNY_BONES[b]] == f"{s.lower()}{word}{i}"
                anny = G[:, b] @ (q[c] - q[b])
                src = (P[:, bvh.index(f"{s.lower()}{word}{i + 1}")] - P[:, bvh.index(f"{s.lower()}{word}{i}")]) @ C.T
                cos = (anny * src).sum(-1) / np.linalg.norm(anny, axis=-1) / np.linalg.norm(src, axis=-1)
                assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1.0
    # the fingers curl and open with the source: the index's bend changes over the clip
    D = np.einsum("fab,fac->fbc", G[:, ANNY_BONES.index("finger2-1.L")], G[:, ANNY_BONES.index("finger2-2.L")])
    bend = np.degrees(np.arccos(np.clip((np.trace(D, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.ptp(bend) > 20


@needs_cmu
def test_asf_amc_reads_back_the_motion(tmp_path, cmu_walk):
    from perennial.motion.asf import read_amc
    from perennial.motion.kinematics import forward_kinematics
    from perennial.motion.load import load_motion

    write_asf_amc(cmu_walk, tmp_path / "07.asf", tmp_path / "07_01.amc")
    (tmp_path / "08.asf").write_text((tmp_path / "07.asf").read_text())  # another actor beside it
    amc = read_amc(tmp_path / "07_01.amc")  # finds 07.asf by the actor's name
    assert amc.unit_scale == pytest.approx(0.0254 / 0.45) and amc.fps == 120.0
    P, _ = forward_kinematics(cmu_walk)
    Pa, _ = forward_kinematics(amc)
    for n in amc.names:
        np.testing.assert_allclose(Pa[:, amc.index(n)], P[:, cmu_walk.index("Hips" if n == "root" else n)], atol=1e-6)
    det = detect_skeleton(amc)
    assert det.bone_map.scale == pytest.approx(0.0254 / 0.45) and det.scale_note == "the file's unit"
    clip = load_motion(tmp_path / "07_01.amc")
    assert clip.num_frames == cmu_walk.num_frames


def _asf_pair(tmp_path: Path, cmu_walk) -> tuple[Path, Path]:
    write_asf_amc(cmu_walk.subset(slice(0, 3)), tmp_path / "HDM_xx.asf", tmp_path / "HDM_xx_walk_001_120.amc")
    return tmp_path / "HDM_xx.asf", tmp_path / "HDM_xx_walk_001_120.amc"


@needs_cmu
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("LeftKnee ", "LeftKnie ", 1), "bone 'LeftKnie' is not in the skeleton"),
        (lambda t: t.replace("\nLeftKnee ", "\nLeftKnee 1e ", 1), "needs 3 values, got 4"),
        (lambda t: t.replace("\nLeftKnee ", "\nLeftKnee x", 1), "bad number for bone 'LeftKnee'"),
        (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("Head ")), "'Head' is missing from frame"),
    ],
)
def test_amc_errors_name_file_and_line(tmp_path, cmu_walk, edit, message):
    from perennial.motion.asf import ASFError, read_amc

    _, amc = _asf_pair(tmp_path, cmu_walk)
    amc.write_text(edit(amc.read_text()))
    with pytest.raises(ASFError, match=message) as info:
        read_amc(amc)
    assert str(amc) in str(info.value)


@needs_cmu
def test_amc_without_skeleton(tmp_path, cmu_walk):
    from perennial.motion.asf import ASFError, read_amc

    asf, amc = _asf_pair(tmp_path, cmu_walk)
    asf.unlink()
    with pytest.raises(ASFError, match=r"no \.asf skeleton .* pass the skeleton with --asf"):
        read_amc(amc)


@pytest.mark.skipif(not (DATA / "hdm05" / "1" / "HDM_bd.asf").is_file(), reason="HDM05 sample not found")
def test_hdm05_take(template):
    from perennial.motion.asf import read_amc
    from perennial.motion.evaluate import motion_figures
    from perennial.motion.retarget import retarget

    amc = read_amc(next((DATA / "hdm05" / "1").glob("HDM_bd_*.amc"))).subset(slice(0, 240, 4))
    det = detect_skeleton(amc)
    assert det.convention == "cmu-asf" and (det.bone_map.up, det.bone_map.forward) == ("+y", "+z")
    clip = retarget(amc, template, bone_map=det.bone_map)
    figs = motion_figures(amc, clip, template, det.bone_map)
    assert figs["mean_joint_error_cm"] <= 6.0 and figs["worst_foot_penetration_cm"] <= 1.0, figs
    assert figs["torso_lean_deg"] <= 5.0, figs


ARM_ONLY = """HIERARCHY
ROOT Chest
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT LeftArm
  {
    OFFSET 10 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT LeftHand
    {
      OFFSET 25 0 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 8 0 0
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.033333
0 0 0 0 0 0 0 0 0 0 0 0
0 0 0 0 0 0 10 0 0 0 0 0
"""


def test_unmappable_file_says_what_is_missing(tmp_path, capsys):
    from perennial.cli import main

    path = tmp_path / "arm.bvh"
    path.write_text(ARM_ONLY)
    with pytest.raises(SkeletonError, match=r"arm\.bvh: cannot recognise a human skeleton: no left foot .*"
                                            r"no right hand .*The file has: Chest, LeftArm, LeftHand"):  # fmt: skip
        detect_skeleton(parse_bvh(ARM_ONLY, str(path)))
    assert issubclass(SkeletonError, RetargetError)
    for args in (["motion", "inspect", str(path)], ["motion", "render", str(path), "--out", str(tmp_path / "a.gif")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no left foot" in err and str(path) in err
    assert main(["motion", "import", str(path), "--out", str(tmp_path / "bank"), "--quiet"]) == 2
    assert "nothing imported" in capsys.readouterr().err and not (tmp_path / "bank").exists()


@needs_cmu
def test_inspect_writes_a_map_that_import_uses(tmp_path, capsys, cmu_walk):
    from perennial.cli import main
    from perennial.motion import load_bank

    src = tmp_path / "biped.bvh"
    src.write_text(convert(cmu_walk.subset(slice(0, 8)), conventions()["biped"]))
    assert main(["motion", "inspect", str(src), "--write-map", str(tmp_path / "map.json")]) == 0
    out = capsys.readouterr().out
    for text in ("convention  3dsmax-biped", "scale       0.0254 m per file unit (inferred: inch)", "up          +z",
                 "forward     -y", "Bip01 L Thigh", "-> upperleg01.L (reach)", "the joints below them): Bip01, ", "HeadNub"):
        assert text in out, out
    bmap = load_bone_map(tmp_path / "map.json")
    assert bmap.bones["foot.R"] == "Bip01 R Foot" and bmap.scale == pytest.approx(0.0254)
    assert main(["motion", "inspect", str(src), "--map", str(tmp_path / "map.json")]) == 0
    assert "convention  bone map" in capsys.readouterr().out
    assert main(["motion", "import", str(src), "--out", str(tmp_path / "b1"), "--quiet"]) == 0
    assert "skeleton of biped.bvh: 3dsmax-biped" in capsys.readouterr().out
    assert main(["motion", "import", str(src), "--out", str(tmp_path / "b2"), "--map", str(tmp_path / "map.json"),
                 "--quiet"]) == 0  # fmt: skip
    a, b = load_bank(tmp_path / "b1"), load_bank(tmp_path / "b2")
    np.testing.assert_allclose(a.poses()[0].numpy(), b.poses()[0].numpy(), atol=1e-5)


@needs_cmu
def test_import_folder_with_amc_and_bench(tmp_path, capsys, cmu_walk):
    from perennial.cli import main
    from perennial.motion import load_bank

    folder = tmp_path / "mocap"
    folder.mkdir()
    write_asf_amc(cmu_walk.subset(slice(0, 10)), folder / "07.asf", folder / "07_01.amc")
    (folder / "mixamo.bvh").write_text(convert(cmu_walk.subset(slice(0, 10)), conventions()["mixamo"]))
    assert main(["motion", "import", str(folder), "--out", str(tmp_path / "bank"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 imported, 0 skipped" in out and "07.asf" not in out
    assert sorted(load_bank(tmp_path / "bank").names) == ["07_01", "mixamo"]
    assert main(["bench", "motion", "--bvh", str(folder), "--json", str(tmp_path / "bench.json")]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())["motion"]
    assert len(res["clips"]) == 2 and res["failed_files"] == 0
    for conv in ("mixamo", "cmu"):
        for k in ("mean_joint_error_cm", "worst_foot_penetration_cm", "torso_lean_deg", "foot_skating_cm_s",
                  "source_foot_skating_cm_s", "import_frames_per_s"):
            assert isinstance(res[f"{conv}.{k}"], float), (conv, k)


def test_eval_bones_unchanged():
    assert set(CMU_BONE_MAP.evaluate) == set(EVAL_BONES)
