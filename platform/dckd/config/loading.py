"""Reading config files: YAML (safe loader only), ``extends:`` chains, ``--set`` overrides, roots.

``load_model_file`` is the one way a YAML file becomes a pydantic model (experiments, tables
and sweeps all use it), so every file error reads the same: ``file: dotted.field: message``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dckd.config.experiment import ExperimentConfig
from dckd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_errors(source: str, err: ValidationError) -> str:
    """One line per problem: ``source: dotted.field: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        if not loc and all(_names_a_field(line) for line in msg.splitlines()):
            # A check across sections (e.g. a term's against the scale) names its field itself.
            lines += [f"{source}: {line}" for line in msg.splitlines()]
            continue
        lines.append(f"{source}: {loc or '(top level)'}: {msg}{shown}")
    return "\n".join(lines)


def _names_a_field(line: str) -> bool:
    head = line.split(": ", 1)[0]
    return ": " in line and "." in head and " " not in head


def validate_model(model: type[M], data: Any, source: str) -> M:
    """``model.model_validate(data)``, its errors as one ConfigError in the project's wording."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None


def read_yaml(path: str | Path, kind: str = "config") -> Any:
    """A YAML file's data (``yaml.safe_load``: no tags run code); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_model_file(path: str | Path, model: type[M], kind: str = "config") -> M:
    """A YAML file validated as ``model``: the one loader of table, sweep and experiment files."""
    data = read_yaml(path, kind)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return validate_model(model, data, str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value``: the value is read as YAML, so ``3``, ``true``, ``[1, 2]`` and ``null`` work."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {text!r}: empty component in the key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict; list items are addressed by index (``data.val.0.name``)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = _child(node, part, text, parts[: i + 1])
            if nxt is None:
                nxt = {}
                _assign(node, part, nxt, text)
            node = nxt
        _assign(node, parts[-1], value, text)
    return data


def _child(node: Any, part: str, text: str, path: list[str]) -> Any:
    if isinstance(node, list):
        idx = _index(part, node, text)
        return node[idx]
    if isinstance(node, dict):
        return node.get(part)
    raise ConfigError(f"--set {text!r}: {'.'.join(path[:-1])} is not a section")


def _assign(node: Any, part: str, value: Any, text: str) -> None:
    if isinstance(node, list):
        node[_index(part, node, text)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"--set {text!r}: cannot set {part!r} inside a value")


def _index(part: str, node: list, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML (``yaml.safe_load`` only), apply ``--set`` overrides, validate everything."""
    source = str(path) if path is not None else "<config>"
    if data is None:
        if path is None:
            raise ConfigError("no configuration given")
        data = read_config_tree(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    return validate_model(ExperimentConfig, substitute_roots(data), source)


# --------------------------------------------------------------------------- files and roots
ROOT_VARIABLES = {"data": ("DCKD_DATA_ROOT", "data"), "weights": ("DCKD_WEIGHTS_ROOT", "weights")}


def read_config_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``extends:`` chain merged in (the file's own values win).

    ``extends`` names a file relative to this one (or a list of them, merged left to right);
    mappings merge key by key, anything else (lists included) is replaced.
    """
    source = str(path)
    if path.resolve() in _seen and path.is_file():
        raise ConfigError(f"{source}: extends itself (via {' -> '.join(map(str, _seen))})")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    parents = data.pop("extends", None)
    if parents is None:
        return data
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        if not isinstance(parent, str):
            raise ConfigError(f"{source}: extends: expected a file name, got {parent!r}")
        merged = deep_merge(merged, read_config_tree(path.parent / parent, (*_seen, path.resolve())))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def root_path(name: str) -> str:
    """Where ``${data}`` / ``${weights}`` point: $DCKD_DATA_ROOT / $DCKD_WEIGHTS_ROOT, else ./data, ./weights."""
    env, default = ROOT_VARIABLES[name]
    return os.environ.get(env) or default


def substitute_roots(value: Any) -> Any:
    """Replace ``${data}`` and ``${weights}`` in every string (paths of datasets and checkpoints)."""
    if isinstance(value, str):
        for name in ROOT_VARIABLES:
            token = "${" + name + "}"
            if token in value:
                value = value.replace(token, root_path(name).rstrip("/"))
        return value
    if isinstance(value, dict):
        return {k: substitute_roots(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_roots(v) for v in value]
    return value
