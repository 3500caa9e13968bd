"""The Model Registry round trip: a file registered with an alias comes back byte for byte;
an alias that does not exist is a clear error."""

import mlflow
import pytest

from pipelines.registry import RegistryError, is_model_uri, lookup, register, resolve


def test_register_and_resolve_by_alias_and_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    (tmp_path / "store").mkdir()
    weights = tmp_path / "ema.safetensors"
    weights.write_bytes(b"weights v1")
    first = register(weights, "tandem-test", alias="candidate", tracking_uri=uri)
    weights.write_bytes(b"weights v2")
    second = register(weights, "tandem-test", alias="candidate", tracking_uri=uri)
    assert (first.version, second.version) == ("1", "2")

    assert is_model_uri("models:/tandem-test@candidate") and not is_model_uri(str(weights))
    got = resolve("models:/tandem-test@candidate", tracking_uri=uri, dst=tmp_path / "a")
    assert (got / "ema.safetensors").read_bytes() == b"weights v2"  # the alias moved to v2
    old = resolve("models:/tandem-test/1", tracking_uri=uri, dst=tmp_path / "b")
    assert (old / "ema.safetensors").read_bytes() == b"weights v1"
    assert lookup("models:/tandem-test@candidate", tracking_uri=uri).run_id == second.run_id
    assert not (tmp_path / "mlruns").exists()  # artifacts live beside the store, not in the cwd
    assert (tmp_path / "store" / "mlartifacts").is_dir()


def test_unknown_alias_or_name_says_what_exists(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    (tmp_path / "w").write_bytes(b"x")
    register(tmp_path / "w", "tandem-test", alias="prod", tracking_uri=uri)
    with pytest.raises(RegistryError, match="has @prod"):
        lookup("models:/tandem-test@nope", tracking_uri=uri)
    with pytest.raises(RegistryError, match="no registered model 'other'"):
        lookup("models:/other@prod", tracking_uri=uri)


def _training_run(storage, uri, step="step00000004"):
    """A training run's storage (checkpoint ``step`` with its EMA, recipe, MLflow run id); the run id."""
    from pipelines.tracking import MlflowTracker

    (storage / "checkpoints" / step).mkdir(parents=True)
    (storage / "checkpoints" / step / "ema.safetensors").write_bytes(b"ema weights")
    (storage / "checkpoints" / "latest").write_text(step)
    (storage / "recipe.yaml").write_text("preset: debug\n")
    with MlflowTracker("tandem-train", tracking_uri=uri) as run:
        (storage / "mlflow_run_id").write_text(run.run_id)
    return run.run_id


def test_a_run_registers_once_and_what_starts_from_it_links_back(tmp_path, monkeypatch):
    """tandem-dit: a finished run re-run points its alias at the same version; a model started
    from that run's checkpoint (or from the alias) names the version and the run (lineage),
    and tandem-aligned carries those links."""
    from pipelines.align_cmd import ALIGNED_MODEL, load_align_recipe, register_aligned
    from pipelines.registry import lineage
    from pipelines.tracking import MlflowTracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    train = tmp_path / "train"
    run_id = _training_run(train, uri)
    tags = {"step": "step00000004"}
    first = register(train / "checkpoints" / "step00000004", "tandem-dit", alias="candidate", run_id=run_id,
                     tracking_uri=uri, tags=tags, once=True)
    again = register(train / "checkpoints" / "step00000004", "tandem-dit", alias="candidate", run_id=run_id,
                     tracking_uri=uri, tags=tags, once=True)
    assert first.version == again.version == "1"

    linked = {"init.run_id": run_id, "init.model_version": "tandem-dit/1"}
    assert lineage(str(train / "checkpoints"), tracking_uri=uri) == linked
    assert lineage(str(train / "checkpoints" / "step00000004" / "ema.safetensors"), tracking_uri=uri) == linked
    assert lineage("models:/tandem-dit@candidate", tracking_uri=uri) == linked
    assert lineage("", tracking_uri=uri) == {}

    aligned = tmp_path / "align"
    _training_run(aligned, uri, "step00000002")  # an alignment run's storage looks the same
    with MlflowTracker("tandem-align", tracking_uri=uri, run_id=(aligned / "mlflow_run_id").read_text()) as run:
        run.set_tags({"init": "models:/tandem-dit@candidate", **linked})
    version = register_aligned(load_align_recipe("debug_cpu", [f"storage={aligned}", f"tracking_dir={tmp_path}"]))
    mv = mlflow.MlflowClient(uri).get_model_version(ALIGNED_MODEL, version.version)
    assert {k: mv.tags[k] for k in linked} == linked and mv.tags["step"] == "step00000002"
    assert "tandem-dit/1" in mv.description
    assert (aligned / "aligned" / "model.safetensors").read_bytes() == b"ema weights"
