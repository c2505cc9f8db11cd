"""End-to-end runs of train_hf.py on a tiny random base (a few steps, a few synthetic clips)."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402

pytestmark = pytest.mark.speech


def test_end_to_end_run(one_process_run, tiny_base_3s):
    run_dir, probe, _ = one_process_run
    saved = json.loads((run_dir / "results.json").read_text())

    # results.json: both eval sets, baseline and adapted rows, numbers in [0, inf)
    assert saved["eval"].keys() >= {"ldv", "mic"}
    for name in ("ldv", "mic"):
        assert saved["eval"][name].keys() == {"baseline", "adapted"}
        for row in saved["eval"][name].values():
            assert row["cer"] >= 0 and row["wer"] >= 0
    assert saved["adapter"]["trainable_params"] > 0
    for picture in ("error_rates.png", "training_curves.png", "mic_vs_ldv.png", "gate_over_time.png"):
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # checkpoints and the final save hold adapter keys only, in safetensors
    checkpoint = run_dir / "checkpoint-6"
    adapter_keys = set(load_file(checkpoint / "domain_adapter.safetensors"))
    assert adapter_keys and not any(k.startswith(("model.", "lm_head")) for k in adapter_keys)
    assert not (checkpoint / "model.safetensors").exists()
    assert "scale" in adapter_keys
    assert set(load_file(run_dir / "adapter" / "domain_adapter.safetensors")) == adapter_keys

    # the trainer's in-memory base is bit-for-bit the same after training as before it; the adapter moved
    from transformers import Qwen2AudioForConditionalGeneration

    stock = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_base_3s)
    assert probe["base_tensors"] == len(stock.state_dict())
    assert probe["base_changed"] == [] and probe["adapter_changed"] is True
    trained = load_file(run_dir / "adapter" / "domain_adapter.safetensors")
    assert not torch.equal(trained["output_norm.weight"], torch.ones_like(trained["output_norm.weight"]))


def test_reported_rows_are_the_stock_base_and_the_saved_adapter(one_process_run, tiny_base_3s):
    """"baseline" transcripts are the stock base's, "adapted" the saved adapter's, and each CER/WER is the metric
    on the transcripts written to results.json (2 clips per set: results.json lists them all)."""
    from transformers import AutoModelForSeq2SeqLM, AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates
    from modeling_qwen2audio_ldv.training.data import build_demo_data

    run_dir, _, args = one_process_run
    saved = json.loads((run_dir / "results.json").read_text())
    (_, _, data_args, _, training_args), _ = train_hf.parse_arguments(args)
    _, eval_sets, _ = build_demo_data(data_args, training_args.seed)
    processor = AutoProcessor.from_pretrained(tiny_base_3s)
    stock = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_base_3s).eval()
    adapted = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "adapter", trust_remote_code=True).eval()
    # the adapter changes some transcripts, so a "baseline" row computed with it would show
    assert any(e["baseline"] != e["adapted"] for e in saved["examples"])
    for name, dataset in eval_sets.items():
        rows = [e for e in saved["examples"] if e["set"] == name]
        assert [r["reference"] for r in rows] == list(dataset["text"]), name  # every clip of the set is listed
        audios = list(dataset["audio"])
        for row, model in (("baseline", stock), ("adapted", adapted)):
            expected = generate_transcripts(model, processor, audios, DEFAULT_INSTRUCTION,
                                            batch_size=data_args.eval_batch_size,
                                            max_new_tokens=data_args.max_new_tokens, progress=False)
            written = [r[row] for r in rows]
            assert written == expected, (name, row)
            rates = compute_error_rates(written, [r["reference"] for r in rows], language=data_args.language)
            assert saved["eval"][name][row] == {"cer": float(rates["cer"]), "wer": float(rates["wer"])}, (name, row)


def test_recipe_key_mismatch_names_itself(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("# python train_hf.py bad.yaml\nlearning_rat: 0.001\nmax_steps: 3\n")
    with pytest.raises(ValueError, match=r"unknown recipe keys \['learning_rat'\]"):
        train_hf.parse_arguments([str(recipe)])


def test_recipes_parse_and_open_with_their_command():
    for recipe in sorted((REPO / "configuration" / "recipes").glob("*.yaml")):
        first_line = recipe.read_text().splitlines()[0]
        assert first_line.startswith("# python train_hf.py") or first_line.startswith("# python benchmarks/"), recipe
        values = yaml.safe_load(recipe.read_text())
        if first_line.startswith("# python train_hf.py"):
            cpu_only = ["--bf16", "false"] if values.get("bf16") else []  # bf16 needs a GPU to validate
            (model_args, adapter_args, data_args, objective_args, training_args), _ = train_hf.parse_arguments(
                [str(recipe), "--output_dir", "unused", *cpu_only])
            assert model_args.base_model == values["base_model"]
            adapter_args.to_config()  # the adapter fields form a valid configuration


def test_command_line_overrides_the_recipe():
    (model_args, _, data_args, _, training_args), recipe = train_hf.parse_arguments(["--max_steps", "7",
                                                                                        "--condition", "wall"])
    assert recipe == train_hf.DEFAULT_RECIPE
    assert training_args.max_steps == 7 and data_args.condition == "wall"
    assert model_args.base_model == "mini_base"


def test_shortened_demo_on_the_mini_base(tmp_path):
    """`python train_hf.py` with the demo recipe, cut to a few steps and clips: a valid results.json, with the
    real-voice rows (here a two-clip stand-in for the set, so the test does not build the real one)."""
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from modeling_qwen2audio_ldv.synthetic.corpus import synthesize

    real = tmp_path / "real_voices"
    for sub in ("mic", "ldv/cardboard_box"):
        (real / sub).mkdir(parents=True)
        for i, text in enumerate(["press pound", "seven"]):
            sf.write(real / sub / f"c{i}.wav", synthesize(text, voice="en-us+m3"), 16000)
        (real / sub / "metadata.csv").write_text("file_name,text\nc0.wav,press pound\nc1.wav,seven\n")
    (real / "manifest.json").write_text("{}")
    results = train_hf.main(["--output_dir", str(tmp_path / "demo"), "--max_steps", "4", "--save_steps", "4",
                             "--num_train_utterances", "16", "--num_eval_utterances", "4", "--logging_steps", "2",
                             "--eval_condition", "window", "--real_voice_set", str(real)])
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["base_model"] == "mini_base" and saved["condition"] == "cardboard_box"
    # the cross-condition and the real-voice sets are in the same table
    assert set(saved["eval"]) == {"ldv", "mic", "ldv_window", "real_mic", "real_ldv"}
    assert "real_voice_gap_recovered" in saved
    for name, rows in saved["eval"].items():
        for row in ("baseline", "adapted"):
            assert 0 <= rows[row]["cer"] and 0 <= rows[row]["wer"], (name, row)
    assert saved["adapter"]["trainable_params"] == results["adapter"]["trainable_params"] > 0
    assert "gap_recovered" in saved and "train_seconds" in saved
    assert "| ldv_window | adapted |" in (tmp_path / "demo" / "results.md").read_text()
    # the cross condition's gap, against the microphone CER of the same utterances
    window, mic = saved["eval"]["ldv_window"], saved["eval"]["mic"]["baseline"]["cer"]
    if window["baseline"]["cer"] > mic:
        assert saved["gap_recovered_by_set"]["ldv_window"] == pytest.approx(
            (window["baseline"]["cer"] - window["adapted"]["cer"]) / (window["baseline"]["cer"] - mic))
    else:  # no gap to recover on this 4-step run's clips
        assert saved["gap_recovered_by_set"]["ldv_window"] is None
    assert "Gap recovered on ldv_window" in (tmp_path / "demo" / "results.md").read_text()


def test_evaluate_command_on_a_saved_adapter(one_process_run, tmp_path, capsys):
    """`ldv-qwen2audio evaluate --model DIR --data AUDIOFOLDER` scores baseline and adapted rows."""
    import soundfile as sf

    from modeling_qwen2audio_ldv.cli import main as cli_main
    from modeling_qwen2audio_ldv.synthetic.corpus import synthesize

    run_dir = one_process_run[0]
    folder = tmp_path / "eval_clips"
    folder.mkdir()
    texts = ["stop the pump", "three seven one"]
    for i, text in enumerate(texts):
        sf.write(folder / f"clip{i}.wav", synthesize(text), 16000)
    (folder / "metadata.csv").write_text("file_name,text\n" + "".join(f"clip{i}.wav,{t}\n" for i, t in enumerate(texts)))
    code = cli_main(["evaluate", "--model", str(run_dir / "adapter"), "--data", str(folder),
                     "--batch-size", "2", "--max-new-tokens", "4", "--output-dir", str(tmp_path / "scores")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline: CER" in printed and "adapted: CER" in printed
    scores = json.loads((tmp_path / "scores" / "results.json").read_text())["eval"]["eval"]
    assert set(scores) == {"baseline", "adapted"}
