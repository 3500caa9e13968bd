"""Config dataclasses <-> plain dicts: the one converter for the whole project.

Every config is a (nested) dataclass beside the code that uses it. ``from_dict`` builds one
from a nested dict and checks every key, because a typo that silently does nothing costs a
cluster run; ``to_dict`` is the inverse. It lives at the bottom of the layers so that model
checkpoints (which store their config), recipes and every command share it;
``pipelines/config_loader.py`` adds YAML files and ``key=value`` overrides on top.

Resume identity: a field that does not change what a run writes (actor counts, tracking
switches, experiment names) is declared with ``run_only(...)``. ``output_hash`` leaves those
out, so a half-finished job can be resumed with more actors, but not with other thresholds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_RUN_ONLY = "run_only"


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says what to fix."""


def run_only(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING):
    """A dataclass field that does not change the run's output (left out of ``output_hash``)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_RUN_ONLY: True})


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars (what YAML and MLflow get)."""
    return dataclasses.asdict(cfg)


def output_dict(cfg: Any) -> dict[str, Any]:
    """``to_dict`` without the ``run_only`` fields: what the output depends on."""
    out = to_dict(cfg)
    _drop_run_only(cfg, out)
    return out


def _drop_run_only(cfg: Any, tree: dict[str, Any]) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get(_RUN_ONLY):
            del tree[f.name]
        elif dataclasses.is_dataclass(value):
            _drop_run_only(value, tree[f.name])


def run_only_keys(cfg: Any, prefix: str = "") -> set[str]:
    """The dotted names of ``cfg``'s ``run_only`` fields, nested ones included (``workers.max_failures``)."""
    keys: set[str] = set()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get(_RUN_ONLY):
            keys.add(prefix + f.name)
        elif dataclasses.is_dataclass(value):
            keys |= run_only_keys(value, f"{prefix}{f.name}.")
    return keys


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}`` (MLflow params, config diffs)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def output_hash(cfg: Any) -> str:
    """A short, stable digest of what the output depends on (changes iff such a value changes)."""
    blob = json.dumps(output_dict(cfg), sort_keys=True, default=str).encode()
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
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
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
