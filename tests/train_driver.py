"""Run ``train_hf.main`` with probes, for the tests that need a separate process (SIGKILL, torchrun).

    python tests/train_driver.py REPORT.json [--kill_at_step N] -- <train_hf.py arguments>

Writes ``REPORT.json`` (``REPORT.rank<R>.json`` on rank R > 0) once training returns:

- ``steps``: the ``global_step`` at the start of every optimiser step this process ran (a run resumed from
  checkpoint-4 of 6 runs steps 4 and 5; a fresh run 0-5);
- ``base_tensors`` / ``base_changed``: how many base (non-adapter) tensors of the trainer's in-memory model were
  snapshotted before training, and which differ after it;
- ``adapter_changed``: whether training moved the adapter at all;
- ``writes``: files this process opened for writing under ``--output_dir`` (an audit hook on ``open``, plus
  ``safetensors.torch.save_file``; writes from native code such as Arrow's are not seen);
- ``returned``: the keys of the dict ``train_hf.main`` returned.

``--kill_at_step N`` sends SIGKILL to this process right after the checkpoint of step N is saved.
"""

import json
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv):
    report_path, rest = argv[0], argv[1:]
    kill_at = None
    if rest[:1] == ["--kill_at_step"]:
        kill_at, rest = int(rest[1]), rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    rank = int(os.environ.get("RANK", "0"))
    if rank:
        report_path = f"{os.path.splitext(report_path)[0]}.rank{rank}.json"
    output_dir = os.path.abspath(rest[rest.index("--output_dir") + 1])

    writes = []

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            path = os.path.abspath(os.fsdecode(args[0]))
            if writing and path.startswith(output_dir + os.sep):
                writes.append(os.path.relpath(path, output_dir))

    sys.addaudithook(audit)
    # safetensors writes from Rust, out of the hook's sight: record its saves too (patched before anything
    # imports save_file by name)
    import safetensors.torch

    original_save_file = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        path = os.path.abspath(os.fsdecode(filename))
        if path.startswith(output_dir + os.sep):
            writes.append(os.path.relpath(path, output_dir))
        return original_save_file(tensors, filename, *args, **kwargs)

    safetensors.torch.save_file = save_file

    import torch
    from transformers import TrainerCallback

    import train_hf
    from modeling_qwen2audio_ldv.training import trainer as training
    from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import DOMAIN_ADAPTER_PREFIX

    probe = {"steps": [], "base_tensors": 0, "base_changed": [], "adapter_changed": None}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            probe["steps"].append(state.global_step)

        def on_save(self, args, state, control, **kwargs):
            if kill_at is not None and state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    original_init, original_train = training.DomainAdapterTrainer.__init__, training.DomainAdapterTrainer.train

    def split_state(model):
        state = model.state_dict()
        base = {k: v.detach().clone() for k, v in state.items() if not k.startswith(DOMAIN_ADAPTER_PREFIX)}
        adapter = {k: v.detach().clone() for k, v in state.items() if k.startswith(DOMAIN_ADAPTER_PREFIX)}
        return base, adapter

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Probe())

    def train(self, *args, **kwargs):
        base_before, adapter_before = split_state(self.model)
        result = original_train(self, *args, **kwargs)
        base_after, adapter_after = split_state(self.accelerator.unwrap_model(self.model))
        probe["base_tensors"] = len(base_before)
        probe["base_changed"] = sorted(k for k, v in base_before.items()
                                       if k not in base_after or not torch.equal(v, base_after[k]))
        probe["adapter_changed"] = any(not torch.equal(v, adapter_after[k]) for k, v in adapter_before.items())
        return result

    training.DomainAdapterTrainer.__init__ = init
    training.DomainAdapterTrainer.train = train
    returned = train_hf.main(rest)
    probe["writes"] = sorted(set(writes))
    probe["returned"] = sorted(returned)
    Path(report_path).write_text(json.dumps(probe, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
