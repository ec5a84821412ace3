"""What a resumed run may change in its config, and what it may not without saying so.

A checkpoint carries the config it was trained with (:meth:`ExperimentConfig.stored`). Resuming
with another config continues a different experiment from the same weights, so
:func:`trajectory_changes` lists every field that alters what the following steps compute;
``dckd train`` refuses those unless ``--allow-config-change`` is given (and then records them).

Fields that never change what a training step computes, and so may change freely:
"""

from __future__ import annotations

from typing import Any

FREE_FIELDS: dict[str, str] = {
    "name": "the run's name",
    "output_dir": "where the run directory is",
    "train.iterations": "how long the run is (not with the cosine schedule, whose lr depends on it)",
    "train.val_every": "validation frequency",
    "train.log_every": "logging frequency",
    "train.ckpt_every": "checkpoint frequency",
    "train.keep_checkpoints": "how many checkpoints are kept",
    "train.on_nonfinite": "what a NaN/Inf loss does",
    "train.total_batch": "documentation only",
    "data.val": "validation sets (evaluation only)",
    "data.test": "test sets (evaluation only)",
    "eval": "metric protocol (evaluation only)",
    "tracking": "MLflow settings (tracking URI, experiment, registry, samples)",
    "ray.address": "which cluster",
    "ray.storage_path": "where Ray keeps checkpoints",
    "ray.max_failures": "worker-group restarts",
    "ray.cpus_per_worker": "resources per worker",
    "ray.gpus_per_worker": "resources per worker",
    "data.train.cache_in_memory": "the same images, read once",
    "data.train.num_workers": "loader processes (the samples are functions of the seed)",
    "data.train.hr_dir": "where the training images are (a dataset moved to another disk or machine; "
    "dckd cannot tell a moved folder from another dataset, so the resume message names the change)",
    "data.train.lr_dir": "as data.train.hr_dir",
    "data.train.input_dir": "as data.train.hr_dir",
    "data.train.target_dir": "as data.train.hr_dir",
}
"""Field (or section) -> why it is free. Listed in the README as well."""

ROUNDING_FIELDS: dict[str, str] = {
    "train.device": "another device computes the same steps with other float rounding",
    "train.threads": "another thread count may reduce in another order (float rounding)",
    "train.frozen_chunk_rows": "frozen passes in other chunks (float rounding)",
    "train.precision": "bf16 network passes round to 8 mantissa bits (same objective, another trajectory)",
    "train.channels_last": "another memory layout picks other kernels (float rounding)",
    "train.compile": "compiled kernels fuse and reorder operations (float rounding)",
}
"""Fields that change how, not what: free as well, but results can differ at float rounding."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def _free(path: str, saved: dict[str, Any]) -> bool:
    if path == "train.iterations" and (saved.get("schedule") or {}).get("name") == "cosine":
        return False
    return any(path == f or path.startswith(f + ".") for f in (*FREE_FIELDS, *ROUNDING_FIELDS))


def _unknown_to(flat: dict[str, Any], key: str) -> bool:
    """Whether a config of another dckd version simply lacks ``key`` (a field added or removed since),
    rather than holding a leaf (e.g. a disabled term's ``None``) where ``key`` would be."""
    parts = key.split(".")
    return key not in flat and not any(".".join(parts[:i]) in flat for i in range(1, len(parts)))


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every leaf that differs between two stored configs: (dotted path, saved value, current value).

    Fields only one side knows (the checkpoint was written by another dckd version) are not
    changes: a new field's default keeps what the older version did.
    """
    a, b = _flatten(saved), _flatten(current)
    out = []
    for k in sorted(set(a) | set(b)):
        if _unknown_to(a, k) or _unknown_to(b, k):
            continue
        if a.get(k) != b.get(k):
            out.append((k, a.get(k), b.get(k)))
    return out


def trajectory_changes(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list, list]:
    """(changes that alter the training from here on, free changes), each as from :func:`config_changes`."""
    changes = config_changes(saved, current)
    return ([c for c in changes if not _free(c[0], saved)], [c for c in changes if _free(c[0], saved)])


def describe(changes: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    """``seed 3 -> 4, optim.lr 0.001 -> 0.002`` (the first ``limit``, then a count)."""
    text = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes[:limit])
    return text + (f" and {len(changes) - limit} more" if len(changes) > limit else "")
