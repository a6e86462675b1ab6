"""Opening an avatar of any method from the store.

Every avatar method provides the same small protocol (the field avatar in
:mod:`perennial.avatar.field`, the texture avatar in :mod:`perennial.avatar.texture`):

- ``appearance_names`` (list of str) and ``check_appearance(name, where="")``
  (raises :class:`~perennial.errors.UnknownAppearanceError` listing the names);
- ``render_image(camera, rotvec, translation, appearance, facial_actions=None)``
  returning an object with ``rgb`` (H, W, 3) and ``alpha`` (H, W), no gradients.

:func:`load_avatar` reads ``avatar.json``'s ``method`` and calls that method's
loader; commands that only show an avatar (render, eval, bench) use it.
"""

from __future__ import annotations

from collections.abc import Callable

from perennial.avatar.store import AvatarError, AvatarStore

__all__ = ["LOADERS", "load_avatar"]


def _field(store: AvatarStore, number: int | None, template):
    from perennial.avatar.field_io import load_field_avatar

    return load_field_avatar(store, number, template)


def _texture(store: AvatarStore, number: int | None, template):
    from perennial.avatar.texture_io import load_texture_avatar

    return load_texture_avatar(store, number, template)


LOADERS: dict[str, Callable] = {"field": _field, "texture": _texture}
"""Method name -> loader ``(store, number, template) -> (avatar, version, training poses)``."""


def load_avatar(store: AvatarStore | str, number: int | None = None, template=None):
    """Load a version (the current one by default) of an avatar of any method.

    Returns:
        (avatar, version, training poses per appearance).

    Raises:
        AvatarError: a missing or malformed avatar, or a method this perennial does not know.
    """
    store = store if isinstance(store, AvatarStore) else AvatarStore(store)
    method = store.meta()["method"]
    if method not in LOADERS:
        raise AvatarError(f"{store.meta_path}: method {method!r} is unknown (known: {', '.join(LOADERS)})")
    return LOADERS[method](store, number, template)
