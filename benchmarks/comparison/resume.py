# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Resuming a comparison: which runs of earlier result files (``resume_from``) this one would repeat."""

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .arguments import CompareArguments
from .rows import ROW_BY_NAME, Row, adapter_config_for, row_objective

logger = logging.getLogger(__name__)


#: settings that change no run's result: where results go, which rows and seeds run, and how many extra seeds
NON_RUN_SETTINGS = ("output_dir", "work_dir", "rows", "seeds", "multi_seed", "reference_row", "ldv_native_base",
                    "ldv_native_full_base", "extra_seeds", "closest_competitors", "time_budget_minutes", "resume_from")


def run_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings (of :class:`CompareArguments`, as a dict) that a trained run's result depends on."""
    return {k: v for k, v in settings.items() if k not in NON_RUN_SETTINGS}


#: JSON of the defaults of Row's optional fields (a record written before a field existed stands for its default)
ROW_FIELD_DEFAULTS = json.loads(json.dumps({f.name: f.default for f in fields(Row)
                                            if f.name not in ("name", "label", "method")}))


def row_spec(row: Row) -> dict[str, Any]:
    """``row``'s definition as JSON stores it (the label left out: wording only)."""
    spec = json.loads(json.dumps(asdict(row)))
    spec.pop("label")
    return spec


def resumable_runs(paths: list[str], args: CompareArguments, baseline: dict[str, Any],
                   d_model: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Trained runs of earlier result files (``compare_methods.json``) that this comparison would repeat.

    A file counts only when its run settings (:func:`run_settings`: everything but where results go and which
    rows and seeds run) equal this comparison's and its baseline scored the same eval sets identically (the same
    base, data and machine arithmetic). Of its runs, one counts when its row still exists with the same
    definition (its recorded ``row_spec``; for records written before that was kept, the adapter configuration
    and the objective) and its seed is set. A later file wins over an earlier one for the same (row, seed).
    Anything left out is logged with the reason.
    """
    mine = run_settings(asdict(args))
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        try:
            earlier = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"resume_from {path}: not a readable compare_methods.json ({error})") from error
        if not isinstance(earlier, dict) or not isinstance(earlier.get("runs"), list):
            raise ValueError(f"resume_from {path}: expected a compare_methods.json with a `runs` list")
        theirs = run_settings(earlier.get("settings", {}))
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            logger.warning("resume_from %s: not used, its settings differ in %s", path,
                           ", ".join(f"{k} ({theirs.get(k)!r} there, {mine.get(k)!r} here)" for k in differ))
            continue
        keys = ("ldv_cer", "ldv_wer", "mic_cer", "mic_wer")
        if any(earlier.get("baseline", {}).get(k) != baseline[k] for k in keys):
            logger.warning("resume_from %s: not used, its baseline scores %s differ from this run's %s (other data, "
                           "base or arithmetic)", path, {k: earlier.get("baseline", {}).get(k) for k in keys},
                           {k: baseline[k] for k in keys})
            continue
        for record in earlier["runs"]:
            name, seed = record.get("row"), record.get("seed")
            if seed is None:  # the baseline and the reference models are scored afresh
                continue
            row = ROW_BY_NAME.get(name)
            if row is None:
                logger.warning("resume_from %s: run %s seed %s left out: no such row now", path, name, seed)
                continue
            if "row_spec" in record:  # a field added to Row since then takes its default
                same = {**ROW_FIELD_DEFAULTS, **record["row_spec"]} == row_spec(row)
            else:
                same = record.get("objective") == row_objective(row, args) and (
                    row.method != "adapter"
                    or record.get("adapter_config") == adapter_config_for(row, d_model, args).to_dict())
            if not same:
                logger.warning("resume_from %s: run %s seed %s left out: the row's definition changed", path, name,
                               seed)
                continue
            found[(name, seed)] = {"resumed_from": str(path), **record}  # a run resumed before keeps its source
    if paths:
        logger.info("resume_from: %d run(s) taken from %s", len(found), ", ".join(map(str, paths)))
    return found
