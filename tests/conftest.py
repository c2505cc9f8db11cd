import os

# Any accidental download must fail at once instead of hanging on a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_base():
    """A random tiny stock Qwen2-Audio model and its offline processor (2 s audio window)."""
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    return build_tiny_base(seed=0)


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_base, tmp_path_factory):
    """The tiny base saved as a normal Hub-style checkpoint directory (model + processor)."""
    model, processor = tiny_base
    path = tmp_path_factory.mktemp("tiny_base")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def noise_clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="session")
def tiny_base_3s(tmp_path_factory):
    """A tiny random base with a 3 s window (the synthetic demo clips are up to ~2.1 s), saved as a directory."""
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    model, processor = build_tiny_base(max_source_positions=150)
    path = tmp_path_factory.mktemp("tiny3s")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_train_args(base, output_dir, batch=4, *extra):
    """``train_hf.py`` flags of the shared short run: 6 optimiser steps of a global batch of 4 on the demo corpus,
    a checkpoint every 2 steps, a loss/gradient-norm log line every step, 2 clips per eval set. A large
    ``scale_init`` makes the adapter change some of the random tiny model's transcripts. The adapter sits inside the
    tiny tower after its first layer (the demo recipe's placement is inside the tower too; after the tiny tower's
    last layer its pooling and LayerNorm would leave the 2 eval transcripts unchanged). Adapter dropout is off (the
    demo recipe's is 0.1): two processes draw other dropout masks than one, and the runs are compared step by step.
    The adapter is the transformer type, whose gate, scale and norm these runs check (the demo recipe's LoRA is
    trained by ``test_shortened_demo_on_the_mini_base`` and ``tests/test_lora_adapter.py``)."""
    return [
        "--base_model", str(base), "--output_dir", str(output_dir),
        "--num_train_utterances", "16", "--num_eval_utterances", "2",
        "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "5", "--per_device_train_batch_size", str(batch),
        "--adapter_type", "transformer", "--num_heads", "4", "--ff_dim", "32", "--zero_init", "false",
        "--scale_init", "10", "--learning_rate", "0.01",
        "--objective", "lm+distill", "--eval_batch_size", "2", "--max_new_tokens", "4", "--logging_steps", "1",
        "--dataloader_num_workers", "0", "--use_cpu", "true", "--encoder_layer", "1", "--dropout", "0", *extra,
    ]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_DRIVER = os.path.join(REPO, "tests", "train_driver.py")


def run_subprocess(command, timeout=600):
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def one_process_run(tiny_base_3s, tmp_path_factory):
    """The shared one-process run of ``train_hf.py`` (``tiny_train_args``) through ``tests/train_driver.py``, in
    its own process with one thread (the resume and two-process runs compare with it bit for bit).

    Returns ``(output_dir, probe report dict, train_hf arguments)``."""
    import json
    import sys

    pytest.importorskip("espeakng_loader")
    root = tmp_path_factory.mktemp("one_process_run")
    args = tiny_train_args(tiny_base_3s, root / "run")
    result = run_subprocess([sys.executable, TRAIN_DRIVER, str(root / "probe.json"), "--", *args])
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", json.loads((root / "probe.json").read_text()), args
