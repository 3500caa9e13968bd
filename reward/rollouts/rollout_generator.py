"""Rollouts from a checkpoint: K joint audio-video samples per prompt, each reproducible alone.

``RolloutGenerator`` holds the DiT, the text encoder and the decoders and writes whole prompt
groups into a rollouts directory (``reward.rollouts.rollout_dir``: mp4 with audio, latents, json
last). ``tandem generate`` (pipelines/generate_cmd.py) runs one per Ray actor; it also runs in a
plain loop.

Seeds: sample k of prompt p starts from the noise of ``sample_seed(seed, p, k)``, drawn on its
own generator (video noise, then audio noise), so a sample does not depend on what else was
generated, and two checkpoints given the same prompts start from the same noise: their samples
differ only by the model (common random numbers make checkpoint comparisons less noisy). The
json records the seed and the seeds of the batch the sample was denoised in, which is all
``regenerate`` needs to make the same latents again.

Ids: ``<checkpoint tag>-<prompt id>-<k>``, so rollouts of several checkpoints can be annotated
together; ``group_id`` is ``<checkpoint tag>-<prompt id>`` and ``prompt_id`` is shared by every
checkpoint's samples of one prompt (annotation pairs clips by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.config import run_only, to_dict
from model.presets import preset_name
from model.sequence import SequenceConfig
from reward.rollouts.rollout_dir import finish_sample, is_done, sample_paths
from training.encoders import EncoderConfig

log = logging.getLogger(__name__)
DEBUG_SEQUENCE = {"duration_s": 1.0, "fps": 8.0, "height": 32, "width": 32}  # a CPU makes these in seconds


@dataclass
class SequenceChoice:
    """What to generate; 0 = from the checkpoint (its run's latent format, else its preset)."""

    duration_s: float = 0.0
    fps: float = 0.0
    height: int = 0
    width: int = 0


@dataclass
class RolloutConfig:
    group_size: int = 4  # samples per prompt
    steps: int = 30  # Euler steps of the ODE sampler
    shift: float = 3.0  # timestep shift (flow_matching Eq. 5)
    video_guidance: float = 5.0
    audio_guidance: float = 4.0
    seed: int = 0
    sequence: SequenceChoice = field(default_factory=SequenceChoice)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # decoders + text encoder; default: the run's
    preset: str = ""  # model preset, for checkpoints that carry no config and have no recipe
    batch_size: int = 1  # samples of one prompt per forward pass; 1 reproduces any sample alone
    device: str = run_only("")  # "" = cuda when available


@dataclass
class Prompt:
    prompt_id: str
    text: str
    extra: dict = field(default_factory=dict)  # the JSONL line's other fields, kept in the json
    # "image1" -> file (reward.rollouts.reference_media)
    references: dict[str, str] = field(default_factory=dict)


def sample_seed(seed: int, prompt_id: str, k: int) -> int:
    blob = f"{seed}:{prompt_id}:{k}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:7], "big")


def sample_id(tag: str, prompt_id: str, k: int) -> str:
    return f"{tag}-{prompt_id}-{k:02d}"


def resolve_sequence(cfg: RolloutConfig, preset: str, latent_format, decoder) -> SequenceConfig:
    """The clip to generate: the config's values, else the training latents' frame rate, else
    the preset's defaults; strides and rates always from the decoders (``AVDecoder``)."""
    base = dict(DEBUG_SEQUENCE) if preset == "debug" else {}
    if latent_format is not None and latent_format.fps:
        base["fps"] = latent_format.fps
    chosen = {k: v for k, v in to_dict(cfg.sequence).items() if v}
    v, a = decoder.video, decoder.audio
    return SequenceConfig(**(base | chosen), sample_rate=a.sample_rate, mel_hop=a.samples_per_latent, audio_stride=1,
                          video_temporal_stride=v.temporal_stride, video_spatial_stride=v.spatial_stride)


class RolloutGenerator:
    """The models of one checkpoint, ready to write prompt groups into a rollouts directory."""

    def __init__(self, checkpoint: str, cfg: RolloutConfig, identity: dict, out_dir: str | Path):
        """``identity``: the checkpoint as the json records it (``digest`` and ``tag`` at least)."""
        from training.checkpoint_loader import load_checkpoint, run_recipe
        from training.encoders import load_decoder, load_text
        from training.latent_shards import read_latent_format, shard_dirs

        self.cfg, self.identity, self.out_dir = cfg, identity, Path(out_dir)
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dit, ref = load_checkpoint(checkpoint, preset=cfg.preset or None, device=self.device)
        recipe = run_recipe(ref.run_dir)
        encoder = cfg.encoder
        if recipe is not None and encoder == EncoderConfig():  # the decoders the run itself sampled with
            encoder = recipe.sample.decoder
        self.encoder = encoder
        shards = shard_dirs(recipe.data.shards) if recipe else []
        fmt = read_latent_format(recipe.data.shards) if shards and all(d.is_dir() for d in shards) else None
        self.decoder = load_decoder(encoder, self.device)
        self.text = load_text(encoder, self.device)
        if self.text.dim != self.dit.cfg.text_dim:
            raise ValueError(f"the text encoder makes {self.text.dim}-wide features, the checkpoint expects "
                             f"{self.dit.cfg.text_dim}: set encoder.text_path / encoder.text_dim to the run's")
        preset = cfg.preset or (recipe.preset if recipe else "")
        self.sequence = resolve_sequence(cfg, preset or preset_name(self.dit.cfg), fmt, self.decoder)
        self.audio_latents = self.decoder.audio.num_latents(self.sequence.audio_samples)

    def settings(self) -> dict:
        """What every sample's json records about how it was made."""
        c, s = self.cfg, self.sequence
        return {"sampler": {"name": "euler_ode", "steps": c.steps, "shift": c.shift},
                "guidance": {"video": c.video_guidance, "audio": c.audio_guidance},
                "sequence": {"duration_s": s.clip_seconds, "fps": s.fps, "height": s.height, "width": s.width,
                             "num_frames": s.num_frames, "sample_rate": s.sample_rate},
                "checkpoint": self.identity, "decoder": to_dict(self.encoder), "base_seed": c.seed}

    @torch.no_grad()
    def latents(self, text: str, seeds: list[int], references: dict[str, str] | None = None):
        """Denoised (video, audio) latents and the text features for one prompt (and its
        reference clips) and these seeds."""
        from model.sampling import Guidance, sample_ode
        from reward.rollouts.reference_media import encode_references

        seq, dit, n = self.sequence, self.dit, len(seeds)
        noise_v, noise_a = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            noise_v.append(torch.randn((dit.cfg.video.latent_channels, *seq.video_latent_shape), generator=g))
            noise_a.append(torch.randn((dit.cfg.audio.latent_channels, self.audio_latents), generator=g))
        refs = [dataclasses.replace(r, latents=r.latents.expand(n, *r.latents.shape[1:]))
                for r in encode_references(references or {}, seq, self.decoder.video, self.decoder.audio, self.device)]
        cond = self.text.encode([text] * n, refs or None, fps=seq.fps)
        guidance = Guidance(self.cfg.video_guidance, self.cfg.audio_guidance)
        lat_v, lat_a = sample_ode(dit, torch.stack(noise_v).to(self.device), torch.stack(noise_a).to(self.device),
                                  cond, self.cfg.steps, self.cfg.shift, guidance)
        return lat_v.float().cpu(), lat_a.float().cpu(), cond

    def write_group(self, prompt: Prompt) -> dict:
        """Generate the prompt's missing samples; returns a progress row."""
        from reward.rollouts.reference_media import file_digest

        started, tag, k_all = time.perf_counter(), self.identity["tag"], range(self.cfg.group_size)
        ids = [sample_id(tag, prompt.prompt_id, k) for k in k_all]
        written = 0
        for start in range(0, self.cfg.group_size, self.cfg.batch_size):
            ks = list(k_all)[start:start + self.cfg.batch_size]
            if all(is_done(self.out_dir, ids[k]) for k in ks):
                continue  # resume: this batch was finished by an earlier run
            seeds = [sample_seed(self.cfg.seed, prompt.prompt_id, k) for k in ks]
            lat_v, lat_a, cond = self.latents(prompt.text, seeds, prompt.references)
            clip = self.decoder.decode(lat_v, lat_a, self.sequence.fps)
            for i, k in enumerate(ks):
                if is_done(self.out_dir, ids[k]):
                    continue
                paths = sample_paths(self.out_dir, ids[k])
                paths["mp4"].parent.mkdir(parents=True, exist_ok=True)
                clip.save_mp4(paths["mp4"], i)
                meta = dict(self.settings(), sample_id=ids[k], group_id=f"{tag}-{prompt.prompt_id}",
                            prompt_id=prompt.prompt_id, prompt=prompt.text, index=k, seed=seeds[i], batch_seeds=seeds,
                            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                if prompt.extra:
                    meta["prompt_fields"] = prompt.extra
                if prompt.references:
                    meta["references"] = {tag: {"path": path, "sha256": file_digest(Path(path))}
                                          for tag, path in prompt.references.items()}
                text_emb = cond.text_emb[i][cond.text_mask[i]].float().cpu()
                finish_sample(self.out_dir, meta, {"video": lat_v[i], "audio": lat_a[i], "text_emb": text_emb})
                written += 1
        return {"prompt_id": prompt.prompt_id, "written": written, "seconds": time.perf_counter() - started}

    def regenerate(self, meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The (video, audio) latents of the sample ``meta`` (its rollout json) describes."""
        seeds = meta["batch_seeds"]
        refs = {tag: ref["path"] for tag, ref in meta.get("references", {}).items()}
        lat_v, lat_a, _ = self.latents(meta["prompt"], seeds, refs)
        i = seeds.index(meta["seed"])
        return lat_v[i], lat_a[i]
