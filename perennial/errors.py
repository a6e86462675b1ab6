"""The one base class of every error a user can cause.

``perennial.cli.main`` prints a :class:`PerennialError` as one line (its message
names the file and the field) and exits with code 2; anything else that escapes
is a bug and keeps its traceback. Subclasses also derive from ``ValueError`` so
that library callers who catch ``ValueError`` keep working.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "OutputExistsError", "PerennialError", "UnknownAppearanceError"]


class PerennialError(ValueError):
    """Bad input or an impossible request; the message is meant for the user."""


class ConfigError(PerennialError):
    """A configuration value (a command-line option) is out of range."""


class OutputExistsError(PerennialError, FileExistsError):
    """The output of a command exists and would be replaced (the message says how to allow it)."""


class UnknownAppearanceError(PerennialError, KeyError):
    """An appearance name that the avatar does not hold; the message lists those it does."""

    def __init__(self, name: str, known: Iterable[str], where: str = "") -> None:
        known = sorted(known)
        listed = ", ".join(repr(k) for k in known) or "none"
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}no appearance {name!r} (known: {listed})")
        self.name, self.known = name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
