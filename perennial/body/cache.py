"""The user cache directory (``$PERENNIAL_CACHE``, default ``~/.cache/perennial``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The perennial cache directory, created on demand."""
    root = os.environ.get("PERENNIAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "perennial"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
