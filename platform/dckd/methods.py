"""A distillation method as a weighted sum of loss terms, computed in one training step.

This is the one place that says how a step turns a batch into losses. Frozen networks (the
teacher, the history model, the VQGAN encoder) run in eval mode under ``no_grad``, batched:
one teacher pass for the clean and the label-consistency inputs, one history pass for all N
negatives, one frozen encoder pass for the positive and the negatives (the deep part of the
encoder and the codebook only on the positive; cut into one image set per call on a CPU, where
that is faster), and one encoder pass with gradients for the student's output that serves
both DCR and DMM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dckd.config import MethodConfig
from dckd.degradations import StepRng, negative_inputs
from dckd.losses import LabelConsistencyOps, augment, distribution_loss, dynamic_contrastive_loss, revert
from dckd.vqgan import VQGANOutput


@dataclass
class StepOutput:
    """The weighted total to back-propagate and every term (weighted) for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    student_out: torch.Tensor | None = None
    teacher_out: torch.Tensor | None = None


class DistillationMethod:
    """Holds the method's config and computes its losses; owns no trainable state."""

    def __init__(self, cfg: MethodConfig, frozen_chunk_rows: int | None = None) -> None:
        self.cfg = cfg
        self.frozen_chunk_rows = frozen_chunk_rows

    @property
    def terms(self) -> list[str]:
        return self.cfg.enabled_terms

    def compute(
        self,
        student: nn.Module,
        lq: torch.Tensor,
        gt: torch.Tensor,
        rng: StepRng,
        teacher: nn.Module | None = None,
        history: nn.Module | None = None,
        vqgan: nn.Module | None = None,
    ) -> StepOutput:
        cfg = self.cfg
        pos = t_lcr = None
        if cfg.needs_teacher:
            if teacher is None:
                raise ValueError(f"terms {self.terms} need a teacher")
            pos, t_lcr = self._teacher_targets(teacher, lq, rng)

        out = student(lq)
        terms: dict[str, torch.Tensor] = {}
        if cfg.rec.enabled:
            terms["rec"] = cfg.rec.weight * F.l1_loss(out, gt)
        if cfg.kd.enabled:
            terms["kd"] = cfg.kd.weight * F.l1_loss(out, pos)
        if cfg.lcr.enabled:
            terms["lcr"] = cfg.lcr.weight * F.l1_loss(out, t_lcr)
        if cfg.needs_vqgan:
            if vqgan is None:
                raise ValueError("DCR and DMM need the VQGAN encoder")
            negs = None
            if cfg.dcr.enabled:
                if history is None:
                    raise ValueError("DCR needs the history model")
                with torch.no_grad():
                    neg_in = negative_inputs(lq, cfg.dcr.num_negatives, cfg.dcr.degradation, rng)
                    negs = history(neg_in)
            terms.update(self.feature_terms(vqgan, out, pos, negs))
        total = sum(terms.values(), out.new_zeros(()))
        return StepOutput(total=total, terms=terms, student_out=out, teacher_out=pos)

    @torch.no_grad()
    def _teacher_targets(self, teacher: nn.Module, lq: torch.Tensor,
                         rng: StepRng) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher output on the LR input and, for LCR, on its augmented copy, in one pass."""
        if not self.cfg.lcr.enabled:
            return teacher(lq), None
        b = lq.shape[0]
        ops = LabelConsistencyOps.draw(b, self.cfg.lcr.prob, rng.cpu, square=lq.shape[-1] == lq.shape[-2])
        both = teacher(torch.cat([lq, augment(lq, ops)], dim=0))
        return both[:b], revert(both[b:], ops)

    def feature_terms(self, vqgan: nn.Module, anchor: torch.Tensor, pos: torch.Tensor,
                      negs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """DCR (Eq. 5) and DMM (Eq. 9) from one frozen and one differentiable encoder pass."""
        cfg = self.cfg
        b = anchor.shape[0]
        dmm_rows = b if cfg.dmm.enabled else 0
        with torch.no_grad():
            frozen_in = pos if negs is None else torch.cat([pos, negs], dim=0)
            frozen = self._frozen_pass(vqgan, frozen_in, dmm_rows, b)
        anc = vqgan(anchor, codebook_rows=dmm_rows)
        terms: dict[str, torch.Tensor] = {}
        if cfg.dcr.enabled:
            assert negs is not None
            dcl = dynamic_contrastive_loss(
                anc.features,
                [f[:b] for f in frozen.features],
                [f[b:] for f in frozen.features],
                cfg.dcr.level_weights,
                cfg.dcr.eps,
            )
            terms["dcr"] = cfg.dcr.weight * dcl
        if cfg.dmm.enabled:
            ce = distribution_loss(anc.logits, frozen.logits, cfg.dmm.released_double_softmax)
            terms["dmm"] = cfg.dmm.weight * ce
        return terms


    def _frozen_pass(self, vqgan: nn.Module, x: torch.Tensor, codebook_rows: int, b: int):
        """The positive and all negatives through the encoder; the codebook only for the positive.

        On a GPU this is one batched pass. On a CPU the encoder's high-resolution levels are
        memory-bound and a batch of 7 image sets runs about 1.45x slower per image than the same
        rows in chunks of one set (measured with the full-size encoder at 128x128, 2 threads),
        so there it goes one image set (``b`` rows) at a time; the work is the same.
        """
        rows = self.frozen_chunk_rows or (x.shape[0] if x.device.type != "cpu" else b)
        if rows >= x.shape[0]:
            return vqgan(x, codebook_rows=codebook_rows)
        parts = [vqgan(x[i:i + rows], codebook_rows=min(max(codebook_rows - i, 0), rows))
                 for i in range(0, x.shape[0], rows)]
        features = [torch.cat([p.features[level] for p in parts]) for level in range(len(parts[0].features))]
        logits = [p.logits for p in parts if p.logits is not None]
        return VQGANOutput(features=features, logits=torch.cat(logits) if logits else None)


class ReleasedStructureMethod(DistillationMethod):
    """The same losses computed in the structure of the authors' release, for ``dckd bench``.

    The release runs the VQGAN encoder once per image set (the anchor, the positive and each
    negative set: N + 2 calls) for DCR, and then the full encoder again on the anchor and the
    positive for DMM. Same values as ``DistillationMethod`` (the bench checks it), more work.
    """

    def feature_terms(self, vqgan: nn.Module, anchor: torch.Tensor, pos: torch.Tensor,
                      negs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b = anchor.shape[0]
        terms: dict[str, torch.Tensor] = {}
        if cfg.dcr.enabled:
            assert negs is not None
            f_a = vqgan(anchor).features
            with torch.no_grad():
                f_p = vqgan(pos).features
                per_set = [vqgan(negs[k * b:(k + 1) * b]).features for k in range(negs.shape[0] // b)]
            f_n = [torch.cat([s[level] for s in per_set], dim=0) for level in range(len(f_a))]
            dcl = dynamic_contrastive_loss(f_a, f_p, f_n, cfg.dcr.level_weights, cfg.dcr.eps)
            terms["dcr"] = cfg.dcr.weight * dcl
        if cfg.dmm.enabled:
            logits_a = vqgan(anchor).logits
            with torch.no_grad():
                logits_p = vqgan(pos).logits
            terms["dmm"] = cfg.dmm.weight * distribution_loss(logits_a, logits_p, cfg.dmm.released_double_softmax)
        return terms
