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
  standard row trains with ``lm+distill``, the demo's objective).
- levers on the lightweight adapter (zero-init off unless named): ``lightweight_in_encoder_K`` inside the frozen
  tower after ``K`` of its layers (2-6), with zero-init, with 0% or 50% microphone rows, with 2x steps, with a
  distillation warm-up (``distill_warmup_steps``); ``lightweight_in_encoder_2_regularised`` after layer 2 with
  adapter dropout 0.1 and distillation weight 4 (the demo's recipe); ``lightweight_no_zero_init`` and ``lightweight_distill_warmup``
  after the tower.
- references: ``ldv_native`` scores a model built apart on LDV audio (``--ldv_native_base``, from
  ``build-mini-base --train-condition``: the base's recipe, its encoder frozen) on the same sets;
  ``ldv_native_full`` one with every weight, the encoder included, trained on LDV audio (``--ldv_native_full_base``,
  from ``build-mini-base --train-condition --train-encoder``): the ceiling of every row when present;
  ``oracle_full_finetune_4x`` is the whole-base oracle at four times the steps; ``oracle_after_tower`` (and
  ``_4x``) fine-tunes the projector and LLM on the cached tower outputs (``lm``).

Adapter rows train with the recipe's ``objective`` (the demo's ``lm+distill``) unless the row says otherwise; the
projector, LoRA and oracle rows can only take the transcript loss (``lm``): distillation targets the tower's
output, which those rows do not change. ``transformer_standard_lm`` is the like-for-like adapter row for them.

Columns: trainable parameters; checkpoint size (bytes of a safetensors file of the trainable weights, float32);
training time (``Trainer.train`` wall time; the shared feature cache is built once, before any row, and not
counted); LDV and microphone CER/WER with the adaptation applied to both; gap recovered
(``(ldv_baseline_cer - ldv_cer) / (ldv_baseline_cer - mic_baseline_cer)``); share of the oracle's recovery
(``(ldv_baseline_cer - ldv_cer) / (ldv_baseline_cer - oracle_ldv_cer)``); and whether the projector's weights
are bit-identical to the base's after training (for LoRA: the frozen base weights under the low-rank update).

Rows run once with the first seed; then ``transformer_standard`` and the ``closest_competitors`` rows nearest
to it in LDV CER run again with each of ``extra_seeds``; those rows report mean and sample std over seeds. With
``time_budget_minutes``, an extra-seed run that would end past the budget is skipped and listed. Results are
rewritten after every run, so an interrupted comparison leaves a table of what finished, and ``resume_from``
takes the runs of earlier result files whose settings match (see :func:`resumable_runs`) instead of training them
again: a long comparison can be run in pieces, or its rows split over processes and joined.
"""

import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file
from transformers import AutoProcessor, HfArgumentParser, PrinterCallback, TrainingArguments, set_seed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_hf  # noqa: E402

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration  # noqa: E402
from modeling_qwen2audio_ldv.evaluation.evaluate import evaluate_sets  # noqa: E402
from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION, DataCollatorForQwen2AudioLDV  # noqa: E402
from modeling_qwen2audio_ldv.evaluation.report import gap_recovered  # noqa: E402
from modeling_qwen2audio_ldv.training.trainer import (  # noqa: E402
    CachedFeatureCollator,
    DomainAdapterTrainer,
    build_feature_cache,
)

logger = logging.getLogger("compare_methods")

DEFAULT_RECIPE = REPO / "configuration" / "recipes" / "compare_methods.yaml"
METHODS = ("baseline", "oracle", "projector", "lora", "adapter")
PROJECTOR_PREFIX = "model.multi_modal_projector."


# ------------------------------------------------------------------------------------------------- arguments
@dataclass
class CompareArguments:
    """Settings of one comparison (every field is a recipe key and a ``--flag``)."""

    base_model: str = field(default="mini_base", metadata={"help": "base model directory or Hub id"})
    output_dir: str = field(default="benchmarks/results", metadata={"help": "where compare_methods.{json,md,png} go"})
    work_dir: str = field(default="outputs/compare_methods", metadata={"help": "feature cache and per-run scratch"})
    rows: list[str] = field(default_factory=lambda: list(ROW_NAMES), metadata={"help": "rows to run, in order"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds every row runs with"})
    multi_seed: bool = field(default=True, metadata={
        "help": "run extra_seeds for reference_row and its closest competitors"})
    reference_row: str = field(default="transformer_standard", metadata={
        "help": "the row that gets extra_seeds, with the closest_competitors rows nearest it in LDV CER"})
    ldv_native_base: str | None = field(default=None, metadata={
        "help": "the LDV-native mini model for the ldv_native row (build-mini-base --train-condition CONDITION)"})
    ldv_native_full_base: str | None = field(default=None, metadata={
        "help": "the LDV-native mini model with its encoder trained too, for the ldv_native_full row (build-mini-base "
                "--train-condition CONDITION --train-encoder)"})
    resume_from: list[str] = field(default_factory=list, metadata={
        "help": "compare_methods.json files of earlier runs: a (row, seed) run recorded there with the same run "
                "settings is taken from it instead of being trained again"})
    extra_seeds: list[int] = field(default_factory=lambda: [1, 2], metadata={
        "help": "further seeds for transformer_standard and its closest competitors"})
    closest_competitors: int = field(default=3, metadata={
        "help": "rows nearest transformer_standard in LDV CER (first seed) that also run extra_seeds"})
    # data (the demo's)
    condition: str = field(default="cardboard_box", metadata={"help": "LDV condition to train and test on"})
    num_train_utterances: int = field(default=600, metadata={"help": "training utterances"})
    num_eval_utterances: int = field(default=60, metadata={"help": "utterances per eval set"})
    corpus_seed: int = field(default=0, metadata={"help": "corpus seed (the same corpus for every seed)"})
    mic_fraction: float = field(default=0.25, metadata={"help": "share of microphone training rows"})
    text_kinds: list[str] = field(default_factory=lambda: ["digits", "command", "sentence"],
                                  metadata={"help": "corpus text kinds (digits, command, sentence)"})
    # adapters
    objective: str = field(default="lm+distill", metadata={"help": "adapter rows' objective (lm, distill, lm+distill)"})
    distill_weight: float = field(default=1.0, metadata={"help": "weight of distill in lm+distill"})
    distill_loss: str = field(default="mse", metadata={"help": "mse, cosine or mse+cosine"})
    scale_learning_rate: float | None = field(default=0.01, metadata={"help": "learning rate of the adapter `scale`"})
    dropout: float = field(default=0.0, metadata={"help": "adapter dropout"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank on the projector"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (update scale alpha / r)"})
    # optimisation (the same for every row)
    max_steps: int = field(default=400, metadata={"help": "optimiser steps per row"})
    batch_size: int = field(default=32, metadata={"help": "training batch"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of every row"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on matrices"})
    # evaluation and machine
    eval_batch_size: int = field(default=32, metadata={"help": "generation batch"})
    max_new_tokens: int = field(default=48, metadata={"help": "generation length"})
    language: str = field(default="auto", metadata={"help": "text normalisation for CER/WER"})
    num_threads: int = field(default=1, metadata={"help": "torch threads"})
    time_budget_minutes: float = field(default=0.0, metadata={
        "help": "skip extra-seed runs that would end past this wall time (estimated from the row's first run); "
                "0 = no limit"})
    use_cpu: bool = field(default=False, metadata={"help": "force the CPU even when CUDA is present"})

    def __post_init__(self):
        if self.reference_row not in ROW_NAMES:
            raise ValueError(f"`reference_row` ({self.reference_row!r}) must be one of {list(ROW_NAMES)}")
        unknown = [r for r in self.rows if r not in ROW_NAMES]
        if unknown:
            raise ValueError(f"`rows` has unknown names {unknown}; known: {list(ROW_NAMES)}")
        if not self.seeds:
            raise ValueError("`seeds` must name at least one seed")
        if self.closest_competitors < 0:
            raise ValueError(f"`closest_competitors` ({self.closest_competitors}) must be >= 0")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError(f"`max_steps` ({self.max_steps}) and `batch_size` ({self.batch_size}) must be >= 1")


def parse_arguments(argv: list[str]) -> tuple[CompareArguments, Path]:
    """``[recipe.yaml] [--key value ...]``: the recipe's keys, then command-line flags on top."""
    recipe = DEFAULT_RECIPE
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe, argv = Path(argv[0]), argv[1:]
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {recipe} not found")
    values = yaml.safe_load(recipe.read_text()) or {}
    known = {f.name for f in fields(CompareArguments)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{recipe}: unknown recipe keys {unknown}; known: {sorted(known)}")
    prefix: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        prefix += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    (args,) = HfArgumentParser(CompareArguments).parse_args_into_dataclasses(args=prefix + argv,
                                                                            look_for_args_file=False)
    return args, recipe


# ------------------------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class Row:
    """One line of the table: a method and its settings.

    Attributes:
        name: key used in ``rows`` and the JSON.
        label: the table's wording.
        method: ``baseline``, ``oracle``, ``projector``, ``lora`` or ``adapter``.
        adapter: for ``adapter`` rows, :class:`DomainAdapterConfig` fields on top of the scaled preset.
        preset: ``lightweight``, ``standard``, ``heavy`` or ``mlp`` (adapter rows).
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
          (("encoder_layer", k), ("zero_init", False))) for k in (2, 3, 4, 5, 6)),
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
RUN_OVERHEAD_SECONDS = 5.0  # model load, checkpoint write and result files around one run


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
    shape = {"bottleneck_dim": max(1, d_model // 4)} if row.preset == "mlp" else transformer_shapes(d_model)[row.preset]
    # a row's own settings (e.g. its dropout) win over the recipe's
    return DomainAdapterConfig.preset(row.preset, **{**shape, "dropout": args.dropout, **dict(row.adapter)})


def row_objective(row: Row, args: CompareArguments) -> str:
    """The objective ``row`` trains with."""
    if row.objective is not None:
        return row.objective
    return args.objective if row.method == "adapter" else "lm"


# ------------------------------------------------------------------------------------------------------ data
@dataclass
class ComparisonData:
    """Everything the rows share: cached tower outputs, decoded audio and the eval sets.

    Attributes:
        texts: training transcripts, one per utterance.
        ldv_features, mic_features: frozen-tower outputs per utterance, flat ``(frames * d_model,)`` float16.
        ldv_audio, mic_audio: decoded 16 kHz waveforms ``(samples,)`` float32 (for the oracle, which trains the
            tower and so needs audio).
        eval_sets: ``{"ldv": {"audio": [...], "text": [...]}, "mic": {...}}``.
        seconds: time spent on synthesis and the feature cache.
    """

    texts: list[str]
    ldv_features: list[np.ndarray]
    mic_features: list[np.ndarray]
    ldv_audio: list[np.ndarray]
    mic_audio: list[np.ndarray]
    eval_sets: dict[str, dict[str, list]]
    seconds: float
    # {k: (ldv, mic)}: the tower's states after k layers per utterance (adapters inside the tower), made on demand
    inside_features: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)

    def mic_rows(self, seed: int, mic_fraction: float) -> np.ndarray:
        """Which training rows are microphone rows for ``seed``: the same draw as ``train_hf.mix_mic_rows``."""
        return np.random.default_rng(seed).random(len(self.texts)) < mic_fraction

    def cached_examples(self, seed: int, mic_fraction: float, layer: int | None = None) -> list[dict[str, Any]]:
        """Rows for :class:`CachedFeatureCollator`: ``audio_encoder`` (LDV or mic; for ``layer`` the states after
        that many tower layers), ``mic_audio_encoder`` (the tower's output: the distillation teacher), ``text``."""
        use_mic = self.mic_rows(seed, mic_fraction)
        ldv_in, mic_in = (self.ldv_features, self.mic_features) if layer is None else self.inside_features[layer]
        return [{"audio_encoder": mic if m else ldv, "mic_audio_encoder": teacher, "text": text}
                for ldv, mic, teacher, text, m in zip(ldv_in, mic_in, self.mic_features, self.texts, use_mic)]

    def audio_examples(self, seed: int, mic_fraction: float) -> list[dict[str, Any]]:
        """The same rows as :meth:`cached_examples`, as audio, for :class:`DataCollatorForQwen2AudioLDV`."""
        use_mic = self.mic_rows(seed, mic_fraction)
        return [{"audio": mic if m else ldv, "text": text}
                for ldv, mic, text, m in zip(self.ldv_audio, self.mic_audio, self.texts, use_mic)]


def build_data(args: CompareArguments, base: str, processor) -> ComparisonData:
    """Synthesise the demo corpus (``train_hf.build_demo_data``) and cache the frozen tower's outputs once."""
    from modeling_qwen2audio_ldv.data.collator import audio_to_array

    start = time.perf_counter()
    data_args = train_hf.DataArguments(condition=args.condition, num_train_utterances=args.num_train_utterances,
                                       num_eval_utterances=args.num_eval_utterances, corpus_seed=args.corpus_seed,
                                       mic_fraction=args.mic_fraction, text_kinds=list(args.text_kinds))
    _, eval_sets, corpus = train_hf.build_demo_data(data_args, args.seeds[0])
    train = corpus["train"].filter(lambda c: c == args.condition, input_columns="condition")
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig(adapter_type="none"))
    model.config.trim_audio_tower = True
    cached = build_feature_cache(model, processor, train, audio_columns=("ldv_audio", "mic_audio"),
                                 cache_dir=os.path.join(args.work_dir, "feature_cache"), progress=False)
    data = ComparisonData(
        texts=list(cached["text"]),
        ldv_features=[np.asarray(v, dtype=np.float16) for v in cached["ldv_audio_encoder"]],
        mic_features=[np.asarray(v, dtype=np.float16) for v in cached["mic_audio_encoder"]],
        ldv_audio=[audio_to_array(v) for v in train["ldv_audio"]],
        mic_audio=[audio_to_array(v) for v in train["mic_audio"]],
        eval_sets={name: {"audio": [audio_to_array(v) for v in ds["audio"]], "text": list(ds["text"])}
                   for name, ds in eval_sets.items()},
        seconds=0.0,
    )
    layers = sorted({dict(ROW_BY_NAME[name].adapter).get("encoder_layer") for name in args.rows} - {None})
    for layer in layers:  # the input states of the adapters inside the tower, one cache per place
        inside = build_feature_cache(model, processor, train, audio_columns=("ldv_audio", "mic_audio"),
                                     cache_dir=os.path.join(args.work_dir, "feature_cache"), progress=False,
                                     encoder_layers={"ldv_audio": layer, "mic_audio": layer})
        data.inside_features[layer] = ([np.asarray(v, dtype=np.float16) for v in inside["ldv_audio_encoder"]],
                                       [np.asarray(v, dtype=np.float16) for v in inside["mic_audio_encoder"]])
    data.seconds = time.perf_counter() - start
    logger.info("data: %d training utterances, eval sets %s, %.0f s (synthesis + feature caches, layers %s)",
                len(data.texts), {k: len(v["text"]) for k, v in data.eval_sets.items()}, data.seconds, layers)
    return data


# -------------------------------------------------------------------------------------------------- training
class AllTrainableTrainer(DomainAdapterTrainer):
    """The adapter Trainer's loss (``lm``: summed token cross-entropy over the step's supervised tokens), with an
    optimiser over every trainable parameter, for the rows that train base weights (projector, LoRA, oracle).
    ``tower_learning_rate``: the audio tower's weights get this peak rate (same schedule) instead of the Trainer's."""

    def __init__(self, *args, tower_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tower_learning_rate = tower_learning_rate

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            members: dict[tuple[bool, bool], list] = {key: [] for key in ((False, True), (False, False),
                                                                          (True, True), (True, False))}
            for name, parameter in self.model.named_parameters():
                if parameter.requires_grad:
                    in_tower = self.tower_learning_rate is not None and ".audio_tower." in f".{name}"
                    members[(in_tower, parameter.dim() >= 2)].append(parameter)
            groups = [{"params": params, "weight_decay": self.args.weight_decay if decay else 0.0,
                       **({"lr": self.tower_learning_rate} if in_tower else {})}
                      for (in_tower, decay), params in members.items() if params]
            if not groups:
                raise ValueError("the model has no trainable parameters")
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def prepare_model(row: Row, base: str, args: CompareArguments):
    """Load the base with ``row``'s adapter (or none) and make exactly the row's parameters trainable."""
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base, adapter_config=adapter_config_for(
        row, _encoder_width(base), args))
    model.config.trim_audio_tower = True
    if row.method == "adapter":
        return model.freeze_base_model()
    model.requires_grad_(row.method == "oracle")
    if row.method == "oracle_after_tower":  # everything the cached tower output feeds: projector + LLM + head
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(not name.startswith("model.audio_tower."))
    if row.method == "projector":
        model.model.multi_modal_projector.requires_grad_(True)
    elif row.method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(target_modules=["multi_modal_projector.linear"], r=args.lora_r, lora_alpha=args.lora_alpha,
                            lora_dropout=0.0)
        model = get_peft_model(model, config)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name)
    return model


def _encoder_width(base: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base).audio_config.d_model


def projector_state(model) -> dict[str, torch.Tensor]:
    """The projector's base weights (for LoRA: the frozen ``base_layer`` under the low-rank update)."""
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.removeprefix("base_model.model.")
        if name.startswith(PROJECTOR_PREFIX) and "lora_" not in name:
            state[name.replace(".base_layer.", ".")] = tensor.detach().clone()
    return state


def checkpoint_bytes(model, directory: Path) -> int:
    """Size of a safetensors file holding the trainable weights (as trained, float32)."""
    state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    path = directory / "trainable.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    return path.stat().st_size


def train_and_evaluate(row: Row, seed: int, base: str, processor, data: ComparisonData, base_projector: dict,
                       args: CompareArguments) -> dict[str, Any]:
    """Train ``row`` with ``seed`` and score it; returns one run's record."""
    set_seed(seed)
    model = prepare_model(row, base, args)
    objective = row_objective(row, args)
    instruction = DEFAULT_INSTRUCTION
    d_model = _encoder_width(base)
    mic_fraction = args.mic_fraction if row.mic_fraction is None else row.mic_fraction
    layer = dict(row.adapter).get("encoder_layer")
    if row.method == "oracle":
        examples = data.audio_examples(seed, mic_fraction)
        collator = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train")
    else:
        examples = data.cached_examples(seed, mic_fraction, layer)
        collator = CachedFeatureCollator(processor, instruction, d_model=d_model,
                                         mic_feature_key="mic_audio_encoder" if "distill" in objective else None,
                                         inside_tower=layer is not None)
    run_dir = Path(args.work_dir) / "runs" / f"{row.name}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    training_args = TrainingArguments(
        output_dir=str(run_dir), max_steps=args.max_steps * row.steps_factor, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, seed=seed, logging_steps=max(1, args.max_steps // 10), save_strategy="no",
        report_to="none", dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
        label_names=["labels"], use_cpu=args.use_cpu, dataloader_pin_memory=False,
    )
    trainer_cls = DomainAdapterTrainer if row.method == "adapter" else AllTrainableTrainer
    if row.method == "adapter":
        extra = {"scale_learning_rate": args.scale_learning_rate,
                 "distill_warmup_steps": row.distill_warmup_factor * args.max_steps}
    else:
        extra = {"tower_learning_rate": row.tower_learning_rate}
    trainer = trainer_cls(model=model, args=training_args, train_dataset=examples, data_collator=collator,
                          objective=objective, distill_loss=args.distill_loss,
                          distill_weight=args.distill_weight if row.distill_weight is None else row.distill_weight,
                          **extra)
    trainer.remove_callback(PrinterCallback)  # losses go to the JSON (first/last) instead of stdout
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = checkpoint_bytes(model, run_dir)
    trained_projector = projector_state(model)
    preserved = trained_projector.keys() == base_projector.keys() and all(
        torch.equal(trained_projector[k], base_projector[k]) for k in base_projector)
    model.eval()
    start = time.perf_counter()
    scores, _ = evaluate_sets(model, processor, data.eval_sets, instruction, args.eval_batch_size,
                              args.max_new_tokens, args.language, baseline=False, progress=False)
    eval_seconds = time.perf_counter() - start
    record = {
        "row": row.name, "seed": seed, "row_spec": row_spec(row), "objective": objective,
        "trainable_params": trainable,
        "checkpoint_bytes": size, "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
        "ldv_cer": scores["ldv"]["adapted"]["cer"], "ldv_wer": scores["ldv"]["adapted"]["wer"],
        "mic_cer": scores["mic"]["adapted"]["cer"], "mic_wer": scores["mic"]["adapted"]["wer"],
        "projector_preserved": bool(preserved), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
    if row.method == "adapter":
        record["adapter_config"] = model.config.adapter_config.to_dict()
    logger.info("%s seed %d: %s trainable, train %.1f s, eval %.1f s, LDV CER %.2f%%, mic CER %.2f%%, projector "
                "preserved %s", row.name, seed, f"{trainable:,}", train_seconds, eval_seconds,
                100 * record["ldv_cer"], 100 * record["mic_cer"], preserved)
    return record


def evaluate_baseline(base: str, processor, data: ComparisonData, args: CompareArguments,
                      row: str = "baseline") -> dict[str, Any]:
    """Score an unadapted model: the ``baseline`` row's record and the reference of every gap; with another
    ``row`` (``ldv_native``), a reference model built apart (with its own processor) scored on the same sets."""
    if row != "baseline":
        processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig(adapter_type="none")).eval()
    start = time.perf_counter()
    scores, _ = evaluate_sets(model, processor, data.eval_sets, DEFAULT_INSTRUCTION, args.eval_batch_size,
                              args.max_new_tokens, args.language, baseline=False, progress=False)
    record = {
        "row": row, "seed": None, "objective": None, "trainable_params": 0, "checkpoint_bytes": 0,
        "train_seconds": 0.0, "eval_seconds": round(time.perf_counter() - start, 2),
        "ldv_cer": scores["ldv"]["adapted"]["cer"], "ldv_wer": scores["ldv"]["adapted"]["wer"],
        "mic_cer": scores["mic"]["adapted"]["cer"], "mic_wer": scores["mic"]["adapted"]["wer"],
        "projector_preserved": True,
    }
    logger.info("%s (%s): LDV CER %.2f%%, mic CER %.2f%%", row, base, 100 * record["ldv_cer"],
                100 * record["mic_cer"])
    return record


# ------------------------------------------------------------------------------------------------- summaries
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
            "projector_preserved": all(r["projector_preserved"] for r in mine),
        })
    return summaries


def _fmt(stat: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean`` or ``mean ± std`` (times ``scale``), ``n/a`` when missing."""
    mean = stat.get("mean")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{scale * mean:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {scale * stat['std']:.{digits}f}"
    return text


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
    fig = Figure(figsize=(14, max(4.5, 0.42 * len(rows) + 1.5)), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    y = np.arange(len(rows))
    for offset, key, label, colour in ((-0.2, "ldv_cer", "LDV", "tab:red"), (0.2, "mic_cer", "microphone", "tab:blue")):
        means = [100 * (r[key]["mean"] if r[key]["mean"] is not None else np.nan) for r in rows]
        errors = [100 * (r[key]["std"] or 0.0) for r in rows]
        left.barh(y + offset, means, height=0.4, xerr=errors, color=colour, label=f"{label} CER")
    base = results["baseline"]
    left.axvline(100 * base["ldv_cer"], color="tab:red", linestyle="--", linewidth=1)
    left.axvline(100 * base["mic_cer"], color="tab:blue", linestyle="--", linewidth=1)
    left.set_yticks(y, [r["label"] for r in rows])
    left.invert_yaxis()
    left.set_xlabel("CER (%) with the adaptation applied")
    left.grid(True, axis="x", alpha=0.3)
    left.legend(loc="upper left", bbox_to_anchor=(0.0, -0.08), ncols=2, fontsize=8)
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


def closest_rows(runs: list[dict[str, Any]], count: int, reference: str = STANDARD) -> list[str]:
    """The ``count`` rows (not baseline, a reference, an oracle or ``reference``) nearest ``reference`` in LDV CER."""
    standard = [r["ldv_cer"] for r in runs if r["row"] == reference]
    if not standard or count == 0:
        return []
    candidates = {r["row"]: abs(r["ldv_cer"] - standard[0]) for r in runs
                  if r["row"] not in (reference, *NOT_COMPETITORS)}
    return sorted(candidates, key=candidates.get)[:count]


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    # 1. Arguments, logging, threads.
    args, recipe = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    torch.set_num_threads(args.num_threads)
    logger.info("recipe %s; rows %s; seeds %s (+%s for the standard row and %d closest)", recipe, args.rows,
                args.seeds, args.extra_seeds, args.closest_competitors)
    wall_start = time.perf_counter()
    base = train_hf.resolve_base(args.base_model)
    processor = AutoProcessor.from_pretrained(base)
    d_model = _encoder_width(base)

    # 2. Data and the shared feature cache; the baseline's scores (every gap is measured from them).
    data = build_data(args, base, processor)
    baseline = evaluate_baseline(base, processor, data, args)
    base_projector = projector_state(Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig(adapter_type="none")))
    runs: list[dict[str, Any]] = [baseline] if "baseline" in args.rows else []
    for name in (n for n in args.rows if n in REFERENCE_ROWS):
        argument, flags = REFERENCE_BASES[name]
        if getattr(args, argument):
            runs.append(evaluate_baseline(train_hf.resolve_base(getattr(args, argument)), processor, data, args,
                                          row=name))
        else:
            logger.warning("row %s skipped: set --%s (ldv-qwen2audio build-mini-base --output DIR --train-condition "
                           "%s%s)", name, argument, args.condition, flags)
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
        "baseline": {k: baseline[k] for k in ("ldv_cer", "ldv_wer", "mic_cer", "mic_wer")},
    }

    def publish(complete: bool, note: str | None = None) -> dict[str, Path]:
        results.update(rows=summarise(runs, baseline), runs=runs, complete=complete,
                       wall_seconds=round(time.perf_counter() - wall_start, 1))
        if note:
            results["note"] = note
        return write_outputs(results, args.output_dir)

    # 3. Every row with the first seed(s); then the standard row and its closest competitors with more seeds.
    trained = [ROW_BY_NAME[name] for name in args.rows if name not in ("baseline", *REFERENCE_ROWS)]
    plan = [(row, seed) for seed in args.seeds for row in trained]
    skipped: list[dict[str, Any]] = []
    for row, seed in plan:
        runs.append(run(row, seed))
        publish(complete=False, note="running")
    if args.multi_seed and args.extra_seeds and args.reference_row in args.rows:
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
