"""The named appearances of an avatar, one mechanism for every method.

An avatar (or its field) keeps appearances in an ``nn.ModuleDict`` under internal
keys (``a0``, ``a1`` ...: names may hold any characters, module names may not), a
name -> key map, and optionally a *prior*, the meta-learned starting point of new
appearances (:mod:`perennial.learn.meta`). :class:`AppearanceSet` is mixed into the
``nn.Module`` that holds them; it needs only :meth:`AppearanceSet._new_appearance`.
"""

from __future__ import annotations

from torch import nn

from perennial.errors import UnknownAppearanceError

__all__ = ["AppearanceSet"]


class AppearanceSet:
    """Named appearances under internal keys, and the prior new ones start from (a mixin of ``nn.Module``)."""

    appearances: nn.ModuleDict
    keys: dict[str, str]
    prior: nn.Module | None

    def _init_appearances(self) -> None:
        self.appearances = nn.ModuleDict()
        self.keys = {}
        """Appearance name -> its key in :attr:`appearances`."""
        self.prior = None
        """Starting point of new appearances, meta-learned (:mod:`perennial.learn.meta`); None: fresh."""

    def _new_appearance(self) -> nn.Module:
        """A fresh appearance on the holder's device."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        """Appearance names in the order they were added."""
        return list(self.keys)

    def appearance(self, name: str) -> nn.Module:
        """The storage of appearance ``name``.

        Raises:
            UnknownAppearanceError: no such appearance (the message lists the known names).
        """
        try:
            return self.appearances[self.keys[name]]
        except KeyError:
            raise UnknownAppearanceError(name, self.keys) from None

    def add_appearance(self, name: str, like: str | None = None, key: str | None = None) -> nn.Module:
        """Create the storage of a new appearance.

        Args:
            name: its name (must be new).
            like: initialise it as a copy of this existing appearance; else from the prior when
                there is one; else fresh.
            key: its internal key (default: the next free ``a<i>``).
        """
        if name in self.keys:
            raise ValueError(f"appearance {name!r} already exists")
        if key is None:
            i = len(self.appearances)
            while f"a{i}" in self.appearances:
                i += 1
            key = f"a{i}"
        if key in self.appearances or not key or "." in key:
            raise ValueError(f"appearance key {key!r} is taken or not a module name")
        app = self._new_appearance()
        start = self.appearance(like) if like is not None else self.prior
        if start is not None:
            app.load_state_dict(start.state_dict())
        self.appearances[key] = app
        self.keys[name] = key
        return app

    def remove_appearance(self, name: str) -> None:
        """Forget appearance ``name`` (its storage goes)."""
        del self.appearances[self.keys.pop(name)]

    def ensure_prior(self) -> nn.Module:
        """The prior new appearances start from (``self.prior``), created fresh if missing."""
        if self.prior is None:
            self.prior = self._new_appearance()
        return self.prior
