"""Presets, the Restorer wrapper and checkpoint loading (dckd.models)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from dckd.errors import CheckpointError, ConfigError
from dckd.models import (
    PRESETS,
    Restorer,
    backbone_names,
    build_model,
    build_preset,
    count_params,
    load_state_dict_file,
    load_weights,
    preset_param_count,
)
from dckd.models.restorer import _BACKBONES
from tests.conftest import PAPER_PARAMS_M

# spandrel's NAFNet LayerNorm uses ctx.saved_variables; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'saved_variables' is deprecated:DeprecationWarning")

FULL_SIZE = sorted(n for n, p in PRESETS.items() if not p.tiny)
TINY = sorted(n for n, p in PRESETS.items() if p.tiny)
TINY_TEACHER = {
    "swinir": "swinir_tiny_x2_teacher",
    "rcan": "rcan_tiny_x2_teacher",
    "nafnet": "nafnet_tiny_teacher",
    "restormer": "restormer_tiny_teacher",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a busy 2-core machine OpenMP barriers make 2 threads ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _out_size(model: Restorer, h: int, w: int) -> tuple[int, int]:
    return h * model.scale, w * model.scale


# --------------------------------------------------------------------------- presets
def test_preset_catalogue_is_complete() -> None:
    expected = {
        f"{b}_x{s}_{r}" for b in ("swinir", "rcan") for s in (2, 3, 4) for r in ("teacher", "student")
    }
    expected |= {f"{b}_{r}" for b in ("nafnet", "restormer") for r in ("teacher", "student")}
    expected |= {
        f"{b}_tiny_x{s}_{r}" for b in ("swinir", "rcan") for s in (2, 4) for r in ("teacher", "student")
    }
    expected |= {f"{b}_tiny_{r}" for b in ("nafnet", "restormer") for r in ("teacher", "student")}
    expected.add("swinir_light_x4_student")
    assert set(PRESETS) == expected
    for name, p in PRESETS.items():
        assert p.name == name
        assert p.backbone in backbone_names()
        assert p.role in ("teacher", "student")
        if p.backbone in ("nafnet", "restormer"):
            assert p.scale is None and "sr" not in p.tasks
        else:
            assert p.scale in (2, 3, 4) and p.tasks == ("sr",) and f"x{p.scale}" in name
    assert PRESETS["restormer_teacher"].tasks == ("deblur", "derain")
    assert PRESETS["nafnet_teacher"].tasks == ("deblur",)


def test_table1_settings_are_the_papers() -> None:
    t, s = PRESETS["swinir_x4_teacher"].args, PRESETS["swinir_x4_student"].args
    for a in (t, s):
        assert (
            a["img_size"],
            a["window_size"],
            a["mlp_ratio"],
            a["upsampler"],
            a["resi_connection"],
            a["img_range"],
        ) == (48, 8, 2.0, "pixelshuffle", "1conv", 1.0)
        assert "drop_path_rate" not in a  # spandrel's (and BasicSR's) default 0.1
    assert (t["embed_dim"], t["depths"], t["num_heads"]) == (180, [6] * 6, [6] * 6)
    assert (s["embed_dim"], s["depths"], s["num_heads"]) == (60, [6] * 4, [6] * 4)
    rt, rs = PRESETS["rcan_x4_teacher"].args, PRESETS["rcan_x4_student"].args
    assert (rt["n_feats"], rt["n_resgroups"], rt["n_resblocks"], rt["reduction"], rt["rgb_range"]) == (
        64,
        10,
        20,
        16,
        255,
    )
    assert (rs["n_feats"], rs["n_resgroups"], rs["n_resblocks"]) == (64, 10, 6)
    light = PRESETS["swinir_light_x4_student"].args
    assert (light["embed_dim"], light["depths"], light["upsampler"], light["img_size"]) == (
        60,
        [6] * 4,
        "pixelshuffledirect",
        64,
    )


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_presets_build_with_paper_param_counts(name: str) -> None:
    n = preset_param_count(name)
    assert n > 100_000
    if name in PAPER_PARAMS_M:
        paper = PAPER_PARAMS_M[name]
        assert abs(n / 1e6 - paper) <= 0.05 + 0.01 * paper, f"{name}: {n / 1e6:.3f}M vs paper {paper}M"


def test_meta_and_cpu_counts_agree() -> None:
    # preset_param_count builds on the meta device where it can: the count must be the real one.
    for name in ("nafnet_student", "restormer_student"):
        assert preset_param_count(name) == count_params(build_preset(name))


@pytest.mark.parametrize(
    "name", ["swinir_x4_student", "rcan_x4_student", "nafnet_student", "restormer_student"]
)
def test_full_size_students_run(name: str) -> None:
    model = build_preset(name).eval()
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, *_out_size(model, 20, 20))


# --------------------------------------------------------------------------- the wrapper
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(48, 48), (13, 22)])
def test_tiny_presets_forward_shape(name: str, size: tuple[int, int]) -> None:
    model = build_preset(name).eval()
    assert model.preset == name and model.backbone == PRESETS[name].backbone
    assert model.scale == (PRESETS[name].scale or 1)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, *_out_size(model, *size))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("backbone", sorted(TINY_TEACHER))
def test_no_model_mutates_its_input(backbone: str) -> None:
    model = build_preset(TINY_TEACHER[backbone])
    for mode in (model.train, model.eval):
        mode()
        x = torch.rand(2, 3, 16, 16)
        ref = x.clone()
        model(x)
        assert torch.equal(x, ref)


@pytest.mark.parametrize("backbone", sorted(TINY_TEACHER))
def test_clone_set_matches_the_raw_classes(backbone: str) -> None:
    # The wrapper copies the input exactly for the classes that write into it (RCAN in spandrel 0.4.2).
    net = build_preset(TINY_TEACHER[backbone]).net.eval()
    x = torch.rand(1, 3, 16, 16)
    ref = x.clone()
    with torch.no_grad():
        net(x)
    assert (not torch.equal(x, ref)) == _BACKBONES[backbone].clone_input


def test_teacher_and_student_share_an_input_in_autograd() -> None:
    # The failure the wrapper prevents: RCAN's in-place ``x *= 255`` on a tensor autograd saved.
    teacher, student = build_preset("rcan_tiny_x2_teacher"), build_preset("rcan_tiny_x2_student")
    leaf = torch.rand(2, 3, 12, 12, requires_grad=True)
    x = leaf * 1.0
    s = student(x)
    t = teacher(x)
    (s - t).abs().mean().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = build_preset(name).train()
    with torch.no_grad():  # NAFNet's beta/gamma start at 0, which zeroes whole branches' gradients
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.fill_(0.01)
    x = torch.rand(2, 3, 16, 16)
    model(x).abs().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    # A gradient can be exactly 0 where a tiny channel-attention ReLU is inactive on this input.
    zero = [n for n, p in trainable if not p.grad.any()]
    assert len(zero) <= len(trainable) // 5, f"{name}: zero gradients for {zero}"


def test_rcan_mean_shift_is_frozen_and_counted() -> None:
    model = build_preset("rcan_tiny_x2_student")
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["net.add_mean.bias", "net.add_mean.weight", "net.sub_mean.bias", "net.sub_mean.weight"]
    assert count_params(model) - count_params(model, trainable_only=True) == 24


def test_swinir_mean_is_a_non_persistent_buffer() -> None:
    model = build_preset("swinir_tiny_x2_student")
    assert "net.mean" in dict(model.named_buffers())
    assert not any(k.endswith("mean") for k in model.state_dict())
    model = model.to(torch.float64).eval()
    assert model.net.mean.dtype == torch.float64
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_restormer_padding_is_transparent_on_aligned_inputs() -> None:
    model = build_preset("restormer_tiny_student").eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))
        assert model(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3, 5)  # too small to reflect: replicate


def test_swinir_padding_matches_its_own() -> None:
    model = build_preset("swinir_tiny_x2_student").eval()
    assert model.pad_multiple == 8
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))  # spandrel reflect-pads to the window the same way
        assert model(torch.rand(1, 3, 3, 4)).shape == (1, 3, 6, 8)  # where reflect alone would fail


def test_build_model_validation() -> None:
    with pytest.raises(ConfigError, match="rcan_x4_student"):
        build_preset("rcan_x5_student")
    with pytest.raises(ConfigError, match="swinir, rcan, nafnet, restormer"):
        build_model("edsr", {}, 2)
    with pytest.raises(ConfigError, match="n_resgroups"):
        build_model("rcan", {"n_groups": 2}, 2)
    with pytest.raises(ConfigError, match="needs a scale"):
        build_model("rcan", {"n_feats": 8}, None)
    with pytest.raises(ConfigError, match="contradicts"):
        build_model("swinir", {"upscale": 2}, 4)
    with pytest.raises(ConfigError, match="input size"):
        build_model("nafnet", {"width": 4}, 2)


def test_overrides_and_spec_round_trip() -> None:
    model = build_preset("rcan_tiny_x2_student", scale=4, n_resblocks=3)
    assert model.scale == 4 and model.args["n_resblocks"] == 3
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    again = build_model(**model.spec())
    assert count_params(again) == count_params(model)
    assert PRESETS["rcan_tiny_x2_student"].args["n_resblocks"] == 2  # the preset itself is untouched


# --------------------------------------------------------------------------- weights
def test_deepcopy_for_ema_and_history_models() -> None:
    import copy

    model = build_preset("swinir_tiny_x2_student").eval()
    twin = copy.deepcopy(model)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))


def _outputs_equal(a: Restorer, b: Restorer) -> bool:
    x = torch.rand(1, 3, 12, 12)
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _formats(sd: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, object]:
    return {
        "basicsr": {"params_ema": sd, "params": other},
        "basicsr_params_only": {"params": sd},
        "plain": sd,
        "lightning": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 1, "global_step": 7},
        "ddp": {f"module.{k}": v for k, v in sd.items()},
        "lightning_ddp": {"state_dict": {f"model.module.{k}": v for k, v in sd.items()}, "epoch": 3},
    }


@pytest.mark.parametrize("fmt", list(_formats({}, {})))
def test_load_weights_formats(tmp_path: Path, fmt: str) -> None:
    src, decoy, dst = (build_preset("rcan_tiny_x2_student") for _ in range(3))
    assert not _outputs_equal(src, dst)
    path = tmp_path / f"{fmt}.pth"
    torch.save(_formats(src.net.state_dict(), decoy.net.state_dict())[fmt], path)
    result = load_weights(dst, path)
    assert result.clean and len(result.loaded) == len(src.net.state_dict())
    assert _outputs_equal(src, dst)


def test_basicsr_key_override(tmp_path: Path) -> None:
    ema, raw, dst = (build_preset("rcan_tiny_x2_student") for _ in range(3))
    path = tmp_path / "net_g_latest.pth"
    torch.save({"params_ema": ema.net.state_dict(), "params": raw.net.state_dict()}, path)
    load_weights(dst, path, key="params")
    assert _outputs_equal(raw, dst)
    with pytest.raises(CheckpointError, match="params_ema, params"):
        load_weights(dst, path, key="params_x")


@pytest.mark.parametrize("backbone", sorted(TINY_TEACHER))
def test_every_backbone_round_trips_through_a_file(tmp_path: Path, backbone: str) -> None:
    name = TINY_TEACHER[backbone]
    src, dst = build_preset(name), build_preset(name)
    path = tmp_path / "whole_restorer.pth"
    torch.save(src.state_dict(), path)  # Restorer's own keys carry the ``net.`` prefix
    load_weights(dst, path)
    assert _outputs_equal(src, dst)


def test_swinir_loads_a_checkpoint_trained_at_another_img_size(tmp_path: Path) -> None:
    # attn_mask depends on img_size; it is derived, not learned (SwinIR's s64w8 files into s48w8).
    src = build_preset("swinir_tiny_x2_student", img_size=64)
    dst = build_preset("swinir_tiny_x2_student")
    path = tmp_path / "s64.pth"
    torch.save({"params": src.net.state_dict()}, path)
    load_weights(dst, path)
    assert _outputs_equal(src, dst)


def _basicsr_rcan_name(key: str, groups: int, blocks: int) -> str:
    """BasicSR's RCAN naming, written from basicsr/archs/rcan_arch.py independently of the loader."""
    if key.startswith("head.0."):
        return "conv_first." + key[len("head.0.") :]
    if key.startswith(f"body.{groups}."):
        return "conv_after_body." + key.split(".", 2)[2]
    if key.startswith("tail.0."):
        return "upsample." + key[len("tail.0.") :]
    if key.startswith("tail.1."):
        return "conv_last." + key[len("tail.1.") :]
    m = re.match(r"body\.(\d+)\.body\.(\d+)\.(.*)", key)
    assert m, key
    g, b, rest = m.groups()
    if int(b) == blocks:
        return f"body.{g}.conv.{rest}"
    rest = rest.replace("body.3.conv_du.0.", "rcab.3.attention.1.").replace(
        "body.3.conv_du.2.", "rcab.3.attention.3."
    )
    rest = re.sub(r"^body\.([02])\.", r"rcab.\1.", rest)
    return f"body.{g}.residual_group.{b}.{rest}"


def test_rcan_basicsr_naming_is_converted(tmp_path: Path) -> None:
    src, dst = build_preset("rcan_tiny_x4_teacher"), build_preset("rcan_tiny_x4_teacher")
    groups, blocks = src.args["n_resgroups"], src.args["n_resblocks"]
    sd = {
        _basicsr_rcan_name(k, groups, blocks): v
        for k, v in src.net.state_dict().items()
        if "_mean." not in k  # BasicSR keeps the mean as a constant, not in the state dict
    }
    assert "body.1.residual_group.2.rcab.3.attention.3.weight" in sd and "upsample.2.weight" in sd
    path = tmp_path / "RCAN_BIX4-official.pth"
    torch.save({"params": sd}, path)
    load_weights(dst, path)
    assert _outputs_equal(src, dst)


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "rcan.pth"
    torch.save({"params": build_preset("rcan_tiny_x2_student").net.state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_preset("swinir_tiny_x2_student"), path)
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "conv_first.weight" in msg and "body.0.body.0.body.0.weight" in msg


def test_shape_mismatch_and_non_strict_load(tmp_path: Path) -> None:
    src = build_preset("rcan_tiny_x2_teacher")
    path = tmp_path / "x2.pth"
    torch.save(src.net.state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_weights(build_preset("rcan_tiny_x2_student"), path)
    # x2 -> x4 initialisation (as DUKD does): everything but the upsampler fits.
    dst = build_preset("rcan_tiny_x4_teacher")
    with pytest.raises(CheckpointError, match="tail.0.2.weight"):
        load_weights(dst, path)
    result = load_weights(dst, path, strict=False)
    assert result.missing == ["tail.0.2.bias", "tail.0.2.weight"] and not result.unexpected
    assert not result.mismatched and "head.0.weight" in result.loaded
    assert torch.equal(dst.net.head[0].weight, src.net.head[0].weight)


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint\x00\x01")
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        load_state_dict_file(bad)
    good = tmp_path / "truncated.pth"
    torch.save(build_preset("rcan_tiny_x2_student").net.state_dict(), good)
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=re.escape(str(good))):
        load_state_dict_file(good)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_file(tmp_path / "absent.pth")
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(CheckpointError, match="dict of tensors"):
        load_state_dict_file(listy)
    no_tensors = tmp_path / "meta_only.pth"
    torch.save({"epoch": 1, "lr": 0.1}, no_tensors)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_state_dict_file(no_tensors)


class _Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    sd = build_preset("rcan_tiny_x2_student").net.state_dict()
    torch.save({"params": sd, "opt": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict_file(path)
    assert not marker.exists()
