"""``dckd bench``: time one full training step (forward, backward, optimizer) per method.

Each measurement runs in a fresh spawned process, so one method's allocator caches and
peak memory do not leak into the next. Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU; on the CPU it is the growth of the resident set during the timed steps (Linux
``VmHWM`` after resetting it through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAIRS: dict[str, tuple[str, str, int]] = {
    "swinir_x4": ("swinir_x4_teacher", "swinir_x4_student", 4),
    "rcan_x4": ("rcan_x4_teacher", "rcan_x4_student", 4),
    "rcan_tiny_x2": ("rcan_tiny_x2_teacher", "rcan_tiny_x2_student", 2),
    "swinir_tiny_x4": ("swinir_tiny_x4_teacher", "swinir_tiny_x4_student", 4),
}


@dataclass(frozen=True)
class BenchCase:
    pair: str = "swinir_x4"
    method: str = "dckd"  # scratch | logits | dckd | released
    negatives: int = 5
    batch: int = 2
    patch: int = 32
    vqgan: str = "full"  # full | reduced
    steps: int = 5
    warmup: int = 1
    threads: int | None = None
    device: str = "auto"


def bench_config(case: BenchCase, data_dir: str):
    """An experiment config for a benchmark case (random weights: speed does not depend on them)."""
    from dckd.config import VQGANSpec, load_config

    teacher, student, scale = PAIRS[case.pair]
    preset = {"released": "dckd"}.get(case.method, case.method)
    vq = VQGANSpec() if case.vqgan == "full" else VQGANSpec.reduced()
    data = {
        "name": f"bench-{case.method}",
        "scale": scale,
        "teacher": {"preset": teacher},
        "student": {"preset": student},
        "data": {"train": {"hr_dir": data_dir, "lq_patch": case.patch}},
        "method": {"preset": preset, "dcr": {"num_negatives": case.negatives}},
        "vqgan": vq.model_dump(mode="json"),
        "train": {"batch_size": case.batch, "device": case.device, "threads": case.threads},
    }
    return load_config(data=data)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _engine_and_batch(case: BenchCase):
    import torch

    from dckd.training.engine import Engine

    cfg = bench_config(case, tempfile.gettempdir())
    engine = Engine(cfg, notes=lambda _msg: None)
    if case.method == "released":
        engine.encoder_structure = "released"
    g = torch.Generator().manual_seed(0)
    scale = cfg.scale
    lq = torch.rand(case.batch, 3, case.patch, case.patch, generator=g)
    gt = torch.rand(case.batch, 3, case.patch * scale, case.patch * scale, generator=g)
    return engine, lq, gt


def run_case(case: BenchCase) -> dict[str, Any]:
    """Time ``case.steps`` training steps after ``case.warmup`` (in the calling process)."""
    import torch

    if case.threads:
        torch.set_num_threads(case.threads)
    engine, lq, gt = _engine_and_batch(case)
    cuda = engine.device.type == "cuda"
    for _ in range(case.warmup):
        engine.train_step(lq, gt)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_kb = _rss_kb("VmRSS")
    rss_ok = _reset_peak_rss()
    times = []
    for _ in range(case.steps):
        tic = time.perf_counter()
        engine.train_step(lq, gt)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - tic) * 1000.0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max(0, _rss_kb("VmHWM") - base_kb) / 1024 if rss_ok else float("nan")
    return {
        "case": asdict(case),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "peak_mem_mb": peak,
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "vqgan_params": None if engine.vqgan is None else sum(p.numel() for p in engine.vqgan.parameters()),
    }


def loss_match(case: BenchCase) -> dict[str, Any]:
    """The DCKD loss in the shared-pass structure and in the released structure, same draws."""
    import torch

    from dckd.training.engine import seeded_rng

    if case.threads:
        torch.set_num_threads(case.threads)
    engine, lq, gt = _engine_and_batch(case)
    values = {}
    for label, structure in (("dckd", "shared"), ("released", "released")):
        engine.encoder_structure = structure
        torch.manual_seed(123)
        rng = seeded_rng(engine.cfg.seed, 0, 1, engine.device)
        with torch.no_grad():
            out = engine.compute(lq.to(engine.device), gt.to(engine.device), rng)
        values[label] = float(out.total)
        values[f"{label}_terms"] = {k: float(v) for k, v in out.terms.items()}
    rel = abs(values["dckd"] - values["released"]) / max(abs(values["released"]), 1e-12)
    return {"dckd_loss": values["dckd"], "released_loss": values["released"], "relative_difference": rel,
            "matches": rel <= 1e-5, "terms": values["dckd_terms"], "released_terms": values["released_terms"]}


def _in_child(fn, case: BenchCase) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, case).result()


def run_bench(pair: str = "swinir_x4", batch: int = 2, patch: int = 32, vqgan: str = "full",
              steps: int = 5, warmup: int = 1, threads: int | None = None, device: str = "auto",
              negatives: tuple[int, ...] = (1, 3, 5), progress=print, ray: bool = True) -> dict[str, Any]:
    """All methods of the report, each in its own process; returns the JSON report."""
    common = dict(pair=pair, batch=batch, patch=patch, vqgan=vqgan, steps=steps, warmup=warmup,
                  threads=threads, device=device)
    cases: dict[str, BenchCase] = {
        "scratch": BenchCase(method="scratch", **common),
        "logits": BenchCase(method="logits", **common),
    }
    for n in negatives:
        cases[f"dckd_n{n}"] = BenchCase(method="dckd", negatives=n, **common)
    cases["released_n5"] = BenchCase(method="released", negatives=5, **common)
    results: dict[str, dict[str, Any]] = {}
    for key, case in cases.items():
        progress(f"bench: {key} ({steps} timed steps after {warmup} warm-up)")
        results[key] = _in_child(run_case, case)
        progress(f"bench: {key}: median {results[key]['median_ms']:.1f} ms, "
                 f"peak {results[key]['peak_mem_mb']:.0f} MB")
    progress("bench: loss check (shared passes vs released structure, same draws)")
    match = _in_child(loss_match, BenchCase(method="dckd", negatives=5, **common))
    dckd5 = results.get("dckd_n5", results[f"dckd_n{negatives[-1]}"])
    report: dict[str, Any] = {
        "pair": pair, "batch": batch, "patch": patch, "vqgan": vqgan,
        "device": dckd5["device"], "threads": dckd5["threads"], "steps": steps,
        "vqgan_params": dckd5["vqgan_params"],
        "scratch_step_ms": results["scratch"]["median_ms"],
        "logits_step_ms": results["logits"]["median_ms"],
        "dckd_step_ms": dckd5["median_ms"],
        "released_structure_step_ms": results["released_n5"]["median_ms"],
        "speedup_vs_released": results["released_n5"]["median_ms"] / dckd5["median_ms"],
        "dckd_loss_matches_released": match["matches"],
        "dckd_loss": match["dckd_loss"],
        "released_loss": match["released_loss"],
        "loss_relative_difference": match["relative_difference"],
        "dckd_peak_mem_mb": dckd5["peak_mem_mb"],
        "released_structure_peak_mem_mb": results["released_n5"]["peak_mem_mb"],
    }
    for n in negatives:
        report[f"dckd_n{n}_step_ms"] = results[f"dckd_n{n}"]["median_ms"]
        report[f"dckd_n{n}_peak_mem_mb"] = results[f"dckd_n{n}"]["peak_mem_mb"]
    if ray:
        report.update(ray_vs_inprocess(progress=progress))
    report["scratch_peak_mem_mb"] = results["scratch"]["peak_mem_mb"]
    report["logits_peak_mem_mb"] = results["logits"]["peak_mem_mb"]
    return report


def format_table(report: dict[str, Any]) -> str:
    rows = [("scratch", "scratch"), ("logits", "logits")]
    rows += [(f"DCKD N={k.split('_n')[1].split('_')[0]}", k.removesuffix("_step_ms"))
             for k in report if k.startswith("dckd_n") and k.endswith("_step_ms")]
    rows.append(("DCKD N=5, released structure", "released_structure"))
    lines = [f"{report['pair']}, batch {report['batch']}, LR patch {report['patch']}, "
             f"VQGAN {report['vqgan']}, {report['device']} x{report['threads']} threads",
             f"{'method':<32}{'step ms':>10}{'peak MB':>10}"]
    for label, key in rows:
        lines.append(f"{label:<32}{report[key + '_step_ms']:>10.1f}{report[key + '_peak_mem_mb']:>10.0f}")
    if "ray_1worker_iter_ms" in report:
        lines.append(f"loop: in-process {report['inprocess_iter_ms']:.1f} ms/iteration, 1-worker Ray Train "
                     f"{report['ray_1worker_iter_ms']:.1f} ms/iteration "
                     f"({100 * report['ray_overhead_fraction']:+.1f}%)")
    lines.append(f"speed-up of the shared-pass DCKD step over the released structure: "
                 f"{report['speedup_vs_released']:.2f}x; same loss: {report['dckd_loss_matches_released']} "
                 f"(relative difference {report['loss_relative_difference']:.1e})")
    return "\n".join(lines)


def loop_overhead_config(data_dir: Path, out_dir: Path, window: int) -> dict[str, Any]:
    """A small DCKD config on the demo photographs, logged in two windows of ``window`` iterations."""
    return {
        "name": "bench-loop", "task": "sr", "scale": 2, "seed": 0, "output_dir": str(out_dir),
        "teacher": {"preset": "rcan_tiny_x2_teacher"}, "student": {"preset": "rcan_tiny_x2_student"},
        "data": {"train": {"hr_dir": str(data_dir), "lq_patch": 24, "cache_in_memory": True}},
        "method": {"preset": "dckd"},
        "vqgan": {"ch": 32, "num_res_blocks": 1},
        "train": {"iterations": 2 * window, "batch_size": 4, "log_every": window, "ckpt_every": 2 * window,
                  "val_every": 10**9, "threads": 1},
        "tracking": {"enabled": False},
        "ray": {"num_workers": 1, "max_failures": 0},
    }


def ray_vs_inprocess(window: int = 20, progress=print) -> dict[str, Any]:
    """Per-iteration time of the same config in this process and on a 1-worker Ray Train run.

    Both run ``Engine.train_step`` through the same loop helpers; the time per iteration is
    taken from the second logging window, after start-up and warm-up.
    """
    import json

    from dckd.cli.train import load_runner
    from dckd.config import load_config
    from dckd.demo import prepare_photos
    from dckd.training.loop import train_local

    root = Path(tempfile.mkdtemp(prefix="dckd-bench-"))
    train_dir, _ = prepare_photos(root / "data")
    data = loop_overhead_config(train_dir, root / "local", window)
    progress(f"bench: in-process loop, {2 * window} iterations")
    train_local(load_config(data=data), resume=False, progress=False)
    lines = [json.loads(x) for x in (root / "local" / "metrics.jsonl").read_text().splitlines()]
    local_ips = [r for r in lines if r["kind"] == "train"][-1]["images_per_s"]
    progress(f"bench: 1-worker Ray Train run, {2 * window} iterations")
    data_ray = dict(data, output_dir=str(root / "ray"))
    ray_ips = load_runner("bench_ray")(data_ray)
    b = data["train"]["batch_size"]
    local_ms, ray_ms = 1000.0 * b / local_ips, 1000.0 * b / ray_ips
    return {"inprocess_iter_ms": local_ms, "ray_1worker_iter_ms": ray_ms,
            "ray_overhead_fraction": ray_ms / local_ms - 1.0}
