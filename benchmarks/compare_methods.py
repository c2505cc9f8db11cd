"""Ways to adapt Qwen2-Audio to LDV speech, side by side on the mini base: the guide's comparison table, measured.

    python benchmarks/compare_methods.py configuration/recipes/compare_methods.yaml [--key value ...]

Every row trains on the same data (the demo corpus: LDV rows with a ``mic_fraction`` share of microphone rows)
for the same number of optimiser steps, batch size and schedule, and is scored by greedy transcription of the
same held-out LDV and microphone sets. Rows:

- ``baseline``: no adaptation (the mini base as it is).
- ``oracle_full_finetune``: every weight of the base (tower, projector, LLM) fine-tuned on the same rows with
  the transcript loss. Not a method (it destroys the base's alignment and needs a copy of the whole model per
  surface), but the ceiling that each method's recovery is measured against.
- ``projector``: the projector's weights trained (``lm``), the rest frozen.
- ``lora_projector``: PEFT ``LoraConfig(target_modules=["multi_modal_projector.linear"], r=16)`` (``lm``).
- ``mlp_adapter``: the per-frame bottleneck adapter, bottleneck ``d_model / 4``.
- ``transformer_lightweight`` / ``transformer_standard`` / ``transformer_heavy``: the guide's three presets
  scaled to the encoder's width (:func:`transformer_shapes`).
- ablations of ``transformer_standard``: no gate, with position encoding, ``scale_init`` 0.01 and 0.5 (the
  standard row is 0.1), zero-init off (the standard row is on), and the ``lm`` and ``distill`` objectives (the
  standard row trains with the recipe's objective: the committed recipe's is ``distill``, the demo's).
- ``lora_in_tower_from_K``: the demo's adapter type, peft LoRA (rank 8, alpha 16) on the frozen tower's attention
  and feed-forward projections of layers ``K`` to the last (``K`` 0-2).
- levers on the lightweight adapter (zero-init off unless named): ``lightweight_in_encoder_K`` inside the frozen
  tower after ``K`` of its layers (0-6), with zero-init, with 0% or 50% microphone rows, with 2x steps, with a
  distillation warm-up (``distill_warmup_steps``); ``lightweight_in_encoder_2_regularised`` after layer 2 with
  adapter dropout 0.1 and distillation weight 4 (the previous demo's recipe); ``lightweight_no_zero_init`` and
  ``lightweight_distill_warmup`` after the tower.
- references: ``ldv_native`` scores a model built apart on LDV audio (``--ldv_native_base``, from
  ``build-mini-base --train-condition``: the base's recipe, its encoder frozen) on the same sets;
  ``ldv_native_full`` one with every weight, the encoder included, trained on LDV audio (``--ldv_native_full_base``,
  from ``build-mini-base --train-condition --train-encoder``): the ceiling of every row when present;
  ``oracle_full_finetune_4x`` is the whole-base oracle at four times the steps; ``oracle_after_tower`` (and
  ``_4x``) fine-tunes the projector and LLM on the cached tower outputs (``lm``).

Adapter rows train with the recipe's ``objective`` (the demo's ``distill``) unless the row says otherwise; the
projector, LoRA and oracle rows can only take the transcript loss (``lm``): distillation targets the tower's
output, which those rows do not change. ``transformer_standard_lm`` is the like-for-like adapter row for them.

Columns: trainable parameters; checkpoint size (bytes of a safetensors file of the trainable weights, float32);
training time (``Trainer.train`` wall time; the shared feature cache is built once, before any row, and not
counted); LDV and microphone CER/WER with the adaptation applied to both; gap recovered
(``(ldv_baseline_cer - ldv_cer) / (ldv_baseline_cer - mic_baseline_cer)``); share of the oracle's recovery
(``(ldv_baseline_cer - ldv_cer) / (ldv_baseline_cer - oracle_ldv_cer)``); and whether the projector's weights
are bit-identical to the base's after training (for LoRA: the frozen base weights under the low-rank update).

Rows run once with the first seed; then ``reference_row`` (the recipe's: the demo's adapter) and the
``closest_competitors`` rows nearest to it in LDV CER run again with each of ``extra_seeds``; those rows report
mean and sample std over seeds. With ``time_budget_minutes``, an extra-seed run that would end past the budget is
skipped and listed. Results are
rewritten after every run, so an interrupted comparison leaves a table of what finished, and ``resume_from``
takes the runs of earlier result files whose settings match (see :func:`comparison.resume.resumable_runs`)
instead of training them again: a long comparison can be run in pieces, or its rows split over processes and joined.

The pieces live in ``benchmarks/comparison/``: ``rows.py`` (the row table: add a row there), ``arguments.py`` (the
settings), ``runs.py`` (the shared data and one run's training and scores), ``report.py`` (summaries, table,
figure), ``resume.py`` (which earlier runs count); this script plans and runs them.
"""

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from comparison.arguments import CompareArguments, parse_arguments  # noqa: E402
from comparison.report import baseline_scores, machine_info, results_markdown, summarise, write_outputs  # noqa: E402
from comparison.resume import resumable_runs  # noqa: E402
from comparison.rows import (  # noqa: E402
    NOT_COMPETITORS,
    REFERENCE_BASES,
    REFERENCE_ROWS,
    ROW_BY_NAME,
    STANDARD,
    Row,
    transformer_shapes,
)
from comparison.runs import (  # noqa: E402
    ComparisonData,
    build_data,
    encoder_width,
    evaluate_baseline,
    projector_state,
    train_and_evaluate,
)
from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration  # noqa: E402
from modeling_qwen2audio_ldv.training.arguments import resolve_base  # noqa: E402

logger = logging.getLogger("compare_methods")

RUN_OVERHEAD_SECONDS = 5.0  # model load, checkpoint write and result files around one run


def closest_rows(runs: list[dict[str, Any]], count: int, reference: str = STANDARD) -> list[str]:
    """The ``count`` rows (not baseline, a reference, an oracle or ``reference``) nearest ``reference`` in LDV CER."""
    standard = [r["ldv_cer"] for r in runs if r["row"] == reference]
    if not standard or count == 0:
        return []
    candidates = {r["row"]: abs(r["ldv_cer"] - standard[0]) for r in runs
                  if r["row"] not in (reference, *NOT_COMPETITORS)}
    return sorted(candidates, key=candidates.get)[:count]


def reference_runs(args: CompareArguments, processor, data: ComparisonData) -> list[dict[str, Any]]:
    """The reference rows asked for (``ldv_native``, ``ldv_native_full``): models built apart, scored on the same
    sets; a row whose model is not given is skipped with the command that builds it."""
    runs = []
    for name in (n for n in args.rows if n in REFERENCE_ROWS):
        argument, flags = REFERENCE_BASES[name]
        if getattr(args, argument):
            runs.append(evaluate_baseline(resolve_base(getattr(args, argument), REPO), processor, data, args,
                                          row=name))
        else:
            logger.warning("row %s skipped: set --%s (ldv-qwen2audio build-mini-base --output DIR --train-condition "
                           "%s%s)", name, argument, args.condition, flags)
    return runs


def extra_seed_runs(args: CompareArguments, runs: list[dict[str, Any]], run, resumed: dict, wall_start: float,
                    publish) -> list[dict[str, Any]]:
    """The reference row and its closest competitors again with each extra seed (appended to ``runs``, results
    published after each); a run that would end past the time budget is skipped. Returns the skipped runs."""
    skipped: list[dict[str, Any]] = []
    if not (args.multi_seed and args.extra_seeds and args.reference_row in args.rows):
        return skipped
    again = [args.reference_row, *closest_rows(runs, args.closest_competitors, args.reference_row)]
    logger.info("extra seeds %s for %s", args.extra_seeds, again)
    for seed in args.extra_seeds:
        for name in again:
            first = next(r for r in runs if r["row"] == name)
            expected = first["train_seconds"] + first["eval_seconds"] + RUN_OVERHEAD_SECONDS
            elapsed = time.perf_counter() - wall_start
            if (name, seed) not in resumed and args.time_budget_minutes and (
                    elapsed + expected > 60 * args.time_budget_minutes):
                logger.warning("skipping %s seed %d: ~%.0f s more would pass the %.0f min budget (%.0f s used)",
                               name, seed, expected, args.time_budget_minutes, elapsed)
                skipped.append({"row": name, "seed": seed, "reason": "time budget"})
                continue
            runs.append(run(ROW_BY_NAME[name], seed))
            publish(complete=False, note="running")
    return skipped


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # 1. Arguments, logging, threads.
    args, recipe = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    torch.set_num_threads(args.num_threads)
    logger.info("recipe %s; rows %s; seeds %s (+%s for %s and %d closest)", recipe, args.rows,
                args.seeds, args.extra_seeds, args.reference_row, args.closest_competitors)
    wall_start = time.perf_counter()
    base = resolve_base(args.base_model, REPO)
    processor = AutoProcessor.from_pretrained(base)
    d_model = encoder_width(base)

    # 2. Data and the shared feature cache; the baseline's scores (every gap is measured from them).
    data = build_data(args, base, processor)
    baseline = evaluate_baseline(base, processor, data, args)
    base_projector = projector_state(Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig(adapter_type="none")))
    runs: list[dict[str, Any]] = [baseline] if "baseline" in args.rows else []
    runs += reference_runs(args, processor, data)
    resumed = resumable_runs(args.resume_from, args, baseline, d_model)

    def run(row: Row, seed: int) -> dict[str, Any]:
        if (row.name, seed) in resumed:
            logger.info("%s seed %d: taken from %s", row.name, seed, resumed[(row.name, seed)]["resumed_from"])
            return resumed[(row.name, seed)]
        return train_and_evaluate(row, seed, base, processor, data, base_projector, args)
    results: dict[str, Any] = {
        "settings": asdict(args), "recipe": str(recipe), "machine": machine_info(), "d_model": d_model,
        "transformer_shapes": transformer_shapes(d_model), "mlp_bottleneck": max(1, d_model // 4),
        "data": {"train_utterances": len(data.texts), "eval_utterances": len(data.eval_sets["ldv"]["text"]),
                 "seconds": round(data.seconds, 1)},
        "baseline": baseline_scores(baseline),
    }

    def publish(complete: bool, note: str | None = None) -> dict[str, Path]:
        results.update(rows=summarise(runs, baseline), runs=runs, complete=complete,
                       wall_seconds=round(time.perf_counter() - wall_start, 1))
        if note:
            results["note"] = note
        return write_outputs(results, args.output_dir)

    # 3. Every row with the first seed(s); then the standard row and its closest competitors with more seeds.
    trained = [ROW_BY_NAME[name] for name in args.rows if name not in ("baseline", *REFERENCE_ROWS)]
    for row, seed in [(row, seed) for seed in args.seeds for row in trained]:
        runs.append(run(row, seed))
        publish(complete=False, note="running")
    skipped = extra_seed_runs(args, runs, run, resumed, wall_start, publish)

    # 4. The final table.
    results.pop("note", None)
    results["skipped_runs"] = skipped
    paths = publish(complete=not skipped, note=f"{len(skipped)} extra-seed run(s) skipped for the time budget"
                    if skipped else None)
    logger.info("wrote %s (%.1f min)", ", ".join(map(str, paths.values())), results["wall_seconds"] / 60)
    print(results_markdown(results))
    return results


if __name__ == "__main__":
    main()
