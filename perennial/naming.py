"""The one rule for names users give: appearance (outfit) names.

A name is 1 to 64 characters: letters and digits of any script, and the
punctuation ``space _ - . + @ ( ) # '`` inside; it neither starts nor ends with
a space. Why: names are shown in tables and logs (no control characters or
newlines), typed on command lines (no quotes needed for most), and may name
files in exports one day (no ``/`` or ``\\``). A name is never used as a module
name or a path inside perennial (appearances are stored under internal keys), so
``outfit.v2`` is fine.
"""

from __future__ import annotations

from perennial.errors import PerennialError

__all__ = ["MAX_NAME", "NAME_RULE", "check_name"]

MAX_NAME = 64
NAME_RULE = ("1 to 64 letters, digits and ' _-.+@()#' characters, no leading or trailing space, "
             "no '/' or control characters")  # fmt: skip
_PUNCT = set(" _-.+@()#'")


def check_name(name: object, what: str = "appearance name", where: str = "") -> str:
    """Return ``name`` if it follows the rule, else raise one clear error.

    Args:
        name: the name to check.
        what: what the name names, for the message.
        where: the file and field (or option) it came from, starts the message.

    Raises:
        PerennialError: the name breaks the rule (the message states the rule).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(name, str):
        raise PerennialError(f"{prefix}{what} must be a string, got {type(name).__name__} {name!r}")
    bad = sorted({c for c in name if not (c.isalnum() or c in _PUNCT)})
    if not name or len(name) > MAX_NAME or bad or name != name.strip():
        why = f" (not allowed: {''.join(bad)!r})" if bad else ""
        raise PerennialError(f"{prefix}{what} {name!r} breaks the name rule{why}: {NAME_RULE}")
    return name
