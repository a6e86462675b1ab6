"""The pretrained prior of field avatars: what ``perennial pretrain`` writes and ``create --prior`` reads.

A prior is a folder with two files:

- ``prior.safetensors``: the shared parts trained across identities, ``corrector.<key>`` (the pose
  corrector) and ``field.<key>`` (the shared MLP: trunk, density and colour heads), plus
  ``appearance.<key>``: the mean over the identities of their appearances (codes and tri-plane),
  where a new appearance starts;
- ``prior.json``: ``schema``, ``method`` (``field``), ``field_config`` (the field's shape, which a
  post-trained avatar takes), ``tensors`` (name -> shape) and ``provenance`` (identities with their
  phenotypes and captures, steps, seeds, processes, date, perennial version).

Both are written under temporary names and renamed. Reading checks every field and tensor and
names the file and the field that is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.errors import PerennialError

__all__ = ["SCHEMA", "PriorError", "apply_prior", "read_prior", "shared_tensors", "write_prior"]

SCHEMA = "perennial-prior/1"


class PriorError(PerennialError):
    """A prior file that cannot be read or does not fit."""


def shared_tensors(corrector: nn.Module, field: nn.Module) -> dict[str, Tensor]:
    """The shared parts (pose corrector, shared MLP) and the mean appearance, as prior tensors."""
    out = {f"corrector.{k}": v for k, v in corrector.state_dict().items()}
    apps: dict[str, list[Tensor]] = {}
    for k, v in field.state_dict().items():
        if k.startswith("appearances."):
            apps.setdefault(k.split(".", 2)[2], []).append(v)
        elif not k.startswith("prior."):
            out[f"field.{k}"] = v
    out.update({f"appearance.{k}": torch.stack(vs).mean(0) for k, vs in apps.items()})
    return {k: v.detach().cpu().clone().contiguous() for k, v in out.items()}


def write_prior(out: Path, tensors: dict[str, Tensor], field_config: FieldConfig, provenance: dict) -> None:
    """Write ``out/prior.safetensors`` and ``out/prior.json`` (each atomically)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "method": "field", "field_config": dataclasses.asdict(field_config),
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
    if doc.get("method") != "field":
        raise PriorError(f"{js}: method: {doc.get('method')!r} is not 'field' (only field avatars have priors)")
    fc = doc.get("field_config")
    known = {f.name for f in dataclasses.fields(FieldConfig)}
    if not isinstance(fc, dict) or set(fc) - known:
        bad = sorted(set(fc) - known) if isinstance(fc, dict) else type(fc).__name__
        raise PriorError(f"{js}: field_config: expected the field's settings {sorted(known)}, got {bad}")
    default = FieldConfig()
    for k, v in fc.items():
        want = type(getattr(default, k))
        if not (type(v) is want or (want is float and type(v) is int)):
            raise PriorError(f"{js}: field_config.{k}: expected {want.__name__}, got {v!r}")
    try:
        FieldConfig(**fc)
    except (TypeError, PerennialError) as e:
        raise PriorError(f"{js}: field_config: {e}") from None
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


def apply_prior(path: str | Path, template, phenotype: dict | None, appearance: str) -> tuple[FieldAvatar, dict]:
    """A new field avatar (one appearance) whose shared parts start from the prior at ``path``.

    The avatar takes the prior's field shape; the pose corrector and the shared MLP are the prior's;
    the appearance starts from the identities' mean appearance.

    Returns:
        (the avatar, what to record of the prior: path, SHA-256 of its tensors, identity count, steps,
        seed, batch, processes, date, perennial version).

    Raises:
        PriorError: see :func:`read_prior`; tensors that do not fit the avatar (a different rig).
    """
    from perennial.util import sha256_file

    doc, tensors = read_prior(path)
    folder = Path(path).parent if Path(path).name == "prior.json" else Path(path)
    st = folder / "prior.safetensors"
    avatar = FieldAvatar(template, phenotype, [appearance], config=FieldConfig(**doc["field_config"]))
    _load(avatar.corrector, tensors, "corrector.", st)
    _load(avatar.field, tensors, "field.", st, skip="appearances.")
    _load(avatar.field.appearance(appearance), tensors, "appearance.", st)
    prov = doc["provenance"]
    summary = {k: prov.get(k) for k in ("steps_run", "seed", "batch", "processes", "date", "perennial")}
    return avatar, {"path": str(folder.resolve()), "sha256": sha256_file(st),
                    "identities": len(prov.get("identities") or []), **summary}  # fmt: skip
