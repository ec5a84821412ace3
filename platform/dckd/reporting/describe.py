"""What a run trains, in words: the method, the learning-rate schedule and the batch.

One wording for ``dckd train --check``, the run's notes and the reproduction report, so that
every reproduced number says which computation and which schedule it came from.
"""

from __future__ import annotations

from dckd.config import (
    METHOD_TERMS,
    PRESET_SWITCHES,
    RELEASE_SWITCHES,
    TERM_NAMES,
    ExperimentConfig,
    MethodConfig,
    ScheduleConfig,
)

#: What the DCKD presets mean, for readers of a report.
PRESET_LEGEND = ("dckd is DCKD as the paper writes it; dckd_release is the authors' released computation "
                 "(dckd + LCR, with double-softmax DMM, shared grey noise and unclamped resize); dckd_star is "
                 "dckd + LCR + DUKD's zoom-in upcycling. Changes a cell makes to its preset are in brackets.")


def _num(value: float) -> str:
    return f"{value:g}"


def terms_summary(m: MethodConfig) -> str:
    """The enabled terms with their weights, e.g. ``rec 1 + kd 1 + dcr 0.1 (N 5, noise) + dmm 0.001``."""
    parts = []
    for name in m.enabled_terms:
        term = m.term(name)
        text = f"{name} {_num(term.weight)}"
        if name == "dcr":
            text += f" (N {m.dcr.num_negatives}, {m.dcr.degradation.type})"
        elif name == "lcr":
            text += f" (p {_num(m.lcr.prob)})"
        parts.append(text)
    return " + ".join(parts)


def method_label(m: MethodConfig) -> str:
    """The preset, and what the config changes of it: terms switched and release switches set.

    ``dckd_release``; ``dckd_release (dcr off, dmm off)``; ``dckd_star (+ double-softmax DMM,
    shared grey noise, unclamped resize)``.
    """
    preset_terms = METHOD_TERMS[m.preset]
    terms = [f"{n} {'on' if m.term(n).enabled else 'off'}" for n in TERM_NAMES
             if m.term(n).enabled != (n in preset_terms)]
    preset_switches = PRESET_SWITCHES.get(m.preset, {})
    on = [label for s, label in RELEASE_SWITCHES.items() if m.switch(s) and not preset_switches.get(s, False)]
    off = [label for s, label in RELEASE_SWITCHES.items() if not m.switch(s) and preset_switches.get(s, False)]
    changes = [", ".join(terms)] if terms else []
    if on:
        changes.append("+ " + ", ".join(on))
    if off:
        changes.append("without " + ", ".join(off))
    return m.preset + (f" ({'; '.join(changes)})" if changes else "")


def switches_summary(m: MethodConfig) -> str:
    """Every release switch and its value, e.g. ``dmm.released_double_softmax on, ...``."""
    return ", ".join(f"{s} {'on' if m.switch(s) else 'off'}" for s in RELEASE_SWITCHES)


def schedule_summary(s: ScheduleConfig, lr: float, iterations: int) -> str:
    """The learning rate over the run, e.g. ``lr 0.0001, x0.1 at 100000, 200000 (of 250000 its)``.

    Milestones at or after the last iteration never apply (BasicSR's MultiStepLR decays from
    iteration m + 1): the release's ``[250000]`` in a 250k run is a constant learning rate.
    """
    head = f"lr {_num(lr)}"
    if s.name == "constant":
        return f"{head} constant over {iterations} its"
    if s.name == "multistep":
        applied = sorted(m for m in s.milestones if m < iterations)
        if not applied:
            listed = f" (milestones {sorted(s.milestones)})" if s.milestones else ""
            return f"{head}, no decay within {iterations} its{listed}"
        return f"{head}, x{_num(s.gamma)} at {', '.join(map(str, applied))} (of {iterations} its)"
    if s.name == "cosine":
        return f"{head}, cosine to {_num(s.eta_min)} over {iterations} its"
    cycles = ", ".join(f"{p} its to {_num(e)}" for p, e in zip(s.periods, s.eta_mins))
    return f"{head}, cosine restarts ({cycles}; run of {iterations} its)"


def per_worker_batch(cfg: ExperimentConfig) -> int:
    """The batch of iteration 1 on one worker (the first stage's, with progressive learning)."""
    p = cfg.data.train.progressive
    return p.batch_sizes[0] if p is not None else cfg.train.batch_size


def batch_summary(cfg: ExperimentConfig, world_size: int) -> str:
    """``16 per worker x 4 workers = 64``, and the paper's total when it differs."""
    per = per_worker_batch(cfg)
    stage = " (first stage)" if cfg.data.train.progressive is not None else ""
    text = f"{per} per worker{stage} x {world_size} worker{'s' if world_size != 1 else ''} = {per * world_size}"
    paper = cfg.train.total_batch
    if paper is not None and paper != per * world_size:
        text += f"; paper {paper}"
    return text


def batch_note(cfg: ExperimentConfig, world_size: int) -> str | None:
    """The note a run prints before training when its total batch is not the paper's (None when it is)."""
    paper = cfg.train.total_batch
    per = per_worker_batch(cfg)
    total = per * world_size
    if paper is None or paper == total:
        return None
    stage = "first-stage " if cfg.data.train.progressive is not None else ""
    return (f"effective {stage}batch {total} ({per} per worker x {world_size} worker"
            f"{'s' if world_size != 1 else ''}) differs from the paper's {paper} (train.total_batch): "
            f"{total - paper:+d} images per step, x{total / paper:.3g}")


def run_summary(cfg: ExperimentConfig, world_size: int) -> list[str]:
    """The lines ``dckd train --check`` prints above the config (as YAML comments)."""
    m = cfg.method
    lines = [f"method: {method_label(m)} = {terms_summary(m)}"]
    if m.needs_vqgan:
        lines.append(f"release switches: {switches_summary(m)}")
    lines.append(f"schedule: {schedule_summary(cfg.schedule, cfg.optim.lr, cfg.train.iterations)}")
    lines.append(f"batch: {batch_summary(cfg, world_size)}")
    if cfg.train.precision != "fp32":  # resolved on each worker's device when it starts (no torch here)
        lines.append(f"precision: {cfg.train.precision} (auto: bf16 on a CUDA device with bf16 or a CPU with AMX "
                     "or AVX-512 BF16, else fp32; the run log says which and why)"
                     if cfg.train.precision == "auto" else "precision: bf16 network passes, fp32 losses and state")
    if (note := batch_note(cfg, world_size)) is not None:
        lines.append(f"note: {note}")
    return lines
