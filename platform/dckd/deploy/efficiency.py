"""Student against teacher at deployment: parameters, FLOPs, latency and peak memory per runtime.

What the paper's Table 1 claims for a distilled student is that it is smaller and cheaper; this
module measures how much faster it actually is where it would be deployed, for every Table 1 pair
(and any teacher/student pair of presets, run checkpoints, registry students or weights files),
at one stated output size (default 1280x720: a 320x180 input for x4 SR, 1280x720 for deblurring).

- **FLOPs** are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one forward, on meta
  tensors (a copy of the network on the ``meta`` device: nothing is computed, so a teacher at
  1280x720 costs a second); an architecture that cannot run on meta is counted with real CPU
  compute instead, and the JSON says which (``flops_method``).
- **Latency**: the student and the teacher of one runtime are timed in interleaved rounds (student,
  teacher, student, teacher, ...) after warm-up, so a shared machine that slows down for a minute
  slows both sides of a ratio alike; the speed-up is the median of the per-round ratios
  teacher/student, with their min and max.
- **Peak memory**: every (model, runtime) lives in a spawned process of its own, so its peak is
  its own: on the CPU the resident high-water mark of that process (``VmHWM``; see
  :func:`_peak_rss_kb` for why not ``ru_maxrss``), and its rise over the RSS after loading the
  model (what inference adds); on CUDA
  ``torch.cuda.max_memory_allocated``.
- **ONNX Runtime** runs the file :func:`dckd.deploy.export.export` writes (verified against PyTorch
  on export), cached by the network's spec and weights so a rerun does not export teachers again.

The timing loop is driven from the parent: only one of the two worker processes computes at a
time, the other waits on its pipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from dckd.deploy.export import meta_of
from dckd.errors import ConfigError
from dckd.procmem import reset_peak_rss, status_kb

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- what is measured
@dataclass(frozen=True)
class PairSpec:
    """A teacher/student pair: two sources :func:`dckd.deploy.sources.resolve_source` accepts."""

    key: str
    title: str
    teacher: str
    student: str
    task: str = ""


#: The pairs of paper Table 1, by key.
TABLE1_PAIRS: dict[str, PairSpec] = {
    "swinir_x4": PairSpec("swinir_x4", "SwinIR x4", "swinir_x4_teacher", "swinir_x4_student", "x4 SR"),
    "rcan_x4": PairSpec("rcan_x4", "RCAN x4", "rcan_x4_teacher", "rcan_x4_student", "x4 SR"),
    "nafnet": PairSpec("nafnet", "NAFNet", "nafnet_teacher", "nafnet_student", "deblurring"),
    "restormer": PairSpec("restormer", "Restormer", "restormer_teacher", "restormer_student",
                          "deblurring, deraining"),
}
RUNTIMES: tuple[str, ...] = ("pytorch-cpu", "onnxruntime-cpu", "pytorch-cuda", "onnxruntime-cuda")
DEFAULT_OUTPUT = (1280, 720)
"""Output (width, height) every network is measured at; the input is this divided by the SR scale."""


class EfficiencySettings(BaseModel):
    """How ``dckd efficiency`` measures; validated before any network is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_size: tuple[int, int] = Field(DEFAULT_OUTPUT, description="output (width, height)")
    repeats: int = Field(5, ge=1, description="timed interleaved rounds per runtime")
    warmup: int = Field(1, ge=0, description="untimed runs per model and runtime before the rounds")
    threads: int | None = Field(None, ge=1, description="intra-op threads (torch and ONNX Runtime)")
    runtimes: tuple[str, ...] | None = Field(None, description="None: every runtime this machine has")
    flops: bool = True
    onnx_low_memory: bool = Field(False, description="ONNX Runtime without its CPU memory arena and memory "
                                                     "patterns (see OnnxRestorer): for teachers that do not fit")

    @field_validator("output_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"output size {v[0]}x{v[1]} must be positive")
        return v

    @field_validator("runtimes")
    @classmethod
    def _known(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [r for r in v or () if r not in RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime(s) {', '.join(unknown)}; known: {', '.join(RUNTIMES)}")
        return v


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720): width by height, as the project writes image sizes."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"{text!r}: expected a size WIDTHxHEIGHT such as 1280x720")
    return int(m.group(1)), int(m.group(2))


def input_size(output: tuple[int, int], scale: int) -> tuple[int, int]:
    """The input (width, height) whose restoration is ``output`` at ``scale``."""
    w, h = output
    if w % scale or h % scale:
        raise ConfigError(f"output size {w}x{h} is not a multiple of the SR scale x{scale}")
    return w // scale, h // scale


def available_runtimes() -> list[str]:
    """The runtimes this machine can time: the CPU ones, and the CUDA ones when a device is here."""
    found = ["pytorch-cpu", "onnxruntime-cpu"]
    if torch.cuda.is_available():
        found.append("pytorch-cuda")
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.append("onnxruntime-cuda")
    return found


# --------------------------------------------------------------------------- FLOPs
def count_flops(model: nn.Module, shape: Sequence[int]) -> tuple[int, str]:
    """FLOPs of one forward of ``model`` on a ``shape`` input, and how they were counted.

    ``FlopCounterMode`` counts convolutions and matrix products (mm, addmm, bmm, attention) at two
    FLOPs per multiply-add; element-wise ops, norms and softmax are not counted. Counted on a meta
    copy ("meta"), else with real compute on a CPU copy ("cpu"): the count is of shapes only, so
    both give the same number (checked in tests/unit/test_efficiency.py).
    """
    from torch.utils.flop_counter import FlopCounterMode

    def run(device: str) -> int:
        net = copy.deepcopy(model).to(device).eval()
        x = torch.zeros(tuple(shape), device=device)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            net(x)
        return int(counter.get_total_flops())

    try:
        return run("meta"), "meta"
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return run("cpu"), "cpu"


# --------------------------------------------------------------------------- statistics
def latency_stats(ms: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of timed runs (ms), with the runs themselves."""
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "runs": list(ms)}


def speedup_stats(teacher_ms: Sequence[float], student_ms: Sequence[float]) -> dict[str, Any]:
    """The speed-up as the median of per-round ratios teacher/student (min, max): each ratio is of two
    runs taken back to back, so a slow minute of a shared machine divides out."""
    if len(teacher_ms) != len(student_ms) or not teacher_ms:
        raise ValueError("speed-up needs the same positive number of teacher and student rounds")
    ratios = [t / s for t, s in zip(teacher_ms, student_ms)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": ratios}


# --------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class WorkerJob:
    """One (model, runtime): the file to load, the input shape (B, C, H, W), warm-up and threads."""

    runtime: str
    path: str
    shape: tuple[int, int, int, int]
    warmup: int = 1
    threads: int | None = None
    low_memory: bool = False

    @property
    def engine(self) -> str:
        return self.runtime.split("-")[0]

    @property
    def device(self) -> str:
        return self.runtime.split("-")[1]


def _peak_rss_kb() -> int:
    """Peak resident set of this process's own address space, KiB.

    Linux ``VmHWM``, not ``ru_maxrss``: a spawned worker is a fork and an exec, and Linux carries
    the parent's peak over the exec into the child's ``ru_maxrss`` (a child of a 900 MB parent
    reports 900 MB before it has loaded anything). ``ru_maxrss`` only where there is no /proc.
    """
    hwm = status_kb("VmHWM")
    if hwm:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def save_network(model: nn.Module, path: str | Path) -> Path:
    """What a PyTorch worker rebuilds the network from: its spec and weights (weights-only load)."""
    path = Path(path)
    torch.save({"spec": model.spec(), "state": model.state_dict()}, path)
    return path


def load_network(path: str | Path) -> nn.Module:
    from dckd.models import build_model

    stored = torch.load(path, map_location="cpu", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # construction is thousands of tiny ops (see preset_param_count)
    try:
        model = build_model(**stored["spec"])
    finally:
        torch.set_num_threads(threads)
    model.load_state_dict(stored["state"])
    return model.eval()


class Runner:
    """One (model, runtime) loaded and warmed up; ``step()`` times one forward of batch 1, in ms."""

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        if job.threads:
            torch.set_num_threads(job.threads)
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(job.shape, generator=g)
        self.cuda = job.device == "cuda"
        if job.engine == "pytorch":
            self.model = load_network(job.path).to(job.device)
            self.x = self.x.to(job.device)
            self._call: Callable[[], Any] = self._torch
        elif job.engine == "onnxruntime":
            from dckd.deploy.runtime import OnnxRestorer

            self.model = OnnxRestorer(job.path, device=job.device, threads=job.threads, low_memory=job.low_memory)
            self.x_np = self.x.numpy()
            self._call = self._onnx
        else:
            raise ConfigError(f"unknown runtime {job.runtime!r}")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.loaded_cuda = torch.cuda.memory_allocated()
        self.load_peak_kb = _peak_rss_kb()
        self.loaded_kb = status_kb("VmRSS")
        self.hwm_reset = reset_peak_rss()
        for _ in range(job.warmup):
            self._call()
        self._sync()

    def _torch(self) -> Any:
        with torch.inference_mode():
            return self.model(self.x)

    def _onnx(self) -> Any:
        return self.model.run_numpy(self.x_np)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def step(self) -> float:
        self._sync()
        tic = time.perf_counter()
        self._call()
        self._sync()
        return (time.perf_counter() - tic) * 1000.0

    def info(self) -> dict[str, Any]:
        """Peak memory (MiB) and the threads used; CUDA memory only for the PyTorch runtime."""
        mib = 1024.0
        hwm = _peak_rss_kb()  # since the reset after loading, where the reset works
        peak_kb = max(self.load_peak_kb, hwm)
        out: dict[str, Any] = {
            "peak_rss_mb": peak_kb / mib,
            "loaded_rss_mb": self.loaded_kb / mib,
            "inference_rss_mb": max(0, hwm - self.loaded_kb) / mib if self.loaded_kb and self.hwm_reset else None,
            "torch_threads": torch.get_num_threads(),
            "pid": os.getpid(),
        }
        if self.job.engine == "onnxruntime":
            out["providers"] = self.model.session.get_providers()
            out["ort_threads"] = self.job.threads or "default"
            out["ort_low_memory"] = self.job.low_memory
        if self.cuda:
            if self.job.engine == "pytorch":
                peak = torch.cuda.max_memory_allocated()
                out["peak_cuda_mb"] = peak / 2**20
                out["inference_cuda_mb"] = (peak - self.loaded_cuda) / 2**20
            else:
                out["peak_cuda_mb"] = out["inference_cuda_mb"] = None
        return out

    def close(self) -> None:
        """Nothing to release in-process; present so runners and process runners are used alike."""


def _serve(job: WorkerJob, conn: Any) -> None:
    """A worker process: load and warm up, then answer ``step``/``info`` until told to stop."""
    try:
        runner = Runner(job)
        conn.send(("ok", None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        name = conn.recv()
        if name == "stop":
            return
        try:
            conn.send(("ok", getattr(runner, name)()))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessRunner:
    """A :class:`Runner` in a spawned process of its own (its peak memory is its own)."""

    def __init__(self, job: WorkerJob) -> None:
        ctx = mp.get_context("spawn")
        self.job = job
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(job, child), daemon=True)
        self.proc.start()
        child.close()
        self._answer()  # loaded and warmed up (or the reason why not)

    def _answer(self) -> Any:
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=10)
            code = self.proc.exitcode
            why = " (killed: out of memory?)" if code is not None and code < 0 else ""
            raise RuntimeError(f"the {self.job.runtime} worker died with exit code {code}{why}") from None
        if status == "error":
            raise RuntimeError(value)
        return value

    def _call(self, name: str) -> Any:
        self.conn.send(name)
        return self._answer()

    def step(self) -> float:
        return self._call("step")

    def info(self) -> dict[str, Any]:
        return self._call("info")

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)


def interleaved(student: Any, teacher: Any, rounds: int, progress: Progress,
                label: str) -> tuple[list[float], list[float]]:
    """``rounds`` rounds of one student and one teacher forward, in that order; their times (ms)."""
    s_ms: list[float] = []
    t_ms: list[float] = []
    for r in range(rounds):
        for role, runner, times in (("student", student, s_ms), ("teacher", teacher, t_ms)):
            times.append(float(runner.step()))
            progress(f"efficiency: {label} round {r + 1}/{rounds}: {role} {times[-1]:.1f} ms")
    return s_ms, t_ms


# --------------------------------------------------------------------------- networks
@dataclass
class Network:
    """A resolved network and what the parent process wrote for the workers."""

    source: str
    label: str
    kind: str
    model: nn.Module
    digest: str
    files: dict[str, Path] = field(default_factory=dict)


def split_source(source: str) -> tuple[str, str | None]:
    """``PRESET=FILE`` (a BasicSR/official weights file and its architecture) -> (FILE, PRESET)."""
    from dckd.models import PRESETS

    head, sep, tail = source.partition("=")
    if sep and head in PRESETS and tail:
        return tail, head
    return source, None


def weights_digest(model: nn.Module) -> str:
    """A short digest of the spec and weights: the ONNX cache key (the same network exports once)."""
    h = hashlib.sha1(json.dumps(model.spec(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def resolve(source: str, tracking_uri: str | None = None) -> Network:
    """``source`` as a network; presets get seeded random weights, so their ONNX export caches."""
    from dckd.deploy.sources import resolve_source

    path, preset = split_source(source)
    torch.manual_seed(0)
    resolved = resolve_source(path, preset=preset, tracking_uri=tracking_uri)
    model = resolved.model.cpu().eval()
    return Network(source, resolved.label, resolved.kind, model, weights_digest(model))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "network"


def onnx_file(net: Network, cache: Path, progress: Progress) -> Path:
    """The verified ONNX export of ``net`` in ``cache`` (exported once per spec and weights)."""
    from dckd.deploy.export import export

    name = net.model.preset or Path(split_source(net.source)[0]).stem
    dst = cache / f"{_slug(name)}-{net.digest}.onnx"
    if dst.is_file():
        progress(f"efficiency: {net.label}: ONNX export cached ({dst})")
        return dst
    progress(f"efficiency: {net.label}: exporting to ONNX (verified against PyTorch) -> {dst}")
    report = export(net.model, dst, "onnx")
    progress(f"efficiency: {net.label}: exported in {report.export_s:.0f} s, max |ONNX - PyTorch| "
             f"{report.max_abs:.1e}")
    return dst


# --------------------------------------------------------------------------- one pair
def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "usable_cpus": usable,
        "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "ort_providers": ort.get_available_providers(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _model_row(net: Network, shape: tuple[int, int, int, int], flops: bool) -> dict[str, Any]:
    from dckd.models import count_params

    row: dict[str, Any] = {
        "source": net.source, "label": net.label, "kind": net.kind, "preset": net.model.preset,
        "backbone": net.model.backbone, "scale": int(net.model.scale), "params": count_params(net.model),
    }
    if flops:
        row["flops"], row["flops_method"] = count_flops(net.model, shape)
    return row


def measure_pair(pair: PairSpec, settings: EfficiencySettings, workdir: Path, onnx_cache: Path,
                 progress: Progress = print, make_runner: Callable[[WorkerJob], Any] = ProcessRunner,
                 tracking_uri: str | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
                 ) -> dict[str, Any]:
    """Build both networks, count them, then time each runtime (interleaved) and read its peak memory."""
    nets: dict[str, Network] = {}
    for role in ("teacher", "student"):
        source = getattr(pair, role)
        progress(f"efficiency: {pair.key}: building the {role} ({source})")
        nets[role] = resolve(source, tracking_uri)
    scales = {r: int(n.model.scale) for r, n in nets.items()}
    if scales["teacher"] != scales["student"]:
        raise ConfigError(f"{pair.key}: the teacher restores at x{scales['teacher']} and the student at "
                          f"x{scales['student']}; a pair must share its scale")
    scale = scales["teacher"]
    w, h = input_size(settings.output_size, scale)
    channels = meta_of(nets["teacher"].model).channels
    shape = (1, channels, h, w)
    result: dict[str, Any] = {
        "key": pair.key, "title": pair.title, "task": pair.task, "scale": scale,
        "input": [w, h], "output": [w * scale, h * scale], "runtimes": [],
    }
    for role, net in nets.items():
        progress(f"efficiency: {pair.key}: counting the {role}'s parameters and FLOPs at {w}x{h}")
        result[role] = _model_row(net, shape, settings.flops)
    t, s = result["teacher"], result["student"]
    result["param_ratio"] = t["params"] / s["params"]
    if settings.flops:
        result["flop_ratio"] = t["flops"] / s["flops"]

    runtimes = list(settings.runtimes or available_runtimes())
    for role, net in nets.items():
        net.files["pytorch"] = save_network(net.model, workdir / f"{pair.key}-{role}-{net.digest}.pt")
        if any(r.startswith("onnxruntime") for r in runtimes):
            try:
                net.files["onnxruntime"] = onnx_file(net, onnx_cache, progress)
            except Exception as exc:  # an architecture the exporter cannot express: its rows say why
                net.files["onnx_error"] = Path(str(exc).splitlines()[0][:300])
                progress(f"efficiency: {net.label}: no ONNX export: {net.files['onnx_error']}")
    for net in nets.values():
        net.model = None  # type: ignore[assignment]  # the workers load their own copies

    for runtime in runtimes:
        result["runtimes"].append(_measure_runtime(pair, runtime, nets, shape, settings, progress, make_runner))
        if on_row is not None:
            on_row(result)
    return result


def _measure_runtime(pair: PairSpec, runtime: str, nets: dict[str, Network], shape: tuple[int, int, int, int],
                     settings: EfficiencySettings, progress: Progress,
                     make_runner: Callable[[WorkerJob], Any]) -> dict[str, Any]:
    engine = runtime.split("-")[0]
    row: dict[str, Any] = {"runtime": runtime, "engine": engine, "device": runtime.split("-")[1]}
    missing = [n.files["onnx_error"] for n in nets.values() if engine == "onnxruntime" and "onnx_error" in n.files]
    if missing:
        row["error"] = f"not exported: {missing[0]}"
        return row
    label = f"{pair.key} {runtime}"
    runners: dict[str, Any] = {}
    try:
        for role in ("student", "teacher"):  # one at a time: each loads and warms up alone
            progress(f"efficiency: {label}: loading the {role} ({settings.warmup} warm-up run(s))")
            job = WorkerJob(runtime, str(nets[role].files[engine]), shape, settings.warmup, settings.threads,
                            settings.onnx_low_memory)
            runners[role] = make_runner(job)
        s_ms, t_ms = interleaved(runners["student"], runners["teacher"], settings.repeats, progress, label)
        for role, times in (("student", s_ms), ("teacher", t_ms)):
            row[role] = {"latency_ms": latency_stats(times), **runners[role].info()}
        row["speedup"] = speedup_stats(t_ms, s_ms)
        progress(f"efficiency: {label}: speed-up {row['speedup']['median']:.2f}x "
                 f"({row['speedup']['min']:.2f}-{row['speedup']['max']:.2f})")
    except RuntimeError as exc:
        row["error"] = str(exc).splitlines()[0][:300]
        progress(f"efficiency: {label}: failed: {row['error']}")
    finally:
        for runner in runners.values():
            runner.close()
    return row


def run_efficiency(pairs: Sequence[PairSpec], settings: EfficiencySettings, out: str | Path | None = None,
                   onnx_dir: str | Path | None = None, progress: Progress = print,
                   make_runner: Callable[[WorkerJob], Any] = ProcessRunner,
                   tracking_uri: str | None = None) -> dict[str, Any]:
    """Every pair measured in turn; the report (written to ``out`` after every runtime, if given)."""
    if not pairs:
        raise ConfigError("nothing to measure: no Table 1 pair and no --pair given")
    unavailable = [r for r in settings.runtimes or () if r not in available_runtimes()]
    if unavailable:
        raise ConfigError(f"runtime(s) {', '.join(unavailable)} not available here "
                          f"(available: {', '.join(available_runtimes())})")
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": settings.model_dump(mode="json"),
        "runtimes": list(settings.runtimes or available_runtimes()),
        "pairs": [],
    }
    report["settings"]["runtimes"] = report["runtimes"]
    out_dir = Path(out) if out is not None else None
    started = time.perf_counter()

    def save(partial: dict[str, Any] | None = None) -> None:
        report["elapsed_s"] = time.perf_counter() - started
        if out_dir is not None:
            snapshot = {**report, "pairs": report["pairs"] + ([partial] if partial else [])}
            write_outputs(snapshot, out_dir, plot=partial is None)

    with tempfile.TemporaryDirectory(prefix="dckd-efficiency-") as tmp:
        cache = Path(onnx_dir) if onnx_dir else (out_dir / "onnx" if out_dir is not None else Path(tmp))
        cache.mkdir(parents=True, exist_ok=True)
        for pair in pairs:
            result = measure_pair(pair, settings, Path(tmp), cache, progress, make_runner, tracking_uri,
                                  on_row=save)
            report["pairs"].append(result)
            save()
    report["elapsed_s"] = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------- table, plot, files
def _num(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _gflops(n: float) -> str:
    g = n / 1e9
    return f"{g:,.0f}" if g >= 100 else (f"{g:.1f}" if g >= 1 else f"{g:.3f}")


def _latency(stats: dict[str, Any]) -> str:
    return f"{_num(stats['median'])} ({_num(stats['min'])}–{_num(stats['max'])})"


def _memory(info: dict[str, Any], cuda: bool) -> str:
    if cuda:
        peak, rise = info.get("peak_cuda_mb"), info.get("inference_cuda_mb")
        if peak is None:
            return "n/a"
    else:
        peak, rise = info["peak_rss_mb"], info.get("inference_rss_mb")
    return f"{peak:,.0f}" + ("" if rise is None else f" (+{rise:,.0f})")


def _title(pair: dict[str, Any]) -> str:
    return pair["title"] if not pair["task"] else f"{pair['title']} ({pair['task']})"


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per pair and runtime, then footnotes saying what was measured."""
    s = report["settings"]
    flops = s.get("flops", True)
    header = ["Pair", "Runtime", "Input → output", "Params T / S", "GFLOPs T / S", "Teacher ms",
              "Student ms", "Speed-up T/S", "Teacher peak MiB", "Student peak MiB"]
    if not flops:
        header.remove("GFLOPs T / S")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["--:"] * (len(header) - 3)) + "|"]
    notes: list[str] = []
    for p in report["pairs"]:
        t, st = p["teacher"], p["student"]
        io = f"{p['input'][0]}×{p['input'][1]} → {p['output'][0]}×{p['output'][1]}"
        params = f"{_count(t['params'])} / {_count(st['params'])} ({p['param_ratio']:.1f}×)"
        gflops = (f"{_gflops(t['flops'])} / {_gflops(st['flops'])} ({p['flop_ratio']:.1f}×)" if flops else None)
        for r in p["runtimes"] or [{"runtime": "-", "error": "not measured"}]:
            cuda = r["runtime"].endswith("cuda")
            if "error" in r:
                cells = ["—"] * 5
                notes.append(f"{p['title']} {r['runtime']}: {r['error']}")
            else:
                sp = r["speedup"]
                cells = [_latency(r["teacher"]["latency_ms"]), _latency(r["student"]["latency_ms"]),
                         f"**{sp['median']:.2f}×** ({sp['min']:.2f}–{sp['max']:.2f})",
                         _memory(r["teacher"], cuda), _memory(r["student"], cuda)]
            row = [_title(p), r["runtime"], io, params, gflops, *cells]
            lines.append("| " + " | ".join(c for c in row if c is not None) + " |")
    m = report["machine"]
    rounds = f"{s['warmup']} warm-up run(s), then {s['repeats']} interleaved round(s)"
    threads = s["threads"] or f"default (torch: {m['torch_threads']}, ONNX Runtime: its default)"
    foot = [
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPU core(s); torch {m['torch']}, "
        f"ONNX Runtime {m['onnxruntime']}, Python {m['python']}; intra-op threads: {threads}."
        + (f" GPU: {m['gpu']}." if m.get("gpu") else ""),
        "",
        "- T = teacher, S = student; ratios in parentheses are teacher over student. Batch 1, fp32; "
        "inputs are the stated size (W×H) and every network returns the output size.",
    ]
    if flops:
        methods = sorted({p[r]["flops_method"] for p in report["pairs"] for r in ("teacher", "student")})
        how = "meta tensors (no compute)" if methods == ["meta"] else ", ".join(methods) + " tensors"
        foot.append(
            "- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward at the stated input, on "
            f"{how}; it counts convolutions and matrix products (including attention), at FLOPs = 2 × "
            "multiply-adds. Element-wise ops, normalisation and softmax are not counted; the padding a network "
            "adds inside (SwinIR to its window) is.")
    foot += [
        f"- Latency (ms): wall-clock time of one forward, {rounds}; each round times the student then the teacher "
        "(S T S T ...), so both sides of a ratio see the same machine. Median (min–max) over the rounds. "
        "Speed-up: median (min–max) of the per-round ratios teacher/student. PyTorch: eval mode under "
        "`torch.inference_mode`; ONNX Runtime: the file `dckd.deploy.export` wrote (verified against PyTorch), "
        "run by `OnnxRestorer` (time includes the NumPy hand-over).",
        "- Peak memory (MiB): every (model, runtime) runs in a spawned process of its own. CPU: peak resident set "
        "of that process (Linux `VmHWM`: interpreter, libraries, weights and activations; not `ru_maxrss`, which in a "
        "spawned process carries over its parent's peak), in parentheses the rise of the high-water mark over the "
        "resident set after loading the model (reset then through `/proc/self/clear_refs`), i.e. what inference adds."
        + (" CUDA: `torch.cuda.max_memory_allocated` (rise over the allocation after loading); n/a for ONNX "
           "Runtime on CUDA." if m.get("cuda") else ""),
    ]
    if s.get("onnx_low_memory"):
        foot.append("- ONNX Runtime ran with its CPU memory arena and memory-pattern planning off "
                    "(`--onnx-low-memory`): lower peaks, each forward allocates afresh.")
    if not m.get("cuda"):
        foot.append("- No CUDA device here: the CUDA runtimes were not measured.")
    elif "onnxruntime-cuda" not in report["runtimes"]:
        foot.append("- ONNX Runtime here has no CUDAExecutionProvider: onnxruntime-cuda was not measured.")
    kinds = {p[r]["kind"] for p in report["pairs"] for r in ("teacher", "student")}
    if "preset" in kinds:
        foot.append("- Presets run with random weights: speed and memory do not depend on the weights.")
    if "elapsed_s" in report:
        foot.append(f"- The whole measurement took {report['elapsed_s'] / 60:.1f} min.")
    foot += [f"- {n}" for n in notes]
    return "\n".join(lines + foot) + "\n"


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Latency (log scale, min–max whiskers) and peak inference memory of teacher and student per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = report["pairs"]
    runtimes = report["runtimes"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(max(8.0, 3.2 * len(pairs) + 2), 4.6))
    width = 0.8 / (2 * max(1, len(runtimes)))
    colors = plt.get_cmap("tab10")
    for k, runtime in enumerate(runtimes):
        for j, role in enumerate(("teacher", "student")):
            off = (2 * k + j - len(runtimes) + 0.5) * width
            xs, med, lo, hi, mem = [], [], [], [], []
            for i, p in enumerate(pairs):
                r = next((r for r in p["runtimes"] if r["runtime"] == runtime), None)
                if r is None or "error" in r:
                    if r is not None and j == 0:  # say so where the bars would be
                        for ax in (ax_t, ax_m):
                            ax.text(i + off + width / 2, 0.03, f"{runtime}: failed (see table)",
                                    transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                                    va="bottom", fontsize=7, color=colors(k))
                    continue
                lat = r[role]["latency_ms"]
                xs.append(i + off)
                med.append(lat["median"])
                lo.append(lat["median"] - lat["min"])
                hi.append(lat["max"] - lat["median"])
                cuda = runtime.endswith("cuda")
                mem.append((r[role].get("inference_cuda_mb") if cuda else r[role].get("inference_rss_mb")) or 0.0)
                if role == "student":
                    ax_t.annotate(f"{r['speedup']['median']:.1f}×", (i + off, lat["max"]), textcoords="offset points",
                                  xytext=(0, 3), ha="center", fontsize=7)
            style = {"color": colors(k), "alpha": 1.0 if role == "teacher" else 0.5,
                     "label": f"{role} · {runtime}", "width": width}
            ax_t.bar(xs, med, yerr=[lo, hi], capsize=2, **style)
            ax_m.bar(xs, mem, **style)
    labels = [p["title"] for p in pairs]
    for ax in (ax_t, ax_m):
        ax.set_xticks(range(len(pairs)), labels, fontsize=8)
        ax.set_xlim(-0.5, len(pairs) - 0.5)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("latency per image, ms (log)")
    ax_t.set_title("Latency (median, min–max); label: speed-up T/S", fontsize=9)
    ax_m.set_ylabel("peak memory added by inference, MiB")
    ax_m.set_title("Peak memory over the loaded model", fontsize=9)
    ax_m.legend(fontsize=7)
    w, h = report["settings"]["output_size"]
    fig.suptitle(f"Student vs teacher at {w}x{h} output, batch 1 — {report['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], out: str | Path, plot: bool = True) -> dict[str, Path]:
    """efficiency.md, efficiency.json and (with rows to draw) efficiency.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / "efficiency.md", "json": out / "efficiency.json"}
    files["md"].write_text(format_table(report))
    files["json"].write_text(json.dumps(report, indent=2) + "\n")
    if plot and any("error" not in r for p in report["pairs"] for r in p["runtimes"]):
        files["png"] = plot_report(report, out / "efficiency.png")
    return files
