"""``dckd bench``: one full training step (forward, backward, optimizer) per method, against the limit.

Each method's engine lives in a spawned process of its own (its allocator caches and peak
memory stay its own), and the timed steps are interleaved: round r times one step of every
method in turn (A B C A B C ...). A ratio between two methods is the median of the per-round
ratios, with their min and max, so that a machine that slows down for a minute slows both
sides of a ratio alike instead of the method that happened to run then.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU it is the growth of
the resident set during the timed steps (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``). FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
over one step (forward and backward; it counts matmuls, convolutions and attention, the
operations that dominate these networks), and the reachable peak is the FLOP/s of a large
fp32 and bf16 matmul on the same device and threads.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dckd.procmem import reset_peak_rss, status_kb

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
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False


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
        "train": {"batch_size": case.batch, "device": case.device, "threads": case.threads,
                  "precision": case.precision, "channels_last": case.channels_last, "compile": case.compile},
    }
    return load_config(data=data)


def matmul_flops_per_s(dtype_name: str, device: str, n: int | None = None, reps: int = 3,
                       min_seconds: float = 0.1) -> float:
    """FLOP/s of an n x n matmul (2 n^3 FLOPs) in ``dtype_name``: the reachable peak of the device.

    Without ``n`` the side doubles from 512 until one matmul takes ``min_seconds`` (or 4096 on
    a CPU, 16384 on a GPU), so the figure is a large-matrix rate on fast and slow devices alike.
    """
    import torch

    dev = torch.device(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]

    def timed(side: int, count: int) -> float:
        g = torch.Generator(device=dev).manual_seed(0)
        a = torch.rand(side, side, generator=g, device=dev).to(dtype)
        b = torch.rand(side, side, generator=g, device=dev).to(dtype)
        times = []
        for i in range(count + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - tic)
        return statistics.median(times)

    if n is None:
        n, cap = 512, (16384 if dev.type == "cuda" else 4096)
        while n < cap and timed(n, 1) < min_seconds:
            n *= 2
    return 2.0 * n**3 / timed(n, reps)


class CaseRunner:
    """One benchmark case's engine and batch, stepped on request (in a worker process or here)."""

    def __init__(self, case: BenchCase) -> None:
        import torch

        from dckd.training.engine import Engine

        if case.threads:
            torch.set_num_threads(case.threads)
        self.case = case
        self.cfg = bench_config(case, tempfile.gettempdir())
        self.notes: list[str] = []
        self.engine = Engine(self.cfg, notes=self.notes.append)
        if case.method == "released":
            self.engine.encoder_structure = "released"
        g = torch.Generator().manual_seed(0)
        scale = self.cfg.scale
        self.lq = torch.rand(case.batch, 3, case.patch, case.patch, generator=g)
        self.gt = torch.rand(case.batch, 3, case.patch * scale, case.patch * scale, generator=g)
        self.cuda = self.engine.device.type == "cuda"
        for _ in range(case.warmup):
            self.engine.train_step(self.lq, self.gt)
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.base_kb = status_kb("VmRSS")
        self.rss_ok = reset_peak_rss()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def step(self) -> float:
        """One timed training step, in ms."""
        tic = time.perf_counter()
        self.engine.train_step(self.lq, self.gt)
        self._sync()
        return (time.perf_counter() - tic) * 1000.0

    def info(self) -> dict[str, Any]:
        import torch

        if self.cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = max(0, status_kb("VmHWM") - self.base_kb) / 1024 if self.rss_ok else float("nan")
        vq = self.engine.vqgan
        return {"peak_mem_mb": peak, "device": str(self.engine.device), "threads": torch.get_num_threads(),
                "precision": self.engine.precision.name, "precision_reason": self.engine.precision.reason,
                "vqgan_params": None if vq is None else sum(p.numel() for p in vq.parameters()),
                "notes": self.notes}

    def flops(self) -> int:
        """FLOPs of one training step (forward and backward), as FlopCounterMode counts them."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.engine.train_step(self.lq, self.gt)
        return int(counter.get_total_flops())

    def matmul_peak(self) -> dict[str, float]:
        dev = str(self.engine.device)
        return {"fp32": matmul_flops_per_s("fp32", dev), "bf16": matmul_flops_per_s("bf16", dev)}

    def loss_terms(self, structure: str = "shared", precision: str | None = None) -> dict[str, float]:
        """Every loss term of one batch with fixed draws (no update), in a structure and precision."""
        import torch

        from dckd.training.engine import seeded_rng
        from dckd.training.precision import resolve_precision

        engine = self.engine
        saved = engine.encoder_structure, engine.precision
        engine.encoder_structure = structure  # type: ignore[assignment]
        if precision is not None:
            engine.precision = resolve_precision(precision, engine.device)
        try:
            torch.manual_seed(123)
            rng = seeded_rng(engine.cfg.seed, 0, 1, engine.device)
            with torch.no_grad():
                out = engine.compute(self.lq.to(engine.device), self.gt.to(engine.device), rng)
        finally:
            engine.encoder_structure, engine.precision = saved
        return {"total": float(out.total), **{k: float(v) for k, v in out.terms.items()}}


def _serve(case: BenchCase, conn: Any) -> None:
    """A worker process: build the case, then answer (method, args) requests until told to stop."""
    try:
        runner = CaseRunner(case)
        conn.send(("ready", None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        name, args = conn.recv()
        if name == "stop":
            return
        try:
            conn.send(("ok", getattr(runner, name)(*args)))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessRunner:
    """A ``CaseRunner`` in a spawned process, called method by method."""

    def __init__(self, case: BenchCase) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(case, child), daemon=True)
        self.proc.start()
        self.case = case
        self._started = False

    def _answer(self) -> Any:
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"bench case {self.case.method} ({self.case.pair}): {value}")
        return value

    def wait_ready(self) -> None:
        if not self._started:
            self._answer()
            self._started = True

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.wait_ready()
            self.conn.send((name, args))
            return self._answer()
        return call

    def close(self) -> None:
        try:
            self.conn.send(("stop", ()))
        except OSError:
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()


#: How a case is run: in a spawned process (the default) or, for tests, in this one.
make_runner: Callable[[BenchCase], Any] = ProcessRunner


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median, min and max of the per-round ratios num[r] / den[r] (interleaved rounds)."""
    ratios = [a / b for a, b in zip(num, den)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def interleaved(runners: dict[str, Any], rounds: int, progress: Callable[[str], None]) -> dict[str, list[float]]:
    """``rounds`` rounds of one timed step per case, in turn; returns each case's step times (ms)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for key, runner in runners.items():
            times[key].append(runner.step())
        progress(f"bench: round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in times.items())
                 + " ms")
    return times


def run_bench(pair: str = "swinir_x4", batch: int = 2, patch: int = 32, vqgan: str = "full",
              steps: int = 5, warmup: int = 1, threads: int | None = None, device: str = "auto",
              negatives: tuple[int, ...] = (1, 3, 5), progress=print, ray: bool = True,
              precision: str = "fp32", layouts: bool = False, flops: bool = True,
              loader: bool = False, ray_pair: bool = True) -> dict[str, Any]:
    """All methods of the report, interleaved over ``steps`` rounds; returns the JSON report."""
    common = dict(pair=pair, batch=batch, patch=patch, vqgan=vqgan, steps=steps, warmup=warmup,
                  threads=threads, device=device)
    cases: dict[str, BenchCase] = {
        "scratch": BenchCase(method="scratch", **common),
        "logits": BenchCase(method="logits", **common),
    }
    for n in negatives:
        cases[f"dckd_n{n}"] = BenchCase(method="dckd", negatives=n, **common)
    cases["released_n5"] = BenchCase(method="released", negatives=5, **common)
    dckd_key = "dckd_n5" if "dckd_n5" in cases else f"dckd_n{negatives[-1]}"
    dckd_case = cases[dckd_key]
    if precision != "fp32":
        cases["dckd_lowp"] = replace(dckd_case, precision=precision)
    if layouts:
        cases["dckd_channels_last"] = replace(dckd_case, channels_last=True)
        cases["dckd_compile"] = replace(dckd_case, compile=True)

    runners: dict[str, Any] = {}
    try:
        # One at a time: built and warmed up alone, each process starts from the same machine state.
        for k, c in cases.items():
            progress(f"bench: starting the {k} worker ({len(runners) + 1}/{len(cases)}), {warmup} warm-up step(s)")
            runners[k] = make_runner(c)
            if hasattr(runners[k], "wait_ready"):
                runners[k].wait_ready()
        times = interleaved(runners, steps, progress)
        infos = {k: r.info() for k, r in runners.items()}
        progress("bench: loss check (shared passes vs released structure, same draws)")
        dckd_runner = runners[dckd_key]
        shared = dckd_runner.loss_terms("shared")
        released = dckd_runner.loss_terms("released")
        lowp_key = "dckd_lowp" if "dckd_lowp" in runners else None
        lowp_terms = None
        if lowp_key is not None:
            lowp_terms = runners[lowp_key].loss_terms("shared")
        flop_counts: dict[str, int] = {}
        peak: dict[str, float] = {}
        if flops:
            for key in ("scratch", "logits", dckd_key, "released_n5"):
                progress(f"bench: counting the FLOPs of one {key} step")
                flop_counts[key] = runners[key].flops()
            progress("bench: matmul peak (fp32 and bf16) on the same device and threads")
            peak = dckd_runner.matmul_peak()
    finally:
        for r in runners.values():
            if hasattr(r, "close"):
                r.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    rel = abs(shared["total"] - released["total"]) / max(abs(released["total"]), 1e-12)
    info = infos[dckd_key]
    report: dict[str, Any] = {
        "pair": pair, "batch": batch, "patch": patch, "vqgan": vqgan,
        "device": info["device"], "threads": info["threads"], "steps": steps, "rounds": steps,
        "timing": "interleaved rounds; ratios are the median of per-round ratios (min, max)",
        "vqgan_params": info["vqgan_params"],
        "scratch_step_ms": med["scratch"],
        "logits_step_ms": med["logits"],
        "dckd_step_ms": med[dckd_key],
        "released_structure_step_ms": med["released_n5"],
        "speedup_vs_released": med["released_n5"] / med[dckd_key],
        "speedup_vs_released_rounds": ratio_stats(times["released_n5"], times[dckd_key]),
        "dckd_loss_matches_released": rel <= 1e-5,
        "dckd_loss": shared["total"],
        "released_loss": released["total"],
        "loss_relative_difference": rel,
        "dckd_peak_mem_mb": info["peak_mem_mb"],
        "released_structure_peak_mem_mb": infos["released_n5"]["peak_mem_mb"],
        "step_ms_rounds": times,
    }
    for n in negatives:
        report[f"dckd_n{n}_step_ms"] = med[f"dckd_n{n}"]
        report[f"dckd_n{n}_peak_mem_mb"] = infos[f"dckd_n{n}"]["peak_mem_mb"]
    report["scratch_peak_mem_mb"] = infos["scratch"]["peak_mem_mb"]
    report["logits_peak_mem_mb"] = infos["logits"]["peak_mem_mb"]
    report["dckd_over_scratch_rounds"] = ratio_stats(times[dckd_key], times["scratch"])
    if lowp_key is not None:
        name = infos[lowp_key]["precision"]
        report["lowp_precision"] = name
        report["lowp_precision_reason"] = infos[lowp_key]["precision_reason"]
        report[f"dckd_{name}_step_ms"] = med[lowp_key]
        report[f"dckd_{name}_peak_mem_mb"] = infos[lowp_key]["peak_mem_mb"]
        report[f"released_over_dckd_{name}_rounds"] = ratio_stats(times["released_n5"], times[lowp_key])
        report[f"dckd_fp32_over_{name}_rounds"] = ratio_stats(times[dckd_key], times[lowp_key])
        assert lowp_terms is not None
        report[f"{name}_loss_terms"] = lowp_terms
        report["fp32_loss_terms"] = shared
        report[f"{name}_loss_relative_difference"] = {
            k: abs(lowp_terms[k] - v) / max(abs(v), 1e-12) for k, v in shared.items()}
    if layouts:
        for key in ("dckd_channels_last", "dckd_compile"):
            report[f"{key}_step_ms"] = med[key]
            report[f"{key}_speedup_rounds"] = ratio_stats(times[dckd_key], times[key])
            report[f"{key}_notes"] = infos[key]["notes"]
    if flops:
        for key, count in flop_counts.items():
            label = {dckd_key: "dckd", "released_n5": "released_structure"}.get(key, key)
            report[f"{label}_step_flops"] = count
            report[f"{label}_achieved_flops_per_s"] = count / (med[key] / 1000.0)
        report["matmul_peak_fp32_flops_per_s"] = peak["fp32"]
        report["matmul_peak_bf16_flops_per_s"] = peak["bf16"]
        report["dckd_fraction_of_fp32_peak"] = report["dckd_achieved_flops_per_s"] / peak["fp32"]
        # A bf16 matmul slower than fp32's means the device emulates bf16: there is no bf16 peak.
        report["bf16_emulated"] = peak["bf16"] < peak["fp32"]
        if lowp_key is not None and report["lowp_precision"] == "bf16":
            report["dckd_bf16_achieved_flops_per_s"] = flop_counts[dckd_key] / (med[lowp_key] / 1000.0)
            report["dckd_bf16_fraction_of_bf16_peak"] = report["dckd_bf16_achieved_flops_per_s"] / peak["bf16"]
    # The sections below add to a report whose step timings are already taken: one that fails
    # is recorded (and printed) instead of losing the rest.
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if loader:
        sections.append(("loader", lambda: {**loader_throughput(device=info["device"], progress=progress),
                                            "dckd_step_images_per_s": batch / (med[dckd_key] / 1000.0)}))
    if ray:
        sections.append(("ray_loop", lambda: ray_vs_inprocess(progress=progress)))
        if ray_pair:
            sections.append(("pair_ray_loop", lambda: ray_vs_inprocess(progress=progress, pair=pair, prefix="pair_",
                                                                       threads=threads)))
    for name, section in sections:
        try:
            report.update(section())
        except Exception as exc:  # noqa: BLE001 - reported in the JSON and on stderr
            report[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            progress(f"bench: the {name} section failed: {type(exc).__name__}: {exc}")
    return report


def _rounds(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f}x (min {stats['min']:.2f}, max {stats['max']:.2f})"


def format_table(report: dict[str, Any]) -> str:
    rows = [("scratch", "scratch"), ("logits", "logits")]
    rows += [(f"DCKD N={k.split('_n')[1].split('_')[0]}", k.removesuffix("_step_ms"))
             for k in report if k.startswith("dckd_n") and k.endswith("_step_ms")]
    rows.append(("DCKD N=5, released structure", "released_structure"))
    if (name := report.get("lowp_precision")) is not None:
        rows.append((f"DCKD N=5, {name}", f"dckd_{name}"))
    lines = [f"{report['pair']}, batch {report['batch']}, LR patch {report['patch']}, "
             f"VQGAN {report['vqgan']}, {report['device']} x{report['threads']} threads, "
             f"{report['rounds']} interleaved rounds",
             f"{'method':<32}{'step ms':>10}{'peak MB':>10}{'GFLOP':>10}{'GFLOP/s':>10}"]
    for label, key in rows:
        flops = report.get(f"{key}_step_flops")
        rate = report.get(f"{key}_achieved_flops_per_s")
        fl = f"{flops / 1e9:>10.1f}" if flops else f"{'':>10}"
        rt = f"{rate / 1e9:>10.1f}" if rate else f"{'':>10}"
        lines.append(f"{label:<32}{report[key + '_step_ms']:>10.1f}{report[key + '_peak_mem_mb']:>10.0f}{fl}{rt}")
    lines.append(f"speed-up of the shared-pass DCKD step over the released structure: "
                 f"{_rounds(report['speedup_vs_released_rounds'])}; same loss: {report['dckd_loss_matches_released']} "
                 f"(relative difference {report['loss_relative_difference']:.1e})")
    if (name := report.get("lowp_precision")) is not None:
        lines.append(f"{name} ({report['lowp_precision_reason']}): released structure (fp32) / DCKD {name} "
                     f"{_rounds(report[f'released_over_dckd_{name}_rounds'])}; DCKD fp32 / {name} "
                     f"{_rounds(report[f'dckd_fp32_over_{name}_rounds'])}")
        diffs = report[f"{name}_loss_relative_difference"]
        lines.append(f"{name} vs fp32 loss terms, relative difference: "
                     + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    for key, label in (("dckd_channels_last", "channels-last"), ("dckd_compile", "torch.compile")):
        if f"{key}_step_ms" in report:
            lines.append(f"DCKD with {label}: {report[f'{key}_step_ms']:.1f} ms, speed-up "
                         f"{_rounds(report[f'{key}_speedup_rounds'])}")
    if "matmul_peak_fp32_flops_per_s" in report:
        if report.get("bf16_emulated"):
            bf16 = " (slower than fp32: bf16 is emulated on this device, so it is no peak)"
        elif "dckd_bf16_fraction_of_bf16_peak" in report:
            bf16 = f"; in bf16 it reaches {100 * report['dckd_bf16_fraction_of_bf16_peak']:.0f}% of the bf16 peak"
        else:
            bf16 = ""
        lines.append(f"matmul peak: fp32 {report['matmul_peak_fp32_flops_per_s'] / 1e9:.1f} GFLOP/s, bf16 "
                     f"{report['matmul_peak_bf16_flops_per_s'] / 1e9:.1f} GFLOP/s{bf16 if report.get('bf16_emulated') else ''}; "
                     f"the fp32 DCKD step reaches {100 * report['dckd_fraction_of_fp32_peak']:.0f}% of the fp32 peak"
                     + ("" if report.get("bf16_emulated") else bf16))
    if "loader_images_per_s" in report:
        lines.append(f"loader: {report['loader_images_per_s']:.0f} images/s with {report['loader_num_workers']} "
                     f"worker(s) ({report['loader_rule']}); the DCKD step consumes "
                     f"{report['dckd_step_images_per_s']:.1f} images/s")
        if "loader_gpu_images_per_s" in report:
            lines.append(f"loader as a GPU run would use it: {report['loader_gpu_images_per_s']:.0f} images/s with "
                         f"{report['loader_gpu_num_workers']} worker(s)")
    for prefix, label in (("", "tiny config"), ("pair_", f"{report['pair']} DCKD")):
        if f"{prefix}ray_1worker_iter_ms" in report:
            lines.append(f"loop ({label}): in-process {report[f'{prefix}inprocess_iter_ms']:.1f} ms/iteration, "
                         f"1-worker Ray Train {report[f'{prefix}ray_1worker_iter_ms']:.1f} ms/iteration, "
                         f"Ray/in-process {_rounds(report[f'{prefix}ray_over_inprocess_rounds'])}")
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


def pair_overhead_config(data_dir: Path, out_dir: Path, window: int, pair: str, threads: int | None) -> dict[str, Any]:
    """The bench's own case (a Table 1 pair, full VQGAN, batch 2, LR patch 32) as a training run."""
    teacher, student, scale = PAIRS[pair]
    data = loop_overhead_config(data_dir, out_dir, window)
    data.update(scale=scale, teacher={"preset": teacher}, student={"preset": student}, vqgan={})
    data["data"]["train"]["lq_patch"] = 32
    # The same threads in both: train.threads is set explicitly, since a Ray worker otherwise
    # gets OMP_NUM_THREADS = its reserved CPUs (1 here, so that it fits any local instance).
    import os

    data["train"].update(batch_size=2, threads=threads or os.cpu_count() or 1)
    return data


def ray_vs_inprocess(window: int | None = None, progress=print, rounds: int = 2, pair: str | None = None,
                     prefix: str = "", threads: int | None = None) -> dict[str, Any]:
    """Per-iteration time of the same config in this process and on a 1-worker Ray Train run.

    The two alternate (in-process, Ray, in-process, Ray ...) for ``rounds`` rounds; each time
    is that of the second logging window, after start-up and warm-up, and the overhead is the
    median of the per-round ratios. Both run ``Engine.train_step`` through the same loop helpers.
    """
    import json

    from dckd.cli.train import load_runner
    from dckd.config import load_config
    from dckd.demo import prepare_photos
    from dckd.training.loop import train_local

    window = window or (3 if pair else 20)
    root = Path(tempfile.mkdtemp(prefix="dckd-bench-"))
    train_dir, _ = prepare_photos(root / "data")
    local_ms: list[float] = []
    ray_ms: list[float] = []
    what = f"{pair} DCKD" if pair else "tiny config"
    for r in range(rounds):
        out = root / f"round{r}"
        data = (pair_overhead_config(train_dir, out / "local", window, pair, threads) if pair
                else loop_overhead_config(train_dir, out / "local", window))
        b = data["train"]["batch_size"]
        progress(f"bench: loop overhead ({what}), round {r + 1}/{rounds}: in-process, {2 * window} iterations")
        train_local(load_config(data=data), resume=False, progress=False)
        lines = [json.loads(x) for x in (out / "local" / "metrics.jsonl").read_text().splitlines()]
        local_ms.append(1000.0 * b / [x for x in lines if x["kind"] == "train"][-1]["images_per_s"])
        progress(f"bench: loop overhead ({what}), round {r + 1}/{rounds}: 1-worker Ray Train, {2 * window} iterations")
        ray_ms.append(1000.0 * b / load_runner("bench_ray")(dict(data, output_dir=str(out / "ray"))))
    stats = ratio_stats(ray_ms, local_ms)
    return {f"{prefix}inprocess_iter_ms": statistics.median(local_ms),
            f"{prefix}ray_1worker_iter_ms": statistics.median(ray_ms),
            f"{prefix}ray_overhead_fraction": stats["median"] - 1.0,
            f"{prefix}ray_over_inprocess_rounds": stats,
            f"{prefix}ray_loop_config": what}


def make_div2k_like(folder: Path, count: int = 32, side: int = 480, seed: int = 0) -> Path:
    """``count`` 480x480 PNG sub-images cut from scikit-image's photographs (DIV2K's sub-image size).

    DIV2K training images are prepared as 480x480 crops (BasicSR's extract_subimages); these
    are random crops of the photographs, upscaled first where a photograph is smaller.
    """
    import numpy as np

    from dckd.data.prepare import PHOTO_TRAIN, photo
    from dckd.imageio import write_image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photos = [photo(n) for n in PHOTO_TRAIN]
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        if min(h, w) < side:
            import torch
            import torch.nn.functional as F

            k = side / min(h, w) + 1e-3
            t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, scale_factor=k, mode="bicubic", align_corners=False).clamp(0, 255)
            img = t[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
            h, w = img.shape[:2]
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        write_image(folder / f"{i:04d}_s001.png", np.ascontiguousarray(img[y:y + side, x:x + side]))
    return folder


def loader_throughput(device: str = "cpu", progress=print, iterations: int = 20, batch: int = 16,
                      lq_patch: int = 48, scale: int = 4) -> dict[str, Any]:
    """Images/s of the training data loader on DIV2K-like sub-images read from disk (the paper's batch
    16, LR patch 48, x4), with the default workers for this device and for a GPU worker here."""
    from dckd.config import load_config
    from dckd.training.loop import loader_workers, make_loader

    root = Path(tempfile.mkdtemp(prefix="dckd-loader-"))
    hr = make_div2k_like(root / "hr")
    cfg = load_config(data={
        "name": "bench-loader", "scale": scale, "output_dir": str(root / "run"),
        "student": {"preset": "swinir_tiny_x4_student"}, "method": {"preset": "scratch"},
        "data": {"train": {"hr_dir": str(hr), "lq_patch": lq_patch}},
        "train": {"batch_size": batch, "iterations": iterations},
    })

    def images_per_s(workers: int) -> float:
        train = cfg.data.train.model_copy(update={"num_workers": workers})
        c = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": train})})
        loader = iter(make_loader(c, 0, iterations))
        next(loader)  # start-up (worker processes) is not throughput
        tic = time.perf_counter()
        n = 0
        for batch in loader:
            n += batch["lq"].shape[0]
        return n / (time.perf_counter() - tic)

    import torch

    workers, rule = loader_workers(cfg, torch.device(device))
    progress(f"bench: data loader, {iterations} batches of {batch} ({lq_patch}x{lq_patch} LR, x{scale}) "
             f"from 480x480 PNGs, {workers} worker(s)")
    out: dict[str, Any] = {"loader_images_per_s": images_per_s(workers), "loader_num_workers": workers,
                           "loader_rule": rule, "loader_batch": batch, "loader_lq_patch": lq_patch}
    if torch.device(device).type != "cuda":
        gpu_workers, gpu_rule = loader_workers(cfg, torch.device("cuda"))
        if gpu_workers != workers:
            progress(f"bench: data loader with the GPU default here: {gpu_workers} worker(s)")
            out.update(loader_gpu_images_per_s=images_per_s(gpu_workers), loader_gpu_num_workers=gpu_workers,
                       loader_gpu_rule=gpu_rule)
    return out


def run_case(case: BenchCase) -> dict[str, Any]:
    """Time ``case.steps`` training steps after ``case.warmup`` in this process (for tools and tests)."""
    runner = CaseRunner(case)
    times = [runner.step() for _ in range(case.steps)]
    return {"case": asdict(case), "median_ms": statistics.median(times), "min_ms": min(times), **runner.info()}
