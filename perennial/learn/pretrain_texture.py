"""Pretraining of texture avatars: one generator, face encoder (and dual attention), a texture per identity.

Every identity is a :class:`~perennial.avatar.texture.model.TextureAvatar` of its own body (its
phenotype's rest shape, facial basis and hand map) whose ``generator``, ``face`` and ``attention``
are the run's shared modules; its one appearance (neural texture and latent) is its own. Its losses
at a step are those of ``create``'s :class:`~perennial.learn.texture_terms.ImageCrops` (L1, mask,
perceptual on body-, face- and hand-centred windows), drawn with the generator of the step's seed
so that they are the same on any rank.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from perennial.avatar.texture.config import TextureConfig
from perennial.avatar.texture.model import TextureAvatar
from perennial.errors import ConfigError
from perennial.learn.engine import generator_state
from perennial.learn.identities import Identity, Pretraining, read_people
from perennial.learn.prior_file import shared_tensors
from perennial.learn.texture_method import CropConfig, perceptual_network
from perennial.learn.texture_terms import ImageCrops, TrainingImages

__all__ = ["TextureShared", "texture_people"]


class TextureShared(nn.Module):
    """What a texture pretraining run learns: the shared networks and one appearance per identity."""

    def __init__(self, first: TextureAvatar) -> None:
        super().__init__()
        self.generator, self.face, self.attention = first.generator, first.face, first.attention
        self.appearances = nn.ModuleDict()

    def parts(self) -> dict[str, nn.Module]:
        """The shared networks by their prior prefix."""
        out = {"generator": self.generator, "face": self.face}
        return out if self.attention is None else {**out, "attention": self.attention}


def texture_people(paths: list[Path], crop: CropConfig, lr: dict[str, float], progress: bool,
                   avatar_config: TextureConfig | None = None) -> Pretraining:  # fmt: skip
    """Texture avatars of every capture of ``paths``, sharing their networks (see the module); ``crop``: the
    windows and perceptual terms of a step, ``lr``: the groups' learning rates (``appearance``, ``shared``)."""
    captures, template = read_people(paths)
    tc = avatar_config or TextureConfig()
    shared: TextureShared | None = None
    c = crop
    lpips = perceptual_network() if c.perceptual_stages > 0 else None
    people = []
    for i, cap in enumerate(captures):
        key = f"id-{i:04d}"
        avatar = TextureAvatar(template, cap.body_info.get("phenotype"), [key], tc)
        if shared is None:
            shared = TextureShared(avatar)
        else:  # this person's body, the run's networks
            avatar.generator, avatar.face, avatar.attention = (
                shared.generator,
                shared.face,
                shared.attention,
            )
        shared.appearances[key] = avatar.appearance(key)
        pixels, digest = cap.read_split("train", progress)
        images = TrainingImages(cap, pixels, template, avatar.phenotype)
        if len(images) == 0:
            raise ConfigError(
                f"{cap.root}: no training view shows the person (every mask is empty)"
            )
        crops = ImageCrops(avatar, images, key, c.size, (c.centre_body, c.centre_face, c.centre_hands), lpips,
                           c.perceptual_stages, c.part_window, c.perceptual_size, c.perceptual_every)  # fmt: skip

        def losses(step: int, seed: int, crops=crops) -> dict[str, Tensor]:
            return crops(step, generator_state(seed))[0]

        people.append(Identity(key, str(Path(cap.root).resolve()), cap.appearance, digest,
                               dict(cap.body_info.get("phenotype") or {}), losses, avatar))  # fmt: skip
    assert shared is not None  # paths is never empty here
    own = list(shared.appearances.parameters())
    ids = {id(p) for p in own}
    groups = {"appearance": (own, lr["appearance"]),
              "shared": ([p for p in shared.parameters() if id(p) not in ids], lr["shared"])}  # fmt: skip

    def tensors() -> dict[str, Tensor]:
        return shared_tensors(shared.parts(), list(shared.appearances.values()))

    return Pretraining(shared, people, groups, tensors, tc)
