"""Image pairs named by an experiment config: the bridge from config sections to datasets."""

from __future__ import annotations

from dckd.config import BenchmarkConfig, ExperimentConfig, TrainDataConfig
from dckd.data.datasets import BenchmarkSet
from dckd.data.pairs import ImagePair, folder_pairs, sr_pairs
from dckd.storage import resolve_local


def pairs_for(section: TrainDataConfig | BenchmarkConfig, task: str, scale: int) -> list[ImagePair]:
    """SR: HR folder with LR read from ``lr_dir`` or generated; deblur/derain: input and target folders.

    ``limit`` keeps the first N pairs in name order (both pairers sort), so a scaled-down smoke run
    trains and scores on a fixed, reproducible subset.

    A folder given as ``s3://bucket/prefix`` is synced to the node cache first (once per node,
    see :func:`dckd.storage.sync_to_cache`), so the loaders below only ever see local files.
    """
    if task == "sr":
        assert section.hr_dir is not None  # enforced by ExperimentConfig
        lr_dir = resolve_local(section.lr_dir) if section.lr_dir is not None else None
        pairs = sr_pairs(resolve_local(section.hr_dir), scale, lr_dir=lr_dir)
    else:
        assert section.input_dir is not None and section.target_dir is not None
        pairs = folder_pairs(resolve_local(section.input_dir), resolve_local(section.target_dir))
    return pairs[: section.limit] if section.limit is not None else pairs


def train_pairs(cfg: ExperimentConfig) -> list[ImagePair]:
    return pairs_for(cfg.data.train, cfg.task, cfg.scale)


def benchmark_sets(cfg: ExperimentConfig, split: str = "val") -> list[tuple[str, BenchmarkSet]]:
    """The named benchmark sets of ``data.val`` or ``data.test``, loaded whole."""
    sets = getattr(cfg.data, split)
    return [(b.name, BenchmarkSet(pairs_for(b, cfg.task, cfg.scale), cfg.scale)) for b in sets]
