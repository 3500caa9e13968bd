"""Turn the command line's INPUT... into the list of sources a curation run processes.

Inputs are files, directories (searched recursively for media extensions), globs, or
fsspec URIs (``s3://bucket/raw/*.mp4`` where the filesystem library is installed).
Remote files are copied into ``<out>/.work/inputs`` first because ffmpeg and the
decoders read local paths. Identical content is processed once: every other copy is
recorded as a reject with reason ``duplicate``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from curation.probe import content_id
from curation.stage import Item, reject

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv",
                    ".wmv", ".3gp", ".m4a", ".wav", ".mp3", ".flac", ".ogg", ".aac"}


@dataclass
class Discovered:
    sources: list[Item] = field(default_factory=list)  # unique content, sorted by path
    duplicates: list[Item] = field(default_factory=list)  # rejects, reason "duplicate"


class InputError(ValueError):
    """An input argument that matches nothing: a misconfiguration, so it raises."""


def expand(inputs: list[str], cache_dir: str | Path) -> list[Path]:
    paths: list[Path] = []
    for spec in inputs:
        if "://" in spec and not spec.startswith("file://"):
            paths += _fetch_remote(spec, Path(cache_dir))
            continue
        spec = spec.removeprefix("file://")
        matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(f"input {spec!r} matches no file or directory")
        for match in map(Path, matches):
            if match.is_dir():
                paths += sorted(p for p in match.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            else:
                paths.append(match)  # named explicitly: try it whatever its extension
    return sorted({p.resolve() for p in paths})


def _fetch_remote(uri: str, cache_dir: Path) -> list[Path]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    remote = sorted(fs.glob(root)) if glob.has_magic(root) else [root]
    if not remote:
        raise InputError(f"input {uri!r} matches no object")
    local = []
    for rpath in remote:
        if fs.isdir(rpath):
            local += _fetch_remote(f"{uri.split('://')[0]}://{rpath.rstrip('/')}/**", cache_dir)
            continue
        target = cache_dir / rpath.lstrip("/")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get(rpath, str(target))
        local.append(target)
    return local


def discover(inputs: list[str], cache_dir: str | Path, threads: int = 4) -> Discovered:
    """Expand inputs, hash each file's content, keep the first path of each content."""
    paths = expand(inputs, cache_dir)
    log.info("hashing %d input files", len(paths))

    def identify(path: Path) -> tuple[Path, str | None, str]:
        try:
            return path, content_id(path), ""
        except OSError as exc:
            return path, None, str(exc)

    with ThreadPoolExecutor(threads) as pool:
        identified = list(pool.map(identify, paths))
    found = Discovered()
    first_path: dict[str, Path] = {}
    for path, cid, error in identified:
        item = {"source": {"path": str(path), "id": cid}}
        if cid is None:  # the probe stage turns this into a proper "unreadable" reject
            item["source"]["id"] = "unreadable-" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
            item["source"]["error"] = error
            found.sources.append(item)
        elif cid in first_path:
            found.duplicates.append(reject(item, "discover", "duplicate", f"same content as {first_path[cid]}"))
        else:
            first_path[cid] = path
            found.sources.append(item)
    return found
