"""Fisher-weighted training rays for few-shot appearances (MCL-NF's FIM loss, derived here).

**Model.** A training ray ``r`` of the new appearance has target colour ``y_r`` and
rendered colour ``c_r(theta)``, ``theta`` the appearance's own parameters. Under a
Gaussian pixel model ``p(y_r | theta) = N(c_r(theta), sigma^2 I)``,

    log p(y_r | theta) = -||y_r - c_r(theta)||^2 / (2 sigma^2) + const,

its score is ``s_r = J_r^T e_r / sigma^2`` with ``J_r = d c_r / d theta`` and
``e_r = y_r - c_r``, and the ray's (empirical) Fisher information is
``F_r = s_r s_r^T``, of trace ``||s_r||^2``. A ray with a large trace is one the
appearance still explains badly *and* whose parameters it moves strongly: the
informative rays. We weight by ``w_r = ||J_r^T e_r||^2`` (``sigma`` cancels in
the normalisation below).

**Computing it.** ``theta`` is dominated by the tri-plane table (3 x 64^2 x 8 = 98k
numbers against 32 for the two codes), so ``w_r`` is taken over the table. A
sample ``k`` of ray ``r`` reads on each plane ``p`` four rows with bilinear
weights ``a_{kpc}``: its features are ``f_{kp} = sum_c a_{kpc} T[row_{kpc}]``, so
``dL_r/dT[row_{kpc}] = a_{kpc} dL_r/df_{kp}``. When the rows a ray reads are
distinct (samples 0.75 cm apart over 8 mm-plus texels: mostly),

    ||dL_r/dT||^2 = sum_k sum_p (sum_c a_{kpc}^2) ||dL_r/df_{kp}||^2,

where ``sum_c a_{kpc}^2`` is :func:`~perennial.avatar.field.triplane_ops.corner_weight_norms`
and ``dL_r/df_k`` of every sample comes from one backward of ``sum_r L_r`` to the
features (``L_r`` depends on its own samples only), with ``L_r = ||e_r||^2 / 2``
so that ``dL_r/dtheta = -J_r^T e_r``. Rows shared by two samples of one ray make
this an approximation (``tests/test_fisher.py`` checks it is exact when they are
not, against a brute-force per-ray gradient).

**Use.** Loss weights ``omega_r = clip(w_r / mean(w), low, high)`` re-weight the
colour loss of the step, ``sum_r omega_r L_r / sum_r omega_r``; and every pixel
keeps a score (an exponential average of its ``w_r / mean(w)``, unseen pixels 1),
from which a fraction ``mix`` of each step's rays is drawn in proportion, the rest
uniformly. The scores are the term's state (checkpointed with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.avatar.field.render import render_rays
from perennial.avatar.field.triplane_ops import corner_weight_norms
from perennial.errors import ConfigError
from perennial.learn.field_terms import Photometric, TrainingRays, _gen, _out
from perennial.render.raycast import Hit

__all__ = ["FisherConfig", "FisherPhotometric", "ray_fisher"]


@dataclass(kw_only=True)
class FisherConfig:
    """Fisher-weighted loss and importance sampling of the new appearance's rays."""

    mix: float = 0.5
    """Fraction of a step's rays drawn in proportion to their pixels' Fisher scores (the rest uniformly)."""
    low: float = 0.25
    """Smallest loss weight, as a multiple of the batch's mean Fisher weight."""
    high: float = 4.0
    """Largest loss weight, as a multiple of the batch's mean Fisher weight."""
    decay: float = 0.5
    """A pixel's score keeps this share of its old value at each visit (exponential average)."""

    def __post_init__(self) -> None:
        if not (0 <= self.mix <= 1 and 0 <= self.decay < 1 and 0 < self.low <= 1 <= self.high):
            raise ConfigError(f"fisher: need mix in [0, 1], decay in [0, 1), 0 < low <= 1 <= high; got {self}")


def ray_fisher(feature_grads: Tensor, points: Tensor, samples: int, resolution: int) -> Tensor:
    """Per-ray Fisher weight ``sum_k sum_p (sum_c a_kpc^2) ||dL_r/df_kp||^2`` (module docstring).

    Args:
        feature_grads: (R S, 3 C) gradient of ``sum_r L_r`` w.r.t. the tri-plane features of
            every sample (planes concatenated XY | XZ | YZ), rays major.
        points: (R S, 3) the samples' normalised canonical positions.
        samples: S, samples per ray.
        resolution: the tri-plane's R.

    Returns:
        (R,) non-negative weights.
    """
    n, c3 = feature_grads.shape
    per_plane = feature_grads.float().view(n, 3, c3 // 3).square().sum(-1)  # (R S, 3)
    return (per_plane * corner_weight_norms(points, resolution)).view(-1, samples * 3).sum(-1)


class FisherPhotometric(Photometric):
    """:class:`~perennial.learn.field_terms.Photometric` with Fisher-weighted loss and ray sampling.

    State: the generator and ``scores`` (one per candidate pixel of every training view).
    """

    def __init__(self, avatar, rays: TrainingRays, appearance: str, rays_per_step: int, samples: int,
                 config: FisherConfig) -> None:  # fmt: skip
        super().__init__(avatar, rays, appearance, rays_per_step, samples)
        self.config = config
        self.offsets: dict[int, list[int]] = {}
        total = 0
        for f in rays.order:
            self.offsets[f] = []
            for v in rays.frames[f]:
                self.offsets[f].append(total)
                total += v.pixels.numel()
        self.total = total

    def init_state(self, seed: int) -> dict[str, Tensor]:
        return {**super().init_state(seed), "scores": torch.ones(self.total)}

    def _draw(self, g: torch.Generator, scores: Tensor):
        """Frame, then ``n`` pixels of its views: a share by score, the rest uniform.

        Returns: frame, origins, dirs, rgb, mask (n, ...), and the pixels' flat score ids (n,).
        """
        rays, n = self.rays, self.n
        f = rays.order[int(torch.randint(len(rays.order), (1,), generator=g))]
        views, offs = rays.frames[f], self.offsets[f]
        flat = torch.cat([o + torch.arange(v.pixels.numel()) for o, v in zip(offs, views)])
        k = int(round(self.config.mix * n))
        uniform = flat[torch.randint(flat.numel(), (n - k,), generator=g)]
        weighted = flat[torch.multinomial(scores[flat], k, replacement=True, generator=g)] if k else flat[:0]
        ids = torch.cat([weighted, uniform])
        bounds = torch.tensor(offs + [offs[-1] + views[-1].pixels.numel()])
        view_of = torch.bucketize(ids, bounds[1:], right=True)
        parts, order = [], []
        for i, v in enumerate(views):
            sel = (view_of == i).nonzero()[:, 0]
            if sel.numel():
                px = v.pixels[ids[sel] - offs[i]]
                parts.append((v.origins[px], v.dirs[px], v.rgb[px], v.mask[px]))
                order.append(ids[sel])
        o, d, rgb, mask = (torch.cat(x) for x in zip(*parts))
        return f, o, d, rgb, mask, torch.cat(order)

    def __call__(self, step: int, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        g = _gen(state)
        scores = state["scores"].clone()
        f, o, d, rgb, mask, ids = self._draw(g, scores)
        rotvec, translation = self.rays.body_params(f)
        body = self.avatar.pose(rotvec, translation)
        self.caster.update(body.vertices)
        hit = self.caster.cast(o, d)
        keep = hit.mask.nonzero()[:, 0]
        scores[ids[~hit.mask]] *= self.config.decay  # a miss teaches the appearance nothing
        if keep.numel() == 0:
            return {}, {**_out(g), "scores": scores}
        captured = {}
        tp = self.avatar.field.appearance(self.appearance).triplane

        def grab(module, inputs, output):
            captured["points"], captured["features"] = inputs[0].detach(), output

        handle = tp.register_forward_hook(grab)
        try:
            sub = Hit(hit.face[keep], hit.bary[keep], hit.depth[keep])
            out = render_rays(self.avatar, body, self.caster, o[keep], d[keep], self.appearance, self.cfg,
                              jitter=True, hit=sub)  # fmt: skip
        finally:
            handle.remove()
        per_ray = 0.5 * (out.rgb - rgb[keep]).square().sum(-1)  # L_r = ||e_r||^2 / 2
        (grads,) = torch.autograd.grad(per_ray.sum(), captured["features"], retain_graph=True)
        w = ray_fisher(grads, captured["points"], self.cfg.samples, tp.config.resolution)
        rel = w / w.mean().clamp_min(1e-12)
        omega = rel.clamp(self.config.low, self.config.high)
        c = self.config.decay
        scores[ids[keep]] = c * scores[ids[keep]] + (1 - c) * rel
        losses = {"rgb": (omega * per_ray).sum() / omega.sum() * (2.0 / 3.0),  # a mean squared error, as rgb
                  "mask": (out.alpha - mask[keep]).square().mean()}  # fmt: skip
        return losses, {**_out(g), "scores": scores}
