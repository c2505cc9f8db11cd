"""A saved adapter loads from any working directory: its local base is recorded as an absolute path, a relative
reference is tried against the adapter's folder and then the working directory, ``--base``
(``base_model_name_or_path=``) replaces it, a Hub repo id is left as it is, and a base found nowhere is an error
naming every place tried."""

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.cli import main as cli_main

HUB_BASE = "Qwen/Qwen2-Audio-7B-Instruct"


@pytest.fixture
def project(tiny_base, tmp_path, monkeypatch):
    """``project/base`` (the tiny base) and ``project/out/adapter``, an adapter trained while working in
    ``project/`` on the relative ``--base_model base``; the test then works in ``elsewhere/``."""
    model, processor = tiny_base
    root = tmp_path / "project"
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    monkeypatch.chdir(root)
    torch.manual_seed(0)
    config = DomainAdapterConfig(num_heads=4, ff_dim=32, num_layers=1, zero_init=False)
    adapted = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained("base", adapter_config=config)
    adapted.save_pretrained(os.path.join("out", "adapter"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return root


def set_recorded_base(adapter, reference):
    """Rewrite the base reference of a saved adapter (as an adapter saved by an earlier version records it)."""
    path = adapter / "config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = reference
    path.write_text(json.dumps(config))


def a_wav(folder):
    rng = np.random.default_rng(0)
    path = folder / "clip.wav"
    sf.write(path, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    return path


def assert_loaded_exactly(model, root):
    """The saved adapter's weights, on the base of ``root / "base"``."""
    saved = load_file(root / "out" / "adapter" / ADAPTER_WEIGHTS_NAME)
    assert saved and all(torch.equal(model.domain_adapter.state_dict()[k], v) for k, v in saved.items())
    base = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(root / "base")
    assert model.config.base_model_name_or_path == str(root / "base")
    for name in ("model.audio_tower.conv1.weight", "model.multi_modal_projector.linear.weight"):
        assert torch.equal(model.state_dict()[name], base.state_dict()[name])


def test_a_local_base_is_recorded_as_an_absolute_path(project):
    recorded = json.loads((project / "out" / "adapter" / "config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(project / "base")  # trained as "base" from project/


def test_the_adapter_loads_from_another_working_directory(project, capsys):
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(project / "out" / "adapter")
    assert_loaded_exactly(model, project)
    code = cli_main(["transcribe", str(a_wav(project)), "--model", str(project / "out" / "adapter"),
                     "--max-new-tokens", "2"])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"{project / 'clip.wav'}\t")


def test_a_relative_reference_is_found_against_the_adapter_folder(project):
    set_recorded_base(project / "out" / "adapter", os.path.join("..", "..", "base"))
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(project / "out" / "adapter")
    assert_loaded_exactly(model, project)
    assert model.config.base_model_name_or_path == str(project / "base")  # what a re-save records


def test_a_base_found_nowhere_names_what_was_tried_and_base_replaces_it(project, caplog):
    """An adapter saved before the fix records "base", relative to the folder it was trained from (project/)."""
    adapter = project / "out" / "adapter"
    set_recorded_base(adapter, "base")
    elsewhere = project.parent / "elsewhere"
    with pytest.raises(OSError) as error:
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(adapter)
    message = str(error.value)
    for tried in (str(adapter / "base"), str(elsewhere / "base"), "Hub repo id", "--base", "base_model_name_or_path"):
        assert tried in message

    wav = str(a_wav(project))
    with caplog.at_level(logging.ERROR):
        assert cli_main(["transcribe", wav, "--model", str(adapter), "--max-new-tokens", "2"]) == 2
    assert str(adapter / "base") in caplog.text and str(elsewhere / "base") in caplog.text

    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(adapter, base_model_name_or_path=project / "base")
    assert_loaded_exactly(model, project)
    assert cli_main(["transcribe", wav, "--model", str(adapter), "--base", str(project / "base"),
                     "--max-new-tokens", "2"]) == 0
    # a --base that is not there either: named in the error
    with pytest.raises(OSError, match="the base given .*" + str(elsewhere / "missing_base")):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(adapter, base_model_name_or_path="missing_base")


def test_a_hub_repo_id_is_recorded_and_loaded_unchanged(project, monkeypatch):
    adapter = project / "out" / "adapter"
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(adapter)
    model.config.base_model_name_or_path = HUB_BASE
    model.save_pretrained(project / "hub_adapter")
    assert json.loads((project / "hub_adapter" / "config.json").read_text())["base_model_name_or_path"] == HUB_BASE

    asked = []

    def from_base_pretrained(cls, base, **kwargs):
        asked.append(base)
        raise OSError("offline")

    monkeypatch.setattr(Qwen2AudioLDVForConditionalGeneration, "from_base_pretrained",
                        classmethod(from_base_pretrained))
    with pytest.raises(OSError, match="not loadable as a Hub repo id"):
        Qwen2AudioLDVForConditionalGeneration.from_pretrained(project / "hub_adapter")
    assert asked == [HUB_BASE]  # not a path under the adapter folder or the working directory


@pytest.mark.parametrize("command", ["evaluate", "explain", "diagnose"])
def test_every_adapter_command_passes_base_on(project, monkeypatch, caplog, command):
    import modeling_qwen2audio_ldv.tools.hub as hub

    asked = []

    def load_adapter_model(model, *args, base_model_name_or_path=None, **kwargs):
        asked.append((model, base_model_name_or_path))
        raise OSError(f"{model}: no base at {base_model_name_or_path}")

    monkeypatch.setattr(hub, "load_adapter_model", load_adapter_model)
    adapter, base = str(project / "out" / "adapter"), str(project / "base")
    argv = {"evaluate": ["evaluate", "--data", str(project)], "explain": ["explain", str(a_wav(project))],
            "diagnose": ["diagnose"]}[command]
    with caplog.at_level(logging.ERROR):
        assert cli_main([*argv, "--model", adapter, "--base", base]) == 2
    assert asked == [(adapter, base)]
    assert f"no base at {base}" in caplog.text


def test_a_base_given_is_not_taken_at_the_recorded_base_revision(project, monkeypatch):
    adapter = project / "out" / "adapter"
    path = adapter / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "base_model_name_or_path": HUB_BASE,
                                "base_model_revision": "abc123"}))
    asked = []

    def from_base_pretrained(cls, base, **kwargs):
        asked.append((base, kwargs.get("revision")))
        raise OSError("offline")

    monkeypatch.setattr(Qwen2AudioLDVForConditionalGeneration, "from_base_pretrained",
                        classmethod(from_base_pretrained))
    for kwargs in ({}, {"base_model_name_or_path": "user/other-base"},
                   {"base_model_name_or_path": "user/other-base", "base_model_revision": "def456"}):
        with pytest.raises(OSError):
            Qwen2AudioLDVForConditionalGeneration.from_pretrained(adapter, **kwargs)
    assert asked == [(HUB_BASE, "abc123"), ("user/other-base", None), ("user/other-base", "def456")]
