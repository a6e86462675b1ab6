"""Figures of Motion Distribution Align on one motion (``perennial bench ood``): distance of the poses to
the avatar's training poses before and after alignment, jerk before and after, semantic preservation.

They need no rendering: :func:`motion_figures` takes the training poses and a test motion's poses.
"""

from __future__ import annotations

import torch

__all__ = ["motion_figures", "semantic_preservation"]


def _covered(train_joints: torch.Tensor, threshold_m: float = 0.03) -> list[int]:
    """Joints whose position (root frame) the training poses move by more than ``threshold_m`` (std)."""
    std = train_joints.std(0).norm(dim=-1)
    return [int(j) for j in (std > threshold_m).nonzero()[:, 0]]


def _corr(a: torch.Tensor, o: torch.Tensor, moving: float) -> tuple[float, int]:
    """Mean Pearson correlation over time of the columns of ``a`` and ``o`` (F, N) whose original ``o`` has a
    std over ``moving``; with the number of such columns (nan, 0 when none)."""
    keep = o.std(0) > moving
    if not keep.any() or o.shape[0] < 3:
        return float("nan"), 0
    a, o = a[:, keep] - a[:, keep].mean(0), o[:, keep] - o[:, keep].mean(0)
    return float(((a * o).sum(0) / (a.norm(dim=0) * o.norm(dim=0)).clamp_min(1e-9)).mean()), int(
        keep.sum()
    )


def semantic_preservation(
    train: torch.Tensor, test: torch.Tensor, aligned: torch.Tensor
) -> dict[str, float]:
    """How much of a test motion's meaning alignment keeps, where the training poses can show it.

    ``correlation`` is over the *degrees of freedom the training poses cover*: per bone, the principal axes
    of its training rotation vectors (:class:`~perennial.motion.align.PoseRange`) along which it moved by
    more than 0.05 rad (std); for each such axis that the test motion moves (std over 0.02 rad), the
    Pearson correlation over time of the aligned and the original coordinate; the mean over them
    (``dofs`` of them; ``correlation_body``: body bones only, no fingers or toes).

    ``correlation_joints`` is the first definition, kept for comparison: joint positions (root frame) of
    the joints the training poses move by over 3 cm (std). It is ill-posed for a narrow training set:
    the training poses of ``bench ood`` (waving) move the right forearm and hand through the elbow only,
    with the upper arm held up; a test motion moves those same joints through the shoulder (a walk's
    arm swing), an axis the training poses never moved, so an output inside the training distribution
    keeps the upper arm up and cannot correlate with that swing; a high value would mean no alignment.
    """
    from perennial.motion.align import PoseRange
    from perennial.motion.prior import BODY_BONES

    rng = PoseRange(train, 0.05)
    co, ca = rng.coords(test.float()), rng.coords(aligned.float())
    body = torch.zeros_like(rng.moved)
    body[list(BODY_BONES)] = True
    corr, n = _corr(ca[:, rng.moved], co[:, rng.moved], 0.02)
    corr_body, n_body = _corr(ca[:, rng.moved & body], co[:, rng.moved & body], 0.02)
    return {"correlation": corr, "dofs": n, "correlation_body": corr_body, "dofs_body": n_body}


def motion_figures(
    train: torch.Tensor, test: torch.Tensor, fps: float = 30.0, align=None
) -> dict[str, float]:
    """Distance to the training poses, jerk and semantic preservation (:func:`semantic_preservation`)
    of one test motion, aligned with ``align`` (an :class:`~perennial.motion.align.AlignConfig`; default
    settings when None)."""
    import numpy as np
    import roma

    from perennial.motion.align import aligner_for, jerk
    from perennial.motion.prior import PoseFK
    from perennial.motion.retrieval import PartIndex, descriptor

    aligned = aligner_for(train, config=align).align(test)
    index = PartIndex(descriptor("body", train), "faiss")

    def dist(rv):
        return float(np.sqrt(index.search(descriptor("body", rv), 1)[0][:, 0].clip(min=0)).mean())

    fk = PoseFK()

    def joints(rv):
        rv = rv.float().clone()
        rv[:, 0] = 0
        with torch.no_grad():
            return fk(roma.rotvec_to_rotmat(rv))

    cov = _covered(joints(train))
    a, o = (
        joints(aligned)[:, cov].reshape(test.shape[0], -1),
        joints(test)[:, cov].reshape(test.shape[0], -1),
    )
    return {"dist_before": dist(test), "dist_after": dist(aligned), "jerk_before": jerk(test, fps, fk),
            "jerk_after": jerk(aligned, fps, fk), **semantic_preservation(train, test, aligned),
            "correlation_joints": _corr(a, o, 0.01)[0], "covered_joints": len(cov)}  # fmt: skip
