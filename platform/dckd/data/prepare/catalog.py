"""What each preparable dataset is, where its download is looked for, and the recipe constants.

Data, not code: a new dataset or a new name for its download folder is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RECIPE_VERSION = 1
DIV2K_CROP, DIV2K_STEP, DIV2K_MOD = 480, 240, 12

SET5 = ("baby", "bird", "butterfly", "head", "woman")
SET14 = ("baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers", "foreman", "lenna", "man",
         "monarch", "pepper", "ppt3", "zebra")
URBAN100 = tuple(f"img_{i:03d}" for i in range(1, 101))

Kind = Literal["div2k", "benchmark", "gopro", "paired"]


@dataclass(frozen=True)
class Spec:
    """One preparable dataset: CLI key, report title, output folder and where to look in a source."""

    key: str
    title: str
    folder: str
    kind: Kind
    candidates: tuple[str, ...]
    expected: int | None = None
    names: tuple[str, ...] = ()
    sub: str = ""  # paired kinds: output sub-folder holding input/ and target/


_BENCH_PREFIXES = ("", "benchmark/", "benchmarks/", "testsets/")


def _bench(key: str, title: str, aliases: tuple[str, ...], expected: int, names: tuple[str, ...] = ()) -> Spec:
    cands = tuple(p + a for p in _BENCH_PREFIXES for a in aliases)
    return Spec(key, title, f"benchmarks/{title}", "benchmark", cands, expected, names)


def _derain(key: str, title: str, expected: int) -> Spec:
    cands = (title, f"test/{title}", key, f"test/{key}")
    return Spec(key, title, f"derain_test/{title}", "paired", cands, expected)


SPECS: dict[str, Spec] = {s.key: s for s in (
    Spec("div2k", "DIV2K", "DIV2K", "div2k", ("DIV2K_train_HR", "DIV2K/DIV2K_train_HR"), 800,
         tuple(f"{i:04d}" for i in range(1, 801))),
    _bench("set5", "Set5", ("Set5", "set5"), 5, SET5),
    _bench("set14", "Set14", ("Set14", "set14"), 14, SET14),
    _bench("b100", "B100", ("B100", "BSD100", "BSDS100", "bsd100"), 100),
    _bench("urban100", "Urban100", ("Urban100", "urban100"), 100, URBAN100),
    _bench("manga109", "Manga109", ("Manga109", "manga109"), 109),
    # GoPro counts (2,103 train / 1,111 test pairs) are the published ones, unverified in the notes.
    Spec("gopro", "GoPro", "GoPro", "gopro", ("GOPRO_Large", "GoPro", "GOPRO", "gopro"), None),
    Spec("rain13k", "Rain13K", "Rain13K", "paired", ("Rain13K", "train/Rain13K", "Rain13k", "rain13k"), 13712,
         sub="train"),
    _derain("test100", "Test100", 100),
    _derain("rain100h", "Rain100H", 100),
    _derain("rain100l", "Rain100L", 100),
    _derain("test2800", "Test2800", 2800),
    _derain("test1200", "Test1200", 1200),
)}
DATASET_CHOICES = (*SPECS, "all", "photos")
GOPRO_EXPECTED = {"train": 2103, "test": 1111}
DIV2K_VALID = ("DIV2K_valid_HR", "DIV2K/DIV2K_valid_HR")
DIV2K_VALID_NAMES = tuple(f"{i:04d}" for i in range(801, 901))
