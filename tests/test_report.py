"""Results files (JSON + Markdown), the gap-recovered ratio and the PNG figures."""

import json
import math
import sys

import pytest

from modeling_qwen2audio_ldv.evaluation.report import (
    gap_recovered,
    plot_error_rates,
    plot_training_curves,
    results_markdown,
    write_results,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_results():
    return {
        "base_model": "tiny-qwen2-audio",
        "condition": "ldv_default",
        "adapter": {"preset": "mlp", "trainable_params": 12345},
        "eval": {
            "ldv": {"baseline": {"cer": 0.4567, "wer": 0.6}, "adapted": {"cer": 0.1234, "wer": 0.25}},
            "mic": {"baseline": {"cer": 0.05, "wer": 0.1}, "adapted": {"cer": 0.061, "wer": 0.118}},
            # a cross-condition set with only the adapted row
            "ldv_cross": {"adapted": {"cer": 0.2, "wer": 0.333}},
        },
        "gap_recovered": 0.8195,
        "train_seconds": 42.25,
        "examples": [
            {"set": "ldv", "reference": "機器運轉正常", "baseline": "機器運作", "adapted": "機器運轉正常"},
            {"set": "ldv", "reference": "pipe | here", "baseline": "pipe\nhere", "adapted": "pipe | here"},
        ],
    }


def test_write_results_round_trips_and_formats_the_table(tmp_path):
    results = sample_results()
    json_path, md_path = write_results(results, tmp_path / "run")
    assert json_path == tmp_path / "run" / "results.json"
    assert md_path == tmp_path / "run" / "results.md"
    assert json.loads(json_path.read_text(encoding="utf-8")) == results
    assert json_path.read_text(encoding="utf-8").startswith('{\n  "base_model"')  # indent 2

    markdown = md_path.read_text(encoding="utf-8")
    lines = markdown.splitlines()
    # percentages with one decimal, counted by hand from the fractions above
    for row in (
        "| ldv | baseline | 45.7 | 60.0 |",
        "| ldv | adapted | 12.3 | 25.0 |",
        "| mic | baseline | 5.0 | 10.0 |",
        "| mic | adapted | 6.1 | 11.8 |",
        "| ldv_cross | adapted | 20.0 | 33.3 |",
    ):
        assert row in lines
    assert "| ldv_cross | baseline" not in markdown
    assert "Gap recovered (LDV vs microphone, CER): 82.0%" in lines
    assert "## Examples" in lines
    assert "| ldv | 機器運轉正常 | 機器運作 | 機器運轉正常 |" in lines
    assert "| ldv | pipe \\| here | pipe here | pipe \\| here |" in lines
    assert "- Adapter: preset `mlp`, 12,345 trainable parameters" in lines
    # the table comes before the gap line, which comes before the examples
    assert lines.index("| ldv | baseline | 45.7 | 60.0 |") < lines.index(
        "Gap recovered (LDV vs microphone, CER): 82.0%"
    ) < lines.index("## Examples")


def test_markdown_computes_missing_gap_and_handles_no_gap():
    results = sample_results()
    del results["gap_recovered"], results["examples"]
    # (0.4567 - 0.1234) / (0.4567 - 0.05) = 0.3333 / 0.4067 = 0.8195...
    markdown = results_markdown(results)
    assert "Gap recovered (LDV vs microphone, CER): 82.0%" in markdown
    assert "## Examples" not in markdown

    results["gap_recovered"] = None
    assert "Gap recovered (LDV vs microphone, CER): n/a" in results_markdown(results)


def test_markdown_lists_the_gap_of_each_cross_condition_set():
    results = sample_results()
    results["gap_recovered_by_set"] = {"ldv_random-1000": 0.7126, "ldv_wall": None}
    lines = results_markdown(results).splitlines()
    assert "Gap recovered on ldv_random-1000 (vs the same utterances' microphone CER): 71.3%" in lines
    assert "Gap recovered on ldv_wall (vs the same utterances' microphone CER): n/a (no gap)" in lines


def test_markdown_with_minimal_results():
    markdown = results_markdown({"eval": {"test": {"adapted": {"wer": 0.5}}}})
    assert "| test | adapted | n/a | 50.0 |" in markdown.splitlines()
    assert "Gap recovered (LDV vs microphone, CER): n/a" in markdown


def test_write_results_rejects_missing_eval(tmp_path):
    with pytest.raises(ValueError, match="eval"):
        write_results({"base_model": "x"}, tmp_path)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "ldv_baseline, ldv_adapted, mic_baseline, expected",
    [
        (0.6, 0.3, 0.1, 0.6),  # 0.3 of a 0.5 gap
        (0.5, 0.5, 0.1, 0.0),  # no improvement
        (0.5, 0.1, 0.1, 1.0),  # adapted LDV as good as the microphone baseline
        (0.5, 0.6, 0.1, -0.25),  # worse: -0.1 / 0.4
        (0.5, 0.05, 0.1, 1.125),  # better than the microphone baseline: 0.45 / 0.4
        (0.1, 0.05, 0.1, None),  # no gap
        (0.1, 0.05, 0.2, None),  # LDV already better than the microphone
    ],
)
def test_gap_recovered(ldv_baseline, ldv_adapted, mic_baseline, expected):
    value = gap_recovered(ldv_baseline, ldv_adapted, mic_baseline)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


def test_gap_recovered_rejects_non_finite():
    with pytest.raises(ValueError, match="ldv_adapted_cer"):
        gap_recovered(0.5, math.nan, 0.1)


# Each wrong microphone (or LDV) figure gives another value: the right one is (0.6 - 0.3) / (0.6 - 0.1) = 0.6;
# the microphone's adapted CER 0.3 / 0.4 = 0.75, its baseline WER 0.3 / 0.25 = 1.2, its adapted WER
# 0.3 / 0.15 = 2.0, the LDV WERs (0.8 - 0.5) / (0.8 - 0.35) = 0.667, the adapted LDV CER as the reference
# (0.6 - 0.3) / (0.3 - 0.1) = 1.5.
GAP_SCORES = {
    "ldv": {"baseline": {"cer": 0.6, "wer": 0.8}, "adapted": {"cer": 0.3, "wer": 0.5}},
    "mic": {"baseline": {"cer": 0.1, "wer": 0.35}, "adapted": {"cer": 0.2, "wer": 0.45}},
}


def test_gap_recovered_of_a_run_in_results_json_and_markdown(tmp_path, monkeypatch):
    """The demo's results path: ``evaluate_run`` (``training/pipeline.py``) -> ``write_results`` ->
    ``results.json`` and ``results.md``, with the eval scores set by hand; and the Markdown's own computation when
    ``gap_recovered`` is missing."""
    import copy
    from types import SimpleNamespace

    import modeling_qwen2audio_ldv.evaluation.evaluate as evaluate_module
    from modeling_qwen2audio_ldv.training.arguments import (
        AdapterArguments,
        DataArguments,
        ModelArguments,
        ObjectiveArguments,
    )
    from modeling_qwen2audio_ldv.training.data import TrainingData
    from modeling_qwen2audio_ldv.training.pipeline import evaluate_run

    predictions = {name: {"reference": ["one"], "baseline": ["won"], "adapted": ["one"]} for name in GAP_SCORES}
    monkeypatch.setattr(evaluate_module, "evaluate_sets",
                        lambda *args, **kwargs: (copy.deepcopy(GAP_SCORES), predictions))
    model = SimpleNamespace(num_domain_adapter_parameters=lambda: 10,
                            config=SimpleNamespace(adapter_config=SimpleNamespace(to_dict=lambda: {})))
    data = TrainingData(train=[{}] * 3, eval_sets={"ldv": [], "mic": []}, condition="cardboard_box")
    results = evaluate_run(model, None, data, ModelArguments(), AdapterArguments(), DataArguments(),
                           ObjectiveArguments(), train_seconds=1.0)
    json_path, md_path = write_results(results, tmp_path)
    saved = json.loads(json_path.read_text(encoding="utf-8"))
    assert saved["gap_recovered"] == pytest.approx(0.6, abs=1e-12)
    assert "Gap recovered (LDV vs microphone, CER): 60.0%" in md_path.read_text(encoding="utf-8").splitlines()
    del saved["gap_recovered"]
    assert "Gap recovered (LDV vs microphone, CER): 60.0%" in results_markdown(saved).splitlines()


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE


def test_plot_error_rates_writes_png_without_pyplot(tmp_path):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    path = plot_error_rates(sample_results(), tmp_path / "figures" / "error_rates.png")
    _assert_png(path)
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules


def test_plot_error_rates_rejects_empty_eval(tmp_path):
    with pytest.raises(ValueError, match="no CER or WER"):
        plot_error_rates({"eval": {}}, tmp_path / "x.png")


TRAINER_LOG_HISTORY = [
    {"loss": 3.1, "grad_norm": 4.2, "learning_rate": 1e-4, "epoch": 0.25, "step": 10},
    {"loss": 2.4, "grad_norm": 3.0, "learning_rate": 7.5e-5, "epoch": 0.5, "step": 20},
    {"eval_loss": 2.2, "eval_runtime": 1.5, "eval_samples_per_second": 10.0, "epoch": 0.5, "step": 20},
    {"loss": 1.9, "grad_norm": 2.1, "learning_rate": 5e-5, "epoch": 0.75, "step": 30},
    {"loss": 1.7, "grad_norm": 1.8, "learning_rate": 2.5e-5, "epoch": 1.0, "step": 40},
    {"eval_loss": 1.8, "eval_runtime": 1.4, "epoch": 1.0, "step": 40},
    {"train_runtime": 12.0, "train_loss": 2.3, "total_flos": 0.0, "epoch": 1.0, "step": 40},
]


@pytest.mark.parametrize(
    "history",
    [
        TRAINER_LOG_HISTORY,
        [entry for entry in TRAINER_LOG_HISTORY if "eval_loss" not in entry],
        [{"loss": 1.0, "step": 1}],
    ],
    ids=["train-eval-lr", "train-lr", "single-point"],
)
def test_plot_training_curves_writes_png(history, tmp_path):
    _assert_png(plot_training_curves(history, tmp_path / "curves.png"))


def test_plot_training_curves_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([], tmp_path / "curves.png")
    with pytest.raises(ValueError, match="none of the 1"):
        plot_training_curves([{"train_runtime": 1.0, "step": 5}], tmp_path / "curves.png")


def test_real_voice_gap_recovered_in_results_json_and_markdown(monkeypatch, tmp_path):
    """With ``real_mic``/``real_ldv`` eval sets, the run records the real-voice set's own gap: (0.5 - 0.35) /
    (0.5 - 0.2) = 0.5, separate from the synthetic sets' 0.6."""
    import copy
    from types import SimpleNamespace

    import modeling_qwen2audio_ldv.evaluation.evaluate as evaluate_module
    from modeling_qwen2audio_ldv.training.arguments import (
        AdapterArguments,
        DataArguments,
        ModelArguments,
        ObjectiveArguments,
    )
    from modeling_qwen2audio_ldv.training.data import TrainingData
    from modeling_qwen2audio_ldv.training.pipeline import evaluate_run

    scores = {**copy.deepcopy(GAP_SCORES),
              "real_ldv": {"baseline": {"cer": 0.5, "wer": 0.7}, "adapted": {"cer": 0.35, "wer": 0.5}},
              "real_mic": {"baseline": {"cer": 0.2, "wer": 0.3}, "adapted": {"cer": 0.21, "wer": 0.3}}}
    predictions = {name: {"reference": ["one"], "baseline": ["won"], "adapted": ["one"]} for name in scores}
    monkeypatch.setattr(evaluate_module, "evaluate_sets", lambda *args, **kwargs: (copy.deepcopy(scores), predictions))
    model = SimpleNamespace(num_domain_adapter_parameters=lambda: 10,
                            config=SimpleNamespace(adapter_config=SimpleNamespace(to_dict=lambda: {})))
    data = TrainingData(train=[{}] * 3, eval_sets={name: [] for name in scores}, condition="cardboard_box")
    results = evaluate_run(model, None, data, ModelArguments(), AdapterArguments(), DataArguments(),
                           ObjectiveArguments(), train_seconds=1.0)
    assert results["gap_recovered"] == pytest.approx(0.6, abs=1e-12)
    assert results["real_voice_gap_recovered"] == pytest.approx(0.5, abs=1e-12)
    _, md_path = write_results(results, tmp_path)
    assert "Gap recovered on the real-voice set (real_ldv vs real_mic, CER): 50.0%" in md_path.read_text().splitlines()
