"""`explain` (attention maps, gate over time, verdict) and `diagnose` (the guide's checks) on tiny models."""

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from conftest import noise_clips
from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.evaluation.diagnose import GUIDE_FRAMES, diagnose
from modeling_qwen2audio_ldv.evaluation.explain import explain, gate_verdict
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio

PNG = b"\x89PNG\r\n\x1a\n"
D = 16


def adapted(base, **adapter):
    torch.manual_seed(0)
    options = {"adapter_type": "transformer", "num_heads": 4, "ff_dim": 32, "zero_init": False, **adapter}
    return add_domain_adapter_to_model(copy.deepcopy(base), **options).eval()


def tower(model, processor, clips):
    """Tower features and valid lengths, computed directly (the reference for the tools' numbers)."""
    features = processor.feature_extractor(clips, sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    with torch.no_grad():
        return encode_audio(model.model.audio_tower, features["input_features"], features["attention_mask"])


@pytest.fixture
def adapter_dir(tiny_base_dir, tmp_path):
    torch.manual_seed(0)
    config = DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=2, zero_init=False)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(tiny_base_dir, adapter_config=config)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


# ---------------------------------------------------------------------------------------------------- explain
@pytest.mark.parametrize("mean,word", [(0.1, "low"), (0.29, "low"), (0.3, "healthy"), (0.5, "healthy"),
                                       (0.7, "healthy"), (0.71, "high"), (0.95, "high"), (None, "no gate"),
                                       (float("nan"), "broken")])
def test_gate_verdict_uses_the_guides_range(mean, word):
    assert gate_verdict(mean).startswith(word)


def test_explain_writes_maps_gate_and_summary(tiny_base, tmp_path):
    base, processor = tiny_base
    model = adapted(base, num_layers=2)
    clip = noise_clips([12000], seed=1)[0]
    info = explain(model, processor, clip, tmp_path / "out")

    hidden, lengths = tower(model, processor, [clip])
    n = int(lengths[0])
    with torch.no_grad():
        gate = model.domain_adapter.gate(hidden[0, :n])  # sigmoid(Linear(x)) on the valid frames
    assert info["frames"] == n == 19  # 0.75 s: 75 mel frames -> 38 -> 19 encoder frames
    assert info["gate_mean"] == pytest.approx(float(gate.mean()), abs=1e-6)
    assert info["gate_std"] == pytest.approx(float(gate.std(unbiased=False)), abs=1e-6)
    assert info["scale"] == pytest.approx(0.1)
    assert info["healthy_range"] == [0.3, 0.7] and info["healthy"] is True
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["attention_layer0.png", "attention_layer1.png", "gate_over_time.png", "summary.json",
                     "summary.txt"]
    for name in names:
        if name.endswith(".png"):
            assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert "scale: 0.1000" in text and f"mean {info['gate_mean']:.3f}" in text and "0.3-0.7" in text
    assert "verdict: healthy" in text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == n


def test_explain_mlp_without_gate_has_no_maps(tiny_base, tmp_path):
    base, processor = tiny_base
    model = adapted(base, adapter_type="mlp", bottleneck_dim=8, use_gate=False)
    info = explain(model, processor, noise_clips([8000])[0], tmp_path)
    assert info["attention_files"] == [] and info["gate_file"] is None and info["gate_mean"] is None
    assert info["verdict"].startswith("no gate") and "attention maps: none" in info["summary"]


def test_explain_refuses_a_model_without_adapter(tiny_base, tmp_path):
    base, processor = tiny_base
    model = adapted(base, adapter_type="none")
    with pytest.raises(ValueError, match="no domain adapter"):
        explain(model, processor, noise_clips([8000])[0], tmp_path)


def test_explain_cli_reads_any_wav(adapter_dir, tmp_path, capsys):
    from modeling_qwen2audio_ldv.cli import main

    stereo = np.stack([noise_clips([8000], seed=2)[0]] * 2, axis=1)  # 1 s at 8 kHz, two channels
    sf.write(tmp_path / "clip.wav", stereo, 8000, subtype="FLOAT")
    code = main(["explain", str(tmp_path / "clip.wav"), "--model", str(adapter_dir), "--output", str(tmp_path / "x")])
    out = capsys.readouterr().out
    assert code == 0
    assert "gate: mean" in out and "verdict:" in out and "1.00 s" in out  # resampled to 16 kHz, same duration
    assert (tmp_path / "x" / "gate_over_time.png").read_bytes()[:8] == PNG
    assert (tmp_path / "x" / "attention_layer1.png").is_file()


# --------------------------------------------------------------------------------------------------- diagnose
def test_diagnose_a_healthy_adapter(tiny_base):
    base, processor = tiny_base
    model = adapted(base)
    mic, ldv = noise_clips([12000, 12000], seed=4)
    report = diagnose(model, processor, [{"audio": ldv, "text": "hello", "mic_audio": mic}])
    assert report.ok, report.summary()
    names = [p.name for p in report.trainable]
    assert names == [n for n, _ in model.domain_adapter.named_parameters(prefix="domain_adapters.default")]
    assert report.num_trainable == model.num_domain_adapter_parameters()
    assert all(p.grad_norm is not None and p.grad_norm > 0 for p in report.trainable)
    assert [c["input"] for c in report.shape_checks][0] == [1, GUIDE_FRAMES, D]
    assert all(c["ok"] and c["input"] == c["output"] for c in report.shape_checks)
    assert report.example == "example 0 of the data" and np.isfinite(report.loss)
    assert all(p.grad is None for p in model.parameters())  # the check leaves no gradients behind
    assert not model.training

    # the distance, recomputed by hand: MSE over the frames and channels of the valid frames
    hidden, lengths = tower(model, processor, [mic, ldv])
    n = int(lengths.min())
    valid = torch.arange(hidden.shape[1])[None] < lengths[1:, None]
    with torch.no_grad():
        after = model.domain_adapter(hidden[1:], valid)
    expected_before = float(((hidden[0, :n] - hidden[1, :n]) ** 2).mean())
    expected_after = float(((hidden[0, :n] - after[0, :n]) ** 2).mean())
    assert report.feature_distance["before"] == pytest.approx(expected_before, rel=1e-5)
    assert report.feature_distance["after"] == pytest.approx(expected_after, rel=1e-5)
    assert report.feature_distance["after"] != pytest.approx(expected_before, rel=1e-3)
    assert "mic-vs-LDV feature distance" in report.summary() and "result: OK" in report.summary()


def test_zero_init_adapter_is_healthy_and_leaves_the_distance_unchanged(tiny_base):
    base, processor = tiny_base
    model = adapted(base, zero_init=True)
    mic, ldv = noise_clips([9000, 9000], seed=5)
    report = diagnose(model, processor, [{"audio": ldv, "text": "hi", "mic_audio": mic}])
    assert report.ok, report.summary()
    with_grad = {p.name for p in report.trainable if p.grad_norm}
    assert with_grad == {"domain_adapters.default.output_norm.weight", "domain_adapters.default.output_norm.bias"}
    assert any("zero_init" in note for note in report.notes)
    assert report.feature_distance["after"] == report.feature_distance["before"]


def test_frozen_adapter_fails(tiny_base):
    base, processor = tiny_base
    model = adapted(base)
    model.requires_grad_(False)
    report = diagnose(model, processor)
    assert not report.ok and report.trainable == []
    assert "no trainable parameters" in report.problems[0] and "freeze_base_model" in report.problems[0]
    assert report.example == "a synthetic clip"


def test_zero_init_with_zero_scale_has_zero_gradients(tiny_base):
    base, processor = tiny_base
    model = adapted(base, zero_init=True, scale_init=0.0)
    report = diagnose(model, processor)
    assert not report.ok
    assert any(p.startswith("zero gradients") and "--scale_init" in p for p in report.problems)


def test_nan_weights_fail(tiny_base):
    base, processor = tiny_base
    model = adapted(base)
    with torch.no_grad():
        model.domain_adapter.output_projection.weight[0, 0] = float("nan")
    report = diagnose(model, processor)
    assert not report.ok
    assert any("NaN/Inf in adapter weights" in p and "output_projection.weight" in p for p in report.problems)
    assert any("loss" in p for p in report.problems)


def test_unfrozen_base_is_a_warning(tiny_base):
    base, processor = tiny_base
    model = adapted(base)
    model.requires_grad_(True)
    report = diagnose(model, processor)
    assert report.ok and any("base model is not frozen" in w for w in report.warnings)


def write_manifest(folder, pairs):
    rows = []
    for index, (mic, ldv) in enumerate(pairs):
        sf.write(folder / f"mic{index}.wav", mic, 16000, subtype="FLOAT")
        sf.write(folder / f"ldv{index}.wav", ldv, 16000, subtype="FLOAT")
        rows.append({"audio": f"ldv{index}.wav", "mic": f"mic{index}.wav", "text": f"clip {index}"})
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "pairs.jsonl"


def test_diagnose_cli_with_paired_data(adapter_dir, tmp_path, capsys):
    from modeling_qwen2audio_ldv.cli import main

    clips = noise_clips([8000, 8000, 10000, 10000], seed=6)
    manifest = write_manifest(tmp_path, [(clips[0], clips[1]), (clips[2], clips[3])])
    code = main(["diagnose", "--model", str(adapter_dir), "--data", str(manifest), "--mic-audio-column", "mic",
                 "--report", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "domain_adapters.default.scale" in out and "grad_norm" in out and "2 pair(s)" in out and "result: OK" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["feature_distance"]["pairs"] == 2
    assert all(p["name"].startswith("domain_adapters.default.") for p in report["trainable"])  # the CLI froze the base


def test_diagnose_cli_exits_non_zero_on_nan(adapter_dir, capsys):
    from modeling_qwen2audio_ldv.cli import main

    state = load_file(adapter_dir / ADAPTER_WEIGHTS_NAME)
    state["scale"] = torch.tensor([float("nan")])
    save_file(state, adapter_dir / ADAPTER_WEIGHTS_NAME)
    code = main(["diagnose", "--model", str(adapter_dir)])
    out = capsys.readouterr().out
    assert code == 1 and "PROBLEM: NaN/Inf in adapter weights: ['domain_adapters.default.scale']" in out
    assert "result: FAILED" in out


def test_cli_tools_report_a_missing_model(tmp_path, caplog):
    from modeling_qwen2audio_ldv.cli import main

    sf.write(tmp_path / "clip.wav", noise_clips([4000])[0], 16000)
    assert main(["diagnose", "--model", str(tmp_path / "nowhere")]) == 2
    assert main(["explain", str(tmp_path / "clip.wav"), "--model", str(tmp_path / "nowhere")]) == 2
    assert main(["explain", str(tmp_path / "missing.wav"), "--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in caplog.text and "missing.wav" in caplog.text
