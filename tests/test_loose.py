"""Loose garments: cloth shells that stand off the body, follow it with lag, and render with exact masks."""

from __future__ import annotations

import json

import pytest
import torch

from perennial.capture.loose import LOOSE_KINDS, build_shell, draw_loose, simulate
from perennial.capture.outfit import Outfit
from perennial.capture.synth import SynthConfig, synthesize
from perennial.errors import ConfigError
from perennial.motion.procedural import procedural_motion


@pytest.fixture(scope="module")
def body(template):
    with torch.no_grad():
        out = template(*template.rest_pose(1))
    return out.rest_vertices[0]


def _shell(template, body, kind):
    return build_shell(draw_loose(kind, Outfit.from_name("outfit-a")), body, template.part_labels,
                       template.part_names, template.skin_dense)  # fmt: skip


@pytest.mark.parametrize("kind", LOOSE_KINDS)
def test_shells_stand_off_the_body_and_face_outwards(template, body, kind):
    shell = _shell(template, body, kind)
    assert torch.allclose(shell.weights.sum(1), torch.ones(len(shell.rest)), atol=1e-5)
    assert shell.faces.max() < len(shell.rest) and shell.u.min() == 0 and shell.u.max() == 1
    # standing off: no shell vertex is within 1 cm of the torso or legs (of a trouser leg: of
    # its own leg; the two legs' tubes meet at the crotch), the hem is further out
    def near(names, points):
        keep = torch.zeros(len(body), dtype=torch.bool)
        for n in names:
            keep |= template.part_labels == template.part_names.index(n)
        return torch.cdist(points, body[keep]).amin(1)

    if kind == "trousers":
        left = shell.rest[:, 0] > 0
        dist = torch.where(left, near(("upperleg.L", "lowerleg.L"), shell.rest),
                           near(("upperleg.R", "lowerleg.R"), shell.rest))  # fmt: skip
    else:
        dist = near(("torso", "upperleg.L", "upperleg.R", "lowerleg.L", "lowerleg.R"), shell.rest)
    assert dist.min() > 0.01
    assert dist[shell.u == 1].mean() > 0.05
    # faces wound outwards: the normal points away from the shell's axis at that height
    tri = shell.rest[shell.faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = tri.mean(1)
    axis = torch.zeros_like(centre)
    for tube in (shell.rest[:, 0] >= 0, shell.rest[:, 0] < 0) if kind == "trousers" else (None,):
        pts = shell.rest if tube is None else shell.rest[tube]
        in_tube = slice(None) if tube is None else tube[shell.faces[:, 0]]
        axis[in_tube] = pts.mean(0)
    outward = ((centre - axis)[:, :2] * normal[:, :2]).sum(-1) > 0
    assert outward.float().mean() > 0.97


def test_shell_follows_the_body_with_lag(template, body):
    shell = _shell(template, body, "skirt")
    rotvec, _ = procedural_motion("walk", 6)
    trans = torch.zeros(6, 3)
    trans[3:, 1] = -0.5  # the body jumps 0.5 m forward at frame 3
    with torch.no_grad():
        transforms = template(rotvec, trans).transforms
    posed = simulate(shell, transforms)
    # the skinned targets, one frame at a time
    targets = torch.einsum("sj,tjab->tsab", shell.weights, transforms[:, :, :3, :])
    targets = (targets[..., :3] @ shell.rest[None, :, :, None])[..., 0] + targets[..., 3]
    top, hem = shell.u == 0, shell.u == 1
    assert torch.allclose(posed[:, top], targets[:, top], atol=1e-5)  # the waist is sewn on
    assert torch.allclose(posed[0], targets[0])
    lag = (posed - targets).norm(dim=-1)
    assert lag[3, hem].mean() > 0.05  # the hem trails behind the jump ...
    assert lag.max() <= shell.garment.max_lag + 1e-5  # ... by at most max_lag
    assert (posed[3, hem, 1] - targets[3, hem, 1]).mean() > 0  # behind = towards +Y
    # no motion, no lag: a body standing still keeps its skirt where skinning puts it
    still = simulate(shell, transforms[:1].expand(4, -1, -1, -1))
    assert torch.allclose(still, targets[:1].expand(4, -1, -1), atol=1e-5)


def test_synth_with_a_loose_garment(tmp_path, template):
    cfg = dict(cameras=2, frames=3, size=48, supersample=2, test_camera_every=2, test_frame_every=3, motion="walk")
    plain = synthesize(tmp_path / "plain", SynthConfig(**cfg), progress=False)
    dress = synthesize(tmp_path / "dress", SynthConfig(**cfg, loose="dress"), progress=False)
    meta = json.loads((tmp_path / "dress" / "synth.json").read_text())
    assert meta["loose"]["kind"] == "dress" and meta["config"]["loose"] == "dress"
    assert "loose" not in json.loads((tmp_path / "plain" / "synth.json").read_text())
    grown = []
    for vp, vd in zip(plain.views, dress.views):
        mp, md = plain.load_mask(vp), dress.load_mask(vd)
        img = dress.load_image(vd)
        assert img[md == 0].abs().max() == 0  # black outside the exact mask
        assert set(md.unique().tolist()) >= {0.0, 1.0}
        grown.append(float((md > 0.5).float().sum() / (mp > 0.5).float().sum()))
        # the dress covers the legs' pixels and more
        assert float(((mp > 0.5) & (md < 0.5)).float().sum()) <= 0.02 * float((mp > 0.5).sum())
    assert min(grown) > 1.1
    with pytest.raises(ConfigError, match="loose"):
        SynthConfig(loose="cape")
    assert draw_loose("any", Outfit.from_name("x")).kind in LOOSE_KINDS
