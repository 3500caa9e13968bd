"""MLflow's Model Registry for tandem's weights: register a file or folder under a name with
an alias, and resolve ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) back to local files.

A model version's artifacts are tandem's own files (safetensors with their config in the
metadata, plus whatever json goes with them), logged under ``model/`` of a run, not an MLflow
flavour: tandem's loaders read them, and nothing is pickled. Names in use:
``tandem-dit`` (``tandem train``'s final weights), ``tandem-reward``, ``tandem-aligned`` (whose
versions carry ``init.*`` tags: the model version or run they started from, ``lineage``).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.tracking import default_tracking_uri, experiment_id, run_id_of

SCHEME = "models:/"


class RegistryError(ValueError):
    """A model URI that does not resolve; the message says what exists."""


@dataclass
class ModelVersion:
    name: str
    version: str
    alias: str | None
    run_id: str
    source: str  # artifact URI of the version's files

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}"


def is_model_uri(value: str) -> bool:
    return str(value).startswith(SCHEME)


def _client(tracking_uri: str | None):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in command output
    import mlflow

    return mlflow.MlflowClient(tracking_uri or default_tracking_uri("runs"))


def check_alias(alias: str, key: str) -> None:
    """An alias MLflow accepts, or a ValueError naming ``key`` (the recipe field) and the fix."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", alias) or alias.lower() == "latest":
        raise ValueError(f"{key} {alias!r}: use letters, digits, - and _ ('latest' is reserved by MLflow), "
                         f"e.g. {key}=candidate")


def _same_version(client, name: str, run_id: str, tags: dict[str, str]):
    """A version of ``name`` registered from ``run_id`` with these ``tags``, if any."""
    for mv in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if all(mv.tags.get(k) == v for k, v in tags.items()):
            return mv
    return None


def register(path: str | Path, name: str, *, alias: str | None = None, run_id: str | None = None,
             tracking_uri: str | None = None, tags: dict[str, str] | None = None, description: str = "",
             once: bool = False) -> ModelVersion:
    """Log ``path`` (a file or folder) under ``model/`` of run ``run_id`` (a new run in the
    ``tandem-registry`` experiment when None), register it as a new version of ``name`` and
    point ``alias`` at it. ``once``: when ``run_id`` already registered a version of ``name``
    with the same ``tags`` (a finished run run again), point the alias at that one instead."""
    from mlflow.exceptions import MlflowException

    path = Path(path)
    if not path.exists():
        raise RegistryError(f"cannot register {path}: it does not exist")
    client = _client(tracking_uri)
    if once and run_id and (mv := _same_version(client, name, run_id, tags or {})):
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
        return ModelVersion(name, str(mv.version), alias, run_id, mv.source)
    own_run = run_id is None
    if own_run:
        run_id = client.create_run(experiment_id(client, "tandem-registry"), run_name=f"register {name}").info.run_id
    if path.is_dir():
        client.log_artifacts(run_id, str(path), "model")
    else:
        client.log_artifact(run_id, str(path), "model")
    if own_run:
        client.set_terminated(run_id)
    with contextlib.suppress(MlflowException):  # already registered: add a version
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source, run_id=run_id, tags=tags or {}, description=description or None)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return ModelVersion(name, str(mv.version), alias, run_id, source)


def lookup(uri: str, *, tracking_uri: str | None = None) -> ModelVersion:
    """The version ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names."""
    from mlflow.exceptions import MlflowException

    if not is_model_uri(uri):
        raise RegistryError(f"{uri!r} is not a model URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
    rest = uri[len(SCHEME):]
    name, sep, alias = rest.partition("@")
    version = None
    if not sep:
        name, _, version = rest.partition("/")
    client = _client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if sep else client.get_model_version(name, version)
    except MlflowException as exc:
        try:
            known = client.get_registered_model(name)
            have = ", ".join(f"@{a}" for a in sorted(known.aliases)) or "no aliases"
            hint = f"{name} has {have}; versions up to {max(int(v.version) for v in known.latest_versions)}"
        except MlflowException:
            hint = f"no registered model {name!r} in {client.tracking_uri}"
        raise RegistryError(f"{uri} does not resolve: {hint}") from exc
    return ModelVersion(name, str(mv.version), alias or None, mv.run_id, mv.source)


def resolve(uri: str, *, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """Local path of the files registered under ``uri`` (downloaded into ``dst`` or a temp dir)."""
    import mlflow

    mv = lookup(uri, tracking_uri=tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst) if dst else None,
                                                tracking_uri=tracking_uri or default_tracking_uri("runs"))
    return Path(local)


def lineage(init: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """What a run started from, as ``init.*`` tags: for ``models:/...`` the version it names now
    (``init.model_version`` NAME/VERSION) and the run that made it; for a training run's
    checkpoint (a path inside its storage) that run's id and any version registered from it.
    Empty for a fresh model or a file of no known run."""
    from training.checkpoint_loader import CheckpointError, locate

    if not init:
        return {}
    if is_model_uri(init):
        mv = lookup(init, tracking_uri=tracking_uri)
        return {"init.model_version": f"{mv.name}/{mv.version}", "init.run_id": mv.run_id or ""}
    try:
        ref = locate(init)
    except CheckpointError:
        return {}
    run_id = run_id_of(ref.run_dir) if ref.run_dir else None
    if not run_id:
        return {}
    tag = ref.path.name if ref.kind == "deepspeed" else ref.path.parent.name  # stepNNNNNNNN
    same_step = [v for v in _client(tracking_uri).search_model_versions(f"run_id='{run_id}'") if v.tags.get("step") == tag]
    return {"init.run_id": run_id} | ({"init.model_version": f"{same_step[0].name}/{same_step[0].version}"}
                                      if same_step else {})
