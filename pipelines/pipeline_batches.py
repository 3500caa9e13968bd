"""Footage batches: the partitions of a pipeline's clip shards and latent shards.

Each sub-folder of the pipeline's ``footage`` is a batch, named by the folder; for an fsspec URI
(``s3://bucket/raw/``) each prefix under it. Media files lying at the top of ``footage`` beside
batch folders are one more batch, ``TOP``; footage without sub-folders is that one batch, the
whole of it (as before batches were partitions). A batch is curated to an output folder of its
own (curation keeps exactly the curation of its inputs) and encoded to a latents folder of its
own; training reads the latents of every materialised batch (``data.shards=a,b,...``).

The footage's content ids are remembered per batch under the store (``footage_ids/``), so a
batch's data version costs a ``stat`` per file, not a hash (``pipelines/fingerprints.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from curation.storage import is_uri
from pipelines.discover import MEDIA_EXTENSIONS

TOP = "(top)"  # the media files at the top of the footage folder (all of it, without sub-folders)


def footage_batches(footage: str | Path) -> dict[str, list[str]]:
    """batch name -> its curation inputs (a folder or prefix, or ``TOP``'s files), by name."""
    if is_uri(str(footage)):
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(footage))
        entries = fs.ls(root, detail=True) if fs.isdir(root) else []
        folders = {_name(e["name"]): fs.unstrip_protocol(e["name"]) for e in entries if e["type"] == "directory"}
        files = [fs.unstrip_protocol(e["name"]) for e in entries if e["type"] == "file" and _media(e["name"])]
    else:
        folder = Path(footage)
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        folders = {p.name: str(p) for p in entries if p.is_dir()}
        files = [str(p) for p in entries if p.is_file() and _media(p.name)]
    batches = {name: [where] for name, where in sorted(folders.items()) if not name.startswith(".")}
    if not batches:
        return {TOP: [str(footage)]}
    if files:
        batches[TOP] = sorted(files)
    return batches


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _media(name: str) -> bool:
    return Path(name).suffix.lower() in MEDIA_EXTENSIONS


def folder_name(batch: str) -> str:
    """The batch's folder under a stage's output: its name, with what a path list or a shell
    would split on replaced (training's ``data.shards`` separates directories by commas)."""
    return re.sub(r"[^\w().@+=-]", "_", batch)


def batch_footage(store: Path, batch: str, inputs: list[str]) -> dict:
    """The footage of one batch as curation's upstream: its inputs and their digest (the files'
    content ids, remembered under ``store``)."""
    from pipelines.discover import discover
    from pipelines.lineage import footage_digest

    book = store / "footage_ids" / f"{folder_name(batch)}.json"
    remembered = json.loads(book.read_text()) if book.exists() else {}
    digest = footage_digest(discover(inputs, remembered))
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(json.dumps(remembered))
    return {"inputs": inputs, "digest": digest}
