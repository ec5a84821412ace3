"""Image pairs named by an experiment config: the bridge from config sections to datasets."""

from __future__ import annotations

from dckd.config import BenchmarkConfig, ExperimentConfig, TrainDataConfig
from dckd.data.datasets import BenchmarkSet
from dckd.data.pairs import ImagePair, folder_pairs, sr_pairs


def pairs_for(section: TrainDataConfig | BenchmarkConfig, task: str, scale: int) -> list[ImagePair]:
    """SR: HR folder with LR read from ``lr_dir`` or generated; deblur/derain: input and target folders."""
    if task == "sr":
        assert section.hr_dir is not None  # enforced by ExperimentConfig
        return sr_pairs(section.hr_dir, scale, lr_dir=section.lr_dir)
    assert section.input_dir is not None and section.target_dir is not None
    return folder_pairs(section.input_dir, section.target_dir)


def train_pairs(cfg: ExperimentConfig) -> list[ImagePair]:
    return pairs_for(cfg.data.train, cfg.task, cfg.scale)


def benchmark_sets(cfg: ExperimentConfig, split: str = "val") -> list[tuple[str, BenchmarkSet]]:
    """The named benchmark sets of ``data.val`` or ``data.test``, loaded whole."""
    sets = getattr(cfg.data, split)
    return [(b.name, BenchmarkSet(pairs_for(b, cfg.task, cfg.scale), cfg.scale)) for b in sets]
