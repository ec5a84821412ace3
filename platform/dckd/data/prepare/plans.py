"""What preparing each dataset from the downloads will read and write, worked out before anything is written.

Planning first lets a missing or partial download be reported without touching the output root.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dckd.data.prepare.catalog import (
    DIV2K_CROP,
    DIV2K_MOD,
    DIV2K_STEP,
    DIV2K_VALID,
    DIV2K_VALID_NAMES,
    GOPRO_EXPECTED,
    Spec,
)
from dckd.data.prepare.jobs import CopyJob, Job, ScaledJob, SubImageJob
from dckd.data.prepare.sources import Source, _find, _looked
from dckd.errors import ConfigError


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



def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _by_stem(files: dict[str, int]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in sorted(files):
        out.setdefault(Path(name).stem, name)
    return out


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
