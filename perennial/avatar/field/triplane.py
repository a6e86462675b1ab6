"""Tri-plane modules: the "local features" of each appearance (MaintaAvatar).

A :class:`TriPlane` stores three axis-aligned feature planes over the canonical
cube ``[-1, 1]^3`` as one ``(3 R^2, C)`` table parameter and reads them with the
functional lookup of :mod:`perennial.avatar.field.triplane_ops` (layout, sampling
convention and speed are documented there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perennial.avatar.field.triplane_ops import (
    _check_reduce,
    _check_resolution,
    table_to_planes,
    triplane_lookup,
)

__all__ = ["TriPlane", "TriPlaneConfig"]


@dataclass(kw_only=True)
class TriPlaneConfig:
    """Configuration of one appearance's tri-plane."""

    channels: int = 16
    """Feature channels C per plane."""
    resolution: int = 128
    """Texels R per plane side; the planes span the canonical cube [-1, 1]^3."""
    init_std: float = 0.1
    """Standard deviation of the normal initialisation of the features."""
    reduce: str = "sum"
    """How the three plane features combine: "sum" -> C features, "concat" -> 3C."""
    sparse: bool = False
    """Sparse gradients for the table (for SparseAdam); dense otherwise."""

    def setup(self, **kwargs) -> TriPlane:
        """One tri-plane; ``kwargs`` (device, dtype, generator) go to :class:`TriPlane`."""
        return TriPlane(self, **kwargs)


def _validate_config(config: TriPlaneConfig) -> None:
    _check_resolution(config.resolution)
    _check_reduce(config.reduce)
    if config.channels < 1:
        raise ValueError(f"channels must be >= 1, got {config.channels}")
    if not config.init_std >= 0:
        raise ValueError(f"init_std must be >= 0, got {config.init_std}")


def _new_table(config: TriPlaneConfig, device, dtype, generator) -> nn.Parameter:
    rows = 3 * config.resolution**2
    table = torch.empty(rows, config.channels, device=device, dtype=dtype or torch.float32)
    table.normal_(0.0, config.init_std, generator=generator)
    return nn.Parameter(table)


class TriPlane(nn.Module):
    """One tri-plane stored as a (3*R*R, C) table parameter.

    Args:
        config: channels, resolution, init_std, reduce, sparse.
        device: where the table lives.
        dtype: table dtype (float32 default).
        generator: RNG for the initialisation (reproducible features).
    """

    def __init__(
        self,
        config: TriPlaneConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config or TriPlaneConfig()
        _validate_config(self.config)
        self.table = _new_table(self.config, device, dtype, generator)

    @property
    def out_features(self) -> int:
        """C for ``reduce="sum"``, 3C for ``"concat"``."""
        return self.config.channels * (3 if self.config.reduce == "concat" else 1)

    def planes(self) -> Tensor:
        """(3, C, R, R) view of the table (e.g. for a total-variation loss)."""
        return table_to_planes(self.table, self.config.resolution)

    def forward(self, points: Tensor) -> Tensor:
        """Features of (N, 3) canonical points -> (N, out_features)."""
        c = self.config
        return triplane_lookup(self.table, points, c.resolution, c.reduce, c.sparse)

    def extra_repr(self) -> str:
        c = self.config
        return f"channels={c.channels}, resolution={c.resolution}, reduce={c.reduce!r}"
