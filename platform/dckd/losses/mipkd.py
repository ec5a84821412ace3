"""MiPKD (Li et al., ICLR 2025): feature and block prior mixers.

No official code exists (see ../shared/notes/baselines.md §4); what the paper is known to do
is followed, and every detail below marked *choice* is this platform's:

* Feature prior mixer, at the end of each of K stages: separate CNN encoders map the teacher
  and student maps into a shared latent space, a random binary mask over (C, H, W) takes each
  latent element from the teacher (probability ``mask_prob``, *choice* 0.5) or the student, a
  decoder maps the mix back to the teacher's feature space and L1 pulls it to the teacher map;
  an auto-encoder loss ``L1(D_T(E_T(F_T)), F_T)`` trains the teacher branch. Encoders and
  decoders are conv3x3 - LeakyReLU - conv3x3 (*choice*); L_feat is the mean over stages.
* Block prior mixer: from the mixed latent after stage 1, each later stage is run by the
  student (probability ``switch_prob``, *choice* 0.5) or the teacher. The latent is decoded
  into the chosen network's space (a second, student-side decoder exists for this, *choice*),
  and after the stage it is mixed again with the other network's own map at that point (same
  mask); the last stage's network finishes the image (its own tail and global skip), and L1
  pulls that output to the teacher's output.

Stages are runs of a backbone's repeated blocks (RCAN residual groups, SwinIR RSTBs); the
features come from forward hooks on the ordinary forward passes (``dckd.losses.fakd.tap_outputs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dckd.errors import ConfigError
from dckd.losses.fakd import architecture

BLOCKS = {"rcan": "body", "swinir": "layers"}
STEMS = {"rcan": "head", "swinir": "conv_first"}


@dataclass(frozen=True)
class StagePlan:
    """Where one network is cut: the stem's module, and each stage's block range and end module."""

    backbone: str
    channels: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def stem(self) -> str:
        return STEMS[self.backbone]

    @property
    def boundaries(self) -> list[str]:
        return [f"{BLOCKS[self.backbone]}.{end - 1}" for _, end in self.ranges]

    @property
    def taps(self) -> list[str]:
        return [self.stem, *self.boundaries]


def _backbone(net: nn.Module) -> str:
    return str(getattr(getattr(net, "module", net), "backbone", type(architecture(net)).__name__))


def block_count(net: nn.Module) -> int:
    """Repeated blocks a backbone can be cut between (ConfigError for one without stage definitions)."""
    backbone, arch = _backbone(net), architecture(net)
    if backbone == "rcan":
        if getattr(arch, "downscale_factor", 1) != 1:
            raise ConfigError("method.mipkd: RCAN with unshuffle_mod has no stage definition")
        return len(arch.body) - 1  # the last module of the body is the body-end conv
    if backbone == "swinir":
        if getattr(arch, "start_unshuffle", 1) > 1 or arch.upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise ConfigError(f"method.mipkd: SwinIR with upsampler {arch.upsampler!r} has no stage definition")
        return len(arch.layers)
    raise ConfigError(f"method.mipkd: no stage definitions for backbone {backbone!r} (supported: rcan, swinir)")


def stage_plan(net: nn.Module, stages: int) -> StagePlan:
    """``stages`` contiguous runs of the network's blocks, as even as integer division allows."""
    n = block_count(net)
    if not 1 <= stages <= n:
        raise ConfigError(f"method.mipkd.stages: {stages} stages, but the {_backbone(net)} network has {n} blocks")
    arch = architecture(net)
    channels = arch.embed_dim if _backbone(net) == "swinir" else arch.head[-1].out_channels
    ranges = tuple(((k * n) // stages, ((k + 1) * n) // stages) for k in range(stages))
    return StagePlan(_backbone(net), int(channels), ranges)


def run_stage(net: nn.Module, plan: StagePlan, k: int, feat: Tensor) -> Tensor:
    """Stage ``k`` of ``net`` on a (B, C, H, W) map, as its own forward would run it."""
    arch = architecture(net)
    start, end = plan.ranges[k]
    if plan.backbone == "rcan":
        for i in range(start, end):
            feat = arch.body[i](feat)
        return feat
    b, c, h, w = feat.shape
    tokens = feat.flatten(2).transpose(1, 2)
    for i in range(start, end):
        tokens = arch.layers[i](tokens, (h, w))
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def run_tail(net: nn.Module, plan: StagePlan, feat: Tensor, skip: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """From the last stage's map to the image, with the network's own global skip and upsampler."""
    arch = architecture(net)
    if plan.backbone == "rcan":
        x = arch.tail(arch.body[-1](feat) + skip)
        x = arch.add_mean(x) / arch.rgb_range
    else:
        h, w = feat.shape[-2:]
        tokens = arch.norm(feat.flatten(2).transpose(1, 2))
        x = arch.conv_after_body(arch.patch_unembed(tokens, (h, w))) + skip
        if arch.upsampler == "pixelshuffle":
            x = arch.conv_last(arch.upsample(arch.conv_before_upsample(x)))
        else:
            x = arch.upsample(x)
        x = x / arch.img_range + arch.mean
    return x[..., : out_hw[0], : out_hw[1]]


def _coder(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, c_out, 3, padding=1)
    )


def random_mask(shape: torch.Size | tuple[int, ...], prob: float, generator: torch.Generator,
                device: torch.device, dtype: torch.dtype) -> Tensor:
    """A binary (B, C, H, W) mask: 1 (take the teacher's latent) with probability ``prob`` per element."""
    return (torch.rand(shape, generator=generator, device=device) < prob).to(dtype)


def mix(z_teacher: Tensor, z_student: Tensor, mask: Tensor) -> Tensor:
    """``I * E_T(F_T) + (1 - I) * E_S(F_S)``."""
    return mask * z_teacher + (1.0 - mask) * z_student


class MiPKDMixer(nn.Module):
    """The trainable part of MiPKD: per stage, encoders E_S, E_T, decoder D_T and (block mixer) D_S.

    Trained with the student (same optimizer), saved in training checkpoints, never exported.
    """

    def __init__(self, student_plan: StagePlan, teacher_plan: StagePlan, latent_channels: int | None = None,
                 mask_prob: float = 0.5, switch_prob: float = 0.5, ae_weight: float = 1.0,
                 block: bool = True) -> None:
        super().__init__()
        if len(student_plan.ranges) != len(teacher_plan.ranges):
            raise ConfigError("method.mipkd.stages: student and teacher must be cut into as many stages")
        self.student_plan, self.teacher_plan = student_plan, teacher_plan
        self.mask_prob, self.switch_prob, self.ae_weight = mask_prob, switch_prob, ae_weight
        cs, ct = student_plan.channels, teacher_plan.channels
        cz = latent_channels or ct
        k = len(student_plan.ranges)
        self.enc_s = nn.ModuleList(_coder(cs, cz, cz) for _ in range(k))
        self.enc_t = nn.ModuleList(_coder(ct, cz, cz) for _ in range(k))
        self.dec_t = nn.ModuleList(_coder(cz, ct, cz) for _ in range(k))
        # The block path decodes into the student's space after stages 0 .. K-2 only.
        self.block = block and k > 1
        self.dec_s = nn.ModuleList(_coder(cz, cs, cz) for _ in range(k - 1)) if self.block else None

    @property
    def stages(self) -> int:
        return len(self.student_plan.ranges)

    def draw(self, latent_shapes: list[torch.Size], device: torch.device, dtype: torch.dtype,
             cpu: torch.Generator, dev: torch.Generator) -> tuple[list[Tensor], list[bool]]:
        """One mask per stage end (on ``dev``) and one switch per later stage (True: the student's)."""
        masks = [random_mask(s, self.mask_prob, dev, device, dtype) for s in latent_shapes]
        switches = [bool(torch.rand((), generator=cpu) < self.switch_prob) for _ in range(self.stages - 1)]
        return masks, switches

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor],
                     masks: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """L_feat: mean over stages of ``L1(D_T(mix), F_T) + ae_weight * L1(D_T(E_T(F_T)), F_T)``.

        Returns the loss and the mixed latents (the block path starts from the first one).
        """
        total = s_feats[0].new_zeros(())
        latents = []
        for k, (fs, ft, m) in enumerate(zip(s_feats, t_feats, masks)):
            ft = ft.detach()
            z_t = self.enc_t[k](ft)
            z = mix(z_t, self.enc_s[k](fs), m)
            latents.append(z)
            loss = F.l1_loss(self.dec_t[k](z), ft)
            if self.ae_weight:
                loss = loss + self.ae_weight * F.l1_loss(self.dec_t[k](z_t), ft)
            total = total + loss
        return total / len(s_feats), latents

    def block_output(self, student: nn.Module, teacher: nn.Module, s_feats: list[Tensor], t_feats: list[Tensor],
                     s_skip: Tensor, t_skip: Tensor, first_latent: Tensor, masks: list[Tensor],
                     switches: list[bool], out_hw: tuple[int, int]) -> Tensor:
        """The image of the stochastically assembled network (stages 1 .. K-1 drawn by ``switches``)."""
        if not self.block or self.dec_s is None:
            raise RuntimeError("the block prior mixer needs at least two stages")
        z = first_latent
        y, use_student = s_feats[0], True
        for k in range(1, self.stages):
            use_student = switches[k - 1]
            net, plan = (student, self.student_plan) if use_student else (teacher, self.teacher_plan)
            x = (self.dec_s if use_student else self.dec_t)[k - 1](z)
            y = run_stage(net, plan, k, x)
            if k < self.stages - 1:
                if use_student:
                    z = mix(self.enc_t[k](t_feats[k].detach()), self.enc_s[k](y), masks[k])
                else:
                    z = mix(self.enc_t[k](y), self.enc_s[k](s_feats[k]), masks[k])
        if use_student:
            return run_tail(student, self.student_plan, y, s_skip, out_hw)
        return run_tail(teacher, self.teacher_plan, y, t_skip.detach(), out_hw)

    def losses(self, student: nn.Module, teacher: nn.Module, s_taps: Mapping[str, Tensor],
               t_taps: Mapping[str, Tensor], teacher_out: Tensor, rng_cpu: torch.Generator,
               rng_dev: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(L_feat, L_block or None) from the tapped maps of one student and one teacher pass.

        ``t_taps`` may hold more rows than the student's batch (the teacher pass also ran the
        label-consistency copy or upcycled tiles); the first B rows are the clean LR input.
        """
        b = teacher_out.shape[0]
        s_feats = [s_taps[n][:b] for n in self.student_plan.boundaries]
        t_feats = [t_taps[n][:b] for n in self.teacher_plan.boundaries]
        cz = self.enc_s[0][-1].out_channels
        shapes = [torch.Size((b, cz, *f.shape[-2:])) for f in s_feats]
        masks, switches = self.draw(shapes, s_feats[0].device, s_feats[0].dtype, rng_cpu, rng_dev)
        l_feat, latents = self.feature_loss(s_feats, t_feats, masks)
        if not self.block:
            return l_feat, None
        out = self.block_output(student, teacher, s_feats, t_feats, s_taps[self.student_plan.stem][:b],
                                t_taps[self.teacher_plan.stem][:b], latents[0], masks, switches,
                                tuple(teacher_out.shape[-2:]))
        return l_feat, F.l1_loss(out, teacher_out.detach())


def build_mixer(student: nn.Module, teacher: nn.Module, stages: int | str = "auto",
                latent_channels: int | None = None, mask_prob: float = 0.5, switch_prob: float = 0.5,
                ae_weight: float = 1.0, block: bool = True) -> MiPKDMixer:
    """A mixer for this pair: ``auto`` cuts both into min(4, student blocks, teacher blocks) stages."""
    if _backbone(student) != _backbone(teacher):
        raise ConfigError(
            f"method.mipkd: student ({_backbone(student)}) and teacher ({_backbone(teacher)}) must share a backbone"
        )
    k = min(4, block_count(student), block_count(teacher)) if stages == "auto" else int(stages)
    return MiPKDMixer(stage_plan(student, k), stage_plan(teacher, k), latent_channels, mask_prob,
                      switch_prob, ae_weight, block)
