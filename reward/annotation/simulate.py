"""Simulated rollouts and annotators: clips whose quality on each axis is a known number, and
judges who prefer it with label noise and ties. Used to build and test the reward stage
before real rankings exist (tests, the reward page's walk-through in docs/, the throughput benchmark).

Each clip (a textured picture drifting at some speed, a sawtooth tone, and an event: a light
turning on in one quarter of the picture with a buzz starting in the sound) varies five
independent properties, one per axis. The scene (drift direction, pitch) is shared by the
samples of a group, and the prompt names a word (``WORDS``) whose look (``texture``) the
picture should show:

================  =====================================  ======================================
axis              property (0..1)                         preferred
================  =====================================  ======================================
visual_quality    ``dark``: exposure lowered by 0.35        brighter (well exposed)
motion            ``motion``: drift speed, 1.5 px/frame    more motion
audio_quality     ``muffled``: low-pass from 6 kHz to 500 Hz a bright sound (vocoders muffle)
av_sync           ``offset``: buzz lags/leads the light    smaller |offset| (up to ``max_offset_s``)
prompt_alignment  ``aligned``: weight of the prompt's look    more (the rest: another word's look)
overall           the mean of the first three qualities    higher
================  =====================================  ======================================

``make_rollouts`` renders the clips, writes each as a rollout sample
(``reward.rollouts.rollout_dir``: mp4, json with the true properties under ``simulated``, latents
encoded with the debug VAEs and text encoder of ``training.clip_encoder``, so the latents carry what
the pixels carry). ``simulate_rankings`` compares samples of a group the way annotators rank a
group: per axis, a tie when the qualities differ by less than ``tie_margin``, otherwise the better
one, flipped with probability ``noise``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, sosfilt

PROPERTIES = ("dark", "motion", "muffled", "offset", "aligned")
SIM_AXES = ("visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment", "overall")
OVERALL_OF = ("visual_quality", "motion", "audio_quality")
WORDS = ("a red kite", "waves on a beach", "a drummer", "city traffic", "a dog running", "rain on glass",
         "a violin solo", "a crowd cheering")
STYLES = ("close up", "wide shot", "at dusk", "handheld", "slow motion", "in the rain")  # what captions add
WORD_SEED = 7919  # texture(WORD_SEED + i) is what WORDS[i] looks like


@dataclass
class SimulationConfig:
    size: int = 32  # frame height and width (multiple of 16)
    fps: float = 16.0
    duration_s: float = 2.0
    sample_rate: int = 16000  # the debug audio VAE's rate
    max_offset_s: float = 0.6
    event: bool = True  # the light + buzz whose offset is the A/V-sync property
    # the prompt's look blended with another word's (prompt alignment); off: the scene's own
    # look, so that a group's samples differ only in the other properties
    prompt_mix: bool = True


def quality(axis: str, props: dict) -> float:
    """How good a clip is on ``axis`` (0..1, higher is better), from its true properties."""
    per_axis = {"visual_quality": 1 - props["dark"], "motion": props["motion"],
                "audio_quality": 1 - props["muffled"], "av_sync": 1 - props["offset"], "prompt_alignment": props.get("aligned", 1.0)}
    if axis == "overall":  # what a viewer takes in at once: picture, movement, sound
        return float(np.mean([per_axis[a] for a in OVERALL_OF]))
    return float(per_axis[axis])


def texture(seed: int) -> list:
    """Three plane waves (spatial frequency (fy, fx), a phase per colour channel): a look."""
    look = np.random.default_rng(seed)
    return [(look.uniform(0.2, 0.35, 2) * look.choice([-1, 1], 2), look.uniform(0, 2 * math.pi, 3)) for _ in range(3)]


def draw(waves: list, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [-1, 1]: ``waves`` at pixel coordinates (y, x)."""
    return sum(np.stack([np.sin(fy * y + fx * x + p) for p in phase], -1) for (fy, fx), phase in waves) / len(waves)


def render(props: dict, cfg: SimulationConfig, rng: np.random.Generator, scene: int = 0,
           margin_s: float | None = None, word: int | None = None):
    """(video (3, T, H, W) in [-1, 1], audio (1, N) in [-1, 1]) of a clip with ``props``. The
    ``scene`` (drift direction, tone, and the texture when no ``word`` is given) and the
    prompt's ``word`` (its texture, ``WORDS``) are the same for every sample of a group; ``rng``
    draws what varies between samples (the event's onset, noise).
    The onset is at least ``margin_s`` (default: the largest offset + 0.2 s) from either end."""
    from model.sequence import SequenceConfig

    seq = SequenceConfig(duration_s=cfg.duration_s, fps=cfg.fps, height=cfg.size, width=cfg.size,
                         sample_rate=cfg.sample_rate)
    n_frames, n_samples, s = seq.num_frames, seq.audio_samples, cfg.size
    # A smooth colour texture drifting in the scene's direction: the look of the prompt's
    # word, blended with ``aligned`` weight with the ``other_word``'s (a generator mixing in
    # something the prompt did not ask for); the scene's own look when there is no word.
    look = np.random.default_rng(scene)
    angle = look.uniform(0, 2 * math.pi)
    pitch = look.uniform(110, 220)
    speed = 1.5 * props["motion"]  # faster drifts alias within a video latent's four frames
    yy, xx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    prompt_waves = texture(scene if word is None else WORD_SEED + word)
    other_waves = texture(WORD_SEED + int(props.get("other_word", 0)))
    share = props.get("aligned", 1.0)
    frames = np.zeros((n_frames, s, s, 3), np.float32)
    for t in range(n_frames):
        y, x = yy - speed * t * math.sin(angle), xx - speed * t * math.cos(angle)
        frames[t] = share * draw(prompt_waves, y, x) + (1 - share) * draw(other_waves, y, x)
    frames = 0.6 * frames - 0.35 * props["dark"]
    # An event: from its onset a light is on in one quarter of the picture and a buzz sounds,
    # the buzz starting ``offset`` later (or earlier). The onset starts a video latent (frame
    # 4k - 3 is the first of the four latent k summarises): a level change from that latent on.
    offset = props["offset"] * cfg.max_offset_s * props.get("offset_sign", 1.0)
    margin = cfg.max_offset_s + 0.2 if margin_s is None else margin_s
    starts = [f for f in range(1, n_frames, 4) if margin <= f / cfg.fps <= n_frames / cfg.fps - margin]
    onset = int(rng.choice(starts or [1 + 4 * ((n_frames - 1) // 8)]))  # mid-clip when too short for margins
    if cfg.event:
        frames[onset:, : s // 2, : s // 2] = 0.9
    video = torch.from_numpy(frames).clamp(-1, 1).permute(3, 0, 1, 2)
    # A bright sawtooth, low-passed: the more muffled, the lower the cutoff.
    saw = 2 * ((pitch * np.arange(n_samples) / cfg.sample_rate) % 1) - 1
    cutoff = 6000 * (500 / 6000) ** props["muffled"]
    audio = 0.5 * sosfilt(butter(4, cutoff, fs=cfg.sample_rate, output="sos"), saw)
    if cfg.event:
        start = max(0, int(round((onset / cfg.fps + offset) * cfg.sample_rate)))
        audio[start:] = np.clip(audio[start:] + rng.normal(0, 0.2, n_samples - start), -1, 1)
    return video, torch.from_numpy(audio).float()[None]


def make_rollouts(directory, groups: int, per_group: int = 4, seed: int = 0,
                  cfg: SimulationConfig | None = None, encode_batch: int = 16) -> list[dict]:
    """Render ``groups`` x ``per_group`` clips into a rollouts directory; returns their json.
    Clips are encoded ``encode_batch`` at a time (the debug video VAE is ~5x faster per clip
    in batches of 16 than one by one on a CPU)."""
    from model.media import to_uint8_frames, write_mp4
    from reward.rollouts.rollout_dir import finish_sample, sample_paths
    from training.clip_encoder import ClipEncoder, EncoderConfig

    cfg = cfg or SimulationConfig()
    rng = np.random.default_rng(seed)
    encoder = ClipEncoder(EncoderConfig(), device="cpu")
    pending, metas = [], []

    def flush():
        with torch.no_grad():
            z_video = encoder.video_vae.encode(torch.stack([p[1] for p in pending]))
            z_audio = encoder.audio_vae.encode(torch.stack([p[2] for p in pending]))
        for (meta, _, _, text_emb), zv, za in zip(pending, z_video, z_audio, strict=True):
            finish_sample(directory, meta, {"video": zv, "audio": za, "text_emb": text_emb})
            metas.append(meta)
        pending.clear()

    for g in range(groups):
        word = int(rng.integers(len(WORDS)))
        # what the generator mixes in where it misses the prompt: one other word per group, as
        # a model that cannot draw a prompt keeps drawing the same wrong thing
        other_word = int((word + rng.integers(1, len(WORDS))) % len(WORDS))
        prompt = f"{WORDS[word]}, take {g}"
        scene = int(rng.integers(2**31))
        text = encoder.text.encode([prompt])
        text_emb = text.text_emb[0][text.text_mask[0]]
        for k in range(per_group):
            props = {p: float(rng.uniform()) for p in PROPERTIES}
            props["offset_sign"] = float(rng.choice([-1.0, 1.0]))
            props["other_word"] = other_word
            if not cfg.prompt_mix:
                props["aligned"] = 1.0
            video, audio = render(props, cfg, rng, scene, word=word if cfg.prompt_mix else None)
            sid = f"sim{seed}-g{g:04d}-{k}"
            write_mp4(sample_paths(directory, sid)["mp4"], to_uint8_frames(video), cfg.fps,
                      audio.numpy(), cfg.sample_rate)
            meta = {"sample_id": sid, "group_id": f"sim{seed}-g{g:04d}", "prompt": prompt,
                    "seed": seed * 100000 + g * 100 + k,
                    "sequence": {"fps": cfg.fps, "duration_s": cfg.duration_s, "height": cfg.size,
                                 "width": cfg.size, "sample_rate": cfg.sample_rate},
                    "simulated": props}
            pending.append((meta, video, audio, text_emb))
            if len(pending) == encode_batch:
                flush()
    if pending:
        flush()
    return metas


def make_footage(directory, clips: int, seed: int = 0, cfg: SimulationConfig | None = None) -> list[Path]:
    """``clips`` in-sync mp4s (offset 0) of the simulation's scenes, each long enough for a
    ``cfg.duration_s`` window shifted by up to ``cfg.max_offset_s`` either way: the footage
    ``reward.scoring.sync_pretrain`` shifts the sound of, standing in for curated clips."""
    from model.media import to_uint8_frames, write_mp4

    cfg = cfg or SimulationConfig()
    long = dataclasses.replace(cfg, duration_s=cfg.duration_s + 2 * cfg.max_offset_s + 0.4)
    rng, directory = np.random.default_rng(seed), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(clips):
        props = {p: float(rng.uniform()) for p in PROPERTIES} | {"offset": 0.0, "aligned": 1.0}
        # the event in the middle 1.2 s, so that every window pretraining cuts (a shift away
        # from either end, see reward.scoring.sync_pretrain.cut_windows) holds it
        video, audio = render(props, long, rng, scene=int(rng.integers(2**31)), margin_s=(long.duration_s - 1.2) / 2)
        paths.append(directory / f"footage{seed}-{k:04d}.mp4")
        write_mp4(paths[-1], to_uint8_frames(video), long.fps, audio.numpy(), long.sample_rate)
    return paths


def make_captioned_shards(directory, clips: int, seed: int = 0, cfg: SimulationConfig | None = None,
                          per_shard: int = 100) -> list[Path]:
    """``clips`` captioned clips, each wholly the look of the word its caption names, as latent
    shards (``training.latent_shards``, encoded like the rollouts): the curated, captioned
    training clips ``reward.scoring.text_pretrain`` learns what a prompt looks like from."""
    from training.clip_encoder import ClipEncoder, EncoderConfig
    from training.encoders import format_of
    from training.latent_shards import write_latent_shard

    cfg = cfg or SimulationConfig()
    rng, directory = np.random.default_rng(seed), Path(directory)
    encoder = ClipEncoder(EncoderConfig(), device="cpu")
    fmt = format_of(encoder.cfg, encoder.video_vae, encoder.audio_vae, encoder.text.dim, cfg.fps)
    paths = []
    for first in range(0, clips, per_shard):
        videos, audios, captions, words = [], [], [], []
        for _ in range(first, min(clips, first + per_shard)):
            words.append(int(rng.integers(len(WORDS))))
            props = {p: float(rng.uniform()) for p in PROPERTIES} | {"offset": 0.0, "aligned": 1.0}
            video, audio = render(props, cfg, rng, scene=int(rng.integers(2**31)), word=words[-1])
            videos.append(video), audios.append(audio), captions.append(f"{WORDS[words[-1]]}, {STYLES[rng.integers(len(STYLES))]}")
        with torch.no_grad():
            z_video = torch.cat([encoder.video_vae.encode(torch.stack(videos[i:i + 16])) for i in range(0, len(videos), 16)])
            z_audio = torch.cat([encoder.audio_vae.encode(torch.stack(audios[i:i + 16])) for i in range(0, len(audios), 16)])
            text = encoder.text.encode(captions)
        # clones, as pipelines.latents writes them: a view would save the whole batch's storage
        # with every sample (620 KB a sample instead of 6 KB)
        samples = [{"key": f"cap{seed}-{first + i:05d}", "video": z_video[i].clone(), "audio": z_audio[i].clone(),
                    "text": text.text_emb[i][text.text_mask[i]], "meta": {"caption": {"text": captions[i]}, "word": words[i]}}
                   for i in range(len(captions))]
        paths.append(write_latent_shard(directory / f"captioned-{seed}-{first // per_shard:04d}.tar", samples, fmt))
    return paths


def simulate_rankings(metas: list[dict], axes=SIM_AXES, *, noise: float = 0.15, tie_margin: float = 0.1,
                      annotators: int = 1, seed: int = 0) -> list[dict]:
    """Pairwise judgements of every pair within each group, per axis, by ``annotators``
    simulated judges: a tie when the qualities differ by less than ``tie_margin``, else the
    better clip, flipped to the worse with probability ``noise`` (a tie stays a tie)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[dict]] = {}
    for m in metas:
        groups.setdefault(m["group_id"], []).append(m)
    rows = []
    for gid, members in sorted(groups.items()):
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                for axis in axes:
                    diff = quality(axis, a["simulated"]) - quality(axis, b["simulated"])
                    for n in range(annotators):
                        if abs(diff) < tie_margin:
                            outcome = "tie"
                        else:
                            better_a = (diff > 0) != (rng.random() < noise)
                            outcome = "a" if better_a else "b"
                        rows.append({"task_id": f"{gid}:{i}-{j}", "item_a": a["sample_id"], "item_b": b["sample_id"],
                                     "axis": axis, "outcome": outcome, "annotator": f"sim{n}",
                                     "created_at": "2026-11-29T00:00:00Z"})
    return rows
