"""Serving a registered student over HTTP: images in, restored images out.

Each logged student is an MLflow pyfunc model written from code (:mod:`dckd.deploy.pyfunc_model`):
loading it runs that file and rebuilds the network from ``spec.json`` and a weights-only
``weights.pt`` (``torch.load(weights_only=True)``), so nothing is unpickled. Serve it with::

    MLFLOW_TRACKING_URI=http://mlflow:5000 mlflow models serve -m models:/NAME@ALIAS \\
        --env-manager local -h 127.0.0.1 -p 5001

``--env-manager local`` serves from the current Python environment, which must have dckd installed
(it is not on PyPI, so MLflow cannot build an environment for it) and its ``bin/`` on ``PATH`` (MLflow
starts ``uvicorn`` by name); it needs no network. ``MLFLOW_DISABLE_TELEMETRY=true`` stops MLflow's
usage reports; ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`` (default 60 s) bounds one request, so
large images on a CPU may need more.

**Request** (``POST /invocations``, ``Content-Type: application/json``): the column ``image`` holds
PNG or JPEG files, base64-encoded (the signature declares it ``binary``, so MLflow's scoring server
decodes the base64); several rows restore several images; optional ``params`` set the tiling
(input pixels, as ``dckd restore --tile/--overlap``)::

    {"dataframe_split": {"columns": ["image"], "data": [["iVBORw0KGgo..."]]},
     "params": {"tile": 128, "overlap": 16}}

``{"dataframe_records": [{"image": "iVBORw0KGgo..."}]}``, ``{"inputs": {"image": ["iVBORw0KGgo..."]}}``
and ``{"instances": [{"image": "..."}]}`` work too (for the last two MLflow passes the base64 text on
undecoded; :func:`decode_image` decodes it). A ``data:image/png;base64,`` prefix is accepted.

**Response**: one row per input, in order; ``image`` is the restored image as a PNG file, base64
(MLflow's encoder breaks the text into lines, which base64 decoders ignore)::

    {"predictions": [{"image": "iVBORw0KGgo..."}]}

An input that is not a decodable PNG/JPEG is refused (HTTP 400) with a message naming the row.
In Python, ``mlflow.pyfunc.load_model(uri).predict(...)`` takes a DataFrame (or ``{"image": [...]}``)
whose ``image`` cells are PNG/JPEG bytes, base64 text, or uint8 HW/HWC arrays (RGB; grey is
replicated, alpha dropped), and returns a DataFrame whose ``image`` column holds PNG bytes. (A bare
array or bytes object is refused by MLflow's schema check before the model sees it.)

The device is CUDA when there is one, else the CPU; ``DCKD_SERVING_DEVICE`` (``cpu``, ``cuda:1``,
...) chooses. Tiles are restored with :func:`dckd.evaluation.restore.restore_image`, as
``dckd restore`` does, so the same student, tiling and device give the same pixels.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dckd.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature

    from dckd.models import Restorer

IMAGE_COLUMN = "image"
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 16
DEVICE_ENV = "DCKD_SERVING_DEVICE"
WEIGHTS_ARTIFACT, SPEC_ARTIFACT, ONNX_ARTIFACT = "weights", "spec", "onnx"
"""Artifact keys of the pyfunc model (``context.artifacts[...]``)."""
ACCEPTED_FORMATS = ("PNG", "JPEG")
"""What encoded inputs may be: Pillow opens only these, never a format that calls out (EPS, ...)."""


def signature() -> ModelSignature:
    """``image`` (binary) in and out, tiling as params. Binary makes the scoring server base64-decode."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
        outputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
        params=ParamSchema([ParamSpec("tile", "long", DEFAULT_TILE), ParamSpec("overlap", "long", DEFAULT_OVERLAP)]),
    )


# --------------------------------------------------------------------------- inputs
def images_of(model_input: Any) -> list[tuple[str, Any]]:
    """The images of a request, each with the name an error message uses for it."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns:
            values = model_input[IMAGE_COLUMN].tolist()
        elif len(model_input.columns) == 1:
            values = model_input.iloc[:, 0].tolist()
        else:
            raise DataError(f"expected a column {IMAGE_COLUMN!r}; the input has {list(map(str, model_input.columns))}")
        return _named(values)
    if isinstance(model_input, Mapping):
        if IMAGE_COLUMN not in model_input:
            raise DataError(f"expected the key {IMAGE_COLUMN!r}; the input has {sorted(map(str, model_input))}")
        value = model_input[IMAGE_COLUMN]
        return _named(value if _is_sequence(value) else [value])
    if isinstance(model_input, np.ndarray) and model_input.dtype != object and model_input.dtype.kind != "S":
        if model_input.ndim == 4:
            return _named(list(model_input))
        return _named([model_input])
    if _is_sequence(model_input):
        return _named(list(model_input))
    return _named([model_input])


def _is_sequence(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype == object or value.dtype.kind == "S" or value.ndim == 4
    return isinstance(value, (list, tuple))


def _named(values: list[Any]) -> list[tuple[str, Any]]:
    if not values:
        raise DataError("the request holds no image")
    n = len(values)
    return [(f"image {i} (row {i} of {n})", v) for i, v in enumerate(values)]


def decode_image(value: Any, name: str = "image") -> np.ndarray:
    """uint8 HWC RGB from PNG/JPEG bytes, their base64 text (str or bytes), or a uint8 HW/HWC array.

    Base64 text may arrive as bytes: MLflow's server decodes the base64 of ``dataframe_split`` and
    ``dataframe_records`` requests, but hands ``inputs``/``instances`` over as the text's bytes.
    Raises :class:`DataError` naming ``name`` when the value is none of these.
    """
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError as exc:
            raise DataError(f"{name}: text that is not base64 (non-ASCII characters)") from exc
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, how = _unwrap_base64(bytes(value), name)
        return _decode_bytes(data, name, how)
    if isinstance(value, list):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        return _from_array(value, name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise DataError(f"{name}: missing (no image in this row)")
    raise DataError(f"{name}: expected PNG/JPEG bytes, base64 text or a uint8 array, got {type(value).__name__}")


_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")


def _unwrap_base64(data: bytes, name: str) -> tuple[bytes, str]:
    """The image file ``data`` is, or the one its base64 text (or data URL) holds; and how it came."""
    if data.startswith(_MAGIC):
        return data, ""
    text = data.strip()
    if text.startswith(b"data:") and b"," in text:  # a data URL: data:image/png;base64,....
        text = text.split(b",", 1)[1]
    if not text or not _BASE64_TEXT.fullmatch(text):
        return data, ""  # neither an image we know nor base64: the decoder's message says so
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(b"".join(text.split())), " (decoded from base64)"
        return base64.b64decode(text, validate=False), " (decoded from base64)"
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{name}: {len(data)} bytes that are neither a {' or '.join(ACCEPTED_FORMATS)} image "
                        f"nor base64 text ({exc}; starts {data[:8]!r})") from exc


def _decode_bytes(data: bytes, name: str, how: str = "") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from dckd.imageio import _to_rgb_uint8

    if not data:
        raise DataError(f"{name}: empty (0 bytes{how})")
    try:
        with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as img:
            img.load()
            arr = _to_rgb_uint8(img)
    except UnidentifiedImageError as exc:
        raise DataError(f"{name}: {len(data)} bytes{how} that are not a {' or '.join(ACCEPTED_FORMATS)} image "
                        f"(starts {data[:8]!r})") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: a corrupt or truncated image{how}: {exc}") from exc
    return np.ascontiguousarray(arr)


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)  # JSON lists of pixel values arrive as int64
        else:
            raise DataError(f"{name}: an array of {arr.dtype}; pass uint8 pixels (0-255) or an encoded PNG/JPEG")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]
    elif arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    else:
        raise DataError(f"{name}: an array of shape {arr.shape}; expected HW or HWC with 1, 3 or 4 channels")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: an empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------- outputs
def encode_png(img: np.ndarray) -> bytes:
    """A uint8 HWC image as PNG bytes (lossless: the response holds exactly the restored pixels)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png_b64(text: str) -> np.ndarray:
    """A response's ``image`` (base64 PNG) as uint8 HWC: what a client does with the answer."""
    return decode_image(text, "response image")


# --------------------------------------------------------------------------- the model
def serving_device() -> torch.device:
    """``$DCKD_SERVING_DEVICE`` if set (cpu, cuda, cuda:1), else CUDA when available, else the CPU."""
    name = os.environ.get(DEVICE_ENV, "auto").strip() or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise DataError(f"{DEVICE_ENV}={name!r}: not a torch device ({exc})") from exc


def load_restorer(spec: str | Path, weights: str | Path, device: torch.device | None = None) -> Restorer:
    """The student from its logged artifacts (weights-only load), in eval mode on ``device``."""
    from dckd.tracking.registry import rebuild_student

    model = rebuild_student(Path(spec), Path(weights), "the served student")
    return model.to(device or serving_device()).eval()


def tiling(params: Mapping[str, Any] | None) -> tuple[int, int]:
    """``tile`` and ``overlap`` from a request's params (defaults 128 and 16), checked as ``dckd restore`` does."""
    params = params or {}
    try:
        tile = int(params.get("tile", DEFAULT_TILE))
        overlap = int(params.get("overlap", DEFAULT_OVERLAP))
    except (TypeError, ValueError) as exc:
        raise DataError(f"params tile and overlap must be integers: {exc}") from exc
    if tile < 0 or overlap < 0 or (tile > 0 and 2 * overlap >= tile):
        raise DataError(f"params: overlap must be less than half of tile, both non-negative "
                        f"(got tile={tile}, overlap={overlap}; tile 0 restores whole images)")
    return tile, overlap


def restore_all(model: Restorer, model_input: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every image of ``model_input`` restored (tiled), as a DataFrame with PNG bytes in ``image``.

    All inputs are decoded before any is restored, so a bad one fails the request at once.
    """
    import pandas as pd

    from dckd.evaluation.restore import restore_image

    tile, overlap = tiling(params)
    images = [decode_image(value, name) for name, value in images_of(model_input)]
    out = [encode_png(restore_image(model, img, model.scale, tile=tile, overlap=overlap)) for img in images]
    return pd.DataFrame({IMAGE_COLUMN: out})
