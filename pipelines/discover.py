"""Turn the command line's INPUT... into the list of files a curation run processes.

Inputs are files, directories (searched recursively for media extensions), globs, or
fsspec URIs (``s3://bucket/raw/`` or ``s3://bucket/raw/*.mp4`` where the filesystem
library is installed). Each file gets its path, size, version (mtime or ETag, for
people) and its content id (``pipelines/fingerprints.py``): a work unit is named by the
content of its sources, so a file that was only touched or copied again is still done,
and one whose bytes changed is new. Content ids remembered by the last run spare most of
the hashing; the workers hash what they fetch again (``curation/units.py``), where
identical content is found and recorded as ``duplicate``.
"""

from __future__ import annotations

import glob
from pathlib import Path

from curation.storage import is_uri
from pipelines.fingerprints import content_ids

MEDIA_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv",
                    ".wmv", ".3gp", ".m4a", ".wav", ".mp3", ".flac", ".ogg", ".aac"}


class InputError(ValueError):
    """An input argument that matches nothing: a misconfiguration, so it raises."""


def discover(inputs: list[str], remembered: dict[str, dict] | None = None) -> list[dict]:
    """Every input file once, sorted by path: ``{"path", "size", "version", "content"}``.
    ``remembered``: the content ids a previous run kept (``fingerprints.content_ids``);
    updated in place to what this run keeps."""
    found: dict[str, dict] = {}
    for spec in inputs:
        for entry in (_remote(spec) if is_uri(spec) else _local(spec.removeprefix("file://"))):
            found.setdefault(entry["path"], entry)
    files = [found[p] for p in sorted(found)]
    ids, keep = content_ids(files, remembered)
    if remembered is not None:
        remembered.clear()
        remembered.update(keep)
    for f in files:
        f["content"] = ids[f["path"]]
        f.pop("checksum", None)
    return files


def _local(spec: str) -> list[dict]:
    matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
    if not matches or not all(Path(m).exists() for m in matches):
        raise InputError(f"input {spec!r} matches no file or directory")
    paths: list[Path] = []
    for match in map(Path, matches):
        if match.is_dir():
            paths += [p for p in match.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS]
        else:
            paths.append(match)  # named explicitly: try it whatever its extension
    out = []
    for path in sorted({p.resolve() for p in paths}):
        stat = path.stat()
        out.append({"path": str(path), "size": stat.st_size, "version": str(stat.st_mtime_ns)})
    return out


def _remote(uri: str) -> list[dict]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    protocol = uri.split("://", 1)[0]
    if glob.has_magic(root):
        infos = [fs.info(p) for p in fs.glob(root)]
    elif fs.isdir(root):
        infos = list(fs.find(root, detail=True).values())
        infos = [i for i in infos if Path(i["name"]).suffix.lower() in MEDIA_EXTENSIONS]
    elif fs.exists(root):
        infos = [fs.info(root)]
    else:
        infos = []
    files = [i for i in infos if i.get("type") == "file"]
    if not files:
        raise InputError(f"input {uri!r} matches no object")
    return [{"path": f"{protocol}://{i['name'].lstrip('/')}" if protocol != "memory" else f"memory://{i['name']}",
             "size": int(i.get("size") or 0),
             "version": str(i.get("ETag") or i.get("etag") or i.get("mtime") or i.get("LastModified") or ""),
             # A checksum the store keeps of the bytes (S3's ETag, GCS's md5Hash): a content id.
             "checksum": i.get("ETag") or i.get("etag") or i.get("md5Hash") or i.get("crc32c")}
            for i in files]
