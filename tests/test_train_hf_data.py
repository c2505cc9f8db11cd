"""train_hf.py on the user's own recordings: an audiofolder with splits and paired microphone clips, a microphone
eval manifest, bad files in training data (LDV and microphone), training from audio (no feature cache), and the
demo corpus's microphone share."""

import functools
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from conftest import noise_clips

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402

from modeling_qwen2audio_ldv.training.data import mix_mic_rows  # noqa: E402

TRAIN_TEXTS = ["one two", "three", "four five six", "seven", "eight nine", "zero one"]
TEST_TEXTS = ["test one", "test two"]
VALIDATION_TEXTS = ["valid one", "valid two"]
MIC_EVAL_TEXTS = ["mic zero", "mic one"]


def write_split(folder: Path, texts, seed, bad_ldv=None, bad_mic=None):
    """An audiofolder split: ``file_name`` (LDV) and ``mic_file_name`` (microphone) per row; ``bad_ldv`` /
    ``bad_mic``: a row index whose LDV / microphone file is not audio."""
    folder.mkdir(parents=True)
    ldv = noise_clips([8000 + 1000 * i for i in range(len(texts))], seed)
    mic = noise_clips([8000 + 1000 * i for i in range(len(texts))], seed + 100)
    lines = ["file_name,mic_file_name,text"]
    for i, text in enumerate(texts):
        sf.write(folder / f"ldv{i}.wav", ldv[i], 16000)
        sf.write(folder / f"mic{i}.wav", mic[i], 16000)
        lines.append(f"ldv{i}.wav,mic{i}.wav,{text}")
    if bad_ldv is not None:
        (folder / f"ldv{bad_ldv}.wav").write_bytes(b"this is not a wav file")
    if bad_mic is not None:
        (folder / f"mic{bad_mic}.wav").write_bytes(b"this is not a wav file either")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def own_data(tmp_path):
    root = tmp_path / "my_ldv_clips"
    write_split(root / "train", TRAIN_TEXTS + ["bad ldv", "bad mic"], 0, bad_ldv=6, bad_mic=7)
    write_split(root / "validation", VALIDATION_TEXTS, 1)
    write_split(root / "test", TEST_TEXTS, 2)
    mic_dir = tmp_path / "mic_eval"
    mic_dir.mkdir()
    for i, clip in enumerate(noise_clips([9000, 12000], 3)):
        sf.write(mic_dir / f"m{i}.wav", clip, 16000)
    manifest = mic_dir / "manifest.jsonl"
    rows = [{"audio": f"m{i}.wav", "text": t} for i, t in enumerate(MIC_EVAL_TEXTS)]
    rows.insert(1, {"audio": "missing.wav", "text": "a clip that is not there"})  # dropped, the others kept
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root, manifest


def own_args(base, data, manifest, output_dir, *extra):
    return [
        "--base_model", str(base), "--output_dir", str(output_dir), "--train_data", str(data),
        "--mic_audio_column", "mic_file_name", "--mic_eval_data", str(manifest),
        "--objective", "lm+distill", "--feature_cache", "false",
        "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1",
        "--adapter_type", "transformer", "--num_heads", "4", "--ff_dim", "32", "--zero_init", "false",
        "--learning_rate", "0.01",
        "--eval_batch_size", "2", "--max_new_tokens", "2", "--dataloader_num_workers", "0", "--use_cpu", "true",
        *extra,
    ]


def test_own_audiofolder_with_bad_files_from_audio(tiny_base_3s, own_data, tmp_path):
    data, manifest = own_data
    results = train_hf.main(own_args(tiny_base_3s, data, manifest, tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    # the bad LDV file and the bad microphone file are both reported and dropped; the six good rows train
    skipped = saved["skipped_rows"]
    assert saved["train_rows"] == skipped["num_good"] == len(TRAIN_TEXTS)
    bad = {(b["index"], b["column"], Path(b["path"]).name) for b in skipped["bad_examples"]}
    assert bad == {(6, "audio", "ldv6.wav"), (7, "mic_audio", "mic7.wav")}
    # eval sets: the source's test split (not validation, not train) and the microphone manifest
    assert set(saved["eval"]) == {"ldv", "mic"}
    references = {name: [e["reference"] for e in saved["examples"] if e["set"] == name] for name in saved["eval"]}
    assert references == {"ldv": TEST_TEXTS, "mic": MIC_EVAL_TEXTS}
    # trained from audio: no feature cache was written, the adapter exists and the log has both steps
    assert not (tmp_path / "run" / "feature_cache").exists()
    assert (tmp_path / "run" / "adapter" / "domain_adapter.safetensors").is_file()
    history = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h and "train_runtime" not in h] == [1, 2]


def test_own_data_error_policy_names_the_bad_file(tiny_base_3s, own_data, tmp_path):
    data, manifest = own_data
    with pytest.raises(ValueError, match=r"bad example: .*ldv6\.wav"):
        train_hf.main(own_args(tiny_base_3s, data, manifest, tmp_path / "run", "--on_bad_example", "error"))
    assert not (tmp_path / "run" / "results.json").exists()


def one_step_args(base, data, output_dir, *extra):
    return ["--base_model", str(base), "--output_dir", str(output_dir), "--train_data", str(data), "--objective", "lm",
            "--max_steps", "1", "--save_steps", "1", "--per_device_train_batch_size", "2", "--num_heads", "4",
            "--adapter_type", "transformer",
            "--ff_dim", "32", "--eval_batch_size", "2", "--max_new_tokens", "1", "--use_cpu", "true",
            "--dataloader_num_workers", "0", *extra]


def test_eval_split_selection(tiny_base_3s, own_data, tmp_path):
    root = tmp_path / "clips"
    write_split(root / "train", TRAIN_TEXTS[:4], 0)
    write_split(root / "validation", VALIDATION_TEXTS, 1)
    # no test split: the validation split
    results = train_hf.main(one_step_args(tiny_base_3s, root, tmp_path / "run"))
    assert set(results["eval"]) == {"ldv"} and results["train_rows"] == 4
    assert [e["reference"] for e in results["examples"]] == VALIDATION_TEXTS
    # --eval_data: a manifest (loaded as one split named "train") is the eval set
    _, manifest = own_data
    results = train_hf.main(one_step_args(tiny_base_3s, root, tmp_path / "run2", "--eval_data", str(manifest)))
    assert [e["reference"] for e in results["examples"]] == MIC_EVAL_TEXTS
    # a training source with neither split and no --eval_data: a clear error before training
    alone = tmp_path / "alone"
    write_split(alone / "train", TRAIN_TEXTS[:2], 0)
    with pytest.raises(ValueError, match=r"alone: no test/validation split \(splits: \['train'\]\); pass --eval_data"):
        train_hf.main(one_step_args(tiny_base_3s, alone, tmp_path / "run3"))


def constant_pairs(n):
    """Rows whose LDV clip is positive and whose microphone clip is negative, so each row's source shows."""
    ldv = [{"array": np.full(160, 0.5, dtype=np.float32), "sampling_rate": 16000} for _ in range(n)]
    mic = [{"array": np.full(160, -0.5, dtype=np.float32), "sampling_rate": 16000} for _ in range(n)]
    data = datasets.Dataset.from_dict({"ldv_audio": ldv, "mic_audio": mic, "text": [str(i) for i in range(n)]})
    audio = datasets.Audio(sampling_rate=16000)
    return data.cast_column("ldv_audio", audio).cast_column("mic_audio", audio)


def test_demo_eval_sets_hold_the_clips_their_names_say(monkeypatch):
    """``build_demo_data`` on a stand-in corpus whose clips carry their source as a constant (the training
    condition's LDV clips 0.5, the cross condition's 0.25, microphone clips -0.5): ``ldv`` is the training
    condition's LDV test clips, ``mic`` their microphone clips, ``ldv_window`` the cross condition's LDV clips, and
    training uses the training condition's rows (every LDV draw) only."""
    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data

    def fake_corpus(num_train, num_eval, seed, conditions, **kwargs):
        audio = datasets.Audio(sampling_rate=16000)

        def split(name, count):
            rows = [(c.name, i) for c in conditions for i in range(count)]
            level = {"cardboard_box": 0.5, "window": 0.25}
            ldv = [{"array": np.full(160, level.get(c, 0.75), np.float32), "sampling_rate": 16000} for c, _ in rows]
            mic = [{"array": np.full(160, -0.5, np.float32), "sampling_rate": 16000} for _ in rows]
            data = datasets.Dataset.from_dict({"ldv_audio": ldv, "mic_audio": mic, "condition": [c for c, _ in rows],
                                               "text": [f"{name} {c} {i}" for c, i in rows]})
            return data.cast_column("ldv_audio", audio).cast_column("mic_audio", audio)

        return datasets.DatasetDict({"train": split("train", num_train), "test": split("test", num_eval)})

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    args = DataArguments(condition="cardboard_box", eval_condition="window", num_train_utterances=3,
                         num_eval_utterances=2, mic_fraction=0.0, ldv_draws=2)
    train, eval_sets, _ = build_demo_data(args, seed=0)
    assert set(eval_sets) == {"ldv", "mic", "ldv_window"}

    def levels(rows):
        return {float(np.asarray(row["audio"]["array"])[0]) for row in rows}

    assert levels(eval_sets["ldv"]) == {0.5} and levels(eval_sets["mic"]) == {-0.5}
    assert levels(eval_sets["ldv_window"]) == {0.25}
    assert list(eval_sets["ldv"]["text"]) == list(eval_sets["mic"]["text"]) == [
        "test cardboard_box 0", "test cardboard_box 1"]
    # training: the condition's rows and its second draw (another simulator seed, level 0.75 here), no window rows
    assert sorted(train["text"]) == sorted([f"train cardboard_box {i}" for i in range(3)]
                                           + [f"train cardboard_box~draw1 {i}" for i in range(3)])
    assert levels(train) == {0.5, 0.75}
    assert {float(np.asarray(row["mic_audio"]["array"])[0]) for row in train} == {-0.5}


def test_real_voice_texts_hand_spans_of_the_sets_transcripts_to_the_corpus(monkeypatch):
    """``--real_voice_texts N``: N word spans of the real-voice set's transcripts (``span_texts`` of
    ``transcript_texts``, seeded by the corpus seed) go to the corpus builder as extra training texts; 0 gives none."""
    import modeling_qwen2audio_ldv.data.real_voices as real_voices
    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.synthetic.texts import span_texts
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data

    sources = ["agent logged off", "please enter your password followed by the pound key", "goodbye"]
    monkeypatch.setattr(real_voices, "transcript_texts", lambda root="/": sources)
    seen = []

    def fake_corpus(num_train, num_eval, seed, conditions, extra_train_texts=(), **kwargs):
        seen.append(list(extra_train_texts))
        raise RuntimeError("stop here")

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    for count in (0, 5):
        with pytest.raises(RuntimeError, match="stop here"):
            build_demo_data(DataArguments(real_voice_texts=count, corpus_seed=3), seed=0)
    assert seen == [[], span_texts(sources, 5, 3)]
    assert all(len(text.split()) >= 1 for text in seen[1]) and len(set(seen[1])) == 5
    with pytest.raises(ValueError, match="real_voice_texts"):
        build_demo_data(DataArguments(real_voice_texts=-1), seed=0)


def test_other_speaker_clips_hand_drawn_recordings_to_the_corpus_for_distillation_only(monkeypatch):
    """``--other_speaker_clips N``: ``draw_recordings(N, corpus_seed)`` goes to the corpus builder as extra training
    recordings; 0 gives none; an objective with the LM loss is refused before anything is built."""
    import modeling_qwen2audio_ldv.data.other_speakers as other_speakers
    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data, load_training_data

    drawn = []
    monkeypatch.setattr(other_speakers, "draw_recordings",
                        lambda n, seed, max_seconds: drawn.append((n, seed, max_seconds)) or [f"r{seed}"] * n)
    seen = []

    def fake_corpus(num_train, num_eval, seed, conditions, extra_train_recordings=(), **kwargs):
        seen.append(list(extra_train_recordings))
        raise RuntimeError("stop here")

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    for count in (0, 2):
        with pytest.raises(RuntimeError, match="stop here"):
            build_demo_data(DataArguments(other_speaker_clips=count, corpus_seed=3, other_speaker_max_seconds=4.0),
                            seed=0)
    assert drawn == [(2, 3, 4.0)] and seen == [[], ["r3", "r3"]]
    with pytest.raises(ValueError, match="other_speaker_clips"):
        build_demo_data(DataArguments(other_speaker_clips=-1), seed=0)
    for objective in ("lm", "lm+distill"):
        with pytest.raises(ValueError, match="use --objective distill"):
            load_training_data(DataArguments(other_speaker_clips=2), seed=0, objective=objective)
    assert len(seen) == 2  # refused before the corpus


def test_condition_mix_trains_on_every_surface_of_the_mix_and_scores_the_default_and_the_unseen(monkeypatch):
    """``--condition mix``: the corpus gets the mix as ``train_conditions`` (one surface per training utterance),
    every training row trains, and the eval sets are the default preset (``ldv``) and ``--eval_condition``."""
    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.synthetic.conditions import mix_conditions
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data

    calls = {}

    def fake_corpus(num_train, num_eval, seed, conditions, train_conditions=None, **kwargs):
        calls["conditions"] = [c.name for c in conditions]
        calls["train_conditions"] = [c.name for c in train_conditions]
        audio = datasets.Audio(sampling_rate=16000)

        def split(names, count):
            rows = [names[i % len(names)] for i in range(count)]
            clip = [{"array": np.zeros(160, np.float32), "sampling_rate": 16000} for _ in rows]
            data = datasets.Dataset.from_dict({"ldv_audio": clip, "mic_audio": clip, "condition": rows,
                                               "text": [f"{c} {i}" for i, c in enumerate(rows)]})
            return data.cast_column("ldv_audio", audio).cast_column("mic_audio", audio)

        test = datasets.concatenate_datasets([split([name], num_eval) for name in calls["conditions"]])
        return datasets.DatasetDict({"train": split(calls["train_conditions"], num_train), "test": test})

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    args = DataArguments(condition="mix", eval_condition="random-1000", num_train_utterances=40,
                         num_eval_utterances=2, mic_fraction=0.0)
    train, eval_sets, _ = build_demo_data(args, seed=0)
    assert calls["train_conditions"] == [c.name for c in mix_conditions()]
    assert calls["conditions"] == ["cardboard_box", "random-1000"]
    assert len(train) == 40  # every surface's rows train
    assert set(eval_sets) == {"ldv", "mic", "ldv_random-1000"}
    assert list(eval_sets["ldv"]["text"]) == ["cardboard_box 0", "cardboard_box 1"]
    with pytest.raises(ValueError, match="ldv_draws"):
        build_demo_data(DataArguments(condition="mix", ldv_draws=2), seed=0)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_mic_fraction_sets_the_share_of_microphone_rows(fraction):
    n = 160
    mixed = mix_mic_rows(constant_pairs(n), "ldv_audio", "mic_audio", fraction, seed=0)
    assert set(mixed.column_names) == {"text", "audio", "mic_audio"}
    assert list(mixed["text"]) == [str(i) for i in range(n)]  # order kept
    sources = np.array([np.sign(row["audio"]["array"]).mean() for row in mixed])
    assert set(np.round(sources).tolist()) <= {1.0, -1.0}
    assert all(np.all(np.asarray(row["mic_audio"]["array"]) < 0) for row in mixed)  # the paired clip stays mic
    share = float(np.mean(sources < 0))
    # binomial(160, 0.25): standard deviation 3.4 %; 3.5 sigma (a flipped comparison would give 0.75)
    assert share == pytest.approx(fraction, abs=0.12)
    if fraction in (0.0, 1.0):
        assert share == fraction


def test_encoder_layer_flag_takes_a_count_or_none(tmp_path):
    """The demo recipe adapts the tower from layer 2; ``--encoder_layer none`` moves a transformer adapter back after
    the tower (for LoRA, unset means every layer)."""
    def placement(*flags):
        (_, adapter_args, *_), _ = train_hf.parse_arguments(["--output_dir", str(tmp_path), *flags])
        return adapter_args.to_config().encoder_layer

    assert placement() == 2  # configuration/recipes/demo.yaml
    assert placement("--encoder_layer", "none") == 0  # the recipe's LoRA: on every layer
    placement = functools.partial(placement, "--adapter_type", "transformer")
    assert placement("--encoder_layer", "none") is None
    assert placement("--encoder_layer", "null") is None
    assert placement("--encoder_layer", "5") == 5
    with pytest.raises(ValueError, match="--encoder_layer"):
        placement("--encoder_layer", "after")


def test_preprocessing_num_workers_sets_the_corpus_processes(monkeypatch):
    """``--preprocessing_num_workers N`` synthesises the demo corpus in N processes; unset, one per usable core
    (at most 8); below 1 it is refused."""
    import os

    import modeling_qwen2audio_ldv.synthetic.corpus as corpus_module
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import build_demo_data

    seen = []

    def fake_corpus(*args, num_proc=1, **kwargs):
        seen.append(num_proc)
        raise RuntimeError("stop here")

    monkeypatch.setattr(corpus_module, "build_paired_corpus", fake_corpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    for workers in (3, None):
        with pytest.raises(RuntimeError, match="stop here"):
            build_demo_data(DataArguments(preprocessing_num_workers=workers), seed=0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with pytest.raises(RuntimeError, match="stop here"):
        build_demo_data(DataArguments(), seed=0)
    assert seen == [3, 8, 2]
    with pytest.raises(ValueError, match="preprocessing_num_workers"):
        build_demo_data(DataArguments(preprocessing_num_workers=0), seed=0)
