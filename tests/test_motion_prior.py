"""Pose prior (VAE), Motion Distribution Align, ``motion prior`` and ``render --align``."""

import roma
import torch

from perennial.motion.align import AlignConfig
from perennial.motion.clip import MotionClip
from perennial.motion.prior import (
    PoseFK,
    PosePrior,
    PriorConfig,
    default_prior,
    load_prior,
    mirror,
    pose_errors,
    train_prior,
)
from perennial.motion.procedural import procedural_motion


def _poses():
    """Built-in motions as a small bank: (N, J, 3) poses and clip ids."""
    rv, ids = [], []
    for i, name in enumerate(("walk", "wave", "squat", "turn")):
        r, _ = procedural_motion(name, 40)
        rv.append(r)
        ids.append(torch.full((40,), i))
    return torch.cat(rv), torch.cat(ids)


def test_fk_matches_rest_and_mirror_is_an_involution():
    from perennial.motion.rest import rest_info

    R = torch.eye(3).expand(2, 104, 3, 3)
    joints = torch.as_tensor(rest_info().joints, dtype=torch.float32)
    assert torch.allclose(PoseFK()(R)[1], joints, atol=1e-5)
    rv, _ = _poses()
    assert torch.equal(mirror(mirror(rv)), rv)
    # the left and right thighs of a walk swing in opposite senses; mirrored, they trade places
    walk = rv[:40]
    m = mirror(walk)
    assert torch.allclose(m[:, 2], walk[:, 22] * torch.tensor([1.0, -1.0, -1.0]))


def test_prior_learns_and_round_trips(tmp_path):
    rv, ids = _poses()
    cfg = PriorConfig(
        hidden=64, latent=8, steps=300, batch=64, lr=3e-3, kl=1e-3, holdout=0, mirror=False, seed=1
    )
    untrained = pose_errors(PosePrior(cfg), rv)
    prior = train_prior(rv, ids, cfg, progress=False)
    err = prior.info["train"]
    assert (
        err["deg_body"] < 0.4 * untrained["deg_body"]
        and err["joint_cm"] < 0.4 * untrained["joint_cm"]
    )
    path = prior.save(tmp_path / "p.safetensors")
    back = load_prior(path)
    assert back.config == cfg and back.info["train"] == err
    assert torch.equal(back.reconstruct(rv[:5]), prior.reconstruct(rv[:5]))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    try:
        load_prior(tmp_path / "bad.safetensors")
    except Exception as e:
        assert "bad.safetensors" in str(e)
    else:
        raise AssertionError("a corrupt prior loaded")


def test_default_prior_reconstructs_unseen_builtin_motions():
    prior = default_prior()
    assert prior.info["heldout"]["poses"] > 1000  # it prints held-out figures of clips it never saw
    rv, _ = _poses()
    e = pose_errors(prior, rv)
    rest = rv.clone()
    rest[:, 0] = 0
    fk = PoseFK()
    R = roma.rotvec_to_rotmat(rest)
    zero_cm = 100 * float((fk(R) - fk(torch.eye(3).expand_as(R))).norm(dim=-1).mean())
    # CMU-trained, it has never seen these synthetic poses: joints land closer than the rest pose would put them
    assert e["joint_cm"] < 0.7 * zero_cm and e["deg_body"] < 10.0


def test_cli_motion_prior_and_render_align(tmp_path, template):
    from perennial.avatar.drive import render_motion
    from perennial.avatar.field.model import FieldAvatar
    from perennial.cli import main
    from perennial.motion.bank import write_index
    from perennial.render.camera_paths import camera_path

    bank = tmp_path / "bank"
    rows = []
    for name in ("walk", "wave", "squat"):
        rv, off = procedural_motion(name, 30)
        MotionClip(rv, off, 30.0, name).save(bank / "clips" / f"{name}.npz")
        rows.append((name, name, 30))
    write_index(bank, 30.0, rows, [], True, {})
    out = tmp_path / "prior.safetensors"
    assert main(["motion", "prior", str(bank), "--out", str(out), "--steps", "20", "--hidden", "32",
                 "--holdout", "3", "--quiet"]) == 0  # fmt: skip
    assert load_prior(out).info["heldout"]["poses"] == 30
    assert main(["motion", "prior", str(bank), "--out", str(out), "--quiet"]) == 2  # exists

    avatar = FieldAvatar(template, None, ["a"])
    wave, _ = procedural_motion("wave", 6)
    walk, off = procedural_motion("walk", 3)
    tr = off + torch.tensor([0.0, 0.0, 0.9])
    cams = camera_path("front", tr, 24)
    plain = list(render_motion(avatar, "a", cams, walk, tr))
    aligned = list(
        render_motion(
            avatar,
            "a",
            cams,
            walk,
            tr,
            align=True,
            poses={"a": {"rotvec": wave}},
            align_config=AlignConfig(steps=100),
        )
    )
    assert len(aligned) == 3 and aligned[0].rgb.shape == (24, 24, 3)
    assert not torch.equal(
        plain[0].alpha, aligned[0].alpha
    )  # the aligned legs stand: another silhouette
