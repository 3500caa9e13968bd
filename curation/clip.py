"""Clip stage: encode [start_frame, end_frame) of the source, video and audio alike.

The video is exactly the frames start_frame..end_frame-1 of the constant-rate frame grid
the shot stage analysed (so variable-frame-rate sources cut consistently), the audio
exactly the samples of [start_s, end_s) at the configured rate, padded with silence
where the source audio is shorter; both count from the video's first frame
(``probe.video_start_s``). The audio goes both into the mp4 (AAC) and, losslessly, into
a flac with the source's channel layout.

In the curation DAG the shot stage has already decoded the clip (``handoff``: its raw
frames at the output size and its audio samples), so this stage only encodes them: the
source is decoded once in all. The frames stay handed over to the later stages (the
sync stage reads them rather than decoding the mp4) and are deleted as the clip leaves
the pipeline. An item without a handoff (a clip picked by hand) is cut
out of the source with one ffmpeg call that seeks close to it.

What was written is measured afterwards; if video and audio durations disagree by
more than one frame the clip is rejected (``duration_mismatch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from curation.ffmpeg import run_ffmpeg
from curation.media_io import clip_durations, duration_problem
from curation.stage import Item, Resources, Stage, reject, remove_handoff
from model.config import run_only

# Decode this much before the clip so variable-frame-rate sources resample the same way
# the analysis decode did (the frame-rate filter needs frames before the first one kept).
_PREROLL_S = 1.0


@dataclass
class ClipConfig:
    work_dir: str = run_only("")  # where clips are written; set by the pipeline; output unchanged
    video_codec: str = "libx264"
    crf: int = 20
    preset: str = "veryfast"
    fps: float | None = None  # None keeps the source frame rate
    max_side: int = 512  # longer side is scaled down to this (never up); 0 keeps the size
    audio_codec: str = "aac"
    audio_bitrate: str = "192k"
    sample_rate: int | None = 48000  # None keeps the source sample rate
    # Allowed disagreement between the written audio and video durations, in frames.
    max_duration_error_frames: float = 1.0


class ClipStage(Stage):
    name = "clip"
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, config: ClipConfig | None = None):
        config = config or ClipConfig()
        if not config.work_dir:
            raise ValueError("clip.work_dir is not set: the directory clips are written to")
        super().__init__(config)

    def process(self, item: Item) -> list[Item]:
        cfg, probe = self.config, item["probe"]
        src_rate = Fraction(probe["fps_rational"])
        out_rate = Fraction(cfg.fps).limit_denominator(1001) if cfg.fps else src_rate
        count = item["end_frame"] - item["start_frame"]
        out_dir = Path(cfg.work_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        mp4, flac = out_dir / f"{item['key']}.mp4", out_dir / f"{item['key']}.flac"
        item = dict(item)
        handoff = item.pop("handoff", None)
        if handoff:
            has_audio, frames = self._encode_handoff(handoff, mp4, flac, out_rate)
            if frames:
                item["handoff"] = frames
        else:
            has_audio = bool(probe.get("has_audio"))
            self._cut_from_source(item, mp4, flac, src_rate, out_rate)

        got = clip_durations(mp4, flac if has_audio else None)
        item = {**item, "files": {**item.get("files", {}), "mp4": str(mp4)},
                "width": got["width"], "height": got["height"], "fps": float(out_rate),
                "clip": {"n_frames": got["n_frames"], "duration_s": got["video_s"],
                         "video_codec": cfg.video_codec, "source_fps": float(src_rate)}}
        if has_audio:
            item["files"]["flac"] = str(flac)
            item["audio"] = {**item.get("audio", {}), "sample_rate": got["sample_rate"],
                             "channels": got["channels"]}
        out_frames = round(count * out_rate / src_rate)
        problem = duration_problem(got, out_frames, float(out_rate), cfg.max_duration_error_frames)
        return [reject(item, self.name, "duration_mismatch", problem) if problem else item]

    def _encode_handoff(self, handoff: dict, mp4: Path, flac: Path, out_rate: Fraction) -> tuple[bool, dict | None]:
        """Encode the raw frames and samples the shot stage decoded. Returns whether the clip
        has audio, and the frames as a handoff for the later stages when they are exactly the
        mp4's frames (no frame-rate change): the sync stage then reads them instead of
        decoding the clip again. The rest is deleted (the flac holds the audio now)."""
        cfg, frames = self.config, handoff["frames"]
        keep = None
        try:
            resample = f",fps=fps={out_rate}" if out_rate != Fraction(handoff["rate"]) else ""
            video = (f"[0:v]trim=start_frame={frames['skip']}:end_frame={frames['skip'] + frames['count']},"
                     f"setpts=PTS-STARTPTS{resample},format=yuv420p[v]")
            # The chunk files in a row, as one stream (their names never hold a "|").
            args = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{handoff['width']}x{handoff['height']}",
                    "-framerate", handoff["rate"], "-i", "concat:" + "|".join(frames["files"])]
            maps = ["-map", "[v]", "-c:v", cfg.video_codec, "-crf", str(cfg.crf), "-preset", cfg.preset]
            if handoff.get("audio"):
                samples = np.fromfile(handoff["audio"], np.float32).reshape(-1, handoff["channels"])
                sf.write(flac, samples, handoff["sample_rate"], format="FLAC", subtype="PCM_24")
                args += ["-i", str(flac)]
                maps += ["-map", "1:a", "-c:a", cfg.audio_codec, "-b:a", cfg.audio_bitrate]
            run_ffmpeg([*args, "-filter_complex", video, *maps, "-movflags", "+faststart", str(mp4)])
            if not resample:
                keep = {k: handoff[k] for k in ("frames", "width", "height", "rate")}
                keep["paths"] = [p for p in handoff["paths"] if p != handoff.get("audio")]
        finally:
            audio = [handoff["audio"]] if handoff.get("audio") else []
            remove_handoff({"handoff": {"paths": audio if keep else handoff["paths"]}})
        return bool(handoff.get("audio")), keep

    def _cut_from_source(self, item: Item, mp4: Path, flac: Path, src_rate: Fraction, out_rate: Fraction) -> None:
        cfg, probe = self.config, item["probe"]
        first, count = item["start_frame"], item["end_frame"] - item["start_frame"]
        rate = cfg.sample_rate or probe.get("audio_sample_rate")
        # The timing origin: the video's first frame (the analysis grid's frame 0).
        origin = probe.get("video_start_s", probe.get("start_time_s", 0.0))
        seek = max(0.0, float(first / src_rate) - _PREROLL_S)
        grid0 = math.floor(seek * src_rate)  # the frame-rate filter's first output frame
        # Frames are selected by count on the resampled grid, not by time: a time bound
        # goes through microsecond truncation and can lose a frame at the edge.
        video = (f"[0:v:0]fps=fps={src_rate}:start_time={origin + float(grid0 / src_rate)},"
                 f"trim=start_frame={first - grid0}:end_frame={first - grid0 + count},"
                 f"setpts=PTS-STARTPTS{self._resize()}"
                 f"{f',fps=fps={out_rate}' if out_rate != src_rate else ''},format=yuv420p[v]")
        graph, maps = [video], ["-map", "[v]", "-c:v", cfg.video_codec,
                                "-crf", str(cfg.crf), "-preset", cfg.preset]
        flac_args = []
        if probe.get("has_audio"):
            start_s, samples = origin + float(first / src_rate), round(count / src_rate * rate)
            graph.append(
                f"[0:a:0]atrim=start={start_s}:end={origin + float((first + count) / src_rate)},"
                f"asetpts=PTS-{start_s}/TB,aresample={rate}:first_pts=0,"  # silence where audio starts late
                f"apad=whole_len={samples},atrim=end_sample={samples},asplit=2[a1][a2]")
            maps += ["-map", "[a1]", "-c:a", cfg.audio_codec, "-b:a", cfg.audio_bitrate]
            flac_args = ["-map", "[a2]", "-c:a", "flac", str(flac)]
        # No -ss for clips near the start: with it, even "-ss 0", ffmpeg 6.0 zeroed the first
        # 448 AAC samples here. After a real seek the pre-roll absorbs the first decoded
        # audio frames (AAC frames overlap, so the first one after a seek is incomplete).
        seek_args = ["-ss", f"{seek:.6f}"] if seek > 0 else []
        run_ffmpeg([*seek_args, "-copyts", "-i", item["source"]["path"],
                    "-filter_complex", ";".join(graph), *maps, "-movflags", "+faststart",
                    str(mp4), *flac_args])

    def _resize(self) -> str:
        m = self.config.max_side
        if not m:
            return ""
        factor = f"min(1\\,{m}/max(iw\\,ih))"
        return f",scale=w=trunc({factor}*iw/2)*2:h=trunc({factor}*ih/2)*2"
