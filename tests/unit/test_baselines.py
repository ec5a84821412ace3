"""Baseline methods as loss terms: FAKD, MiPKD, DUKD, MCLIR, checked by hand and in the engine."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dckd.config import load_config
from dckd.errors import CheckpointError, ConfigError
from dckd.losses import fakd_loss, spatial_affinity, tap_outputs
from dckd.losses.fakd import auto_layers
from dckd.losses.mipkd import (
    MiPKDMixer,
    StagePlan,
    build_mixer,
    mix,
    random_mask,
    run_stage,
    run_tail,
    stage_plan,
)
from dckd.losses.upcycling import zoom_out
from dckd.models import build_preset
from dckd.terms.dukd import DUKD
from dckd.terms.kd import KD
from dckd.terms.lcr import LCR
from dckd.terms.mclir import MCLIR
from dckd.terms.rec import Rec
from dckd.training.engine import Engine, seeded_rng
from dckd.training.loop import make_loader
from dckd.training.step import run_step
from tests.conftest import tiny_config_dict


def config(hr: Path, out: Path, method: str, backbone: str = "rcan", **method_cfg: object):
    d = tiny_config_dict(hr, out, method=method)
    d["teacher"]["preset"] = f"{backbone}_tiny_x2_teacher"
    d["student"]["preset"] = f"{backbone}_tiny_x2_student"
    d["method"].update(method_cfg)
    return d


# --------------------------------------------------------------------------- FAKD
def test_spatial_affinity_and_fakd_loss_by_hand() -> None:
    # 1x2x2x2: positions (row-major) carry the channel vectors (3,4), (1,0), (0,2), (0,0)
    f = torch.tensor([[[[3.0, 1.0], [0.0, 0.0]], [[4.0, 0.0], [2.0, 0.0]]]])
    a = torch.tensor([[[1.0, 0.6, 0.8, 0.0], [0.6, 1.0, 0.0, 0.0], [0.8, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(spatial_affinity(f), a, rtol=0, atol=1e-6)
    # (1,0), (1,0), (0,1), (0,1): two pairs of parallel positions
    g = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]])
    b = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]])
    torch.testing.assert_close(spatial_affinity(g), b, rtol=0, atol=1e-6)
    # |A_F - A_G| sums to 1.2 + 0.4 + 1.8 + 2.0 = 5.4 over 16 entries; two taps add up
    assert fakd_loss([f], [g]).item() == pytest.approx(5.4 / 16, abs=1e-6)
    assert fakd_loss([f, f], [g, f]).item() == pytest.approx(5.4 / 16, abs=1e-6)
    # channel counts may differ (the affinity is HW x HW); gradients reach the student only
    s = torch.rand(2, 3, 4, 5, requires_grad=True)
    t = torch.rand(2, 7, 4, 5, requires_grad=True)
    fakd_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_fakd_auto_taps_of_the_paper_pairs() -> None:
    # Paper depths with narrow widths (the taps depend on depth only): RCAN 10 groups, SwinIR 4 vs 6 RSTBs.
    rs = build_preset("rcan_x4_student", n_feats=16, n_resblocks=1)
    rt = build_preset("rcan_x4_teacher", n_feats=16, n_resblocks=1)
    assert auto_layers(rs, rt) == (["head", "body.2", "body.6", "body.10"],) * 2
    ss = build_preset("swinir_x4_student", embed_dim=12, depths=[1] * 4, num_heads=[1] * 4)
    st = build_preset("swinir_x4_teacher", embed_dim=12, depths=[1] * 6, num_heads=[1] * 6)
    assert auto_layers(ss, st) == (["layers.0", "layers.1", "layers.2", "layers.3"],
                                   ["layers.1", "layers.2", "layers.4", "layers.5"])
    # tiny presets: 2 and 4 groups; 1 and 2 RSTBs
    assert auto_layers(build_preset("rcan_tiny_x2_student"), build_preset("rcan_tiny_x2_teacher")) == (
        ["head", "body.0", "body.1", "body.2"], ["head", "body.1", "body.2", "body.4"])
    assert auto_layers(build_preset("swinir_tiny_x2_student"), build_preset("swinir_tiny_x2_teacher")) == (
        ["layers.0"], ["layers.1"])


def test_hooks_capture_the_intended_rcan_maps() -> None:
    net = build_preset("rcan_tiny_x2_teacher").eval()
    x = torch.rand(2, 3, 6, 7)
    with torch.no_grad(), tap_outputs(net, ["head", "body.1", "net.body.4"]) as taps:
        net(x)
    arch = net.net
    with torch.no_grad():  # by hand, outside the taps (inside, these calls would fire the hooks again)
        head = arch.head(arch.sub_mean(x * 255.0))
        body1 = arch.body[1](arch.body[0](head))
        body_end = arch.body[4](arch.body[3](arch.body[2](body1)))
    torch.testing.assert_close(taps["head"], head)
    torch.testing.assert_close(taps["body.1"], body1)
    # RCAN adds the global skip in place after its body: the body-end tap holds it (as official FAKD).
    torch.testing.assert_close(taps["net.body.4"], body_end + head)


def test_hooks_capture_swinir_rstb_outputs_as_maps() -> None:
    net = build_preset("swinir_tiny_x2_teacher").eval()
    arch = net.net
    x = torch.rand(1, 3, 8, 8)  # window 8: no padding
    with torch.no_grad(), tap_outputs(net, ["layers.0", "layers.1"]) as taps:
        net(x)
    with torch.no_grad():
        tokens = arch.patch_embed(arch.conv_first((x - arch.mean) * arch.img_range))
        first = arch.layers[0](tokens, (8, 8))
        second = arch.layers[1](first, (8, 8))
    assert taps["layers.0"].shape == (1, 24, 8, 8)
    torch.testing.assert_close(taps["layers.0"], first.transpose(1, 2).reshape(1, 24, 8, 8))
    torch.testing.assert_close(taps["layers.1"], second.transpose(1, 2).reshape(1, 24, 8, 8))


def test_fakd_teacher_taps_come_from_the_kd_pass(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", "fakd"))
    engine = Engine(cfg, notes=lambda _m: None)
    calls = []
    engine.teacher.register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape[0]))
    g = torch.Generator().manual_seed(0)
    lq, gt = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    out = engine.compute(lq, gt, seeded_rng(3, 0, 1, engine.device))
    assert calls == [2]
    with torch.no_grad():
        with tap_outputs(engine.student, ["head", "body.0", "body.1", "body.2"]) as s:
            engine.student(lq)
        with tap_outputs(engine.teacher, ["head", "body.1", "body.2", "body.4"]) as t:
            engine.teacher(lq)
    expected = 10.0 * fakd_loss(list(s.values()), list(t.values()))
    assert out.terms["fakd"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_fakd_config_errors(tmp_path: Path, hr_folder: Path) -> None:
    with pytest.raises(ConfigError, match="method.fakd"):
        load_config(data=config(hr_folder, tmp_path / "r", "fakd", fakd={"student_layers": ["head"]}))
    bad = config(hr_folder, tmp_path / "r", "fakd", fakd={"student_layers": ["body.9"], "teacher_layers": ["head"]})
    with pytest.raises(ConfigError, match=r"method.fakd.student_layers: no module 'body.9'"):
        Engine(load_config(data=bad), notes=lambda _m: None)


# --------------------------------------------------------------------------- MiPKD
class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


def test_mipkd_feature_mixer_by_hand() -> None:
    plan = StagePlan("rcan", 1, ((0, 1),))
    mixer = MiPKDMixer(plan, plan, ae_weight=1.0, block=False)
    mixer.enc_s, mixer.enc_t = nn.ModuleList([nn.Identity()]), nn.ModuleList([nn.Identity()])
    mixer.dec_t = nn.ModuleList([Scale(2.0)])
    f_t = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    f_s = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    torch.testing.assert_close(mix(f_t, f_s, mask), torch.tensor([[[[1.0, 0.0], [0.0, 4.0]]]]))
    # D(mix) = [[2, 0], [0, 8]] vs F_T: |1, 2, 3, 4| -> 2.5; auto-encoder: |2F_T - F_T| -> mean(F_T) = 2.5
    loss, latents = mixer.feature_loss([f_s], [f_t], [mask])
    assert loss.item() == pytest.approx(5.0)
    mixer.ae_weight = 0.0
    assert mixer.feature_loss([f_s], [f_t], [mask])[0].item() == pytest.approx(2.5)
    g = torch.Generator().manual_seed(0)
    assert random_mask((2, 3, 4, 4), 0.0, g, torch.device("cpu"), torch.float32).sum() == 0
    assert random_mask((2, 3, 4, 4), 1.0, g, torch.device("cpu"), torch.float32).sum() == 96


@pytest.mark.parametrize("name,args", [("rcan_tiny_x2_teacher", {}),
                                       ("swinir_tiny_x2_student", {"depths": [1, 1, 1], "num_heads": [2] * 3})])
def test_stages_and_tail_rebuild_the_forward(name: str, args: dict) -> None:
    net = build_preset(name, **args).eval()
    plan = stage_plan(net, 2)
    x = torch.rand(2, 3, 13, 11)  # odd sizes: SwinIR pads to its window inside
    with torch.no_grad(), tap_outputs(net, plan.taps) as taps:
        y = net(x)
    with torch.no_grad():
        f = run_stage(net, plan, 1, taps[plan.boundaries[0]])
        torch.testing.assert_close(f, taps[plan.boundaries[1]])
        torch.testing.assert_close(run_tail(net, plan, f, taps[plan.stem], tuple(y.shape[-2:])), y)


def test_block_path_wiring_with_identical_networks() -> None:
    """Teacher = student and identity coders: whatever the switches and masks, the output is the network's."""
    net = build_preset("rcan_tiny_x2_teacher").eval()
    twin = copy.deepcopy(net)
    mixer = build_mixer(net, twin, stages=3)
    for coders in (mixer.enc_s, mixer.enc_t, mixer.dec_t, mixer.dec_s):
        for i in range(len(coders)):
            coders[i] = nn.Identity()
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad(), tap_outputs(net, mixer.student_plan.taps) as taps:
        y = net(x)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for switches in ([True, True], [False, True], [True, False], [False, False]):
            feats = [taps[n] for n in mixer.student_plan.boundaries]
            masks = [random_mask(f.shape, 0.5, g, x.device, x.dtype) for f in feats]
            _, latents = mixer.feature_loss(feats, feats, masks)
            out = mixer.block_output(net, twin, feats, feats, taps["head"], taps["head"], latents[0], masks,
                                     switches, tuple(y.shape[-2:]))
            torch.testing.assert_close(out, y)


def test_mipkd_without_stage_definitions_is_a_config_error(tmp_path: Path, hr_folder: Path) -> None:
    d = config(hr_folder, tmp_path / "r", "mipkd")
    d.update(task="deblur", scale=1, teacher={"preset": "nafnet_tiny_teacher"}, student={"preset": "nafnet_tiny_student"})
    d["data"] = {"train": {"input_dir": str(hr_folder), "target_dir": str(hr_folder), "lq_patch": 8}}
    with pytest.raises(ConfigError, match=r"method.mipkd: no stage definitions for backbone 'nafnet'"):
        Engine(load_config(data=d), notes=lambda _m: None)
    with pytest.raises(ConfigError, match=r"method.mipkd.stages: 3 stages"):
        Engine(load_config(data=config(hr_folder, tmp_path / "r", "mipkd", mipkd={"stages": 3})),
               notes=lambda _m: None)


def _steps(engine: Engine, batches: list[dict]) -> list[dict[str, torch.Tensor]]:
    return [engine.train_step(b["lq"], b["gt"]) for b in batches]


@pytest.mark.parametrize("method,extra", [
    ("mipkd", {}),
    ("mclir", {"mclir": {"neg_iter": [1, 2]}}),
])
def test_state_is_saved_and_restored_exactly(tmp_path: Path, hr_folder: Path, method: str, extra: dict) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", method, **extra))
    batches = list(make_loader(cfg, 0, 4))
    a = Engine(cfg, notes=lambda _m: None)
    _steps(a, batches[:3])
    path = a.save(tmp_path / "ckpt.pt")
    b = Engine(cfg, notes=lambda _m: None)
    b.load(path)
    ta, tb = _steps(a, batches[3:]), _steps(b, batches[3:])
    assert {k: v.item() for k, v in ta[0].items()} == {k: v.item() for k, v in tb[0].items()}
    for x, y in zip(a.trainable_parameters(), b.trainable_parameters()):
        assert torch.equal(x, y)
    for na, nb in zip(*(e.terms["mclir"].negatives if method == "mclir" else [] for e in (a, b))):
        assert all(torch.equal(x, y) for x, y in zip(na.state_dict().values(), nb.state_dict().values()))
    state = torch.load(path, weights_only=True)
    if method == "mipkd":
        assert state["terms"]["mipkd"]["mixer"] and len(state["optimizer"]["param_groups"]) == 2
        with pytest.raises(CheckpointError, match="no MiPKD mixer"):
            b.load_state_dict({**state, "terms": {"mipkd": {"mixer": None}}}, "x.pt")
    else:
        assert len(state["terms"]["mclir"]["negatives"]) == 2
        with pytest.raises(CheckpointError, match="MCLIR negative"):
            b.load_state_dict({**state, "terms": {"mclir": {"negatives": []}}}, "x.pt")


def test_exported_student_has_only_student_keys(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", "mipkd"))
    engine = Engine(cfg, notes=lambda _m: None)
    _steps(engine, list(make_loader(cfg, 0, 1)))
    exported = torch.load(engine.export_weights(tmp_path / "student.pth"), weights_only=True)
    keys = set(build_preset("rcan_tiny_x2_student").state_dict())
    assert set(exported["params"]) == set(exported["params_ema"]) == keys
    assert engine.terms["mipkd"].mixer is not None and not any(k.startswith(("enc_", "dec_")) for k in exported["params"])


# --------------------------------------------------------------------------- DUKD
class Upscale(nn.Module):
    """A parameter-free 'network': nearest x2, plus an offset (commutes with flips, transpose, 1-x)."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = offset
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return F.interpolate(x, scale_factor=2, mode="nearest") + self.offset


@pytest.mark.parametrize("zoom_out_on", [False, True])
def test_dukd_term_by_hand_and_teacher_passes(tmp_path: Path, hr_folder: Path, zoom_out_on: bool) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", "dckd_star", dukd={
        "weight": 2.0, "zoom_in_tiles": 3, "zoom_out": zoom_out_on, "lcr_prob": 1.0}), overrides=[
        "method.dcr.enabled=false", "method.dmm.enabled=false", "method.rec.weight=5"])
    student, teacher = Upscale(), Upscale(0.1)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    m = cfg.method
    terms = [Rec(m.rec), KD(m.kd), LCR(m.lcr), DUKD(m.dukd, rec_weight=m.rec.weight)]
    out = run_step(terms, lq, gt, seeded_rng(0, 0, 1, torch.device("cpu")), student, teacher)
    # one teacher pass: clean LR, its label-consistency copy and 3 tiles per image
    assert teacher.calls[0] == (2 + 2 + 6, 3, 8, 8) and student.calls[0] == (2 + 6, 3, 8, 8)
    expected = 2.0 * 0.1  # the student's reverted output on the augmented tiles vs the teacher's on clean tiles
    if zoom_out_on:
        assert teacher.calls[1:] == student.calls[1:] == [(2, 3, 4, 4)]
        small = F.interpolate(zoom_out(lq, 2), scale_factor=2, mode="nearest")
        expected += 5.0 * F.l1_loss(small, lq).item() + 2.0 * 0.1
    else:
        assert len(teacher.calls) == len(student.calls) == 1
    assert out.terms["dukd"].item() == pytest.approx(expected, rel=1e-5)
    assert set(out.terms) == {"rec", "kd", "lcr", "dukd"}


def test_dukd_config_checks(tmp_path: Path, hr_folder: Path) -> None:
    with pytest.raises(ConfigError, match="method.dukd.zoom_in_tiles: at most scale"):
        Engine(load_config(data=config(hr_folder, tmp_path / "r", "dukd", dukd={"zoom_in_tiles": 5})),
               notes=lambda _m: None)
    d = config(hr_folder, tmp_path / "r", "dukd", dukd={"zoom_out": True})
    d["data"]["train"]["lq_patch"] = 9
    with pytest.raises(ConfigError, match="method.dukd.zoom_out"):
        Engine(load_config(data=d), notes=lambda _m: None)


# --------------------------------------------------------------------------- MCLIR
class StubVGG(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 2 * x, 3 * x]


class Offset(nn.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


def test_mclir_total_by_hand(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", "mclir", mclir={"neg_iter": [10, 20]}))
    lq = torch.rand(2, 3, 4, 4)
    gt = lq + 0.25
    m = cfg.method
    terms = [Rec(m.rec), MCLIR(m.mclir, negatives=[Offset(1.0), Offset(-3.0)], vgg=StubVGG())]
    out = run_step(terms, lq, gt, seeded_rng(0, 0, 1, torch.device("cpu")), nn.Identity())
    # per negative: 0.2*d + 0.3*2d + 0.5*3d = 2.3d with d = 1 and 3; mean 4.6; lambda 0.001
    assert out.terms["rec"].item() == pytest.approx(0.25)
    assert out.terms["mclir"].item() == pytest.approx(-0.0046, rel=1e-5)
    assert out.total.item() == pytest.approx(0.25 - 0.0046, rel=1e-5)


def test_mclir_negatives_follow_the_raw_student(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=config(hr_folder, tmp_path / "r", "mclir", mclir={"neg_iter": [2, 3]}))
    notes: list[str] = []
    engine = Engine(cfg, notes=notes.append)
    negatives = engine.terms["mclir"].negatives
    assert engine.teacher is None and any("VGG16 has random weights" in n for n in notes)
    assert all(not n.training and not any(p.requires_grad for p in n.parameters()) for n in negatives)
    for t, batch in enumerate(make_loader(cfg, 0, 3), start=1):
        before = [[p.clone() for p in n.parameters()] for n in negatives]
        engine.train_step(batch["lq"], batch["gt"])
        for k, (neg, every) in enumerate(zip(negatives, (2, 3))):
            for b, a, s in zip(before[k], neg.parameters(), engine.student.parameters()):
                want = 0.1 * b + 0.9 * s if t % every == 0 else b
                torch.testing.assert_close(a, want, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- every preset
@pytest.mark.parametrize("backbone", ["rcan", "swinir"])
@pytest.mark.parametrize("method", ["fakd", "mipkd", "dukd", "mclir", "dckd_star"])
def test_each_preset_trains_with_finite_terms(tmp_path: Path, hr_folder: Path, backbone: str, method: str) -> None:
    d = config(hr_folder, tmp_path / "r", method, backbone)
    if backbone == "swinir" and method == "mipkd":  # two RSTBs, so the block prior mixer runs too
        d["student"]["args"] = {"depths": [1, 1], "num_heads": [2, 2]}
    if method == "dukd":
        d["method"]["dukd"] = {"zoom_in_tiles": 2, "zoom_out": True}
    cfg = load_config(data=d)
    engine = Engine(cfg, notes=lambda _m: None)
    before = [p.detach().clone() for p in engine.trainable_parameters()]
    for batch in make_loader(cfg, 0, 2):
        terms = engine.train_step(batch["lq"], batch["gt"])
    assert set(terms) - {"total"} == set(cfg.method.enabled_terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.isclose(terms["total"], sum(v for k, v in terms.items() if k != "total"))
    assert any(not torch.equal(a, b) for a, b in zip(before, engine.trainable_parameters()))
    if method == "mipkd":
        mixer = engine.terms["mipkd"].mixer
        assert mixer.block and all(p.grad is not None for p in mixer.enc_s.parameters())
