"""Probe stage: identify a source file and read what it contains, without decoding it.

Sets ``source.id`` (content hash, so a renamed or re-uploaded file keeps its id and
duplicates group together; kept when the caller already hashed the file while fetching
it), ``source.size_bytes`` and the ``probe`` dict. One demux pass over the video packets
(cheap: no decoding) finds what the container header cannot be trusted for: the real
frame count, variable frame rate, files that end before their header says they do, and
the time of the first frame shown (``video_start_s``), the origin every later stage
counts from: a container's start time is the earliest of its streams, and an audio
track that starts before the picture would otherwise shift every cut and sync offset.

Reject reasons: ``zero_bytes``, ``unreadable`` (cannot be opened, or the video cannot
be decoded), ``not_media`` (no container format recognised), ``truncated`` (a media
container that ends early), ``no_video`` (audio-only, or only cover art).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, ClassVar

import av
import numpy as np

from curation.ffmpeg import FFmpegError, ffprobe, stable_message
from curation.stage import Item, Resources, Stage, reject

# Leading bytes of the containers footage arrives in; a file that starts like one but
# that ffprobe cannot open is a broken media file, not a foreign file.
_SIGNATURES = (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"\x00\x00\x01\xba", b"fLaC", b"ID3")


def content_id(path: str | Path, chunk: int = 1 << 20) -> str:
    """Deterministic source id: the first 16 hex digits of the file's sha256."""
    with open(path, "rb") as f:
        return stream_id(f, chunk)


def stream_id(f: BinaryIO, chunk: int = 1 << 20) -> str:
    """``content_id`` of what an open binary stream holds from here on."""
    digest = hashlib.sha256()
    while block := f.read(chunk):
        digest.update(block)
    return digest.hexdigest()[:16]


def _looks_like_media(head: bytes) -> bool:
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):  # ISO BMFF / QuickTime
        return True
    return any(head.startswith(sig) for sig in _SIGNATURES)


@dataclass
class ProbeConfig:
    # Packet intervals whose spread (max - min) exceeds this fraction of the median
    # interval mark the file as variable frame rate.
    vfr_spread: float = 0.5
    # A file whose packets end this much earlier than its header's duration is truncated.
    truncation_tolerance_s: float = 0.25


class ProbeStage(Stage):
    name = "probe"
    resources: ClassVar[Resources] = Resources(cpus=0.5)

    def __init__(self, config: ProbeConfig | None = None):
        super().__init__(config or ProbeConfig())

    def process(self, item: Item) -> list[Item]:
        path = Path(item["source"]["path"])
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(16)
            source_id = item["source"].get("id") or content_id(path)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            return [reject(item, self.name, "unreadable", stable_message(f"cannot read {path}: {exc}"))]
        item = {**item, "source": {**item["source"], "id": source_id, "size_bytes": size}}
        if size == 0:
            return [reject(item, self.name, "zero_bytes", f"{path} is empty")]
        try:
            info = ffprobe(path)
        except FFmpegError as exc:
            if _looks_like_media(head):
                return [reject(item, self.name, "truncated", f"a media container that cannot be opened: {exc}")]
            return [reject(item, self.name, "not_media", str(exc))]
        streams = info.get("streams", [])
        video = next((s for s in streams if s.get("codec_type") == "video"
                      and not s.get("disposition", {}).get("attached_pic")), None)
        audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
        if video is None:
            kinds = sorted({s.get("codec_type", "?") for s in streams})
            return [reject(item, self.name, "no_video", f"streams: {kinds or 'none'}")]
        try:
            scan = self._scan_video(path, int(video["index"]))
        except av.FFmpegError as exc:
            return [reject(item, self.name, "unreadable", stable_message(f"demux/decode failed: {exc}"))]
        if not scan["decodable"]:
            return [reject(item, self.name, "unreadable", "no video frame could be decoded")]
        declared = _float(video.get("duration")) or _float(info.get("format", {}).get("duration"))
        if declared and scan["end_s"] < declared - self.config.truncation_tolerance_s:
            return [reject(item, self.name, "truncated",
                           f"video packets end at {scan['end_s']:.2f}s, header says {declared:.2f}s")]
        item["probe"] = self._describe(info, video, audio, scan, declared)
        return [item]

    def _scan_video(self, path: Path, index: int) -> dict:
        """Demux every packet of the video stream; decode only until the first frame."""
        with av.open(str(path)) as container:
            stream = next(s for s in container.streams if s.index == index)
            tb = float(stream.time_base)
            pts, end, first = [], 0.0, []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                pts.append(packet.pts)
                end = max(end, (packet.pts + (packet.duration or 0)) * tb)
                if not first:
                    first = stream.codec_context.decode(packet)
            if not first and pts:  # frames held back by the decoder (B-frame delay)
                first = stream.codec_context.decode(None)
            start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        times = np.sort(np.asarray(pts, dtype=np.float64)) * tb
        shown = first[0].pts if first and first[0].pts is not None else None
        return {"n_frames": len(pts), "end_s": end - start, "intervals": np.diff(times),
                "decodable": bool(first), "first_frame_s": float(shown * tb) if shown is not None else start}

    def _describe(self, info: dict, video: dict, audio: dict | None, scan: dict, declared: float | None) -> dict:
        fps = Fraction(video.get("avg_frame_rate") or "0/1") or Fraction(video.get("r_frame_rate") or "0/1")
        intervals = scan["intervals"]
        vfr = False
        if len(intervals) > 2:
            median = float(np.median(intervals))
            vfr = median > 0 and float(intervals.max() - intervals.min()) > self.config.vfr_spread * median
        if (vfr or not fps) and scan["end_s"] > 0:  # a VFR file's nominal rate is its mean rate
            fps = Fraction(scan["n_frames"] / scan["end_s"]).limit_denominator(1001)
        rotation = _rotation(video)
        width, height = int(video["width"]), int(video["height"])
        shown_w, shown_h = (height, width) if rotation in (90, 270) else (width, height)
        return {
            "duration_s": declared or scan["end_s"],
            # The timing origin: the first video frame's time on the file's own timeline.
            # Analysis frame i, clip frame start_frame + i and audio sample n of every clip
            # are at video_start_s + i / fps (resp. + n / rate).
            "video_start_s": scan["first_frame_s"],
            "start_time_s": _float(info.get("format", {}).get("start_time")) or 0.0,  # earliest stream
            "audio_start_s": _float(audio.get("start_time")) if audio else None,
            "fps": float(fps),
            "fps_rational": f"{fps.numerator}/{fps.denominator}",
            "vfr": vfr,
            "width": width,
            "height": height,
            "rotation": rotation,
            "display_width": shown_w,
            "display_height": shown_h,
            "video_codec": video.get("codec_name"),
            "n_frames": scan["n_frames"],
            "has_audio": audio is not None,
            "audio_sample_rate": int(audio["sample_rate"]) if audio else None,
            "audio_channels": int(audio["channels"]) if audio else None,
            "audio_codec": audio.get("codec_name") if audio else None,
            "audio_channel_layout": audio.get("channel_layout") if audio else None,
        }


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "N/A") else None
    except ValueError:
        return None


def _rotation(video: dict) -> int:
    """Display rotation in degrees (0/90/180/270) from the display matrix or the legacy tag."""
    for side in video.get("side_data_list", []):
        if "rotation" in side:
            return int(round(float(side["rotation"]) / 90)) * 90 % 360
    tag = video.get("tags", {}).get("rotate")
    return int(round(float(tag) / 90)) * 90 % 360 if tag else 0
