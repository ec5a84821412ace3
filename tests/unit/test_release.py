"""``method.preset: dckd_release`` against the authors' released computation.

The reference below restates the release's ``DCKDModel.optimize_parameters`` and its losses
(super-SSS/DCKD: ``basicsr/models/dckd_model.py``, ``basicsr/losses/basic_loss.py``
``ContrasLoss``/``CELoss``, ``basicsr/archs/vqgan_arch.py`` ``get_feas``/``VectorQuantizerD``)
in plain torch on taming's own ``Encoder`` modules: one encoder call per image set, the
negatives stacked as the release stacks them, the full ``Encoder.forward`` again for DMM, the
codebook softmax of ``d_max - d`` fed to ``F.cross_entropy`` as probabilities. It shares no
code with ``dckd.training.step`` beyond the networks themselves.

The step is made deterministic as the release allows: degradation probabilities 0 (every
negative input is the clean LR) and label-consistency probability 1 (all four operations on
every image).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dckd.config import ModelSpec, load_config
from dckd.losses.degradations import StepRng
from dckd.models.vqgan import VQGANFeatures, VQGANSpec
from dckd.terms.dcr import DCR
from dckd.terms.dmm import DMM
from dckd.terms.kd import KD
from dckd.terms.lcr import LCR
from dckd.terms.rec import Rec
from dckd.training.engine import build_network
from dckd.training.step import run_step
from tests.conftest import photo_crops, tiny_config_dict

SCALE = 2
LR = 16  # HR 32: divisible by the encoder's 16


def release_noising(imgs: torch.Tensor, revert: bool = False) -> torch.Tensor:
    """The release's ``noising`` with every operation drawn: i(nvert), h-flip, v-flip, t(ranspose)."""
    imgs = imgs.clone()
    if revert:
        imgs = imgs.transpose(-2, -1)
        imgs = imgs.flip(dims=(-1,))
        imgs = imgs.flip(dims=(-2,))
        return 1.0 - imgs
    imgs = 1.0 - imgs
    imgs = imgs.flip(dims=(-2,))
    imgs = imgs.flip(dims=(-1,))
    return imgs.transpose(-2, -1)


def release_get_feas(encoder, xs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``Encoder.get_feas``: per image set, the output of block 0 of every down level."""
    out: list[list[torch.Tensor]] = [[] for _ in range(encoder.num_resolutions)]
    for x in xs:
        hs = [encoder.conv_in(x)]
        for i_level in range(encoder.num_resolutions):
            for i_block in range(encoder.num_res_blocks):
                h = encoder.down[i_level].block[i_block](hs[-1], None)
                if i_block == 0:
                    out[i_level].append(h)
                    if i_level == encoder.num_resolutions - 1:
                        break
                if len(encoder.down[i_level].attn) > 0:
                    h = encoder.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != encoder.num_resolutions - 1:
                hs.append(encoder.down[i_level].downsample(hs[-1]))
    return out


def release_contras(latents: list[list[torch.Tensor]], weights: list[float], loss_weight: float) -> torch.Tensor:
    """``ContrasLoss.L1_forward``."""
    loss = 0
    for i in range(len(latents)):
        anc, pos = latents[i][0], latents[i][1]
        d_ap = torch.mean(torch.abs(anc - pos))
        negs = torch.stack(latents[i][2:])
        d_an = torch.mean(torch.abs(anc - negs).sum(0))
        loss += weights[i] * (d_ap / (d_an + 1e-7))
    return loss_weight * loss


def release_encode(vq: VQGANFeatures, x: torch.Tensor) -> torch.Tensor:
    """``VQGAN.encode``: encoder -> quant_conv -> ``VectorQuantizerD``'s softmax of d_max - d."""
    z = vq.quant_conv(vq.encoder(x))
    z = z.permute(0, 2, 3, 1).contiguous()
    zf = z.view(-1, vq.spec.embed_dim)
    emb = vq.quantize.embedding.weight
    d = torch.sum(zf ** 2, dim=1, keepdim=True) + torch.sum(emb ** 2, dim=1) - 2 * torch.einsum("bd,dn->bn", zf, emb.t())
    d_max = torch.max(d, dim=1, keepdim=True).values
    return F.softmax(d_max - d, dim=1)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher = build_network(ModelSpec(preset=f"swinir_tiny_x{SCALE}_teacher"), SCALE).eval().requires_grad_(False)
    student = build_network(ModelSpec(preset=f"swinir_tiny_x{SCALE}_student"), SCALE)
    # The history model has the student's architecture; here other weights, so that d_an > 0.
    history = build_network(ModelSpec(preset=f"swinir_tiny_x{SCALE}_student"), SCALE).eval().requires_grad_(False)
    spec = VQGANSpec(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(4,), z_channels=8,
                     embed_dim=8, n_embed=32, resolution=64)
    vqgan = VQGANFeatures(spec)
    with torch.no_grad():  # move norms and biases off their identity init so that they matter
        for p in vqgan.parameters():
            p.add_(0.05 * torch.randn_like(p))
    crops = photo_crops(size=LR * SCALE, count=3)
    gt = torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in crops])
    lq = F.interpolate(gt, scale_factor=1 / SCALE, mode="bicubic", align_corners=False).clamp(0, 1)
    return teacher, student, history, vqgan, lq, gt


def dckd_terms(m, history) -> list:
    """The enabled DCKD terms in registry order, DCR with the given history model."""
    made = {"rec": Rec(m.rec), "kd": KD(m.kd), "dcr": DCR(m.dcr, history), "dmm": DMM(m.dmm), "lcr": LCR(m.lcr)}
    return [made[name] for name in m.enabled_terms]


def deterministic_method(tmp_path, preset: str):
    """The preset with every degradation probability 0 and the LCR probability 1."""
    cfg = tiny_config_dict(tmp_path, tmp_path / "run", method=preset)
    cfg["method"] = {"preset": preset, "lcr": {"prob": 1.0},
                     "dcr": {"degradation": {"blur_prob": 0.0, "resize_prob": 0.0, "noise_prob": 0.0}}}
    return load_config(data=cfg).method


def test_dckd_release_terms_equal_the_release_computed_independently(setup, tmp_path) -> None:
    teacher, student, history, vqgan, lq, gt = setup
    m = deterministic_method(tmp_path, "dckd_release")
    assert m.enabled_terms == ["rec", "kd", "dcr", "dmm", "lcr"]
    assert m.dcr.num_negatives == 5  # the clean LR + the release's num_neg 4

    # SwinIR trains with stochastic depth: both steps draw the same masks from the global generator
    # (the only draws from it here: LCR and degradations use the step's own generator).
    ours_student = copy.deepcopy(student)
    torch.manual_seed(1)
    out = run_step(dckd_terms(m, history), lq, gt, StepRng.seeded(0, lq.device), ours_student, teacher, vqgan)
    out.total.backward()

    # ---- the release, step by step
    ref_student = copy.deepcopy(student)
    torch.manual_seed(1)
    s_out = ref_student(lq)
    t_lq = release_noising(lq)
    t_out, t_out_lcr = torch.chunk(teacher(torch.cat([lq, t_lq], dim=0)), 2, dim=0)
    t_out_lcr = release_noising(t_out_lcr, revert=True)
    l_pix = F.l1_loss(s_out, gt)
    l_ts = F.l1_loss(s_out, t_out)
    l_lcr = F.l1_loss(s_out, t_out_lcr)
    neg_sample = torch.cat([lq] + [lq for _ in range(4)], dim=0)  # probabilities 0: clean copies
    neg = list(torch.chunk(history(neg_sample), 5, dim=0))
    latents = release_get_feas(vqgan.encoder, [s_out, t_out, *neg])
    l_cl = release_contras(latents, [0.03125, 0.0625, 0.125, 0.25, 1.0], 0.1)
    l_ce = 0.001 * F.cross_entropy(release_encode(vqgan, s_out), release_encode(vqgan, t_out))
    (l_pix + l_ts + l_lcr + l_cl + l_ce).backward()

    expected = {"rec": l_pix, "kd": l_ts, "lcr": l_lcr, "dcr": l_cl, "dmm": l_ce}
    assert set(out.terms) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(out.terms[name], value.detach(), rtol=1e-5, atol=0, msg=name)
    assert 0 < l_cl.item() and 0 < l_lcr.item()  # the terms are not trivially zero
    for (name, a), b in zip(ours_student.named_parameters(), ref_student.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_paper_preset_differs_from_the_release_in_dmm_and_lcr(setup, tmp_path) -> None:
    """``dckd`` on the same step: no LCR, and Eq. 9's single softmax (a different DMM value)."""
    teacher, student, history, vqgan, lq, gt = setup
    release, paper = deterministic_method(tmp_path, "dckd_release"), deterministic_method(tmp_path, "dckd")
    torch.manual_seed(1)
    a = run_step(dckd_terms(release, history), lq, gt, StepRng.seeded(0, lq.device), student, teacher, vqgan)
    torch.manual_seed(1)
    b = run_step(dckd_terms(paper, history), lq, gt, StepRng.seeded(0, lq.device), student, teacher, vqgan)
    assert "lcr" not in b.terms
    for name in ("rec", "kd", "dcr"):
        torch.testing.assert_close(a.terms[name], b.terms[name], rtol=1e-6, atol=0)
    assert abs(float(a.terms["dmm"]) - float(b.terms["dmm"])) > 1e-6
