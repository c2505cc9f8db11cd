# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Results files and figures written at the end of a training or evaluation run.

The results dictionary has this shape (every part but ``eval`` is optional; ``eval`` may hold any set names,
e.g. a cross-condition set, and any model names per set)::

    {"base_model": "Qwen/Qwen2-Audio-7B-Instruct", "condition": "ldv_default",
     "adapter": {"preset": "mlp", "trainable_params": 1_234_567},
     "eval": {"ldv": {"baseline": {"cer": 0.31, "wer": 0.52}, "adapted": {"cer": 0.12, "wer": 0.25}},
              "mic": {"baseline": {"cer": 0.05, "wer": 0.09}, "adapted": {"cer": 0.05, "wer": 0.10}}},
     "gap_recovered": 0.73, "train_seconds": 812.4,
     "examples": [{"set": "ldv", "reference": "...", "baseline": "...", "adapted": "..."}]}

Error rates are fractions (0.12 = 12 %); the Markdown report and the figure show percentages.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .plots import new_figure, save_figure

#: Metric keys shown in the Markdown table and the bar chart, in this order.
ERROR_RATE_KEYS: tuple[str, ...] = ("cer", "wer")


def gap_recovered(ldv_baseline_cer: float, ldv_adapted_cer: float, mic_baseline_cer: float) -> float | None:
    """Fraction of the LDV-vs-microphone CER gap that the adapter closes.

    ``(ldv_baseline_cer - ldv_adapted_cer) / (ldv_baseline_cer - mic_baseline_cer)``: 0 means the adapter did
    not help, 1 means adapted LDV speech is recognised as well as microphone speech by the unadapted model,
    a negative value means the adapter made LDV recognition worse, and a value above 1 means adapted LDV beats
    the microphone baseline.

    Example: ``gap_recovered(0.6, 0.3, 0.1) == 0.6`` (0.3 of a 0.5 gap).

    Args:
        ldv_baseline_cer: CER of the unadapted model on LDV speech (fraction).
        ldv_adapted_cer: CER of the adapted model on LDV speech (fraction).
        mic_baseline_cer: CER of the unadapted model on the matching microphone speech (fraction).

    Returns:
        The fraction, or ``None`` when ``ldv_baseline_cer - mic_baseline_cer <= 0``: LDV speech is already
        recognised at least as well as microphone speech, so there is no gap to recover and the ratio would be
        undefined or meaningless.

    Raises:
        ValueError: an argument is not a finite number.
    """
    values = {
        "ldv_baseline_cer": ldv_baseline_cer,
        "ldv_adapted_cer": ldv_adapted_cer,
        "mic_baseline_cer": mic_baseline_cer,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    gap = ldv_baseline_cer - mic_baseline_cer
    if gap <= 0:
        return None
    return (ldv_baseline_cer - ldv_adapted_cer) / gap


def _gap_from_eval(results: Mapping[str, Any]) -> float | None:
    """:func:`gap_recovered` from ``results["eval"]`` when the ldv/mic baseline and ldv adapted CERs exist."""
    evaluation = results.get("eval") or {}
    try:
        ldv, mic = evaluation["ldv"], evaluation["mic"]
        return gap_recovered(ldv["baseline"]["cer"], ldv["adapted"]["cer"], mic["baseline"]["cer"])
    except (KeyError, TypeError, ValueError):
        return None


def _json_default(value: Any) -> Any:
    """Convert numpy / torch scalars (anything with ``.item()``) and paths for ``json.dump``."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"results value of type {type(value).__name__} is not JSON serialisable: {value!r}")


def _percent(value: Any) -> str:
    """A fraction as a percentage with one decimal (``0.1234`` -> ``"12.3"``); ``"n/a"`` when missing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.1f}"


def _cell(text: Any) -> str:
    """Text made safe for one Markdown table cell: ``|`` escaped, line breaks turned into spaces."""
    text = "" if text is None else str(text)
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def _error_rate_rows(results: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(set, model, scores)`` for every model of every set in ``results["eval"]``, in insertion order."""
    evaluation = results.get("eval")
    if not isinstance(evaluation, Mapping):
        raise ValueError("`results['eval']` must be a mapping {set: {model: {'cer': ..., 'wer': ...}}}")
    rows = []
    for set_name, models in evaluation.items():
        if not isinstance(models, Mapping):
            raise ValueError(f"`results['eval'][{set_name!r}]` must be a mapping {{model: scores}}, got {models!r}")
        for model_name, scores in models.items():
            if not isinstance(scores, Mapping):
                raise ValueError(
                    f"`results['eval'][{set_name!r}][{model_name!r}]` must be a mapping of scores, got {scores!r}"
                )
            rows.append((str(set_name), str(model_name), scores))
    return rows


def results_markdown(results: Mapping[str, Any]) -> str:
    """The human-readable Markdown report of a results dictionary (see the module docstring for its shape).

    A header with the run's metadata, a table with one row per (set, model) and CER / WER in percent with one
    decimal, the gap-recovered line, and an "Examples" table of reference / baseline / adapted transcripts.
    """
    lines = ["# Results", ""]
    adapter = results.get("adapter") or {}
    metadata = []
    if "base_model" in results:
        metadata.append(f"- Base model: `{results['base_model']}`")
    if "condition" in results:
        metadata.append(f"- Condition: `{results['condition']}`")
    if adapter:
        description = f"preset `{adapter['preset']}`" if "preset" in adapter else "custom"
        if isinstance(adapter.get("trainable_params"), int):
            description += f", {adapter['trainable_params']:,} trainable parameters"
        metadata.append(f"- Adapter: {description}")
    if isinstance(results.get("train_seconds"), (int, float)):
        metadata.append(f"- Training time: {results['train_seconds']:.1f} s")
    if metadata:
        lines += metadata + [""]

    lines += ["| Set | Model | CER (%) | WER (%) |", "|---|---|---:|---:|"]
    for set_name, model_name, scores in _error_rate_rows(results):
        rates = " | ".join(_percent(scores.get(key)) for key in ERROR_RATE_KEYS)
        lines.append(f"| {_cell(set_name)} | {_cell(model_name)} | {rates} |")
    lines.append("")

    gap = results["gap_recovered"] if "gap_recovered" in results else _gap_from_eval(results)
    if isinstance(gap, (int, float)) and not isinstance(gap, bool) and math.isfinite(gap):
        lines.append(f"Gap recovered (LDV vs microphone, CER): {_percent(gap)}%")
    else:
        lines.append("Gap recovered (LDV vs microphone, CER): n/a (no LDV-vs-microphone CER gap to recover)")
    real_gap = results.get("real_voice_gap_recovered")
    if "real_voice_gap_recovered" in results:
        lines.append("Gap recovered on the real-voice set (real_ldv vs real_mic, CER): "
                     + (f"{_percent(real_gap)}%" if isinstance(real_gap, (int, float)) else "n/a (no gap)"))
    for set_name, value in (results.get("gap_recovered_by_set") or {}).items():
        lines.append(f"Gap recovered on {_cell(set_name)} (vs the same utterances' microphone CER): "
                     + (f"{_percent(value)}%" if isinstance(value, (int, float)) else "n/a (no gap)"))

    examples = results.get("examples") or []
    if examples:
        lines += ["", "## Examples", "", "| Set | Reference | Baseline | Adapted |", "|---|---|---|---|"]
        for example in examples:
            cells = (_cell(example.get(key, "")) for key in ("set", "reference", "baseline", "adapted"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.json`` (the dictionary as given, indent 2) and ``results.md`` (:func:`results_markdown`).

    Args:
        results: the run's results (see the module docstring); numpy / torch scalars are stored as numbers.
        output_dir: directory to write into (created if missing).

    Returns:
        ``(json_path, md_path)``.
    """
    output_dir = Path(output_dir)
    markdown = results_markdown(results)  # validate before writing anything
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "results.json"
    md_path = output_dir / "results.md"
    json_path.write_text(
        json.dumps(results, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8"
    )
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def plot_error_rates(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bar chart of CER and WER (percent): one panel per metric, one group per set, one bar per model.

    Missing scores leave a gap in their group.

    Args:
        results: a results dictionary with an ``eval`` mapping (see the module docstring).
        path: PNG file to write (parent folders are created).

    Returns:
        The path of the PNG.

    Raises:
        ValueError: ``results["eval"]`` is missing, malformed or holds no scores.
    """
    import numpy as np

    rows = _error_rate_rows(results)
    if not any(isinstance(scores.get(key), (int, float)) for _, _, scores in rows for key in ERROR_RATE_KEYS):
        raise ValueError("`results['eval']` holds no CER or WER values to plot")
    sets = list(dict.fromkeys(set_name for set_name, _, _ in rows))
    models = list(dict.fromkeys(model_name for _, model_name, _ in rows))
    table = {(set_name, model_name): scores for set_name, model_name, scores in rows}

    fig = new_figure((max(6.0, 2.2 * len(sets) * len(ERROR_RATE_KEYS)), 4.0))
    axes = fig.subplots(1, len(ERROR_RATE_KEYS), squeeze=False)
    positions = np.arange(len(sets), dtype=np.float64)
    width = 0.8 / len(models)
    for ax, key in zip(axes[0], ERROR_RATE_KEYS):
        for index, model_name in enumerate(models):
            heights = []
            for set_name in sets:
                value = table.get((set_name, model_name), {}).get(key)
                valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                heights.append(100.0 * value if valid else np.nan)
            offsets = positions + (index - (len(models) - 1) / 2.0) * width
            bars = ax.bar(offsets, heights, width=width, label=model_name)
            labels = ["" if math.isnan(h) else f"{h:.1f}" for h in heights]
            ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
        ax.set_xticks(positions, sets)
        ax.set_ylabel(f"{key.upper()} (%)")
        ax.set_title(key.upper())
        ax.set_ylim(bottom=0.0)
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(title="model")
    title = " / ".join(str(results[key]) for key in ("base_model", "condition") if results.get(key))
    if title:
        fig.suptitle(title)

    return save_figure(fig, path)


def _series(log_history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the entries that carry both ``step`` and a finite numeric ``key``."""
    steps, values = [], []
    for entry in log_history:
        step, value = entry.get("step"), entry.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, value))
        if numeric and math.isfinite(value):
            steps.append(float(step))
            values.append(float(value))
    return steps, values


def plot_training_curves(log_history: list[dict], path: str | os.PathLike) -> Path:
    """Training loss (and eval loss, learning rate when logged) against optimizer step.

    Args:
        log_history: the Trainer's ``trainer.state.log_history``: dictionaries with ``step`` and any of
            ``loss``, ``eval_loss``, ``learning_rate``. Entries without ``step`` or without any of those keys
            (e.g. the final ``train_runtime`` summary) are skipped.
        path: PNG file to write (parent folders are created).

    Returns:
        The path of the PNG.

    Raises:
        ValueError: the history is empty or has no loss, eval loss or learning-rate entry with a step.
    """
    if not log_history:
        raise ValueError("`log_history` is empty: nothing to plot (was the Trainer run with logging enabled?)")
    train = _series(log_history, "loss")
    evaluation = _series(log_history, "eval_loss")
    learning_rate = _series(log_history, "learning_rate")
    has_loss = bool(train[0] or evaluation[0])
    if not has_loss and not learning_rate[0]:
        raise ValueError(
            f"none of the {len(log_history)} `log_history` entries has `step` with `loss`, `eval_loss` or "
            "`learning_rate`"
        )

    nrows = int(has_loss) + int(bool(learning_rate[0]))
    fig = new_figure((7.0, 3.0 * nrows + 0.5))
    axes = fig.subplots(nrows, 1, squeeze=False, sharex=True)
    row = 0
    if has_loss:
        ax = axes[row][0]
        if train[0]:
            # markers keep short histories (a single logged step) visible
            ax.plot(*train, label="train loss", linewidth=1.2, marker="." if len(train[0]) <= 50 else None)
        if evaluation[0]:
            ax.plot(*evaluation, label="eval loss", marker="o", linewidth=1.2)
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
        row += 1
    if learning_rate[0]:
        ax = axes[row][0]
        ax.plot(*learning_rate, color="tab:green", linewidth=1.2)
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("step")

    return save_figure(fig, path)
