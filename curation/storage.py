"""Where curation output lives: a local directory or an fsspec URI (``s3://bucket/curated``).

Workers write their units' shards and tables through a ``Store``, so ``--out`` is the
only thing every node must reach; nothing else is shared between them. Every write is
atomic: a local file is written under a temporary name and renamed, an object store
publishes an object only once its upload completes, so a reader (or a resumed run)
never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def is_uri(path: str | os.PathLike) -> bool:
    text = str(path)
    return "://" in text and not text.startswith("file://")


class Store:
    """Files under one root, addressed by relative POSIX paths (``shards/x.tar``)."""

    def __init__(self, root: str | os.PathLike):
        import fsspec

        root = str(root).removeprefix("file://")
        if not is_uri(root):
            root = str(Path(root).resolve())
        self.uri = root.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.local = not is_uri(root)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __reduce__(self):  # ship the URI, not a live filesystem, to Ray workers
        return Store, (self.uri,)

    def path(self, rel: str) -> str:
        """The full path (local) or URI (remote) of ``rel``."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._abs(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._abs(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            target = Path(self._abs(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(self._abs(rel), data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def upload(self, local: str | os.PathLike, rel: str) -> None:
        """Publish a finished local file as ``rel`` (moved when the store is local)."""
        if self.local:
            target = Path(self._abs(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.move(str(local), tmp)
            os.replace(tmp, target)
        else:
            self.fs.put_file(str(local), self._abs(rel))

    def list(self, prefix: str) -> list[str]:
        """Names of the files directly under ``prefix`` (a folder); [] when it does not exist."""
        try:
            entries = self.fs.ls(self._abs(prefix), detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file")

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._abs(rel))

    def delete_folder(self, rel: str) -> None:
        """Remove an (empty) folder; object stores have none to remove."""
        if self.local:
            with contextlib.suppress(OSError):
                Path(self._abs(rel)).rmdir()

    def download(self, rel: str, local: str | os.PathLike) -> None:
        self.fs.get_file(self._abs(rel), str(local))

    def local_dir(self) -> Path | None:
        return Path(self.root) if self.local else None
