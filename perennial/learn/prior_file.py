"""The pretrained prior of an avatar method: what ``perennial pretrain`` writes and ``create --prior`` reads.

A prior is a folder with two files:

- ``prior.safetensors``: the shared parts trained across identities, plus ``appearance.<key>``: the
  mean over the identities of their appearances, where a new appearance starts. Field avatars:
  ``corrector.<key>`` (the pose corrector) and ``field.<key>`` (the shared MLP: trunk, density and
  colour heads); the appearance is codes and tri-plane. Texture avatars: ``generator.<key>`` (the
  StyleUNet), ``face.<key>`` (the face encoder), ``attention.<key>`` when the avatar has the dual
  attention; the appearance is the neural texture and the latent.
- ``prior.json``: ``schema``, ``method`` (``field`` or ``texture``), ``field_config`` or
  ``texture_config`` (the avatar's shape, which a post-trained avatar takes), ``tensors``
  (name -> shape) and ``provenance`` (identities with their phenotypes and captures, steps, seeds,
  processes, date, perennial version).

Both are written under temporary names and renamed. Reading checks every field and tensor and
names the file and the field that is wrong.

``--prior default`` names the prior that ships with the package for the method
(``perennial/learn/data/prior-<method>``, see :func:`resolve_prior`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.avatar.texture.config import TextureConfig
from perennial.errors import PerennialError

__all__ = ["SCHEMA", "PriorError", "apply_prior", "read_prior", "resolve_prior", "shared_tensors", "write_prior"]

SCHEMA = "perennial-prior/1"
CONFIGS = {"field": ("field_config", FieldConfig), "texture": ("texture_config", TextureConfig)}
"""Per method: the key of the avatar's shape in ``prior.json`` and its dataclass."""
RUNTIME = ("raster", "autocast")
"""Texture settings that are the machine's choice, not the avatar's shape: a post-trained avatar keeps its own."""
DEFAULT_DIR = Path(__file__).resolve().parent / "data"


class PriorError(PerennialError):
    """A prior file that cannot be read or does not fit."""


def shared_tensors(parts: dict[str, nn.Module], appearances: list[nn.Module]) -> dict[str, Tensor]:
    """Prior tensors: each shared part's state under ``<part>.`` (a field's own appearances and its
    meta-learned ``prior`` left out) and the mean of the identities' appearances under ``appearance.``."""
    out = {f"{name}.{k}": v for name, m in parts.items() for k, v in m.state_dict().items()
           if not k.startswith(("appearances.", "prior."))}  # fmt: skip
    states = [a.state_dict() for a in appearances]
    out.update({f"appearance.{k}": torch.stack([s[k] for s in states]).mean(0) for k in states[0]})
    return {k: v.detach().cpu().clone().contiguous() for k, v in out.items()}


def write_prior(out: Path, tensors: dict[str, Tensor], method: str, config, provenance: dict) -> None:
    """Write ``out/prior.safetensors`` and ``out/prior.json`` (each atomically) of a ``method`` avatar
    of shape ``config`` (its :class:`FieldConfig` or :class:`TextureConfig`)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "method": method, CONFIGS[method][0]: dataclasses.asdict(config),
           "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())}, "provenance": provenance}  # fmt: skip
    tmp = out / ".prior.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / "prior.safetensors")
    tmp = out / ".prior.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out / "prior.json")


def read_prior(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """``(prior.json as a dict, tensors)`` of the prior at ``path`` (its folder or its ``prior.json``).

    Raises:
        PriorError: a missing or unreadable file, a wrong schema or method, a field config the field
            does not have, or tensors that are not the ones ``prior.json`` lists.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    folder = path.parent if path.name == "prior.json" else path
    js, st = folder / "prior.json", folder / "prior.safetensors"
    if not js.is_file():
        raise PriorError(f"{js}: no prior here (a prior is the folder 'perennial pretrain' writes)")
    try:
        doc = json.loads(js.read_text())
    except (OSError, ValueError) as e:
        raise PriorError(f"{js}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise PriorError(f"{js}: expected an object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise PriorError(f"{js}: schema: {doc.get('schema')!r} is not {SCHEMA!r}")
    if doc.get("method") not in CONFIGS:
        raise PriorError(f"{js}: method: {doc.get('method')!r} is not one of {sorted(CONFIGS)}")
    _check_config(js, doc)
    shapes = doc.get("tensors")
    if not isinstance(shapes, dict):
        raise PriorError(f"{js}: tensors: expected an object of tensor shapes")
    if not isinstance(doc.get("provenance"), dict):
        raise PriorError(f"{js}: provenance: expected an object")
    try:
        tensors = load_file(str(st))
    except (OSError, SafetensorError, ValueError) as e:
        raise PriorError(f"{st}: unreadable ({e})") from None
    for k in sorted(set(shapes) | set(tensors)):
        if k not in tensors:
            raise PriorError(f"{st}: tensor {k!r} listed in prior.json is missing")
        if k not in shapes:
            raise PriorError(f"{st}: tensor {k!r} is not listed in prior.json")
        if list(tensors[k].shape) != shapes[k] or not torch.isfinite(tensors[k]).all():
            raise PriorError(f"{st}: tensor {k!r} has shape {list(tensors[k].shape)} (prior.json: {shapes[k]}) "
                             "or values that are not finite")  # fmt: skip
    return doc, tensors


def _check_config(js: Path, doc: dict) -> None:
    key, cls = CONFIGS[doc["method"]]
    fc = doc.get(key)
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fc, dict) or set(fc) - known:
        bad = sorted(set(fc) - known) if isinstance(fc, dict) else type(fc).__name__
        raise PriorError(f"{js}: {key}: expected the avatar's settings {sorted(known)}, got {bad}")
    default = cls()
    for k, v in fc.items():
        want = type(getattr(default, k))
        ok = type(v) is want or (want is float and type(v) is int)
        if want is tuple:  # JSON has lists: a tuple of ints
            ok = isinstance(v, list) and all(type(x) is int for x in v)
        if not ok:
            raise PriorError(f"{js}: {key}.{k}: expected {want.__name__}, got {v!r}")
    try:
        cls(**fc)
    except (TypeError, PerennialError) as e:
        raise PriorError(f"{js}: {key}: {e}") from None


def resolve_prior(path: str | Path, method: str) -> Path:
    """The folder of a prior: ``default`` is the one shipped for ``method``; any other value is a path.

    Raises:
        PriorError: ``default`` where no prior ships for the method.
    """
    if str(path) != "default":
        return Path(path)
    folder = DEFAULT_DIR / f"prior-{method}"
    if not (folder / "prior.json").is_file():
        raise PriorError(f"--prior default: no prior ships for {method} avatars in this version "
                         f"(give the folder of one that 'perennial pretrain --method {method}' wrote)")  # fmt: skip
    return folder


def _load(module: nn.Module, tensors: dict[str, Tensor], prefix: str, where: Path, skip: str = "") -> None:
    own = {k: v for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}
    given = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    for k in sorted(set(own) | set(given)):
        if k not in given:
            raise PriorError(f"{where}: tensor {prefix + k!r} is missing")
        if k not in own:
            raise PriorError(f"{where}: tensor {prefix + k!r} is not part of this avatar")
        if own[k].shape != given[k].shape:
            raise PriorError(f"{where}: tensor {prefix + k!r} has shape {list(given[k].shape)}, "
                             f"the avatar's is {list(own[k].shape)}")  # fmt: skip
    module.load_state_dict(given, strict=False)


def apply_prior(path: str | Path, template, phenotype: dict | None, appearance: str, method: str = "field",
                config: TextureConfig | None = None) -> tuple[nn.Module, dict]:  # fmt: skip
    """A new avatar of ``method`` (one appearance) whose shared parts start from the prior at ``path``.

    The avatar takes the prior's shape (a texture avatar keeps ``config``'s :data:`RUNTIME` settings);
    the shared parts are the prior's; the appearance starts from the identities' mean appearance.

    Returns:
        (the avatar, what to record of the prior: path, SHA-256 of its tensors, identity count, steps,
        seed, batch, processes, date, perennial version).

    Raises:
        PriorError: see :func:`read_prior`; a prior of another method; tensors that do not fit the
            avatar (a different rig).
    """
    from perennial.util import sha256_file

    folder = resolve_prior(path, method)
    folder = folder.parent if folder.name == "prior.json" else folder
    doc, tensors = read_prior(folder)
    st = folder / "prior.safetensors"
    if doc["method"] != method:
        raise PriorError(f"{folder / 'prior.json'}: method: the prior is for {doc['method']} avatars, "
                         f"not {method} (pretrain one with --method {method})")  # fmt: skip
    shape = doc[CONFIGS[method][0]]
    if method == "field":
        avatar = FieldAvatar(template, phenotype, [appearance], config=FieldConfig(**shape))
        parts = {"corrector": avatar.corrector, "field": avatar.field}
    else:
        from perennial.avatar.texture.model import TextureAvatar

        own = dataclasses.asdict(config or TextureConfig())
        avatar = TextureAvatar(template, phenotype, [appearance], TextureConfig(**{**shape, **{k: own[k] for k in RUNTIME}}))
        parts = {"generator": avatar.generator, "face": avatar.face}
        if avatar.attention is not None:
            parts["attention"] = avatar.attention
    for prefix, module in parts.items():
        _load(module, tensors, f"{prefix}.", st, skip="appearances.")
    extra = sorted({k.split(".")[0] for k in tensors} - {*parts, "appearance"})
    if extra:
        raise PriorError(f"{st}: tensors of {extra} are not part of a {method} avatar")
    _load(avatar.appearance(appearance), tensors, "appearance.", st)
    prov = doc["provenance"]
    summary = {k: prov.get(k) for k in ("steps_run", "seed", "batch", "processes", "date", "perennial")}
    return avatar, {"path": str(folder.resolve()), "sha256": sha256_file(st),
                    "identities": len(prov.get("identities") or []), **summary}  # fmt: skip
