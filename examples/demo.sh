#!/usr/bin/env bash
# The first run: install from this repo, start the service on the embedded defaults, and run
# its main job (the classic SST-2 recipe on MiniLM) from upload to predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: a looser requirement would pull a multi-GB CUDA build.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[demo]"
exec python3 examples/demo.py "$@"
