"""``dckd data prepare``: the official downloads turned into the folder layout the experiment configs name.

Layout under the output root (``${data}`` in configs, i.e. ``$DCKD_DATA_ROOT`` or ``./data``)::

    DIV2K/train_HR_sub/0001_s001.png ...            BasicSR sub-images of DIV2K_train_HR
    DIV2K/train_LR_bicubic/X{s}_sub/0001_s001.png   the LR sub-image at the same place
    DIV2K/valid_HR/0801.png, valid_LR_bicubic/X{s}/0801x{s}.png   (when the source has them)
    benchmarks/{Set5,Set14,B100,Urban100,Manga109}/HR/<name>.png and LR_bicubic/X{s}/<name>x{s}.png
    GoPro/{train,test}/{input,target}/
    Rain13K/train/{input,target}/
    derain_test/{Test100,Rain100H,Rain100L,Test2800,Test1200}/{input,target}/

Every dataset folder gets ``manifest.json`` in :mod:`dckd.storage`'s format (path, size, sha256
of each file) plus a ``prepared`` record (recipe, options, a digest of the source files). A
dataset whose record matches and whose files are all there is skipped, so re-running is cheap;
anything else is rebuilt in a temporary sibling folder and renamed into place, so an interrupted
run never leaves a half-prepared dataset that looks whole.

Recipes (see ../shared/notes/datasets.md):

* DIV2K: each HR image is mod-cropped to a multiple of 12 (and of every scale; a no-op for the
  official DIV2K sizes, it keeps HR and LR grids aligned whatever the input), LR is MATLAB
  bicubic of that image (:func:`dckd.data.matlab_resize.bicubic_lr`, not the official LR files,
  which are claimed but unverified to be the same), then BasicSR ``extract_subimages``: crop 480,
  step 240, thresh_size 0 on HR and crop 480/s, step 240/s on LR, names ``<name>_s###.png``
  counted from 1 row by row, PNG compression level 3.
* SR benchmarks: layout A of the notes (EDSR ``benchmark.tar``): HR kept whole, LR per scale =
  bicubic of HR mod-cropped to the scale; evaluation crops HR top-left to scale x LR.
* GoPro, Rain13K and the deraining test sets: whole images copied byte for byte (GoPro's
  per-sequence ``blur``/``sharp`` folders are flattened to ``<sequence>_<frame>``); training
  patches are cut at random by :class:`dckd.data.TrainPatches`.

``photos`` writes a tiny stand-in for all of the above from scikit-image's colour photographs
(see :func:`photo_plan`), for tests and the CPU demo.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from dckd import storage
from dckd.data.matlab_resize import bicubic_lr, modcrop
from dckd.errors import ConfigError, DataError, DckdError, StorageError
from dckd.imageio import IMAGE_EXTENSIONS, read_image

RECIPE_VERSION = 1
DIV2K_CROP, DIV2K_STEP, DIV2K_MOD = 480, 240, 12
PNG_COMPRESSION = 3  # BasicSR extract_subimages writes cv2 PNG compression 3

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


# --------------------------------------------------------------------------- sources
class Source:
    """A source root: a local folder, or an ``s3://`` prefix listed from its manifest.

    An S3 source is synced to the node cache (:func:`dckd.storage.sync_to_cache`) only when a
    file is first needed, so a dataset that is already prepared costs one manifest GET.
    """

    def __init__(self, location: str, progress: bool = True) -> None:
        self.location = location.rstrip("/") if storage.is_remote(location) else location
        self.remote = storage.is_remote(location)
        self.progress = progress
        self._root: Path | None = None if self.remote else Path(location).expanduser()
        self._index: dict[str, tuple[dict[str, int], set[str]]] | None = None

    def _remote_index(self) -> dict[str, tuple[dict[str, int], set[str]]]:
        if self._index is None:
            index: dict[str, tuple[dict[str, int], set[str]]] = {"": ({}, set())}
            for entry in storage.read_manifest(self.location)["files"]:
                parts = entry["path"].split("/")
                for depth in range(len(parts) - 1):
                    parent, child = "/".join(parts[:depth]), "/".join(parts[: depth + 1])
                    index.setdefault(parent, ({}, set()))[1].add(parts[depth])
                    index.setdefault(child, ({}, set()))
                index.setdefault("/".join(parts[:-1]), ({}, set()))[0][parts[-1]] = int(entry["size"])
            self._index = index
        return self._index

    def listing(self, rel: str) -> tuple[dict[str, int], set[str]] | None:
        """(file name -> size, sub-folder names) directly in ``rel``, hidden names skipped; None if absent."""
        rel = rel.strip("/")
        if self.remote:
            found = self._remote_index().get(rel)
            if found is None:
                return None
            files = {n: s for n, s in found[0].items() if not n.startswith(".")}
            return files, {d for d in found[1] if not d.startswith(".")}
        assert self._root is not None
        folder = self._root / rel if rel else self._root
        if not folder.is_dir():
            return None
        files: dict[str, int] = {}
        dirs: set[str] = set()
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    dirs.add(e.name)
                elif e.is_file():
                    files[e.name] = e.stat().st_size
        return files, dirs

    def images(self, rel: str) -> dict[str, int]:
        """Image files directly in ``rel`` (name -> size)."""
        found = self.listing(rel)
        if found is None:
            return {}
        return {n: s for n, s in found[0].items() if Path(n).suffix.lower() in IMAGE_EXTENSIONS}

    def label(self, rel: str) -> str:
        return f"{str(self.location).rstrip('/')}/{rel}" if rel else str(self.location)

    def path(self, rel: str) -> Path:
        """The local file or folder for ``rel`` (an S3 source is synced to the cache first)."""
        if self._root is None:
            self._root = storage.sync_to_cache(self.location, progress=self.progress)
        return self._root / rel


def _find(sources: Sequence[Source], candidates: Sequence[str],
          need: Sequence[str] = ()) -> tuple[Source, str] | None:
    """The first candidate folder (holding the ``need`` sub-folders) in the first source that has one."""
    for src in sources:
        for rel in candidates:
            found = src.listing(rel)
            if found is not None and all(n in found[1] for n in need):
                return src, rel
    return None


def _looked(sources: Sequence[Source], candidates: Sequence[str]) -> str:
    where = ", ".join(s.label("") for s in sources)
    shown = ", ".join(candidates[:4]) + (", ..." if len(candidates) > 4 else "")
    return f"source folder {candidates[0]} not found in {where} (looked for {shown})"


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _by_stem(files: dict[str, int]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in sorted(files):
        out.setdefault(Path(name).stem, name)
    return out


# --------------------------------------------------------------------------- image sources and jobs
@dataclass(frozen=True)
class PhotoRef:
    """A region of a scikit-image photograph, optionally degraded (synthetic blur or rain)."""

    photo: str
    top: int
    left: int
    height: int
    width: int
    effect: Literal["", "blur", "rain"] = ""
    seed: int = 0


ImageRef = Path | PhotoRef


@dataclass(frozen=True)
class CopyJob:
    """One file to ``dst``: byte copy when the suffix is kept, else decoded and written as PNG."""

    src: ImageRef
    dst: str


@dataclass(frozen=True)
class SubImageJob:
    """DIV2K recipe for one HR image: mod-crop, bicubic LR per scale, BasicSR sub-images of each."""

    src: ImageRef
    name: str
    scales: tuple[int, ...]
    crop: int
    step: int
    mod: int


@dataclass(frozen=True)
class ScaledJob:
    """A whole HR image (copied) and its bicubic LR per scale: benchmark and validation images."""

    src: ImageRef
    hr: str
    lr: tuple[tuple[int, str], ...]


Job = CopyJob | SubImageJob | ScaledJob


def window_starts(size: int, crop: int, step: int, thresh: int = 0) -> list[int]:
    """BasicSR ``extract_subimages`` starts on one axis: 0, step, ... while start+crop <= size,
    plus one window flush with the far edge when more than ``thresh`` pixels are left over."""
    if size < crop:
        raise ValueError(f"size {size} is smaller than the crop {crop}")
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > thresh:
        starts.append(size - crop)
    return starts


@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image colour photograph (read-only: it is shared by every region cut from it)."""
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    img = np.ascontiguousarray(img[..., :3])
    img.flags.writeable = False
    return img


def _shift(padded: np.ndarray, dy: int, dx: int, pad: int, h: int, w: int) -> np.ndarray:
    """The h x w window of an array padded by ``pad``, moved by (dy, dx)."""
    return padded[pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def motion_blur(img: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Uniform linear motion blur (edge-padded), a stand-in for GoPro's averaged frames."""
    rad = math.radians(angle_deg)
    pad, (h, w) = length, img.shape[:2]
    padded = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros(img.shape, dtype=np.float64)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, length):
        acc += _shift(padded, round(t * math.sin(rad)), round(t * math.cos(rad)), pad, h, w)
    return np.floor(acc / length + 0.5).clip(0, 255).astype(np.uint8)


def rain_streaks(img: np.ndarray, seed: int, density: float = 0.004, length: int = 15) -> np.ndarray:
    """Bright slanted streaks blended over the image, a stand-in for the synthetic rain sets."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    drops = (rng.random((h, w)) < density) * rng.uniform(0.35, 0.85, (h, w))
    rad = math.radians(float(rng.uniform(70, 110)))
    pad = length
    padded = np.pad(drops, pad)
    streak = np.zeros((h, w))
    for t in range(length):
        streak = np.maximum(streak, _shift(padded, round(t * math.sin(rad)), round(t * math.cos(rad)), pad, h, w))
    a = streak[..., None]
    out = img.astype(np.float64) * (1 - a) + 235.0 * a
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def load_ref(ref: ImageRef) -> np.ndarray:
    """The uint8 RGB pixels of an image source."""
    if isinstance(ref, Path):
        return read_image(ref)
    img = photo(ref.photo)[ref.top: ref.top + ref.height, ref.left: ref.left + ref.width]
    if img.shape[:2] != (ref.height, ref.width):
        raise DataError(f"photo {ref.photo} has no {ref.height}x{ref.width} region at ({ref.top}, {ref.left})")
    if ref.effect == "blur":
        return motion_blur(img, length=7 + ref.seed % 7, angle_deg=float(ref.seed % 180))
    if ref.effect == "rain":
        return rain_streaks(img, ref.seed)
    return img.copy()


def _entry(staging: Path, rel: str) -> dict[str, Any]:
    path = staging / rel
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"path": rel, "size": path.stat().st_size, "sha256": h.hexdigest()}


def _write_png(staging: Path, rel: str, img: np.ndarray) -> dict[str, Any]:
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG", compress_level=PNG_COMPRESSION)
    return _entry(staging, rel)


def _copy_or_write(staging: Path, src: ImageRef, dst: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """Copy a file byte for byte when its suffix is kept; else write its pixels as PNG."""
    if isinstance(src, Path) and src.suffix.lower() == Path(dst).suffix.lower():
        target = staging / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        return _entry(staging, dst), None
    img = load_ref(src)
    return _write_png(staging, dst, img), img


def run_job(job: Job, staging: Path) -> list[dict[str, Any]]:
    """Write one job's files under ``staging``; returns their manifest entries."""
    try:
        if isinstance(job, CopyJob):
            return [_copy_or_write(staging, job.src, job.dst)[0]]
        if isinstance(job, ScaledJob):
            entry, img = _copy_or_write(staging, job.src, job.hr)
            if img is None:
                img = load_ref(job.src)
            out = [entry]
            for s, rel in job.lr:
                if img.shape[0] < s or img.shape[1] < s:
                    raise DataError(f"image {job.src} is smaller than the scale {s}")
                out.append(_write_png(staging, rel, bicubic_lr(img, s)))
            return out
        hr = modcrop(load_ref(job.src), job.mod)
        h, w = hr.shape[:2]
        if h < job.crop or w < job.crop:
            raise DataError(f"image {job.src} is {w}x{h} after mod-crop to {job.mod}, smaller than the "
                            f"{job.crop}x{job.crop} sub-image crop")
        rows, cols = window_starts(h, job.crop, job.step), window_starts(w, job.crop, job.step)
        out = []
        grids = [("train_HR_sub", 1, hr)] + [(f"train_LR_bicubic/X{s}_sub", s, bicubic_lr(hr, s)) for s in job.scales]
        for folder, s, img in grids:
            c = job.crop // s
            idx = 0
            for top in rows:
                for left in cols:
                    idx += 1
                    crop = img[top // s: top // s + c, left // s: left // s + c]
                    out.append(_write_png(staging, f"{folder}/{job.name}_s{idx:03d}.png", crop))
        return out
    except DckdError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot prepare {getattr(job, 'src', job)}: {exc}") from exc


# --------------------------------------------------------------------------- plans
@dataclass
class Plan:
    """What preparing one dataset will read and write (built before anything is written)."""

    source: str
    inputs: list[tuple[str, int]]
    make_jobs: Callable[[], list[Job]]
    summary: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origin: str = "downloads"


class Missing(Exception):
    """The source has no folder for this dataset."""


@dataclass(frozen=True)
class Options:
    """Preparation options; the ones that change the output are recorded in the manifest."""

    scales: tuple[int, ...] = (2, 3, 4)
    crop: int = DIV2K_CROP
    step: int = DIV2K_STEP
    workers: int = 1
    progress: bool = True
    allow_partial: bool = False
    force: bool = False
    push: str | None = None

    def check(self) -> None:
        if not self.scales or any(s < 1 for s in self.scales):
            raise ConfigError(f"--scales must be positive integers, got {list(self.scales)}")
        for s in self.scales:
            if self.crop % s or self.step % s:
                raise ConfigError(f"--crop-size {self.crop} and --step {self.step} must be multiples of "
                                  f"every scale; {s} does not divide them")
        if self.step < 1 or self.crop < 1:
            raise ConfigError("--crop-size and --step must be positive")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")

    @property
    def mod(self) -> int:
        return math.lcm(DIV2K_MOD, *self.scales)


def _partial(title: str, have: int, expected: int | None, names: Sequence[str], stems: set[str],
             where: str) -> list[str]:
    if expected is None or have >= expected:
        return []
    missing = [f"{n}.png" for n in names if n not in stems]
    tail = f"; missing {_names(missing)}" if missing else ""
    return [f"{have} of {expected} {title}{tail} (in {where})"]


def _lr_rels(scales: Sequence[int], folder: str, stem: str) -> tuple[tuple[int, str], ...]:
    return tuple((s, f"{folder}/X{s}/{stem}x{s}.png") for s in scales)


def plan_div2k(spec: Spec, sources: Sequence[Source], opts: Options) -> Plan:
    found = _find(sources, spec.candidates)
    if found is None:
        raise Missing(_looked(sources, spec.candidates))
    src, rel = found
    imgs = src.images(rel)
    files = _by_stem(imgs)
    if not files:
        raise Missing(f"source folder {src.label(rel)} holds no images")
    problems = _partial("HR images", len(files), spec.expected, spec.names, set(files), src.label(rel))
    inputs = [(f"{rel}/{n}", imgs[n]) for n in sorted(files.values())]
    notes: list[str] = []
    valid = _find(sources, DIV2K_VALID)
    vfiles: dict[str, str] = {}
    if valid is None:
        notes.append("no DIV2K_valid_HR in the source: valid_HR not made")
    else:
        vsrc, vrel = valid
        vimgs = vsrc.images(vrel)
        vfiles = _by_stem(vimgs)
        problems += _partial("validation HR images", len(vfiles), 100, DIV2K_VALID_NAMES, set(vfiles),
                             vsrc.label(vrel))
        inputs += [(f"{vrel}/{n}", vimgs[n]) for n in sorted(vfiles.values())]

    def jobs() -> list[Job]:
        out: list[Job] = [SubImageJob(src.path(f"{rel}/{n}"), stem, opts.scales, opts.crop, opts.step, opts.mod)
                          for stem, n in sorted(files.items())]
        if valid is not None:
            out += [ScaledJob(valid[0].path(f"{valid[1]}/{n}"), f"valid_HR/{stem}.png",
                              _lr_rels(opts.scales, "valid_LR_bicubic", stem)) for stem, n in sorted(vfiles.items())]
        return out

    summary = f"{len(files)} HR images cut into sub-images" + (f", {len(vfiles)} validation images" if vfiles else "")
    return Plan(src.label(rel), inputs, jobs, summary, problems, notes)


_HR_SUBDIRS = ("HR", "", "original", "GTmod12")


def plan_benchmark(spec: Spec, sources: Sequence[Source], opts: Options) -> Plan:
    found = _find(sources, spec.candidates)
    if found is None:
        raise Missing(_looked(sources, spec.candidates))
    src, rel = found
    for sub in _HR_SUBDIRS:
        hr_rel = f"{rel}/{sub}" if sub else rel
        imgs = src.images(hr_rel)
        if imgs:
            break
    else:
        raise Missing(f"no HR images in {src.label(rel)} (looked in {', '.join(s or '.' for s in _HR_SUBDIRS)})")
    files = _by_stem(imgs)
    notes = ["HR taken from GTmod12/ (already mod-cropped to 12: layout B crops differ from layout A)"] \
        if hr_rel.endswith("GTmod12") else []
    problems = _partial("HR images", len(files), spec.expected, spec.names, set(files), src.label(hr_rel))

    def jobs() -> list[Job]:
        return [ScaledJob(src.path(f"{hr_rel}/{n}"), f"HR/{stem}.png", _lr_rels(opts.scales, "LR_bicubic", stem))
                for stem, n in sorted(files.items())]

    inputs = [(f"{hr_rel}/{n}", imgs[n]) for n in sorted(files.values())]
    return Plan(src.label(hr_rel), inputs, jobs, f"{len(files)} HR images", problems, notes)


def _pairs(inputs: dict[str, int], targets: dict[str, int], where: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Input/target file names matched by stem, and a problem per unmatched file."""
    a, b = _by_stem(inputs), _by_stem(targets)
    problems = []
    if set(b) - set(a):
        problems.append(f"no input for target {_names(sorted(b[s] for s in set(b) - set(a)))} (in {where})")
    if set(a) - set(b):
        problems.append(f"no target for input {_names(sorted(a[s] for s in set(a) - set(b)))} (in {where})")
    return {s: (a[s], b[s]) for s in sorted(set(a) & set(b))}, problems


def plan_paired(spec: Spec, sources: Sequence[Source], opts: Options) -> Plan:
    found = _find(sources, spec.candidates, need=("input", "target"))
    if found is None:
        raise Missing(_looked(sources, spec.candidates) + " with input/ and target/ inside")
    src, rel = found
    ins, tgs = src.images(f"{rel}/input"), src.images(f"{rel}/target")
    pairs, problems = _pairs(ins, tgs, src.label(rel))
    if spec.expected is not None and len(pairs) < spec.expected:
        problems.insert(0, f"{len(pairs)} of {spec.expected} pairs (in {src.label(rel)})")
    out = f"{spec.sub}/" if spec.sub else ""

    def jobs() -> list[Job]:
        js: list[Job] = []
        for i, t in pairs.values():
            js.append(CopyJob(src.path(f"{rel}/input/{i}"), f"{out}input/{i}"))
            js.append(CopyJob(src.path(f"{rel}/target/{t}"), f"{out}target/{t}"))
        return js

    inputs = sorted([(f"{rel}/input/{i}", ins[i]) for i, _ in pairs.values()]
                    + [(f"{rel}/target/{t}", tgs[t]) for _, t in pairs.values()])
    return Plan(src.label(rel), inputs, jobs, f"{len(pairs)} pairs", problems)


def plan_gopro(spec: Spec, sources: Sequence[Source], opts: Options) -> Plan:
    found = _find(sources, spec.candidates)
    if found is None:
        raise Missing(_looked(sources, spec.candidates))
    src, rel = found
    problems: list[str] = []
    short: list[str] = []  # counts below the published ones, reported first
    inputs: list[tuple[str, int]] = []
    copies: list[tuple[str, str]] = []  # (source rel, output rel)
    counts = {}
    for split in ("train", "test"):
        listing = src.listing(f"{rel}/{split}")
        if listing is None:
            problems.append(f"no {split}/ folder in {src.label(rel)}")
            continue
        if {"input", "target"} <= listing[1]:  # the flattened release (Restormer, NAFNet)
            groups = [(f"{rel}/{split}/input", f"{rel}/{split}/target", "")]
        else:  # GOPRO_Large: <split>/<sequence>/{blur,blur_gamma,sharp}
            groups = [(f"{rel}/{split}/{seq}/blur", f"{rel}/{split}/{seq}/sharp", f"{seq}_")
                      for seq in sorted(listing[1])]
        n = 0
        for in_rel, tg_rel, prefix in groups:
            ins, tgs = src.images(in_rel), src.images(tg_rel)
            pairs, bad = _pairs(ins, tgs, src.label(in_rel.rsplit("/", 1)[0]))
            problems += bad
            for i, t in pairs.values():
                copies += [(f"{in_rel}/{i}", f"{split}/input/{prefix}{i}"),
                           (f"{tg_rel}/{t}", f"{split}/target/{prefix}{t}")]
                inputs += [(f"{in_rel}/{i}", ins[i]), (f"{tg_rel}/{t}", tgs[t])]
            n += len(pairs)
        counts[split] = n
        if n < GOPRO_EXPECTED[split]:
            short.append(f"{n} of {GOPRO_EXPECTED[split]} {split} pairs (in {src.label(rel)}/{split})")
    if not counts:
        raise Missing(f"no train/ or test/ folder in {src.label(rel)}")
    problems = short + problems

    def jobs() -> list[Job]:
        return [CopyJob(src.path(a), b) for a, b in copies]

    summary = ", ".join(f"{n} {split} pairs" for split, n in counts.items())
    return Plan(src.label(rel), sorted(inputs), jobs, summary, problems)


PLANNERS: dict[str, Callable[[Spec, Sequence[Source], Options], Plan]] = {
    "div2k": plan_div2k, "benchmark": plan_benchmark, "paired": plan_paired, "gopro": plan_gopro,
}


# --------------------------------------------------------------------------- the photos stand-in
PHOTO_TRAIN = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left")
PHOTO_TEST = ("chelsea", "rocket")
PHOTO_CROP, PHOTO_STEP = 192, 96
PHOTO_VERSION = 1


def _centre(name: str, h: int, w: int, dy: int = 0, dx: int = 0, effect: Literal["", "blur", "rain"] = "",
            seed: int = 0) -> PhotoRef:
    ph, pw = photo(name).shape[:2]
    top = min(max((ph - h) // 2 + dy, 0), ph - h)
    left = min(max((pw - w) // 2 + dx, 0), pw - w)
    return PhotoRef(name, top, left, h, w, effect, seed)


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def photo_plan(spec: Spec, opts: Options) -> Plan:
    """A tiny deterministic stand-in for ``spec`` from scikit-image's colour photographs.

    Split (the one ``dckd demo`` uses): train = astronaut, coffee, hubble_deep_field,
    immunohistochemistry, retina, the left motorcycle stereo view; test = chelsea, rocket.

    * DIV2K: a centre 288x384 region of each train photo, cut like DIV2K but with crop 192, step 96
      (6 sub-images each, 36 in all; LR sub-images 96/64/48 px at x2/x3/x4); valid_HR: 150x200
      regions of the test photos.
    * Set5, Set14, B100, Urban100 and Manga109 all hold the SAME two test photos (125x161
      regions, shifted a little per set, so the sets differ but are not independent samples).
    * GoPro and the deraining sets are SYNTHETIC: the target is a photo region (256x256 for
      training, 160x240 for testing), the input that region with a linear motion blur or with
      blended rain streaks; deraining test sets differ in their streak seeds.
    """
    scales = opts.scales
    for s in scales:
        if PHOTO_CROP % s or PHOTO_STEP % s:
            raise ConfigError(f"scale {s} does not divide the photos' sub-image crop {PHOTO_CROP} and step {PHOTO_STEP}")
    jobs: list[Job]
    if spec.kind == "div2k":
        jobs = [SubImageJob(_centre(n, 288, 384), n, scales, PHOTO_CROP, PHOTO_STEP, opts.mod) for n in PHOTO_TRAIN]
        jobs += [ScaledJob(_centre(n, 150, 200), f"valid_HR/{n}.png", _lr_rels(scales, "valid_LR_bicubic", n))
                 for n in PHOTO_TEST]
        summary = f"{len(PHOTO_TRAIN)} train photos cut into sub-images, {len(PHOTO_TEST)} validation photos"
    elif spec.kind == "benchmark":
        shift = 8 * list(SPECS).index(spec.key)
        jobs = [ScaledJob(_centre(n, 125, 161, shift, shift), f"HR/{n}.png", _lr_rels(scales, "LR_bicubic", n))
                for n in PHOTO_TEST]
        summary = f"{len(PHOTO_TEST)} test photos"
    else:
        effect: Literal["blur", "rain"] = "blur" if spec.kind == "gopro" else "rain"
        splits = [("train", PHOTO_TRAIN, 256, 256), ("test", PHOTO_TEST, 160, 240)]
        if spec.kind == "paired":
            splits = [s for s in splits if s[0] == ("train" if spec.sub == "train" else "test")]
        jobs = []
        for split, photos, h, w in splits:
            out = (f"{spec.sub}/" if spec.sub else "") if spec.kind == "paired" else f"{split}/"
            for n in photos:
                jobs.append(CopyJob(_centre(n, h, w, effect=effect, seed=_seed(spec.key, n)), f"{out}input/{n}.png"))
                jobs.append(CopyJob(_centre(n, h, w), f"{out}target/{n}.png"))
        summary = f"{len(jobs) // 2} synthetic pairs"
    inputs = [(repr(j), 0) for j in jobs]
    return Plan("photos", inputs, lambda: jobs, summary, origin=f"photos-v{PHOTO_VERSION}")


# --------------------------------------------------------------------------- running
Status = Literal["prepared", "up to date", "present", "missing", "partial", "failed"]


@dataclass
class Result:
    """The outcome for one dataset, as reported (by its title) to the user."""

    title: str
    status: Status
    message: str
    folder: Path | None = None
    files: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("prepared", "up to date", "present")

    def line(self) -> str:
        return f"{self.title}: {self.message}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files_present(folder: Path, files: list[dict[str, Any]]) -> bool:
    try:
        return all((folder / e["path"]).stat().st_size == e["size"] for e in files)
    except (OSError, KeyError, TypeError):
        return False


def _record(spec: Spec, plan: Plan, opts: Options, complete: bool) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(sorted(plan.inputs)).encode()).hexdigest()
    options: dict[str, Any] = {}
    if spec.kind in ("div2k", "benchmark"):
        options["scales"] = list(opts.scales)
    if spec.kind == "div2k":
        crop, step = (PHOTO_CROP, PHOTO_STEP) if plan.origin.startswith("photos") else (opts.crop, opts.step)
        options.update(crop=crop, step=step, mod=opts.mod, thresh=0)
    return {"dataset": spec.key, "recipe": RECIPE_VERSION, "origin": plan.origin, "source": plan.source,
            "options": options, "inputs_sha256": digest, "inputs": len(plan.inputs), "complete": complete}


def _execute(jobs: list[Job], staging: Path, opts: Options, desc: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    show = opts.progress and sys.stderr.isatty()  # as dckd.storage's bars: no carriage returns in logs
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True,
              leave=False) as bar:
        if opts.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                entries += run_job(job, staging)
                bar.update(1)
            return entries
        with ProcessPoolExecutor(max_workers=opts.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_job, job, staging) for job in jobs]
            try:
                for fut in as_completed(futures):
                    entries += fut.result()
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return entries


def write_manifest(folder: Path, files: list[dict[str, Any]], prepared: dict[str, Any]) -> dict[str, Any]:
    """``folder/manifest.json`` in :mod:`dckd.storage`'s format, plus the ``prepared`` record."""
    manifest = {"format": storage.MANIFEST_FORMAT, "version": storage.MANIFEST_VERSION,
                "files": sorted(files, key=lambda e: e["path"]), "prepared": prepared}
    (folder / storage.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def push_dataset(folder: Path, uri: str, manifest: dict[str, Any], progress: bool) -> str:
    """Upload a prepared dataset with :func:`dckd.storage.push`, unless ``uri`` already holds these files.

    ``storage.push`` refuses a folder with its own ``manifest.json`` (it writes that itself), so
    the files are pushed from a sibling folder of hard links (symlinks across devices).
    """
    try:
        remote = storage.read_manifest(uri)
        if sorted(remote["files"], key=lambda e: e["path"]) == manifest["files"]:
            return f"already at {uri}"
    except StorageError:
        pass
    view = Path(tempfile.mkdtemp(prefix=f".{folder.name}.push-", dir=folder.parent))
    try:
        for e in manifest["files"]:
            src, dst = folder / e["path"], view / e["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                os.symlink(src.resolve(), dst)
        storage.push(view, uri, progress=progress)
    finally:
        shutil.rmtree(view, ignore_errors=True)
    return f"pushed to {uri}"


def prepare_one(spec: Spec, plan: Plan, root: Path, opts: Options) -> Result:
    """Build one dataset from its plan (or find it up to date), then push it if asked."""
    final = root / spec.folder
    complete = not plan.problems
    if not complete and not opts.allow_partial:
        return Result(spec.title, "partial", "; ".join(plan.problems) + " (not prepared; --allow-partial "
                      "prepares what is there)")
    prepared = json.loads(json.dumps(_record(spec, plan, opts, complete)))
    existing = _read_json(final / storage.MANIFEST_NAME) if final.is_dir() else None
    notes = "".join(f"; {n}" for n in plan.notes + [f"PARTIAL: {p}" for p in plan.problems])
    if final.exists() and not (existing and isinstance(existing.get("prepared"), dict)):
        pulled = storage.local_manifest(final) if final.is_dir() else None
        if pulled is not None and _files_present(final, pulled["files"]) and not opts.force:
            return Result(spec.title, "present", f"{final} pulled from {pulled.get('source')}; kept as is "
                          "(--force rebuilds it)", final, len(pulled["files"]))
        if not opts.force:
            return Result(spec.title, "failed", f"{final} exists and was not made by `dckd data prepare`; "
                          "remove it, choose another --root, or pass --force to replace it")
    manifest: dict[str, Any]
    if existing and existing.get("prepared") == prepared and _files_present(final, existing["files"]):
        manifest, status, message = existing, "up to date", f"up to date in {final} ({plan.summary})"
    else:
        old = existing.get("prepared", {}) if existing else {}
        if old and old.get("origin") != plan.origin and not opts.force:
            return Result(spec.title, "failed", f"{final} was prepared from {old.get('source')} "
                          f"({old.get('origin')}), not {plan.source}; pass --force to replace it")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            entries = _execute(plan.make_jobs(), staging, opts, f"prepare {spec.title}")
            paths = [e["path"] for e in entries]
            if len(set(paths)) != len(paths):
                dup = sorted({p for p in paths if paths.count(p) > 1})
                raise DataError(f"two source files map to the same output {_names(dup)}; rename one")
            manifest = write_manifest(staging, entries, prepared)
            storage.swap_in(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        status, message = "prepared", f"prepared {plan.summary} from {plan.source} -> {final}"
    if opts.push:
        message += "; " + push_dataset(final, f"{opts.push.rstrip('/')}/{spec.folder}", manifest, opts.progress)
    return Result(spec.title, status, message + notes, final, len(manifest["files"]))


def expand(names: Sequence[str]) -> tuple[list[Spec], bool, bool]:
    """(specs in order, whether ``all`` was asked, whether ``photos`` was asked); unknown names refused."""
    keys: list[str] = []
    for n in names:
        key = n.lower()
        if key not in DATASET_CHOICES:
            raise ConfigError(f"unknown dataset {n!r}; choose from {', '.join(DATASET_CHOICES)}")
        keys += list(SPECS) if key in ("all", "photos") else [key]
    lowered = [n.lower() for n in names]
    return [SPECS[k] for k in dict.fromkeys(keys)], "all" in lowered, "photos" in lowered


def prepare(datasets: Sequence[str], root: str | os.PathLike[str], sources: Sequence[str] = (),
            opts: Options | None = None, report: Callable[[Result], None] | None = None) -> list[Result]:
    """Prepare the named datasets (``all``: every one the sources have; ``photos``: the stand-in).

    Returns one :class:`Result` per dataset; ``report`` is called with each as soon as it is known.
    A missing or partial dataset is reported, never raised, so one gap does not stop the others.
    """
    opts = opts or Options()
    opts.check()
    specs, wants_all, photos = expand(datasets)
    if photos and (wants_all or len({n.lower() for n in datasets}) > 1):
        raise ConfigError("'photos' prepares every dataset folder from photographs; give it alone")
    if not photos and not sources:
        raise ConfigError("--source is required (a folder or s3:// URI holding the downloads)")
    if storage.is_remote(str(root)):
        raise ConfigError(f"--root must be a local folder, got {root}; upload with --push URI instead")
    if photos and opts.workers > 1:
        opts = dataclasses.replace(opts, workers=1)  # a few small images: worker start-up would dominate
    srcs = [Source(s, progress=opts.progress) for s in sources]
    for src in srcs:  # an unreadable source is one error for the command, not one per dataset
        if src.listing("") is None:
            raise ConfigError(f"--source {src.location}: no such folder")
    root = Path(root).expanduser()
    results: list[Result] = []
    for spec in specs:
        try:
            plan = photo_plan(spec, opts) if photos else PLANNERS[spec.kind](spec, srcs, opts)
            result = prepare_one(spec, plan, root, opts)
        except Missing as exc:
            result = Result(spec.title, "missing", str(exc))
        except DckdError as exc:
            result = Result(spec.title, "failed", str(exc))
        results.append(result)
        if report is not None:
            report(result)
    return results


def exit_code(results: Sequence[Result], wants_all: bool) -> int:
    """0 when every requested dataset is ready; with ``all``, missing ones are only reported."""
    if wants_all:
        bad = [r for r in results if r.status in ("partial", "failed")]
        return 1 if bad or not any(r.ok for r in results) else 0
    return 0 if all(r.ok for r in results) else 1


__all__ = [
    "DATASET_CHOICES", "SPECS", "Options", "Result", "Source", "expand", "exit_code", "load_ref",
    "motion_blur", "photo_plan", "prepare", "rain_streaks", "run_job", "window_starts",
]
