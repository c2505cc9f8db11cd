"""Nothing is lost to a SIGKILL, and two processes train the same adapter as one (tiny base, CPU, gloo)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.speech


@pytest.fixture(scope="module")
def tiny_base_3s(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    model, processor = build_tiny_base(max_source_positions=150)
    path = tmp_path_factory.mktemp("tiny3s")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def args_for(base, output_dir, batch=4, *extra):
    return [
        "--base_model", str(base), "--output_dir", str(output_dir),
        "--num_train_utterances", "16", "--num_eval_utterances", "2",
        "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "5", "--per_device_train_batch_size", str(batch),
        "--num_heads", "4", "--ff_dim", "32", "--zero_init", "false", "--learning_rate", "0.01",
        "--objective", "lm+distill", "--eval_batch_size", "2", "--max_new_tokens", "2", "--logging_steps", "1",
        "--dataloader_num_workers", "0", "--use_cpu", "true", *extra,
    ]


def run(command, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def adapter(path):
    return load_file(Path(path) / "adapter" / "domain_adapter.safetensors")


KILL_AT_STEP_4 = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    import train_hf
    from modeling_qwen2audio_ldv import training

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)

    original_init = training.DomainAdapterTrainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(KillAfterCheckpoint())

    training.DomainAdapterTrainer.__init__ = init
    train_hf.main(sys.argv[1:])
""")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_base_3s, tmp_path):
    full = run([sys.executable, "train_hf.py", *args_for(tiny_base_3s, tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-3000:]

    killed = run([sys.executable, "-c", KILL_AT_STEP_4, *args_for(tiny_base_3s, tmp_path / "killed")])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "killed" / "checkpoint-4").is_dir()
    assert not (tmp_path / "killed" / "checkpoint-6").exists()

    resumed = run([sys.executable, "train_hf.py", *args_for(tiny_base_3s, tmp_path / "killed"),
                   "--resume_from_checkpoint", str(tmp_path / "killed" / "checkpoint-4")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = adapter(tmp_path / "full"), adapter(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key  # bit-identical on CPU


def test_two_processes_train_the_same_adapter_as_one(tiny_base_3s, tmp_path):
    one = run([sys.executable, "train_hf.py", *args_for(tiny_base_3s, tmp_path / "one", 4)])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "train_hf.py", *args_for(tiny_base_3s, tmp_path / "two", 2)])
    assert two.returncode == 0, two.stderr[-3000:]
    expected, got = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    # same global batch of 4 (rank 0 takes rows 0-1, rank 1 rows 2-3), losses normalised by the global token and
    # frame counts: equal up to float32 summation order (observed max abs diff ~8e-6 after 6 steps)
    for key in expected:
        assert torch.allclose(expected[key], got[key], rtol=1e-4, atol=5e-5), (key, (expected[key] - got[key]).abs().max())
    # only rank 0 wrote results
    assert (tmp_path / "two" / "results.json").exists()
