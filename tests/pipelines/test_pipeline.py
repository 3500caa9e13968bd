"""``tandem pipeline`` (issue 25): the stages as a Dagster asset graph, materialised in process
with real Dagster, real MLflow and real Ray at debug size. A second run skips every asset; a
changed curation knob re-runs curation and what its new output changes; a latents knob
re-runs only the latents. A bad ``pipeline.yaml`` exits 2 naming what is wrong."""

import json
from pathlib import Path

import pytest
import yaml

from curation.sample_media import make_clip
from pipelines.cli import main

FIRST_HALF = {"curate": {"overrides": ["skip=[transcribe]"]}, "latents": {"recipe": "debug"}}


def write_pipeline(folder: Path, stages: dict, **top) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"footage": "footage", "out": "out", "stages": stages, **top}))
    return path


@pytest.mark.parametrize("stages, top, message", [
    ({"curate": {}, "latentz": {}}, {}, "unknown stage 'latentz'"),
    ({"curate": {"recipes": "x"}}, {}, "stages.curate: unknown key 'recipes'"),
    ({"curate": {}, "latents": {"recipe": "huge"}}, {}, "stages.latents: unknown recipe 'huge'"),
    ({"curate": {"overrides": ["shots.nonsense=1"]}}, {}, "stages.curate:"),
    ({"curate": {}}, {"outdir": "x"}, "unknown key 'outdir'"),
    ({"curate": {}, "train": {"recipe": "debug_cpu"}}, {}, "stage 'latents' is missing"),
])
def test_a_bad_pipeline_file_exits_2_naming_what_is_wrong(tmp_path, capsys, stages, top, message):
    path = write_pipeline(tmp_path, stages, **top)
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def states(capsys) -> dict[str, str]:
    lines = capsys.readouterr().out.splitlines()
    return dict(line.split()[:2] for line in lines if line.startswith("  "))


@pytest.mark.slow  # curation and latents on local Ray, four times (unchanged assets cost nothing)
@pytest.mark.timeout(900)
def test_materialise_skip_and_rerun_only_what_a_knob_changes(tmp_path, capsys, local_ray, chromium):
    pytest.importorskip("dagster", reason="the pipeline extra is not installed (pip install -e '.[pipeline]')")

    make_clip(tmp_path / "footage" / "batch1" / "a.mp4", [1.2, 1.4], size=(128, 96))
    make_clip(tmp_path / "footage" / "batch1" / "b.mp4", [1.6], size=(128, 96))
    path = write_pipeline(tmp_path, FIRST_HALF)
    assert main(["pipeline", "run", str(path)]) == 0
    assert states(capsys) == {"clip_shards": "ran", "latent_shards": "ran"}
    assert main(["pipeline", "status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {a: s["state"] for a, s in status.items()} == {"clip_shards": "fresh", "latent_shards": "fresh"}

    # Lineage (part 1) through the pipeline: the latents' run reaches the footage's sha256.
    from pipelines.lineage import chain

    tree = chain(status["latent_shards"]["mlflow_run_id"])  # the store every command logs to
    curate = tree["inputs"][0]["produced_by"]
    assert curate["stage"] == "curate" and sorted(Path(f["path"]).name for f in curate["footage"]) == ["a.mp4", "b.mp4"]

    assert main(["pipeline", "run", str(path)]) == 0  # nothing changed
    assert states(capsys) == {"clip_shards": "skipped", "latent_shards": "skipped"}

    knob = {**FIRST_HALF, "curate": {"overrides": ["skip=[transcribe]", "shots.min_clip_s=1.5"]}}
    write_pipeline(tmp_path, knob)
    assert main(["pipeline", "status", str(path)]) == 0
    assert states(capsys) == {"clip_shards": "stale", "latent_shards": "fresh"}  # its input not re-made yet
    assert main(["pipeline", "run", str(path)]) == 0
    assert states(capsys) == {"clip_shards": "ran", "latent_shards": "ran"}  # fewer clips: other latents

    write_pipeline(tmp_path, {**knob, "latents": {"recipe": "debug", "overrides": ["buckets.fps=4"]}})
    assert main(["pipeline", "run", str(path)]) == 0
    assert states(capsys) == {"clip_shards": "skipped", "latent_shards": "ran"}

    # Dagster's UI on the pipeline's store: the asset graph and the materialisations.
    from pipelines.pipeline_cmd import ui_command
    from pipelines.pipeline_spec import load_spec
    from tests.browser_kit import free_port, start_server, stop_server, wait_for_port, wait_for_text

    port = free_port()
    cmd, env = ui_command(load_spec(path), port)
    server = start_server(cmd, env=env, cwd=Path(__file__).parents[2])
    try:
        wait_for_port(port, timeout=180, process=server)
        chromium.get(f"http://127.0.0.1:{port}/asset-groups")  # the graph of the tandem group
        body = wait_for_text(chromium, "latent_shards", timeout=120)
        assert "clip_shards" in body
        chromium.get(f"http://127.0.0.1:{port}/assets/latent_shards")  # its last materialisation's metadata
        body = wait_for_text(chromium, "Latest materialization", timeout=120)
        assert "data_version" in body and "mlflow_run_id" in body
        chromium.get(f"http://127.0.0.1:{port}/assets/latent_shards?view=lineage")  # what it was made from
        wait_for_text(chromium, "clip_shards", timeout=120)
    finally:
        stop_server(server)


def test_the_sensor_asks_for_a_run_when_a_footage_batch_appears_and_status_starts_missing(tmp_path, capsys):
    dg = pytest.importorskip("dagster", reason="the pipeline extra is not installed (pip install -e '.[pipeline]')")
    from pipelines.pipeline_assets import build_definitions
    from pipelines.pipeline_spec import load_spec

    (tmp_path / "footage" / "batch1").mkdir(parents=True)
    (tmp_path / "prompts.txt").write_text("a drummer plays a fill\n")
    stages = {**FIRST_HALF, "train": {"recipe": "debug_cpu"}, "generate": {"prompts": "prompts.txt"}, "tasks": {},
              "rankings": {"exports": ["exports"]}}
    path = write_pipeline(tmp_path, stages)
    defs = build_definitions(load_spec(path))
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == {
        "clip_shards", "latent_shards", "checkpoint", "rollouts", "annotation_tasks", "rankings"}
    sensor = defs.resolve_sensor_def("new_footage")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        [first] = list(sensor(context))
        assert first.tags["tandem/new_batches"] == "batch1"
        assert list(sensor(context)) == []  # nothing new
        (tmp_path / "footage" / "batch2").mkdir()
        [second] = list(sensor(context))
        assert second.tags["tandem/new_batches"] == "batch2"

    assert main(["pipeline", "status", str(path)]) == 0
    assert states(capsys) == {"clip_shards": "missing", "latent_shards": "missing", "checkpoint": "missing",
                              "rollouts": "missing", "annotation_tasks": "missing", "rankings": "waiting"}


def test_the_readme_pipeline_file_names_every_stage_and_checks():
    from pipelines.pipeline_spec import STAGES, load_spec

    spec = load_spec(Path(__file__).parents[2] / "pipeline.yaml")
    assert list(spec.stages) == list(STAGES) and Path(spec.stages["generate"].prompts).is_file()
