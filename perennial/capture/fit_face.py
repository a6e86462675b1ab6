"""The face stage of :func:`~perennial.capture.fit.fit_body`: facial actions and head pose to the face mesh.

Anny's points under MediaPipe's 478 face-mesh points (:mod:`perennial.capture.face_calibrate`)
are moved by the 52 facial actions (sigmoid of free logits, kept sparse and smooth over time) and
the neck and head rotations; the loss compares them with each frame's face mesh after the best 2D
similarity of the two (the expression, apart from where the head is), plus a weak term on the
plain reprojection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.capture.keypoints import skin_subset

MIN_FACE_SPREAD_PX = 20.0
"""Faces whose points lie on average closer than this to their centre (a face under ~60 px wide) are not
read: in a full-body 512 px frame (a face ~35 px wide) the fitted expressions were no closer to the
truth than a neutral face (``perennial bench capture``)."""


def fit_face(template, obs, cfg, objective, rest, rotvec: Tensor,
              translation: Tensor, focal: Tensor, bar) -> tuple[Tensor, Tensor, float]:  # fmt: skip
    """Facial actions (F, 52) and the neck and head rotations that put Anny's face-mesh points
    (:mod:`perennial.capture.face_calibrate`) on each frame's face mesh; returns them with the pose and
    the median residual in pixels."""
    from perennial.capture.face_calibrate import load_face_correspondence

    ids, bary, valid = load_face_correspondence()
    flat = ids.reshape(-1)
    basis = template.facial_basis(rest)[:, flat]  # (52, 478 * 3, 3)
    x_rest = rest.vertices[flat]
    head = torch.tensor([ANNY_BONES.index(b) for b in ("neck01", "neck02", "neck03", "head")])
    rows = torch.arange(len(obs.body))
    w = (obs.face_score[:, None] * valid[None] * torch.isfinite(obs.face[..., :2]).all(-1)).float()
    target = obs.face[..., :2].nan_to_num()
    logit = torch.full((obs.frames, basis.shape[0]), -4.0, requires_grad=True)
    head_rot = rotvec[:, head].clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [logit], "lr": 0.05}, {"params": [head_rot], "lr": 0.005}])
    fine = objective.scale / 5  # face features are small: 0.2 % of the image diagonal
    spread = target - (w[..., None] * target).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)[..., None]
    size = ((w * spread.norm(dim=-1)).sum(1) / w.sum(1).clamp_min(1)).clamp_min(1.0)  # face size per row, px
    w = w * (size >= MIN_FACE_SPREAD_PX)[:, None]
    if not bool(w.any()):  # no face large enough to read an expression from: neutral faces
        bar.update(cfg.face_steps)
        return rotvec, torch.zeros(obs.frames, basis.shape[0]), float("nan")
    for _ in range(cfg.face_steps):
        rv = rotvec.index_copy(1, head, head_rot)
        _, T = template.pose_rest(rv, translation, rest, vertices=False)
        actions = torch.sigmoid(logit)
        x = x_rest + torch.einsum("fa,avc->fvc", actions, basis)
        posed = skin_subset(template, x, T, flat).view(obs.frames, -1, 3, 3)
        pts = (posed * bary[None, ..., None]).sum(2)  # (F, 478, 3)
        uv = objective.project(rows, objective.camera(rows, obs.frame, pts), focal)
        err = (uv - target).norm(dim=-1)
        # the expression, apart from where the head is: residuals after each row's best 2D similarity
        shape = (_align_2d(uv, target, w) - target).norm(dim=-1) / size[:, None]
        fit = (w * F.huber_loss(shape, torch.zeros_like(shape), reduction="none", delta=0.02)).sum() \
            / w.sum().clamp_min(1) * 100 + 0.1 * (w * err / fine).sum() / w.sum().clamp_min(1)  # fmt: skip
        sparse = 0.3 * actions.mean()  # actions stay off without evidence
        smooth = cfg.smooth * 0.01 * (actions[1:] - actions[:-1]).pow(2).mean() if obs.frames > 1 else 0.0
        keep = cfg.prior * (head_rot - rotvec[:, head]).pow(2).sum(-1).mean()
        loss = fit + sparse + smooth + keep
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update()
    seen = w > 0
    residual = float(err.detach()[seen].median()) if seen.any() else float("nan")
    return rotvec.index_copy(1, head, head_rot.detach()), torch.sigmoid(logit.detach()), residual


def _align_2d(p: Tensor, q: Tensor, w: Tensor) -> Tensor:
    """``p`` (N, K, 2) moved by the weighted least-squares 2D similarity (rotation, scale, shift) onto ``q``."""
    wn = w / w.sum(1, keepdim=True).clamp_min(1e-9)
    mp, mq = (wn[..., None] * p).sum(1, keepdim=True), (wn[..., None] * q).sum(1, keepdim=True)
    P, Q = p - mp, q - mq
    n = (wn * P.pow(2).sum(-1)).sum(1).clamp_min(1e-9)
    a = (wn * (P[..., 0] * Q[..., 0] + P[..., 1] * Q[..., 1])).sum(1) / n
    b = (wn * (P[..., 0] * Q[..., 1] - P[..., 1] * Q[..., 0])).sum(1) / n
    a, b = a[:, None], b[:, None]
    return torch.stack([a * P[..., 0] - b * P[..., 1], b * P[..., 0] + a * P[..., 1]], -1) + mq
