"""Job spec files (JSON or YAML) and the command-line overrides merged into them.

Only the shape is handled here; the service validates the content and answers 422 with the
offending field, so the client never duplicates the spec's rules.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

Spec = dict[str, Any]


class SpecFileError(Exception):
    """A spec file or an override that cannot be read; the message says what to fix."""


def load_spec(path: Path) -> Spec:
    """The mapping in a .json, .yaml or .yml file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(f"spec file not found: {path}") from None
    except IsADirectoryError:
        raise SpecFileError(f"spec file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecFileError(f"cannot read spec file {path}: {exc}") from None
    spec = _parse_json(path, text) if path.suffix.lower() == ".json" else _parse_yaml(path, text)
    if not isinstance(spec, dict):
        raise SpecFileError(f"spec file {path} must hold a mapping of fields (task, model, "
                            f"dataset, ...) at the top level, not {_kind(spec)}")
    return spec


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecFileError(f"spec file {path} is not valid JSON: {exc.msg} "
                            f"(line {exc.lineno}, column {exc.colno})") from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecFileError(f"spec file {path} is not valid YAML: {problem}{where}") from None


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Split `dotted.path=value` into the path's keys and the value.

    The value is JSON when it parses as JSON (numbers, booleans, null, lists, objects, quoted
    strings) and the plain string otherwise, so `dataset.train=ds_1` needs no quotes.
    """
    path, equals, raw = text.partition("=")
    keys = path.strip().split(".")
    if not equals or any(not key for key in keys):
        raise SpecFileError(f"--set expects dotted.path=value, for example "
                            f"hyperparameters.learning_rate=3e-5; got {text!r}")
    return keys, _parse_value(raw)


def _parse_value(raw: str) -> Any:
    try:
        # NaN and Infinity are not JSON; Python would accept them and the API would not.
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        return raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def set_path(spec: Spec, keys: list[str], value: Any) -> None:
    """Set `spec[k1][k2]...[kn] = value`, creating the mappings on the way."""
    node = spec
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[:depth + 1])
            raise SpecFileError(f"cannot set {'.'.join(keys)}: {where} is {_kind(child)}, "
                                "not a mapping")
        node = child
    node[keys[-1]] = value


def apply_overrides(spec: Spec, *, model: str | None = None, epochs: float | None = None,
                    name: str | None = None, assignments: list[str] | tuple[str, ...] = ()) -> Spec:
    """A copy of `spec` with the named options, then each `--set` in order (later wins)."""
    merged = copy.deepcopy(spec)
    if model is not None:
        merged["model"] = model
    if epochs is not None:
        set_path(merged, ["hyperparameters", "epochs"], epochs)
    if name is not None:
        merged["name"] = name
    for assignment in assignments:
        set_path(merged, *parse_assignment(assignment))
    return merged


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value!r})"
