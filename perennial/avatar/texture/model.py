"""The real-time neural-texture avatar (RAM-Avatar core).

One frame, given a camera (or a pixel window of it), the pose, the facial actions
and an appearance:

1. **pose**: the person's cached rest body plus ``actions @ facial_basis``, forward
   kinematics and dense-weight skinning (:meth:`AnnyTemplate.pose_rest`);
2. **raster**: the visible surface per pixel (:mod:`~perennial.avatar.texture.raster`);
   the rest of the frame works in the *generator window*: the covered pixels' box
   widened by ``margin`` (a fraction of the box's larger side), inside the crop;
3. **texture**: the appearance's neural texture at every covered pixel
   (:mod:`~perennial.avatar.texture.texture`), plus a coverage channel;
4. **face**: the face map of the facial actions (:mod:`~perennial.avatar.texture.face`);
5. **hands**: the five finger-line channels (:mod:`~perennial.avatar.texture.hands`);
6. **generator**: the StyleUNet, styled by the appearance latent, turns the
   concatenated maps into RGB and alpha (:mod:`~perennial.avatar.texture.generator`);
   outside the window the image is background (black, alpha 0).

Training on patches and rendering take the same path: ``forward(..., crop=...)``
runs the generator on the window inside the crop, so its zero padding at window
borders is what it learnt with.

Speed (``perennial.evaluate.bench_texture.bench_texture_speed``: the walking body from the
front at 3 m, untrained avatar, default config, median of 10 frames, 2 threads, the 2-core
AMD EPYC with AVX512-BF16, quiet machine):

=====  ====  =====  ====  ======  =======  ====  =====  =========
size   path  frame  pose  raster  texture  face  hands  generator
=====  ====  =====  ====  ======  =======  ====  =====  =========
256^2  bf16  33.6   4.8   10.1    1.9      1.4   1.4    13.4
256^2  fp32  38.3   4.2   11.3    2.1      1.5   1.4    16.9
512^2  bf16  62.2   4.0   20.9    2.8      2.8   2.6    28.1
512^2  fp32  87.6   4.2   20.9    2.9      2.9   2.5    51.7
=====  ====  =====  ====  ======  =======  ====  =====  =========

(ms): 29.8 FPS at 256^2 and 16.1 FPS at 512^2 with bf16, 26.1 and 11.4 FPS in fp32;
bf16 is the faster path on this CPU (``autocast="auto"`` takes it; a CPU without native
bf16 takes fp32). The generator runs on the 104 x 240 (256^2) or 208 x 480 (512^2)
window, not the whole frame. With other jobs busy on both cores, frames took 1.5-2x longer.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perennial.avatar.appearances import AppearanceSet
from perennial.avatar.texture.attention import DualAttention
from perennial.avatar.texture.config import TextureConfig
from perennial.avatar.texture.dual import AttentionMaps, ClipState
from perennial.avatar.texture.face import FaceEncoder
from perennial.avatar.texture.generator import StyleUNet
from perennial.avatar.texture.hands import HandMap
from perennial.avatar.texture.raster import SurfaceRasterizer, crop_camera
from perennial.avatar.texture.texture import NeuralTexture
from perennial.errors import UnknownAppearanceError
from perennial.numerics import one_thread
from perennial.render.camera import Camera

__all__ = ["STAGES", "TextureAppearance", "TextureAvatar", "TextureConfig", "TextureRenderOutput"]

STAGES = ("pose", "raster", "texture", "face", "hands", "attention", "generator")


class TextureAppearance(nn.Module):
    """One appearance: its neural texture and its latent (the generator's style)."""

    def __init__(self, config: TextureConfig) -> None:
        super().__init__()
        self.texture = NeuralTexture(config.texture, config.texture_channels, config.texture_size,
                                     config.texture_init_std)  # fmt: skip
        self.latent = nn.Parameter(torch.randn(config.latent_dim))
        """(L,) style of the generator, unit normal at first (see :mod:`~perennial.avatar.texture.generator`)."""

    def nbytes(self) -> int:
        """Bytes of its parameters."""
        return sum(p.numel() * p.element_size() for p in self.parameters())


@dataclass
class TextureRenderOutput:
    """A rendered image.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], composited over the black background.
        alpha: (H, W) float32 opacity in [0, 1].
        mask: (H, W) bool, pixels that see the posed mesh.
        timings: ms per stage (:data:`STAGES`) when asked for, else None.
        state: what the next frame of a clip needs (:class:`~perennial.avatar.texture.dual.ClipState`),
            with temporal attention; None otherwise.
    """

    rgb: Tensor
    alpha: Tensor
    mask: Tensor
    timings: dict[str, float] | None = None
    state: ClipState | None = None


def _grow(lo: int, hi: int, k: int, size: int) -> tuple[int, int]:
    """Widen ``[lo, hi]`` (inclusive) to a length that is a multiple of ``k`` inside ``[0, size)``,
    right first, then left; as far as it goes when ``size`` is too small."""
    need = (-(hi - lo + 1)) % k
    right = min(need, size - 1 - hi)
    left = min(need - right, lo)
    return lo - left, hi + right


class TextureAvatar(AppearanceSet, nn.Module):
    """Neural texture + face map + hand map + StyleUNet on the Anny template.

    Parameter groups: ``appearances`` (per appearance: texture and latent) and the
    shared ``generator`` and ``face`` encoder. The template is referenced, not owned
    (it is no submodule: not in the state dict, not moved by ``.to``).

    Appearances live in ``self.appearances``, an ``nn.ModuleDict`` keyed by internal
    keys (``a0``, ``a1``, ...), with ``keys`` mapping names to keys, as in
    :class:`~perennial.avatar.field.model.CanonicalField`.

    Args:
        template: the body template (``perennial.body.anny.AnnyTemplate``).
        phenotype: the person's phenotype values.
        appearances: names of the appearances to create.
        config: the avatar's shape.
        keys: the appearances' internal keys (default ``a0``, ``a1``, ...).
    """

    def __init__(self, template, phenotype: dict[str, float] | None = None,
                 appearances: list[str] | tuple[str, ...] = (), config: TextureConfig | None = None,
                 keys: list[str] | None = None) -> None:  # fmt: skip
        super().__init__()
        object.__setattr__(self, "template", template)  # a reference, not a submodule
        self.config = c = config or TextureConfig()
        self.phenotype = dict(phenotype or {})
        self.rest = template.rest_state(self.phenotype)
        template.facial_basis(self.rest)  # (52, V, 3), computed once, kept in self.rest
        weight = template.face_vertices(self.rest).float()  # moved > 0.1 mm by some action
        rv = self.rest.vertices
        lo, hi = rv.min(0).values - 0.02, rv.max(0).values + 0.02
        for name, value in (("faces", template.faces), ("uvs", template.uvs), ("uv_faces", template.uv_faces),
                            ("rest_vertices", rv), ("face_weight", weight),
                            ("center", (lo + hi) / 2), ("half_extent", (hi - lo) / 2)):  # fmt: skip
            self.register_buffer(name, value.clone(), persistent=False)
        self.hands = HandMap(template, self.rest, c.hand_sigma)
        self.face = FaceEncoder(c.face_channels, c.face_hidden, c.face_offset_scale)
        self.generator = StyleUNet(c.in_channels, c.latent_dim, c.widths, autocast_mode=c.autocast)
        self.attention = None
        if c.spatial_attention or c.temporal_attention:  # its own random draws: the rest starts as without it
            with torch.random.fork_rng(devices=[]):
                self.attention = DualAttention(c.texture_channels + 1, c.attention_channels, c.spatial_attention,
                                               c.temporal_attention)  # fmt: skip
        self._maps: AttentionMaps | None = None
        self._init_appearances()
        self.prior_info: dict | None = None
        """How ``prior`` was learned (``state.json: prior``), when there is one."""
        self._rasterizer: SurfaceRasterizer | None = None
        for i, name in enumerate(appearances):
            self.add_appearance(name, key=None if keys is None else keys[i])

    # -- appearances -------------------------------------------------------------------------

    @property
    def appearance_names(self) -> list[str]:
        """Names of the appearances the avatar holds, in the order they were added."""
        return self.names

    def check_appearance(self, name: str, where: str = "") -> None:
        """Raise :class:`~perennial.errors.UnknownAppearanceError` (listing the known names) unless
        the avatar holds appearance ``name``; ``where`` (the avatar folder) starts the message."""
        if name not in self.keys:
            raise UnknownAppearanceError(name, self.keys, where)

    def _new_appearance(self) -> TextureAppearance:
        return TextureAppearance(self.config).to(self.faces.device)

    # -- rendering ---------------------------------------------------------------------------

    @property
    def rasterizer(self) -> SurfaceRasterizer:
        """The surface rasteriser on the avatar's device (its warp BVH is kept across frames)."""
        r = self._rasterizer
        if r is None or r.faces.device != self.faces.device:
            r = self._rasterizer = SurfaceRasterizer(self.rest_vertices, self.faces, self.uvs, self.uv_faces)
        return r

    @property
    def temporal(self) -> bool:
        """Whether a frame depends on the previous one (``render_image(previous=...)``)."""
        return self.attention is not None and self.attention.temporal is not None

    def attention_maps(self) -> AttentionMaps:
        """The low-res rasters of the dual attention on the avatar's device."""
        m = self._maps
        if m is None or m.faces.device != self.faces.device:
            c = self.config
            m = self._maps = AttentionMaps(self.rest_vertices, self.faces, self.uvs, self.uv_faces,
                                           c.attention_reduction, c.expand, c.raster)  # fmt: skip
        return m

    def pose(self, rotvec: Tensor, translation: Tensor, facial_actions: Tensor | None = None):
        """Posed vertices (V, 3), skinning transforms (J, 4, 4) and expression offsets (V, 3) or None."""
        tdev = self.rest.vertices.device
        fa = None if facial_actions is None else facial_actions.detach().float().reshape(1, -1).to(tdev)
        with torch.no_grad():
            verts, transforms = self.template.pose_rest(rotvec.detach().float()[None].to(tdev),
                                                        translation.detach().float().reshape(1, 3).to(tdev),
                                                        self.rest, facial_actions=fa)  # fmt: skip
        dev = self.faces.device
        offsets = None
        if fa is not None:
            basis = self.rest.facial_basis
            # offsets[v, k] = sum_a fa[a] * basis[a, v, k]
            offsets = (fa @ basis.reshape(basis.shape[0], -1)).view(-1, 3).to(dev)
        return verts[0].to(dev), transforms[0].to(dev), offsets

    def _window(self, box: tuple[int, int, int, int], w: int, h: int) -> tuple[int, int, int, int]:
        """The generator window ``(x0, y0, w, h)``: the box widened by the margin, inside ``w x h``,
        grown to a multiple of the UNet's stride where the image allows (no padding copy)."""
        x0, y0, x1, y1 = box
        m = max(4, round(self.config.margin * max(x1 - x0 + 1, y1 - y0 + 1)))
        x0, y0, x1, y1 = max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, w - 1), min(y1 + m, h - 1)
        k = self.generator.multiple
        x0, x1 = _grow(x0, x1, k, w)
        y0, y1 = _grow(y0, y1, k, h)
        return x0, y0, x1 - x0 + 1, y1 - y0 + 1

    def _render(self, camera: Camera, rotvec: Tensor, translation: Tensor, appearance: str,
                facial_actions: Tensor | None, crop, timings: dict | None, condition=None,
                previous: ClipState | tuple | None = None) -> dict:  # fmt: skip
        self.check_appearance(appearance)
        app = self.appearance(appearance)
        dev = self.faces.device
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" and timings is not None else None
        clock = [time.perf_counter()]

        def lap(stage: str) -> None:
            if timings is not None:
                if sync:
                    sync()
                now = time.perf_counter()
                timings[stage] = (now - clock[0]) * 1000.0
                clock[0] = now

        verts, transforms, offsets = self.pose(rotvec, translation, facial_actions)
        if isinstance(previous, tuple):  # the previous frame's pose (training, evaluation)
            previous = ClipState(self.pose(*previous)[0])
        if condition is not None:  # retrieval-augmented training: the hand and face maps read another pose
            _, transforms, offsets = self.pose(condition[0], translation, condition[1])
        lap("pose")
        cam = crop_camera(camera, crop).to(dev)
        raster = self.rasterizer(verts, cam, backend=self.config.raster)
        H, W = cam.height, cam.width
        box = raster.box()
        lap("raster")
        if box is None:
            for s in STAGES[2:]:
                lap(s)
            z = app.latent.sum() * 0.0 + self.generator.head.bias.sum() * 0.0  # keeps the graph
            return {"rgb": z.expand(3, H, W), "alpha": z.expand(1, H, W), "mask": raster.mask,
                    "window": (0, 0, 0, 0), "state": ClipState(verts) if self.temporal else None}  # fmt: skip
        x0, y0, w, h = self._window(box, W, H)
        sub = raster.window(x0, y0, w, h)
        tex = app.texture(sub.uv, (sub.canonical - self.center) / self.half_extent)
        lap("texture")
        face = self.face.encode(sub, self.faces, self.face_weight, offsets) if self.config.face_map else None
        lap("face")
        if self.config.hand_map:
            hands = self.hands.pixel_values(sub, crop_camera(cam, (x0, y0, w, h)), transforms)
        else:
            hands = tex.new_zeros(len(sub), 5)
        lap("hands")
        # the maps in one (h, w, C) buffer: seen as (1, C, h, w) it is channels_last already
        per_pixel = torch.cat([tex, torch.ones(len(sub), 1, device=dev), hands], 1)
        c = per_pixel.shape[1]
        maps = per_pixel.new_zeros(h * w, c + self.config.face_channels)
        maps[sub.pixel, :c] = per_pixel
        maps = maps.view(h, w, -1)
        if face is not None:
            (fx, fy, fw, fh), f = face
            maps[fy : fy + fh, fx : fx + fw, c:] = f.permute(1, 2, 0)
        state = None
        if self.attention is not None:  # its residual joins the texture and coverage channels, (h, w, C) kept
            k = self.config.texture_channels + 1
            # rendering: one thread (many tiny operations; waking the second costs more than it gives)
            with contextlib.nullcontext() if torch.is_grad_enabled() else one_thread(dev):
                res, state = self.attention_maps()(self.attention, app.texture, cam, (x0, y0, w, h), verts,
                                                   previous, self.center, self.half_extent,
                                                   maps[..., :k].permute(2, 0, 1))  # fmt: skip
            if torch.is_grad_enabled():
                maps = torch.cat([maps[..., :k] + res, maps[..., k:]], -1)
            else:  # rendering: in place, no copy of the maps
                maps[..., :k] += res
            state = state if self.temporal else None
        maps = maps.permute(2, 0, 1)
        lap("attention")
        rgb, alpha = self.generator(maps[None], app.latent)
        pad = (x0, W - x0 - w, y0, H - y0 - h)
        rgb = F.pad(rgb[0] * alpha[0], pad)  # over the black background
        alpha = F.pad(alpha[0], pad)
        lap("generator")
        return {"rgb": rgb, "alpha": alpha, "mask": raster.mask, "window": (x0, y0, w, h), "state": state}

    def forward(self, camera: Camera, rotvec: Tensor, translation: Tensor, appearance: str,
                facial_actions: Tensor | None = None, crop: tuple[int, int, int, int] | None = None,
                condition: tuple[Tensor, Tensor | None] | None = None,
                previous: ClipState | tuple | None = None) -> dict:  # fmt: skip
        """Render one frame (or a pixel window of it) with gradients to the parameters.

        Args:
            camera: the camera (world-to-camera, OpenCV, metres).
            rotvec: (J, 3) pose, radians (Anny ``local-ref``); translation: (3,) root, world metres.
            appearance: appearance name.
            facial_actions: optional (52,) ARKit weights in [0, 1].
            crop: optional pixel window ``(x0, y0, w, h)`` of the camera (training on patches).
            condition: optional ``(rotvec, facial_actions)`` that the hand and face maps read instead
                of the frame's (retrieval-augmented training); the surface is posed by the frame's.
            previous: the previous frame, for temporal attention: a :class:`ClipState` or its pose
                ``(rotvec, translation, facial_actions)``; None: a still frame.

        Returns:
            dict with ``rgb`` (3, h, w) composited over black, ``alpha`` (1, h, w), both in
            [0, 1] and differentiable; ``mask`` (h, w) bool pixels that see the mesh;
            ``window`` ``(x0, y0, w, h)`` where the generator ran, in crop pixels
            (outside it rgb and alpha are 0). ``h, w`` are the crop's or the camera's size;
            ``state``: the :class:`ClipState` for the next frame (temporal attention only).
        """
        return self._render(camera, rotvec, translation, appearance, facial_actions, crop, None, condition, previous)

    @torch.no_grad()
    def render_image(self, camera: Camera, rotvec: Tensor, translation: Tensor, appearance: str,
                     facial_actions: Tensor | None = None, timings: bool = False,
                     previous: ClipState | tuple | None = None) -> TextureRenderOutput:  # fmt: skip
        """Render a full image without gradients (the fast path).

        Args:
            camera, rotvec, translation, appearance, facial_actions: as :meth:`forward`.
            timings: also return ms per stage (:data:`STAGES`).
            previous: the previous frame (temporal attention): the ``state`` of the previous
                frame's output (a causal clip render), or its pose; None: a still frame.

        Returns:
            :class:`TextureRenderOutput` with ``rgb`` (H, W, 3), ``alpha`` (H, W) and ``state``.
        """
        t: dict[str, float] | None = {} if timings else None
        out = self._render(camera, rotvec, translation, appearance, facial_actions, None, t, previous=previous)
        return TextureRenderOutput(rgb=out["rgb"].permute(1, 2, 0).contiguous(), alpha=out["alpha"][0],
                                   mask=out["mask"], timings=t, state=out["state"])  # fmt: skip

    def shared_bytes(self) -> int:
        """Bytes of the shared parameters (generator, face encoder, dual attention)."""
        shared = [m for m in (self.generator, self.face, self.attention) if m is not None]
        return sum(p.numel() * p.element_size() for m in shared for p in m.parameters())
