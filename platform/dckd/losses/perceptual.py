"""VGG16 perceptual features and MCLIR's negative perceptual distance (Wu et al., AAAI 2024).

MCLIR pushes the model's output away from the outputs of lagged "negative" copies of itself,
measured in VGG16 feature space (BasicSR ``PerceptualLoss``: ImageNet-normalised [0, 1] input,
post-ReLU taps, L1). The VGG weights are never downloaded: the ImageNet torchvision file
(``vgg16-397923af.pth``) must be supplied locally, and without it the features come from a
random network, which is reported, never hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from dckd.errors import CheckpointError, note_random_weights
from dckd.models.weights import load_state_dict_file

__all__ = ["VGG16_LAYERS", "VGGFeatures", "negative_perceptual_distance"]

_LOG = logging.getLogger(__name__)
_MAX_LISTED = 20

# BasicSR layer name -> index of that ReLU in torchvision's ``vgg16().features``.
VGG16_LAYERS: dict[str, int] = {
    "relu1_1": 1,
    "relu1_2": 3,
    "relu2_1": 6,
    "relu2_2": 8,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu3_3": 15,
    "relu4_1": 18,
    "relu4_2": 20,
    "relu4_3": 22,
    "relu5_1": 25,
    "relu5_2": 27,
    "relu5_3": 29,
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16(weights=None).features``, initialised the same way.

    Built with torchvision's own ``make_layers`` so the module layout and state-dict keys are
    torchvision's, without allocating the 120M-parameter classifier that would be thrown away.
    Nothing is downloaded: weights come only from a local checkpoint.
    """
    features = make_layers(cfgs["D"], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):  # as torchvision's VGG.__init__
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(module.bias, 0)
    return features


def _listing(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


class VGGFeatures(nn.Module):
    """Frozen VGG16 ``features``, cut after the deepest requested ReLU; returns the tapped maps.

    ``checkpoint``: a torchvision vgg16 state dict (``features.N.weight`` keys; ``classifier.*``
    is ignored; a bare ``vgg16().features`` state dict and the usual containers/prefixes are
    accepted too). Without one the network keeps torchvision's random init, ``pretrained`` is
    False and ``log`` (default: a ``UserWarning``) is told so.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        checkpoint: str | Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if not layers or unknown:
            raise ValueError(
                f"unknown VGG16 layer(s) {unknown or 'none given'}; valid names: {', '.join(VGG16_LAYERS)}"
            )
        self.layers = layers
        self._indices = tuple(VGG16_LAYERS[name] for name in layers)
        depth = max(self._indices) + 1
        self.features = _vgg16_features()[:depth]
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = False
        if checkpoint is None:
            message = (
                "VGG16 has random weights: no checkpoint given (nothing is downloaded), so MCLIR's "
                "perceptual term measures distances in a random network; set the VGG16 checkpoint "
                "(torchvision vgg16-397923af.pth) for real runs"
            )
            note_random_weights(message, log)
        else:
            self.load_checkpoint(checkpoint, log=log)
        self.requires_grad_(False)
        self.eval()

    def load_checkpoint(self, path: str | Path, log: Callable[[str], None] | None = None) -> None:
        """Load the kept ``features`` layers, strictly: a missing or mis-shaped tensor is an error.

        Extra keys (classifier, deeper conv layers) are ignored: only the truncated part runs.
        """
        path = Path(path)
        state = load_state_dict_file(path)  # weights_only=True; CheckpointError names the file
        if not any(k.startswith("features.") for k in state):
            state = {f"features.{k}": v for k, v in state.items()}  # a bare vgg16().features dict
        own = self.features.state_dict()
        wanted = {f"features.{k}": k for k in own}
        missing = [k for k in wanted if k not in state]
        mismatched = [
            f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[name].shape)})"
            for k, name in wanted.items()
            if k in state and state[k].shape != own[name].shape
        ]
        if missing or mismatched:
            parts = []
            if missing:
                parts.append(f"missing keys: {_listing(missing)}")
            if mismatched:
                parts.append(f"shape mismatches: {_listing(mismatched)}")
            raise CheckpointError(
                f"{path}: not a torchvision VGG16 state dict (expected features.N.weight/bias): "
                + "; ".join(parts)
            )
        self.features.load_state_dict({name: state[k] for k, name in wanted.items()}, strict=True)
        self.pretrained = True
        (log or _LOG.info)(f"VGG16: loaded {len(own)} feature tensors (up to {self.layers}) from {path}")

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stay in eval mode whatever the caller asks: the network is a frozen measure."""
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Post-ReLU feature maps of ``x`` (N, 3, H, W) in [0, 1], in the order of ``layers``."""
        h = (x - self.mean) / self.std
        taps: dict[int, Tensor] = {}
        wanted = set(self._indices)
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                taps[index] = h
        return [taps[i] for i in self._indices]


def negative_perceptual_distance(
    vgg: nn.Module, out: Tensor, negs: Tensor, layer_weights: Sequence[float]
) -> Tensor:
    """Mean over negative sets n of sum_l w_l * mean|phi_l(out) - phi_l(neg_n)| (a scalar).

    ``negs`` holds N sets of B images stacked set after set (N*B rows, set n is rows
    n*B ... n*B + B - 1). Features of ``out`` carry gradients; the negatives are constants
    (MCLIR's lagged copies), so they go through ``vgg`` in one batched no_grad pass. MCLIR
    maximises this distance: its loss is L1(out, gt) - lambda * this.
    """
    b = out.shape[0]
    if negs.ndim != out.ndim or negs.shape[1:] != out.shape[1:] or b == 0 or negs.shape[0] % b:
        raise ValueError(
            f"negs must stack N >= 1 sets shaped like out {tuple(out.shape)}, got {tuple(negs.shape)}"
        )
    n_sets = negs.shape[0] // b
    if n_sets == 0:
        raise ValueError("negs holds no negative set")
    feats_out = list(vgg(out))
    with torch.no_grad():
        feats_neg = list(vgg(negs))
    weights = [float(w) for w in layer_weights]
    if not len(weights) == len(feats_out) == len(feats_neg):
        raise ValueError(
            f"{len(weights)} layer weights for {len(feats_out)} feature maps: give one weight per layer"
        )
    total = out.new_zeros(())
    for w, f_out, f_neg in zip(weights, feats_out, feats_neg):
        # One L1 per set instead of a broadcast (N, B, ...) difference: no N-fold copy kept for backward.
        for f_set in f_neg.split(b):
            total = total + w * F.l1_loss(f_out, f_set.to(f_out.dtype))
    return total / n_sets
