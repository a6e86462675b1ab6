"""Fisher weights of training rays against a brute-force per-ray gradient, and the Fisher term at work."""

from __future__ import annotations

import torch

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.avatar.field.render import RenderConfig, render_rays
from perennial.learn.fisher import FisherConfig, FisherPhotometric, ray_fisher
from perennial.render.camera import Camera
from perennial.render.raycast import WarpMeshCaster

SMALL = FieldConfig(triplane_resolution=16, triplane_channels=4, width=32)


def test_ray_fisher_equals_brute_force_per_ray_gradients(template):
    """With one sample per ray (distinct table rows per ray) the formula is exact."""
    torch.manual_seed(0)
    av = FieldAvatar(template, appearances=["a"], config=SMALL, render_config=RenderConfig(samples=1))
    torch.nn.init.normal_(av.field.appearance("a").triplane.table, std=0.5)
    cam = Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.9], 24, 24, fov_deg=40.0)
    rv, tr = torch.zeros(template.num_bones, 3), torch.tensor([0.0, 0.0, 0.9])
    body = av.pose(rv, tr)
    o, d = cam.rays()
    caster = WarpMeshCaster(body.vertices, template.faces)
    caster.update(body.vertices)
    keep = caster.cast(o, d).mask.nonzero()[:, 0][:12]
    target = torch.rand(keep.numel(), 3)
    tp = av.field.appearance("a").triplane
    captured = {}
    h = tp.register_forward_hook(lambda m, i, out: captured.update(points=i[0].detach(), features=out))
    out = render_rays(av, body, caster, o[keep], d[keep], "a", av.render_config)
    h.remove()
    per_ray = 0.5 * (out.rgb - target).square().sum(-1)
    (g,) = torch.autograd.grad(per_ray.sum(), captured["features"], retain_graph=True)
    w = ray_fisher(g, captured["points"], 1, tp.config.resolution)
    brute = []
    for r in range(keep.numel()):
        (gt,) = torch.autograd.grad(per_ray[r], tp.table, retain_graph=True)
        brute.append(gt.square().sum())
    brute = torch.stack(brute)
    assert (brute > 0).all()
    torch.testing.assert_close(w, brute, rtol=1e-4, atol=1e-10)


def test_fisher_term_samples_by_score_and_learns(tmp_path, template):
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.learn.engine import EngineConfig, train
    from perennial.learn.field_method import training_rays
    from perennial.learn.methods import preset

    cap = synthesize(tmp_path / "c", SynthConfig(cameras=3, frames=1, size=32, supersample=1, test_camera_every=0,
                                                 test_frame_every=0), progress=False)  # fmt: skip
    pixels, _ = cap.read_split("train")
    av = FieldAvatar(template, cap.body_info["phenotype"], [cap.appearance], SMALL)
    rays = training_rays(cap, pixels, preset("field", "create"))
    term = FisherPhotometric(av, rays, cap.appearance, 256, 8, FisherConfig(mix=1.0))
    state = term.init_state(0)
    state["scores"] = torch.full_like(state["scores"], 1e-6)
    state["scores"][7] = 1.0  # all the mass on one pixel
    g = torch.Generator()
    g.set_state(state["rng"])
    *_, ids = term._draw(g, state["scores"])
    assert (ids == 7).float().mean() > 0.99
    state = term.init_state(1)
    first, _ = term(0, state)
    res = train(av, {"all": (list(av.field.parameters()), 1e-2)}, [term], {"rgb": 1.0, "mask": 0.1},
                EngineConfig(steps=60, checkpoint_every=0), progress=False)  # fmt: skip
    last, after = term(0, term.init_state(1))
    assert float(last["rgb"].detach()) < 0.5 * float(first["rgb"].detach()) and res.steps_run == 60
    assert not torch.equal(after["scores"], torch.ones_like(after["scores"]))  # visits moved the scores
