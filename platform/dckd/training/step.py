"""One training step's shared network passes, gathered from every term's requests.

This is the one place that says how a step turns a batch into losses. The terms
(``dckd.terms``) say what they need; the step runs it once for all of them. Frozen networks
(the teacher, the VQGAN encoder) run in eval mode under ``no_grad``, batched: ONE teacher
pass for the clean input and every term's extra rows (LCR's augmented copy, DUKD's zoom-in
tiles), ONE student pass for the clean input and the extra rows of the LR size, layer taps as
forward hooks on those same passes (FAKD, MiPKD: the teacher never runs twice for them), and
for the VQGAN encoder ONE frozen pass over the positive and every negative (the codebook
only on the positive; cut into one image set per call on a CPU, where that is faster) and
ONE differentiable pass over the student's output that serves DCR and DMM. DCR's history
pass over all N negatives is the DCR term's own (one pass, in ``gather``, through ``frozen``).

Precision (``dckd.training.precision``): every network pass runs in the run's autocast region
and its results leave it in fp32, so the terms' losses are computed in fp32 outside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from dckd.losses import tap_outputs
from dckd.losses.degradations import StepRng
from dckd.models.vqgan import VQGANOutput
from dckd.terms.base import Term
from dckd.training.precision import FP32_CPU, Precision, to_fp32

#: How the VQGAN encoder passes are organised: "shared" (the step's one frozen and one
#: differentiable pass) or "released" (the authors' structure: per term and per image set;
#: same values, more work, for ``dckd bench``).
EncoderStructure = Literal["shared", "released"]


@dataclass
class StepOutput:
    """The weighted total to back-propagate and every term (weighted) for logging."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    student_out: Tensor | None = None
    teacher_out: Tensor | None = None


class _Rows:
    """Extra rows of one batched pass: added before it runs, sliced out after."""

    def __init__(self, first: Tensor) -> None:
        self.parts = [first]
        self.result: Tensor | None = None

    def add(self, x: Tensor) -> int:
        self.parts.append(x)
        return len(self.parts) - 1

    def input(self) -> Tensor:
        return self.parts[0] if len(self.parts) == 1 else torch.cat(self.parts, dim=0)

    def slice(self, slot: int) -> Tensor:
        assert self.result is not None, "the pass has not run yet"
        start = sum(p.shape[0] for p in self.parts[:slot])
        return self.result[start:start + self.parts[slot].shape[0]]


class EncoderPasses:
    """The VQGAN encoder's passes of one step: requests gathered, then run once when first read.

    Terms request the features and/or codebook logits of the anchor (the student's output, with
    gradients) and the positive (the teacher's output), plus frozen rows of their own (DCR's
    negatives). ``shared`` runs one frozen pass over ``[positive, *frozen rows]`` and one
    differentiable pass over the anchor; ``released`` runs what the authors' code runs: per
    reading, one encoder call per image set.
    """

    def __init__(self, encoder: nn.Module, anchor: Tensor, positive: Tensor, chunk_rows: int | None,
                 structure: EncoderStructure = "shared", precision: Precision = FP32_CPU) -> None:
        self.anchor, self.positive = anchor, positive
        self.precision = precision
        self._net = encoder
        self.chunk_rows, self.structure = chunk_rows, structure
        self.b = anchor.shape[0]
        self._extra: list[Tensor] = []
        self._codebook = False
        self._frozen: VQGANOutput | None = None
        self._anchor: VQGANOutput | None = None

    def request(self, features: bool = False, codebook: bool = False, frozen_rows: Tensor | None = None) -> int:
        """Ask for features and/or codebook logits; returns a handle for ``frozen_features``."""
        assert self._frozen is None, "requests come before the passes run (in Term.gather)"
        self._codebook = self._codebook or codebook
        if frozen_rows is None:
            return -1
        self._extra.append(frozen_rows)
        return len(self._extra) - 1

    def encoder(self, x: Tensor, codebook_rows: int | None = None) -> VQGANOutput:
        """One encoder call in the run's precision; features and logits come back in fp32."""
        with self.precision.autocast():
            out = self._net(x, codebook_rows=codebook_rows)
        return VQGANOutput(features=to_fp32(out.features), logits=to_fp32(out.logits))

    # ----------------------------------------------------------------- reading
    def anchor_features(self) -> list[Tensor]:
        if self.structure == "released":
            return self.encoder(self.anchor).features
        return self._run()[1].features

    def positive_features(self) -> list[Tensor]:
        if self.structure == "released":
            with torch.no_grad():
                return self.encoder(self.positive).features
        return [f[:self.b] for f in self._run()[0].features]

    def frozen_features(self, handle: int) -> list[Tensor]:
        rows = self._extra[handle]
        if self.structure == "released":
            b = self.b
            with torch.no_grad():
                per_set = [self.encoder(rows[k * b:(k + 1) * b]).features for k in range(rows.shape[0] // b)]
            return [torch.cat([s[level] for s in per_set], dim=0) for level in range(len(per_set[0]))]
        start = self.b + sum(x.shape[0] for x in self._extra[:handle])
        return [f[start:start + rows.shape[0]] for f in self._run()[0].features]

    def anchor_logits(self) -> Tensor:
        if self.structure == "released":
            return self.encoder(self.anchor).logits
        logits = self._run()[1].logits
        assert logits is not None, "codebook logits were not requested"
        return logits

    def positive_logits(self) -> Tensor:
        if self.structure == "released":
            with torch.no_grad():
                return self.encoder(self.positive).logits
        logits = self._run()[0].logits
        assert logits is not None, "codebook logits were not requested"
        return logits

    # ----------------------------------------------------------------- the shared passes
    def _run(self) -> tuple[VQGANOutput, VQGANOutput]:
        if self._frozen is None or self._anchor is None:
            rows = self.b if self._codebook else 0
            with torch.no_grad():
                frozen_in = torch.cat([self.positive, *self._extra], dim=0) if self._extra else self.positive
                self._frozen = self._frozen_pass(frozen_in, rows)
            self._anchor = self.encoder(self.anchor, codebook_rows=rows)
        return self._frozen, self._anchor

    def _frozen_pass(self, x: Tensor, codebook_rows: int) -> VQGANOutput:
        """The positive and all negatives through the encoder; the codebook only for the positive.

        On a GPU this is one batched pass. On a CPU the encoder's high-resolution levels are
        memory-bound and a batch of 7 image sets runs about 1.45x slower per image than the same
        rows in chunks of one set (measured with the full-size encoder at 128x128, 2 threads),
        so there it goes one image set (``b`` rows) at a time; the work is the same.
        """
        b = self.b
        rows = self.chunk_rows or (x.shape[0] if x.device.type != "cpu" else b)
        if rows >= x.shape[0]:
            return self.encoder(x, codebook_rows=codebook_rows)
        parts = [self.encoder(x[i:i + rows], codebook_rows=min(max(codebook_rows - i, 0), rows))
                 for i in range(0, x.shape[0], rows)]
        features = [torch.cat([p.features[level] for p in parts]) for level in range(len(parts[0].features))]
        logits = [p.logits for p in parts if p.logits is not None]
        return VQGANOutput(features=features, logits=torch.cat(logits) if logits else None)


class Step:
    """One batch's passes and what terms read from them.

    Built per step by ``run_step``; terms use ``teacher_rows``/``student_rows``/``tap`` in
    ``plan``, ``encoder.request`` in ``gather``, and the results in ``loss``.
    """

    def __init__(self, lq: Tensor, gt: Tensor, rng: StepRng, student: nn.Module, teacher: nn.Module | None,
                 encoder: nn.Module | None, chunk_rows: int | None = None,
                 encoder_structure: EncoderStructure = "shared", precision: Precision = FP32_CPU) -> None:
        self.lq, self.gt, self.rng = lq, gt, rng
        self.precision = precision
        self.student, self.teacher, self._encoder_net = student, teacher, encoder
        self.b = lq.shape[0]
        self.chunk_rows, self.encoder_structure = chunk_rows, encoder_structure
        self._teacher_rows = _Rows(lq)
        self._student_rows = _Rows(lq)
        self._s_tap_names: list[str] = []
        self._t_tap_names: list[str] = []
        self.s_taps: dict[str, Tensor] = {}
        self.t_taps: dict[str, Tensor] = {}
        self.out: Tensor | None = None
        self.teacher_out: Tensor | None = None
        self._encoder: EncoderPasses | None = None

    # ----------------------------------------------------------------- requests (Term.plan)
    def teacher_rows(self, x: Tensor) -> int:
        """Add rows to the step's one teacher pass; read them back with ``teacher_result``."""
        return self._teacher_rows.add(x)

    def student_rows(self, x: Tensor) -> int:
        """Add rows of the LR size to the step's one student pass; read with ``student_result``."""
        return self._student_rows.add(x)

    def tap(self, student: Sequence[str] = (), teacher: Sequence[str] = ()) -> None:
        """Keep the outputs of these modules from the two passes (in ``s_taps`` / ``t_taps``)."""
        self._s_tap_names += list(student)
        self._t_tap_names += list(teacher)

    # ----------------------------------------------------------------- results
    def teacher_result(self, slot: int) -> Tensor:
        return self._teacher_rows.slice(slot)

    def student_result(self, slot: int) -> Tensor:
        return self._student_rows.slice(slot)

    @property
    def encoder(self) -> EncoderPasses:
        """The VQGAN encoder passes (anchor: the student's output, positive: the teacher's)."""
        if self._encoder is None:
            if self._encoder_net is None or self.out is None or self.teacher_out is None:
                raise ValueError("the VQGAN encoder passes need the encoder, the student's and the teacher's outputs")
            self._encoder = EncoderPasses(self._encoder_net, self.out, self.teacher_out, self.chunk_rows,
                                          self.encoder_structure, self.precision)
        return self._encoder

    # ----------------------------------------------------------------- the passes
    def frozen(self, net: nn.Module, x: Tensor) -> Tensor:
        """A frozen network's pass (no_grad, the run's precision), returned in fp32."""
        with torch.no_grad(), self.precision.autocast():
            return to_fp32(net(x))

    def forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """A differentiable pass (e.g. the student on extra inputs) in the run's precision, in fp32."""
        with self.precision.autocast():
            return to_fp32(net(x))

    def run_networks(self, with_teacher: bool) -> None:
        """The one teacher pass (no_grad) and the one student pass, with the requested taps."""
        if with_teacher:
            if self.teacher is None:
                raise ValueError("these terms need a teacher")
            with torch.no_grad(), tap_outputs(self.teacher, self._t_tap_names, "teacher layers") as t_taps, \
                    self.precision.autocast():
                self._teacher_rows.result = to_fp32(self.teacher(self._teacher_rows.input()))
            self.t_taps = to_fp32(dict(t_taps))
            self.teacher_out = self.teacher_result(0)
        with tap_outputs(self.student, self._s_tap_names, "student layers") as s_taps, self.precision.autocast():
            self._student_rows.result = to_fp32(self.student(self._student_rows.input()))
        self.s_taps = to_fp32(dict(s_taps))
        self.out = self.student_result(0)


def run_step(terms: Iterable[Term], lq: Tensor, gt: Tensor, rng: StepRng, student: nn.Module,
             teacher: nn.Module | None = None, encoder: nn.Module | None = None, *,
             chunk_rows: int | None = None, encoder_structure: EncoderStructure = "shared",
             precision: Precision = FP32_CPU) -> StepOutput:
    """Every term's loss for one batch: plan, the shared passes, gather, losses (registry order)."""
    terms = list(terms)
    step = Step(lq, gt, rng, student, teacher, encoder, chunk_rows, encoder_structure, precision)
    for term in terms:
        term.plan(step)
    step.run_networks(with_teacher=any(t.needs_teacher for t in terms))
    for term in terms:
        term.gather(step)
    losses = {term.name: term.loss(step) for term in terms}
    assert step.out is not None
    total = sum(losses.values(), step.out.new_zeros(()))
    return StepOutput(total=total, terms=losses, student_out=step.out, teacher_out=step.teacher_out)
