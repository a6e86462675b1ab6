"""Looking after an avatar on disk: history, rollback, prune, and checks of a capture against it.

``history`` reads every version's ``state.json`` and ``metrics.json`` (it never
loads weights); ``rollback`` and ``prune`` take the avatar's writer lock, so
they never race a ``create`` or ``learn``. None of these runs any code from the
avatar folder: everything read is JSON (and, for rollback, a SHA-256 of the
weights file).
"""

from __future__ import annotations

import math
from pathlib import Path

from perennial.avatar.store import AvatarError, AvatarStore

KEY_METRICS = ("psnr", "ssim", "lpips", "forget")
"""Substrings of metric names shown by :func:`format_history` (besides the training PSNR)."""


def _flatten(doc, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document as ``{"a.b.c": value}`` (lists are skipped)."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out[prefix[:-1]] = float(doc)
    return out


def _key_metrics(flat: dict[str, float]) -> dict[str, float]:
    keep = {}
    for k, v in flat.items():
        leaf = k.rsplit(".", 1)[-1].lower()
        if leaf == "train_psnr_body" or any(m in leaf for m in KEY_METRICS):
            keep[k] = v
    return keep


def history(store: AvatarStore) -> list[dict]:
    """One row per version, oldest first.

    Each row: ``number``, ``current`` (bool), ``written`` (time string of the
    write), ``action`` (create / learn), ``appearance`` (the one added),
    ``strategy``, ``appearances`` (all names in that version), ``steps``,
    ``seconds``, ``metrics`` (every numeric value of ``metrics.json``, dotted
    names) and ``key_metrics`` (PSNR / SSIM / LPIPS / forgetting among them).
    A version whose JSON cannot be read gets ``error`` (the message) instead
    of failing the whole listing.

    Raises:
        AvatarError: the folder is not an avatar (missing or unsupported ``avatar.json``).
    """
    store.meta()
    cur = store.current_number()
    rows = []
    for n in store.version_numbers():
        row: dict = {"number": n, "current": n == cur}
        try:
            v = store.version(n)
        except AvatarError as e:
            row["error"] = str(e)
            rows.append(row)
            continue
        st, entry = v.state, v.state.get("history_entry") or {}
        train = entry.get("train") if isinstance(entry.get("train"), dict) else {}
        flat = _flatten(v.metrics)
        row.update(
            written=st.get("written"),
            action=entry.get("action"),
            appearance=entry.get("appearance"),
            strategy=entry.get("strategy"),
            appearances=[a.get("name") if isinstance(a, dict) else str(a) for a in st.get("appearances", [])],
            steps=train.get("steps"),
            seconds=entry.get("seconds"),
            metrics=flat,
            key_metrics=_key_metrics(flat),
        )
        rows.append(row)
    return rows


def _short(name: str) -> str:
    return {"train.train_psnr_body": "train PSNR"}.get(name, name)


def _fmt_value(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def format_history(rows: list[dict]) -> str:
    """A plain-text table of :func:`history` rows (``*`` marks the current version)."""
    if not rows:
        return "no versions yet"
    head = ["", "version", "written", "action", "appearance", "strategy", "appearances", "metrics"]
    table = [head]
    for r in rows:
        mark = "*" if r["current"] else ""
        if "error" in r:
            table.append([mark, str(r["number"]), "-", "-", "-", "-", "-", f"unreadable: {r['error']}"])
            continue
        written = (r.get("written") or "-").replace("T", " ")[:19]
        metrics = ", ".join(f"{_short(k)} {_fmt_value(v)}" for k, v in list(r["key_metrics"].items())[:4])
        table.append([mark, str(r["number"]), written, r.get("action") or "-", r.get("appearance") or "-",
                      r.get("strategy") or "-", ", ".join(r["appearances"]) or "-", metrics or "-"])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    return "\n".join(line.rstrip() for line in lines)


def _check_version(store: AvatarStore, n: int) -> None:
    """A version is complete: its JSON parses and its weights match the recorded SHA-256."""
    try:
        store.verify_weights(store.version(n))
    except AvatarError as e:
        raise AvatarError(f"{e}; version {n} cannot be made current") from None


def rollback(store: AvatarStore, to: int) -> tuple[int | None, int]:
    """Make version ``to`` current again; later versions are kept (roll forward the same way).

    Takes the writer lock. The target's weights are checked against their
    SHA-256 first, so a damaged version is never made current.

    Returns:
        (previous current version, new current version).

    Raises:
        AvatarError: no such version, it is damaged, or the avatar is busy.
    """
    store.meta()
    with store.lock():
        have = store.version_numbers()
        if to not in have:
            raise AvatarError(f"{store.root}: no version {to} (versions: {', '.join(map(str, have)) or 'none'})")
        before = store.current_number()
        if before != to:
            _check_version(store, to)
            store.switch(to)
        return before, to


def prune(store: AvatarStore, keep: int) -> dict:
    """Delete versions that never became current, all but the newest ``keep`` others (never the
    current one) and leftovers of interrupted writes.

    Takes the writer lock, so no update is in progress while it deletes.

    Returns:
        ``{"deleted": [old versions], "orphans": [versions that never became current],
        "kept": [...], "leftovers": [paths removed]}``.

    Raises:
        AvatarError: ``keep`` < 1, or the avatar is missing or busy.
    """
    if keep < 1:
        raise AvatarError(f"{store.root}: --keep must be at least 1 (got {keep})")
    store.meta()
    with store.lock():
        leftovers = store.clean_partial()
        deleted, orphans = store.prune(keep)
        return {"deleted": deleted, "orphans": orphans, "kept": store.version_numbers(),
                "leftovers": [str(p) for p in leftovers]}  # fmt: skip


def check_capture_for_avatar(store: AvatarStore, capture) -> None:
    """Refuse a capture whose body (template, rig, phenotype) is not the avatar's.

    Raises:
        AvatarError: naming the capture's ``capture.json``, the avatar's
            ``avatar.json`` and each field that differs.
    """
    mine, theirs = store.meta()["body"], capture.body_info
    cap_json = Path(capture.root) / "capture.json"
    diffs = []
    for key in ("template", "rig"):
        if mine.get(key) != theirs.get(key):
            diffs.append(f"{key} {theirs.get(key)!r} vs {mine.get(key)!r}")
    pa, pb = mine.get("phenotype") or {}, theirs.get("phenotype") or {}
    for k in sorted(set(pa) | set(pb)):
        if pa.get(k) != pb.get(k):
            diffs.append(f"phenotype.{k} {pb.get(k)!r} vs {pa.get(k)!r}")
    if diffs:
        raise AvatarError(
            f"{cap_json}: the capture's body differs from the avatar's ({store.meta_path}): "
            + "; ".join(diffs) + " (capture vs avatar); an avatar keeps one body"
        )
