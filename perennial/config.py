"""Configs as dataclasses: field docstrings, overrides by name, command-line options.

Every default lives once, in a dataclass config (or a preset that builds one);
the command line is made from the configs: :func:`add_options` turns chosen
fields into ``--options`` whose help is the field's docstring and whose default
is the preset's value, and :func:`override` applies what the user gave. Nested
configs (``FieldTrainConfig.engine.steps``) are reached by their leaf name
(``steps``) when only one nested config has it.

We use argparse with this small helper rather than tyro: a command's defaults
depend on a preset chosen by another option (``learn --strategy``,
``create --method``), which tyro expresses only as subcommands.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from typing import Any

from perennial.errors import ConfigError

__all__ = ["add_options", "field_docs", "find_field", "options_given", "override"]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass, from the string literal under each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):  # fmt: skip
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _paths(config: Any, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every field of a config tree, nested configs and their fields:
    ``{"engine": (owner, field), "engine.steps": (owner config, field), ...}``."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f"{prefix}{f.name}"] = (config, f)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(_paths(value, f"{prefix}{f.name}."))
    return out


def find_field(config: Any, name: str) -> str:
    """The dotted path of field ``name`` (a dotted path, or a leaf name that only one nested config has).

    Raises:
        ConfigError: no such field, or a leaf name that several nested configs have.
    """
    paths = _paths(config)
    if name in paths:
        return name
    hits = [p for p in paths if p.rsplit(".", 1)[-1] == name]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ConfigError(f"{type(config).__name__} has no setting {name!r}")
    raise ConfigError(f"{type(config).__name__}: {name!r} is ambiguous ({', '.join(hits)})")


def override(config: Any, values: dict[str, Any] | None = None, **kw: Any) -> Any:
    """A copy of ``config`` with fields replaced (by dotted path or leaf name); its checks run again.

    Raises:
        ConfigError: an unknown or ambiguous name, or a value its config refuses.
    """
    changes: dict[tuple[str, ...], Any] = {}
    for name, value in {**(values or {}), **kw}.items():
        changes[tuple(find_field(config, name).split("."))] = value

    def apply(node: Any, prefix: tuple[str, ...]) -> Any:
        here = {}
        for f in dataclasses.fields(node):
            key = (*prefix, f.name)
            if key in changes:
                here[f.name] = changes[key]
            elif any(k[: len(key)] == key for k in changes):
                here[f.name] = apply(getattr(node, f.name), key)
        return dataclasses.replace(node, **here) if here else node

    try:
        return apply(config, ())
    except TypeError as e:
        raise ConfigError(f"{type(config).__name__}: {e}") from None


def _scalar_type(annotation: Any) -> Any:
    """The type argparse converts to, and the choices of a ``Literal``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _scalar_type(args[0])
    if origin is typing.Literal:
        return str, list(typing.get_args(annotation))
    if annotation in (int, float, str, bool):
        return annotation, None
    raise TypeError(f"no command-line option for a field of type {annotation!r}")


def add_options(parser: argparse.ArgumentParser, config: Any, names: list[str],
                flags: dict[str, str] | None = None, note: str = "") -> None:  # fmt: skip
    """Add ``--name`` options for fields of ``config`` (a preset instance); the help is the field's
    docstring and the default shown is the preset's value. Options the user does not give are
    absent from the parsed namespace, so the preset's value stays (apply them with :func:`options_given`).

    Args:
        parser: where to add the options.
        config: the default preset (a config instance).
        names: fields, by dotted path or leaf name.
        flags: field name -> option name where they differ (``{"rays_per_step": "--rays"}``).
        note: appended to each default (e.g. "of the replay strategy").
    """
    flags = flags or {}
    paths = _paths(config)
    for name in names:
        path = find_field(config, name)
        owner, f = paths[path]
        hints = typing.get_type_hints(type(owner))
        kind, choices = _scalar_type(hints[f.name])
        doc = field_docs(type(owner)).get(f.name, "").replace("``", "")
        default = getattr(owner, f.name)
        flag = flags.get(name, "--" + path.rsplit(".", 1)[-1].replace("_", "-"))
        help_text = f"{doc} (default: {default}{' ' + note if note else ''})".replace("%", "%%")
        dest = "cfg:" + path
        if kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)  # fmt: skip
        else:
            parser.add_argument(flag, dest=dest, type=kind, choices=choices, default=argparse.SUPPRESS,
                                metavar=path.rsplit(".", 1)[-1].upper() if choices is None else None,
                                help=help_text)  # fmt: skip


def options_given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The config options the user gave on the command line, by dotted path."""
    return {k[4:]: v for k, v in vars(namespace).items() if k.startswith("cfg:")}
