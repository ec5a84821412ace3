"""VGG16 perceptual features (torchvision-exact, never downloaded) and MCLIR's negative distance."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from dckd.errors import CheckpointError
from dckd.losses.perceptual import VGG16_LAYERS, VGGFeatures, negative_perceptual_distance

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def torchvision_features() -> nn.Sequential:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).features.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, torchvision_features: nn.Sequential) -> Path:
    """A vgg16 state dict in torchvision's format: features.N.* plus classifier.* (small stand-ins)."""
    state = {f"features.{k}": v.clone() for k, v in torchvision_features.state_dict().items()}
    state["classifier.6.weight"] = torch.randn(10, 4)  # ignored, as the real classifier would be
    state["classifier.6.bias"] = torch.randn(10)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


def _lines() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_layer_names_map_to_torchvision_relu_indices(torchvision_features: nn.Sequential) -> None:
    assert (VGG16_LAYERS["relu1_2"], VGG16_LAYERS["relu2_2"], VGG16_LAYERS["relu3_3"]) == (3, 8, 15)
    # Derive BasicSR's names from torchvision's layout: block counts pools, conv counts within it.
    expected, block, conv = {}, 1, 0
    for index, module in enumerate(torchvision_features):
        if isinstance(module, nn.Conv2d):
            conv += 1
        elif isinstance(module, nn.ReLU):
            expected[f"relu{block}_{conv}"] = index
        elif isinstance(module, nn.MaxPool2d):
            block, conv = block + 1, 0
    assert expected == VGG16_LAYERS


def test_truncated_after_deepest_layer_and_frozen(checkpoint: Path) -> None:
    lines, log = _lines()
    vgg = VGGFeatures(layers=("relu2_1", "relu1_1"), checkpoint=str(checkpoint), log=log)
    assert len(vgg.features) == VGG16_LAYERS["relu2_1"] + 1
    assert vgg.pretrained and len(lines) == 1 and str(checkpoint) in lines[0]
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    assert all(k.startswith("features.") for k in vgg.state_dict())  # normalisation is not state


def test_checkpoint_reproduces_torchvision_exactly(
    checkpoint: Path, torchvision_features: nn.Sequential
) -> None:
    layers = ("relu1_2", "relu2_2", "relu3_3", "relu1_1")  # any order, returned as asked
    vgg = VGGFeatures(layers=layers, checkpoint=str(checkpoint), log=lambda _: None)
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = vgg(x)
        h, ref = (x - MEAN) / STD, {}
        for index, module in enumerate(torchvision_features[: VGG16_LAYERS["relu3_3"] + 1]):
            h = module(h)
            ref[index] = h.clone()
    assert len(feats) == len(layers)
    for name, feat in zip(layers, feats):
        torch.testing.assert_close(feat, ref[VGG16_LAYERS[name]], rtol=0, atol=0)


def test_bare_features_state_dict_is_accepted(tmp_path: Path, torchvision_features: nn.Sequential) -> None:
    path = tmp_path / "features.pth"
    torch.save(torchvision_features[:9].state_dict(), path)
    vgg = VGGFeatures(layers=("relu2_2",), checkpoint=str(path), log=lambda _: None)
    torch.testing.assert_close(vgg.features[7].weight, torchvision_features[7].weight, rtol=0, atol=0)


def test_bad_checkpoints_name_the_file(tmp_path: Path, checkpoint: Path) -> None:
    missing_file = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        VGGFeatures(checkpoint=str(missing_file), log=lambda _: None)

    state = torch.load(checkpoint, weights_only=True)
    del state["features.14.weight"]  # conv3_3, needed for relu3_3
    no_key = tmp_path / "no_key.pth"
    torch.save(state, no_key)
    with pytest.raises(CheckpointError, match=r"no_key\.pth.*missing keys: features\.14\.weight"):
        VGGFeatures(checkpoint=str(no_key), log=lambda _: None)
    # The same file is fine when the missing layer is past the truncation.
    VGGFeatures(layers=("relu2_2",), checkpoint=str(no_key), log=lambda _: None)

    state = torch.load(checkpoint, weights_only=True)
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save(state, bad_shape)
    with pytest.raises(
        CheckpointError, match=r"bad_shape\.pth.*features\.0\.weight \(checkpoint \(64, 1, 3, 3\)"
    ):
        VGGFeatures(checkpoint=str(bad_shape), log=lambda _: None)


def test_random_weights_are_reported() -> None:
    lines, log = _lines()
    vgg = VGGFeatures(layers=("relu1_1",), log=log)
    assert not vgg.pretrained
    assert len(lines) == 1 and lines[0].startswith("VGG16 has random weights: ")
    with pytest.warns(UserWarning, match="VGG16 has random weights"):
        VGGFeatures(layers=("relu1_1",))


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"relu6_1.*valid names: relu1_1, relu1_2"):
        VGGFeatures(layers=("relu6_1",), log=lambda _: None)
    with pytest.raises(ValueError, match="valid names"):
        VGGFeatures(layers=(), log=lambda _: None)


class _Stub(nn.Module):
    """Two 'layers': the image itself and twice the image."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 2 * x]


def test_distance_against_hand_computed_value() -> None:
    out = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 3.0]]]])  # B=2, one channel, 1x2
    neg1 = torch.tensor([[[[1.0, 1.0]]], [[[2.0, 1.0]]]])  # |diff|: 1 0 | 0 2 -> mean 0.75
    neg2 = torch.tensor([[[[0.0, 3.0]]], [[[6.0, 3.0]]]])  # |diff|: 0 2 | 4 0 -> mean 1.5
    negs = torch.cat([neg1, neg2])  # set after set
    # Layer 2 (2x) doubles each L1; weights 0.2 and 0.5:
    # set 1: 0.2*0.75 + 0.5*1.5 = 0.9; set 2: 0.2*1.5 + 0.5*3.0 = 1.8; mean 1.35.
    value = negative_perceptual_distance(_Stub(), out, negs, [0.2, 0.5])
    assert value.shape == ()
    torch.testing.assert_close(value, torch.tensor(1.35))
    # One set is just the weighted distance to it.
    torch.testing.assert_close(
        negative_perceptual_distance(_Stub(), out, neg1, [0.2, 0.5]), torch.tensor(0.9)
    )


def test_gradients_reach_out_only(checkpoint: Path) -> None:
    vgg = VGGFeatures(checkpoint=str(checkpoint), log=lambda _: None)
    g = torch.Generator().manual_seed(2)
    out = torch.rand(2, 3, 16, 16, generator=g, requires_grad=True)
    negs = torch.rand(6, 3, 16, 16, generator=g, requires_grad=True)
    value = negative_perceptual_distance(vgg, out, negs, [0.2, 0.3, 0.5])
    value.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert negs.grad is None
    assert all(p.grad is None for p in vgg.parameters())


def test_distance_shape_errors() -> None:
    out = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="N >= 1 sets"):
        negative_perceptual_distance(_Stub(), out, torch.zeros(3, 3, 4, 4), [1.0, 1.0])
    with pytest.raises(ValueError, match="N >= 1 sets"):
        negative_perceptual_distance(_Stub(), out, torch.zeros(2, 3, 4, 5), [1.0, 1.0])
    with pytest.raises(ValueError, match="no negative set"):
        negative_perceptual_distance(_Stub(), out, torch.zeros(0, 3, 4, 4), [1.0, 1.0])
    with pytest.raises(ValueError, match="one weight per layer"):
        negative_perceptual_distance(_Stub(), out, torch.zeros(2, 3, 4, 4), [1.0])


def test_no_download_is_attempted(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("VGGFeatures tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        VGGFeatures()
