"""What ``tandem train`` checks before Ray starts: a recipe that cannot run exits 2 in seconds
with what to change, instead of booking a cluster and crashing on its first step or sample.

- The data exists and is not empty (else: how to make latents); with several directories
  (``data.shards=a,b``), each of them.
- No shard is damaged (cut short by an interrupted copy: each is named on a line), unless
  ``data.skip_damaged=true``, which trains on the others.
- The data gives every rank at least one full batch (samples per bucket, ``data.batch_size``,
  ``workers.num_workers``, as training.loader plans them); else the numbers and the
  settings that would fit.
- The latents were made by the encoders the recipe's ``sample.decoder`` names (names and
  weight digests of the video VAE, audio VAE and vocoder), so samples decode with what made
  them; the fix quotes the encoder settings the latents' own config.yaml recorded.
- The preset fits the latents: its patch divides every latent shape in the manifest.
- A storage that already holds a run is resumed only under the config it was started with
  (its ``recipe.yaml``; ``pipelines.ray_train.check_resume``): any other value of a field that
  is not ``run_only`` (``steps`` and ``engine.lr`` included) exits 2 naming the keys.
- A storage that already holds checkpoints holds them for the same model (geometry included),
  so a resume cannot crash on a shape mismatch.
- ``register_alias`` is one MLflow accepts (the final checkpoint becomes models:/tandem-dit@ALIAS).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from model.config import ConfigError, to_dict
from pipelines.config_loader import RECIPES
from training.encoders import EncoderConfig, EncoderConfigError, describe, encoder_names
from training.latent_shards import (
    LatentFormat,
    absolute_shards,
    read_latent_format,
    read_manifest,
    shard_dirs,
)
from training.loader import DataIndex, deal_batches, index_data
from training.resume import checkpoint_dir
from training.trainer import TrainConfig, model_config

DECODER_FIELDS = ("video", "video_path", "video_preset", "audio", "audio_path", "audio_preset", "vocoder_path")


def latents_recipe(preset: str) -> str:
    """The latents recipe of ``preset``: the encoders and buckets it is sized for."""
    found = sorted(p.stem for p in [*RECIPES.glob(f"latents_{preset}.yaml"), *RECIPES.glob(f"latents_{preset}_*.yaml")])
    return found[0] if found else "latents_<preset>"


def how_to_make_latents(cfg: TrainConfig) -> str:
    return (f"make latents first: `tandem curate RAW... --out curated/`, then `tandem latents curated/ --out "
            f"{cfg.data.shards} --config {latents_recipe(cfg.preset)}` (the encoders preset {cfg.preset!r} is "
            "sized for); or run `tandem demo`, which does both on sample footage and trains a few steps")


def _data_format(cfg: TrainConfig) -> LatentFormat | None:
    dirs = shard_dirs(cfg.data.shards)
    for data in dirs or [Path(cfg.data.shards)]:  # each directory data.shards names
        named = cfg.data.shards if len(dirs) <= 1 else str(data)
        if not dirs or not data.is_dir():
            raise ConfigError(f"data.shards={named!r}: no such directory; {how_to_make_latents(cfg)}")
        if not any(data.glob("*.tar")) and not (cfg.data.source == "clips" and any(data.glob("shards/*.tar"))):
            kind = "clip" if cfg.data.source == "clips" else "latent"
            raise ConfigError(f"data.shards={data} holds no {kind} shards (*.tar); {how_to_make_latents(cfg)}")
    if cfg.data.source == "clips":
        return _describe(cfg.data.encoder, cfg.data.buckets.fps, "data.encoder")
    try:
        return read_latent_format(cfg.data.shards)
    except ValueError as exc:  # shards of different encoders mixed in one directory, or across them
        raise ConfigError(str(exc)) from exc


def _describe(encoder: EncoderConfig, fps: float, where: str) -> LatentFormat:
    try:
        return describe(encoder, fps)
    except EncoderConfigError as exc:
        raise ConfigError(str(exc).replace("encoder.", f"{where}.")) from exc


def _decoder_fix(cfg: TrainConfig) -> str:
    """The ``sample.decoder.*`` overrides that name the encoders recorded with the latents."""
    recorded = next((d / "config.yaml" for d in shard_dirs(cfg.data.shards) if (d / "config.yaml").is_file()),
                    Path(cfg.data.shards) / "config.yaml")
    if cfg.data.source == "clips":
        made_by = to_dict(cfg.data.encoder)
    elif recorded.is_file():
        made_by = (yaml.safe_load(recorded.read_text()) or {}).get("encoder", {})
    else:
        return "set sample.decoder.* to the encoders that made the latents"
    current = to_dict(cfg.sample.decoder)
    changes = [f"sample.decoder.{k}={made_by[k]}" for k in DECODER_FIELDS if k in made_by and made_by[k] != current[k]]
    return f"set {' '.join(changes)} (from {recorded})" if changes else f"the weights changed since {recorded} was written"


def check_decoder(cfg: TrainConfig, fmt: LatentFormat) -> None:
    made = fmt.encoders()
    decodes = encoder_names(cfg.sample.decoder)  # names first: they need no weights at hand
    if all(made[k] == v for k, v in decodes.items()):
        decodes = _describe(cfg.sample.decoder, fmt.fps, "sample.decoder").encoders()
    if any(made[k] != v for k, v in decodes.items()):
        diff = ", ".join(f"{k}: latents {made[k]!r} vs decoder {v!r}" for k, v in decodes.items() if made[k] != v)
        raise ConfigError(f"sample.decoder does not decode what made data.shards ({diff}): {_decoder_fix(cfg)}; "
                          f"or, to train preset {cfg.preset!r} on what it is sized for, encode data.shards with "
                          f"`tandem latents ... --config {latents_recipe(cfg.preset)}`")


def check_preset_fits(cfg: TrainConfig, model_cfg) -> None:
    manifests = [read_manifest(d) for d in shard_dirs(cfg.data.shards)]
    if not manifests or None in manifests:
        return
    rows = [row for manifest in manifests for row in manifest]
    pt, ph, pw = model_cfg.video.patch
    shapes = {(row.get("bucket"), tuple(row["video_shape"])) for row in rows}
    for bucket, (_, t, h, w) in sorted(shapes, key=str):
        if t % pt or h % ph or w % pw:
            raise ConfigError(f"bucket {bucket}: video latents {t}x{h}x{w} do not split into preset {cfg.preset!r}'s "
                              f"{pt}x{ph}x{pw} patches; encode again with buckets.resolutions that are multiples of "
                              f"{ph} x the VAE's stride")


def check_storage(cfg: TrainConfig, model_cfg) -> None:
    from pipelines.ray_train import check_resume

    check_resume(cfg, {"data.shards": absolute_shards(cfg.data.shards)})  # the run records it absolute
    checkpoints = checkpoint_dir(cfg.storage)
    saved = checkpoints / "model.json"
    if not (checkpoints / "latest").exists() or not saved.is_file():
        return
    want = json.loads(json.dumps(to_dict(model_cfg)))
    held = json.loads(saved.read_text())
    if held != want:
        diff = ", ".join(f"{k}: {held.get(k)} vs {want.get(k)}" for k in want if held.get(k) != want.get(k))
        raise ConfigError(f"storage={cfg.storage} holds checkpoints of another model ({diff}): resuming would fail; "
                          "use another storage, or train on latents made like the ones it was trained on")


def check_damaged(cfg: TrainConfig, data: DataIndex) -> None:
    """Damaged shards stop the run (naming each on a line) unless ``data.skip_damaged``."""
    if not data.damaged or cfg.data.skip_damaged:
        return
    remake = ("copy them again, or run `tandem curate` again" if cfg.data.source == "clips" else
              "copy them again, or delete them and run `tandem latents` again (it encodes only what is missing)")
    raise ConfigError(f"data.shards={cfg.data.shards}: {len(data.damaged)} damaged shard(s):\n"
                      + "".join(f"  {why}\n" for why in data.damaged.values())
                      + f"set data.skip_damaged=true to train on the others (the run records which were left "
                      f"out), or {remake}")


def _fits(buckets: list, batch: int, ranks: int, drop_last: bool, seed: int) -> bool:
    """Whether the loader's plan gives each of ``ranks`` at least one batch."""
    return len(deal_batches(buckets, batch, ranks, seed=seed, epoch=0, drop_last=drop_last)) >= ranks


def _settings_that_fit(cfg: TrainConfig, buckets: list) -> list[str]:
    d, ranks = cfg.data, cfg.workers.num_workers
    fits = []
    batch = next((b for b in range(d.batch_size - 1, 0, -1) if _fits(buckets, b, ranks, d.drop_last, d.seed)), None)
    if batch:
        fits.append(f"data.batch_size={batch} engine.micro_batch_per_rank={batch}")
    fewer = next((k for k in range(ranks - 1, 0, -1) if _fits(buckets, d.batch_size, k, d.drop_last, d.seed)), None)
    if fewer:
        fits.append(f"workers.num_workers={fewer}")
    if d.drop_last and _fits(buckets, d.batch_size, ranks, False, d.seed):
        fits.append("data.drop_last=false")
    if not fits and buckets:
        alone = next(b for b in range(d.batch_size, 0, -1) if _fits(buckets, b, 1, d.drop_last, d.seed))
        fits.append(f"data.batch_size={alone} engine.micro_batch_per_rank={alone} workers.num_workers=1")
    return fits


def check_batches(cfg: TrainConfig, data: DataIndex) -> None:
    """Every rank gets at least one full batch an epoch, as the loader plans them."""
    d, ranks, buckets = cfg.data, cfg.workers.num_workers, data.buckets
    if _fits(buckets, d.batch_size, ranks, d.drop_last, d.seed):
        return
    sizes = sorted(Counter(buckets).values(), reverse=True)
    notes = [f"the largest holds {sizes[0] if sizes else 0}"]
    if data.skipped:
        notes.append(f"{sum(data.skipped.values())} clips skipped ({', '.join(f'{r}={n}' for r, n in data.skipped.items())})")
    if data.damaged:
        notes.append(f"{len(data.damaged)} damaged shard(s) left out")
    fits = _settings_that_fit(cfg, buckets)
    raise ConfigError(
        f"data.shards={d.shards}: {len(buckets)} samples in {len(sizes)} buckets ({'; '.join(notes)}) give no full "
        f"batch of data.batch_size={d.batch_size} to each of workers.num_workers={ranks} ranks "
        f"(data.drop_last={str(d.drop_last).lower()}): each rank needs at least one batch (of one bucket) an epoch. "
        f"Settings that fit: {' | '.join(fits) if fits else 'none'}; "
        "or add data")


def check_data(cfg: TrainConfig) -> DataIndex:
    """Damaged shards, and enough samples for a step on every rank; what the loader will plan from."""
    try:
        data = index_data(cfg.data, skip_damaged=True)  # every damaged shard is named, not just the first
    except FileNotFoundError as exc:
        raise ConfigError(f"data.shards={cfg.data.shards}: {exc}; {how_to_make_latents(cfg)}") from None
    check_damaged(cfg, data)
    check_batches(cfg, data)
    return data


def preflight(cfg: TrainConfig) -> DataIndex:
    """Raise ConfigError (the message says what to change) for a recipe that cannot run;
    returns the data the loader will plan from (``damaged``: the shards it leaves out)."""
    from pipelines.registry import check_alias

    check_alias(cfg.register_alias, "register_alias")
    fmt = _data_format(cfg)
    if fmt is not None:
        check_decoder(cfg, fmt)
    model_cfg = model_config(cfg)
    check_preset_fits(cfg, model_cfg)
    check_storage(cfg, model_cfg)
    return check_data(cfg)  # last: it reads every shard's index and every sample's json
