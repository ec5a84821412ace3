"""A distillation method as a weighted sum of loss terms, computed in one training step.

This is the one place that says how a step turns a batch into losses. Frozen networks (the
teacher, the history model, the VQGAN encoder) run in eval mode under ``no_grad``, batched:
one teacher pass for the clean and the label-consistency inputs (and DUKD's zoom-in tiles,
which have the LR size; the zoom-out input is smaller and takes a second pass), one history
pass for all N negatives, one frozen encoder pass for the positive and the negatives (the deep
part of the encoder and the codebook only on the positive; cut into one image set per call on
a CPU, where that is faster), and one encoder pass with gradients for the student's output that
serves both DCR and DMM. Feature-level terms (FAKD, MiPKD) read intermediate maps through
forward hooks on those same passes: the teacher never runs twice for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dckd.config import MethodConfig
from dckd.losses import (
    LabelConsistencyOps,
    augment,
    distribution_loss,
    dynamic_contrastive_loss,
    fakd_layers,
    fakd_loss,
    revert,
    tap_outputs,
)
from dckd.losses.degradations import StepRng, negative_inputs
from dckd.losses.mipkd import MiPKDMixer
from dckd.losses.upcycling import zoom_in_tiles, zoom_out
from dckd.models.vqgan import VQGANOutput


@dataclass
class StepOutput:
    """The weighted total to back-propagate and every term (weighted) for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    student_out: torch.Tensor | None = None
    teacher_out: torch.Tensor | None = None


class DistillationMethod:
    """Holds the method's config and computes its losses; owns no trainable state.

    Networks with state of their own (MiPKD's mixer, MCLIR's negatives and VGG) are the
    engine's, passed in per call like the teacher.
    """

    def __init__(self, cfg: MethodConfig, frozen_chunk_rows: int | None = None) -> None:
        self.cfg = cfg
        self.frozen_chunk_rows = frozen_chunk_rows
        self._fakd_names: tuple[list[str], list[str]] | None = None

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
        *,
        mixer: MiPKDMixer | None = None,
        negatives: Sequence[nn.Module] | None = None,
        vgg: nn.Module | None = None,
    ) -> StepOutput:
        cfg = self.cfg
        b = lq.shape[0]
        pos = t_lcr = t_tiles = tiles = tile_ops = s_tiles = None
        s_names, t_names = self._tap_names(student, teacher, mixer)
        t_taps: dict[str, torch.Tensor] = {}
        if cfg.needs_teacher:
            if teacher is None:
                raise ValueError(f"terms {self.terms} need a teacher")
            lcr_ops = self._draw_lcr(lq, rng) if cfg.lcr.enabled else None
            if cfg.dukd.enabled:
                tiles, tile_ops = self._zoom_in(lq, gt, rng)
            with tap_outputs(teacher, t_names, "teacher layers") as t_taps:
                pos, t_lcr, t_tiles = self._teacher_targets(teacher, lq, lcr_ops, tiles)

        with tap_outputs(student, s_names, "student layers") as s_taps:
            if tiles is None:
                out = student(lq)
            else:  # the clean LR and the augmented tiles share the LR size: one student pass
                both = student(torch.cat([lq, augment(tiles, tile_ops)], dim=0))
                out, s_tiles = both[:b], revert(both[b:], tile_ops)
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
        if cfg.fakd.enabled:
            s_layers, t_layers = self._fakd_names or ([], [])
            terms["fakd"] = cfg.fakd.weight * fakd_loss(
                [s_taps[n][:b] for n in s_layers], [t_taps[n][:b] for n in t_layers], cfg.fakd.eps
            )
        if cfg.mipkd.enabled:
            assert mixer is not None and teacher is not None and pos is not None
            l_feat, l_block = mixer.losses(student, teacher, s_taps, t_taps, pos, rng.cpu, rng.device)
            term = cfg.mipkd.weight * l_feat
            if l_block is not None and cfg.mipkd.block_weight:
                term = term + cfg.mipkd.block_weight * l_block
            terms["mipkd"] = term
        if cfg.dukd.enabled:
            assert teacher is not None and t_tiles is not None and s_tiles is not None
            terms["dukd"] = self._dukd_term(student, teacher, lq, s_tiles, t_tiles)
        if cfg.mclir.enabled:
            if not negatives or vgg is None:
                raise ValueError("MCLIR needs its negative models and the VGG network")
            from dckd.losses.perceptual import negative_perceptual_distance  # torchvision: only when used

            with torch.no_grad():
                negs = torch.cat([neg(lq) for neg in negatives], dim=0)
            dist = negative_perceptual_distance(vgg, out, negs, cfg.mclir.layer_weights)
            terms["mclir"] = -cfg.mclir.weight * dist
        total = sum(terms.values(), out.new_zeros(()))
        return StepOutput(total=total, terms=terms, student_out=out, teacher_out=pos)

    def _tap_names(self, student: nn.Module, teacher: nn.Module | None,
                   mixer: MiPKDMixer | None) -> tuple[list[str], list[str]]:
        """Modules whose outputs the student and the teacher pass must keep (FAKD, MiPKD)."""
        s_names: list[str] = []
        t_names: list[str] = []
        if self.cfg.fakd.enabled:
            if teacher is None:
                raise ValueError("FAKD needs a teacher")
            if self._fakd_names is None:
                f = self.cfg.fakd
                self._fakd_names = fakd_layers(f.student_layers, f.teacher_layers, student, teacher)
            s_names += self._fakd_names[0]
            t_names += self._fakd_names[1]
        if self.cfg.mipkd.enabled:
            if mixer is None:
                raise ValueError("MiPKD needs its mixer (the engine builds it)")
            s_names += mixer.student_plan.taps
            t_names += mixer.teacher_plan.taps
        return s_names, t_names

    def _draw_lcr(self, lq: torch.Tensor, rng: StepRng) -> LabelConsistencyOps:
        return LabelConsistencyOps.draw(lq.shape[0], self.cfg.lcr.prob, rng.cpu, square=lq.shape[-1] == lq.shape[-2])

    def _zoom_in(self, lq: torch.Tensor, gt: torch.Tensor,
                 rng: StepRng) -> tuple[torch.Tensor, LabelConsistencyOps]:
        """DUKD's zoom-in tiles of the GT patch and the label-consistency ops the student sees them with."""
        scale = gt.shape[-1] // lq.shape[-1]
        tiles = zoom_in_tiles(gt, scale, self.cfg.dukd.zoom_in_tiles, rng.cpu)
        ops = LabelConsistencyOps.draw(tiles.shape[0], self.cfg.dukd.lcr_prob, rng.cpu,
                                       square=tiles.shape[-1] == tiles.shape[-2])
        return tiles, ops

    @torch.no_grad()
    def _teacher_targets(
        self, teacher: nn.Module, lq: torch.Tensor, lcr_ops: LabelConsistencyOps | None,
        tiles: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Teacher output on the LR input, on its LCR copy (reverted) and on DUKD's tiles, in one pass."""
        if lcr_ops is None and tiles is None:
            return teacher(lq), None, None
        b = lq.shape[0]
        parts = [lq]
        if lcr_ops is not None:
            parts.append(augment(lq, lcr_ops))
        if tiles is not None:
            parts.append(tiles)
        every = teacher(torch.cat(parts, dim=0))
        t_lcr = revert(every[b:2 * b], lcr_ops) if lcr_ops is not None else None
        t_tiles = every[len(parts[:-1]) * b:] if tiles is not None else None
        return every[:b], t_lcr, t_tiles

    def _dukd_term(self, student: nn.Module, teacher: nn.Module, lq: torch.Tensor, s_tiles: torch.Tensor,
                   t_tiles: torch.Tensor) -> torch.Tensor:
        """w*L1(S(tiles), T(tiles)) and, with zoom-out, w_pix*L1(S(x_down), x) + w*L1(S(x_down), T(x_down)).

        Part of the step's one summed loss, as the DUKD paper writes it (its code takes a second
        optimizer step on the upcycled data instead).
        """
        cfg = self.cfg
        loss = cfg.dukd.weight * F.l1_loss(s_tiles, t_tiles)
        if cfg.dukd.zoom_out:
            small = zoom_out(lq, s_tiles.shape[-1] // lq.shape[-1])  # tiles have the LR size
            with torch.no_grad():
                t_small = teacher(small)
            s_small = student(small)
            loss = loss + cfg.rec.weight * F.l1_loss(s_small, lq) + cfg.dukd.weight * F.l1_loss(s_small, t_small)
        return loss

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
