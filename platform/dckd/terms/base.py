"""What a distillation term is: its config, its own state, and its part of one training step.

This module imports neither torch nor pydantic models beyond the config base, so the config
layer can build the ``method`` section from the registry without loading torch. Term modules
follow the same rule: torch and the loss math are imported inside the methods that run them.

A step (``dckd.training.step.Step``) runs in three phases over the enabled terms, in registry
order, and the order is what makes random draws reproducible:

1. ``plan``: before the network passes. Draw this term's randomness, add rows to the ONE
   batched teacher pass or student pass, name the layers to tap.
2. ``gather``: after them. Run frozen networks of the term's own (DCR's history model) and
   request rows of the shared VQGAN encoder passes (one frozen, one differentiable).
3. ``loss``: the weighted term, from what the passes returned.

After the optimizer step, ``after_step`` updates the term's own state (history model,
MCLIR's negatives). A term's trainable parameters get an optimizer group of their own, and
its state goes into checkpoints under its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dckd.config.base import TermConfig

if TYPE_CHECKING:
    from dckd.config.experiment import ExperimentConfig


@dataclass
class TermSetup:
    """What a term may build its state from: the run, its device and its networks."""

    experiment: ExperimentConfig
    device: Any
    student: Any  # the raw student (not a DDP wrapper): layer taps and copies are taken from it
    teacher: Any | None
    note: Callable[[str], None]
    build_student: Callable[[], Any]  # a new network of the student's architecture (random init)


class Term:
    """Base of every loss term; subclasses set ``name`` and ``config`` and override what they use."""

    name: ClassVar[str]
    config: ClassVar[type[TermConfig]] = TermConfig
    #: True when the term reads the teacher's output (the step then runs the teacher pass).
    needs_teacher: ClassVar[bool] = False
    #: True when the term reads the VQGAN encoder (the run then builds it).
    needs_encoder: ClassVar[bool] = False
    #: Format-v1 checkpoints kept per-term state at the top level: {v1 key: key in this term's state};
    #: the first key is None in a v1 file whose run had the term off.
    v1_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: TermConfig) -> None:
        self.cfg = cfg

    @classmethod
    def build(cls, cfg: TermConfig, setup: TermSetup) -> Term:
        """The term for a run: builds whatever state of its own it needs from ``setup``."""
        return cls(cfg)

    @classmethod
    def check(cls, cfg: TermConfig, experiment: ExperimentConfig) -> list[str]:
        """Constraints against the rest of the experiment, checked when the config is loaded.

        Each problem is one message that starts with the dotted field it is about.
        """
        return []

    # ----------------------------------------------------------------- one step
    def plan(self, step: Any) -> None:
        """Before the network passes: draws, extra teacher/student rows, layer taps."""

    def gather(self, step: Any) -> None:
        """After the network passes: own frozen passes, requests to the shared encoder passes."""

    def loss(self, step: Any) -> Any:
        """The weighted term (a scalar tensor)."""
        raise NotImplementedError

    def after_step(self, iteration: int, student: Any, ema: Any) -> None:
        """After the optimizer step of ``iteration`` (EMA already updated)."""

    # ----------------------------------------------------------------- state
    def train(self, mode: bool = True) -> None:
        """Put the term's trainable modules in training mode (called before every step)."""

    def trainables(self) -> list[Any]:
        """Parameters the optimizer updates with the student (an optimizer group of their own)."""
        return []

    def state_dict(self) -> dict[str, Any] | None:
        """Everything of the term's own that a resumed run needs; None when it has nothing."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None, source: str) -> None:
        """Restore ``state_dict()``; ``source`` names the checkpoint in errors."""
