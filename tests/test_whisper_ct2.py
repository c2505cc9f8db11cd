"""The CTranslate2 reader and the Whisper-encoder mapping (``whisper_ct2``), on files the tests write themselves."""

import struct

import numpy as np
import pytest
import torch

from modeling_qwen2audio_ldv.whisper_ct2 import (
    CTranslate2FormatError,
    encoder_config,
    encoder_state_dict,
    read_ctranslate2,
    write_ctranslate2,
)

D, FFN, MELS, POSITIONS, LAYERS = 8, 16, 4, 6, 2


def _whisper_variables(seed=0, k_bias=0.0):
    """A tiny Whisper encoder in CTranslate2 names (plus one decoder tensor and the scalar attributes)."""
    rng = np.random.default_rng(seed)

    def f16(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    variables = {
        "decoder/embeddings/weight": f16(5, D),
        "encoder/conv1/bias": f16(D), "encoder/conv1/weight": f16(D, MELS, 3),
        "encoder/conv2/bias": f16(D), "encoder/conv2/weight": f16(D, D, 3),
        "encoder/layer_norm/beta": f16(D), "encoder/layer_norm/gamma": f16(D),
        "encoder/num_heads": np.array(2, dtype=np.int16),
        "encoder/position_encodings/encodings": f16(POSITIONS, D),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
    }
    for i in range(LAYERS):
        bias = f16(3 * D)
        bias[D : 2 * D] = k_bias
        variables.update({
            f"encoder/layer_{i}/ffn/layer_norm/beta": f16(D), f"encoder/layer_{i}/ffn/layer_norm/gamma": f16(D),
            f"encoder/layer_{i}/ffn/linear_0/bias": f16(FFN), f"encoder/layer_{i}/ffn/linear_0/weight": f16(FFN, D),
            f"encoder/layer_{i}/ffn/linear_1/bias": f16(D), f"encoder/layer_{i}/ffn/linear_1/weight": f16(D, FFN),
            f"encoder/layer_{i}/self_attention/layer_norm/beta": f16(D),
            f"encoder/layer_{i}/self_attention/layer_norm/gamma": f16(D),
            f"encoder/layer_{i}/self_attention/linear_0/bias": bias,
            f"encoder/layer_{i}/self_attention/linear_0/weight": f16(3 * D, D),
            f"encoder/layer_{i}/self_attention/linear_1/bias": f16(D),
            f"encoder/layer_{i}/self_attention/linear_1/weight": f16(D, D),
        })
    return variables


def test_header_layout_by_hand(tmp_path):
    """The first bytes follow model_spec.py: version, name string with NUL, revision, count, then a record."""
    path = tmp_path / "model.bin"
    write_ctranslate2(path, {"a/b": np.array([1.5, -2.0], dtype=np.float16)}, spec="WhisperSpec", revision=3,
                      aliases={"c": "a/b"})
    raw = path.read_bytes()
    expected = (
        struct.pack("<I", 6) + struct.pack("<H", 12) + b"WhisperSpec\0" + struct.pack("<I", 3) + struct.pack("<I", 1)
        + struct.pack("<H", 4) + b"a/b\0" + struct.pack("<B", 1) + struct.pack("<I", 2) + struct.pack("<B", 4)
        + struct.pack("<I", 4) + np.array([1.5, -2.0], dtype=np.float16).tobytes()
        + struct.pack("<I", 1) + struct.pack("<H", 2) + b"c\0" + struct.pack("<H", 4) + b"a/b\0"
    )
    assert raw == expected
    model = read_ctranslate2(path)
    assert model["spec"] == "WhisperSpec" and model["revision"] == 3 and model["aliases"] == {"c": "a/b"}
    assert model["variables"]["a/b"].dtype == np.float16
    assert model["variables"]["a/b"].tolist() == [1.5, -2.0]


def test_round_trip_names_shapes_dtypes(tmp_path):
    variables = _whisper_variables()
    write_ctranslate2(tmp_path / "model.bin", variables)
    read = read_ctranslate2(tmp_path / "model.bin")["variables"]
    assert list(read) == list(variables)
    for name, value in variables.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        np.testing.assert_array_equal(read[name], value)


def test_fused_qkv_is_split_into_q_k_v():
    variables = _whisper_variables()
    state = encoder_state_dict(variables)
    fused_w = variables["encoder/layer_1/self_attention/linear_0/weight"]
    fused_b = variables["encoder/layer_1/self_attention/linear_0/bias"]
    np.testing.assert_array_equal(state["layers.1.self_attn.q_proj.weight"].numpy(), fused_w[:D])
    np.testing.assert_array_equal(state["layers.1.self_attn.k_proj.weight"].numpy(), fused_w[D : 2 * D])
    np.testing.assert_array_equal(state["layers.1.self_attn.v_proj.weight"].numpy(), fused_w[2 * D :])
    np.testing.assert_array_equal(state["layers.1.self_attn.q_proj.bias"].numpy(), fused_b[:D])
    np.testing.assert_array_equal(state["layers.1.self_attn.v_proj.bias"].numpy(), fused_b[2 * D :])
    assert "layers.1.self_attn.k_proj.bias" not in state
    np.testing.assert_array_equal(state["layers.0.fc1.weight"].numpy(), variables["encoder/layer_0/ffn/linear_0/weight"])
    np.testing.assert_array_equal(state["layers.0.final_layer_norm.weight"].numpy(),
                                  variables["encoder/layer_0/ffn/layer_norm/gamma"])
    np.testing.assert_array_equal(state["embed_positions.weight"].numpy(),
                                  variables["encoder/position_encodings/encodings"])


def test_state_dict_loads_strictly_into_the_qwen2audio_encoder():
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    variables = _whisper_variables()
    sizes = encoder_config(variables)
    assert sizes == {"d_model": D, "num_mel_bins": MELS, "encoder_layers": LAYERS, "encoder_attention_heads": 2,
                     "encoder_ffn_dim": FFN, "max_source_positions": POSITIONS}
    encoder = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**sizes))
    encoder.load_state_dict(encoder_state_dict(variables, dtype=torch.float32), strict=True)
    # the first convolution at frame 0 by hand: out[c, 0] = b[c] + sum_k w[c, :, k] . x[:, k - 1] (x[:, -1] is the
    # zero padding, so k = 0 drops out)
    x = torch.randn(1, MELS, 2 * POSITIONS)
    w = torch.from_numpy(variables["encoder/conv1/weight"].astype(np.float32))
    b = torch.from_numpy(variables["encoder/conv1/bias"].astype(np.float32))
    by_hand = b + sum(w[:, :, k] @ x[0, :, k - 1] for k in (1, 2))
    assert torch.allclose(encoder.conv1(x)[0, :, 0], by_hand, atol=1e-5)


def test_nonzero_key_bias_and_bad_files_are_refused(tmp_path):
    with pytest.raises(CTranslate2FormatError, match="key part must be zero"):
        encoder_state_dict(_whisper_variables(k_bias=0.5))
    variables = _whisper_variables()
    del variables["encoder/layer_1/ffn/linear_1/bias"]
    with pytest.raises(CTranslate2FormatError, match="missing variable 'encoder/layer_1/ffn/linear_1/bias'"):
        encoder_state_dict(variables)
    variables = _whisper_variables()
    variables["encoder/extra/weight"] = np.zeros(3, dtype=np.float16)
    with pytest.raises(CTranslate2FormatError, match="no home"):
        encoder_state_dict(variables)
    path = tmp_path / "model.bin"
    write_ctranslate2(path, _whisper_variables())
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CTranslate2FormatError, match="model.bin"):
        read_ctranslate2(path)
    path.write_bytes(struct.pack("<I", 99) + b"\0" * 16)
    with pytest.raises(CTranslate2FormatError, match="binary version 99"):
        read_ctranslate2(path)
