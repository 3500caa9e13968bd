"""``tandem align`` on Ray Train (2 CPU workers, ZeRO-3): a worker SIGKILLed mid-run is
replaced, the run resumes from its checkpoint and logs the metrics an uninterrupted run logs;
one MLflow run in ``tandem-align`` holds the per-step metrics, the evaluations with their mp4s,
and the aligned checkpoint is registered as ``tandem-aligned``. Three evaluation prompts on two
ranks: the rank without a third prompt still runs its (collective) ZeRO-3 forwards."""

from __future__ import annotations

import pytest
import torch

from tests.pipelines.conftest import ray_train_worker_killed_at
from tests.reward.test_grpo_learns import Recorder
from training.local_ranks import on_two_ranks

pytestmark = pytest.mark.slow  # Ray Train + DeepSpeed

STEPS = 6
RECIPE = [f"steps={STEPS}", "checkpoint_every=2", "eval.every=3", "eval.videos=2", "grpo.sampling_steps=4",
          "workers.max_failures=1", "engine.zero_stage=3"]
EVAL_PROMPTS = "a cat purring on a windowsill\nfireworks over a river\nan old clock ticking\n"
PER_STEP = ["reward_mean", "reward.brightness.mean", "reward.brightness.std", "reward.exposure.mean",
            "reward.level.std", "advantage_mean", "advantage_std", "advantage_abs_max", "ratio_mean", "ratio_min",
            "ratio_max", "clip_frac", "kl", "zero_std_frac", "loss", "grad_norm", "lr", "rollout_s", "reward_s",
            "update_s"]
PER_EVAL = ["eval_reward_mean", "eval_reward.brightness.mean", "eval_reward.exposure.mean",
            "eval_reward.level.mean", "hacking_alert"]
TIMINGS = {"rollout_s", "reward_s", "update_s", "eval_s"}


def align_uninterrupted(overrides: list[str]) -> dict[int, dict]:
    from pipelines.align_cmd import load_align_recipe
    from reward.grpo.align import Aligner

    torch.set_num_threads(1)
    recorder = Recorder()
    Aligner(load_align_recipe("debug_cpu", overrides), tracker=recorder).fit()
    return recorder.metrics


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("mlflow_env")
def test_killed_worker_resumes_to_the_uninterrupted_metrics_and_the_result_is_registered(tmp_path, capsys):
    import mlflow

    from model.checkpoint import load
    from model.dit import DualDiT, DualDiTConfig
    from pipelines.cli import main
    from pipelines.registry import resolve
    from pipelines.tracking import default_tracking_uri
    from training.export import consolidated_state_dict

    storage, runs = tmp_path / "align", tmp_path / "runs"
    (tmp_path / "eval.txt").write_text(EVAL_PROMPTS)
    recipe = [*RECIPE, f"eval.prompts_file={tmp_path / 'eval.txt'}"]
    with ray_train_worker_killed_at(storage / "checkpoints", 2) as killed:
        code = main(["align", "--config", "debug_cpu", "--run-name", "align-kill", f"storage={storage}",
                     f"tracking_dir={runs}", *recipe])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert killed, "no Ray Train worker process was found to kill"
    assert "registered models:/tandem-aligned/1" in out.out

    uri = default_tracking_uri(runs)
    mlflow.set_tracking_uri(uri)
    [run] = mlflow.search_runs(experiment_names=["tandem-align"], output_format="list")
    assert run.info.status == "FINISHED" and run.info.run_name == "align-kill"
    assert 2 <= int(run.data.tags["resumed_from_step"]) < STEPS
    assert run.data.params["engine.zero_stage"] == "3" and run.data.tags["rewards.held_out"] == "exposure,level"
    client = mlflow.MlflowClient()

    def logged(key) -> dict[int, float]:
        return {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)}

    reference = on_two_ranks(align_uninterrupted, [f"storage={tmp_path / 'reference'}", *recipe])
    for key in PER_STEP + PER_EVAL:
        steps = range(1, STEPS + 1) if key in PER_STEP else (0, 3, 6)
        history = logged(key)
        assert set(steps) <= set(history), (key, sorted(history))
        if key not in TIMINGS:  # the resumed run logs what the uninterrupted run logs
            for s in steps:
                assert history[s] == pytest.approx(reference[s][key], rel=1e-6, abs=1e-9), (key, s)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval/step00000003")} == {
        f"eval/step00000003/prompt000_sample{j}.{ext}" for j in (0, 1) for ext in ("mp4", "txt")}

    version = client.get_model_version_by_alias("tandem-aligned", "candidate")
    assert version.run_id == run.info.run_id and version.tags["init"] == "fresh debug"  # what it started from
    assert version.tags["step"] == f"step{STEPS:08d}" and "fresh debug" in version.description
    registered = resolve("models:/tandem-aligned@candidate", tracking_uri=uri, dst=tmp_path / "download")
    model = load(DualDiT, DualDiTConfig, registered / "model.safetensors")
    final = consolidated_state_dict(storage / "checkpoints")
    assert (storage / "checkpoints" / "latest").read_text().strip() == f"step{STEPS:08d}"
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items() if k in final)
    # issue 25: a fresh model: the prompts in, the weights out
    from pipelines.lineage import file_sha256, weights_digest
    from pipelines.lineage import logged as datasets

    assert datasets(client, run.info.run_id) == {
        "prompts.eval": ("input", file_sha256(tmp_path / "eval.txt")[:16], None),
        "aligned-model": ("output", weights_digest(registered), None)}
    assert run.data.tags["lineage.stage"] == "align"
