"""Training checkpoints: one keyed record in safetensors + JSON, written atomically.

Layout of ``<dir>``:

- ``weights.safetensors``: the model's tensors under ``model.``, Adam's moments
  under ``optim.<i>.<key>``, each term's state under ``policy.<term>.<key>``, and
  torch's global RNG state as ``rng.torch``;
- ``state.json``: ``schema``, ``step``, the optimiser's parameter groups, the
  run's ``tag`` (what is being learned and how) and the names of the policy states.

The folder is written under a temporary name and renamed over the previous
checkpoint, so a kill leaves either the old or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import Tensor, nn

from perennial.errors import PerennialError

SCHEMA = "perennial-checkpoint/2"

__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint_tag", "save_checkpoint"]


class CheckpointError(PerennialError):
    """A checkpoint that cannot be read, written or used for this run."""


def save_checkpoint(path: Path, model: nn.Module, optim: torch.optim.Optimizer, step: int, tag: dict,
                    policy_state: dict[str, dict[str, Tensor]]) -> None:  # fmt: skip
    """Write a checkpoint folder at ``path`` atomically.

    Raises:
        CheckpointError: the disk refused the write (full, read-only); the previous
            checkpoint, if any, is kept.
    """
    from safetensors.torch import save_file

    path = Path(path)
    # clone: safetensors refuses tensors that share memory (shared-local's tri-planes do)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    osd = optim.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().reshape(-1).contiguous() if k == "step" else v.contiguous()
    for term, state in policy_state.items():
        for k, v in state.items():
            tensors[f"policy.{term}.{k}"] = v.detach().clone().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    doc = {"schema": SCHEMA, "step": step, "param_groups": osd["param_groups"], "tag": tag,
           "policy_state": {t: sorted(s) for t, s in policy_state.items()}}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "weights.safetensors"))
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot write a checkpoint ({e.strerror or e}); "
                              "training stopped, no version was written") from None  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_doc(path: Path) -> dict:
    try:
        doc = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'state.json'}: unreadable checkpoint ({e}); "
                              "run without --resume to start over") from None  # fmt: skip
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{path / 'state.json'}: schema {found!r} is not {SCHEMA!r}; "
                              "run without --resume to start over")  # fmt: skip
    return doc


def read_checkpoint_tag(path: Path) -> dict:
    """The ``tag`` a checkpoint was written with (what was being learned, and how)."""
    return _read_doc(Path(path)).get("tag", {})


def load_checkpoint(path: Path, model: nn.Module, optim: torch.optim.Optimizer,
                    policy_state: dict[str, dict[str, Tensor]]) -> tuple[int, dict[str, dict[str, Tensor]]]:  # fmt: skip
    """Restore model, optimiser and RNG from ``path``.

    Args:
        policy_state: the run's initial term states; the checkpoint must hold the
            same terms and keys.

    Returns:
        (step, the saved term states).

    Raises:
        CheckpointError: unreadable, or written by another model or other terms.
    """
    from safetensors.torch import load_file

    path = Path(path)
    doc = _read_doc(path)
    try:
        tensors = load_file(str(path / "weights.safetensors"))
    except Exception as e:
        raise CheckpointError(f"{path / 'weights.safetensors'}: unreadable checkpoint ({e})") from None
    want = {t: sorted(s) for t, s in policy_state.items()}
    if doc.get("policy_state") != want:
        raise CheckpointError(f"{path / 'state.json'}: policy states {doc.get('policy_state')} "
                              f"are not this run's {want}; run without --resume to start over")  # fmt: skip
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, key = k.split(".", 2)
                state.setdefault(int(i), {})[key] = v.reshape(()) if key == "step" else v
        optim.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    except (RuntimeError, KeyError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: the checkpoint does not fit this avatar and capture ({msg}); "
                              "run without --resume to start over") from None  # fmt: skip
    torch.set_rng_state(tensors["rng.torch"])
    saved = {t: {k: tensors[f"policy.{t}.{k}"] for k in keys} for t, keys in want.items()}
    return int(doc["step"]), saved
