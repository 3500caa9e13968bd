"""The Model Registry round trip: a file registered with an alias comes back byte for byte;
an alias that does not exist is a clear error."""

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
