"""bf16 training steps: where bf16 is chosen, how far its losses may be from fp32's, exact resume.

The tolerance of each loss term is derived, not picked: bf16 changes only the network passes
(their results come back in fp32), so each term is its fp32 formula applied to inputs that
moved by the bf16 rounding of the passes. The test records the inputs of every loss function
in both precisions and checks the bf16 value against the interval those moved inputs allow:

- L1 terms (rec, kd, lcr): | mean|a'-b'| - mean|a-b| | <= mean|a'-a| + mean|b'-b| (triangle
  inequality; exact).
- DCR (Eq. 5), per level: d_ap moves by at most e_a + e_p, each d_an_j by at most e_a + e_nj
  (e_x = mean|x'-x| at that level), so the ratio lies in
  [(d_ap - D_ap) / (d_an + D_an + eps), (d_ap + D_ap) / (d_an - D_an + eps)]; the weighted sum
  over levels adds the intervals (positive weights).
- DMM (Eq. 9): with m_s, m_t the largest logit changes, log-softmax moves by at most 2 m_s
  and each teacher probability by a factor in [exp(-2 m_t), exp(2 m_t)], so, -log p_s being
  >= 0, CE' lies in [exp(-2 m_t) (CE - 2 m_s), exp(2 m_t) (CE + 2 m_s)].

Each bound gets 1e-6 relative slack for the fp32 rounding of the formula itself. The bound
fails if a loss were reduced in bf16 (its value would round to 8 bits beyond what its inputs
explain) or if a pass returned something other than a rounding of the fp32 one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import dckd.losses as losses
from dckd.config import load_config
from dckd.training import precision as precision_mod
from dckd.training.checkpoint import safe_load
from dckd.training.engine import Engine, seeded_rng
from dckd.training.loop import latest_checkpoint, train_local
from dckd.training.precision import resolve_precision
from tests.conftest import tiny_config_dict

SLACK = 1e-6  # relative: fp32 rounding of the loss formulas themselves


def test_auto_picks_bf16_only_where_the_cpu_runs_it_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_mod, "cpu_bf16_flags", lambda: ())
    p = resolve_precision("auto", cpu)
    assert p.name == "fp32" and "neither amx_bf16 nor avx512_bf16" in p.reason
    forced = resolve_precision("bf16", cpu)
    assert forced.name == "bf16" and "emulated" in forced.reason
    monkeypatch.setattr(precision_mod, "cpu_bf16_flags", lambda: ("amx_bf16", "avx512_bf16"))
    p = resolve_precision("auto", cpu)
    assert p.name == "bf16" and "amx_bf16 and avx512_bf16" in p.reason
    assert resolve_precision("fp32", cpu).name == "fp32"
    with pytest.raises(ValueError, match="train.precision"):
        resolve_precision("fp16", cpu)


def _engine(tmp_path: Path, hr_folder: Path, method: str = "dckd", **train: Any) -> Engine:
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", method=method, **train))
    return Engine(cfg, notes=lambda _m: None)


def _batch(engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    lq = torch.rand(2, 3, 8, 8, generator=g)
    return lq, torch.rand(2, 3, 16, 16, generator=g)


def _recorded_losses(engine: Engine, precision: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple, float]]:
    """(function, detached inputs, value) of every loss function the step calls, in that precision."""
    calls: list[tuple[str, tuple, float]] = []

    def wrap(name: str, fn: Any) -> Any:
        def recorder(*args: Any, **kwargs: Any) -> Any:
            value = fn(*args, **kwargs)
            detached = tuple([t.detach().clone() for t in a] if isinstance(a, (list, tuple)) and a and
                             isinstance(a[0], torch.Tensor) else a.detach().clone() if isinstance(a, torch.Tensor)
                             else a for a in args)
            calls.append((name, detached, float(value)))
            return value
        return recorder

    with monkeypatch.context() as m:
        m.setattr(F, "l1_loss", wrap("l1", F.l1_loss))
        m.setattr(losses, "dynamic_contrastive_loss", wrap("dcr", losses.dynamic_contrastive_loss))
        m.setattr(losses, "distribution_loss", wrap("dmm", losses.distribution_loss))
        engine.precision = resolve_precision(precision, engine.device)
        lq, gt = _batch(engine)
        torch.manual_seed(11)
        with torch.no_grad():
            engine.compute(lq, gt, seeded_rng(engine.cfg.seed, 0, 1, engine.device))
    return calls


def _mean_abs(x: torch.Tensor) -> float:
    return float(x.double().abs().mean())


def _l1_interval(ref: tuple, low: tuple, value: float) -> tuple[float, float]:
    (a, b), (a2, b2) = ref[:2], low[:2]
    d = _mean_abs(a2 - a) + _mean_abs(b2 - b)
    return value - d, value + d


def _dcr_interval(ref: tuple, low: tuple) -> tuple[float, float]:
    (anc, pos, neg, weights, eps), (anc2, pos2, neg2) = ref[:5], low[:3]
    lo = hi = 0.0
    for a, p, n, a2, p2, n2, w in zip(anc, pos, neg, anc2, pos2, neg2, weights):
        if w == 0:
            continue
        b = a.shape[0]
        sets, sets2 = n.view(-1, *a.shape), n2.view(-1, *a.shape)
        e_a, e_p = _mean_abs(a2 - a), _mean_abs(p2 - p)
        d_ap = _mean_abs(a - p)
        d_an = sum(_mean_abs(a - s) for s in sets)
        big_d_an = sum(e_a + _mean_abs(s2 - s) for s, s2 in zip(sets, sets2))
        assert d_an > big_d_an, "the bound needs negatives farther from the anchor than the rounding moves them"
        lo += w * max(d_ap - (e_a + e_p), 0.0) / (d_an + big_d_an + eps)
        hi += w * (d_ap + e_a + e_p) / (d_an - big_d_an + eps)
        assert b == sets.shape[1]
    return lo, hi


def _dmm_interval(ref: tuple, low: tuple, value: float) -> tuple[float, float]:
    (s, t), (s2, t2) = ref[:2], low[:2]
    m_s, m_t = float((s2 - s).abs().max()), float((t2 - t).abs().max())
    return math.exp(-2 * m_t) * (value - 2 * m_s), math.exp(2 * m_t) * (value + 2 * m_s)


def test_bf16_loss_terms_lie_within_what_the_rounding_of_the_passes_allows(
        tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(tmp_path, hr_folder)
    ref = _recorded_losses(engine, "fp32", monkeypatch)
    low = _recorded_losses(engine, "bf16", monkeypatch)
    assert [c[0] for c in ref] == [c[0] for c in low] and {"l1", "dcr", "dmm"} <= {c[0] for c in ref}
    report = []
    for (name, args, value), (_, args2, value2) in zip(ref, low):
        tensors = [t for a in args2 for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]
        assert all(t.dtype == torch.float32 for t in tensors), f"{name}: a loss input is not fp32"
        if name == "l1":
            lo, hi = _l1_interval(args, args2, value)
        elif name == "dcr":
            lo, hi = _dcr_interval(args, args2)
        else:
            lo, hi = _dmm_interval(args, args2, value)
        slack = SLACK * abs(value)
        assert lo - slack <= value2 <= hi + slack, f"{name}: bf16 {value2} outside [{lo}, {hi}] (fp32 {value})"
        report.append((name, abs(value2 - value) / abs(value), max(hi - value, value - lo) / abs(value)))
    # the bf16 passes do move the values (this is not fp32 twice), each within its own bound
    assert any(rel > 0 for _, rel, _ in report)
    print("\n".join(f"{n}: relative difference {r:.2e}, derived tolerance {t:.2e}" for n, r, t in report))


def test_bf16_step_keeps_parameters_ema_history_and_optimizer_state_fp32(tmp_path: Path, hr_folder: Path) -> None:
    engine = _engine(tmp_path, hr_folder, precision="bf16")
    assert engine.precision.name == "bf16"
    lq, gt = _batch(engine)
    terms = engine.train_step(lq, gt)
    assert all(v.dtype == torch.float32 for v in terms.values())
    nets = [engine.student, engine.ema, engine.terms["dcr"].history]  # type: ignore[attr-defined]
    assert all(p.dtype == torch.float32 for net in nets for p in net.state_dict().values() if p.is_floating_point())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in engine.student.parameters())
    for state in engine.optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def test_bf16_resume_is_exact(tmp_path: Path, hr_folder: Path) -> None:
    """bf16 on the CPU is deterministic: interrupted at 4 and resumed, the run ends bit for bit as a straight one."""
    straight = tiny_config_dict(hr_folder, tmp_path / "straight", iterations=8, ckpt_every=4, precision="bf16")
    s = train_local(load_config(data=straight), progress=False)
    assert s["precision"] == "bf16" and any("precision bf16" in n for n in s["notes"])
    split = dict(straight, output_dir=str(tmp_path / "split"))
    train_local(load_config(data=split), stop_at=4, progress=False)
    train_local(load_config(data=split), progress=False)
    a, b = safe_load(latest_checkpoint(tmp_path / "straight")), safe_load(latest_checkpoint(tmp_path / "split"))
    assert a["iteration"] == b["iteration"] == 8
    for part in ("student", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=0, atol=0, msg=f"{part}.{k}")
    for k, v in a["terms"]["dcr"]["history"].items():
        torch.testing.assert_close(b["terms"]["dcr"]["history"][k], v, rtol=0, atol=0, msg=k)


def test_channels_last_changes_layout_not_losses(tmp_path: Path, hr_folder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _recorded_losses(_engine(tmp_path, hr_folder), "fp32", monkeypatch)
    engine = _engine(tmp_path, hr_folder, channels_last=True)
    assert engine.student.net.head[0].weight.is_contiguous(memory_format=torch.channels_last)  # type: ignore
    assert any("channels-last layout" in n for n in engine.notes)
    cl = _recorded_losses(engine, "fp32", monkeypatch)
    for (name, _, v), (_, _, v2) in zip(plain, cl):
        assert v2 == pytest.approx(v, rel=1e-5), name


def test_compile_failure_falls_back_to_eager_with_a_note(tmp_path: Path, hr_folder: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _recorded_losses(_engine(tmp_path, hr_folder), "fp32", monkeypatch)

    def broken_at_first_call(fn: Any, **_kw: Any) -> Any:
        def call(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("inductor: no C++ compiler\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken_at_first_call)
    engine = _engine(tmp_path, hr_folder, compile=True)
    got = _recorded_losses(engine, "fp32", monkeypatch)
    assert [v for *_, v in got] == [v for *_, v in reference]  # the eager networks, same values
    failed = [n for n in engine.notes if "failed" in n]
    assert len(failed) == 2 and "RuntimeError: inductor: no C++ compiler" in failed[0] and "eagerly" in failed[0]
    assert engine.teacher is not None and engine.teacher._compiled_call_impl is None

    def refuses(fn: Any, **_kw: Any) -> Any:
        raise RuntimeError("dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuses)
    engine = _engine(tmp_path, hr_folder, compile=True)
    assert sum("could not be compiled" in n for n in engine.notes) == 2


def test_loader_workers_default_to_none_on_cpu_and_to_the_workers_cpus_on_a_gpu(tmp_path: Path,
                                                                               hr_folder: Path) -> None:
    from dckd.training.loop import loader_workers

    d = tiny_config_dict(hr_folder, tmp_path / "run")
    cfg = load_config(data=d)
    assert cfg.data.train.num_workers is None
    assert loader_workers(cfg, torch.device("cpu"))[0] == 0
    n, rule = loader_workers(cfg, torch.device("cuda"), cpus=6)
    assert n == 5 and "ray.cpus_per_worker=6" in rule
    assert loader_workers(cfg, torch.device("cuda"), cpus=32)[0] == 8
    assert loader_workers(cfg, torch.device("cuda"), cpus=1)[0] == 0
    d["data"]["train"]["num_workers"] = 3
    assert loader_workers(load_config(data=d), torch.device("cpu")) == (3, "data.train.num_workers")
