"""Caption stage: a structured, director-style caption per clip -> ``caption`` and ``txt``.

The caption has four parts, written in the prompt form the generator is trained on:
``[visual] ... [camera] ... [audio] ... [speech] "..."``. Backends (``caption.backend``):

- ``metadata`` (the offline default): composes the caption only from what the DAG
  measured (shot and motion numbers, loudness, speech ratio, tempo, transcript). It has
  no vision model, so the visual part says the picture was not described instead of
  inventing content, and ``caption.backend`` is "metadata".
- ``vlm``: a transformers vision-language model (Qwen2-VL / Qwen2.5-VL class, local
  weights in ``model_path``) looks at ``frames`` frames sampled evenly from files.mp4
  and writes the visual and camera parts; the audio and speech parts come from the
  measurements (the model hears nothing). Only the tokenizer, image processor and model
  are loaded (not the full processor, whose video half needs torchvision); the image
  placeholder expansion the processor would do is done here. On its actor the stage
  captions a unit's clips ``batch_size`` at a time: one left-padded ``generate`` call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from curation.stage import Item, Resources, Stage


@dataclass
class CaptionConfig:
    backend: str = "metadata"  # metadata | vlm
    model_path: str | None = None  # vlm: local folder of a Qwen2-VL-class model
    frames: int = 4  # vlm: frames sampled evenly across the clip
    frame_max_side: int = 448  # vlm: frames are scaled down to this before the processor
    max_new_tokens: int = 160
    device: str = "auto"  # auto | cuda | cpu
    batch_size: int = 8  # vlm: clips captioned by one generate call
    max_speech_chars: int = 300  # longer transcripts are cut (with "...") in the caption


VISUAL_PROMPT = (
    "These are {n} frames, in order, from one {duration:.1f} second shot of a video. "
    "Describe it for a director, in exactly this form:\n"
    "[visual] <subjects, setting, action, lighting, style> [camera] <shot size, angle, movement>\n"
    "Describe only what is visible."
)


class CaptionStage(Stage):
    name = "caption"
    resources: ClassVar[Resources] = Resources(cpus=0.25)

    def __init__(self, config: CaptionConfig | None = None):
        config = config or CaptionConfig()
        if config.backend not in ("metadata", "vlm"):
            raise ValueError(f"caption.backend must be metadata or vlm, not {config.backend!r}")
        if config.backend == "vlm" and not (config.model_path and Path(config.model_path).is_dir()):
            raise ValueError(f"caption.model_path must be a local VLM folder for backend vlm (got {config.model_path!r})")
        super().__init__(config)
        if config.backend == "vlm":  # a model stage: one long-lived actor, on a GPU when there is one
            self.resources = Resources(cpus=1.0, gpus=1.0, actor=True, batch_size=config.batch_size)  # GPU dropped where none
        self.vlm: VlmCaptioner | None = None

    def setup(self) -> None:
        if self.config.backend == "vlm" and self.vlm is None:
            self.vlm = VlmCaptioner(self.config)

    def process(self, item: Item) -> list[Item]:
        return self.process_batch([item])[0]

    def process_batch(self, items: list[Item]) -> list[list[Item]]:
        cfg = self.config
        raws: list[str | None] = [None] * len(items)
        if cfg.backend == "vlm":
            self.setup()
            for at in range(0, len(items), max(1, cfg.batch_size)):
                raws[at:at + cfg.batch_size] = self.vlm.describe_batch(items[at:at + cfg.batch_size])
        out = []
        for item, raw in zip(items, raws, strict=True):
            parts = metadata_parts(item, cfg.max_speech_chars)
            caption = {"backend": "metadata"}
            if raw is not None:
                visual, camera = split_visual_camera(raw)
                parts.update(visual=visual, camera=camera)
                caption = {"backend": f"vlm:{Path(cfg.model_path).name}", "raw": raw}
            text = compose(parts)
            out.append([{**item, "caption": {**caption, "text": text, "parts": parts}, "txt": text}])
        return out


def compose(parts: dict) -> str:
    return f"[visual] {parts['visual']} [camera] {parts['camera']} [audio] {parts['audio']} [speech] {parts['speech']}"


def metadata_parts(item: Item, max_speech_chars: int = 300) -> dict:
    """The four caption parts from measurements alone; nothing is said that was not measured."""
    duration = float(item.get("end_s", 0.0)) - float(item.get("start_s", 0.0))
    shot = item.get("shot", {})
    # The shot stage streams: a shot's number is known when its clips leave, the total is not.
    total = f" of {shot['n_shots']}" if "n_shots" in shot else ""
    where = f", shot {shot['index'] + 1}{total}" if "index" in shot else ""
    size = f", {item['width']}x{item['height']} at {float(item['fps']):g} fps" if {"width", "height", "fps"} <= item.keys() else ""
    visual = f"not described (metadata caption, no vision model ran); a {duration:.1f} s clip{size}{where}."

    motion = item.get("motion", {})
    if motion.get("black_ratio", 0) > 0.5:
        camera = "mostly black frames."
    elif "static" in motion:
        level = "static picture" if motion["static"] else "moving picture"
        camera = f"{level} (motion score {motion.get('score', 0):.3f}; camera and subject motion not separated)."
    else:
        camera = "not measured."
    return {"visual": visual, "camera": camera, "audio": _audio_part(item), "speech": _speech_part(item, max_speech_chars)}


def _audio_part(item: Item) -> str:
    audio = item.get("audio", {})
    if audio.get("has_audio") is False:
        return "no audio track."
    if "loudness_lufs" not in audio:
        return "not measured."
    if audio.get("loudness_lufs") is None or audio.get("silence_ratio", 0) > 0.95:
        return "near silence."
    kinds = []
    if audio.get("speech_ratio", 0) >= 0.3:
        speakers = {w.get("speaker") for w in item.get("transcript", {}).get("words", [])} - {None}
        kinds.append(f"speech ({len(speakers)} speakers)" if len(speakers) > 1 else "speech")
    if audio.get("tempo_bpm"):
        kinds.append(f"a steady beat at {audio['tempo_bpm']:.0f} BPM")
    body = " over ".join(kinds) if kinds else "non-speech sound without a steady beat"
    return f"{body}, {audio['loudness_lufs']:.0f} LUFS."


def _speech_part(item: Item, max_chars: int) -> str:
    transcript = item.get("transcript")
    if transcript is None:
        return "not transcribed."
    text = transcript.get("text", "").strip()
    if not text:
        return "none."
    return '"' + (text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + "...") + '"'


def split_visual_camera(raw: str) -> tuple[str, str]:
    """The model's [visual] and [camera] parts; untagged output is all visual."""
    found = dict(re.findall(r"\[(visual|camera)\]\s*(.*?)\s*(?=\[(?:visual|camera|audio|speech)\]|$)", raw, re.S | re.I))
    found = {k.lower(): v.strip() for k, v in found.items()}
    if not found:
        return raw.strip(), ""
    return found.get("visual", ""), found.get("camera", "")


def sample_frames(mp4: str | Path, count: int, max_side: int) -> list:
    """``count`` PIL frames at the centres of ``count`` equal parts of the clip."""
    import av

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else float(container.duration / 1e6)
        targets = [(i + 0.5) * duration / count for i in range(count)]
        frames = []
        for frame in container.decode(stream):
            while targets and frame.time is not None and frame.time + 1e-6 >= targets[0]:
                targets.pop(0)
                image = frame.to_image()
                image.thumbnail((max_side, max_side))
                frames.append(image)
            if not targets:
                break
    return frames


class VlmCaptioner:
    """A Qwen2-VL-class model: tokenizer (with its chat template), image processor, model."""

    def __init__(self, cfg: CaptionConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        # Imported from its module: the top-level name is a torchvision-only placeholder
        # when torchvision is missing, although the PIL backend works without it.
        from transformers.models.auto.image_processing_auto import AutoImageProcessor

        self.cfg = cfg
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
        self.images = AutoImageProcessor.from_pretrained(cfg.model_path)
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model_path, dtype=dtype).to(self.device).eval()
        self.image_token = "<|image_pad|>"

    def describe(self, item: Item) -> str:
        return self.describe_batch([item])[0]

    def describe_batch(self, items: list[Item]) -> list[str]:
        """One caption per clip, all from one left-padded ``generate`` call."""
        import torch

        prompts, frames = [], []
        for item in items:
            sampled = sample_frames(item["files"]["mp4"], self.cfg.frames, self.cfg.frame_max_side)
            duration = float(item.get("end_s", 0.0)) - float(item.get("start_s", 0.0))
            content = [{"type": "image"} for _ in sampled]
            content.append({"type": "text", "text": VISUAL_PROMPT.format(n=len(sampled), duration=duration)})
            prompts.append(self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                              add_generation_prompt=True, tokenize=False))
            frames += sampled
        pixels = self.images(images=frames, return_tensors="pt")
        # What the processor does: one placeholder per merged patch of each image, in order.
        merge = self.images.merge_size**2
        grids = iter(pixels["image_grid_thw"])
        expanded = []
        for prompt in prompts:
            pieces = prompt.split(self.image_token)
            expanded.append(pieces[0] + "".join(self.image_token * int(next(grids).prod() // merge) + rest
                                                for rest in pieces[1:]))
        self.tokenizer.padding_side = "left"  # generation continues every row at the same position
        inputs = self.tokenizer(expanded, return_tensors="pt", padding=True)
        inputs = {**inputs, **pixels}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        start = inputs["input_ids"].shape[1]
        return [self.tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in out]
