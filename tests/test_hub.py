"""Publishing adapters on the Hub (intercepted at HfApi: no network) and named adapters (load, route, save)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.repocard import metadata_load
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from conftest import noise_clips
from modeling_qwen2audio_ldv import (
    DomainAdapterConfig,
    Qwen2AudioLDVForConditionalGeneration,
    add_domain_adapter_to_model,
)
from modeling_qwen2audio_ldv.tools.hub import MODEL_CARD_TEMPLATE, load_results, push_adapter, push_model
from modeling_qwen2audio_ldv.adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME
from modeling_qwen2audio_ldv.modeling_qwen2audio_ldv import CODE_FILES
from modeling_qwen2audio_ldv.data.collator import build_prompt

REPO = Path(__file__).resolve().parents[1]
ADAPTER_FILES = {"config.json", ADAPTER_WEIGHTS_NAME, *CODE_FILES}
HUB_BASE = "Qwen/Qwen2-Audio-7B-Instruct"
RESULTS = {
    "base_model": "mini_base",
    "condition": "cardboard_box",
    "adapter": {"preset": "standard", "trainable_params": 5025},
    "eval": {"ldv": {"baseline": {"cer": 0.31, "wer": 0.52}, "adapted": {"cer": 0.12, "wer": 0.25}},
             "mic": {"baseline": {"cer": 0.05, "wer": 0.09}, "adapted": {"cer": 0.05, "wer": 0.1}}},
    "gap_recovered": 0.7308,
}


def clip_inputs(processor, clips):
    prompt = build_prompt(processor)
    return processor(text=[prompt] * len(clips), audio=list(clips), sampling_rate=16000, return_tensors="pt",
                     padding=True)


def make_inputs(processor, lengths=(16000, 8000, 24000), seed=0):
    return clip_inputs(processor, noise_clips(lengths, seed))


def fresh_model(base_dir, seed=0, **adapter):
    """An adapter model on the tiny base with a non-zero (random) adapter, so it differs from the base."""
    torch.manual_seed(seed)
    config = DomainAdapterConfig(**{"num_heads": 4, "ff_dim": 32, "num_layers": 1, "zero_init": False, **adapter})
    return Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base_dir, adapter_config=config).eval()


class FakeHub:
    """Stands in for the Hub at the HfApi boundary: records repos, branches and commits; keeps the files."""

    def __init__(self):
        self.repos, self.branches, self.commits = [], [], []
        self.files: dict[str, bytes] = {}

    def create_repo(self, api, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api, repo_id, branch, **kwargs):
        self.branches.append((repo_id, branch))

    def create_commit(self, api, repo_id, operations, commit_message, **kwargs):
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            files[op.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.files.update(files)
        oid = hashlib.sha1(f"{len(self.commits)}{sorted(files)}".encode()).hexdigest()
        self.commits.append({"repo_id": repo_id, "files": files, "message": commit_message, "oid": oid, **kwargs})
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}", commit_message=commit_message,
                          commit_description="", oid=oid)

    def materialise(self, folder: Path, commit: int | None = None) -> Path:
        """Write the repo's files (as of the given commit's upload, or now) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        files = self.files if commit is None else self.commits[commit]["files"]
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return folder


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: fake.create_repo(self, repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, branch, **kw: fake.create_branch(
        self, repo_id, branch, **kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, commit_message, **kw:
                        fake.create_commit(self, repo_id, operations, commit_message, **kw))
    return fake


def card_of(folder: Path) -> ModelCard:
    return ModelCard.load(folder / "README.md")


# ------------------------------------------------------------------------------------------------------- push
def test_push_model_uploads_an_adapter_only_repo_that_loads(hub, tiny_base, tiny_base_dir, tmp_path):
    _, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    results_path = tmp_path / "run" / "results.json"
    results_path.parent.mkdir()
    results_path.write_text(json.dumps(RESULTS))

    commit = push_model(model, "user/ldv-box", results=str(results_path), datasets="user/ldv-corpus")

    assert [repo for repo, _ in hub.repos] == ["user/ldv-box"] and hub.repos[0][1]["exist_ok"] is True
    assert len(hub.commits) == 2 and commit.oid == hub.commits[0]["oid"]
    assert set(hub.commits[0]["files"]) == ADAPTER_FILES | {"README.md"}
    assert set(hub.commits[1]["files"]) == {"README.md"}  # the card pinned to the first commit

    # exactly the uploaded folder loads as a user would, and gives the pushed model's logits
    folder = hub.materialise(tmp_path / "downloaded", commit=0)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(loaded).__module__.startswith("transformers_modules")
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)

    # the card: metadata and text
    final = hub.materialise(tmp_path / "final")
    card = card_of(final)
    assert card.data.library_name == "transformers"
    assert set(card.data.tags) >= {"qwen2-audio", "ldv", "domain-adaptation", "audio"}
    assert card.data.datasets == ["user/ldv-corpus"]
    assert card.data.base_model is None  # the tiny base is a local directory: not claimed as a Hub base
    by_key = {(r.dataset_config, r.metric_type, r.metric_name.split(", ")[1]): r for r in card.data.eval_results}
    expected = {(s, m, label): round(100 * RESULTS["eval"][s][model_name][m], 2)
                for s in ("ldv", "mic") for m in ("cer", "wer")
                for model_name, label in (("baseline", "base model (adapter off)"), ("adapted", "with this adapter"))}
    assert {k: r.metric_value for k, r in by_key.items()} == expected
    assert all(r.task_type == "automatic-speech-recognition" and r.dataset_type == "user/ldv-corpus"
               for r in card.data.eval_results)
    assert "cardboard_box" in by_key[("ldv", "wer", "with this adapter")].dataset_name
    raw = metadata_load(final / "README.md")
    assert raw["model-index"][0]["name"] == "ldv-box"
    assert f'revision="{commit.oid}"' in card.text and "trust_remote_code=True" in card.text
    assert "cardboard_box" in card.text and "73.1%" in card.text
    assert f"{model.num_domain_adapter_parameters():,}" in card.text
    # before pinning, the first upload's card carried a placeholder revision
    assert 'revision="COMMIT_HASH"' in card_of(hub.materialise(tmp_path / "first", commit=0)).text

    # a model loaded through remote code publishes the same way
    push_model(loaded, "user/ldv-box-copy")
    assert hub.commits[2]["repo_id"] == "user/ldv-box-copy"
    for name in (ADAPTER_WEIGHTS_NAME, "modeling_qwen2audio_ldv.py"):
        assert hub.commits[2]["files"][name] == hub.commits[0]["files"][name]


def test_card_names_a_hub_base_as_the_adapter_base(hub, tiny_base_dir, tmp_path):
    model = fresh_model(tiny_base_dir)
    push_model(model, "user/ldv-box", results=RESULTS, base_model=HUB_BASE, base_model_revision="abc123",
                      tags=["window", "ldv"])

    folder = hub.materialise(tmp_path / "repo")
    config = json.loads((folder / "config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_BASE and config["base_model_revision"] == "abc123"
    assert model.config.base_model_name_or_path == tiny_base_dir  # the model itself is unchanged
    card = card_of(folder)
    assert card.data.base_model == HUB_BASE
    assert card.data.to_dict()["base_model_relation"] == "adapter"
    assert card.data.tags == ["qwen2-audio", "ldv", "domain-adaptation", "audio", "window"]
    assert f'AutoProcessor.from_pretrained("{HUB_BASE}")' in card.text
    assert "local directory" not in card.text and "No base model reference" not in card.text


def test_push_without_base_or_results_still_works(hub, tiny_base, tmp_path):
    import copy

    base, processor = tiny_base
    torch.manual_seed(0)
    model = add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="transformer", num_heads=4, ff_dim=32,
                                        zero_init=False).eval()
    assert model.config.base_model_name_or_path is None

    push_model(model, "user/no-base")

    folder = hub.materialise(tmp_path / "repo", commit=0)
    assert "model.safetensors" in hub.commits[0]["files"]  # without a base reference the full model is uploaded
    card = card_of(hub.materialise(tmp_path / "final"))
    assert "No base model reference" in card.text and "full model" in card.text
    assert "No evaluation results" in card.text
    assert card.data.eval_results is None and card.data.base_model is None
    assert "model-index" not in metadata_load(tmp_path / "final" / "README.md")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_push_adapter_uploads_only_the_adapter_files(hub, tiny_base_dir, tmp_path):
    model = fresh_model(tiny_base_dir)
    adapter_dir = tmp_path / "run" / "adapter"
    model.save_pretrained(adapter_dir)
    (adapter_dir / "training_args.bin").write_bytes(b"pickle")  # what Trainer.save_model adds
    (tmp_path / "run" / "results.json").write_text(json.dumps(RESULTS))
    original_config = (adapter_dir / "config.json").read_text()

    commit = push_adapter(adapter_dir, "user/ldv-box", tmp_path / "run", base_model=HUB_BASE, revision="v1",
                          private=True)

    assert hub.branches == [("user/ldv-box", "v1")]
    assert all(c["revision"] == "v1" for c in hub.commits)
    assert hub.repos[0][1]["private"] is True
    assert set(hub.commits[0]["files"]) == ADAPTER_FILES | {"README.md"}
    assert json.loads(hub.files["config.json"])["base_model_name_or_path"] == HUB_BASE
    assert (adapter_dir / "config.json").read_text() == original_config  # the local checkpoint is untouched
    assert hub.files[ADAPTER_WEIGHTS_NAME] == (adapter_dir / ADAPTER_WEIGHTS_NAME).read_bytes()
    card = card_of(hub.materialise(tmp_path / "repo"))
    assert f'revision="{commit.oid}"' in card.text and card.data.base_model == HUB_BASE
    assert len(card.data.eval_results) == 8


def test_bad_push_inputs_are_named(tiny_base_dir, tmp_path):
    model = fresh_model(tiny_base_dir)
    model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['domain_adapter.safetensors'\]"):
        push_adapter(tmp_path / "adapter", "user/x")
    with pytest.raises(FileNotFoundError, match="results file not found"):
        load_results(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_results(tmp_path / "list.json")


def test_push_card_only_cli_writes_the_card_without_uploading(tiny_base_dir, tmp_path, monkeypatch, capsys):
    from modeling_qwen2audio_ldv.cli import main

    def no_network(*args, **kwargs):
        raise AssertionError("--card-only must not talk to the Hub")

    monkeypatch.setattr(HfApi, "create_commit", no_network)
    monkeypatch.setattr(HfApi, "create_repo", no_network)
    fresh_model(tiny_base_dir).save_pretrained(tmp_path / "adapter")
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    code = main(["push", str(tmp_path / "adapter"), "user/ldv-box", "--results", str(tmp_path / "results.json"),
                 "--card-only"])
    assert code == 0 and "model card written" in capsys.readouterr().out
    card = card_of(tmp_path / "adapter")
    assert len(card.data.eval_results) == 8 and 'revision="COMMIT_HASH"' in card.text


def test_the_card_template_ships_with_the_package():
    import tomllib

    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert MODEL_CARD_TEMPLATE.name in package_data["modeling_qwen2audio_ldv.tools"]
    assert MODEL_CARD_TEMPLATE.is_file()


# ---------------------------------------------------------------------------------------------- named adapters
@pytest.fixture
def two_adapter_dirs(tiny_base_dir, tmp_path):
    """Two adapters for the tiny base with different weights and shapes."""
    dirs = {}
    for name, seed, layers in (("a", 1, 1), ("b", 2, 2)):
        dirs[name] = tmp_path / name
        fresh_model(tiny_base_dir, seed=seed, num_layers=layers).save_pretrained(dirs[name])
    return dirs


def test_adapter_for_another_base_is_refused_naming_both(two_adapter_dirs, tiny_base_dir, tmp_path):
    other_base = tmp_path / "other_base"
    shutil.copytree(tiny_base_dir, other_base)
    model = fresh_model(str(other_base))
    with pytest.raises(ValueError) as error:
        model.load_domain_adapter(two_adapter_dirs["a"], adapter_name="a")
    assert tiny_base_dir in str(error.value) and str(other_base) in str(error.value)
    assert model.list_domain_adapters() == ["default"]


def test_unknown_adapter_names_list_the_known_ones(two_adapter_dirs, tiny_base, tiny_base_dir):
    _, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    assert model.load_domain_adapter(two_adapter_dirs["a"]) == "a"  # default name: the directory's
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'; loaded adapters: \['default', 'a'\]"):
        model.set_domain_adapter("nope")
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'; loaded adapters: \['default', 'a'\]"):
        model.delete_domain_adapter("nope")
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'; loaded adapters: \['default', 'a'\]"):
        model.save_pretrained("unused", adapter_name="nope")
    with pytest.raises(ValueError, match=r"unknown audio_domain 'nope'; known: \['mic', 'ldv', 'default', 'a'\]"):
        model(**make_inputs(processor, lengths=(8000,)), audio_domain=["nope"])


def test_two_adapters_routed_in_one_batch_match_each_audio_alone(two_adapter_dirs, tiny_base, tiny_base_dir):
    base, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    model.load_domain_adapter(two_adapter_dirs["a"], adapter_name="a")
    model.load_domain_adapter(two_adapter_dirs["b"], adapter_name="b")
    clips, domains = noise_clips((16000, 28000, 6000), seed=3), ["a", "mic", "b"]
    with torch.no_grad():
        routed = model(**clip_inputs(processor, clips), audio_domain=domains).logits
        for row, (clip, domain) in enumerate(zip(clips, domains)):
            alone = model(**clip_inputs(processor, [clip]), audio_domain=[domain]).logits[0]
            n = alone.shape[0]  # left padding: the clip's tokens are the last ones of its row
            assert (routed[row, -n:] - alone).abs().max().item() <= 1e-5, domain
        # and each adapter really is a different function: a, b and no adapter disagree
        single = make_inputs(processor, (16000,))
        outputs = {d: model(**single, audio_domain=[d]).logits for d in ("a", "b", "mic", "ldv")}
        # "mic" is the base model (up to the trimmed tower's float32 rounding)
        assert (outputs["mic"] - base(**single).logits).abs().max().item() <= 1e-5
    assert not torch.allclose(outputs["a"], outputs["b"]) and not torch.allclose(outputs["a"], outputs["mic"])
    assert not torch.allclose(outputs["ldv"], outputs["a"])


def test_a_loaded_adapter_follows_the_model_mode(two_adapter_dirs, tiny_base_dir):
    model = fresh_model(tiny_base_dir)
    assert not model.training
    model.load_domain_adapter(two_adapter_dirs["a"], adapter_name="a")
    assert not model.domain_adapters["a"].training


def test_each_named_adapter_saves_alone_and_reloads(two_adapter_dirs, tiny_base, tiny_base_dir, tmp_path):
    _, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    model.load_domain_adapter(two_adapter_dirs["a"], adapter_name="a")
    model.load_domain_adapter(two_adapter_dirs["b"], adapter_name="b")
    model.eval()
    inputs = make_inputs(processor)
    for name, layers in (("a", 1), ("b", 2), ("default", 1)):
        out = tmp_path / f"saved_{name}"
        model.save_pretrained(out, adapter_name=name)
        assert set(p.name for p in out.iterdir()) == ADAPTER_FILES
        assert json.loads((out / "config.json").read_text())["domain_adapter"]["num_layers"] == layers
        saved = load_file(out / ADAPTER_WEIGHTS_NAME)
        module = model.domain_adapters[name]
        assert saved.keys() == module.state_dict().keys()
        assert all(torch.equal(saved[k], v) for k, v in module.state_dict().items())
        reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(out).eval()
        with torch.no_grad():
            expected = model(**inputs, audio_domain=[name] * 3).logits
            assert torch.equal(reloaded(**inputs).logits, expected), name
    assert model.active_domain_adapter == "default"  # saving a named adapter does not switch the active one


def test_a_full_save_writes_the_active_adapter_whichever_it_is(two_adapter_dirs, tiny_base, tiny_base_dir, tmp_path):
    """With ``b`` (two layers) made active, a full checkpoint holds ``b``'s weights as ``domain_adapter.*`` and
    ``b``'s configuration, and loads back as ``b`` (not the ``default`` slot's one-layer adapter)."""
    _, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    model.load_domain_adapter(two_adapter_dirs["b"], adapter_name="b")
    model.set_domain_adapter("b")
    model.save_pretrained(tmp_path / "full", adapter_only=False)
    saved = load_file(tmp_path / "full" / "model.safetensors")
    adapter_keys = {k for k in saved if k.startswith("domain_adapter")}
    b_state = model.domain_adapters["b"].state_dict()
    assert adapter_keys == {f"domain_adapter.{k}" for k in b_state}
    assert all(torch.equal(saved[f"domain_adapter.{k}"], v) for k, v in b_state.items())
    assert json.loads((tmp_path / "full" / "config.json").read_text())["domain_adapter"]["num_layers"] == 2
    reloaded = Qwen2AudioLDVForConditionalGeneration.from_pretrained(tmp_path / "full").eval()
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs, audio_domain=["b"] * 3).logits)
    with pytest.raises(ValueError, match="a full save writes the active adapter"):
        model.save_pretrained(tmp_path / "other", adapter_only=False, adapter_name="default")


def test_freezing_trains_the_active_adapter_only_among_similar_names(tiny_base_dir):
    """``room`` active next to ``room2``: the trainable parameters are ``domain_adapters.room.*`` only (the prefix
    ends at the name)."""
    model = fresh_model(tiny_base_dir)
    config = {"num_heads": 4, "ff_dim": 32, "num_layers": 1}
    model.add_domain_adapter("room2", config, set_active=False)
    model.add_domain_adapter("room", config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"domain_adapters.room.{k}" for k, _ in model.domain_adapters["room"].named_parameters()}
    model.set_domain_adapter("room2")
    model.freeze_base_model()
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        f"domain_adapters.room2.{k}" for k, _ in model.domain_adapters["room2"].named_parameters()}


def test_stock_push_to_hub_uploads_the_adapter_only_folder(hub, tiny_base, tiny_base_dir, tmp_path):
    """``model.push_to_hub`` is transformers' own: it uploads what ``save_pretrained`` writes (here adapter-only)."""
    _, processor = tiny_base
    model = fresh_model(tiny_base_dir)
    model.push_to_hub("user/plain-push")
    assert [repo for repo, _ in hub.repos] == ["user/plain-push"]
    uploaded = set(hub.commits[-1]["files"])
    assert ADAPTER_FILES <= uploaded and "model.safetensors" not in uploaded
    folder = hub.materialise(tmp_path / "plain")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model.eval()(**inputs).logits)
