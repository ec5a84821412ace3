"""VQGANFeatures against taming's own Encoder/VectorQuantizer, on small real-format checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from taming.modules.diffusionmodules.model import Encoder
from taming.modules.vqvae.quantize import VectorQuantizer
from torch import nn

from dckd.errors import CheckpointError
from dckd.models.vqgan import VQGANFeatures, VQGANOutput, VQGANSpec, codebook_log_probs

# Small but structurally complete: 5 levels, 2 blocks per level (so the deepest level has a
# block after the tapped one), attention on the last level (taming's nominal curr_res there
# is resolution / 2**4 = 64 / 16 = 4), GroupNorm-compatible widths (multiples of 32).
SMALL = {
    "ch": 32,
    "ch_mult": (1, 1, 2, 2, 4),
    "num_res_blocks": 2,
    "attn_resolutions": (4,),
    "z_channels": 8,
    "embed_dim": 8,
    "n_embed": 32,
    "resolution": 64,
}


class _TamingLike(nn.Module):
    """The submodule layout of taming's VQModel, plus decoder/loss weights DCKD must ignore."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder(
            ch=SMALL["ch"],
            out_ch=3,
            ch_mult=SMALL["ch_mult"],
            num_res_blocks=SMALL["num_res_blocks"],
            attn_resolutions=list(SMALL["attn_resolutions"]),
            dropout=0.0,
            in_channels=3,
            resolution=SMALL["resolution"],
            z_channels=SMALL["z_channels"],
            double_z=False,
        )
        self.quant_conv = nn.Conv2d(SMALL["z_channels"], SMALL["embed_dim"], 1)
        self.quantize = VectorQuantizer(SMALL["n_embed"], SMALL["embed_dim"], beta=0.25)
        self.post_quant_conv = nn.Conv2d(SMALL["embed_dim"], SMALL["z_channels"], 1)

    def state_dict_with_extras(self) -> dict[str, torch.Tensor]:
        sd = dict(self.state_dict())
        sd["decoder.conv_in.weight"] = torch.randn(32, 8, 3, 3)
        sd["decoder.conv_out.bias"] = torch.randn(3)
        sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
        sd["loss.logvar"] = torch.zeros(())
        return sd


@pytest.fixture(scope="module")
def reference() -> _TamingLike:
    torch.manual_seed(0)
    ref = _TamingLike().eval()
    with torch.no_grad():
        for p in ref.parameters():  # move norms/biases off their identity init so they matter
            p.add_(0.05 * torch.randn_like(p))
        z = ref.quant_conv(ref.encoder(torch.rand(2, 3, 32, 32)))
        # codebook on the scale of the encoder outputs, so the nearest entry is meaningful
        ref.quantize.embedding.weight.copy_(torch.randn(SMALL["n_embed"], SMALL["embed_dim"]) * z.std())
    return ref


@pytest.fixture(scope="module")
def lightning_ckpt(reference: _TamingLike, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vqgan") / "vqgan_small.ckpt"
    torch.save({"state_dict": reference.state_dict_with_extras(), "epoch": 3, "global_step": 10}, path)
    return path


@pytest.fixture(scope="module")
def model(lightning_ckpt: Path) -> VQGANFeatures:
    return VQGANFeatures.from_spec(VQGANSpec(**SMALL, checkpoint=lightning_ckpt), log=lambda _m: None)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _taming_block_outputs(reference: _TamingLike, x: torch.Tensor) -> list[torch.Tensor]:
    captured: list[torch.Tensor] = []
    handles = [
        down.block[0].register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
        for down in reference.encoder.down
    ]
    try:
        with torch.no_grad():
            reference.encoder(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def test_features_match_taming_encoder_hooks(model, reference, images):
    with torch.no_grad():
        out = model(images, codebook_rows=2)
    assert isinstance(out, VQGANOutput)
    expected = _taming_block_outputs(reference, images)
    assert len(out.features) == len(expected) == 5
    for level, (got, want) in enumerate(zip(out.features, expected)):
        assert got.shape == want.shape == (5, SMALL["ch"] * SMALL["ch_mult"][level], 32 >> level, 32 >> level)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert model.pretrained


def test_logits_are_negated_squared_distances_and_argmax_is_taming_code(model, reference, images):
    with torch.no_grad():
        out = model(images, codebook_rows=3)
        z = reference.quant_conv(reference.encoder(images[:3]))
        _, _, (_, _, taming_idx) = reference.quantize(z)
    assert out.logits is not None and out.logits.dtype == torch.float32
    assert out.logits.shape == (3, 2, 2, SMALL["n_embed"])
    flat = z.permute(0, 2, 3, 1).reshape(-1, SMALL["embed_dim"])
    d2 = torch.cdist(flat.double(), reference.quantize.embedding.weight.double()) ** 2
    torch.testing.assert_close(out.logits.reshape(-1, SMALL["n_embed"]).double(), -d2, atol=1e-4, rtol=1e-5)
    assert torch.equal(out.logits.reshape(-1, SMALL["n_embed"]).argmax(-1), taming_idx.squeeze(1))
    # Eq. 8: softmax of the logits; the released d_max - d gives the same distribution
    logp = codebook_log_probs(out.logits)
    d = -out.logits
    released = torch.softmax(d.amax(-1, keepdim=True) - d, dim=-1)
    torch.testing.assert_close(logp.exp(), released, atol=1e-6, rtol=1e-5)


def test_codebook_rows_equals_running_only_those_rows(model, images):
    with torch.no_grad():
        part = model(images, codebook_rows=2)
        alone = model(images[:2])
        full = model(images)
    assert part.logits is not None and part.logits.shape[0] == 2
    torch.testing.assert_close(part.logits, alone.logits, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(part.logits, full.logits[:2], atol=1e-5, rtol=1e-6)
    for a, b in zip(part.features, full.features):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_codebook_rows_zero_skips_the_codebook_half(model, images):
    calls: list[str] = []
    watched = {
        "mid.block_1": model.encoder.mid.block_1,
        "last.block_1": model.encoder.down[-1].block[1],
        "conv_out": model.encoder.conv_out,
        "quant_conv": model.quant_conv,
    }
    handles = [m.register_forward_hook(lambda *_a, n=n: calls.append(n)) for n, m in watched.items()]
    try:
        with torch.no_grad():
            out = model(images, codebook_rows=0)
            assert calls == [] and out.logits is None and len(out.features) == 5
            model(images, codebook_rows=1)
    finally:
        for h in handles:
            h.remove()
    assert set(calls) == set(watched)
    with pytest.raises(ValueError, match="codebook_rows"):
        model(images, codebook_rows=6)


def test_missing_encoder_key_names_file_and_key(reference, tmp_path):
    sd = reference.state_dict_with_extras()
    del sd["encoder.mid.attn_1.q.weight"]
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        VQGANFeatures.from_spec(VQGANSpec(**SMALL, checkpoint=path))
    assert "broken.ckpt" in str(err.value) and "encoder.mid.attn_1.q.weight" in str(err.value)


def test_wrong_codebook_size_is_a_shape_mismatch(lightning_ckpt):
    with pytest.raises(CheckpointError, match=r"quantize\.embedding\.weight"):
        VQGANFeatures.from_spec(VQGANSpec(**{**SMALL, "n_embed": 64}, checkpoint=lightning_ckpt))


def test_no_checkpoint_is_random_and_warns():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        m = VQGANFeatures.from_spec(VQGANSpec(**SMALL))
    assert m.pretrained is False
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VQGANFeatures.from_spec(VQGANSpec(**SMALL), log=lines.append)
    assert len(lines) == 1 and "RANDOMLY INITIALISED" in lines[0]


def test_frozen_eval_but_gradients_reach_the_input(model, images):
    assert all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    x = images[:2].clone().requires_grad_(True)
    out = model(x, codebook_rows=1)
    loss = sum(f.abs().mean() for f in out.features) + out.logits.logsumexp(-1).mean()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_plain_state_dict_loads(reference, tmp_path, images):
    path = tmp_path / "plain.pth"
    torch.save(reference.state_dict_with_extras(), path)
    lines: list[str] = []
    m = VQGANFeatures.from_spec(VQGANSpec(**SMALL, checkpoint=path), log=lines.append)
    assert m.pretrained and "plain.pth" in lines[0]
    with torch.no_grad():
        got = m(images, codebook_rows=0).features
    for a, b in zip(got, _taming_block_outputs(reference, images)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_lightning_objects_in_checkpoint_load_without_running_them(reference, tmp_path):
    """Old Lightning files key `callbacks` by class; weights_only alone refuses them."""
    from argparse import Namespace

    path = tmp_path / "with_callbacks.ckpt"
    torch.save(
        {
            "state_dict": reference.state_dict_with_extras(),
            "callbacks": {Namespace: {"best_model_score": torch.tensor(0.5)}},
            "hparams": Namespace(lr=1e-4),
        },
        path,
    )
    lines: list[str] = []
    m = VQGANFeatures.from_spec(VQGANSpec(**SMALL, checkpoint=path), log=lines.append)
    assert m.pretrained and "argparse.Namespace" in lines[0]


def test_not_a_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        VQGANFeatures.from_spec(VQGANSpec(**SMALL, checkpoint=path))


def test_spec_validation(tmp_path):
    with pytest.raises(ValueError, match="nowhere.ckpt"):
        VQGANSpec(checkpoint=tmp_path / "nowhere.ckpt")
    with pytest.raises(ValueError):
        VQGANSpec(bogus=1)
    with pytest.raises(ValueError, match="feature_block"):
        VQGANSpec(num_res_blocks=1, feature_block=1)
    with pytest.raises(ValueError, match="multiples of 32"):
        VQGANSpec(ch=16)
    reduced = VQGANSpec.reduced()
    assert (reduced.ch, reduced.num_res_blocks, reduced.ch_mult, reduced.n_embed) == (32, 1, (1, 1, 2, 2, 4), 1024)


def test_symmetric_input_range_feeds_minus_one_to_one(model, lightning_ckpt, images):
    sym = VQGANFeatures.from_spec(
        VQGANSpec(**SMALL, checkpoint=lightning_ckpt, input_range="symmetric"), log=lambda _m: None
    )
    with torch.no_grad():
        a = sym(images, codebook_rows=0).features
        b = model(images * 2 - 1, codebook_rows=0).features
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb, atol=1e-6, rtol=0)


def test_full_size_spec_shapes():
    spec = VQGANSpec()
    with pytest.warns(UserWarning):
        m = VQGANFeatures.from_spec(spec)
    n_params = sum(p.numel() for p in m.encoder.parameters())
    assert 25e6 < n_params < 35e6  # released encoder: about 29.3M parameters
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64), codebook_rows=1)
    assert [f.shape[1] for f in out.features] == [128, 128, 256, 256, 512] == list(spec.feature_channels)
    assert [f.shape[-1] for f in out.features] == [64, 32, 16, 8, 4]
    assert out.logits is not None and out.logits.shape == (1, 4, 4, 1024)
