# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Publish domain adapters on the Hugging Face Hub with a model card, and load them for the tools.

A published repository holds what ``save_pretrained`` writes for an adapter-only checkpoint, plus a card:

- ``config.json``: the Qwen2-Audio configuration with the adapter's hyper-parameters, ``auto_map`` and
  ``base_model_name_or_path`` (the base the adapter loads onto);
- ``domain_adapter.safetensors``: the adapter's weights;
- the ``*_qwen2audio_ldv.py`` Hub files (``CODE_FILES``): the code ``trust_remote_code`` runs;
- ``README.md``: a model card rendered from :data:`MODEL_CARD_TEMPLATE` with ``huggingface_hub.ModelCard``. Its
  metadata holds ``base_model`` (+ ``base_model_relation: adapter``), ``library_name: transformers``, tags,
  ``datasets`` and a ``model-index`` with the CER/WER of ``results.json`` (see :mod:`..evaluation.report`).

Upload goes through ``HfApi``: ``create_repo``, ``create_branch`` (for a ``revision`` other than the default
branch), then ``create_commit`` with every file. A second ``create_commit`` rewrites ``README.md`` so that its usage
snippet pins ``revision`` to the first commit's hash: the commit that holds the weights and the code.

Missing inputs do not stop a push; the card says what is missing: no results (no error rates, no
``model-index``), no base reference (the full model is uploaded, see below), a base that is a local directory
(not written to the metadata; pass ``base_model="Qwen/Qwen2-Audio-7B-Instruct"`` to publish a loadable adapter).

Example:
    >>> push_model(model, "user/qwen2-audio-ldv-window", results="outputs/run/results.json", condition="window")
    >>> push_adapter("outputs/run/adapter", "user/qwen2-audio-ldv-window", "outputs/run/results.json")

Command line: ``ldv-qwen2audio push ADAPTER_DIR REPO_ID --results results.json`` (``--card-only`` writes the
card into ADAPTER_DIR without uploading).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME, CHECKPOINT_ADAPTER_PREFIX
from ..modeling_qwen2audio_ldv import CODE_FILES

logger = logging.getLogger(__name__)

#: The Jinja2 template of the model card (shipped with the package).
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"
#: Tags every published adapter carries.
CARD_TAGS: tuple[str, ...] = ("qwen2-audio", "ldv", "domain-adaptation", "audio")
#: The files of an adapter-only checkpoint; :func:`push_adapter` uploads exactly these (plus ``README.md``).
ADAPTER_FILES: tuple[str, ...] = ("config.json", ADAPTER_WEIGHTS_NAME, *CODE_FILES)
#: The task that the ``model-index`` results belong to.
TASK_TYPE, TASK_NAME = "automatic-speech-recognition", "Speech recognition"
#: Readable names of the evaluation sets and models that ``train_hf.py`` writes into ``results.json``.
_SET_NAMES = {"ldv": "LDV speech", "mic": "Microphone speech"}
_MODEL_NAMES = {"baseline": "base model (adapter off)", "adapted": "with this adapter"}
_ERROR_RATES = ("cer", "wer")
_DEFAULT_BASE_HINT = "Qwen/Qwen2-Audio-7B-Instruct"
_PLACEHOLDER_REVISION = "COMMIT_HASH"


# ------------------------------------------------------------------------------------------------------- inputs
def load_results(results: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any] | None:
    """The results dictionary of a run (shape: :mod:`..evaluation.report`).

    Args:
        results: ``None``; a dictionary; a ``results.json`` file; or a directory that holds ``results.json``.

    Raises:
        FileNotFoundError: the path does not exist, or the directory has no ``results.json``.
        ValueError: the file is not JSON, or not a JSON object.
    """
    if results is None:
        return None
    if isinstance(results, Mapping):
        return dict(results)
    path = Path(results)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a JSON object like train_hf.py's results.json, got {type(loaded).__name__}")
    return loaded


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` reads as a Hub model id (``org/name``) rather than a local directory."""
    if not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: Any) -> str:
    return f"{100.0 * value:.2f}" if _finite(value) else "n/a"


def _set_label(set_name: str, condition: str | None) -> str:
    label = _SET_NAMES.get(set_name, set_name)
    if condition and set_name == "ldv":
        return f"{label} ({condition})"
    if condition and set_name == "mic":
        return f"{label} (paired with {condition})"
    return label


def eval_results_from(
    results: Mapping[str, Any] | None, condition: str | None = None, dataset_id: str | None = None
) -> list[EvalResult]:
    """``model-index`` entries for every CER/WER in ``results["eval"]`` (percent, two decimals).

    Each ``(set, model, metric)`` becomes one ``EvalResult``: ``dataset_config`` is the set name (``ldv``,
    ``mic``, ...), ``metric_type`` is ``cer`` or ``wer`` and ``metric_name`` says whether the number is the
    adapted model's or the base model's (adapter off). Non-numeric or missing values are skipped.
    """
    evaluation = (results or {}).get("eval")
    if not isinstance(evaluation, Mapping):
        return []
    entries = []
    for set_name, models in evaluation.items():
        if not isinstance(models, Mapping):
            continue
        for model_name, scores in models.items():
            if not isinstance(scores, Mapping):
                continue
            for metric in _ERROR_RATES:
                value = scores.get(metric)
                if not _finite(value):
                    continue
                entries.append(EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset_id or "custom",
                    dataset_name=_set_label(str(set_name), condition),
                    dataset_config=str(set_name),
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=f"{metric.upper()} (%), {_MODEL_NAMES.get(str(model_name), str(model_name))}",
                    metric_value=round(100.0 * float(value), 2),
                ))
    return entries


def _results_rows(results: Mapping[str, Any] | None, condition: str | None) -> list[dict[str, str]]:
    evaluation = (results or {}).get("eval")
    rows = []
    if isinstance(evaluation, Mapping):
        for set_name, models in evaluation.items():
            if not isinstance(models, Mapping):
                continue
            for model_name, scores in models.items():
                if isinstance(scores, Mapping):
                    rows.append({"set": _set_label(str(set_name), condition),
                                 "model": _MODEL_NAMES.get(str(model_name), str(model_name)),
                                 "cer": _percent(scores.get("cer")), "wer": _percent(scores.get("wer"))})
    return rows


def _count_adapter_parameters(folder: Path) -> tuple[int | None, str | None]:
    """Adapter parameters stored in ``folder`` and the weights file that holds them."""
    from safetensors import safe_open

    adapter_file = folder / ADAPTER_WEIGHTS_NAME
    files = [adapter_file] if adapter_file.is_file() else sorted(folder.glob("*.safetensors"))
    total, found = 0, False
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if path == adapter_file or key.startswith(CHECKPOINT_ADAPTER_PREFIX):
                    total += math.prod(handle.get_slice(key).get_shape())
                    found = True
    if not files:
        return None, None
    weights = adapter_file.name if adapter_file.is_file() else ", ".join(p.name for p in files)
    return (total if found else None), weights


def _scale_value(folder: Path) -> float | None:
    """The trained ``scale`` of the adapter in ``folder`` (``None`` when there is no adapter file)."""
    from safetensors import safe_open

    path = folder / ADAPTER_WEIGHTS_NAME
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if "scale" not in handle.keys():
            return None
        return float(handle.get_tensor("scale").float().reshape(-1)[0])


def _hyperparameters(adapter: Mapping[str, Any], d_model: Any) -> list[tuple[str, str]]:
    adapter_type = adapter.get("adapter_type", "transformer")
    names = ["adapter_type"]
    if adapter_type == "transformer":
        names += ["num_layers", "num_heads", "ff_dim"]
    elif adapter_type == "mlp":
        names += ["bottleneck_dim"]
    names += ["dropout", "use_gate", "use_position_encoding", "scale_init", "zero_init"]
    rows = [(name, str(adapter[name])) for name in names if name in adapter]
    if d_model is not None:
        rows.append(("d_model (encoder width)", str(d_model)))
    return rows


def _base_model_text(base: str | None, base_revision: str | None, hub_base: str | None,
                     adapter_only: bool) -> tuple[str, list[str]]:
    """The card's words for the base model, and what is missing about it (a local or unrecorded base)."""
    missing: list[str] = []
    if hub_base:
        text = f"[`{base}`](https://huggingface.co/{base})"
        if base_revision:
            text += f" at revision `{base_revision}`"
    elif base:
        text = f"`{base}` (a local directory)"
        missing.append(f"The base model is the local directory `{base}`, which exists only on the machine that "
                       f"trained the adapter: `from_pretrained` works only where that directory exists. "
                       f"Republish with `base_model=\"{_DEFAULT_BASE_HINT}\"` (or the Hub id of your base).")
    else:
        text = "not recorded"
        missing.append("No base model reference (`base_model_name_or_path` is not set), so this repository "
                       + ("holds the full model weights instead of the adapter alone."
                          if not adapter_only else "cannot be loaded with `from_pretrained` until "
                          "`base_model_name_or_path` is set in `config.json`."))
    return text, missing


def _card_data(results: Mapping[str, Any] | None, condition: str | None, datasets: list[str], hub_base: str | None,
               license: str | None, tags: Sequence[str] | None, repo_id: str) -> ModelCardData:
    """The card's YAML metadata: base model, tags, datasets and the model-index results."""
    eval_results = eval_results_from(results, condition, datasets[0] if datasets else None)
    return ModelCardData(
        base_model=hub_base,
        library_name="transformers",
        license=license,
        tags=list(dict.fromkeys([*CARD_TAGS, *(tags or [])])),
        datasets=datasets or None,
        metrics=list(_ERROR_RATES) if eval_results else None,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
        **({"base_model_relation": "adapter"} if hub_base else {}),
    )


# -------------------------------------------------------------------------------------------------------- card
def adapter_card(
    folder: str | os.PathLike,
    repo_id: str,
    results: Mapping[str, Any] | str | os.PathLike | None = None,
    condition: str | None = None,
    datasets: str | Sequence[str] | None = None,
    revision: str | None = None,
    license: str | None = "apache-2.0",
    tags: Sequence[str] | None = None,
) -> ModelCard:
    """Render the model card of the checkpoint in ``folder`` (written by ``save_pretrained``).

    Args:
        folder: the saved checkpoint (``config.json`` and the weights).
        repo_id: the repository the card describes (used in the usage snippet and the title).
        results: the run's results (dict, ``results.json`` or its directory), or ``None``.
        condition: the LDV condition the adapter was trained for (default: ``results["condition"]``).
        datasets: Hub dataset id(s) of the training data, for the metadata.
        revision: the commit to pin in the usage snippet (``None``: a placeholder the user must fill).
        license: the card's license identifier.
        tags: extra tags, after :data:`CARD_TAGS`.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README text.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    results = load_results(results)
    condition = condition or (results or {}).get("condition")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    base = config.get("base_model_name_or_path")
    base_revision = config.get("base_model_revision")
    adapter = config.get("domain_adapter") or {}
    d_model = (config.get("audio_config") or {}).get("d_model")
    num_parameters, weights_file = _count_adapter_parameters(folder)
    adapter_only = (folder / ADAPTER_WEIGHTS_NAME).is_file()

    hub_base = base if is_hub_id(base) else None
    base_model_text, missing = _base_model_text(base, base_revision, hub_base, adapter_only)
    if not condition:
        missing.append("The LDV condition (surface, distance, device) the adapter was trained for was not given.")
    if not datasets:
        missing.append("The training data set was not named.")
    results_rows = _results_rows(results, condition)
    if not results_rows:
        missing.append("No evaluation results (CER/WER) were given: the adapter's benefit is unmeasured here.")
    card_data = _card_data(results, condition, datasets, hub_base, license, tags, repo_id)

    preset = ((results or {}).get("adapter") or {}).get("preset")
    adapter_type = adapter.get("adapter_type", "transformer")
    summary = f"`{adapter_type}`" + (f" (preset `{preset}`)" if preset else "")
    if num_parameters is not None:
        summary += f", {num_parameters:,} parameters"
    num_parameters_text = f"{num_parameters:,}" if num_parameters is not None else "unknown (no weights found)"
    scale = _scale_value(folder)
    gap = (results or {}).get("gap_recovered")
    gap_text = (f"The adapter closes {100.0 * gap:.1f}% of the CER gap between LDV and microphone speech "
                f"(0% = no help, 100% = LDV as good as the microphone baseline).") if _finite(gap) else ""
    if revision:
        revision_note = f"`{revision}` below is the commit that added these weights and this code."
    else:
        revision_note = (f"Replace `{_PLACEHOLDER_REVISION}` below with a commit hash from the repository's "
                         "history.")
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        revision=revision or _PLACEHOLDER_REVISION,
        revision_note=revision_note,
        base_model_text=base_model_text,
        processor_source=base or _DEFAULT_BASE_HINT,
        condition_text=condition or "not stated",
        adapter_summary=summary,
        datasets_text=", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in datasets) or "not stated",
        missing=missing,
        hyperparameters=_hyperparameters(adapter, d_model),
        gate_text=("the gate is a per-frame, per-channel sigmoid of the input, so the adapter can leave frames that "
                   "need no change alone." if adapter.get("use_gate", True) else "this adapter has no gate."),
        num_parameters_text=num_parameters_text,
        scale_text=f"{scale:.4f}" if scale is not None else "",
        results_rows=results_rows,
        gap_text=gap_text,
        weights_file=weights_file or ADAPTER_WEIGHTS_NAME,
        adapter_only=adapter_only,
    )


# ------------------------------------------------------------------------------------------------------ upload
def _push_folder(
    folder: Path,
    repo_id: str,
    card_kwargs: dict[str, Any],
    revision: str | None,
    private: bool | None,
    token: str | bool | None,
    commit_message: str | None,
    create_pr: bool,
):
    """Create the repo, commit every file of ``folder`` with a card, then pin the card to that commit."""
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    card = adapter_card(folder, repo_id, revision=None, **card_kwargs)
    card.save(folder / "README.md")
    operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
                  for path in sorted(folder.iterdir()) if path.is_file()]
    logger.info("uploading %s to %s", ", ".join(op.path_in_repo for op in operations), repo_id)
    commit = api.create_commit(repo_id=repo_id, operations=operations,
                               commit_message=commit_message or "Upload LDV domain adapter",
                               token=token, revision=revision, create_pr=create_pr)
    pinned = adapter_card(folder, repo_id, revision=commit.oid, **card_kwargs)
    card_revision = commit.pr_revision or revision
    api.create_commit(repo_id=repo_id, operations=[CommitOperationAdd(path_in_repo="README.md",
                                                                      path_or_fileobj=str(pinned).encode("utf-8"))],
                      commit_message=f"Model card: pin the usage snippet to {commit.oid[:12]}",
                      token=token, revision=card_revision)
    logger.info("published %s at commit %s", repo_id, commit.oid)
    return commit


def push_adapter(
    adapter_dir: str | os.PathLike,
    repo_id: str,
    results: Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    condition: str | None = None,
    datasets: str | Sequence[str] | None = None,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    license: str | None = "apache-2.0",
    tags: Sequence[str] | None = None,
):
    """Publish an adapter directory written by ``save_pretrained`` (e.g. ``train_hf.py``'s ``output_dir/adapter``).

    Only the files of an adapter-only checkpoint (:data:`ADAPTER_FILES`) are uploaded, with a model card;
    anything else in the directory (``training_args.bin``, optimiser state) stays local.

    Args:
        adapter_dir: the saved adapter.
        repo_id: ``user/name`` or ``name`` (created if missing).
        results: the run's results (dict, ``results.json`` or its directory) for the card's error rates.
        condition: the LDV condition (default: ``results["condition"]``).
        datasets: Hub dataset id(s) of the training data.
        base_model, base_model_revision: replace the base reference in the uploaded ``config.json``, e.g. when
            the adapter was trained on a local copy of ``Qwen/Qwen2-Audio-7B-Instruct``.
        revision: branch to push to (created if missing; default: the default branch).
        private, token, commit_message, create_pr: as in ``HfApi.create_repo`` / ``HfApi.create_commit``.
        license, tags: the card's license identifier and extra tags.

    Returns:
        The ``CommitInfo`` of the commit that holds the weights and the code (``.oid`` is its hash).

    Raises:
        FileNotFoundError: ``adapter_dir`` lacks a file of :data:`ADAPTER_FILES`.
        ValueError: ``config.json`` is not a Qwen2-Audio LDV configuration.
    """
    adapter_dir = Path(adapter_dir)
    absent = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if absent:
        raise FileNotFoundError(f"{adapter_dir}: not an adapter-only checkpoint, missing {absent} "
                                f"(write one with model.save_pretrained(dir))")
    config = json.loads((adapter_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "qwen2_audio_ldv" or not config.get("auto_map"):
        raise ValueError(f"{adapter_dir}/config.json: expected model_type 'qwen2_audio_ldv' with an auto_map, got "
                         f"model_type {config.get('model_type')!r}")
    with tempfile.TemporaryDirectory(prefix="ldv_adapter_push_") as staging:
        staged = Path(staging)
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / name, staged / name)
        if base_model is not None or base_model_revision is not None:
            if base_model is not None:
                config["base_model_name_or_path"] = base_model
            if base_model_revision is not None:
                config["base_model_revision"] = base_model_revision
            (staged / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _warn_about_base(config.get("base_model_name_or_path"))
        card_kwargs = {"results": load_results(results), "condition": condition, "datasets": datasets,
                       "license": license, "tags": tags}
        return _push_folder(staged, repo_id, card_kwargs, revision, private, token, commit_message, create_pr)


def push_model(
    model: Any,
    repo_id: str,
    *,
    results: Mapping[str, Any] | str | os.PathLike | None = None,
    condition: str | None = None,
    datasets: str | Sequence[str] | None = None,
    adapter_name: str | None = None,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    license: str | None = "apache-2.0",
    tags: Sequence[str] | None = None,
):
    """Publish a loaded ``Qwen2AudioLDVForConditionalGeneration`` with this project's model card.

    ``model.push_to_hub`` is the stock transformers upload of the same ``save_pretrained`` folder, with the stock
    card; this function adds the card with the error-rate table, the base reference and the pinned snippet.

    The model is saved with ``save_pretrained`` (adapter-only when it has a base reference; the full model
    otherwise, which the card points out), then uploaded with a model card as in :func:`push_adapter`.

    Args:
        model: the model.
        repo_id: ``user/name`` or ``name``.
        adapter_name: which loaded adapter to publish (default: the active one).
        base_model, base_model_revision: the base reference to write (default: the model's own), e.g. the Hub id
            of the base when the model was loaded from a local copy; with it, a model without a reference is
            published adapter-only.
        results, condition, datasets, revision, private, token, commit_message, create_pr, license, tags: as in
            :func:`push_adapter`.

    Returns:
        The ``CommitInfo`` of the commit that holds the weights and the code.
    """
    config = model.config
    previous = (config.base_model_name_or_path, config.base_model_revision)
    with tempfile.TemporaryDirectory(prefix="ldv_adapter_push_") as staging:
        staged = Path(staging)
        try:
            if base_model is not None:
                config.base_model_name_or_path = base_model
            if base_model_revision is not None:
                config.base_model_revision = base_model_revision
            model.save_pretrained(staged, adapter_name=adapter_name)
        finally:
            config.base_model_name_or_path, config.base_model_revision = previous
        base = json.loads((staged / "config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        _warn_about_base(base)
        card_kwargs = {"results": load_results(results), "condition": condition, "datasets": datasets,
                       "license": license, "tags": tags}
        return _push_folder(staged, repo_id, card_kwargs, revision, private, token, commit_message, create_pr)


def _warn_about_base(base: str | None) -> None:
    if not base:
        logger.warning("no base model reference: uploading the full model; set model.config."
                       "base_model_name_or_path (or pass base_model=...) to publish the adapter alone")
    elif not is_hub_id(base):
        logger.warning("the base model %r is a local directory: others cannot load this adapter; pass "
                       "base_model=%r (or your base's Hub id)", base, _DEFAULT_BASE_HINT)


# ------------------------------------------------------------------------------------------------- tools' loader
def load_adapter_model(
    model_name_or_path: str,
    processor_name_or_path: str | None = None,
    revision: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    base_model_name_or_path: str | None = None,
):
    """Load an adapter (Hub repo or directory, adapter-only or full) and its processor, for the CLI tools.

    The model class comes from this package (no remote code runs). The processor comes from
    ``processor_name_or_path``, else from the adapter's base model (at its recorded revision), else from
    ``model_name_or_path`` itself.

    Args:
        model_name_or_path: the adapter.
        processor_name_or_path: where to load the processor from.
        revision: revision of the adapter repo.
        dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the checkpoint's).
        device: ``cpu``, ``cuda``, ``mps``, ... (default: ``cpu``).
        base_model_name_or_path: the base model (directory or Hub id) in place of the one the adapter records
            (``--base``): for an adapter whose base is elsewhere on this machine.

    Returns:
        ``(model, processor)``, the model in eval mode.

    Raises:
        OSError: the base is neither a directory nor loadable from the Hub (the message names what was tried).
    """
    import torch
    from transformers import AutoProcessor

    from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

    kwargs: dict[str, Any] = {}
    if revision is not None:
        kwargs["revision"] = revision
    if dtype is not None:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        kwargs["dtype"] = getattr(torch, dtype)
    if base_model_name_or_path is not None:
        kwargs["base_model_name_or_path"] = base_model_name_or_path
    model = Qwen2AudioLDVForConditionalGeneration.from_pretrained(model_name_or_path, **kwargs)
    if processor_name_or_path is not None:
        processor = AutoProcessor.from_pretrained(processor_name_or_path)
    elif model.config.base_model_name_or_path:
        processor = AutoProcessor.from_pretrained(model.config.base_model_name_or_path,
                                                  revision=model.config.base_model_revision)
    else:
        processor = AutoProcessor.from_pretrained(model_name_or_path, **({"revision": revision} if revision else {}))
    return model.to(device or "cpu").eval(), processor


__all__ = [
    "ADAPTER_FILES",
    "CARD_TAGS",
    "MODEL_CARD_TEMPLATE",
    "adapter_card",
    "eval_results_from",
    "is_hub_id",
    "load_adapter_model",
    "load_results",
    "push_adapter",
    "push_model",
]
