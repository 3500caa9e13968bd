"""One config mechanism for the whole project: dataclasses + YAML + ``key=value`` overrides.

A run's config is a (nested) dataclass, converted by ``model.config`` (the one converter,
also used by model checkpoints). ``load_config`` fills it from a YAML file, then applies
dotted overrides from the command line (``train.lr=3e-4 model.preset=small``); values are
parsed as YAML scalars, so ``true``, ``3``, ``1e-4`` and ``[1, 2]`` get their natural types.
Unknown keys raise ``ConfigError`` naming the valid ones. ``save_config`` writes the resolved
config next to the run so it can be reproduced (and logged to MLflow).

Recipes: ``pipelines/recipes/<kind>_<name>.yaml`` (kind: train, latents, align, reward).
``load_recipe`` is the one loader every command uses (a recipe name or a YAML path, then
overrides); ``add_recipe_arguments`` the one way a command takes them on its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from model.config import ConfigError, from_dict, output_hash, to_dict

__all__ = ["RECIPES", "ConfigError", "add_recipe_arguments", "from_dict", "load_config", "load_recipe", "merge",
           "output_hash", "parse_overrides", "recipe_names", "resolve_recipe", "save_config", "to_dict"]

T = TypeVar("T")
RECIPES = Path(__file__).parent / "recipes"


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
    # Start from the defaults so an override of one nested field keeps its siblings.
    data = merge(to_dict(cls()), merge(data, parse_overrides(list(overrides))))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (the file ``load_config`` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def recipe_names(kind: str) -> list[str]:
    """The recipes of ``kind`` by name: ``train_debug_cpu.yaml`` is ``debug_cpu``."""
    return sorted(p.stem.removeprefix(f"{kind}_") for p in RECIPES.glob(f"{kind}_*.yaml"))


def resolve_recipe(name_or_path: str, kind: str) -> Path:
    """A YAML path, or a recipe name: ``debug_cpu`` -> pipelines/recipes/train_debug_cpu.yaml
    (``kind`` "latents": ``1b_ltx2`` -> latents_1b_ltx2.yaml; the full stem works too)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = RECIPES / f"{kind}_{name_or_path.removeprefix(f'{kind}_')}.yaml"
    if not candidate.exists():
        raise ConfigError(f"unknown recipe {name_or_path!r}; known: {', '.join(recipe_names(kind))}")
    return candidate


def load_recipe(cls: type[T], kind: str, name_or_path: str | None, overrides: list[str] = ()) -> T:
    """Defaults of ``cls`` <- the recipe (a name of ``kind``, or a YAML path; None: none) <- overrides."""
    return load_config(cls, resolve_recipe(name_or_path, kind) if name_or_path else None, list(overrides))


def add_recipe_arguments(parser, kind: str, example: str, *, required: bool = True) -> None:
    """``--config RECIPE``, ``key=value`` overrides, ``--address`` and ``--run-name``: how
    every command that runs a recipe on Ray takes it (``example``: an override to show)."""
    parser.add_argument("--config", required=required,
                        help=f"recipe name ({', '.join(recipe_names(kind))}) or YAML path")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides (e.g. {example})")
    add_run_arguments(parser)


def add_run_arguments(parser) -> None:
    """``--address`` and ``--run-name``, as every command that runs on Ray takes them."""
    parser.add_argument("--address", help="Ray cluster address (default: start or join local Ray)")
    parser.add_argument("--run-name", help="MLflow run name (default: the command, its recipe, inputs and overrides)")
