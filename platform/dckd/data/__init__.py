"""Data: pairing files on disk, MATLAB bicubic LR generation, training and benchmark datasets."""

from dckd.data.datasets import BenchmarkSet, PatchPlan, TrainPatches, derive_seed
from dckd.data.matlab_resize import bicubic_lr, imresize, modcrop
from dckd.data.pairs import ImagePair, folder_pairs, load_pair, sr_pairs

__all__ = [
    "BenchmarkSet",
    "ImagePair",
    "PatchPlan",
    "TrainPatches",
    "bicubic_lr",
    "derive_seed",
    "folder_pairs",
    "imresize",
    "load_pair",
    "modcrop",
    "sr_pairs",
]
