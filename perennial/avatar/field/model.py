"""Canonical radiance field with MaintaAvatar's global-local appearance storage.

Every appearance (outfit) owns

- a **geometry code** and a **colour code** (global embeddings, ``code_dim``
  floats each) describing whole-body changes, and
- a **tri-plane** (local embedding): a ``(3 R^2, C)`` feature table over the
  canonical box ``[-1, 1]^3``, read with
  :func:`perennial.avatar.field.triplane.triplane_lookup` (``F.embedding_bag``
  with bilinear weights, channels of the three planes concatenated),

and one **shared MLP** maps a canonical point to density and colour:

.. code-block:: text

    x (normalised canonical position, 3) --+-- PE (3 + 6 L) ------------------+
    tri-plane(x) (3 C)  --------------------+                                   |
    geometry code (code_dim)  --------------+--> Linear-ReLU x2 (width) --> h --+--> Linear -> density
    h, colour code (code_dim)  -----------------> Linear-ReLU (width) -> Linear -> sigmoid -> RGB

Depth and width: 2 trunk layers + density head + 2 colour layers, width 64
(MaintaAvatar uses an 8x256 MLP). Chosen for CPU speed: the detail lives in the
tri-planes, and on the synthetic benchmark a 2-layer trunk rendered 16 % faster
than 3 layers with no loss of held-out PSNR (34.3 vs 33.0 dB, one run each; runs
of the same setting vary by ~0.7 dB); see docs/ARCHITECTURE.md. When rendering, the MLP
runs under bf16 autocast on CPUs with native bf16 matmul (AMX / AVX512-BF16: ~2-4x
faster than fp32), inputs and outputs in float32. ``autocast="auto"`` (the default)
checks the CPU flags (:mod:`perennial.numerics`): on a CPU without them (e.g. an
AVX2-only AMD EPYC) bf16 matmul is emulated and measured ~10x *slower* than fp32, so
the field stays fp32 there. Training stays fp32 under "auto" (see ``FieldConfig.autocast``).

Density is ``softplus(raw) * density_scale`` (1/metre); the colour head ends in
a sigmoid (RGB in [0, 1]).

Appearances live in an ``nn.ModuleDict`` keyed by name: adding one adds slots
(``appearances.<name>.geometry_code`` ...) to the state dict, never a code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perennial.avatar.appearances import AppearanceSet
from perennial.avatar.field.deformer import Deformer, PoseCorrector, PosedBody
from perennial.avatar.field.render import RenderConfig
from perennial.avatar.field.triplane import TriPlane, TriPlaneConfig
from perennial.errors import UnknownAppearanceError
from perennial.numerics import autocast, bf16_enabled

__all__ = ["Appearance", "CanonicalField", "FieldAvatar", "FieldConfig"]


@dataclass(kw_only=True)
class FieldConfig:
    """Shape of the canonical field."""

    code_dim: int = 16
    """Length of each appearance's geometry code and colour code."""
    triplane_resolution: int = 64
    """Tri-plane resolution R (cells per side of each plane over [-1, 1])."""
    triplane_channels: int = 8
    """Channels C per plane (the MLP sees 3 C, the planes concatenated)."""
    triplane_init_std: float = 0.1
    """Standard deviation of the tri-plane features at initialisation."""
    width: int = 64
    """Hidden width of the shared MLP."""
    trunk_layers: int = 2
    """Linear-ReLU layers before the density head."""
    pe_frequencies: int = 4
    """Sin/cos frequencies of the positional encoding of the canonical position."""
    density_scale: float = 20.0
    """Density = softplus(raw) * density_scale, 1/metre."""
    autocast: str = "auto"
    """bf16 autocast of the MLP: ``"on"``, ``"off"``, or ``"auto"``: when rendering without
    gradients, on iff the CPU has AMX-BF16 or AVX512-BF16 or the GPU supports bf16
    (:mod:`perennial.numerics`); while training, off. Measured with ``perennial bench
    continual`` on an AMD EPYC with AVX512-BF16 (docs/bench-continual and its bf16/): bf16
    training ran ~8 % faster but every appearance ended 0.3-0.8 dB lower (base 32.72 vs
    33.31 dB, mean final 28.68 vs 29.26 dB)."""
    pose_width: int = 128
    """Hidden width of the pose corrector (4 layers)."""

    def __post_init__(self) -> None:
        bf16_enabled(self.autocast)  # an unknown mode fails here, not at the first render


class Appearance(nn.Module):
    """Storage of one appearance: global codes plus a local tri-plane table.

    Args:
        config: the field's shape.
    """

    def __init__(self, config: FieldConfig) -> None:
        super().__init__()
        R, C = config.triplane_resolution, config.triplane_channels
        self.resolution = R
        self.geometry_code = nn.Parameter(torch.zeros(config.code_dim))
        self.color_code = nn.Parameter(torch.zeros(config.code_dim))
        tp = TriPlaneConfig(
            channels=C, resolution=R, reduce="concat", init_std=config.triplane_init_std
        )
        self.triplane = TriPlane(tp)
        """Local features: a (3 R^2, C) table, read as (N, 3C) (planes XY | XZ | YZ)."""


def positional_encoding(x: Tensor, frequencies: int) -> Tensor:
    """(N, 3) -> (N, 3 + 6 L): ``x, sin(2^l pi x), cos(2^l pi x)`` for l < L."""
    if frequencies == 0:
        return x
    freq = (2.0 ** torch.arange(frequencies, device=x.device, dtype=x.dtype)) * math.pi
    xf = (x[:, :, None] * freq).reshape(x.shape[0], -1)  # (N, 3 L)
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], -1)


def _linear_with_code(layer: nn.Linear, x: Tensor, code: Tensor) -> Tensor:
    """``layer(cat([x, code.expand(N, -1)], -1))`` without building the concatenation."""
    k = x.shape[1]
    bias = torch.addmv(layer.bias, layer.weight[:, k:], code.to(layer.weight.dtype))
    return nn.functional.linear(x, layer.weight[:, :k], bias)


class CanonicalField(AppearanceSet, nn.Module):
    """Shared MLP over canonical space plus per-appearance storage.

    Appearances are stored in ``self.appearances``, an ``nn.ModuleDict`` keyed by an
    internal *key* (``a0``, ``a1``, ... in the order they were added; avatars written
    before keys existed use the name as key). Names are what users type and may
    hold any character the name rule allows (``.`` included); only keys reach the
    state dict, so no name has to be a valid module name.

    Args:
        config: the field's shape.
        appearances: names of the appearances to create.
        keys: their internal keys (default: ``a0``, ``a1``, ...).
    """

    def __init__(self, config: FieldConfig, appearances: list[str] | tuple[str, ...] = (),
                 keys: list[str] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        c = config
        in_dim = 3 + 6 * c.pe_frequencies + 3 * c.triplane_channels + c.code_dim
        trunk: list[nn.Module] = []
        for i in range(c.trunk_layers):
            trunk += [nn.Linear(in_dim if i == 0 else c.width, c.width), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*trunk)
        self.density_head = nn.Linear(c.width, 1)
        self.color_head = nn.Sequential(
            nn.Linear(c.width + c.code_dim, c.width), nn.ReLU(inplace=True), nn.Linear(c.width, 3)
        )
        self._init_appearances()
        for i, name in enumerate(appearances):
            self.add_appearance(name, key=None if keys is None else keys[i])

    def _new_appearance(self) -> Appearance:
        return Appearance(self.config).to(next(self.trunk.parameters()).device)

    def forward(self, points: Tensor, appearance: str) -> tuple[Tensor, Tensor]:
        """Density and colour at canonical points.

        Args:
            points: (N, 3) normalised canonical positions in [-1, 1]^3
                (:meth:`Deformer.normalize`); points outside are clamped by the lookup.
            appearance: name of the appearance.

        Returns:
            sigma: (N,) float32 density, 1/metre; rgb: (N, 3) float32 in [0, 1].
        """
        app = self.appearance(appearance)
        pe = positional_encoding(points, self.config.pe_frequencies)
        x = torch.cat([pe, app.triplane(points)], -1)  # (N, 3 + 6 L + 3 C)
        mode = self.config.autocast
        if mode == "auto" and torch.is_grad_enabled():
            mode = "off"  # training: fp32 (bf16 training cost ~0.6 dB on the continual bench, see FieldConfig)
        with autocast(mode, points.device):
            # the global codes are the same for every point: their share of the first
            # layers is a bias, so no (N, code_dim) copies are made (same parameters)
            h = _linear_with_code(self.trunk[0], x, app.geometry_code)
            h = self.trunk[1:](h)  # ReLU, Linear, ...: the first layer is done
            raw = self.density_head(h)
            c = _linear_with_code(self.color_head[0], h, app.color_code)
            c = self.color_head[1:](c)
        sigma = nn.functional.softplus(raw.float()[:, 0]) * self.config.density_scale
        return sigma, torch.sigmoid(c.float())


class FieldAvatar(nn.Module):
    """The MaintaAvatar-style avatar: pose corrector + canonical field + deformer.

    Parameter groups: ``corrector`` (MLP_p) and ``field`` (shared MLP and
    appearances). The deformer and the template are not parameters.

    Args:
        template: the body template (shared, not owned).
        phenotype: the person's phenotype values.
        appearances: appearance names to create.
        config: field shape.
        render_config: sampling and compositing settings (its ``margin`` is the
            deformer's margin too).
        keys: the appearances' internal keys (see :class:`CanonicalField`).
    """

    def __init__(
        self,
        template,
        phenotype: dict[str, float] | None = None,
        appearances: list[str] | tuple[str, ...] = (),
        config: FieldConfig | None = None,
        render_config: RenderConfig | None = None,
        keys: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or FieldConfig()
        self.render_config = render_config or RenderConfig()
        self.deformer = Deformer(template, phenotype, margin=self.render_config.margin)
        self.corrector = PoseCorrector(template.bone_names, width=self.config.pose_width)
        self.field = CanonicalField(self.config, appearances, keys)
        self._caster = None  # the ray caster reused by render_image (not state: rebuilt on demand)
        self.prior_info: dict | None = None
        """How ``field.prior`` was learned (``state.json: prior``), when there is one."""

    @property
    def phenotype(self) -> dict[str, float]:
        """The person's phenotype values."""
        return self.deformer.phenotype

    def add_appearance(self, name: str) -> nn.Module:
        """A new appearance, from the prior when there is one (:meth:`CanonicalField.add_appearance`)."""
        return self.field.add_appearance(name)

    def remove_appearance(self, name: str) -> None:
        self.field.remove_appearance(name)

    def appearance(self, name: str) -> nn.Module:
        return self.field.appearance(name)

    @property
    def prior(self) -> nn.Module | None:
        return self.field.prior

    def ensure_prior(self) -> nn.Module:
        return self.field.ensure_prior()

    @property
    def appearance_names(self) -> list[str]:
        """Names of the appearances the avatar holds, in the order they were added."""
        return self.field.names

    def check_appearance(self, name: str, where: str = "") -> None:
        """Raise :class:`~perennial.errors.UnknownAppearanceError` (listing the known names) unless
        the avatar holds appearance ``name``; ``where`` (the avatar folder) starts the message."""
        if name not in self.field.keys:
            raise UnknownAppearanceError(name, self.field.keys, where)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_caster"] = None  # a copy (e.g. the frozen teacher of a learn) builds its own caster
        return state

    def render_image(self, camera, rotvec: Tensor, translation: Tensor, appearance: str,
                     facial_actions: Tensor | None = None, config: RenderConfig | None = None):  # fmt: skip
        """Render one full image without gradients (the avatar protocol of :mod:`perennial.avatar`).

        ``facial_actions`` are accepted and ignored: the field avatar models the body only.
        Returns :class:`~perennial.avatar.field.render.RenderOutput` (``rgb`` (H, W, 3), ``alpha`` (H, W)).
        """
        from perennial.avatar.field.render import render_image

        if self._caster is None:
            from perennial.render.raycast import WarpMeshCaster

            self._caster = WarpMeshCaster(self.deformer.rest_vertices, self.deformer.faces)
        return render_image(self, camera, rotvec, translation, appearance, config, self._caster)

    def pose(self, rotvec: Tensor, translation: Tensor, condition: Tensor | None = None) -> PosedBody:
        """Pose the template for one frame with the pose corrector applied.

        Args:
            rotvec: (J, 3) radians; translation: (3,) world metres.
            condition: (J, 3) what the corrector reads instead of ``rotvec`` (retrieval-augmented
                training; see :meth:`Deformer.pose`).
        """
        return self.deformer.pose(rotvec, translation, self.corrector, condition)
