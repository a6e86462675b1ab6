"""The one training engine: generic loop, named groups, strict loss weights, explicit policy state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perennial.errors import ConfigError
from perennial.evaluate.metrics import psnr
from perennial.learn.engine import EngineConfig, check_weights, generator_state, train
from perennial.learn.methods import get_method, preset


class Quadratic:
    """A toy term: ``fit`` pulls a linear map towards a target on random inputs from its own generator."""

    name = "quadratic"
    losses = ("fit",)

    def __init__(self, model: nn.Linear, target: torch.Tensor) -> None:
        self.model, self.target = model, target

    def init_state(self, seed):
        return generator_state(seed)

    def __call__(self, step, state):
        g = torch.Generator()
        g.set_state(state["rng"])
        x = torch.randn(16, 3, generator=g)
        return {"fit": (self.model(x) - x @ self.target.T).square().mean()}, {"rng": g.get_state()}


def toy(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2, bias=False)
    return model, Quadratic(model, torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]))


def test_engine_is_generic_and_learns():
    model, term = toy()
    with torch.no_grad():
        first = float(term(0, term.init_state(0))[0]["fit"])
    res = train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0},
                EngineConfig(steps=300, checkpoint_every=0, monitor="fit"), progress=False)  # fmt: skip
    with torch.no_grad():
        last = float(term(0, term.init_state(1))[0]["fit"])
    assert res.steps_run == 300 and last < 1e-3 * first


def test_weights_must_name_exactly_the_losses():
    model, term = toy()
    with pytest.raises(ConfigError, match=r"missing \['fit'\], unknown \['fti'\]"):
        check_weights([term], {"fti": 1.0})
    with pytest.raises(ConfigError, match="produced by both"):
        check_weights([term, term], {"fit": 1.0})
    with pytest.raises(ConfigError, match="missing"):
        train(model, {"all": (list(model.parameters()), 0.1)}, [term], {}, EngineConfig(steps=1), progress=False)
    with pytest.raises(ConfigError, match="nothing to train"):
        train(model, {"all": (list(model.parameters()), 0.0)}, [term], {"fit": 1.0}, EngineConfig(steps=1),
              progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        EngineConfig(steps=0)


def test_frozen_group_and_named_groups():
    model, term = toy()
    other = nn.Linear(2, 2)
    before = other.weight.detach().clone()
    both = nn.ModuleDict({"a": model, "b": other})
    train(both, {"a": (list(model.parameters()), 0.05), "b": (list(other.parameters()), 0.0)}, [term],
          {"fit": 1.0}, EngineConfig(steps=5, checkpoint_every=0), progress=False)  # fmt: skip
    assert torch.equal(other.weight, before)
    # a frozen group computes no gradients while training and is trainable again afterwards
    assert other.weight.grad is None and other.weight.requires_grad and model.weight.grad is not None


def test_resume_continues_exactly(tmp_path):
    """A run stopped after its checkpoint and resumed ends where the uninterrupted run ends:
    the term's generator state travels in and out of every step and through the checkpoint."""
    cfg = EngineConfig(steps=20, checkpoint_every=10, monitor="fit")
    model, term = toy()
    train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0}, cfg, progress=False)
    whole = model.weight.detach().clone()

    from perennial.learn import engine

    real = engine.save_checkpoint

    def stop(*args, **kw):
        real(*args, **kw)
        raise KeyboardInterrupt

    model, term = toy()
    engine.save_checkpoint = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0}, cfg, tmp_path / "ck",
                  progress=False)  # fmt: skip
    finally:
        engine.save_checkpoint = real
    model, term = toy(seed=5)  # other initial weights: everything must come from the checkpoint
    res = train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0}, cfg, tmp_path / "ck",
                resume=True, progress=False)  # fmt: skip
    assert res.steps_run == 10
    torch.testing.assert_close(model.weight, whole, rtol=0, atol=1e-7)
    with pytest.raises(Exception, match="checkpoint is of"):
        train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0}, cfg, tmp_path / "ck",
              tag={"other": 1}, resume=True, progress=False)  # fmt: skip


@pytest.mark.parametrize("autocast", ["off", "on"])
def test_field_method_learns_a_tiny_capture(tmp_path, template, autocast):
    """Both numeric paths: PSNR of a training view rises by more than 5 dB in 150 steps of 512 rays."""
    from perennial.avatar.field.model import FieldAvatar, FieldConfig
    from perennial.avatar.field.render import render_image
    from perennial.capture.synth import SynthConfig, synthesize

    cap = synthesize(tmp_path / "cap", SynthConfig(cameras=3, frames=2, size=32, supersample=2, test_camera_every=0,
                                                   test_frame_every=0), progress=False)  # fmt: skip
    view = cap.views_of("train")[0]
    rv, tr, _ = cap.body_params(view.frame)
    gt = cap.load_image(view)
    avatar = FieldAvatar(template, cap.body_info["phenotype"], [cap.appearance], FieldConfig(autocast=autocast))
    before = float(psnr(render_image(avatar, cap.cameras[view.camera], rv, tr, cap.appearance).rgb.permute(2, 0, 1), gt.permute(2, 0, 1)))
    m = get_method("field")
    cfg = preset(m, "create", steps=150, rays_per_step=512, checkpoint_every=0, seed=1)
    pixels, _ = cap.read_split("train")
    groups, terms = m.prepare(avatar, cap.appearance, cap, pixels, [], {}, cfg)
    assert set(groups) == {"appearance", "shared", "pose"} and [t.name for t in terms] == ["photometric", "tv"]
    res = train(avatar, groups, terms, cfg.loss_weights, cfg.engine, progress=False)
    out = render_image(avatar, cap.cameras[view.camera], rv, tr, cap.appearance)
    after = float(psnr(out.rgb.permute(2, 0, 1), gt.permute(2, 0, 1)))
    assert after > before + 5.0, (before, after)
    assert res.steps_run > 140 and res.train_psnr > 20.0
    assert torch.mean((out.alpha - cap.load_mask(view)) ** 2) < 0.02


def test_a_time_budget_stops_the_run_and_drives_the_schedule():
    model, term = toy()
    cfg = EngineConfig(steps=10_000_000, checkpoint_every=0, monitor="fit", seconds=0.5, lr_final=0.01)
    import time

    t0 = time.perf_counter()
    res = train(model, {"all": (list(model.parameters()), 0.05)}, [term], {"fit": 1.0}, cfg, progress=False)
    assert 0 < res.steps_run < 10_000_000 and time.perf_counter() - t0 < 5.0
    with pytest.raises(ConfigError, match="seconds must be >= 0"):
        EngineConfig(seconds=-1.0)
