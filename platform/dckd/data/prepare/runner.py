"""Running the plans: staging, the manifest and its ``prepared`` record, the swap into place, ``--push``.

One place decides whether a dataset is up to date, so a re-run is cheap and an interrupted one is safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from dckd import storage
from dckd.data.prepare.catalog import DATASET_CHOICES, RECIPE_VERSION, SPECS, Spec
from dckd.data.prepare.jobs import Job, run_job
from dckd.data.prepare.photo_plan import PHOTO_CROP, PHOTO_STEP, photo_plan
from dckd.data.prepare.plans import PLANNERS, Missing, Options, Plan, _names
from dckd.data.prepare.sources import Source
from dckd.errors import ConfigError, DataError, DckdError, StorageError

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
