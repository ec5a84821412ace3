"""The plan that fills every dataset folder from the stand-in photographs (``dckd data prepare photos``).

Apart from the download planners because it reads no source: its inputs are the jobs themselves.
"""

from __future__ import annotations

import zlib
from typing import Literal

from dckd.data.prepare.catalog import SPECS, Spec
from dckd.data.prepare.jobs import CopyJob, Job, ScaledJob, SubImageJob
from dckd.data.prepare.photos import PHOTO_TEST, PHOTO_TRAIN, PhotoRef, photo
from dckd.data.prepare.plans import Options, Plan, _lr_rels
from dckd.errors import ConfigError

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
