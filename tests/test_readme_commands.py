"""The manual's commands run as written (issue 30, item 8; the manual moved to docs/ in issue 26).

The chain, one command per stage from footage to aligned model, is the ``bash`` block of
docs/quickstart.md, so a changed page changes what runs: each line is either run by
``test_the_quickstart_runs_from_footage_to_aligned_model`` or skipped here with the reason (a
cluster, GPUs, model weights, a server, annotators). Every other command line in README.md and
in the docs' pages is either one of the quickstart's lines, as typed (a stage's page shows its
line of the chain), or skipped here with a reason. A new or changed command anywhere in the
manual fails ``test_every_manual_command_is_run_or_skipped_with_a_reason`` until it is given
one or the other.

How a quickstart line becomes the command that runs: its optional ``[...]`` parts are left out,
its placeholders (``RAW...``, ``CLIP_SHARDS_DIR``, ...) are this test's files (``PLACEHOLDERS``),
and ``EXTRA`` adds the few arguments a line needs here, each saying why. The commands run one
after another in one fresh working directory with no ``MLFLOW_TRACKING_URI``, each through
``pipelines.cli.main`` (what ``.venv/bin/tandem`` calls), sharing one local Ray instance.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"  # the chain, run in its order

# Command line (its start, as typed) -> why this test does not run it.
SKIPPED = {
    "bash scripts/run.sh demo": "the demo: tests/pipelines/test_rerun.py runs `tandem demo --no-train`",
    "bash scripts/run.sh test": "the test suite itself (what CI runs)",
    "AWS_ENDPOINT_URL=": "an S3 endpoint: tests/pipelines/test_s3.py curates on moto's S3",
    "tandem ui": "a server until Ctrl-C: tests/pipelines/test_mlflow_ui.py",
    "tandem latents curated/ --out latents_1b_ltx2/": "LTX-2 and UMT5 weights under /models",
    "tandem submit": "a Ray cluster's job server (tests/pipelines/test_submit.py)",
    "tandem annotate serve": "Label Studio, served until Ctrl-C (tests/pipelines/test_annotate_server.py)",
    "tandem annotate push": "a team's Label Studio server",
    "tandem annotate pull": "a team's Label Studio server",
    "tandem annotate import": "annotators' Label Studio export (tests/reward/test_annotation.py)",
    "tandem annotate leaderboard": "annotators' rankings (tests/reward/test_leaderboard.py)",
    "tandem reward train": "annotators' rankings (tests/pipelines/test_reward_cmd.py)",
    "tandem reward score models:/tandem-reward": "a trained reward model (tests/pipelines/test_reward_cmd.py)",
    "tandem reward sync-pretrain": "minutes of pretraining (tests/reward/test_pretrained_heads.py)",
    "tandem reward text-pretrain": "minutes of pretraining (tests/reward/test_text_net.py)",
    "tandem align --config 1b_8gpu": "8 GPUs",
    "PYTHONPATH=. .venv/bin/python benchmarks/": "a benchmark, minutes to hours on a CPU (docs/benchmarks.md)",
    "bash scripts/build_image.sh": "podman and about 15 minutes (TANDEM_TEST_IMAGE=1: tests/infra/test_cluster_image.py)",
    "tandem pipeline status": "the pipeline's store: tests/pipelines/test_pipeline.py checks each batch's state",
    "mkdir footage/batch3": "a new footage batch: tests/pipelines/test_pipeline.py adds one",
    "DAGSTER_HOME=": "Dagster's daemon, until Ctrl-C: tests/pipelines/test_pipeline.py runs the sensor's tick",
    "tandem pipeline run": "the whole chain in Dagster, minutes: tests/pipelines/test_pipeline.py materialises, "
                           "skips and re-runs its first stages",
}
# Quickstart line (its start) -> the experiment its run goes to (None: no run), in the order they run.
RUN = {
    "tandem curate RAW...": "tandem-curation",
    "tandem latents CLIP_SHARDS_DIR": "tandem-latents",
    "tandem train --config debug_cpu": "tandem-train",
    "tandem generate CHECKPOINT": "tandem-generate",
    "tandem annotate tasks": None,
    "tandem reward score metric:": None,
    "tandem align --config debug_cpu  ": "tandem-align",  # the one "as it is"
    "tandem align --config debug_cpu init=": "tandem-align",
    "tandem lineage models:/tandem-aligned@candidate": None,  # the aligned model: the last align's
}
PLACEHOLDERS = {"RAW...": "footage/", "CLIP_SHARDS_DIR": "shards/", "CHECKPOINT": "models:/tandem-dit@candidate",
                "ROLLOUTS...": "rollouts/", "CLIPS...": "rollouts/"}
EXTRA = {
    # Whisper large-v3 is not on this machine and nothing is downloaded (the curate page: point
    # transcribe.model at a local folder, or skip it, as its S3 example does).
    "tandem curate RAW...": ["skip=[transcribe]"],
    # Two of its 30 steps (the same step 30 times) and an evaluation: the quickstart's run, shorter.
    "tandem align --config debug_cpu": ["steps=2", "eval.every=2"],
}
PROMPTS = "a red ball bouncing on a wooden floor\nrain on a tin roof\n"


def manual_pages() -> list[Path]:
    """README.md and every page of the docs site (tests/test_docs_site.py keeps them all in its nav)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_commands(text: str) -> list[str]:
    """Every command line of ``text``'s ``bash`` blocks: continuation lines joined, the
    ``.venv/bin/`` prefix and ``# comments`` dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip().replace(".venv/bin/tandem", "tandem")
            if line:
                lines.append(re.sub(r" {2,}", " ", line))
    return lines


def quickstart_commands() -> list[str]:
    return bash_commands(QUICKSTART.read_text())


def _key(line: str, table) -> str | None:
    """The entry of ``table`` whose start ``line`` has (the longest; a trailing space: the whole line)."""
    found = [k for k in table if (line == k.strip() if k.endswith(" ") else line.startswith(k))]
    return max(found, key=len) if found else None


def as_run(line: str, key: str) -> list[str]:
    """``tandem curate RAW... --out shards/ [--config curate.yaml]`` -> the argv after ``tandem``."""
    line = re.sub(r"(?<=\s)\[[^\]]*\]", "", line)  # optional parts (not skip=[...], a value)
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(line)]
    extra = next((v for k, v in EXTRA.items() if key.strip().startswith(k)), [])
    return words[1:] + extra


def test_every_manual_command_is_run_or_skipped_with_a_reason():
    chain = quickstart_commands()
    unknown = [c for c in chain if not (_key(c, RUN) or _key(c, SKIPPED))]
    assert not unknown, f"quickstart commands this test neither runs nor skips: {unknown}"
    assert [_key(c, RUN) for c in chain if _key(c, RUN)] == list(RUN)  # each once, in the page's order
    pages = {page.relative_to(ROOT): bash_commands(page.read_text()) for page in manual_pages()}
    elsewhere = {str(page): off for page, lines in pages.items()
                 if (off := [c for c in lines if c not in chain and not _key(c, SKIPPED)])}
    assert not elsewhere, f"commands neither the quickstart's (as typed) nor skipped: {elsewhere}"
    every = [c for lines in pages.values() for c in lines]
    stale = [k for k in [*RUN, *SKIPPED] if not any(_key(c, {k: 0}) for c in every)]
    assert not stale, f"no command in the manual starts so any more: {stale}"


def test_a_manual_line_becomes_its_command():
    text = "```bash\n.venv/bin/tandem curate RAW... --out shards/ [--config curate.yaml] \\\n    [key=value ...]  # x\n```\n"
    [line] = bash_commands(text)
    assert line == "tandem curate RAW... --out shards/ [--config curate.yaml] [key=value ...]"
    assert as_run(line, "tandem curate RAW...") == ["curate", "footage/", "--out", "shards/", "skip=[transcribe]"]


def _run_ids(client, experiment: str) -> set[str]:
    """The ids of ``experiment``'s runs in ``client``'s store (none before the store exists)."""
    if not Path(client.tracking_uri.removeprefix("sqlite:///")).exists():
        return set()
    found = client.get_experiment_by_name(experiment)
    return {r.info.run_id for r in client.search_runs([found.experiment_id])} if found else set()


def _footage(folder: Path) -> None:
    """Two takes of three shots with tones, 320x240: clips of two latent buckets, two each."""
    from curation.sample_media import make_clip

    folder.mkdir()
    make_clip(folder / "take1.mp4", [2.0, 2.0, 2.0])
    make_clip(folder / "take2.mp4", [2.5, 1.5, 2.2])


@pytest.mark.slow  # curate, latents, train, generate and two align runs on local Ray: ~3 min on 2 cores
@pytest.mark.timeout(900)
def test_the_quickstart_runs_from_footage_to_aligned_model(tmp_path, monkeypatch, capsys):
    import mlflow
    import torch

    from pipelines.cli import main
    from pipelines.registry import resolve
    from training.checkpoint_loader import identify, load_checkpoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the manual's default store
    monkeypatch.chdir(tmp_path)
    _footage(tmp_path / "footage")
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}")
    runs = []  # (quickstart line, the MLflow run its command made, the command's wall time)
    for line in quickstart_commands():
        if not (key := _key(line, RUN)):
            continue
        argv, before = as_run(line, key), _run_ids(client, RUN[key])
        started = time.time()
        code = main(argv)
        wall_s = time.time() - started
        out = capsys.readouterr()
        assert code == 0, f"`tandem {shlex.join(argv)}` (quickstart: {line}) exited {code}:\n{out.err[-3000:]}"
        if RUN[key]:
            [made] = _run_ids(client, RUN[key]) - before
            runs.append((line, client.get_run(made), wall_s))

    # One store, runs/mlruns.db of the working directory, whatever --out said.
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("mlruns.db")] == [Path("runs/mlruns.db")]
    assert not list(tmp_path.rglob("mlruns"))
    # Named for what they are (as typed; where a run writes is not part of it), as long as their
    # commands, with the code they ran.
    assert [run.info.run_name for _, run, _ in runs] == [
        "curate footage/ skip=[transcribe]", "latents shards/", "train debug_cpu",
        "generate models:/tandem-dit@candidate", "align debug_cpu steps=2 eval.every=2",
        "align debug_cpu init=runs/train_debug_cpu/checkpoints sequence.fps=8 steps=2 eval.every=2"]
    for line, run, wall_s in runs:
        assert run.info.status == "FINISHED", line
        assert (run.info.end_time - run.info.start_time) / 1000 >= 0.8 * wall_s, (line, wall_s)
        assert run.data.tags["version.tandem"] and run.data.tags["version.mlflow"], line
    by_name = {run.info.run_name.split()[0]: run for _, run, _ in runs}  # the last of each command
    for command in ("curate", "train", "align"):  # sampled by the driver (curate) or Ray Train's rank 0
        assert any(k.startswith("system/") for k in by_name[command].data.metrics), command

    # Training: its recipe flattened, per-step metrics, samples, and the model the quickstart aligns from.
    train = by_name["train"]
    assert train.data.params["engine.zero_stage"] == "2" and train.data.params["preset"] == "debug"
    assert train.data.tags["data.shards"] == str(tmp_path / "runs" / "latents") and train.data.tags["data.manifest"]
    for metric in ("loss", "loss_video", "loss_audio", "grad_norm", "lr", "samples_per_s", "tokens_per_s"):
        assert len(client.get_metric_history(train.info.run_id, metric)) == 20, metric
    assert "recipe.yaml" in {a.path for a in client.list_artifacts(train.info.run_id)}
    samples = {a.path.rsplit(".", 1)[1] for a in client.list_artifacts(train.info.run_id, "samples/step00000010")}
    assert {"mp4", "txt"} <= samples
    assert client.get_model_version_by_alias("tandem-dit", "candidate").run_id == train.info.run_id
    registered = resolve("models:/tandem-dit@candidate", tracking_uri=client.tracking_uri, dst=tmp_path / "download")
    model, ref = load_checkpoint(registered)
    assert ref.run_dir == registered  # its recipe came along: generate decodes with the run's decoders
    ema = load_checkpoint(tmp_path / "runs/train_debug_cpu/checkpoints/step00000020/ema.safetensors")[0]
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())  # the final EMA
    # The run's DeepSpeed checkpoint (ZeRO-2, two ranks) consolidates to the same weights from the run,
    # its checkpoints or its last step, which are not the EMA, and generates under the run's digest.
    from reward.rollouts.rollout_dir import read_rollouts
    from reward.rollouts.rollout_generator import Prompt, RolloutConfig, RolloutGenerator
    from training.export import consolidated_state_dict

    run_dir = tmp_path / "runs/train_debug_cpu"
    last = run_dir / "checkpoints" / "step00000020"
    expected = consolidated_state_dict(run_dir / "checkpoints")
    for source in (run_dir, run_dir / "checkpoints", last):
        weights, ref = load_checkpoint(source)  # the preset comes from the run's recipe.yaml
        assert ref.kind == "deepspeed" and ref.run_dir == run_dir and ref.path == last, source
        assert all(torch.equal(weights.state_dict()[k], v) for k, v in expected.items()), source
    assert any(not torch.equal(ema.state_dict()[k], v) for k, v in expected.items())
    ds = identify(run_dir)
    assert ds.digest == identify(last).digest
    generated = RolloutGenerator(str(run_dir), RolloutConfig(steps=2, group_size=2),
                                 {"path": str(ds.path), "digest": ds.digest, "tag": ds.tag}, tmp_path / "from_run")
    assert generated.write_group(Prompt("drums", "a drummer plays a fill"))["written"] == 2
    assert read_rollouts(tmp_path / "from_run")[0].meta["checkpoint"]["digest"] == ds.digest
    # Lineage (issue 25): the latents in, the registered weights out, by the digest generate records.
    from pipelines.lineage import latents_digest, logged

    assert logged(client, train.info.run_id) == {
        "latent-shards": ("input", latents_digest(tmp_path / "runs" / "latents")[:32], by_name["latents"].info.run_id),
        "checkpoint": ("output", identify(registered).digest, None)}
    # ... and from the aligned model down to the footage files the quickstart curated.
    assert main(["lineage", "models:/tandem-aligned@candidate", "--json"]) == 0
    chain = capsys.readouterr().out
    for clip in (tmp_path / "footage").iterdir():  # each file, by path and the head of its sha256
        sha = hashlib.sha256(clip.read_bytes()).hexdigest()[:16]
        assert f'"{clip}"' in chain and f'"{sha}"' in chain, (clip, sha, chain[-2000:])
    aligned = client.get_model_version_by_alias("tandem-aligned", "candidate")  # the last align: from training
    assert aligned.tags["init.run_id"] == train.info.run_id

    # Resuming the finished training with another learning rate would log under its old params: refused.
    assert main(["train", "--config", "debug_cpu", "engine.lr=1e-3"]) == 2
    assert "differs in: engine.lr 0.003 -> 0.001" in capsys.readouterr().err
