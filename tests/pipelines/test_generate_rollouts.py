"""tandem generate: rollouts from any checkpoint source, reproducible from their json, resumable,
unique across checkpoints; the CLI on local Ray with an MLflow run."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import save, save_state
from model.dit import DualDiT
from model.presets import get_preset
from reward.rollouts.rollout_dir import read_rollouts
from reward.rollouts.rollout_generator import Prompt, RolloutConfig, RolloutGenerator, sample_seed
from training.checkpoint_loader import CheckpointError, identify, load_checkpoint

FAST = RolloutConfig(group_size=2, steps=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and on a busy 2-core machine far faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def debug_checkpoint(path: Path, seed: int) -> Path:
    """Random debug weights, every parameter nudged: a fresh DualDiT's zero-initialised gates
    would make its output ignore the prompt and the references."""
    torch.manual_seed(seed)
    model = DualDiT(get_preset("debug"))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return save(model, path)


def generator(checkpoint: Path, out: Path, cfg: RolloutConfig = FAST) -> RolloutGenerator:
    ref = identify(checkpoint)
    return RolloutGenerator(str(checkpoint), cfg, {"path": str(ref.path), "digest": ref.digest, "tag": ref.tag}, out)


def test_samples_reproduce_from_their_json_resume_and_stay_unique_across_checkpoints(tmp_path):
    prompts = [Prompt("drums", "a drummer plays a fill"), Prompt("waves", "[0-0.5s] waves [0.5-1s] gulls")]
    first = generator(debug_checkpoint(tmp_path / "a.safetensors", 0), tmp_path / "a")
    assert [first.write_group(p)["written"] for p in prompts] == [2, 2]
    rollouts = read_rollouts(tmp_path / "a")
    assert len(rollouts) == 4 and all(r.mp4.stat().st_size > 0 for r in rollouts)
    meta = rollouts[1].meta
    assert meta["sampler"] == {"name": "euler_ode", "steps": 2, "shift": 3.0}
    assert meta["checkpoint"]["digest"] == identify(tmp_path / "a.safetensors").digest
    assert meta["seed"] == sample_seed(0, meta["prompt_id"], meta["index"])
    assert {r.group_id for r in rollouts} == {f"{first.identity['tag']}-drums", f"{first.identity['tag']}-waves"}

    # any sample, regenerated from its json alone, gives the same latents bit for bit
    latents = rollouts[1].latents()
    video, audio = first.regenerate(meta)
    assert torch.equal(video, latents["video"]) and torch.equal(audio, latents["audio"])
    assert latents["text_emb"].shape[1] == 64

    # resume: nothing left to write; a lost sample is made again, identical
    assert first.write_group(prompts[0])["written"] == 0
    lost = rollouts[0]
    lost_latents = lost.latents()
    for path in (lost.mp4, lost.latents_path, lost.mp4.with_suffix(".json")):
        path.unlink()
    assert first.write_group(prompts[0])["written"] == 1
    assert torch.equal(read_rollouts(tmp_path / "a")[0].latents()["video"], lost_latents["video"])

    # another checkpoint, same prompts: other ids, the same prompt ids and starting noise
    second = generator(debug_checkpoint(tmp_path / "b.safetensors", 1), tmp_path / "b")
    second.write_group(prompts[0])
    both = read_rollouts(tmp_path / "a", tmp_path / "b")
    assert len(both) == 6
    other = [r for r in both if r.meta["checkpoint"]["tag"] == second.identity["tag"]]
    assert {r.meta["prompt_id"] for r in other} == {"drums"}
    assert sorted(r.seed for r in other) == sorted(r.seed for r in rollouts if r.meta["prompt_id"] == "drums")


def test_reference_clips_condition_samples_and_reproduce(tmp_path):
    import numpy as np
    import soundfile as sf
    from PIL import Image

    from curation.sample_media import make_clip
    from reward.rollouts.prompt_files import read_prompts

    Image.fromarray((np.random.default_rng(0).random((24, 40, 3)) * 255).astype("uint8")).save(tmp_path / "dog.png")
    sf.write(tmp_path / "bark.wav", np.sin(np.arange(8000) / 5.0).astype("float32") * 0.3, 16000)
    make_clip(tmp_path / "walk.mp4", [1.0], fps=25, size=(64, 48))
    line = {"prompt": "@image1 walks as in @video1 and barks like @audio1", "id": "dog",
            "references": {"image1": "dog.png", "video1": "walk.mp4", "audio1": "bark.wav"}}
    (tmp_path / "prompts.jsonl").write_text(json.dumps(line) + "\n")
    [prompt] = read_prompts(tmp_path / "prompts.jsonl")
    gen = generator(debug_checkpoint(tmp_path / "c.safetensors", 0), tmp_path / "out",
                    RolloutConfig(group_size=1, steps=2))
    gen.write_group(prompt)
    [sample] = read_rollouts(tmp_path / "out")
    assert set(sample.meta["references"]) == {"image1", "video1", "audio1"}
    video, audio = gen.regenerate(sample.meta)
    assert torch.equal(video, sample.latents()["video"]) and torch.equal(audio, sample.latents()["audio"])
    # another dog picture, the same prompt id and seed: another sample
    Image.fromarray(np.full((24, 40, 3), 200, "uint8")).save(tmp_path / "dog.png")
    other, _, _ = gen.latents(prompt.text, [sample.seed], prompt.references)
    assert not torch.equal(other[0], video)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "@image2 runs", "references": {"image1": "dog.png"}}))
    with pytest.raises(ValueError, match="@image2"):
        read_prompts(tmp_path / "prompts.jsonl")


def test_checkpoint_sources_and_their_errors(tmp_path):
    torch.manual_seed(3)
    model = DualDiT(get_preset("debug"))
    # ema.safetensors inside a run: found with its run, whose recipe names the preset
    tag = tmp_path / "run" / "checkpoints" / "step00000004"
    save_state(model.state_dict(), None, tag / "ema.safetensors", "DualDiT")  # no config in the file
    with pytest.raises(CheckpointError, match="model.preset"):
        load_checkpoint(tag / "ema.safetensors")
    (tmp_path / "run" / "recipe.yaml").write_text("preset: debug\n")
    loaded, ref = load_checkpoint(tag / "ema.safetensors")
    assert ref.run_dir == tmp_path / "run" and ref.kind == "safetensors"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    # a folder holding one safetensors (what models:/NAME@ALIAS resolves to)
    save(model, tmp_path / "registered" / "dit.safetensors")
    assert identify(tmp_path / "registered").digest == identify(tmp_path / "registered" / "dit.safetensors").digest
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "registered", preset="small")
    (tmp_path / "two").mkdir()
    with pytest.raises(CheckpointError, match="2 safetensors"):
        for name in ("x", "y"):
            save(model, tmp_path / "two" / f"{name}.safetensors")
        load_checkpoint(tmp_path / "two")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_prompt_files(tmp_path):
    from pipelines.config_loader import ConfigError
    from reward.rollouts.prompt_files import read_prompts

    plain = tmp_path / "p.txt"
    plain.write_text("# demo prompts\na drum\n\n[0-1s] rain [1-2s] thunder\n")
    assert [p.text for p in read_prompts(plain)] == ["a drum", "[0-1s] rain [1-2s] thunder"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a drum", "id": "drum1", "style": "jazz"}\n')
    [p] = read_prompts(jsonl)
    assert (p.prompt_id, p.extra) == ("drum1", {"style": "jazz"})
    for text, error in (("a drum\na drum\n", "same prompt"), ("the dog of @image1\n", "no such reference.*JSONL"),
                        ("[3-1s] backwards\n", "end > start"), ('{"id": "x"}\n', "non-empty")):
        plain.write_text(text)
        with pytest.raises(ConfigError, match=error):
            read_prompts(plain)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_generates_on_local_ray_resumes_and_refuses_another_checkpoint(tmp_path, monkeypatch, capsys, local_ray):
    """``tandem generate`` as the CLI runs it (``pipelines.cli.main``), in this process on one
    local Ray: three commands without three torch imports and Ray start-ups."""
    from pipelines.cli import main
    from pipelines.registry import register

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ckpt = debug_checkpoint(tmp_path / "ckpt.safetensors", 0)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a drummer plays a fill\nwaves on a beach\n")
    out = tmp_path / "rollouts"
    register(ckpt, "tandem-dit", alias="candidate", tracking_uri=uri)

    def tandem(*args):
        code = main(["generate", *map(str, args)])
        return code, capsys.readouterr()

    code, said = tandem("models:/tandem-dit@candidate", "--prompts", prompts, "--out", out, "--group-size", "2",
                        "rollout.steps=2")
    assert code == 0, said.out + said.err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["written"] == 4 and stats["clips_per_s"] > 0
    assert stats["checkpoint"]["model"] == "tandem-dit" and stats["checkpoint"]["version"] == "1"
    rollouts = read_rollouts(out)
    assert len(rollouts) == 4 and rollouts[0].meta["checkpoint"]["digest"] == identify(ckpt).digest

    import mlflow

    client = mlflow.MlflowClient(uri)
    [mlrun] = client.search_runs([client.get_experiment_by_name("tandem-generate").experiment_id])
    assert mlrun.data.metrics["written"] == 4 and mlrun.data.tags["checkpoint.digest"] == identify(ckpt).digest
    assert mlrun.info.run_name == "generate models:/tandem-dit@candidate rollout.steps=2"
    # issue 25: read and written, with the producing run
    from pipelines.lineage import logged, rollouts_digest

    registered = client.get_model_version("tandem-dit", "1")
    assert logged(client, mlrun.info.run_id) == {
        "checkpoint": ("input", identify(ckpt).digest, registered.run_id),
        "prompts": ("input", hashlib.sha256(prompts.read_bytes()).hexdigest()[:16], None),
        "rollouts": ("output", rollouts_digest(out), None)}

    code, said = tandem(ckpt, "--prompts", prompts, "--out", out, "--group-size", "2", "rollout.steps=2")
    assert code == 0 and "0 new samples" in said.out, said.out + said.err
    other = debug_checkpoint(tmp_path / "other.safetensors", 1)
    code, said = tandem(other, "--prompts", prompts, "--out", out, "rollout.steps=2")
    assert code == 2 and "another checkpoint" in said.out, said.out + said.err
