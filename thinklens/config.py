"""Configs: one frozen dataclass per command, at once its Python arguments, its command-line
flags and the schema of its YAML/TOML config file.

A field ``batch_size: int = option(8, help="texts per forward pass")`` of a ``Config`` is the
flag ``--batch-size`` (default 8), the file key ``batch_size`` and the keyword argument
``batch_size=``: its default is written once. The type gives the flag's shape: ``Literal``
gives choices, ``bool`` the pair ``--x/--no-x``, ``tuple[X, ...]`` a list of values, ``X | None``
an optional value, and a nested config a group of dotted flags (``--data.n-score``) and a table
of keys. A field without a default is required; ``option(positional=True)`` makes it an
argument (``thinklens echo gap MODEL TRACES``). A file is read strictly: an unknown key, a
wrong type or a value outside the choices is an error that names the key.

``default_of(fn, name)`` takes a field's default from the function the command calls, so a
command and the function it runs cannot disagree.
"""

# No ``from __future__ import annotations``: the fields declared here (``ModelConfig``'s) keep
# their types as objects, so a config in another module that inherits them documents them too.
import argparse
import dataclasses
import functools
import inspect
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from thinklens.backends import BackendName
from thinklens.loading import load_model

# A field's flag goes to ``field:<name>`` in the argparse namespace, apart from the parser's own
# entries (``fn``, ``command``), and ``--config FILE`` to ``config_file``.
_FIELD = "field:"
_CONFIG_FILE = "config_file"
_SUFFIXES = (".yaml", ".yml", ".toml")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    positional: bool = False,
    choices: Sequence[Any] | None = None,
    relative: bool = False,
) -> Any:
    """A config field: its default (none: required), its flag's help and its CLI shape.

    Args:
        positional: an argument of the command (``MODEL``) rather than a flag (``--model``).
        choices: the allowed values, when the type is not a ``Literal`` (names made at runtime).
        relative: a path that a config file gives relative to the file's folder.
    """
    meta = dict(help=help, positional=positional, choices=choices, relative=relative)
    return dataclasses.field(default=default, metadata=meta)


def default_of(fn: Callable[..., Any], name: str) -> Any:
    """The default of ``fn``'s parameter ``name``: the value a command passes when not told."""
    default = inspect.signature(fn).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{fn.__qualname__}'s parameter {name!r} has no default")
    return default


@dataclass(frozen=True, kw_only=True)
class Config:
    """Base of the configs: choices checked on construction; built from a mapping, a file or
    parsed flags."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_choices(f.name, getattr(self, f.name), _choices(f, _hints(type(self))[f.name]))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "config") -> typing.Self:
        """A config from a mapping (read from a file, or written in Python), strictly."""
        return _make(cls, _check(cls, raw, where), where)

    @classmethod
    def from_file(cls, path: str | Path) -> typing.Self:
        """A config from a ``.yaml``/``.yml``/``.toml`` file; relative paths are the file's."""
        path = Path(path)
        try:
            cfg = cls.from_dict(read_config_file(path))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        return _relative_to(cfg, path.parent, given=set())

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, prefix: str = "") -> None:
        """Add one argument per field to ``parser`` (nested configs: dotted flags)."""
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            hint, name = hints[f.name], prefix + f.name
            if _is_config(hint):
                group = parser.add_argument_group(name, _doc(hint))
                hint.add_flags(group, prefix=f"{name}.")
                continue
            kw = _flag_shape(f, hint)
            kw["help"] = _help(f).replace("%", "%%")
            if f.metadata.get("positional"):
                kw["metavar"] = f.name  # argparse names a positional by its dest otherwise
                parser.add_argument(_FIELD + name, nargs="?", **kw)
            else:
                flag = "--" + name.replace("_", "-")
                parser.add_argument(flag, dest=_FIELD + name, **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> typing.Self:
        """The config of parsed flags over the ``--config`` file over the defaults."""
        flags: dict[str, Any] = {}
        for dest, value in vars(args).items():
            if dest.startswith(_FIELD):
                *parents, key = dest.removeprefix(_FIELD).split(".")
                node = flags
                for p in parents:
                    node = node.setdefault(p, {})
                node[key] = value
        path = getattr(args, _CONFIG_FILE, None)
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values = _check(cls, read_config_file(Path(path)), "config")
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        values = _merge(values, _check(cls, flags, "flags"))
        for f in dataclasses.fields(cls):
            if f.name not in values and _required(f):
                shown = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
                raise ValueError(f"{shown} is required: give it here or in a --config file")
        cfg = _make(cls, values, "config")
        return _relative_to(cfg, Path(path).parent, set(flags)) if path is not None else cfg


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    """The model a command loads, and the backend that runs it."""

    model: str = option(
        help="an embedded alias, a model organism, a folder or a hub name", positional=True
    )
    backend: BackendName = option(
        default_of(load_model, "backend"), help="the backend that runs its forward passes"
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML file (its keys are not checked here)."""
    if not path.exists():
        raise FileNotFoundError(f"no config file at {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
        raw = {} if raw is None else raw
    elif path.suffix == ".toml":
        raw = tomllib.loads(text)
    else:
        raise ValueError(f"cannot read {path.name}: a config file is {', '.join(_SUFFIXES)}")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} must hold a table of keys, not {type(raw).__name__}")
    return dict(raw)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    cls: type[Config],
    handler: Callable[[Any], None],
    help: str,
) -> argparse.ArgumentParser:
    """A subcommand whose flags are ``cls``'s fields (plus ``--config FILE``); it calls
    ``handler`` with the config. Its description is ``cls``'s docstring."""
    q = subparsers.add_parser(name, help=help, description=_doc(cls))
    cls.add_flags(q)
    q.add_argument(
        "--config",
        dest=_CONFIG_FILE,
        metavar="FILE",
        default=None,
        help="a YAML or TOML file whose keys are these settings (flags given here override it)",
    )
    q.set_defaults(fn=lambda args: handler(cls.from_args(args)))
    return q


# --- types ------------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Config)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _members(hint: Any) -> tuple[Any, ...]:
    """The types of a union without None (one type for anything else)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return tuple(a for a in typing.get_args(hint) if a is not type(None))
    return (hint,)


def _item(hint: Any) -> tuple[Any, bool]:
    """The type of one value and whether the field holds a tuple of them."""
    inner = _members(hint)
    if len(inner) == 1 and typing.get_origin(inner[0]) is tuple:
        return typing.get_args(inner[0])[0], True
    return (inner[0] if len(inner) == 1 else hint), False


def _choices(f: dataclasses.Field, hint: Any) -> tuple[Any, ...] | None:
    if f.metadata.get("choices") is not None:
        return tuple(f.metadata["choices"])
    item, _ = _item(hint)
    return typing.get_args(item) if typing.get_origin(item) is Literal else None


def _name(hint: Any) -> str:
    return " | ".join(getattr(t, "__name__", str(t)) for t in _members(hint))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against a field's type; nested configs stay mappings (``_make``)."""
    if _is_config(hint):
        return _check(hint, value, where)
    if value is None and type(None) in typing.get_args(hint):
        return None
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        for member in _members(hint):
            try:
                return _coerce(member, value, where)
            except ValueError:
                continue
        raise ValueError(f"{where} must be {_name(hint)}, got {value!r}")
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        values = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(values))
    if typing.get_origin(hint) is Literal:  # its values are checked by _check_choices
        hint = type(typing.get_args(hint)[0])
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"{where}: a config field holds bool, int, float or str, not {hint}")
    if not ok:
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def _check(cls: type[Config], raw: Any, where: str) -> dict[str, Any]:
    """``raw``'s keys and types checked against ``cls``; errors name the key."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table of keys, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ValueError(f"unknown key {key!r} in {where}; known keys: {', '.join(fields)}")
    hints, out = _hints(cls), {}
    for k, v in raw.items():
        name = k if where in ("config", "flags") else f"{where}.{k}"
        out[k] = _coerce(hints[k], v, name)
        _check_choices(name, out[k], _choices(fields[k], hints[k]))
    return out


def _check_choices(name: str, value: Any, known: tuple[Any, ...] | None) -> None:
    """An error naming the field when a value (or an item of a tuple) is not a choice."""
    for v in value if isinstance(value, tuple) else (value,):
        if known is not None and v is not None and v not in known:
            raise ValueError(f"{name}: {v!r} is not one of {', '.join(map(str, known))}")


def _make(cls: type[Config], values: Mapping[str, Any], where: str) -> Any:
    """A config from checked values; a missing required key is an error naming it."""
    hints, kw = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            inner = f.name if where == "config" else f"{where}.{f.name}"
            kw[f.name] = _make(hints[f.name], v, inner) if _is_config(hints[f.name]) else v
        elif _required(f):
            raise ValueError(f"{where} lacks the required key {f.name!r}")
    return cls(**kw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over``'s values over ``base``'s, table by table."""
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _merge(out[k], v) if both else v
    return out


def _relative_to(cfg: Config, folder: Path, given: set[str]) -> Any:
    """``cfg`` with its relative-path fields (not given as flags) taken inside ``folder``."""
    changes = {
        f.name: str(folder / getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.metadata.get("relative")
        and f.name not in given
        and isinstance(getattr(cfg, f.name), str)
        and not Path(getattr(cfg, f.name)).is_absolute()
    }
    return dataclasses.replace(cfg, **changes) if changes else cfg


# --- flags ------------------------------------------------------------------------------------


def _doc(cls: type) -> str:
    """A config's docstring as help text (reST's double backquotes read as single ones)."""
    return (inspect.getdoc(cls) or "").replace("``", "`")


def _flag_shape(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """argparse keywords of a field: type, choices, nargs or action (no default: flags that
    are not given stay out of the namespace, so a config file's value is kept)."""
    item, many = _item(hint)
    kw: dict[str, Any] = dict(default=argparse.SUPPRESS)
    choices = _choices(f, hint)
    if item is bool and not many:
        kw["action"] = argparse.BooleanOptionalAction
        return kw
    if choices is not None:
        kw["choices"] = choices
        kw["type"] = type(choices[0])
    else:
        kw["type"] = _parser_of(item)
        kw["metavar"] = f.name.upper()
    if many:
        kw["nargs"] = "*"
    return kw


def _parser_of(hint: Any) -> Callable[[str], Any]:
    """The function that reads one command-line word as ``hint`` (a union tries each type)."""
    members = _members(hint)
    if len(members) == 1:
        return members[0]

    def parse(text: str) -> Any:
        for t in members:
            try:
                return t(text)
            except ValueError:
                continue
        raise argparse.ArgumentTypeError(f"{text!r} is not {_name(hint)}")

    parse.__name__ = _name(hint)
    return parse


def _help(f: dataclasses.Field) -> str:
    """The field's help and its default (or that it is required)."""
    text = f.metadata.get("help", "") if f.metadata else ""
    if _required(f):
        return f"{text} (required, here or in --config FILE)".strip()
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None or default is False:
        return text
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    return f"{text} (default: {shown})".strip()
