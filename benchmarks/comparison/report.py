# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The comparison's table: per-row summaries over seeds, the Markdown report, the figure and the result files."""

import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_qwen2audio_ldv.evaluation.report import gap_recovered

from .rows import ORACLE_ROWS, REFERENCE_ROWS, ROW_BY_NAME


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample std (``None`` for one value) and the values themselves."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0, "values": values}
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std, "n": len(present), "values": values}


def summarise(runs: list[dict[str, Any]], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per row (in run order): mean/std over its seeds of every measured column.

    Gap recovered per run: ``(baseline LDV CER - run LDV CER) / (baseline LDV CER - baseline mic CER)``; share of
    the oracle: ``(baseline LDV CER - run LDV CER) / (baseline LDV CER - oracle LDV CER)``, the oracle's LDV CER
    being its mean over seeds (the first of :data:`ORACLE_ROWS` that ran); share of the ceiling: the same with the
    LDV CER of the first of :data:`REFERENCE_ROWS` that ran. Each is ``None`` when its denominator is not positive.
    """
    ldv0, mic0 = baseline["ldv_cer"], baseline["mic_cer"]
    oracle = []
    for name in ORACLE_ROWS:  # the strongest oracle that ran
        oracle = oracle or [r["ldv_cer"] for r in runs if r["row"] == name]
    oracle_cer = statistics.fmean(oracle) if oracle else None
    native = []
    for name in REFERENCE_ROWS:
        native = native or [r["ldv_cer"] for r in runs if r["row"] == name]
    ceiling_cer = statistics.fmean(native) if native else None
    summaries = []
    for name in dict.fromkeys(r["row"] for r in runs):
        mine = [r for r in runs if r["row"] == name]
        row = ROW_BY_NAME[name]
        gaps = [gap_recovered(ldv0, r["ldv_cer"], mic0) for r in mine]
        shares = [(ldv0 - r["ldv_cer"]) / (ldv0 - oracle_cer) if oracle_cer is not None and ldv0 - oracle_cer > 0
                  else None for r in mine]
        ceiling = [(ldv0 - r["ldv_cer"]) / (ldv0 - ceiling_cer) if ceiling_cer is not None and ldv0 - ceiling_cer > 0
                   else None for r in mine]
        summaries.append({
            "row": name, "label": row.label, "method": row.method, "objective": mine[0]["objective"],
            "seeds": [r["seed"] for r in mine],
            "trainable_params": mine[0]["trainable_params"], "checkpoint_bytes": mine[0]["checkpoint_bytes"],
            "train_seconds": _stats([r["train_seconds"] for r in mine]),
            "ldv_cer": _stats([r["ldv_cer"] for r in mine]), "ldv_wer": _stats([r["ldv_wer"] for r in mine]),
            "mic_cer": _stats([r["mic_cer"] for r in mine]), "mic_wer": _stats([r["mic_wer"] for r in mine]),
            "gap_recovered": _stats(gaps), "oracle_share": _stats(shares), "ceiling_share": _stats(ceiling),
            **_real_voice_summary(mine, baseline),
            "projector_preserved": all(r["projector_preserved"] for r in mine),
        })
    return summaries


def _real_voice_summary(mine: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    """Mean/std of a row's real-voice CERs and of its gap on the real-voice set (against the baseline's real-voice
    LDV and microphone CER), when the comparison scored that set."""
    if "real_ldv_cer" not in baseline or any("real_ldv_cer" not in r for r in mine):
        return {}
    gaps = [gap_recovered(baseline["real_ldv_cer"], r["real_ldv_cer"], baseline["real_mic_cer"]) for r in mine]
    return {"real_ldv_cer": _stats([r["real_ldv_cer"] for r in mine]),
            "real_mic_cer": _stats([r["real_mic_cer"] for r in mine]), "real_gap_recovered": _stats(gaps)}


def _fmt(stat: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean`` or ``mean ± std`` (times ``scale``), ``n/a`` when missing."""
    mean = stat.get("mean")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{scale * mean:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {scale * stat['std']:.{digits}f}"
    return text


BASELINE_KEYS = ("ldv_cer", "ldv_wer", "mic_cer", "mic_wer", "real_ldv_cer", "real_ldv_wer", "real_mic_cer",
                 "real_mic_wer")


def baseline_scores(baseline: dict[str, Any]) -> dict[str, Any]:
    """The baseline run's scores that the report and figure draw the gaps from (the real-voice set's when scored)."""
    return {k: baseline[k] for k in BASELINE_KEYS if k in baseline}


TABLE_HEADER = ("| Method | Trainable params | Checkpoint (bytes) | Train time (s) | LDV CER (%) | LDV WER (%) | "
                "Mic CER (%) | Mic WER (%) | Gap recovered (%) | Share of oracle (%) | Share of ceiling (%) | "
                "Projector preserved | Seeds |")


def results_markdown(results: dict[str, Any]) -> str:
    """The Markdown report: settings, the table (mean ± std over seeds where several ran) and notes."""
    settings = results["settings"]
    base = results["baseline"]
    lines = [
        "# Adaptation methods compared on the mini base", "",
        f"Base `{settings['base_model']}`, condition `{settings['condition']}`, "
        f"{results['data']['train_utterances']} training utterances ({settings['mic_fraction']:.0%} microphone "
        f"rows; texts: {', '.join(settings['text_kinds'])}), {results['data']['eval_utterances']} held-out "
        "utterances per eval set (unseen voices and texts). "
        f"Every row: {settings['max_steps']} steps of batch {settings['batch_size']}, AdamW lr "
        f"{settings['learning_rate']:g} ({settings['lr_scheduler_type']}, {settings['warmup_steps']} warm-up steps). "
        f"Adapter rows: objective `{settings['objective']}` unless named, dropout {settings['dropout']:g}, "
        f"`scale` lr {settings['scale_learning_rate']}. Projector, LoRA and oracle rows: objective `lm`.", "",
        f"Baseline (no adaptation): LDV CER {100 * base['ldv_cer']:.1f}%, microphone CER {100 * base['mic_cer']:.1f}%.",
        "", TABLE_HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in results["rows"]:
        seeds = ", ".join("-" if x is None else str(x) for x in s["seeds"])
        lines.append(
            f"| {s['label']} | {s['trainable_params']:,} | {s['checkpoint_bytes']:,} | {_fmt(s['train_seconds'], 1.0)}"
            f" | {_fmt(s['ldv_cer'])} | {_fmt(s['ldv_wer'])} | {_fmt(s['mic_cer'])} | {_fmt(s['mic_wer'])} | "
            f"{_fmt(s['gap_recovered'])} | {_fmt(s['oracle_share'])} | {_fmt(s.get('ceiling_share', {}))} | "
            f"{s['projector_preserved']} | {seeds} |")
    real_rows = [s for s in results["rows"] if "real_ldv_cer" in s]
    if real_rows and "real_ldv_cer" in base:
        lines += [
            "", "Real voices (the real-voice set: real speakers' microphone recordings and their simulated "
            f"`{settings['condition']}` LDV versions; no row trains on them). Baseline: LDV CER "
            f"{100 * base['real_ldv_cer']:.1f}%, microphone CER {100 * base['real_mic_cer']:.1f}%.", "",
            "| Method | real LDV CER (%) | real mic CER (%) | real-voice gap recovered (%) |", "|---|---:|---:|---:|",
        ]
        lines += [f"| {s['label']} | {_fmt(s['real_ldv_cer'])} | {_fmt(s['real_mic_cer'])} | "
                  f"{_fmt(s['real_gap_recovered'])} |" for s in real_rows]
    machine = results["machine"]
    lines += [
        "",
        "Mean ± sample standard deviation over the seeds listed; one seed: the value. Microphone columns have the "
        "adaptation applied. Gap recovered = (baseline LDV CER − LDV CER) / (baseline LDV CER − baseline mic CER); "
        "share of oracle = (baseline LDV CER − LDV CER) / (baseline LDV CER − oracle LDV CER), the oracle being the "
        "first of " + ", ".join(f"`{name}`" for name in ORACLE_ROWS) + " that ran; share of ceiling = the same "
        "against the first of " + ", ".join(f"`{name}`" for name in REFERENCE_ROWS) + " that ran (LDV-native "
        "mini models: the base's own build recipe on the condition's simulated LDV audio; `ldv_native_full` with "
        "every weight trained, Whisper-base's encoder included; `ldv_native` with that encoder frozen, as in the "
        "recipe). Checkpoint = "
        "safetensors file of the trainable weights (float32). Train time excludes the shared feature cache "
        f"({results['data']['seconds']:.0f} s for synthesis and caching, once).",
        "",
        f"The standard row is scale init 0.1, zero-init on, gate on, no position encoding, objective "
        f"`{settings['objective']}`: the ablations change one of these each. Transformer shapes at d_model "
        f"{results['d_model']}: " + "; ".join(
            f"{k} {v['num_layers']} layer(s) / {v['num_heads']} heads / ff {v['ff_dim']}"
            for k, v in results["transformer_shapes"].items()) +
        f"; MLP bottleneck {results['mlp_bottleneck']}. LoRA: r {settings['lora_r']}, alpha {settings['lora_alpha']} "
        "(projector preserved: the frozen base weights are unchanged; the low-rank update is added on top).",
        "",
        f"Machine: {machine['cpu_count']} CPU cores ({machine['processor']}), {machine['device']}, "
        f"{settings['num_threads']} torch thread(s), torch {machine['torch']}, transformers {machine['transformers']}, "
        f"peft {machine['peft']}. Wall time {results['wall_seconds'] / 60:.1f} min"
        + ("." if results["complete"] else f"; INCOMPLETE: {results.get('note', 'interrupted')}."),
    ]
    trained = [r for r in results["runs"] if r.get("seed") is not None]
    resumed = [r for r in trained if r.get("resumed_from")]
    if resumed:
        sources = ", ".join(f"`{p}`" for p in dict.fromkeys(r["resumed_from"] for r in resumed))
        lines[-1] += (f" {len(resumed)} of the {len(trained)} trained runs were taken from earlier invocations with "
                      f"the same settings (`resume_from`: {sources}), their train times as measured then; the wall "
                      "time is this invocation's.")
    return "\n".join(lines) + "\n"


def plot_comparison(results: dict[str, Any], path: Path) -> Path:
    """Two panels: LDV and microphone CER per row (error bars = std over seeds, dashed lines = the baseline's), and
    each method's gap recovered against its trainable parameters (log scale; the ablations are left out there)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = results["rows"]
    base = results["baseline"]
    real = "real_ldv_cer" in base and any("real_ldv_cer" in r for r in rows)
    fig = Figure(figsize=(20 if real else 14, max(4.5, 0.42 * len(rows) + 1.5)), layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 3 if real else 2, width_ratios=[1.3, 0.7, 1] if real else [1.3, 1])
    left, right = panels[0], panels[-1]
    y = np.arange(len(rows))
    _cer_bars(left, rows, base, ("ldv_cer", "mic_cer"), ("LDV", "microphone"))
    left.set_yticks(y, [r["label"] for r in rows])
    left.set_xlabel("CER (%) with the adaptation applied")
    if real:  # the real-voice set: the same rows, real speakers' recordings
        middle = panels[1]
        _cer_bars(middle, rows, base, ("real_ldv_cer", "real_mic_cer"), ("real-voice LDV", "real-voice microphone"))
        middle.set_yticks(y, [""] * len(rows))
        middle.set_xlabel("real voices: CER (%)")
    for r in rows:  # methods only: the ablations share the standard adapter's size and would pile up
        gap = r["gap_recovered"]
        if r["trainable_params"] > 0 and gap["mean"] is not None and not r["row"].startswith("standard_"):
            right.errorbar(r["trainable_params"], 100 * gap["mean"], yerr=100 * (gap["std"] or 0.0), fmt="o",
                           capsize=3)
            right.annotate(r["label"], (r["trainable_params"], 100 * gap["mean"]), fontsize=7,
                           textcoords="offset points", xytext=(4, 3))
    right.set_xscale("log")
    right.margins(x=0.25)
    right.set_xlabel("trainable parameters")
    right.set_ylabel("LDV gap recovered (%)")
    right.set_title("methods: recovery against size (ablations: left)", fontsize=10)
    right.axhline(0, color="grey", linewidth=0.8)
    right.grid(True, alpha=0.3)
    fig.suptitle(f"{results['settings']['base_model']} / {results['settings']['condition']}: "
                 f"{results['settings']['max_steps']} steps per row")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _cer_bars(axis, rows: list[dict[str, Any]], base: dict[str, Any], keys: tuple[str, str],
              labels: tuple[str, str]) -> None:
    """Two bars per row (``keys``' means, std as error bars) and each key's baseline as a dashed line."""
    for offset, key, label, colour in zip((-0.2, 0.2), keys, labels, ("tab:red", "tab:blue")):
        stats = [r.get(key) or {"mean": None, "std": None} for r in rows]
        means = [100 * (v["mean"] if v["mean"] is not None else np.nan) for v in stats]
        errors = [100 * (v["std"] or 0.0) for v in stats]
        axis.barh(np.arange(len(rows)) + offset, means, height=0.4, xerr=errors, color=colour, label=f"{label} CER")
        axis.axvline(100 * base[key], color=colour, linestyle="--", linewidth=1)
    axis.invert_yaxis()
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(0.0, -0.08), ncols=2, fontsize=8)


def write_outputs(results: dict[str, Any], output_dir: str) -> dict[str, Path]:
    """Write ``compare_methods.json``, ``.md`` and ``.png`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare_methods.json", "md": out / "compare_methods.md",
             "png": out / "compare_methods.png"}
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(results_markdown(results), encoding="utf-8")
    plot_comparison(results, paths["png"])
    return paths


def machine_info() -> dict[str, Any]:
    """Where the figures came from."""
    import peft
    import transformers

    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "no GPU"
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(), "device": device, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}
