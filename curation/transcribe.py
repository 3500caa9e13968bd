"""Transcribe stage: speech -> language, text, segments and timed words (WhisperX).

Runs as an actor (``setup()`` loads the model once per worker; a GPU when CTranslate2
sees one). Backends, chosen with ``transcribe.backend``:

- ``whisperx`` (default): WhisperX's batched faster-whisper pipeline over VAD chunks.
  The VAD is the Silero ONNX model faster-whisper ships (curation.vad; WhisperX's own
  Silero path downloads from torch hub). Word times: WhisperX's wav2vec2 forced
  alignment when ``align_model`` names a local wav2vec2 CTC model (it also needs NLTK's
  ``punkt_tab`` data, in ``nltk_data`` or on ``NLTK_DATA``); otherwise Whisper's own cross-attention word
  timing, computed from the encoder outputs the batched decode already produced (no
  second encoder pass).
- ``faster-whisper``: faster-whisper's ``BatchedInferencePipeline`` (the WhisperX
  algorithm as faster-whisper ships it) with its word timestamps. Needs no whisperx.

Speakers: with ``diarize_model`` (a local pyannote diarization pipeline), WhisperX's
diarization assigns a speaker to every word; otherwise ``speaker`` is None.
A clip without speech yields an empty transcript, not an error.

Batches: the actor receives a unit's clips together (``process_batch``). When the
language is known (``transcribe.language``, or an English-only model), their audio is
joined with a second of silence between clips and decoded as one batched run (speech
chunks never span two clips), then the segments are handed back to their clips; with
per-clip language detection, clips are decoded one by one.
"""

from __future__ import annotations

import contextlib
import io
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from curation.audio import load_clip_audio
from curation.stage import Item, Resources, Stage
from curation.vad import speech_segments, to_mono_16k


@dataclass
class TranscribeConfig:
    backend: str = "whisperx"  # whisperx | faster-whisper
    model: str = "large-v3"  # a Whisper model name, or a local CTranslate2 model folder
    language: str | None = None  # None: detected per clip (English-only models: "en")
    device: str = "auto"  # auto (cuda when CTranslate2 sees a GPU) | cuda | cpu
    compute_type: str = "default"  # default: float16 on cuda, int8 on cpu
    batch_size: int = 8  # VAD chunks decoded together
    beam_size: int = 5
    cpu_threads: int = 0  # 0: CTranslate2's default
    vad_threshold: float = 0.5
    chunk_s: float = 30.0  # VAD chunks are merged up to Whisper's window
    align_model: str | None = None  # local wav2vec2 CTC folder for WhisperX alignment
    nltk_data: str | None = None  # folder holding tokenizers/punkt_tab (alignment splits sentences)
    diarize_model: str | None = None  # local pyannote speaker-diarization pipeline


class AsrBackend(Protocol):
    def transcribe(self, audio: np.ndarray) -> tuple[str | None, list[dict]]:
        """(language, segments) for mono 16 kHz audio; segments in WhisperX's form:
        {start, end, text, words: [{word, start, end, score}]}, times in seconds."""


def cuda_devices() -> int:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count()
    except Exception:  # a broken CUDA install reads as "no GPU", not a crash at import
        return 0


class TranscribeStage(Stage):
    name = "transcribe"
    # Asks for a GPU; pipelines/ray_adapter.py drops the request on clusters without one.
    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=1.0, actor=True, batch_size=64)

    def __init__(self, config: TranscribeConfig | None = None):
        config = config or TranscribeConfig()
        if config.backend not in BACKENDS:
            raise ValueError(f"transcribe.backend must be one of {sorted(BACKENDS)}, not {config.backend!r}")
        for key in ("align_model", "diarize_model"):
            path = getattr(config, key)
            if path and not Path(path).exists():
                raise ValueError(f"transcribe.{key} must be a local model path; {path!r} does not exist")
        super().__init__(config)
        self.backend: AsrBackend | None = None
        self.diarizer = None

    def preflight(self) -> None:
        model = self.config.model
        if Path(model).is_dir() or "/" in model and Path(model).exists():
            return
        if Path(model).is_absolute() or model.startswith("."):
            raise ValueError(f"transcribe.model={model!r}: no such folder")
        from faster_whisper.utils import download_model

        try:
            download_model(model, local_files_only=True)  # in the local Hugging Face cache
            return
        except Exception:
            pass
        from faster_whisper.utils import _MODELS
        from huggingface_hub import file_exists

        try:
            if file_exists(_MODELS.get(model, model), "model.bin"):
                return  # workers will download it
        except Exception as exc:
            raise ValueError(
                f"transcribe.model={model!r} is not in the local model cache and cannot be fetched "
                f"({type(exc).__name__}): set transcribe.model=/path/to/ctranslate2-model, "
                "or leave transcription out with skip=[transcribe]") from None
        raise ValueError(f"transcribe.model={model!r} names no known Whisper model")

    def setup(self) -> None:
        if self.backend is not None:
            return
        cfg = self.config
        device = cfg.device if cfg.device != "auto" else ("cuda" if cuda_devices() else "cpu")
        compute = cfg.compute_type if cfg.compute_type != "default" else ("float16" if device == "cuda" else "int8")
        self.backend = BACKENDS[cfg.backend](cfg, device, compute)
        if cfg.diarize_model:
            from whisperx.diarize import DiarizationPipeline

            self.diarizer = DiarizationPipeline(model_name=cfg.diarize_model, device=device)

    def process(self, item: Item) -> list[Item]:
        return self.process_batch([item])[0]

    def process_batch(self, items: list[Item]) -> list[list[Item]]:
        self.setup()
        audios = []
        for item in items:
            loaded = load_clip_audio(item)
            audios.append(to_mono_16k(*loaded) if loaded is not None and len(loaded[0]) else None)
        results = iter(self.backend.transcribe_many([a for a in audios if a is not None]))
        out = []
        for item, audio in zip(items, audios, strict=True):
            transcript = {"language": None, "text": "", "segments": [], "words": [],
                          "backend": self.config.backend, "model": self.config.model}
            if audio is not None:
                language, segments = next(results)
                if self.diarizer is not None and segments:
                    import whisperx

                    segments = whisperx.assign_word_speakers(self.diarizer(audio), {"segments": segments})["segments"]
                transcript.update(normalise(language, segments, len(audio) / 16000))
            out.append([{**item, "transcript": transcript}])
        return out


_GAP_S = 1.0  # silence between clips joined into one batched decode


class _Batching:
    """``transcribe_many``: several clips in one batched decode when the language is known."""

    language: str | None

    def transcribe_many(self, audios: list[np.ndarray]) -> list[tuple[str | None, list[dict]]]:
        if self.language is None or len(audios) < 2:
            return [self.transcribe(a) for a in audios]
        gap = np.zeros(round(_GAP_S * 16000), np.float32)
        spans, pieces, at = [], [], 0
        for audio in audios:
            spans.append((at / 16000, (at + len(audio)) / 16000))
            pieces += [audio, gap]
            at += len(audio) + len(gap)
        language, segments = self._transcribe_joined(np.concatenate(pieces), spans)
        per_clip: list[list[dict]] = [[] for _ in audios]
        for seg in segments:
            index = next((i for i, (a, b) in enumerate(spans) if seg["start"] < b), len(spans) - 1)
            shift = spans[index][0]
            words = [{**w, "start": w["start"] - shift if w.get("start") is not None else None,
                      "end": w["end"] - shift if w.get("end") is not None else None} for w in seg.get("words", [])]
            per_clip[index].append({**seg, "start": seg["start"] - shift, "end": seg["end"] - shift, "words": words})
        return [(language, part) for part in per_clip]

    def _transcribe_joined(self, audio: np.ndarray, spans: list[tuple[float, float]]):
        raise NotImplementedError


def normalise(language: str | None, segments: list[dict], duration_s: float) -> dict:
    """The shard schema's transcript: words with start_s/end_s clipped to the clip, in
    order, punctuation tokens folded into the word before them, score in [0, 1]."""
    out_segments, words = [], []
    for seg in segments:
        text = seg.get("text", "").strip()
        if not text:
            continue
        out_segments.append({"start_s": round(float(seg["start"]), 3), "end_s": round(float(seg["end"]), 3), "text": text})
        for w in seg.get("words", []):
            if w.get("start") is None or w.get("end") is None:
                continue  # WhisperX leaves characters it cannot align (digits) untimed
            start = min(max(float(w["start"]), words[-1]["start_s"] if words else 0.0), duration_s)
            end = min(max(float(w["end"]), start), duration_s)
            token = w["word"].strip()
            if not token:
                continue
            if words and token and all(c in string.punctuation for c in token):
                words[-1]["word"] += token
                words[-1]["end_s"] = round(max(words[-1]["end_s"], end), 3)
                continue
            words.append({"word": token, "start_s": round(start, 3), "end_s": round(end, 3),
                          "score": round(min(1.0, max(0.0, float(w.get("score", 0.0)))), 3),
                          "speaker": w.get("speaker")})
    text = " ".join(s["text"] for s in out_segments)
    return {"language": language, "text": text, "segments": out_segments, "words": words}


class FasterWhisperBackend(_Batching):
    """faster-whisper's batched pipeline with Silero VAD and its word timestamps."""

    def __init__(self, cfg: TranscribeConfig, device: str, compute_type: str):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.cfg = cfg
        model = WhisperModel(cfg.model, device=device, compute_type=compute_type, cpu_threads=cfg.cpu_threads)
        self.language = cfg.language or (None if model.model.is_multilingual else "en")
        self.pipeline = BatchedInferencePipeline(model)

    def transcribe(self, audio: np.ndarray) -> tuple[str | None, list[dict]]:
        cfg = self.cfg
        segments, info = self.pipeline.transcribe(
            audio, language=self.language, batch_size=cfg.batch_size, beam_size=cfg.beam_size,
            word_timestamps=True, vad_filter=True,
            vad_parameters={"threshold": cfg.vad_threshold, "max_speech_duration_s": cfg.chunk_s})
        return info.language, _as_dicts(segments)

    def _transcribe_joined(self, audio: np.ndarray, spans: list[tuple[float, float]]):
        """Speech chunks found clip by clip (so none spans two clips), decoded in batches."""
        cfg, chunks = self.cfg, []
        for a, b in spans:
            clip = audio[round(a * 16000):round(b * 16000)]
            for start, end in speech_segments(clip, cfg.vad_threshold, max_speech_s=cfg.chunk_s):
                if chunks and chunks[-1]["clip"] == (a, b) and a + end - chunks[-1]["start"] <= cfg.chunk_s:
                    chunks[-1]["end"] = a + end  # merged up to Whisper's window, as faster-whisper does
                else:
                    chunks.append({"start": a + start, "end": a + end, "clip": (a, b)})
        if not chunks:
            return self.language, []
        segments, info = self.pipeline.transcribe(
            audio, language=self.language, batch_size=cfg.batch_size, beam_size=cfg.beam_size,
            word_timestamps=True, vad_filter=False,
            clip_timestamps=[{"start": c["start"], "end": c["end"]} for c in chunks])
        return info.language, _as_dicts(segments)


def _as_dicts(segments) -> list[dict]:
    return [{"start": s.start, "end": s.end, "text": s.text,
             "words": [{"word": w.word, "start": w.start, "end": w.end, "score": w.probability}
                       for w in s.words or []]} for s in segments]


class WhisperXBackend(_Batching):
    """WhisperX: batched decode over Silero VAD chunks, then word timing (see module doc)."""

    def __init__(self, cfg: TranscribeConfig, device: str, compute_type: str):
        with warnings.catch_warnings():  # pyannote warns that torchcodec is missing:
            warnings.filterwarnings("ignore", message=r"\s*torchcodec")  # audio reaches it as arrays
            import whisperx
            from whisperx.asr import WhisperModel

        class EncoderKeepingModel(WhisperModel):
            # WhisperX's batched decode discards the encoder output; keeping it lets the
            # word timing reuse it instead of encoding every chunk a second time.
            def encode(self, features):
                output = super().encode(features)
                self.kept.append(output)
                return output

        self.cfg, self.device = cfg, device
        self.model = EncoderKeepingModel(cfg.model, device=device, compute_type=compute_type,
                                         cpu_threads=cfg.cpu_threads)
        self.model.kept = []
        self.language = cfg.language or (None if self.model.model.is_multilingual else "en")
        self.vad = silero_vad_for_whisperx(cfg.vad_threshold, cfg.chunk_s)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints which VAD it uses
            self.pipeline = whisperx.load_model(
                cfg.model, device, compute_type=compute_type, model=self.model, language=self.language,
                vad_model=self.vad,
                vad_options={"vad_onset": cfg.vad_threshold, "chunk_size": cfg.chunk_s},
                asr_options={"beam_size": cfg.beam_size})
        self.aligners: dict[str, Any] = {}
        if cfg.align_model:
            _check_punkt(cfg.nltk_data)

    def transcribe(self, audio: np.ndarray) -> tuple[str | None, list[dict]]:
        import whisperx

        self.model.kept.clear()
        result = self.pipeline.transcribe(audio, batch_size=self.cfg.batch_size, chunk_size=int(self.cfg.chunk_s))
        segments, language = result["segments"], result["language"]
        if not segments:
            return language, []
        if self.cfg.align_model:
            if language not in self.aligners:
                self.aligners[language] = whisperx.load_align_model(language, self.device, model_name=self.cfg.align_model)
            model, metadata = self.aligners[language]
            return language, whisperx.align(segments, model, metadata, audio, self.device)["segments"]
        return language, self._attention_word_times(segments, language)

    def _transcribe_joined(self, audio: np.ndarray, spans: list[tuple[float, float]]):
        self.vad.spans = spans
        try:
            return self.transcribe(audio)
        finally:
            self.vad.spans = None

    def _attention_word_times(self, segments: list[dict], language: str) -> list[dict]:
        """Whisper's cross-attention DTW word timing (what faster-whisper does), batch by
        batch on the encoder outputs the decode left behind."""
        tokenizer, size = self.pipeline.tokenizer, max(1, self.cfg.batch_size)
        if tokenizer is None:  # multilingual model: WhisperX resets it after each call
            from faster_whisper.tokenizer import Tokenizer

            tokenizer = Tokenizer(self.model.hf_tokenizer, True, task="transcribe", language=language)
        batches = self.model.kept[-((len(segments) + size - 1) // size):]
        for number, encoder_output in enumerate(batches):
            batch = segments[number * size:(number + 1) * size]
            tokens = [tokenizer.encode(" " + s["text"].strip()) if s["text"].strip() else [] for s in batch]
            frames = [min(3000, round((s["end"] - s["start"]) * 100)) for s in batch]
            aligned = self.model.find_alignment(tokenizer, tokens, encoder_output, frames) if any(tokens) else []
            for seg, words in zip(batch, aligned or [[]] * len(batch), strict=True):
                seg["words"] = [{"word": w["word"], "start": seg["start"] + w["start"],
                                 "end": seg["start"] + w["end"], "score": w["probability"]} for w in words]
        return segments


def _check_punkt(nltk_data: str | None) -> None:
    """WhisperX's alignment splits sentences with NLTK's punkt_tab and would try to
    download it mid-run; a missing copy is a configuration error, reported up front."""
    import nltk

    if nltk_data:
        nltk.data.path.insert(0, nltk_data)
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError as exc:
        raise ValueError("transcribe.align_model needs NLTK's punkt_tab data: run "
                         "`python -m nltk.downloader -d DIR punkt_tab` once and set transcribe.nltk_data=DIR "
                         "(or NLTK_DATA)") from exc


def silero_vad_for_whisperx(threshold: float, chunk_s: float):
    """curation.vad's Silero ONNX model behind WhisperX's Vad interface."""
    from whisperx.diarize import Segment
    from whisperx.vads import Vad

    class SileroOnnxVad(Vad):
        """With ``spans`` set (clips joined for one batch), speech is found and merged into
        chunks clip by clip, so no chunk spans two clips."""

        def __init__(self):
            super().__init__(threshold)
            self.spans: list[tuple[float, float]] | None = None

        def __call__(self, audio: dict, **kwargs) -> list:
            wave = audio["waveform"]
            out = []
            for a, b in self.spans or [(0.0, len(wave) / 16000)]:
                part = wave[round(a * 16000):round(b * 16000)]
                out += [Segment(a + s, a + e, "UNKNOWN") for s, e in speech_segments(part, threshold, max_speech_s=chunk_s)]
            return out

        @staticmethod
        def preprocess_audio(audio):
            return audio

        def merge_chunks(self, segments, chunk_size, onset=threshold, offset=None):
            groups = [[s for s in segments if a <= s.start < b] for a, b in self.spans] if self.spans else [segments]
            return [chunk for group in groups if group for chunk in Vad.merge_chunks(group, chunk_size, onset, offset)]

    return SileroOnnxVad()


BACKENDS = {"whisperx": WhisperXBackend, "faster-whisper": FasterWhisperBackend}
