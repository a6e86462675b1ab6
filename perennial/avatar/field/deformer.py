"""Observation space -> canonical (rest) space: pose correction and inverse LBS.

MaintaAvatar deforms every sample of a camera ray from the posed ("observation")
space of a frame into the canonical space of the body template, where the
radiance field lives. Two pieces do that here:

- :class:`PoseCorrector` (MaintaAvatar's ``MLP_p``): a 4-layer MLP that reads
  the rotation vectors of the major body bones (no fingers, toes, eyes or root)
  and adds a residual rotation vector to each of them. Its last layer starts at
  zero, so a fresh corrector is the identity. It is its own module with its own
  parameter group (and is what pose distillation later constrains).
- :class:`Deformer`: poses the Anny template with the corrected pose, and maps
  points back to the rest space by inverse linear blend skinning with the
  template's skinning weights.

Canonical space is Anny's rest space for the capture's phenotype (metres, Z up,
the body faces -Y, root at the origin). :meth:`Deformer.normalize` maps it to
the ``[-1, 1]^3`` box the tri-planes use.

Skinning weights of a sample (two modes, see :meth:`Deformer.canonical_rays`
and :meth:`Deformer.canonical_points`):

- ``"ray"`` (default, the fast path): all samples of a ray take the weights of
  the ray's first hit on the posed mesh. The renderer samples a thin shell
  (``±margin``) around that hit, so the samples' true closest surface point is
  within ``margin`` of it; the approximation only differs from per-point
  weights where the weights change quickly across the shell (near joints, and
  where the shell pierces a thin limb to the other side). It needs one 3x3
  inverse per ray instead of one closest-point query and one solve per sample.
- ``"point"``: per sample, the weights of its closest point on the posed mesh
  (:func:`perennial.body.lbs.inverse_lbs` with ``iterations=0``); samples
  farther than ``margin`` from the posed surface are reported empty.

Measured on the shared 2-core CPU (AMD EPYC, AVX2), 16 samples on each of the
7.6 k rays that hit the body in a 256^2 frame (122 k samples): ``"ray"`` ~7 ms,
``"point"`` ~1.4 s (one BVH closest-point query per sample dominates), so the
renderer uses ``"ray"``; ``"point"`` stays as the reference twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perennial.body.lbs import (
    SurfaceQuery,
    apply_transforms,
    blend_transforms,
    inverse_lbs,
    surface_weights,
)
from perennial.body.rig import ANNY_BONES

__all__ = [
    "MAJOR_BONES",
    "Deformer",
    "PoseCorrector",
    "PosedBody",
    "major_bones",
]


def major_bones(bone_names: tuple[str, ...] | list[str] = ANNY_BONES) -> tuple[str, ...]:
    """The bones the pose corrector reads and corrects.

    Everything but the root (global orientation, left to the capture), fingers,
    metacarpals, toes and eyes: 35 bones of Anny's ``anny`` rig.
    """
    skip = ("root", "finger", "metacarpal", "toe", "eye")
    return tuple(b for b in bone_names if not b.startswith(skip))


MAJOR_BONES: tuple[str, ...] = major_bones()
"""Bones of the ``anny`` rig seen and corrected by :class:`PoseCorrector`."""


class PoseCorrector(nn.Module):
    """MaintaAvatar's pose-correction MLP (``MLP_p``): residual rotation vectors.

    ``corrected[:, m] = rotvec[:, m] + MLP(rotvec[:, major].flatten())[m]`` for
    the major bones ``m``; other bones pass through unchanged. ``depth`` linear
    layers of ``width`` with ReLU between them; the last layer is zero-initialised
    so the corrector starts as the identity.

    Args:
        bone_names: (J,) bone names of the rig, in model order.
        major: the bones to read and correct (default :func:`major_bones`).
        width: hidden width.
        depth: number of linear layers (MaintaAvatar: 4).
    """

    def __init__(
        self,
        bone_names: tuple[str, ...] | list[str] = ANNY_BONES,
        major: tuple[str, ...] | None = None,
        width: int = 128,
        depth: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        names = list(bone_names)
        major = major_bones(names) if major is None else tuple(major)
        unknown = [b for b in major if b not in names]
        if unknown:
            raise ValueError(f"unknown bones for the pose corrector: {unknown}")
        self.num_bones = len(names)
        self.register_buffer(
            "index", torch.tensor([names.index(b) for b in major]), persistent=False
        )
        m = len(major)
        layers: list[nn.Module] = []
        dims = [3 * m] + [width] * (depth - 1) + [3 * m]
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def residual(self, rotvec: Tensor) -> Tensor:
        """Residual rotation vectors of the major bones.

        Args:
            rotvec: (B, J, 3) local-ref rotation vectors, radians.

        Returns:
            (B, M, 3) residuals in radians, M = number of major bones.
        """
        if rotvec.ndim != 3 or rotvec.shape[1:] != (self.num_bones, 3):
            raise ValueError(f"rotvec must be (B, {self.num_bones}, 3), got {tuple(rotvec.shape)}")
        x = rotvec[:, self.index].reshape(rotvec.shape[0], -1)
        return self.mlp(x).reshape(rotvec.shape[0], -1, 3)

    def forward(self, rotvec: Tensor) -> Tensor:
        """(B, J, 3) corrected pose: the residual added to the major bones' rotation vectors."""
        res = self.residual(rotvec)
        return rotvec.index_add(1, self.index, res)


@dataclass
class PosedBody:
    """The template posed for one frame.

    Attributes:
        rotvec: (J, 3) corrected pose, radians (differentiable w.r.t. the corrector).
        vertices: (V, 3) posed vertices, world metres (no gradient; for ray casting).
        transforms: (J, 4, 4) rest -> posed bone transforms (differentiable).
        vertex_transforms: (V, 3, 4) each vertex's blended rest -> posed transform, the
            top three rows (no gradient; skins the mesh and, interpolated, the hits).
    """

    rotvec: Tensor
    vertices: Tensor
    transforms: Tensor
    vertex_transforms: Tensor


class Deformer:
    """Inverse LBS from a frame's observation space to the template's rest space.

    Holds the template (a shared, stateless module, not owned), the rest mesh
    of one phenotype and the dense (V, J) skinning weights. Not an
    ``nn.Module``: it has no parameters; the pose corrector is passed in.

    Args:
        template: the body template (``perennial.body.anny.AnnyTemplate``).
        phenotype: phenotype values (dict name -> [0, 1]) of the person.
        margin: samples farther than this from the posed surface are empty, metres.
    """

    def __init__(
        self, template, phenotype: dict[str, float] | None = None, margin: float = 0.06
    ) -> None:
        self.template = template
        self.phenotype = dict(phenotype or {})
        self.margin = float(margin)
        self.rest = template.rest_state(self.phenotype)
        rest = self.rest.vertices
        self.rest_vertices = rest
        self.faces = template.faces
        self.vertex_weights = template.dense_skin_weights()
        lo = rest.min(0).values - self.margin
        hi = rest.max(0).values + self.margin
        self.center = (lo + hi) / 2
        self.half_extent = (hi - lo) / 2
        self._posed_query: SurfaceQuery | None = None
        self._rest_query: SurfaceQuery | None = None

    def pose(
        self, rotvec: Tensor, translation: Tensor, corrector: PoseCorrector | None = None,
        condition: Tensor | None = None,
    ) -> PosedBody:  # fmt: skip
        """Pose the template for one frame.

        Args:
            rotvec: (J, 3) local-ref rotation vectors of the frame, radians.
            translation: (3,) root position, world metres.
            corrector: optional pose corrector applied first.
            condition: (J, 3) the pose the corrector reads instead of ``rotvec`` (retrieval-augmented
                training); its residual is added to ``rotvec``, which alone is skinned.

        Returns:
            :class:`PosedBody`; ``transforms`` carries gradients to ``corrector``.
        """
        rv = rotvec[None].float()
        if corrector is not None and condition is not None:
            rv = rv.index_add(1, corrector.index, corrector.residual(condition[None].float()))
        elif corrector is not None:
            rv = corrector(rv)
        # forward kinematics of the cached rest body (the phenotype is fixed), then linear
        # blend skinning with the dense weights: one (V, J) x (J, 12) product gives every
        # vertex's transform, which also serves the rays' hit points (surface_transforms)
        _, transforms = self.template.pose_rest(rv, translation[None].float(), self.rest, vertices=False)
        with torch.no_grad():
            J = transforms.shape[1]
            vt = (self.vertex_weights @ transforms[0, :, :3].reshape(J, 12)).view(-1, 3, 4)
            verts = (vt[:, :, :3] * self.rest_vertices[:, None, :]).sum(-1) + vt[:, :, 3]
        return PosedBody(rotvec=rv[0], vertices=verts, transforms=transforms[0], vertex_transforms=vt)

    def surface_transforms(self, face: Tensor, bary: Tensor, body: PosedBody) -> Tensor:
        """(R, 3, 4) blended transforms at surface points (face ids, barycentrics), no gradient.

        Equal to ``blend_transforms(hit_weights(face, bary), body.transforms)[:, :3]`` (skinning
        is linear in the weights): the per-vertex transforms interpolated like the weights,
        gathering (R, 12) rows instead of (R, J) ones.
        """
        vt = body.vertex_transforms.reshape(-1, 12)
        return surface_weights(self.faces, face, bary, vt).view(-1, 3, 4)

    def hit_weights(self, face: Tensor, bary: Tensor) -> Tensor:
        """(R, J) skinning weights at surface points given by face id and barycentrics.

        Args:
            face: (R,) int triangle ids (negative ids are clamped to 0; mask them yourself).
            bary: (R, 3) barycentric weights.
        """
        return surface_weights(self.faces, face, bary, self.vertex_weights)

    def canonical_rays(self, points: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
        """Inverse LBS with one set of skinning weights per ray ("ray" mode).

        Args:
            points: (R, S, 3) posed-space samples, world metres.
            weights: (R, J) skinning weights of each ray (e.g. :meth:`hit_weights`).
            transforms: (J, 4, 4) rest -> posed bone transforms.

        Returns:
            (R, S, 3) rest-space points, metres; differentiable w.r.t. ``points``
            and ``transforms``.
        """
        A = blend_transforms(weights, transforms)  # (R, 4, 4)
        Minv = torch.linalg.inv(A[:, :3, :3])  # (R, 3, 3)
        # x_c[r, s, i] = sum_k Minv[r, i, k] * (p[r, s, k] - t[r, k])
        return torch.einsum("rik,rsk->rsi", Minv, points - A[:, None, :3, 3])

    def canonical_points(self, points: Tensor, body: PosedBody) -> tuple[Tensor, Tensor]:
        """Inverse LBS with per-point closest-surface weights ("point" mode).

        Args:
            points: (N, 3) posed-space samples, world metres.
            body: the posed body of the frame.

        Returns:
            canonical: (N, 3) rest-space points, metres.
            inside: (N,) bool, False where the point is farther than ``margin``
                from the posed surface (empty space).
        """
        if self._posed_query is None:
            self._posed_query = SurfaceQuery(body.vertices, self.faces)
            self._rest_query = SurfaceQuery(self.rest_vertices, self.faces)
        else:
            self._posed_query.update(body.vertices)
        inv = inverse_lbs(
            points, self._posed_query, self._rest_query, self.vertex_weights, body.transforms,
            iterations=0,
        )  # fmt: skip
        # no max_dist=margin: inverse_lbs gives points beyond max_dist all-zero weights and a
        # singular solve, so query without a bound and mask by distance instead
        return inv.canonical, inv.distance <= self.margin

    def forward_skin(self, canonical: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
        """Forward LBS of (N, 3) rest points with (N, J) weights: the inverse's twin for tests."""
        return apply_transforms(blend_transforms(weights, transforms), canonical)

    def normalize(self, canonical: Tensor) -> Tensor:
        """Rest-space metres -> the ``[-1, 1]^3`` box around the rest mesh (padded by ``margin``)."""
        return (canonical - self.center) / self.half_extent
