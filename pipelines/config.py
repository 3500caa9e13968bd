"""One config mechanism for the whole project: dataclasses + YAML + ``key=value`` overrides.

A run's config is a (nested) dataclass. ``load_config`` fills it from a YAML file, then
applies dotted overrides from the command line (``train.lr=3e-4 model.preset=small``);
values are parsed as YAML scalars, so ``true``, ``3``, ``1e-4`` and ``[1, 2]`` get their
natural types. Unknown keys raise ``ConfigError`` naming the valid ones, because a typo
that silently does nothing costs a cluster run. ``save_config`` writes the resolved
config next to the run so it can be reproduced (and logged to MLflow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says what to fix."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars (what YAML and MLflow get)."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """A short, stable digest of the resolved config (changes iff a value changes)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, checking every key exists."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys{' under ' + where.rstrip('.') if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{' for ' + where.rstrip('.') if where else ''}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    dc = _dataclass_in(hint)
    if dc is not None and isinstance(value, dict):
        return from_dict(dc, value, where=where + ".")
    if dc is not None and dataclasses.is_dataclass(value):
        return value
    base = _non_optional(hint)
    if value is None:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (int, float) and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; the field's type says it is a number.
        try:
            return base(value)
        except ValueError:
            pass
    if base is tuple and isinstance(value, list):
        return tuple(value)
    if base in (int, float, str, bool) and not isinstance(value, base):
        raise ConfigError(f"{where}: expected {base.__name__}, got {value!r}")
    return value


def _non_optional(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _non_optional(args[0])
        return hint
    return origin or hint


def _dataclass_in(hint: Any) -> type | None:
    base = _non_optional(hint)
    return base if isinstance(base, type) and dataclasses.is_dataclass(base) else None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part}")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` <- dotted ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data = merge(_defaults_tree(cls), merge(data, parse_overrides(list(overrides))))
    return from_dict(cls, data)


def _defaults_tree(cls: type) -> dict[str, Any]:
    # Start from the defaults so an override of one nested field keeps its siblings.
    return to_dict(cls())


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (the file ``load_config`` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
