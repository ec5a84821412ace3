"""L_dukd: DUKD's data upcycling (Zhang et al. 2023): teacher-labelled zoom-in tiles and zoom-out pairs.

The zoom-in tiles have the LR size, so they ride in the step's one teacher pass and one
student pass; the zoom-out input is smaller and takes a pass of its own.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dckd.config.base import NonNegative, TermConfig
from dckd.terms.base import Term


class DUKDConfig(TermConfig):
    """DUKD data upcycling (Zhang et al. 2023): teacher-labelled zoom-in tiles and zoom-out pairs.

    ``weight`` is DUKD's w_kd on the upcycled data; the zoom-out reconstruction reuses ``rec.weight``.
    """

    weight: NonNegative = 1.0
    zoom_in_tiles: int = Field(default=1, ge=1, description="GT tiles per sample (at most scale**2)")
    zoom_out: bool = False
    lcr_prob: float = Field(default=0.3, ge=0.0, le=1.0, description="student-side label consistency on tiles")


class DUKD(Term):
    name = "dukd"
    config = DUKDConfig
    needs_teacher = True

    def __init__(self, cfg: DUKDConfig, rec_weight: float = 1.0) -> None:
        super().__init__(cfg)
        self.rec_weight = rec_weight  # the zoom-out reconstruction reuses L_rec's weight

    @classmethod
    def build(cls, cfg: DUKDConfig, setup: Any) -> DUKD:
        return cls(cfg, setup.experiment.method.rec.weight)

    @classmethod
    def check(cls, cfg: DUKDConfig, experiment: Any) -> list[str]:
        if experiment.task != "sr":
            return [f"method.dukd: data upcycling is for super-resolution, not {experiment.task}"]
        problems = []
        scale = experiment.scale
        if cfg.zoom_in_tiles > scale**2:
            problems.append(f"method.dukd.zoom_in_tiles: at most scale**2 = {scale**2} tiles, got {cfg.zoom_in_tiles}")
        t = experiment.data.train
        patches = [t.lq_patch] if t.progressive is None else list(t.progressive.lq_patches)
        if cfg.zoom_out and any(p % scale for p in patches):
            bad = next(p for p in patches if p % scale)
            problems.append(f"method.dukd.zoom_out: data.train.lq_patch {bad} is not divisible by the scale {scale}")
        return problems

    def plan(self, step: Any) -> None:
        from dckd.losses import LabelConsistencyOps, augment
        from dckd.losses.upcycling import zoom_in_tiles

        lq, gt = step.lq, step.gt
        tiles = zoom_in_tiles(gt, gt.shape[-1] // lq.shape[-1], self.cfg.zoom_in_tiles, step.rng.cpu)
        self._ops = LabelConsistencyOps.draw(tiles.shape[0], self.cfg.lcr_prob, step.rng.cpu,
                                             square=tiles.shape[-1] == tiles.shape[-2])
        self._teacher_rows = step.teacher_rows(tiles)
        self._student_rows = step.student_rows(augment(tiles, self._ops))

    def loss(self, step: Any) -> Any:
        """w*L1(S(tiles), T(tiles)) and, with zoom-out, w_pix*L1(S(x_down), x) + w*L1(S(x_down), T(x_down)).

        Part of the step's one summed loss, as the DUKD paper writes it (its code takes a second
        optimizer step on the upcycled data instead).
        """
        import torch.nn.functional as F

        from dckd.losses import revert
        from dckd.losses.upcycling import zoom_out

        s_tiles = revert(step.student_result(self._student_rows), self._ops)
        loss = self.cfg.weight * F.l1_loss(s_tiles, step.teacher_result(self._teacher_rows))
        if self.cfg.zoom_out:
            lq = step.lq
            small = zoom_out(lq, s_tiles.shape[-1] // lq.shape[-1])  # tiles have the LR size
            t_small = step.frozen(step.teacher, small)
            s_small = step.forward(step.student, small)
            loss = loss + self.rec_weight * F.l1_loss(s_small, lq) + self.cfg.weight * F.l1_loss(s_small, t_small)
        return loss
