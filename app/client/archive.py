"""Unpacking a downloaded model archive and checking it against the job's artifact manifest."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from app.hashing import sha256_of

# The service archives the model folder under this name (`model/config.json`, ...).
ARCHIVE_ROOT = "model"


class DownloadError(Exception):
    """A model download that cannot be trusted or cannot be put in place."""


def unpack_verified(archive: Path, target: Path, manifest: dict[str, str]) -> Path:
    """Unpack `archive` into the new folder `target`; answer the model folder inside it.

    `manifest` maps each file's path inside the model folder to its sha256. Every unpacked
    file must be in it with that digest, and every file in it must have been unpacked.
    """
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            # The "data" filter refuses absolute paths, '..', device files and links that
            # point outside `target`, so a hostile archive cannot write elsewhere.
            tar.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DownloadError(f"the model archive could not be unpacked: {exc}") from exc
    model_dir = target / ARCHIVE_ROOT
    if not model_dir.is_dir() or model_dir.is_symlink():
        raise DownloadError(f"the model archive has no {ARCHIVE_ROOT}/ folder")
    entries = [path for path in sorted(target.rglob("*"))
               if path.is_symlink() or not path.is_dir()]
    unpacked = {path.relative_to(model_dir).as_posix(): path
                for path in entries if path.is_relative_to(model_dir)}
    problems = [f"{path.relative_to(target).as_posix()}: not under {ARCHIVE_ROOT}/ in the archive"
                for path in entries if not path.is_relative_to(model_dir)]
    for name, path in unpacked.items():
        expected = manifest.get(name)
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: not a regular file")
        elif expected is None:
            problems.append(f"{name}: not in the job's artifact manifest")
        elif sha256_of(path) != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    problems += [f"{name}: in the manifest but missing from the archive"
                 for name in sorted(manifest.keys() - unpacked.keys())]
    if problems:
        raise DownloadError("the downloaded model does not match the job's artifact manifest "
                            f"({len(problems)} problem(s)): " + "; ".join(problems))
    return model_dir
