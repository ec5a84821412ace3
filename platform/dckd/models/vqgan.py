"""The frozen VQGAN encoder that DCKD uses for its features and its codebook distributions.

DCKD needs two things from a taming-transformers VQGAN (ImageNet f16): the output of one
ResnetBlock per down level (the contrastive features, one term per level) and, for the
distribution mapping module, every position's distance to the codebook. The released code
gets them with 7 separate encoder calls plus another full pass; here ONE forward pass yields
both, on a batch that can hold positives and negatives together: the codebook half of the
encoder (everything after the deepest tapped block) runs only on the rows that need it.

``taming.models.vqgan`` no longer imports (pytorch_lightning API drift), so the network is
assembled from ``taming.modules`` and the checkpoint's ``encoder.*``, ``quant_conv.*`` and
``quantize.embedding.weight`` are loaded by key; decoder and loss weights are ignored.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import Encoder, nonlinearity
from taming.modules.vqvae.quantize import VectorQuantizer
from torch import Tensor, nn

from dckd.config.vqgan import VQGANSpec
from dckd.errors import CheckpointError, note_random_weights

__all__ = [
    "VQGANFeatures",
    "VQGANOutput",
    "VQGANSpec",
    "codebook_log_probs",
    "load_vqgan_state_dict",
]

_LOG = logging.getLogger(__name__)

# Prefixes of the checkpoint keys this module uses; anything else (decoder, post_quant_conv,
# loss/discriminator) belongs to parts DCKD never runs.
_USED_PREFIXES = ("encoder.", "quant_conv.", "quantize.embedding.weight")
# Keys under these prefixes that the model does not have mean a different architecture.
_STRICT_PREFIXES = ("encoder.", "quant_conv.")
_MAX_LISTED = 20


@dataclass
class VQGANOutput:
    """What one encoder pass gives.

    ``features[L]`` is the output of ``encoder.down[L].block[feature_block]`` for every input
    row. ``logits`` has shape (codebook_rows, H', W', n_embed): negated squared Euclidean
    distances of each position's ``quant_conv(encoder(x))`` vector to every codebook entry,
    in float32; ``None`` when no row asked for the codebook.
    """

    features: list[Tensor]
    logits: Tensor | None


def codebook_log_probs(logits: Tensor) -> Tensor:
    """Log of the paper's Eq. 8 distribution: log-softmax over the codebook of -||z - e_k||^2.

    The released code builds ``d_max - d`` before its softmax; subtracting a per-position
    constant does not change a softmax, so ``softmax(logits)`` is that same distribution.
    No temperature, as released.
    """
    return F.log_softmax(logits.float(), dim=-1)


class _Opaque:
    """Inert stand-in for Python objects a checkpoint pickles besides tensors.

    Old Lightning checkpoints key their ``callbacks`` by class (``ModelCheckpoint``) and may
    hold hyper-parameter objects. ``weights_only=True`` refuses them; mapping them to this
    class lets the safe unpickler finish without importing or running any foreign code.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _torch_load_safely(path: Path) -> tuple[Any, list[str]]:
    """``torch.load(weights_only=True)``; non-tensor globals become inert placeholders."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError:
        pass  # fall through: find the refused globals and load again with stand-ins
    except Exception as exc:  # corrupt or not a torch file at all
        raise CheckpointError(f"cannot read VQGAN checkpoint {path}: {exc}") from exc
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        with torch.serialization.safe_globals([(_Opaque, name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True), names
    except Exception as exc:
        raise CheckpointError(f"cannot read VQGAN checkpoint {path} with weights_only=True: {exc}") from exc


def load_vqgan_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """Read a taming checkpoint: a Lightning dict with ``state_dict`` or a plain state dict.

    Returns the tensors and the names of non-tensor objects that were replaced by inert
    placeholders while unpickling (empty for clean files).
    """
    path = Path(path)
    obj, replaced = _torch_load_safely(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"VQGAN checkpoint {path} holds neither a 'state_dict' nor a state dict of tensors"
        )
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}, replaced


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


class VQGANFeatures(nn.Module):
    """Frozen VQGAN encoder + quant_conv + codebook, always in eval mode.

    Parameters never require gradients, but the forward is not run under ``no_grad``: the
    student's output must get gradients through the frozen network. Callers wrap the pass
    for frozen-model outputs (teacher, negatives) in ``torch.no_grad()`` themselves.
    Submodule names mirror taming's ``VQModel`` so the checkpoint's keys load as they are.
    """

    def __init__(self, spec: VQGANSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = Encoder(
            ch=spec.ch,
            out_ch=3,  # decoder-only argument; the encoder ignores it
            ch_mult=tuple(spec.ch_mult),
            num_res_blocks=spec.num_res_blocks,
            attn_resolutions=list(spec.attn_resolutions),
            dropout=spec.dropout,
            in_channels=3,
            resolution=spec.resolution,
            z_channels=spec.z_channels,
            double_z=False,
        )
        self.quant_conv = nn.Conv2d(spec.z_channels, spec.embed_dim, kernel_size=1)
        # beta is a training-only commitment weight; the module is used for its embedding.
        self.quantize = VectorQuantizer(spec.n_embed, spec.embed_dim, beta=0.25)
        self.pretrained = False
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, spec: VQGANSpec, log: Callable[[str], None] | None = None) -> VQGANFeatures:
        """Build the encoder and load ``spec.checkpoint`` into it (random init without one).

        ``log`` receives one line per event (loaded, or the random-init warning); by default
        the random-init notice is a ``UserWarning`` and the rest goes to ``logging``.
        """
        model = cls(spec)
        if spec.checkpoint is None:
            message = (
                "VQGAN: no checkpoint given, features come from a RANDOMLY INITIALISED encoder and "
                "codebook; DCKD's contrastive and distribution terms are then not the paper's "
                "(set vqgan.checkpoint to vqgan_imagenet_f16_1024.ckpt for real runs)"
            )
            note_random_weights(message, log)
            return model
        model.load_checkpoint(spec.checkpoint, log=log)
        return model

    def load_checkpoint(self, path: str | Path, log: Callable[[str], None] | None = None) -> None:
        """Load encoder, quant_conv and codebook weights; every one of them must be present.

        Non-strict with respect to the rest of the file (decoder, loss) like the released
        code, but strict on what it uses: a missing or mis-shaped tensor means the spec does
        not describe this checkpoint, which would silently give meaningless features.
        """
        path = Path(path)
        state, replaced = load_vqgan_state_dict(path)
        own = self.state_dict()
        used = {k: v for k, v in state.items() if k.startswith(_USED_PREFIXES)}
        missing = [k for k in own if k not in used]
        mismatched = [
            f"{k} (checkpoint {tuple(used[k].shape)}, model {tuple(own[k].shape)})"
            for k in own
            if k in used and used[k].shape != own[k].shape
        ]
        unexpected = [k for k in used if k not in own and k.startswith(_STRICT_PREFIXES)]
        if missing or mismatched or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys: {_listing(missing)}")
            if mismatched:
                parts.append(f"shape mismatches: {_listing(mismatched)}")
            if unexpected:
                parts.append(f"unexpected encoder keys: {_listing(unexpected)}")
            raise CheckpointError(
                f"VQGAN checkpoint {path} does not fit the configured encoder "
                f"(check vqgan.ch/ch_mult/num_res_blocks/z_channels/embed_dim/n_embed): " + "; ".join(parts)
            )
        self.load_state_dict({k: used[k] for k in own}, strict=True)
        self.pretrained = True
        message = f"VQGAN: loaded {len(own)} encoder/quant_conv/codebook tensors from {path}"
        if replaced:
            message += f" (non-tensor objects skipped: {', '.join(replaced)})"
        (log or _LOG.info)(message)

    # ------------------------------------------------------------------ behaviour
    def train(self, mode: bool = True) -> VQGANFeatures:
        """Stay in eval mode whatever the caller asks: the network is a frozen measure."""
        return super().train(False)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        return self.spec.feature_channels

    def forward(self, x: Tensor, codebook_rows: int | None = None) -> VQGANOutput:
        """One pass over ``x`` (N, 3, H, W) in [0, 1]: features of all rows, logits of the first k.

        Walks taming's ``Encoder.forward`` step by step. After the deepest tapped block the
        batch is cut to its first ``codebook_rows`` rows (None: all; 0: stop there), so a
        batch [positives, negatives] costs the codebook half only for the positives.
        """
        rows = x.shape[0]
        k = rows if codebook_rows is None else int(codebook_rows)
        if not 0 <= k <= rows:
            raise ValueError(f"codebook_rows must be in [0, {rows}], got {codebook_rows}")
        if self.spec.input_range == "symmetric":
            x = x * 2.0 - 1.0

        enc = self.encoder
        tap = self.spec.feature_block
        last = enc.num_resolutions - 1
        features: list[Tensor] = []
        h = enc.conv_in(x)
        for level in range(enc.num_resolutions):
            down = enc.down[level]
            for i_block in range(enc.num_res_blocks):
                h = down.block[i_block](h, None)
                if i_block == tap:
                    features.append(h)
                    if level == last:
                        if k == 0:
                            return VQGANOutput(features=features, logits=None)
                        if k < rows:
                            h = h[:k]
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if level != last:
                h = down.downsample(h)

        h = enc.mid.block_1(h, None)
        h = enc.mid.attn_1(h)
        h = enc.mid.block_2(h, None)
        h = enc.conv_out(nonlinearity(enc.norm_out(h)))
        z = self.quant_conv(h)
        return VQGANOutput(features=features, logits=self._codebook_logits(z))

    def _codebook_logits(self, z: Tensor) -> Tensor:
        """-||z - e||^2 = -(||z||^2 + ||e||^2 - 2 z.e), as taming's quantizer, in float32.

        Autocast is switched off: in half precision the expansion loses the small distance
        differences that decide the softmax.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float().permute(0, 2, 3, 1)  # (k, H', W', C)
            emb = self.quantize.embedding.weight.float()  # (n_embed, C)
            dist = zf.pow(2).sum(-1, keepdim=True) + emb.pow(2).sum(-1) - 2.0 * (zf @ emb.t())
        return -dist
