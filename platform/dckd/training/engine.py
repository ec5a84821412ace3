"""The single-machine engine: the student, its EMA copy, the optimizer, the terms, checkpoints.

``Engine.train_step`` is the only definition of a training step; the loop (``dckd.training.loop``)
runs it for local and Ray runs alike. Everything random in a step is seeded from (seed, rank,
iteration), and a checkpoint holds every piece of state, so a resumed run continues exactly
where an uninterrupted one would be. What a loss term keeps of its own (networks, schedules,
trainable parts) is the term's (``dckd.terms``): the engine builds the enabled terms from the
registry, gives their trainables an optimizer group each, calls them after every optimizer
step and saves their state under their names. It names no term.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dckd.config import ExperimentConfig, ModelSpec
from dckd.data import derive_seed
from dckd.errors import CheckpointError, NonFiniteLossError
from dckd.losses.degradations import StepRng
from dckd.models import build_model, build_preset, load_weights
from dckd.models.vqgan import VQGANFeatures
from dckd.reporting.describe import batch_note
from dckd.terms.base import Term, TermSetup
from dckd.terms.registry import TERMS
from dckd.training.averaging import blend_into, frozen_copy
from dckd.training.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng,
    restore_rng,
    safe_load,
    upgrade,
)
from dckd.training.precision import resolve_precision
from dckd.training.schedules import lr_at
from dckd.training.speedups import apply_channels_last, compile_frozen
from dckd.training.step import EncoderStructure, StepOutput, run_step

log = logging.getLogger("dckd")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_network(spec: ModelSpec, scale: int) -> nn.Module:
    """A network from its config section, with weights loaded when a checkpoint is given."""
    if spec.preset is not None:
        model = build_preset(spec.preset, **spec.args)
    else:
        model = build_model(spec.resolved_backbone, dict(spec.args), scale)
    if spec.checkpoint is not None:
        load_weights(model, spec.checkpoint, key=spec.checkpoint_key)
    return model


class Engine:
    """Owns the student, its EMA copy, the shared frozen networks, the terms, the optimizer, the iteration."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str | None = None,
        rank: int = 0,
        wrap_student: Callable[[nn.Module], nn.Module] | None = None,
        notes: Callable[[str], None] | None = None,
        world_size: int = 1,
        sync_gradients: Callable[[list[torch.Tensor]], None] | None = None,
        any_rank: Callable[[bool], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.device = resolve_device(cfg.train.device) if device is None else torch.device(device)
        self.notes: list[str] = []
        self._note = notes or (lambda msg: log.warning(msg))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if (differs := batch_note(cfg, world_size)) is not None:
            self.note(differs)

        # The student's initial weights depend only on the seed (identical on every worker);
        # then the shared frozen networks, then the terms' own, always in this order.
        torch.manual_seed(cfg.seed)
        self.student = build_network(cfg.student, cfg.scale).to(self.device)
        self.ema = frozen_copy(self.student)

        self.teacher: nn.Module | None = None
        if cfg.method.needs_teacher:
            assert cfg.teacher is not None
            self.teacher = frozen_copy(build_network(cfg.teacher, cfg.scale)).to(self.device)
            if cfg.teacher.checkpoint is None:
                self.note("teacher has no checkpoint: it distils from randomly initialised weights")
        self.vqgan: VQGANFeatures | None = None
        if cfg.method.needs_vqgan:
            self.vqgan = VQGANFeatures.from_spec(cfg.vqgan, log=self.note).to(self.device)

        # How the passes compute: bf16 (autocast) or fp32; a layout and compiled frozen networks
        # where asked for. None of these changes a parameter, a state dict or a checkpoint.
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if cfg.train.precision != "fp32":
            self.note(self.precision.describe())
        if cfg.train.channels_last:
            apply_channels_last(self._conv_networks(), self.note)
        if cfg.train.compile:  # in place: the modules keep their names, hooks and state dicts
            compile_frozen(self.teacher, "teacher", self.note)
            compile_frozen(self.vqgan, "VQGAN encoder", self.note)

        setup = TermSetup(experiment=cfg, device=self.device, student=self.student, teacher=self.teacher,
                          note=self.note, build_student=lambda: build_network(cfg.student, cfg.scale))
        self.terms: dict[str, Term] = {name: TERMS[name].build(cfg.method.term(name), setup)
                                      for name in cfg.method.enabled_terms}
        #: "released" runs the VQGAN passes in the authors' structure (``dckd bench`` only).
        self.encoder_structure: EncoderStructure = "shared"

        self.optimizer = self._make_optimizer()
        self.train_module = wrap_student(self.student) if wrap_student else self.student
        # Data-parallel runs average the gradients of trainables other than the student (DDP
        # averages the student's); the distributed layer passes the function that does it.
        self.sync_gradients = sync_gradients
        # Whether a flag is set on any worker (an all-reduce in data-parallel runs): every worker
        # must take the same decision about a non-finite loss, or the others hang in the next step.
        self.any_rank = any_rank or (lambda flag: flag)
        self.iteration = 0
        # Bookkeeping of the layers above (e.g. the MLflow run id), carried in every checkpoint.
        self.extra: dict[str, Any] = {}
        #: The stored config of the checkpoint this engine resumed from (None: a fresh start).
        self.resumed_config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def note(self, msg: str) -> None:
        """A fact about the run that its log and its outputs must carry (e.g. random weights)."""
        if msg not in self.notes:
            self.notes.append(msg)
            self._note(msg)

    def _conv_networks(self) -> list[tuple[str, nn.Module]]:
        """The networks that are convolutional throughout (channels-last candidates)."""
        conv = ("rcan", "nafnet")
        nets: list[tuple[str, nn.Module]] = []
        if self.cfg.student.resolved_backbone in conv:
            nets.append(("student", self.student))
            nets.append(("EMA student", self.ema))
        if self.teacher is not None and self.cfg.teacher is not None and self.cfg.teacher.resolved_backbone in conv:
            nets.append(("teacher", self.teacher))
        if self.vqgan is not None:
            nets.append(("VQGAN encoder", self.vqgan))
        return nets

    @property
    def vqgan_pretrained(self) -> bool | None:
        return None if self.vqgan is None else bool(self.vqgan.pretrained)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """Adam(W) over the student and, in a group of its own each, every term's trainables."""
        o = self.cfg.optim
        params: list[Any] = [p for p in self.student.parameters() if p.requires_grad]
        extra = [group for term in self.terms.values() if (group := term.trainables())]
        if extra:  # groups share the schedule and stay separate in the state dict
            params = [{"params": params}] + [{"params": group} for group in extra]
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    def term_trainables(self) -> list[torch.Tensor]:
        return [p for term in self.terms.values() for p in term.trainables()]

    def trainable_parameters(self) -> list[torch.Tensor]:
        """What the optimizer updates: the student, and the trainable parts of terms."""
        return [p for p in self.student.parameters() if p.requires_grad] + self.term_trainables()

    def lr(self, iteration: int) -> float:
        return lr_at(self.cfg.schedule, self.cfg.optim.lr, iteration, self.cfg.train.iterations)

    # ------------------------------------------------------------------ step
    def compute(self, lq: torch.Tensor, gt: torch.Tensor, rng: StepRng) -> StepOutput:
        """Every enabled term's loss on one batch (on the device), without an optimizer step."""
        if self.cfg.train.channels_last and lq.dim() == 4:
            lq = lq.contiguous(memory_format=torch.channels_last)
        return run_step(self.terms.values(), lq, gt, rng, self.train_module, self.teacher, self.vqgan,
                        chunk_rows=self.cfg.train.frozen_chunk_rows, encoder_structure=self.encoder_structure,
                        precision=self.precision)

    def train_step(self, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached loss terms (convert with ``.item()`` when logging)."""
        t = self.iteration + 1
        lr = self.lr(t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Implicit randomness (e.g. SwinIR's stochastic depth) and explicit draws (degradations,
        # label-consistency ops) are functions of (seed, rank, iteration): resume is exact.
        torch.manual_seed(derive_seed(self.cfg.seed, self.rank, t, 0))
        rng = seeded_rng(self.cfg.seed, self.rank, t, self.device)
        lq = lq.to(self.device, non_blocking=True)
        gt = gt.to(self.device, non_blocking=True)

        self.train_module.train()
        for term in self.terms.values():
            term.train()
        out = self.compute(lq, gt, rng)
        self.optimizer.zero_grad(set_to_none=True)
        skipped = self.any_rank(not bool(torch.isfinite(out.total))) and self._nonfinite(t, out)
        if not skipped:
            out.total.backward()
            if self.sync_gradients is not None and (extra := self.term_trainables()):
                self.sync_gradients(extra)
            if self.cfg.optim.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.cfg.optim.grad_clip_norm)
            self.optimizer.step()

        # A skipped step still advances the EMA and the terms' schedules, so that every later
        # iteration does what it would have done (history updates stay on their iterations).
        blend_into(self.ema, self.student, self.cfg.train.ema_decay)
        for term in self.terms.values():
            term.after_step(t, self.student, self.ema)
        self.iteration = t
        terms = {k: v.detach() for k, v in out.terms.items()}
        terms["total"] = out.total.detach()
        if skipped:
            terms["_skipped"] = torch.tensor(1.0)
        return terms

    def _nonfinite(self, t: int, out: StepOutput) -> bool:
        """A NaN/Inf loss (here or on another worker): stop (raise) or, with ``on_nonfinite: skip``,
        count the step and return True (its update is dropped)."""
        bad = {k: float(v.detach()) for k, v in out.terms.items() if not bool(torch.isfinite(v))}
        where = (", ".join(f"{k} = {v}" for k, v in bad.items()) if bad else
                 f"total = {float(out.total.detach())}" if not bool(torch.isfinite(out.total)) else "on another worker")
        if self.cfg.train.on_nonfinite == "skip":
            self.extra["nonfinite_skipped"] = int(self.extra.get("nonfinite_skipped", 0)) + 1
            self.note("train.on_nonfinite=skip: steps with a non-finite loss were skipped "
                      "(their count is nonfinite_skipped in metrics.jsonl, MLflow and the summary)")
            self._note(f"iteration {t}: non-finite loss ({where}): update skipped")
            return True
        terms = ", ".join(f"'{k}'" for k in bad) or "total"
        raise NonFiniteLossError(
            f"iteration {t}: the loss term {terms} is not finite ({where}); the run stopped before this update "
            "(set train.on_nonfinite=skip to drop such steps instead)")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; plain containers and tensors only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "terms": {name: state for name, term in self.terms.items() if (state := term.state_dict()) is not None},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.cfg.schedule.name, "iteration": self.iteration,
                          "lr": self.lr(max(self.iteration, 1))},
            "rng": capture_rng(),
            "config": self.cfg.stored(),  # URL passwords masked: checkpoints travel (MLflow, S3)
            "notes": list(self.notes),
            "extra": dict(self.extra),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "<state>") -> None:
        """Restore ``state_dict()`` (or a format-v1 checkpoint, converted on the way in)."""
        state = upgrade(state, TERMS, source)
        saved = state.get("terms") or {}
        try:
            self.student.load_state_dict(state["student"])
            self.ema.load_state_dict(state["ema"])
            for name, term in self.terms.items():
                if term.state_dict() is not None and saved.get(name) is None:
                    raise CheckpointError(f"{source}: has no state of the term {name!r}, which this run uses")
                term.load_state_dict(saved.get(name), source)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{source}: does not fit this configuration: {exc}") from exc
        self.iteration = int(state["iteration"])
        self.extra = dict(state.get("extra") or {})
        self.resumed_config = state.get("config")
        restore_rng(state["rng"])

    def save(self, path: str | Path) -> Path:
        return atomic_save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(safe_load(path), source=str(path))

    def export_weights(self, path: str | Path) -> Path:
        """The student in BasicSR's release format (``params`` and ``params_ema``)."""
        return atomic_save({"params": self.student.state_dict(), "params_ema": self.ema.state_dict()}, path)

    def eval_model(self) -> nn.Module:
        return self.ema if self.cfg.eval.weights == "ema" else self.student


def seeded_rng(seed: int, rank: int, iteration: int, device: torch.device) -> StepRng:
    """The step's explicit random source, as ``Engine.train_step`` makes it (for tools and tests)."""
    return StepRng.seeded(derive_seed(seed, rank, iteration, 1), device)
