"""benchmarks/compare_methods.py and its pieces (benchmarks/comparison/): the summary arithmetic (hand-computed
values) and a two-row smoke run."""

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import compare_methods  # noqa: E402
from comparison.arguments import CompareArguments  # noqa: E402
from comparison.report import TABLE_HEADER, summarise  # noqa: E402
from comparison.resume import resumable_runs, row_spec  # noqa: E402
from comparison.rows import ORACLE_TOWER_LR, ROW_BY_NAME, adapter_config_for, transformer_shapes  # noqa: E402
from comparison.runs import AllTrainableTrainer, prepare_model  # noqa: E402


def _run(row, seed, ldv_cer, mic_cer=0.1, preserved=True):
    return {"row": row, "seed": seed, "objective": "lm", "trainable_params": 10, "checkpoint_bytes": 100,
            "train_seconds": 1.0, "ldv_cer": ldv_cer, "ldv_wer": 2 * ldv_cer, "mic_cer": mic_cer, "mic_wer": 0.2,
            "projector_preserved": preserved}


def test_summarise_gap_share_and_spread():
    # baseline LDV 0.6, mic 0.1 -> gap 0.5; oracle LDV 0.2 -> oracle recovers 0.4
    baseline = _run("baseline", None, 0.6)
    runs = [baseline, _run("oracle_full_finetune", 0, 0.2, preserved=False),
            _run("transformer_standard", 0, 0.3), _run("transformer_standard", 1, 0.4),
            _run("transformer_standard", 2, 0.35)]
    rows = {s["row"]: s for s in summarise(runs, baseline)}

    assert rows["baseline"]["gap_recovered"]["mean"] == 0.0
    assert math.isclose(rows["oracle_full_finetune"]["gap_recovered"]["mean"], 0.8)
    assert math.isclose(rows["oracle_full_finetune"]["oracle_share"]["mean"], 1.0)
    assert rows["oracle_full_finetune"]["projector_preserved"] is False

    standard = rows["transformer_standard"]
    assert standard["seeds"] == [0, 1, 2]
    assert math.isclose(standard["ldv_cer"]["mean"], 0.35)
    assert math.isclose(standard["ldv_cer"]["std"], 0.05)  # sample std of 0.3, 0.4, 0.35
    # gaps 0.6, 0.4, 0.5 of the 0.5 gap -> mean 0.5; shares 0.75, 0.5, 0.625 of the oracle's 0.4
    assert math.isclose(standard["gap_recovered"]["mean"], 0.5)
    assert math.isclose(standard["oracle_share"]["mean"], 0.625)
    assert rows["oracle_full_finetune"]["ldv_cer"]["std"] is None  # one seed: no spread


def test_ceiling_share_and_the_strongest_oracle_that_ran():
    # baseline LDV 0.6, mic 0.1; LDV-native reference 0.2 (ceiling recovers 0.4); no whole-base oracle ran, so the
    # 4x projector+LLM oracle (0.3, recovering 0.3) is the oracle, not the 1x one (0.5)
    baseline = _run("baseline", None, 0.6)
    runs = [baseline, _run("ldv_native", None, 0.2), _run("oracle_after_tower", 0, 0.5),
            _run("oracle_after_tower_4x", 0, 0.3), _run("lightweight_in_encoder_4", 0, 0.4),
            _run("lightweight_in_encoder_4", 1, 0.5)]
    rows = {s["row"]: s for s in summarise(runs, baseline)}
    inside = rows["lightweight_in_encoder_4"]
    # recoveries 0.2 and 0.1: of the ceiling's 0.4 -> 0.5, 0.25; of the oracle's 0.3 -> 2/3, 1/3; of the gap 0.5
    assert math.isclose(inside["ceiling_share"]["mean"], 0.375)
    assert math.isclose(inside["oracle_share"]["mean"], 0.5)
    assert math.isclose(inside["gap_recovered"]["mean"], 0.3)
    assert math.isclose(rows["ldv_native"]["ceiling_share"]["mean"], 1.0)
    assert math.isclose(rows["oracle_after_tower"]["oracle_share"]["mean"], 1 / 3)
    # the reference and the oracles are never "closest competitors" of a reference row
    assert compare_methods.closest_rows(runs, 3, "lightweight_in_encoder_4") == []
    with pytest.raises(ValueError, match="reference_row"):
        CompareArguments(reference_row="no_such_row")


def test_the_encoder_trained_ldv_native_model_is_the_ceiling_when_present():
    # baseline 0.6 / mic 0.1; frozen-encoder LDV-native 0.3, every-weight LDV-native 0.2: the ceiling recovers 0.4
    baseline = _run("baseline", None, 0.6)
    runs = [baseline, _run("ldv_native", None, 0.3), _run("ldv_native_full", None, 0.2),
            _run("lightweight_in_encoder_2", 0, 0.4)]
    rows = {s["row"]: s for s in summarise(runs, baseline)}
    assert math.isclose(rows["lightweight_in_encoder_2"]["ceiling_share"]["mean"], 0.5)  # 0.2 of 0.4
    assert math.isclose(rows["ldv_native"]["ceiling_share"]["mean"], 0.75)  # 0.3 of 0.4
    assert math.isclose(rows["ldv_native_full"]["ceiling_share"]["mean"], 1.0)
    # the whole-base oracle at 4x steps is the oracle when it ran, before the 1x one
    runs += [_run("oracle_full_finetune", 0, 0.4), _run("oracle_full_finetune_4x", 0, 0.35)]
    rows = {s["row"]: s for s in summarise(runs, baseline)}
    assert math.isclose(rows["lightweight_in_encoder_2"]["oracle_share"]["mean"], 0.8)  # 0.2 of 0.25
    assert compare_methods.closest_rows(runs, 3, "lightweight_in_encoder_2") == []


def _results_file(path, args, baseline, runs):
    path.write_text(json.dumps({"settings": asdict(args), "baseline": baseline, "runs": runs}))
    return str(path)


def test_resume_takes_only_runs_with_the_same_settings_data_and_row(tmp_path, caplog):
    args = CompareArguments(max_steps=600, batch_size=16)
    baseline = {"ldv_cer": 0.18, "ldv_wer": 0.22, "mic_cer": 0.02, "mic_wer": 0.03}
    row = ROW_BY_NAME["lightweight_in_encoder_2"]
    new_style = {**_run(row.name, 0, 0.1), "objective": "lm+distill", "row_spec": row_spec(row)}
    old_style = {**_run("lightweight_in_encoder_4", 0, 0.12), "objective": "lm+distill",
                 "adapter_config": adapter_config_for(
                     ROW_BY_NAME["lightweight_in_encoder_4"], 512, args).to_dict()}
    stale = {**_run("lightweight_in_encoder_6", 0, 0.14), "objective": "lm+distill",
             "adapter_config": {"adapter_type": "transformer", "encoder_layer": 5}}  # the row means another layer now
    # written before Row had `tower_learning_rate`: the missing field stands for its default
    regularised = ROW_BY_NAME["lightweight_in_encoder_2_regularised"]
    before_field = {**_run(regularised.name, 1, 0.08), "row_spec": {
        k: v for k, v in row_spec(regularised).items() if k != "tower_learning_rate"}}
    reference = {**_run("ldv_native", None, 0.06)}
    good = _results_file(tmp_path / "good.json", args, baseline,
                         [reference, new_style, old_style, stale, before_field, _run("a_removed_row", 0, 0.1)])
    found = resumable_runs([good], args, baseline, 512)
    assert sorted(found) == [("lightweight_in_encoder_2", 0), ("lightweight_in_encoder_2_regularised", 1),
                             ("lightweight_in_encoder_4", 0)]
    assert found[("lightweight_in_encoder_2", 0)]["ldv_cer"] == 0.1
    assert found[("lightweight_in_encoder_2", 0)]["resumed_from"] == good
    # a run that was itself taken from an earlier file keeps that source
    relayed = _results_file(tmp_path / "relayed.json", args, baseline, [{**new_style, "resumed_from": "first.json"}])
    assert resumable_runs([relayed], args, baseline, 512)[(row.name, 0)]["resumed_from"] == "first.json"
    assert "lightweight_in_encoder_6 seed 0 left out: the row's definition changed" in caplog.text
    assert "a_removed_row seed 0 left out: no such row now" in caplog.text

    # a setting that changes results, or other baseline scores (other data), drops the whole file
    other_lr = _results_file(tmp_path / "lr.json", CompareArguments(max_steps=600, batch_size=16,
                                                                                     learning_rate=0.01),
                             baseline, [new_style])
    other_data = _results_file(tmp_path / "data.json", args, {**baseline, "ldv_cer": 0.19}, [new_style])
    assert resumable_runs([other_lr, other_data], args, baseline, 512) == {}
    assert "lr.json: not used, its settings differ in learning_rate (0.01 there, 0.001 here)" in caplog.text
    assert "data.json: not used, its baseline scores" in caplog.text
    # settings that change no result (where results go, which rows run, the budget) do not matter
    elsewhere = CompareArguments(max_steps=600, batch_size=16, output_dir="x", rows=["baseline"],
                                                 time_budget_minutes=5, extra_seeds=[7])
    assert sorted(resumable_runs([good], elsewhere, baseline, 512)) == sorted(found)

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a readable compare_methods.json"):
        resumable_runs([str(broken)], args, baseline, 512)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="list.json: expected a compare_methods.json with a `runs` list"):
        resumable_runs([str(tmp_path / "list.json")], args, baseline, 512)


def test_whole_base_oracle_trains_the_tower_at_its_own_rate(tiny_base_dir, tmp_path):
    """The whole-base oracle rows train every weight; the audio tower's at ``tower_learning_rate`` (the ceiling
    build's encoder rate), the rest at the recipe's, through the same schedule."""
    from transformers import TrainingArguments

    args = CompareArguments(learning_rate=2e-3)
    row = ROW_BY_NAME["oracle_full_finetune_4x"]
    assert row.steps_factor == 4 and row.tower_learning_rate == ORACLE_TOWER_LR == 1e-4
    model = prepare_model(row, str(tiny_base_dir), args)
    assert all(p.requires_grad for p in model.parameters())
    trainer = AllTrainableTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), learning_rate=2e-3, max_steps=4,
                                            warmup_steps=0, lr_scheduler_type="linear", report_to="none",
                                            use_cpu=True),
        objective="lm", tower_learning_rate=row.tower_learning_rate)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    tower = {id(p) for n, p in model.named_parameters() if n.startswith("model.audio_tower.")}
    by_lr = {}
    for group in trainer.optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr == {1e-4: tower, 2e-3: {id(p) for p in model.parameters()} - tower}
    trainer.optimizer.step()
    trainer.lr_scheduler.step()  # linear decay: a quarter of the way, both rates x 3/4
    assert sorted(g["lr"] for g in trainer.optimizer.param_groups) == pytest.approx([7.5e-5, 7.5e-5, 1.5e-3, 1.5e-3])
    # a row without its own tower rate: one rate for every weight, as before
    plain = AllTrainableTrainer(model=model, args=trainer.args, objective="lm")
    plain.create_optimizer()
    assert {g["lr"] for g in plain.optimizer.param_groups} == {2e-3}


def test_closest_rows_and_row_validation():
    runs = [_run("transformer_standard", 0, 0.30), _run("mlp_adapter", 0, 0.50), _run("projector", 0, 0.32),
            _run("oracle_full_finetune", 0, 0.29), _run("transformer_heavy", 0, 0.27)]
    assert compare_methods.closest_rows(runs, 2) == ["projector", "transformer_heavy"]
    with pytest.raises(ValueError, match="unknown names"):
        CompareArguments(rows=["baseline", "prefix_tuning"])


def test_shapes_scale_with_width():
    shapes = transformer_shapes(128)
    assert shapes["lightweight"] == {"num_layers": 1, "num_heads": 4, "ff_dim": 256}
    assert shapes["standard"] == {"num_layers": 2, "num_heads": 4, "ff_dim": 512}
    assert shapes["heavy"] == {"num_layers": 4, "num_heads": 8, "ff_dim": 1024}


def test_row_settings_win_over_the_recipe():
    args = CompareArguments(dropout=0.0, distill_weight=1.0)
    row = ROW_BY_NAME["lightweight_in_encoder_2_regularised"]
    config = adapter_config_for(row, 512, args)
    assert (config.dropout, config.encoder_layer, config.zero_init) == (0.1, 2, False)
    assert (config.num_layers, config.num_heads, config.ff_dim) == (1, 4, 1024)  # the lightweight shape at 512
    # a row without its own dropout takes the recipe's
    plain = adapter_config_for(ROW_BY_NAME["lightweight_in_encoder_2"], 512,
                                               CompareArguments(dropout=0.2))
    assert plain.dropout == 0.2


@pytest.mark.speech
def test_smoke_two_rows(tmp_path, monkeypatch):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.synthetic.corpus import DEFAULT_VOICES
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    model, processor = build_tiny_base(max_source_positions=150)  # 3 s window: the synthetic clips fit
    base = tmp_path / "tiny_base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    out = tmp_path / "results"
    common = [
        str(REPO / "configuration" / "recipes" / "compare_methods.yaml"), "--base_model", str(base),
        "--work_dir", str(tmp_path / "work"), "--rows", "baseline", "mlp_adapter",
        "--num_train_utterances", "8", "--num_eval_utterances", "3", "--max_steps", "3", "--warmup_steps", "1",
        "--batch_size", "4", "--eval_batch_size", "4", "--max_new_tokens", "4", "--multi_seed", "false",
        "--real_voice_set", "", "--voices", *DEFAULT_VOICES["en"],  # eSpeak only: the 3 s window fits its clips
    ]
    results = compare_methods.main([*common, "--output_dir", str(out)])

    saved = json.loads((out / "compare_methods.json").read_text())
    assert saved["complete"] is True
    assert saved.keys() >= {"settings", "machine", "baseline", "rows", "runs", "wall_seconds", "data"}
    assert [r["row"] for r in saved["rows"]] == ["baseline", "mlp_adapter"] == [r["row"] for r in results["rows"]]
    mlp = saved["rows"][1]
    assert mlp.keys() >= {"trainable_params", "checkpoint_bytes", "train_seconds", "ldv_cer", "ldv_wer", "mic_cer",
                          "mic_wer", "gap_recovered", "oracle_share", "projector_preserved"}
    assert mlp["trainable_params"] > 0 and mlp["checkpoint_bytes"] > 4 * mlp["trainable_params"]
    assert mlp["projector_preserved"] is True
    assert mlp["oracle_share"]["mean"] is None  # no oracle row in this run
    for key in ("ldv_cer", "mic_cer"):
        assert mlp[key]["mean"] >= 0 and mlp[key]["n"] == 1

    table = [line for line in (out / "compare_methods.md").read_text().splitlines() if line.startswith("| ")]
    assert table[0] == TABLE_HEADER
    assert [line.split(" | ")[0] for line in table[1:]] == ["| No adaptation (baseline)", "| MLP adapter"]
    assert all(line.count("|") == table[0].count("|") for line in table[1:])
    assert (out / "compare_methods.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second invocation with resume_from takes the finished run instead of training it again
    def no_training(*args, **kwargs):
        raise AssertionError("a resumable run was trained again")

    monkeypatch.setattr(compare_methods, "train_and_evaluate", no_training)
    again = compare_methods.main([*common, "--output_dir", str(tmp_path / "again"),
                                  "--resume_from", str(out / "compare_methods.json")])
    resumed = [r for r in again["runs"] if r["row"] == "mlp_adapter"]
    assert len(resumed) == 1 and resumed[0]["resumed_from"] == str(out / "compare_methods.json")
    assert resumed[0]["ldv_cer"] == saved["runs"][1]["ldv_cer"]
    assert "1 of the 1 trained runs were taken from earlier invocations" in (
        tmp_path / "again" / "compare_methods.md").read_text()


def test_the_recipe_data_settings_reach_the_corpus_and_the_real_voice_set(monkeypatch):
    """The comparison's corpus is the demo's: its voices, texts and sizes go to ``build_demo_data``, and the
    real-voice set is scored on every k-th clip as the demo does (``real_voice_samples``)."""
    import modeling_qwen2audio_ldv.training.data as training_data
    from comparison import runs

    seen = {}

    class Stop(Exception):
        pass

    def fake_demo_data(data_args, seed):
        seen["corpus"] = (data_args, seed)
        return None, {}, None

    def fake_real_sets(data_args, condition):
        seen["real"] = (data_args, condition)
        raise Stop

    monkeypatch.setattr(runs, "build_demo_data", fake_demo_data)
    monkeypatch.setattr(training_data, "real_voice_eval_sets", fake_real_sets)
    args, _ = compare_methods.parse_arguments([str(REPO / "configuration" / "recipes" / "compare_methods.yaml")])
    with pytest.raises(Stop):
        runs.build_data(args, "unused", None)
    corpus, seed = seen["corpus"]
    demo = (REPO / "configuration" / "recipes" / "demo.yaml").read_text()
    assert seed == 0 and corpus.condition == "cardboard_box" and corpus.num_train_utterances == 2000
    assert corpus.voices == args.voices and "flite:rms" in corpus.voices
    assert f"voices: [{', '.join(corpus.voices)}]" in demo  # the demo's list, in its order (held-out voices last)
    real, condition = seen["real"]
    assert (real.real_voice_set, real.real_voice_samples, condition) == ("outputs/real_voices", 140, "cardboard_box")


def test_real_voice_columns_and_their_gap():
    """With the real-voice set scored, each row gets its real-voice CERs and its gap on that set: baseline real LDV
    0.5, real mic 0.2 -> gap 0.3; a row at 0.35 and 0.29 (mean 0.32) recovers 0.5 and 0.7 of it (mean 0.6)."""
    from comparison.runs import real_voice_scores

    scores = {"ldv": {"adapted": {"cer": 0.3, "wer": 0.4}},
              "real_ldv": {"adapted": {"cer": 0.35, "wer": 0.5}}, "real_mic": {"adapted": {"cer": 0.21, "wer": 0.3}}}
    assert real_voice_scores(scores) == {"real_ldv_cer": 0.35, "real_ldv_wer": 0.5, "real_mic_cer": 0.21,
                                         "real_mic_wer": 0.3}
    assert real_voice_scores({"ldv": scores["ldv"]}) == {}

    def with_real(run, real_ldv, real_mic):
        return {**run, "real_ldv_cer": real_ldv, "real_mic_cer": real_mic}

    baseline = with_real(_run("baseline", None, 0.6), 0.5, 0.2)
    runs = [baseline, with_real(_run("transformer_standard", 0, 0.3), 0.35, 0.21),
            with_real(_run("transformer_standard", 1, 0.3), 0.29, 0.2)]
    rows = {s["row"]: s for s in summarise(runs, baseline)}
    standard = rows["transformer_standard"]
    assert math.isclose(standard["real_ldv_cer"]["mean"], 0.32)
    assert math.isclose(standard["real_gap_recovered"]["mean"], 0.6)
    assert math.isclose(standard["real_mic_cer"]["mean"], 0.205)
    assert "real_ldv_cer" not in summarise([_run("baseline", None, 0.6)], _run("baseline", None, 0.6))[0]


def test_lora_rows_configure_peft_lora_from_their_layer():
    args = CompareArguments(max_steps=600, batch_size=16)
    for k in (0, 2):
        config = adapter_config_for(ROW_BY_NAME[f"lora_in_tower_from_{k}"], 512, args)
        assert (config.adapter_type, config.encoder_layer, config.zero_init) == ("lora", k, True)
        assert (config.lora_rank, config.lora_alpha) == (8, 16.0)
    # the placement sweep reaches the first two layers
    assert adapter_config_for(ROW_BY_NAME["lightweight_in_encoder_0"], 512, args).encoder_layer == 0
    assert adapter_config_for(ROW_BY_NAME["lightweight_in_encoder_1"], 512, args).encoder_layer == 1


def test_the_report_and_figure_show_the_real_voice_set_when_the_baseline_scored_it(tmp_path):
    """The baseline run's real-voice scores reach the results' ``baseline`` (the report draws every real-voice gap
    from it): the Markdown gets the real-voice table with each row's figures, the figure its third panel."""
    from comparison.report import baseline_scores, machine_info, write_outputs

    args = CompareArguments(max_steps=600, batch_size=16)
    baseline = {**_run("baseline", None, 0.6), "real_ldv_cer": 0.5, "real_ldv_wer": 0.6, "real_mic_cer": 0.2,
                "real_mic_wer": 0.25}
    standard = {**_run("transformer_standard", 0, 0.3), "real_ldv_cer": 0.35, "real_mic_cer": 0.21}
    assert baseline_scores(baseline) == {"ldv_cer": 0.6, "ldv_wer": 1.2, "mic_cer": 0.1, "mic_wer": 0.2,
                                         "real_ldv_cer": 0.5, "real_ldv_wer": 0.6, "real_mic_cer": 0.2,
                                         "real_mic_wer": 0.25}
    assert "real_ldv_cer" not in baseline_scores(_run("baseline", None, 0.6))  # no set scored: no such keys
    results = {"settings": asdict(args), "machine": machine_info(), "d_model": 512, "mlp_bottleneck": 128,
               "transformer_shapes": compare_methods.transformer_shapes(512),
               "data": {"train_utterances": 10, "eval_utterances": 5, "seconds": 1.0},
               "baseline": baseline_scores(baseline), "rows": summarise([baseline, standard], baseline),
               "runs": [baseline, standard], "complete": True, "wall_seconds": 60.0}
    paths = write_outputs(results, str(tmp_path))
    report = paths["md"].read_text()
    assert "Baseline: LDV CER 50.0%, microphone CER 20.0%." in report
    assert "| Transformer adapter, standard | 35.0 | 21.0 | 50.0 |" in report  # (0.5 - 0.35) / (0.5 - 0.2)
    png = paths["png"].read_bytes()
    width = int.from_bytes(png[16:20], "big")
    without = write_outputs({**results, "baseline": baseline_scores(_run("baseline", None, 0.6))},
                            str(tmp_path / "without"))
    assert width > int.from_bytes(without["png"].read_bytes()[16:20], "big")  # the real-voice panel
