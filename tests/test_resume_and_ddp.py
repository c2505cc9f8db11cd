"""Nothing is lost to a SIGKILL, and two processes train the same adapter as one (tiny base, CPU, gloo).

Both compare with the shared one-process run (``one_process_run`` in conftest.py): 6 steps, global batch 4.
"""

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TRAIN_DRIVER, run_subprocess, tiny_train_args

pytestmark = pytest.mark.speech


def adapter(path):
    return load_file(Path(path) / "adapter" / "domain_adapter.safetensors")


def step_logs(checkpoint):
    """``{step: {"loss", "grad_norm", ...}}`` of the per-step training log lines in a checkpoint's trainer state."""
    history = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry and "train_runtime" not in entry}


def test_sigkill_then_resume_continues_from_the_checkpoint(one_process_run, tiny_base_3s, tmp_path):
    full_dir, full_probe, _ = one_process_run
    assert full_probe["steps"] == [0, 1, 2, 3, 4, 5]  # the probe sees a fresh run start at step 0

    killed_dir = tmp_path / "killed"
    killed = run_subprocess([sys.executable, TRAIN_DRIVER, str(tmp_path / "unused.json"), "--kill_at_step", "4",
                             "--", *tiny_train_args(tiny_base_3s, killed_dir)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (killed_dir / "checkpoint-4").is_dir()
    assert not (killed_dir / "checkpoint-6").exists()

    resumed = run_subprocess([sys.executable, TRAIN_DRIVER, str(tmp_path / "resumed.json"), "--",
                              *tiny_train_args(tiny_base_3s, killed_dir),
                              "--resume_from_checkpoint", str(killed_dir / "checkpoint-4")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    probe = json.loads((tmp_path / "resumed.json").read_text())
    # the resumed process ran exactly the two missing optimiser steps, starting at the checkpoint's step
    assert probe["steps"] == [4, 5]
    full_logs, resumed_logs = step_logs(full_dir / "checkpoint-6"), step_logs(killed_dir / "checkpoint-6")
    assert sorted(resumed_logs) == sorted(full_logs) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):  # computed after the resume: same data order, adapter and optimiser state
        assert resumed_logs[step]["loss"] == full_logs[step]["loss"], step
        assert resumed_logs[step]["grad_norm"] == full_logs[step]["grad_norm"], step
    expected, got = adapter(full_dir), adapter(killed_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key  # bit-identical on CPU


def test_two_processes_train_the_same_adapter_as_one(one_process_run, tiny_base_3s, tmp_path):
    one_dir, _, _ = one_process_run
    two_dir = tmp_path / "two"
    # --standalone: torchrun's rendezvous picks a free port (two runs on one machine do not collide)
    two = run_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          TRAIN_DRIVER, str(tmp_path / "probe.json"), "--", *tiny_train_args(tiny_base_3s, two_dir, 2)])
    assert two.returncode == 0, two.stderr[-3000:]

    # same global batch of 4 (rank 0 takes rows 0-1, rank 1 rows 2-3), losses normalised by the global token and
    # frame counts: the logged loss and the gradient norm of every step equal the one-process run's (up to float32
    # summation order; observed relative differences ~1e-7). Adam alone would hide a constant gradient scale.
    one_logs, two_logs = step_logs(one_dir / "checkpoint-6"), step_logs(two_dir / "checkpoint-6")
    assert sorted(two_logs) == sorted(one_logs) == [1, 2, 3, 4, 5, 6]
    for step in one_logs:
        for key in ("loss", "grad_norm"):
            assert two_logs[step][key] == pytest.approx(one_logs[step][key], rel=1e-4), (step, key)
    # the adapters agree to float32 rounding (observed <= 6e-8), except the attention's key bias: softmax ignores a
    # shift of the keys, so its gradient is zero in exact arithmetic and Adam turns the rounding noise into steps
    # (observed 1.6e-4 after 6 steps); it is left out
    expected, got = adapter(one_dir), adapter(two_dir)
    for key in expected:
        a, b = expected[key], got[key]
        if key.endswith("qkv.bias"):
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (key, (a - b).abs().max())

    # only rank 0 writes: rank 1 opened no file for writing under output_dir and returned before evaluating
    rank0 = json.loads((tmp_path / "probe.json").read_text())
    rank1 = json.loads((tmp_path / "probe.rank1.json").read_text())
    assert rank1["steps"] == rank0["steps"] == [0, 1, 2, 3, 4, 5]
    assert rank1["writes"] == [] and rank1["returned"] == []
    assert {"results.json", "results.md", "adapter/domain_adapter.safetensors",
            "checkpoint-6/domain_adapter.safetensors"} <= set(rank0["writes"])
    assert rank0["base_tensors"] > 0 and rank0["base_changed"] == [] and rank0["adapter_changed"]
