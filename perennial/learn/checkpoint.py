"""Training checkpoints: model + optimiser + RNG + step, safetensors + JSON, written atomically.

Layout: ``<dir>/weights.safetensors`` (model tensors under ``model.``, Adam moments
under ``optim.<i>.<key>``, RNG state under ``rng.torch``) and ``<dir>/state.json``
(schema, step, optimiser hyper-parameters, caller's extra data). The folder is
written under a temporary name and renamed over the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

SCHEMA = "perennial-checkpoint/1"


def save_checkpoint(path: Path, model: nn.Module, optim: torch.optim.Optimizer, step: int, extra: dict) -> None:
    """Write a checkpoint folder at ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    # clone: safetensors refuses tensors that share memory (shared-local's tri-planes do)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    osd = optim.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous().reshape(-1) if k == "step" else v.contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / "weights.safetensors"))
        doc = {"schema": SCHEMA, "step": step, "param_groups": osd["param_groups"], "extra": extra}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: Path, model: nn.Module, optim: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore model, optimiser and RNG from ``path``; returns (step, extra)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        doc = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "weights.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise ValueError(f"{path}: unreadable checkpoint ({e})") from None
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path / 'state.json'}: schema {doc.get('schema')!r} is not {SCHEMA!r}")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v.reshape(()) if key == "step" else v
    optim.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return int(doc["step"]), doc.get("extra", {})
