"""perennial.avatar.texture: the real-time neural-texture avatar (RAM-Avatar core).

Modules, from the bottom up: ``raster`` (per-pixel surface coordinates), ``texture``
(neural texture), ``face`` (face map), ``hands`` (hand map), ``generator`` (StyleUNet),
``model`` (:class:`TextureAvatar`, :class:`TextureConfig`).
"""

from perennial.avatar.texture.model import STAGES, TextureAvatar, TextureConfig, TextureRenderOutput

__all__ = ["STAGES", "TextureAvatar", "TextureConfig", "TextureRenderOutput"]
