"""Reading the downloads: a local folder or an ``s3://`` prefix, listed the same way.

One interface, so the planners never care whether a download is on disk or in S3.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dckd import storage
from dckd.imageio import IMAGE_EXTENSIONS


class Source:
    """A source root: a local folder, or an ``s3://`` prefix listed from its manifest.

    An S3 source is synced to the node cache (:func:`dckd.storage.sync_to_cache`) only when a
    file is first needed, so a dataset that is already prepared costs one manifest GET.
    """

    def __init__(self, location: str, progress: bool = True) -> None:
        self.location = location.rstrip("/") if storage.is_remote(location) else location
        self.remote = storage.is_remote(location)
        self.progress = progress
        self._root: Path | None = None if self.remote else Path(location).expanduser()
        self._index: dict[str, tuple[dict[str, int], set[str]]] | None = None

    def _remote_index(self) -> dict[str, tuple[dict[str, int], set[str]]]:
        if self._index is None:
            index: dict[str, tuple[dict[str, int], set[str]]] = {"": ({}, set())}
            for entry in storage.read_manifest(self.location)["files"]:
                parts = entry["path"].split("/")
                for depth in range(len(parts) - 1):
                    parent, child = "/".join(parts[:depth]), "/".join(parts[: depth + 1])
                    index.setdefault(parent, ({}, set()))[1].add(parts[depth])
                    index.setdefault(child, ({}, set()))
                index.setdefault("/".join(parts[:-1]), ({}, set()))[0][parts[-1]] = int(entry["size"])
            self._index = index
        return self._index

    def listing(self, rel: str) -> tuple[dict[str, int], set[str]] | None:
        """(file name -> size, sub-folder names) directly in ``rel``, hidden names skipped; None if absent."""
        rel = rel.strip("/")
        if self.remote:
            found = self._remote_index().get(rel)
            if found is None:
                return None
            files = {n: s for n, s in found[0].items() if not n.startswith(".")}
            return files, {d for d in found[1] if not d.startswith(".")}
        assert self._root is not None
        folder = self._root / rel if rel else self._root
        if not folder.is_dir():
            return None
        files: dict[str, int] = {}
        dirs: set[str] = set()
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    dirs.add(e.name)
                elif e.is_file():
                    files[e.name] = e.stat().st_size
        return files, dirs

    def images(self, rel: str) -> dict[str, int]:
        """Image files directly in ``rel`` (name -> size)."""
        found = self.listing(rel)
        if found is None:
            return {}
        return {n: s for n, s in found[0].items() if Path(n).suffix.lower() in IMAGE_EXTENSIONS}

    def label(self, rel: str) -> str:
        return f"{str(self.location).rstrip('/')}/{rel}" if rel else str(self.location)

    def path(self, rel: str) -> Path:
        """The local file or folder for ``rel`` (an S3 source is synced to the cache first)."""
        if self._root is None:
            self._root = storage.sync_to_cache(self.location, progress=self.progress)
        return self._root / rel


def _find(sources: Sequence[Source], candidates: Sequence[str],
          need: Sequence[str] = ()) -> tuple[Source, str] | None:
    """The first candidate folder (holding the ``need`` sub-folders) in the first source that has one."""
    for src in sources:
        for rel in candidates:
            found = src.listing(rel)
            if found is not None and all(n in found[1] for n in need):
                return src, rel
    return None


def _looked(sources: Sequence[Source], candidates: Sequence[str]) -> str:
    where = ", ".join(s.label("") for s in sources)
    shown = ", ".join(candidates[:4]) + (", ..." if len(candidates) > 4 else "")
    return f"source folder {candidates[0]} not found in {where} (looked for {shown})"
