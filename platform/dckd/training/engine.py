"""The single-machine engine: networks, one training step, EMA and history model, checkpoints.

``Engine.train_step`` is the only definition of a training step; the in-process loop
(``dckd.training.loop``) and the Ray workers both call it. Everything random in a step is seeded from
(seed, rank, iteration), and a checkpoint holds every piece of state, so a resumed run
continues exactly where an uninterrupted one would be. That includes the trainable parts of
methods other than the student (MiPKD's encoders and decoders: optimised with the student,
saved in checkpoints, never exported) and their frozen networks (MCLIR's negative copies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dckd.config import ExperimentConfig, ModelSpec
from dckd.data import derive_seed
from dckd.errors import CheckpointError, ConfigError
from dckd.losses.degradations import StepRng
from dckd.losses.fakd import fakd_layers
from dckd.losses.mipkd import MiPKDMixer, build_mixer
from dckd.models import build_model, build_preset, load_weights
from dckd.models.vqgan import VQGANFeatures
from dckd.reporting.describe import batch_note
from dckd.training.averaging import HistorySchedule, blend_into, frozen_copy
from dckd.training.checkpoint import atomic_save, capture_rng, restore_rng, safe_load
from dckd.training.schedules import lr_at
from dckd.training.step import DistillationMethod

log = logging.getLogger("dckd")

CHECKPOINT_FORMAT = "dckd-checkpoint-v1"


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


@dataclass
class HistoryState:
    """Where the history model stands in its schedule (saved with every checkpoint)."""

    updates: int = 0
    last_update: int = 0


class Engine:
    """Owns the student, its EMA copy, the frozen networks, the optimizer and the iteration."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str | None = None,
        rank: int = 0,
        wrap_student: Callable[[nn.Module], nn.Module] | None = None,
        notes: Callable[[str], None] | None = None,
        world_size: int = 1,
        sync_gradients: Callable[[list[torch.Tensor]], None] | None = None,
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

        # The student's initial weights depend only on the seed (identical on every worker).
        torch.manual_seed(cfg.seed)
        self.student = build_network(cfg.student, cfg.scale).to(self.device)
        self.ema = frozen_copy(self.student)
        self.method = DistillationMethod(cfg.method, cfg.train.frozen_chunk_rows)

        self.teacher: nn.Module | None = None
        if cfg.method.needs_teacher:
            assert cfg.teacher is not None
            self.teacher = frozen_copy(build_network(cfg.teacher, cfg.scale)).to(self.device)
            if cfg.teacher.checkpoint is None:
                self.note("teacher has no checkpoint: it distils from randomly initialised weights")

        self.history: nn.Module | None = None
        self.history_schedule: HistorySchedule | None = None
        self.history_state = HistoryState()
        if cfg.method.dcr.enabled:
            self.history = frozen_copy(self.student)
            self.history_schedule = HistorySchedule(cfg.method.dcr.history)

        self.vqgan: VQGANFeatures | None = None
        if cfg.method.needs_vqgan:
            self.vqgan = VQGANFeatures.from_spec(cfg.vqgan, log=self.note).to(self.device)

        self.mixer: MiPKDMixer | None = None
        self.negatives: list[nn.Module] = []
        self.vgg: nn.Module | None = None
        self._setup_baselines()

        self.optimizer = self._make_optimizer()
        self.train_module = wrap_student(self.student) if wrap_student else self.student
        # Data-parallel runs average the gradients of trainables other than the student (DDP
        # averages the student's); the distributed layer passes the function that does it.
        self.sync_gradients = sync_gradients
        self.iteration = 0
        # Bookkeeping of the layers above (e.g. the MLflow run id), carried in every checkpoint.
        self.extra: dict[str, Any] = {}

    # ------------------------------------------------------------------ setup
    def note(self, msg: str) -> None:
        """A fact about the run that its log and its outputs must carry (e.g. random weights)."""
        if msg not in self.notes:
            self.notes.append(msg)
            self._note(msg)

    def _setup_baselines(self) -> None:
        """Check the baseline terms against the networks and build their own networks.

        Built after everything the DCKD terms use, so those draw the same initial weights.
        """
        m = self.cfg.method
        if m.fakd.enabled:
            assert self.teacher is not None
            fakd_layers(m.fakd.student_layers, m.fakd.teacher_layers, self.student, self.teacher)
        if m.dukd.enabled:
            if self.cfg.task != "sr":
                raise ConfigError(f"method.dukd: data upcycling is for super-resolution, not {self.cfg.task}")
            if m.dukd.zoom_in_tiles > self.cfg.scale**2:
                raise ConfigError(f"method.dukd.zoom_in_tiles: at most scale**2 = {self.cfg.scale**2} tiles, "
                                  f"got {m.dukd.zoom_in_tiles}")
            if m.dukd.zoom_out and self.cfg.data.train.lq_patch % self.cfg.scale:
                raise ConfigError(f"method.dukd.zoom_out: data.train.lq_patch {self.cfg.data.train.lq_patch} "
                                  f"is not divisible by the scale {self.cfg.scale}")
        if m.mipkd.enabled:
            assert self.teacher is not None
            self.mixer = build_mixer(
                self.student, self.teacher, m.mipkd.stages, m.mipkd.latent_channels, m.mipkd.mask_prob,
                m.mipkd.switch_prob, m.mipkd.ae_weight, block=m.mipkd.block_weight > 0,
            ).to(self.device)
            if m.mipkd.block_weight > 0 and not self.mixer.block:
                self.note("MiPKD: one stage only (a network has a single block), so the block prior mixer is off")
        if m.mclir.enabled:
            from dckd.losses.perceptual import VGGFeatures  # torchvision: only when used

            # MCLIR: a fresh network blended with the student, neg = a*fresh + (1-a)*student.
            for _ in m.mclir.neg_iter:
                neg = frozen_copy(build_network(self.cfg.student, self.cfg.scale)).to(self.device)
                blend_into(neg, self.student, m.mclir.neg_start)
                self.negatives.append(neg)
            ckpt = m.mclir.vgg_checkpoint
            self.vgg = VGGFeatures(m.mclir.vgg_layers, ckpt, log=self.note if ckpt is None else log.info)
            self.vgg.to(self.device)

    @property
    def vqgan_pretrained(self) -> bool | None:
        return None if self.vqgan is None else bool(self.vqgan.pretrained)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params: list[Any] = [p for p in self.student.parameters() if p.requires_grad]
        if self.mixer is not None:  # a group of its own: same schedule, separate in the state dict
            params = [{"params": params}, {"params": list(self.mixer.parameters())}]
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    def trainable_parameters(self) -> list[torch.Tensor]:
        """What the optimizer updates: the student, and MiPKD's mixer when it is on."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        return params + ([] if self.mixer is None else list(self.mixer.parameters()))

    def lr(self, iteration: int) -> float:
        return lr_at(self.cfg.schedule, self.cfg.optim.lr, iteration, self.cfg.train.iterations)

    # ------------------------------------------------------------------ step
    def train_step(self, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached loss terms (convert with ``.item()`` when logging)."""
        t = self.iteration + 1
        lr = self.lr(t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Implicit randomness (e.g. SwinIR's stochastic depth) and explicit draws (degradations,
        # label-consistency ops) are functions of (seed, rank, iteration): resume is exact.
        torch.manual_seed(derive_seed(self.cfg.seed, self.rank, t, 0))
        rng = StepRng.seeded(derive_seed(self.cfg.seed, self.rank, t, 1), self.device)
        lq = lq.to(self.device, non_blocking=True)
        gt = gt.to(self.device, non_blocking=True)

        self.train_module.train()
        if self.mixer is not None:
            self.mixer.train()
        out = self.method.compute(
            self.train_module, lq, gt, rng, teacher=self.teacher, history=self.history, vqgan=self.vqgan,
            mixer=self.mixer, negatives=self.negatives, vgg=self.vgg,
        )
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        if self.sync_gradients is not None and self.mixer is not None:
            self.sync_gradients(list(self.mixer.parameters()))
        if self.cfg.optim.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.cfg.optim.grad_clip_norm)
        self.optimizer.step()

        blend_into(self.ema, self.student, self.cfg.train.ema_decay)
        if self.history is not None and self.history_schedule is not None and self.history_schedule.due(t):
            source = self.ema if self.cfg.method.dcr.history.track == "ema" else self.student
            blend_into(self.history, source, self.cfg.method.dcr.history.alpha)
            self.history_state = HistoryState(self.history_state.updates + 1, t)
        for neg, every in zip(self.negatives, self.cfg.method.mclir.neg_iter):
            if t % every == 0:  # MCLIR tracks the raw student, not the EMA
                blend_into(neg, self.student, self.cfg.method.mclir.neg_decay)
        self.iteration = t
        terms = {k: v.detach() for k, v in out.terms.items()}
        terms["total"] = out.total.detach()
        return terms

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; plain containers and tensors only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "history": None if self.history is None else self.history.state_dict(),
            "history_state": {"updates": self.history_state.updates,
                              "last_update": self.history_state.last_update},
            "mipkd": None if self.mixer is None else self.mixer.state_dict(),
            "mclir_negatives": [neg.state_dict() for neg in self.negatives] if self.negatives else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.cfg.schedule.name, "iteration": self.iteration,
                          "lr": self.lr(max(self.iteration, 1))},
            "rng": capture_rng(),
            "config": self.cfg.model_dump(mode="json"),
            "notes": list(self.notes),
            "extra": dict(self.extra),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "<state>") -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source}: not a dckd training checkpoint (format {state.get('format')!r})")
        try:
            self.student.load_state_dict(state["student"])
            self.ema.load_state_dict(state["ema"])
            if self.history is not None:
                if state["history"] is None:
                    raise CheckpointError(f"{source}: has no history model but this run uses DCR")
                self.history.load_state_dict(state["history"])
            if self.mixer is not None:
                if state.get("mipkd") is None:
                    raise CheckpointError(f"{source}: has no MiPKD mixer but this run uses MiPKD")
                self.mixer.load_state_dict(state["mipkd"])
            if self.negatives:
                saved = state.get("mclir_negatives") or []
                if len(saved) != len(self.negatives):
                    raise CheckpointError(
                        f"{source}: has {len(saved)} MCLIR negative models, this run uses {len(self.negatives)}"
                    )
                for neg, sd in zip(self.negatives, saved):
                    neg.load_state_dict(sd)
            self.optimizer.load_state_dict(state["optimizer"])
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: does not fit this configuration: {exc}") from exc
        hs = state["history_state"]
        self.history_state = HistoryState(int(hs["updates"]), int(hs["last_update"]))
        self.iteration = int(state["iteration"])
        self.extra = dict(state.get("extra") or {})
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
