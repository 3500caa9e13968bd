"""``tandem pipeline`` (issue 25): the stages as a Dagster asset graph, materialised in process
with real Dagster, real MLflow and real Ray at debug size. Footage batches (its sub-folders) are
partitions: each is curated and encoded on its own, training reads them all, and a new batch
costs its own curation and latents (and training again). A second run skips every asset; a
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


def per_batch(assets: dict[str, dict[str, str]]) -> dict[str, str]:
    """``{asset: {batch: state}}`` spelled as the commands print it: ``asset[batch] state``."""
    return {f"{asset}[{batch}]": state for asset, by_batch in assets.items() for batch, state in by_batch.items()}


# one clip, one sample: one rank of batch 1 (each batch keeps a clip of 1.6 s whatever the knobs below)
TRAIN = {"recipe": "debug_cpu", "overrides": ["steps=2", "data.batch_size=1", "engine.micro_batch_per_rank=1",
                                              "workers.num_workers=1"]}


@pytest.mark.slow  # curation and latents of each batch on local Ray, and two short trainings
@pytest.mark.timeout(1200)
def test_batches_are_partitions_skipped_when_unchanged_and_a_knob_reruns_only_what_it_changes(
        tmp_path, capsys, local_ray, chromium):
    pytest.importorskip("dagster", reason="the pipeline extra is not installed (pip install -e '.[pipeline]')")

    make_clip(tmp_path / "footage" / "batch1" / "a.mp4", [1.2, 1.4], size=(128, 96))
    make_clip(tmp_path / "footage" / "batch1" / "b.mp4", [1.6], size=(128, 96))
    make_clip(tmp_path / "footage" / "batch2" / "c.mp4", [1.6], size=(128, 96))
    path = write_pipeline(tmp_path, FIRST_HALF)
    assert main(["pipeline", "run", str(path)]) == 0  # each batch folder curated and encoded on its own
    both = {"batch1": "ran", "batch2": "ran"}
    assert states(capsys) == per_batch({"clip_shards": both, "latent_shards": both})
    assert main(["pipeline", "status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    fresh = {"batch1": "fresh", "batch2": "fresh"}
    assert {a: s["state"] for a, s in status.items()} == per_batch({"clip_shards": fresh, "latent_shards": fresh})
    assert Path(status["clip_shards[batch1]"]["path"]).parent == tmp_path / "out" / "curate" / "batch1"

    # Lineage (part 1) through the pipeline: each batch's latents run reaches that batch's footage.
    from pipelines.lineage import chain

    for batch, clips in (("batch1", ["a.mp4", "b.mp4"]), ("batch2", ["c.mp4"])):
        curate = chain(status[f"latent_shards[{batch}]"]["mlflow_run_id"])["inputs"][0]["produced_by"]
        assert curate["stage"] == "curate" and sorted(Path(f["path"]).name for f in curate["footage"]) == clips

    assert main(["pipeline", "run", str(path)]) == 0  # nothing changed
    skipped = {"batch1": "skipped", "batch2": "skipped"}
    assert states(capsys) == per_batch({"clip_shards": skipped, "latent_shards": skipped})

    knob = {**FIRST_HALF, "curate": {"overrides": ["skip=[transcribe]", "shots.min_clip_s=1.5"]}}
    write_pipeline(tmp_path, knob)
    assert main(["pipeline", "status", str(path)]) == 0
    stale = {"batch1": "stale", "batch2": "stale"}
    assert states(capsys) == per_batch({"clip_shards": stale, "latent_shards": fresh})  # inputs not re-made
    assert main(["pipeline", "run", str(path)]) == 0
    assert states(capsys)["latent_shards[batch1]"] == "ran"  # batch1 keeps b's clip only: other latents

    # A latents knob re-runs only the latents (the training stage, added with it, runs on them).
    # Training reads every batch's latents; a third batch is curated and encoded alone, and
    # training runs again on all three; then nothing is left to do.
    write_pipeline(tmp_path, {**knob, "latents": {"recipe": "debug", "overrides": ["buckets.fps=4"]}, "train": TRAIN})
    assert main(["pipeline", "run", str(path)]) == 0
    assert states(capsys) == {**per_batch({"clip_shards": skipped, "latent_shards": both}), "checkpoint": "ran"}
    make_clip(tmp_path / "footage" / "batch3" / "d.mp4", [1.6], size=(128, 96))
    assert main(["pipeline", "status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {a: s["state"] for a, s in status.items()} == {
        **per_batch({"clip_shards": {**fresh, "batch3": "missing"}, "latent_shards": {**fresh, "batch3": "missing"}}),
        "checkpoint": "stale"}
    assert status["checkpoint"]["why"] == "no latent shards yet of footage batch batch3"
    assert main(["pipeline", "run", str(path)]) == 0
    three = {**skipped, "batch3": "ran"}
    assert states(capsys) == {**per_batch({"clip_shards": three, "latent_shards": three}), "checkpoint": "ran"}
    assert main(["pipeline", "run", str(path)]) == 0
    assert set(states(capsys).values()) == {"skipped"}

    from pipelines.pipeline_assets import last_value
    from pipelines.pipeline_cmd import open_instance
    from pipelines.pipeline_spec import load_spec

    with open_instance(load_spec(path)) as instance:
        checkpoint = last_value(instance, "checkpoint")
        latents = {b: last_value(instance, "latent_shards", b)["run_id"] for b in ("batch1", "batch2", "batch3")}
    assert {i["produced_by"]["run_id"] for i in chain(checkpoint["run_id"])["inputs"]} == set(latents.values())

    # Dagster's UI on the pipeline's store: the asset graph and the materialisations.
    from pipelines.pipeline_cmd import ui_command
    from tests.browser_kit import start_server, stop_server, wait_for_port, wait_for_text
    from training.local_ranks import free_port

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


def test_footage_batches_are_its_folders_or_prefixes_and_its_top_files(tmp_path):
    from pipelines.pipeline_batches import TOP, folder_name, footage_batches

    for name in ("batch1/a.mp4", ".cache/x.mp4", "top.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert footage_batches(tmp_path) == {"batch1": [str(tmp_path / "batch1")], TOP: [str(tmp_path / "top.mp4")]}
    assert footage_batches(tmp_path / "batch1") == {TOP: [str(tmp_path / "batch1")]}

    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe({"/raw/batch1/a.mp4": b"x", "/raw/batch2/b.mp4": b"y", "/raw/c.mp4": b"z", "/raw/notes.txt": b""})
    assert footage_batches("memory://raw") == {"batch1": ["memory:///raw/batch1"], "batch2": ["memory:///raw/batch2"],
                                               TOP: ["memory:///raw/c.mp4"]}
    fs.pipe({"/flat/a.mp4": b"x"})
    assert footage_batches("memory://flat") == {TOP: ["memory://flat"]}  # no sub-folder: all of it, one batch
    assert folder_name("a,b c") == "a_b_c" and folder_name(TOP) == TOP


def test_the_sensor_registers_a_new_batch_folder_with_a_run_of_it_and_status_starts_missing(tmp_path, capsys):
    dg = pytest.importorskip("dagster", reason="the pipeline extra is not installed (pip install -e '.[pipeline]')")
    from pipelines.pipeline_assets import BATCHES, build_definitions
    from pipelines.pipeline_spec import load_spec

    (tmp_path / "footage" / "batch1").mkdir(parents=True)
    (tmp_path / "prompts.txt").write_text("a drummer plays a fill\n")
    stages = {**FIRST_HALF, "train": {"recipe": "debug_cpu"}, "generate": {"prompts": "prompts.txt"}, "tasks": {},
              "rankings": {"exports": ["exports"]}}
    path = write_pipeline(tmp_path, stages)
    defs = build_definitions(load_spec(path))
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == {
        "clip_shards", "latent_shards", "checkpoint", "rollouts", "annotation_tasks", "rankings"}
    assert defs.resolve_job_def("tandem_pipeline").partitions_def == BATCHES
    sensor = defs.resolve_sensor_def("new_footage")

    def tick(instance):
        """The sensor once, and what Dagster's daemon does with its partition requests."""
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        for request in result.dynamic_partitions_requests:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        return [r.partition_key for r in result.run_requests]

    with dg.instance_for_test() as instance:
        assert tick(instance) == ["batch1"]
        assert tick(instance) == []  # nothing new
        (tmp_path / "footage" / "batch2").mkdir()
        assert tick(instance) == ["batch2"]
        assert instance.get_dynamic_partitions(BATCHES.name) == ["batch1", "batch2"]
        (tmp_path / "footage" / "batch1").rmdir()  # a batch taken away: its partition goes
        assert tick(instance) == [] and instance.get_dynamic_partitions(BATCHES.name) == ["batch2"]

    assert main(["pipeline", "status", str(path)]) == 0
    assert states(capsys) == {"clip_shards[batch2]": "missing", "latent_shards[batch2]": "missing",
                              "checkpoint": "missing", "rollouts": "missing", "annotation_tasks": "missing",
                              "rankings": "waiting"}


def test_the_readme_pipeline_file_names_every_stage_and_checks():
    from pipelines.pipeline_spec import STAGES, load_spec

    spec = load_spec(Path(__file__).parents[2] / "pipeline.yaml")
    assert list(spec.stages) == list(STAGES) and Path(spec.stages["generate"].prompts).is_file()
