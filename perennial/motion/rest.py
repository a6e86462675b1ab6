"""What retargeting needs from Anny, and Anny's ``local-ref`` kinematics in world deltas.

:class:`AnnyRestInfo` is Anny's identity-pose skeleton (bone heads, parents) and
a set of sole points, computed once by running the model and cached on disk in
``$PERENNIAL_CACHE`` (:func:`rest_info`).

World frame: metres, Z up, the body faces -Y, its left is +X. A bone's *world
delta* ``G_c`` is its posed world orientation times the transpose of its
identity-pose orientation; Anny's ``local-ref`` forward kinematics then reads
``G_c = G_p @ D_c`` (``D_c`` the bone's ``local-ref`` rotation, ``D_0 = G_0``) and
places bone heads at ``j_c = j_p + G_p @ (q_c - q_p)``, with ``q`` the
identity-pose bone heads and ``j_0`` the root translation
(:func:`anny_forward_joints`, :func:`sole_heights`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.util import cache_dir

log = logging.getLogger(__name__)

__all__ = ["AnnyRestInfo", "anny_forward_joints", "rest_info", "sole_heights"]

REST_SCHEMA = 2  # 2: sole points cover the whole foot up to the ankle (a foot lying on its side)


@dataclass
class AnnyRestInfo:
    """What retargeting needs from Anny, computed once from the model.

    Attributes:
        joints: (J, 3) bone heads of the identity pose (zero ``local-ref``
            rotations, root at the origin), metres, world axes.
        parents: (J,) parent index, -1 for the root.
        sole_points: (N, 3) foot vertices below the ankle in the identity pose, metres
            (the sole, and the sides and top of the foot, which touch the floor when
            lying down).
        sole_bones: (N,) the bone each sole point follows rigidly (its dominant
            skinning bone).
    """

    joints: np.ndarray
    parents: np.ndarray
    sole_points: np.ndarray
    sole_bones: np.ndarray

    @classmethod
    def from_template(
        cls, template, sole_band: float = 0.12, max_points: int = 1200
    ) -> AnnyRestInfo:
        """Run the template once in its identity pose.

        Args:
            template: an :class:`~perennial.body.anny.AnnyTemplate`.
            sole_band: keep foot vertices up to this many metres above the foot's
                lowest vertex.
            max_points: keep at most this many sole points (evenly strided).
        """
        rv, tr = template.rest_pose(1)
        with torch.no_grad():
            out = template(rv, tr)
        joints = out.joints[0].double().cpu().numpy()
        verts = out.vertices[0].double().cpu().numpy()
        parts = template.part_labels.cpu().numpy()
        dominant = (
            template.skin_indices.gather(1, template.skin_weights.argmax(1, keepdim=True))[:, 0]
            .cpu()
            .numpy()
        )
        keep = []
        for part in ("foot.L", "foot.R"):
            idx = np.nonzero(parts == template.part_names.index(part))[0]
            z = verts[idx, 2]
            keep.append(idx[z < z.min() + sole_band])
        keep = np.concatenate(keep)
        if len(keep) > max_points:
            keep = keep[np.linspace(0, len(keep) - 1, max_points).round().astype(int)]
        return cls(joints, np.asarray(template.parents), verts[keep], dominant[keep])

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            schema=REST_SCHEMA,
            joints=self.joints,
            parents=self.parents,
            sole_points=self.sole_points,
            sole_bones=self.sole_bones,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AnnyRestInfo:
        with np.load(path, allow_pickle=False) as z:
            if int(z["schema"]) != REST_SCHEMA:
                raise ValueError(f"{path}: rest-info schema {int(z['schema'])} != {REST_SCHEMA}")
            return cls(z["joints"], z["parents"], z["sole_points"], z["sole_bones"])


_REST_CACHE: dict[Any, AnnyRestInfo] = {}


def rest_info(template=None) -> AnnyRestInfo:
    """Anny's identity-pose skeleton and sole points for retargeting.

    Args:
        template: an Anny template to compute it from; when None, a copy cached in
            ``$PERENNIAL_CACHE`` is used (built from the shared template the first time).
    """
    if isinstance(template, AnnyRestInfo):
        return template
    key = id(template) if template is not None else "default"
    if key in _REST_CACHE:
        return _REST_CACHE[key]
    if template is not None:
        info = AnnyRestInfo.from_template(template)
    else:
        from importlib.metadata import version

        path = cache_dir() / f"anny-{version('anny')}-rest-info-v{REST_SCHEMA}.npz"
        info = None
        if path.exists():
            try:
                info = AnnyRestInfo.load(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable rest-info cache %s (%s)", path, e)
        if info is None:
            from perennial.body.anny import load_template

            info = AnnyRestInfo.from_template(load_template())
            info.save(path)
    _REST_CACHE[key] = info
    return info


def anny_forward_joints(
    G: np.ndarray, translation: np.ndarray, rest: AnnyRestInfo, upto: int | None = None
) -> np.ndarray:
    """Bone heads of Anny posed by world deltas (the model's ``local-ref`` kinematics).

    Args:
        G: (F, J, 3, 3) world deltas.
        translation: (F, 3) root position, metres.
        rest: the identity-pose skeleton.
        upto: if given, only this bone's head is computed.

    Returns:
        (F, J, 3) bone heads, metres (equal to the template's ``joints``), or
        (F, 3) for ``upto``.
    """
    F, J = G.shape[:2]
    q, par = rest.joints, rest.parents
    if upto == 0:
        return translation.copy()
    if upto is not None:  # only the chain from the root down to bone `upto`
        chain = [upto]
        while par[chain[-1]] > 0:
            chain.append(par[chain[-1]])
        j = translation.copy()
        for c in reversed(chain):
            j = j + G[:, par[c]] @ (q[c] - q[par[c]])
        return j
    j = np.empty((F, J, 3))
    j[:, 0] = translation
    for c in range(1, J):  # parents come before children in Anny's order
        p = par[c]
        j[:, c] = j[:, p] + G[:, p] @ (q[c] - q[p])
    return j


def sole_heights(G: np.ndarray, translation: np.ndarray, rest: AnnyRestInfo) -> np.ndarray:
    """(F,) height of the lowest sole point of either foot per frame, metres.

    Sole points move rigidly with their dominant bone (an approximation of the
    skinned mesh good to a few millimetres at the sole).
    """
    j = anny_forward_joints(G, translation, rest)
    k = rest.sole_bones
    d = rest.sole_points - rest.joints[k]  # (N, 3)
    # z[f, n] = j[f, k_n, 2] + sum_b G[f, k_n, 2, b] * d[n, b]
    z = j[:, k, 2] + np.einsum("fnb,nb->fn", G[:, k, 2, :], d)
    return z.min(1)
