"""Lineage in MLflow (issue 25): every stage's run lists what it read and wrote as MLflow
datasets, each input names the run that wrote it, and ``tandem lineage`` follows those links
from a registered model down to the raw footage's sha256. Here the stages' runs are recorded
by hand on a real MLflow store (seconds); the stages' own hooks are checked where they run
for real (test_curate_dag, test_latents, ...)."""

import json

import mlflow
import pytest

from pipelines.cli import main
from pipelines.lineage import Data, chain, record_run
from pipelines.registry import register
from pipelines.tracking import default_tracking_uri, open_tracker

FOOTAGE = [{"path": "/raw/a.mp4", "content": "aaaa0000aaaa0000", "size": 10},
           {"path": "/raw/b.mp4", "content": "bbbb1111bbbb1111", "size": 20}]


def _run(uri, stage, inputs, outputs, footage=None, register_as=None, tmp=None):
    tracker = open_tracker(f"tandem-{stage.split()[0]}", stage)
    tracker.close()
    version = None
    if register_as:
        weights = tmp / register_as
        weights.mkdir()
        (weights / "model.safetensors").write_bytes(register_as.encode())
        version = register(weights, register_as, run_id=tracker.run_id, tracking_uri=uri)
        outputs = [Data(outputs[0].name, version.uri, outputs[0].digest)]
    record_run(uri, tracker.run_id, stage, f"cfg-{stage}", inputs, outputs, footage)
    return tracker.run_id, version


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """curate -> latents -> train -> generate -> annotate import -> reward train -> align, each
    input found by its digest among earlier outputs (the checkpoint by its version's run)."""
    tmp = tmp_path_factory.mktemp("lineage")
    uri = default_tracking_uri()  # where open_tracker logs (another module may have set mlflow's own)
    runs = {}
    runs["curate"], _ = _run(uri, "curate", [Data("footage", "/raw", "f00")], [Data("clip-shards", "/c", "m1")],
                             footage=FOOTAGE)
    runs["latents"], _ = _run(uri, "latents", [Data("clip-shards", "/c", "m1")], [Data("latent-shards", "/l", "l1")])
    runs["train"], dit = _run(uri, "train", [Data("latent-shards", "/l", "l1")], [Data("checkpoint", "", "c1")],
                              register_as="tandem-dit", tmp=tmp)
    runs["generate"], _ = _run(uri, "generate", [Data("checkpoint", dit.uri, "c1", dit.run_id)],
                               [Data("rollouts", "/r", "r1")])
    runs["import"], _ = _run(uri, "annotate import", [Data("rollouts", "/r", "r1")], [Data("rankings", "/k", "k1")])
    runs["reward"], rm = _run(uri, "reward train", [Data("rankings", "/k", "k1"), Data("rollouts", "/r", "r1")],
                              [Data("reward-model", "", "w1")], register_as="tandem-reward", tmp=tmp)
    runs["align"], aligned = _run(uri, "align", [Data("checkpoint", dit.uri, "c1"), Data("reward-model.q", rm.uri, "w1")],
                                  [Data("aligned-model", "", "a1")], register_as="tandem-aligned", tmp=tmp)
    return uri, runs, aligned


def stages(node) -> set[str]:
    """Every stage the chain reaches."""
    found = {node["stage"]}
    for item in node.get("inputs", []):
        if "produced_by" in item:
            found |= stages(item["produced_by"])
    return found


def test_each_input_names_the_run_that_wrote_it_and_the_ui_sees_datasets_with_their_context(store):
    uri, runs, _ = store
    client = mlflow.MlflowClient(uri)
    align = client.get_run(runs["align"])
    assert align.data.tags["lineage.from.checkpoint"] == runs["train"]  # found by its digest
    assert align.data.tags["lineage.from.reward-model.q"] == runs["reward"]
    assert align.data.tags["lineage.config_digest"] == "cfg-align"
    contexts = {(d.dataset.name, t.value) for d in align.inputs.dataset_inputs for t in d.tags
                if t.key == "mlflow.data.context"}
    assert contexts == {("checkpoint", "input"), ("reward-model.q", "input"), ("aligned-model", "output")}
    # MLflow's own search finds the runs that read a digest
    readers = client.search_runs([e.experiment_id for e in client.search_experiments()], "dataset.digest = 'r1'")
    assert {r.info.run_id for r in readers} == {runs["generate"], runs["import"], runs["reward"]}


def test_lineage_of_the_aligned_model_reaches_the_raw_footage_with_every_config_digest(store, capsys):
    uri, runs, aligned = store
    tree = chain(aligned.uri, tracking_uri=uri)
    assert tree["model"] == aligned.uri and tree["run_id"] == runs["align"]
    assert stages(tree) == {"align", "train", "latents", "curate", "reward train", "annotate import", "generate"}

    assert main(["lineage", aligned.uri, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    node = printed
    for name in ("checkpoint", "latent-shards", "clip-shards"):
        node = next(i for i in node["inputs"] if i["name"] == name)["produced_by"]
    assert node["stage"] == "curate" and node["config_digest"] == "cfg-curate"
    assert [(f["path"], f["sha256"]) for f in node["footage"]] == [(f["path"], f["content"]) for f in FOOTAGE]

    assert main(["lineage", runs["align"]]) == 0
    text = capsys.readouterr().out
    assert "footage aaaa0000aaaa0000 /raw/a.mp4" in text and "config cfg-latents" in text
    assert "(listed above)" in text  # the train run, reached through generate and align both


def test_an_unknown_run_or_model_exits_2_naming_it(store, capsys):
    assert main(["lineage", "0123456789abcdef"]) == 2
    assert "no run 0123456789abcdef" in capsys.readouterr().err
    assert main(["lineage", "models:/tandem-aligned/99"]) == 2
    assert "models:/tandem-aligned/99 does not resolve" in capsys.readouterr().err


@pytest.mark.slow  # an MLflow server and a browser
@pytest.mark.timeout(360)
def test_the_mlflow_run_page_shows_what_the_run_read_and_wrote(store, chromium):
    from pipelines.ui import ui_command
    from tests.browser_kit import start_server, stop_server, wait_for_port, wait_for_text
    from training.local_ranks import free_port

    uri, runs, _ = store
    run = mlflow.MlflowClient(uri).get_run(runs["align"])
    port = free_port()
    server = start_server(ui_command(uri, "127.0.0.1", port))
    try:
        wait_for_port(port, timeout=180, process=server)  # minutes on a loaded 2-core machine
        chromium.get(f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning")
        body = wait_for_text(chromium, "Datasets")
        assert "checkpoint (c1)" in body and "Input" in body  # the first dataset, its digest and context
        chromium.find_element("xpath", "//*[normalize-space(text())='+2']").click()  # the other two
        body = wait_for_text(chromium, "aligned-model (a1)")
        assert "reward-model.q (w1)" in body and "Output" in body
    finally:
        stop_server(server)

