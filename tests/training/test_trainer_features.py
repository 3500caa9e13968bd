"""Trainer features on 2 CPU processes (gloo): EMA under ZeRO-3 (per-partition) matches EMA
under ZeRO-2 and survives a resume, gradient accumulation, bf16 with optimizer offload,
periodic samples written as mp4 with audio, and the recipe's ``flow`` section reaching the loss."""

import json

import pytest
import torch

from model.dit import DualDiT
from tests.training.conftest import make_latent_shards
from training.local_ranks import on_two_ranks

pytestmark = pytest.mark.slow  # two gloo ranks + DeepSpeed


class TimestepRecordingDiT(DualDiT):
    """The debug DualDiT, remembering the (t_video, t_audio) of every training forward."""

    def forward(self, x_video, x_audio, t_video, t_audio, **kwargs):
        self.seen.append((t_video.detach().clone(), t_audio.detach().clone()))
        return super().forward(x_video, x_audio, t_video, t_audio, **kwargs)


def _cfg(tmp, run, **engine):
    from training.engine import EngineConfig
    from training.loader import LoaderConfig
    from training.samples import SampleConfig
    from training.trainer import TrainConfig

    engine = {"zero_stage": 2, "micro_batch_per_rank": 2, "lr": 3e-3, **engine}
    return TrainConfig(preset="debug", steps=4, warmup_steps=1, checkpoint_every=2, storage=f"{tmp}/{run}",
                       ema_decay=0.5, engine=EngineConfig(**engine),
                       data=LoaderConfig(shards=f"{tmp}/latents", batch_size=2, seed=0),
                       sample=SampleConfig(every=4, count=1, steps=2))


def _worker(tmp):
    from training.trainer import Trainer

    out = {}
    for run, engine in (("z2", {}), ("z3", {"zero_stage": 3}), ("z3_accum", {"zero_stage": 3, "grad_accum_steps": 2}),
                        ("bf16_offload", {"precision": "bf16", "offload_optimizer": True}),
                        ("z3_ckpt", {"zero_stage": 3, "activation_checkpointing": True})):
        trainer = Trainer(_cfg(tmp, run, **engine))
        out[run] = [m["loss"] for m in trainer.fit()]
    # ZeRO-3 + accumulation, stopped at 2 and resumed by a fresh Trainer to 4.
    Trainer(_cfg(tmp, "z3_resume", zero_stage=3, grad_accum_steps=2)).fit(until=2)
    resumed = Trainer(_cfg(tmp, "z3_resume", zero_stage=3, grad_accum_steps=2))
    assert resumed.resume() and resumed.step == 2
    out["z3_resume"] = [m["loss"] for m in resumed.fit()]
    out["flow"] = _timesteps_under_flow_overrides(tmp)
    return out


def _timesteps_under_flow_overrides(tmp):
    """Two steps of the debug_cpu recipe with ``flow.*`` overrides, as a user types them."""
    from model.presets import get_preset
    from pipelines.config_loader import load_config, resolve_recipe
    from training.trainer import TrainConfig, Trainer

    cfg = load_config(TrainConfig, resolve_recipe("debug_cpu", "train"), [
        f"data.shards={tmp}/latents", f"storage={tmp}/flow", "steps=2", "sample.every=0", "ema_decay=0",
        "flow.independent_timesteps=true", "flow.shift=3", "flow.logit_std=0.5"])
    model = TimestepRecordingDiT(get_preset("debug"))
    model.seen = []
    trainer = Trainer(cfg, model=model)
    trainer.fit()
    return {"seen": [(tv.tolist(), ta.tolist()) for tv, ta in model.seen], "rank": trainer.rank,
            "batch": cfg.data.batch_size}


@pytest.mark.timeout(420)
def test_ema_zero3_accumulation_bf16_offload_and_samples(tmp_path):
    from model.checkpoint import load
    from model.dit import DualDiT, DualDiTConfig

    make_latent_shards(tmp_path / "latents", n=32)
    out = on_two_ranks(_worker, str(tmp_path))

    # Same seed, data and fp32 maths: ZeRO-3's EMA, kept as partitions and gathered on
    # export, equals ZeRO-2's whole-tensor EMA.
    torch.testing.assert_close(out["z3"], out["z2"], rtol=1e-4, atol=1e-5)
    ema = {run: load(DualDiT, DualDiTConfig, tmp_path / run / "checkpoints/step00000004/ema.safetensors")
           for run in ("z2", "z3", "z3_accum", "z3_resume")}
    for name, p in ema["z2"].state_dict().items():
        torch.testing.assert_close(ema["z3"].state_dict()[name], p, rtol=1e-4, atol=1e-5, msg=name)
    # The EMA lags the weights: it is neither the initial nor the final model.
    final = DualDiT(ema["z2"].cfg)
    torch.manual_seed(0)
    initial = DualDiT(ema["z2"].cfg)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    final.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "z2/checkpoints")), strict=False)
    w = next(n for n, _ in final.named_parameters() if n.startswith("blocks.0") and n.endswith("weight"))
    e, f0, f1 = ema["z2"].state_dict()[w], initial.state_dict()[w], final.state_dict()[w]
    assert not torch.allclose(e, f1) and not torch.allclose(e, f0)
    assert (e - f1).norm() < (f0 - f1).norm()

    # Accumulation: two micro-batches per step change the run; resume is exact under ZeRO-3.
    assert out["z3_accum"] != out["z3"]
    torch.testing.assert_close(out["z3_resume"], out["z3_accum"][2:], rtol=1e-5, atol=1e-6)
    for name, p in ema["z3_accum"].state_dict().items():
        torch.testing.assert_close(ema["z3_resume"].state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)

    # Activation checkpointing (the 14b recipe) recomputes, it does not change the maths; its
    # wrapped block names come back unwrapped for the single-device model.
    torch.testing.assert_close(out["z3_ckpt"], out["z3"], rtol=1e-5, atol=1e-6)
    from tests.training.conftest import trained_and_initial

    _, with_ckpt = trained_and_initial(tmp_path / "z3_ckpt" / "checkpoints")
    _, without = trained_and_initial(tmp_path / "z3" / "checkpoints")
    for name, p in without.state_dict().items():
        torch.testing.assert_close(with_ckpt.state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)

    bf16 = out["bf16_offload"]
    assert len(bf16) == 4 and all(torch.isfinite(torch.tensor(bf16)))

    # Samples at step 4: an mp4 with a video and an audio stream, plus its caption.
    from curation.ffmpeg import ffprobe

    mp4s = sorted((tmp_path / "z2" / "samples").glob("step00000004_*.mp4"))
    assert len(mp4s) == 1 and mp4s[0].with_suffix(".txt").exists()
    streams = {s["codec_type"]: s for s in ffprobe(mp4s[0])["streams"]}
    assert {"video", "audio"} <= streams.keys()
    assert float(streams["audio"]["duration"]) == pytest.approx(float(streams["video"]["duration"]), abs=0.15)
    assert json.dumps(out)  # plain floats came back across processes

    # flow.* overrides reach the loss: timesteps are drawn with the recipe's shift and logit
    # std, independently per modality, exactly as flow_matching Eqs. (4)-(5) say.
    from model.flow_matching import FlowMatchingConfig, sample_timesteps
    from training.trainer import step_generator

    flow = FlowMatchingConfig(independent_timesteps=True, shift=3.0, logit_std=0.5)
    seen, b = out["flow"]["seen"], out["flow"]["batch"]
    assert len(seen) == 2
    for step, (t_video, t_audio) in enumerate(seen):
        gen = step_generator(0, step, 0, out["flow"]["rank"])
        expected_video = sample_timesteps(b, flow, n_tokens=1, generator=gen)
        expected_audio = sample_timesteps(b, flow, n_tokens=1, generator=gen)
        torch.testing.assert_close(torch.tensor(t_video), expected_video)
        torch.testing.assert_close(torch.tensor(t_audio), expected_audio)
        assert t_video != t_audio
