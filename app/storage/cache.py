"""A machine's cache of files fetched from the object store, keyed by their sha256.

Bounded in bytes, least recently used first out. Several processes of one machine share it
(the API's threads, a worker's trainer and dry-run processes): a file appears under its
final name only once complete and checked (written aside, then renamed), and a reader that
holds a file open keeps its bytes even when another process evicts it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from app.hashing import sha256_of

logger = logging.getLogger("finetune.storage")


class FileCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def get(self, sha256: str) -> Path | None:
        path = self.folder / sha256
        try:
            os.utime(path)  # the last use is the modification time
        except FileNotFoundError:
            return None
        return path

    def fill(self, sha256: str, write: Callable[[Path], None]) -> Path:
        """Write the file with `write(path)`, check its digest, keep it; a bad copy is refused."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{sha256}.{uuid.uuid4().hex}.partial"
        try:
            write(partial)
            if sha256_of(partial) != sha256:
                raise OSError(f"the copy of {sha256} fetched from the store does not match "
                              "its sha256")
            return self.adopt(sha256, partial)
        finally:
            partial.unlink(missing_ok=True)

    def adopt(self, sha256: str, file: Path) -> Path:
        """Move a file whose digest is known into the cache."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / sha256
        os.replace(file, path)
        self._evict(keep=path)
        return path

    def _evict(self, keep: Path) -> None:
        entries = []
        for entry in self.folder.iterdir():
            try:
                if not entry.name.startswith("."):
                    entries.append((entry.stat().st_mtime, entry.stat().st_size, entry))
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                return
            if entry != keep:
                entry.unlink(missing_ok=True)
                total -= size
                logger.info("cache: evicted %s (%s bytes)", entry.name, size)
