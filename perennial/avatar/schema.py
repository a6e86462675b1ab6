"""Checks of the JSON files the avatar store reads: ``avatar.json`` and a version's ``state.json``.

Every field the code reads is checked for presence and type before it is used,
and a failure names the file and the field (``versions/3/state.json:
appearances[1].frames: must be a list of integers``). The files carry their
format versions (``avatar.json: version``, ``state.json: schema``); a version
this perennial does not know is refused with that message.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from perennial.errors import PerennialError
from perennial.naming import check_name

__all__ = ["STATE_SCHEMA", "AvatarError", "check_meta", "check_state"]

STATE_SCHEMA = 2
"""Version of ``state.json``: 2 adds ``schema``, appearance ``key``s and the ``parent`` version.
Files without ``schema`` are version 1 (keys equal names, no parent)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AvatarError(PerennialError):
    """A problem with an avatar on disk; the message names the file and what is wrong.

    Defined here, with the checks of the store's files, and used through
    :mod:`perennial.avatar.store`."""


def _fail(path: Path, field: str, problem: str) -> AvatarError:
    return AvatarError(f"{path}: {field}: {problem}")


def _get(doc: dict, key: str, kind: type | tuple[type, ...], path: Path, where: str = "", optional: bool = False):
    field = f"{where}.{key}" if where else key
    if key not in doc:
        if optional:
            return None
        raise _fail(path, field, "missing")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise _fail(path, field, f"must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise _fail(path, field, f"must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__} {value!r:.40}")
    return value


def _fraction(value: Any, path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise _fail(path, field, f"must be a number in [0, 1], got {value!r:.40}")
    return float(value)


def _body(body: dict, path: Path, where: str) -> None:
    _get(body, "template", str, path, where)
    _get(body, "rig", str, path, where, optional=True)
    pheno = _get(body, "phenotype", dict, path, where, optional=True) or {}
    for k, v in pheno.items():
        _fraction(v, path, f"{where}.phenotype.{k}")


def check_meta(doc: dict, path: Path) -> dict:
    """Check ``avatar.json`` (its ``schema`` and ``version`` are checked by the store first)."""
    _body(_get(doc, "body", dict, path), path, "body")
    _get(doc, "method", str, path)
    return doc


def _record(rec: Any, path: Path, i: int) -> None:
    where = f"appearances[{i}]"
    if not isinstance(rec, dict):
        raise _fail(path, where, f"must be an object, got {type(rec).__name__}")
    check_name(_get(rec, "name", str, path, where), where=f"{path}: {where}.name")
    _get(rec, "key", str, path, where, optional=True)
    _get(rec, "triplane_of", str, path, where, optional=True)
    cap = _get(rec, "capture", dict, path, where)
    _get(cap, "path", str, path, f"{where}.capture")
    if not _SHA256.match(_get(cap, "sha256", str, path, f"{where}.capture")):
        raise _fail(path, f"{where}.capture.sha256", "must be 64 hexadecimal digits")
    cams = _get(rec, "cameras", dict, path, where)
    for name, cam in cams.items():
        cw = f"{where}.cameras.{name}"
        if not isinstance(cam, dict):
            raise _fail(path, cw, "must be an object")
        for k in ("K", "R", "t"):
            _get(cam, k, list, path, cw)
        for k in ("width", "height"):
            if _get(cam, k, int, path, cw) < 1:
                raise _fail(path, f"{cw}.{k}", "must be >= 1")
    frames = _get(rec, "frames", list, path, where)
    if not frames or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames):
        raise _fail(path, f"{where}.frames", "must be a non-empty list of integers")


def check_state(doc: dict, path: Path) -> dict:
    """Check the fields of ``state.json`` that every method has; returns ``doc``.

    Raises:
        AvatarError: naming the file and the field.
    """
    schema = doc.get("schema", 1)
    if isinstance(schema, bool) or schema not in (1, STATE_SCHEMA):
        raise _fail(path, "schema", f"{schema!r} is not supported (this perennial reads 1 and {STATE_SCHEMA})")
    if not _SHA256.match(_get(doc, "weights_sha256", str, path)):
        raise _fail(path, "weights_sha256", "must be 64 hexadecimal digits")
    _get(doc, "parent", (int, type(None)), path, optional=True)
    records = _get(doc, "appearances", list, path)
    if not records:
        raise _fail(path, "appearances", "must list at least one appearance")
    for i, rec in enumerate(records):
        _record(rec, path, i)
    names = [r["name"] for r in records]
    keys = [r.get("key", r["name"]) for r in records]
    for what, values in (("names", names), ("keys", keys)):
        if len(set(values)) != len(values):
            raise _fail(path, "appearances", f"{what} repeat: {values}")
    for r in records:
        if "triplane_of" in r and r["triplane_of"] not in names:
            raise _fail(path, "appearances", f"{r['name']!r} shares the tri-plane of unknown {r['triplane_of']!r}")
    entry = _get(doc, "history_entry", dict, path)
    for k in ("action", "appearance", "strategy"):
        _get(entry, k, str, path, "history_entry", optional=True)
    if "phenotype" in doc and doc["phenotype"] is not None:
        for k, v in _get(doc, "phenotype", dict, path).items():
            _fraction(v, path, f"phenotype.{k}")
    return doc
