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
