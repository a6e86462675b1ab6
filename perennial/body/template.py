"""The body-template protocol every avatar component is written against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


@dataclass
class BodyOutput:
    """A posed body (world frame, metres, Z up, the body faces -Y).

    Attributes:
        vertices: (B, V, 3) posed vertices.
        joints: (B, J, 3) bone heads (joint positions).
        bone_poses: (B, J, 4, 4) world pose of each bone.
        transforms: (B, J, 4, 4) skinning transforms, rest space -> posed space
            (``bone_poses @ rest_bone_poses^-1``).
        rest_vertices: (B or 1, V, 3) the unposed (rest) mesh for these phenotypes.
    """

    vertices: Tensor
    joints: Tensor
    bone_poses: Tensor
    transforms: Tensor
    rest_vertices: Tensor


@dataclass
class RestState:
    """The unposed body of one phenotype (see ``BodyTemplate.rest_state``).

    Attributes:
        vertices: (V, 3) rest mesh, metres (neutral face: no facial actions).
        bone_poses: (J, 4, 4) rest pose of each bone.
        phenotype: (6,) the phenotype values it was made for (None if unknown).
        facial_basis: (A, V, 3) rest-space vertex offsets of the A facial actions at
            weight 1, metres (``BodyTemplate.facial_basis``); None until first needed.
    """

    vertices: Tensor
    bone_poses: Tensor
    phenotype: Tensor | None = None
    facial_basis: Tensor | None = None


class BodyTemplate(Protocol):
    """A skinned, posable body mesh.

    Implementations hold buffers only (stateless, like smplx's layers): pose,
    shape and expression come in through ``forward``.
    """

    bone_names: tuple[str, ...]
    parents: tuple[int, ...]
    faces: Tensor  # (F, 3) int64 triangles
    skin_indices: Tensor  # (V, K) int64 bone ids
    skin_weights: Tensor  # (V, K) float32, rows sum to 1
    part_labels: Tensor  # (V,) int64 index into part_names
    part_names: tuple[str, ...]

    @property
    def num_bones(self) -> int: ...

    @property
    def num_vertices(self) -> int: ...

    def forward(
        self,
        rotvec: Tensor,
        translation: Tensor,
        phenotype: Tensor | dict[str, float] | None = None,
        facial_actions: Tensor | None = None,
    ) -> BodyOutput: ...

    def rest_state(self, phenotype: Tensor | dict[str, float] | None = None) -> RestState:
        """The rest body of one phenotype, computed once per person."""
        ...

    def facial_basis(self, rest: RestState | Tensor | dict[str, float] | None = None) -> Tensor:
        """(A, V, 3) rest-space offsets of the facial actions at weight 1 (linear blendshapes)."""
        ...

    def pose_rest(
        self,
        rotvec: Tensor,
        translation: Tensor,
        rest: RestState,
        vertices: bool = True,
        facial_actions: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        """(posed vertices (B, V, 3) or None, skinning transforms (B, J, 4, 4)) of a rest state,
        with ``facial_actions`` (B, A) added to the rest mesh through :meth:`facial_basis`."""
        ...
