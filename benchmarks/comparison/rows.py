# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The comparison's rows: one :class:`Row` per method or ablation in :data:`ROWS`, and what each row trains.

Adding a row: one line in :data:`ROWS` (a new ``method`` also needs its training set-up in
:func:`comparison.runs.prepare_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modeling_qwen2audio_ldv import DomainAdapterConfig

if TYPE_CHECKING:
    from .arguments import CompareArguments


@dataclass(frozen=True)
class Row:
    """One line of the table: a method and its settings.

    Attributes:
        name: key used in ``rows`` and the JSON.
        label: the table's wording.
        method: ``baseline``, ``oracle``, ``projector``, ``lora`` or ``adapter``.
        adapter: for ``adapter`` rows, :class:`DomainAdapterConfig` fields on top of the scaled preset.
        preset: ``lightweight``, ``standard``, ``heavy``, ``mlp`` or ``lora`` (adapter rows).
        objective: training objective; ``None`` = the recipe's ``objective`` (adapter rows) or ``lm``.
        mic_fraction: share of microphone rows for this row (``None``: the recipe's ``mic_fraction``).
        steps_factor: this row trains ``steps_factor`` times the recipe's ``max_steps``.
        distill_warmup_factor: the first ``distill_warmup_factor`` times ``max_steps`` of them train on the
            distillation loss alone (``distill_warmup_steps``: no LLM forward, cheap steps).
        distill_weight: the weight of ``distill`` in ``lm+distill`` for this row (``None``: the recipe's).
        tower_learning_rate: peak rate of the audio tower's weights when the row trains them (the whole-base
            oracle); ``None``: the recipe's ``learning_rate`` like every other weight.
    """

    name: str
    label: str
    method: str
    preset: str | None = None
    adapter: tuple[tuple[str, Any], ...] = ()
    objective: str | None = None
    mic_fraction: float | None = None  # None: the recipe's
    steps_factor: int = 1  # a multiple of the recipe's max_steps
    distill_warmup_factor: int = 0  # the first (this x max_steps) steps train on distill alone
    distill_weight: float | None = None  # None: the recipe's
    tower_learning_rate: float | None = None  # None: the recipe's learning_rate


#: the whole-base oracle's rate for the pretrained Whisper-base tower: the LDV-native ceiling build's encoder rate
#: (``build-mini-base --encoder-learning-rate``); the recipe's 2e-3, meant for adapters and the from-scratch decoder,
#: would overwrite what the tower learnt in pre-training
ORACLE_TOWER_LR = 1e-4

ROWS: tuple[Row, ...] = (
    Row("baseline", "No adaptation (baseline)", "baseline"),
    Row("ldv_native", "Reference: LDV-native mini model, encoder frozen (the base's recipe on LDV audio)",
        "reference"),
    Row("ldv_native_full", "Ceiling: LDV-native mini model, every weight (the encoder too) trained on LDV audio",
        "reference"),
    Row("oracle_full_finetune", "Oracle: fine-tune the whole base (tower lr 1e-4)", "oracle",
        tower_learning_rate=ORACLE_TOWER_LR),
    Row("oracle_full_finetune_4x", "Oracle: fine-tune the whole base (tower lr 1e-4), 4x steps", "oracle",
        steps_factor=4, tower_learning_rate=ORACLE_TOWER_LR),
    Row("oracle_after_tower", "Oracle: fine-tune projector + LLM (tower frozen)", "oracle_after_tower"),
    Row("oracle_after_tower_4x", "Oracle: fine-tune projector + LLM, 4x steps", "oracle_after_tower",
        steps_factor=4),
    Row("projector", "Train the projector", "projector"),
    Row("lora_projector", "LoRA on the projector", "lora"),
    Row("mlp_adapter", "MLP adapter", "adapter", "mlp"),
    Row("transformer_lightweight", "Transformer adapter, lightweight", "adapter", "lightweight"),
    Row("transformer_standard", "Transformer adapter, standard", "adapter", "standard"),
    Row("transformer_heavy", "Transformer adapter, heavy", "adapter", "heavy"),
    Row("standard_no_gate", "standard, no gate", "adapter", "standard", (("use_gate", False),)),
    Row("standard_position_encoding", "standard, with position encoding", "adapter", "standard",
        (("use_position_encoding", True),)),
    Row("standard_scale_0.01", "standard, scale init 0.01", "adapter", "standard", (("scale_init", 0.01),)),
    Row("standard_scale_0.5", "standard, scale init 0.5", "adapter", "standard", (("scale_init", 0.5),)),
    Row("standard_no_zero_init", "standard, zero-init off", "adapter", "standard", (("zero_init", False),)),
    Row("standard_objective_lm", "standard, objective lm", "adapter", "standard", objective="lm"),
    Row("standard_objective_distill", "standard, objective distill", "adapter", "standard", objective="distill"),
    # levers on the lightweight adapter: where it sits, its initialisation, the share of microphone rows
    # (zero-init off unless named: the demo's choice)
    Row("lightweight_no_zero_init", "lightweight, zero-init off", "adapter", "lightweight", (("zero_init", False),)),
    *(Row(f"lightweight_in_encoder_{k}", f"lightweight, inside the tower after layer {k}", "adapter", "lightweight",
          (("encoder_layer", k), ("zero_init", False))) for k in (0, 1, 2, 3, 4, 5, 6)),
    # LoRA (peft) on the tower's q/k/v/out and fc1/fc2 projections of layers k.. instead of a module between layers
    *(Row(f"lora_in_tower_from_{k}", f"LoRA (rank 8) on the tower's projections, layers {k}-5", "adapter", "lora",
          (("encoder_layer", k), ("zero_init", True))) for k in (0, 2)),
    Row("lightweight_in_encoder_2_regularised", "lightweight inside after layer 2, dropout 0.1, distill weight 4",
        "adapter", "lightweight", (("encoder_layer", 2), ("zero_init", False), ("dropout", 0.1)), distill_weight=4.0),
    Row("lightweight_in_encoder_4_zero_init", "lightweight inside after layer 4, zero-init on", "adapter",
        "lightweight", (("encoder_layer", 4), ("zero_init", True))),
    Row("lightweight_in_encoder_4_mic_0", "lightweight inside after layer 4, no microphone rows", "adapter",
        "lightweight", (("encoder_layer", 4), ("zero_init", False)), mic_fraction=0.0),
    Row("lightweight_in_encoder_4_mic_0.5", "lightweight inside after layer 4, 50% microphone rows", "adapter",
        "lightweight", (("encoder_layer", 4), ("zero_init", False)), mic_fraction=0.5),
    Row("lightweight_in_encoder_4_2x", "lightweight inside after layer 4, 2x steps", "adapter", "lightweight",
        (("encoder_layer", 4), ("zero_init", False)), steps_factor=2),
    Row("lightweight_in_encoder_4_distill_warmup", "lightweight inside after layer 4, distill warm-up (1x) + 1x",
        "adapter", "lightweight", (("encoder_layer", 4), ("zero_init", False)), steps_factor=2,
        distill_warmup_factor=1),
    Row("lightweight_distill_warmup", "lightweight, zero-init off, distill warm-up (1x) + 1x", "adapter",
        "lightweight", (("zero_init", False),), steps_factor=2, distill_warmup_factor=1),
)
ROW_NAMES: tuple[str, ...] = tuple(row.name for row in ROWS)
ROW_BY_NAME: dict[str, Row] = {row.name: row for row in ROWS}
STANDARD = "transformer_standard"
ORACLE_ROWS = ("oracle_full_finetune_4x", "oracle_full_finetune", "oracle_after_tower_4x", "oracle_after_tower")
REFERENCE_ROWS = ("ldv_native_full", "ldv_native")  # the first that ran is the ceiling
#: each reference row's model argument and the build-mini-base flags that make that model
REFERENCE_BASES = {"ldv_native": ("ldv_native_base", ""),
                   "ldv_native_full": ("ldv_native_full_base", " --train-encoder")}
NOT_COMPETITORS = ("baseline", *REFERENCE_ROWS, *ORACLE_ROWS)


def transformer_shapes(d_model: int) -> dict[str, dict[str, int]]:
    """The guide's transformer presets scaled to an encoder of width ``d_model``.

    At d_model 1280 the presets are 1/2/4 layers, 4/8/16 heads, ff 1024/2048/4096. Scaled: layers kept
    (1/2/4), heads 4/4/8 (head width 32/32/16 at d_model 128, where 16 heads would leave 8 channels each),
    ff 2x/4x/8x ``d_model`` (256/512/1024 at 128: the demo's standard adapter uses 4x, and the 1:2:4 ff ratio of
    the presets is kept). At d_model 128 this gives about 0.2M / 0.43M / 1.3M parameters.
    """
    return {
        "lightweight": {"num_layers": 1, "num_heads": 4, "ff_dim": 2 * d_model},
        "standard": {"num_layers": 2, "num_heads": 4, "ff_dim": 4 * d_model},
        "heavy": {"num_layers": 4, "num_heads": 8, "ff_dim": 8 * d_model},
    }


def adapter_config_for(row: Row, d_model: int, args: CompareArguments) -> DomainAdapterConfig:
    """The adapter configuration of ``row`` (``adapter_type="none"`` for the rows that are not adapters).

    The MLP adapter's bottleneck is ``d_model / 4`` (32 at 128; the guide's 256 at 1280 is a fifth), which keeps
    its size near 1/50 of the standard adapter's, as the guide's 0.66M vs 27M.
    """
    if row.method != "adapter":
        return DomainAdapterConfig(adapter_type="none")
    if row.preset == "lora":  # peft's defaults: rank 8, alpha 16, all six projections
        return DomainAdapterConfig(adapter_type="lora", **{"dropout": args.dropout, **dict(row.adapter)})
    shape = {"bottleneck_dim": max(1, d_model // 4)} if row.preset == "mlp" else transformer_shapes(d_model)[row.preset]
    # a row's own settings (e.g. its dropout) win over the recipe's
    return DomainAdapterConfig.preset(row.preset, **{**shape, "dropout": args.dropout, **dict(row.adapter)})


def row_objective(row: Row, args: CompareArguments) -> str:
    """The objective ``row`` trains with."""
    if row.objective is not None:
        return row.objective
    return args.objective if row.method == "adapter" else "lm"
