"""perennial.avatar.field: the deformable radiance-field avatar (MaintaAvatar-style)."""

from perennial.avatar.field.triplane import TriPlane, TriPlaneConfig
from perennial.avatar.field.triplane_ops import (
    planes_to_table,
    table_to_planes,
    triplane_lookup,
    triplane_lookup_grid_sample,
)

__all__ = [
    "TriPlane",
    "TriPlaneConfig",
    "planes_to_table",
    "table_to_planes",
    "triplane_lookup",
    "triplane_lookup_grid_sample",
]
