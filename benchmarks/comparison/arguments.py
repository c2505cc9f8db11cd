# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The comparison's settings: :class:`CompareArguments` (every field a recipe key and a ``--flag``)."""

from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from modeling_qwen2audio_ldv.training.arguments import read_recipe

from .rows import ROW_NAMES

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configuration" / "recipes" / "compare_methods.yaml"


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
    real_voice_set: str | None = field(default=None, metadata={
        "help": "a real-voice set folder (build-real-voice-set; built there if absent): every row is also scored on "
                "its microphone and `condition` LDV clips"})
    real_voice_samples: int | None = field(default=None, metadata={
        "help": "score every k-th clip of the real-voice set, k chosen to keep about this many (unset = all)"})
    num_train_utterances: int = field(default=600, metadata={"help": "training utterances"})
    num_eval_utterances: int = field(default=60, metadata={"help": "utterances per eval set"})
    corpus_seed: int = field(default=0, metadata={"help": "corpus seed (the same corpus for every seed)"})
    mic_fraction: float = field(default=0.25, metadata={"help": "share of microphone training rows"})
    text_kinds: list[str] = field(default_factory=lambda: ["digits", "command", "sentence"],
                                  metadata={"help": "corpus text kinds (digits, command, sentence)"})
    voices: list[str] | None = field(default=None, metadata={
        "help": "corpus voices; the list's tail is held out for validation and test (`split_voices`; unset: the "
                "corpus's eSpeak defaults)"})
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
    known = {f.name for f in fields(CompareArguments)}
    prefix = read_recipe(recipe, known, f"; known: {sorted(known)}")
    (args,) = HfArgumentParser(CompareArguments).parse_args_into_dataclasses(args=prefix + argv,
                                                                            look_for_args_file=False)
    return args, recipe
