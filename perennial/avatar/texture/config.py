"""The shape of a texture avatar: :class:`TextureConfig` (saved as plain data in ``state.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from perennial.avatar.texture.raster import BACKENDS
from perennial.avatar.texture.texture import TEXTURE_KINDS
from perennial.errors import ConfigError
from perennial.numerics import bf16_enabled

__all__ = ["TextureConfig"]


@dataclass(kw_only=True)
class TextureConfig:
    """Shape of the neural-texture avatar."""

    texture: str = "uv"
    """Neural texture kind: ``"uv"`` (atlas over Anny's UVs) or ``"triplane"`` (rest-space tri-plane)."""
    texture_size: int = 240
    """Atlas side T in texels (or tri-plane resolution R). 16 x 240^2 float32 = 3.69 MB."""
    texture_channels: int = 16
    """Feature channels C of the texture."""
    texture_init_std: float = 0.1
    """Standard deviation of the texture's normal initialisation."""
    latent_dim: int = 32
    """Length of each appearance's latent (the generator's style)."""
    face_channels: int = 8
    """Channels of the face map."""
    face_hidden: int = 16
    """Hidden channels of the face CNN."""
    face_offset_scale: float = 100.0
    """Multiplies the rest-space expression offsets (metres) fed to the face CNN."""
    hand_sigma: float = 0.008
    """Half thickness of the finger lines of the hand map, metres."""
    widths: tuple[int, ...] = (16, 32, 48, 64)
    """Generator channels per UNet level, full resolution first (0.21 M parameters). On a 128^2
    synthetic capture (8 cameras x 10 frames, 600 Adam steps at lr 5e-3, 32 held-out views,
    one run each) 16-32-48-64 reached 33.4 dB, 8-16-32-64 33.3 dB, 8-32-48-64 32.1 dB; alone
    on the 512^2 frame's 208 x 480 window 16-32-48-64 takes 29.6 ms bf16 / 50.1 ms fp32 and
    8-16-32-64 20.4 / 26.7 ms (``bench_generator_widths``). Equal quality within one run's
    noise: the wider full-resolution level (room for texture detail) keeps both frame-rate
    targets (see the module), 8-16-32-64 is the lighter setting for a busy CPU."""
    margin: float = 0.05
    """The generator window is the covered pixels' box widened on each side by this fraction
    of the box's larger side (at least 4 pixels): room for what lies just off the mesh."""
    face_map: bool = True
    """Feed the face map to the generator (off: zeros; for the ablation of the face map)."""
    hand_map: bool = True
    """Feed the hand map to the generator (off: zeros; for the ablation of the hand map)."""
    spatial_attention: bool = False
    """Spatial criss-cross attention between the body map and the map of the mesh pushed out along its
    normals (:mod:`~perennial.avatar.texture.attention`): room for what stands off the body. The setting for
    loose clothes: on a synthetic skirt LPIPS 0.003 lower over ten seeds at 128^2 and PSNR 0.5 dB higher over
    six at 256^2, the painted outfit no worse, frames ~1.15x longer (docs/bench-temporal/seeds)."""
    temporal_attention: bool = False
    """Temporal criss-cross attention with the previous frame's body map (a clip renders causally). Measured
    no help on 30-view captures (LPIPS +0.006, tLPIPS not lower; docs/bench-temporal/seeds)."""
    attention_reduction: int = 8
    """The attention's maps are the generator window's grid divided by this (a 256^2 frame's 120 x 240
    window: 15 x 30 cells; 4 cost about twice the time of 8 on the 2-core CPU)."""
    attention_channels: int = 8
    """Channels of the attention's queries and keys."""
    expand: float = 0.06
    """How far the expanded mesh of the spatial attention is pushed out along the normals, metres."""
    raster: str = "warp"
    """Surface raster path: ``"warp"`` (ray casting the body box) or ``"torch"`` (z-buffer twin)."""
    autocast: str = "auto"
    """bf16 autocast of the generator: ``"on"``, ``"off"`` or ``"auto"`` (on iff the CPU has
    AMX-BF16 or AVX512-BF16, or the GPU supports bf16; see :mod:`perennial.numerics`)."""

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        bf16_enabled(self.autocast)  # an unknown mode fails here
        if self.texture not in TEXTURE_KINDS:
            raise ConfigError(f"texture must be one of {TEXTURE_KINDS}, got {self.texture!r}")
        if self.raster not in BACKENDS:
            raise ConfigError(f"raster must be one of {BACKENDS}, got {self.raster!r}")
        if self.texture_size < 2 or self.texture_channels < 1 or self.latent_dim < 1:
            raise ConfigError("need texture_size >= 2, texture_channels >= 1, latent_dim >= 1")
        if not 2 <= len(self.widths) <= 5 or min(self.widths) < 1:
            raise ConfigError(f"widths must be 2 to 5 positive channel counts, got {self.widths}")
        if self.margin < 0 or self.hand_sigma <= 0:
            raise ConfigError("need margin >= 0 and hand_sigma > 0")
        if self.attention_reduction < 1 or self.attention_channels < 1 or not self.expand > 0:
            raise ConfigError("need attention_reduction >= 1, attention_channels >= 1 and expand > 0")

    @property
    def in_channels(self) -> int:
        """Channels the generator reads: texture + coverage + hands (5) + face."""
        return self.texture_channels + 1 + 5 + self.face_channels
