# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The flags of a training run (``train_hf.py``): argument dataclasses for ``HfArgumentParser`` and recipes.

Every field of :data:`PARSER_CLASSES` (these dataclasses and ``transformers.TrainingArguments``) is a
``--flag`` and a recipe key. A recipe is a flat YAML file of those keys; :func:`parse_arguments` reads it first and
the command line's flags override it.

:class:`AdapterArguments` is generated from :class:`~modeling_qwen2audio_ldv.DomainAdapterConfig`: each adapter field
(but ``input_dim``, which the base model gives) is an optional override of the ``--adapter_preset``, so a field added
to the configuration is a flag at once.
"""

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from ..configuration_qwen2audio_ldv import DomainAdapterConfig
from .objectives import DISTILL_LOSSES, OBJECTIVE_NAMES


def _choices(names: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


@dataclass
class ModelArguments:
    base_model: str = field(default="mini_base", metadata={"help": "Hub id or directory of the Qwen2-Audio base "
                                                                   "(relative paths are tried against the repo too)"})
    base_model_revision: str | None = field(default=None, metadata={"help": "revision of the base model"})
    dtype: str = field(default="float32", metadata={"help": "base model dtype: float32, bfloat16, float16"})
    trim_audio_tower: bool = field(default=True, metadata={"help": "run the frozen tower on valid frames only"})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa, eager, flash_attention_2"})
    load_in_4bit: bool = field(default=False, metadata={"help": "4-bit NF4 base (bitsandbytes, CUDA); the adapter "
                                                                "stays float32 and is the only trainable part"})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base (bitsandbytes, CUDA)"})


#: ``--help`` of each adapter override (a configuration field not listed here gets a generic one).
ADAPTER_FLAG_HELP = {
    "adapter_type": "override: transformer, mlp, lora (peft LoRA on the audio tower's projections), none",
    "num_layers": "override the preset's layer count",
    "num_heads": "override: must divide the encoder's d_model",
    "ff_dim": "override the feed-forward width",
    "dropout": "override the dropout",
    "use_gate": "override: per-frame sigmoid gate",
    "use_position_encoding": "override: sinusoidal positions",
    "scale_init": "override the initial scale (0.1)",
    "zero_init": "override: start exactly equal to the base",
    "bottleneck_dim": "override the mlp bottleneck",
    "encoder_layer": "place the adapter inside the frozen audio tower, after this many of its layers; none (or "
                     "unset): after the tower. lora: the first layer that gets LoRA (none: every layer)",
    "lora_rank": "lora: rank r of each update (8)",
    "lora_alpha": "lora: alpha; updates are scaled by alpha / r (16)",
    "lora_target_modules": "lora: projections of each adapted tower layer (q_proj k_proj v_proj out_proj fc1 fc2)",
}
#: Configuration fields that are not flags: the adapter's width is the base model's encoder width.
_NOT_FLAGS = ("input_dim",)
#: Flag types that differ from the configuration's: ``--encoder_layer none`` must parse.
_FLAG_TYPES = {"encoder_layer": str | None}


class _AdapterOverrides:
    """Methods of :class:`AdapterArguments` (its fields are generated from :class:`DomainAdapterConfig`)."""

    def to_config(self) -> DomainAdapterConfig:
        overrides = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "adapter_preset"}
        overrides["encoder_layer"] = self.placement()
        return DomainAdapterConfig.preset(self.adapter_preset, **{k: v for k, v in overrides.items() if v is not None})

    def placement(self) -> int | None:
        """``--encoder_layer`` as a layer count, or ``None`` (after the tower) for ``none``/``null``/unset."""
        value = self.encoder_layer
        if value is None or str(value).strip().lower() in ("none", "null", ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"--encoder_layer ({value!r}) must be a layer count (0, 1, ...) or none") from None


def _adapter_fields() -> list[tuple[str, Any, Any]]:
    """``--adapter_preset`` and one optional override (default ``None``: the preset's value) per adapter field."""
    generated = [("adapter_preset", str, field(default="standard",
                                               metadata={"help": "lightweight, standard, heavy or mlp"}))]
    for config_field in fields(DomainAdapterConfig):
        if config_field.name in _NOT_FLAGS:
            continue
        kind = _FLAG_TYPES.get(config_field.name, config_field.type | None)
        help_text = ADAPTER_FLAG_HELP.get(config_field.name, f"override the preset's {config_field.name}")
        generated.append((config_field.name, kind, field(default=None, metadata={"help": help_text})))
    return generated


AdapterArguments = dataclasses.make_dataclass("AdapterArguments", _adapter_fields(), bases=(_AdapterOverrides,))
AdapterArguments.__module__ = __name__
AdapterArguments.__doc__ = ("The adapter: a preset of DomainAdapterConfig and optional overrides of its fields "
                            "(``None``: the preset's value).")


@dataclass
class DataArguments:
    train_data: str | None = field(default=None, metadata={"help": "audiofolder, manifest, save_to_disk dir or Hub "
                                                                   "id; unset = synthesise the demo corpus"})
    eval_data: str | None = field(default=None, metadata={"help": "LDV eval data (default: the train source's "
                                                                  "validation/test split)"})
    mic_eval_data: str | None = field(default=None, metadata={"help": "microphone eval data, if any"})
    audio_column: str = field(default="audio", metadata={"help": "column with the (LDV) audio"})
    text_column: str = field(default="text", metadata={"help": "column with the transcript"})
    mic_audio_column: str | None = field(default=None, metadata={"help": "paired microphone audio (distill)"})
    instruction: str | None = field(default=None, metadata={"help": "prompt instruction (default: transcribe)"})
    on_bad_example: str = field(default="skip", metadata={"help": "skip (report and drop) or error"})
    condition: str = field(default="cardboard_box", metadata={"help": "demo corpus: LDV condition to train on"})
    eval_condition: str | None = field(default=None, metadata={"help": "demo corpus: another condition to test "
                                                                       "on (cross-condition)"})
    text_kinds: list[str] = field(default_factory=lambda: ["digits", "command", "sentence"],
                                  metadata={"help": "demo corpus: text kinds (digits, command, sentence)"})
    num_train_utterances: int = field(default=600, metadata={"help": "demo corpus: training utterances"})
    num_eval_utterances: int = field(default=60, metadata={"help": "demo corpus: utterances per eval split"})
    ldv_draws: int = field(default=1, metadata={"help": "demo corpus: LDV recordings simulated per training "
                                                         "utterance, each with its own noise, gain, clicks and "
                                                         "drop-outs (one training row each)"})
    corpus_seed: int = field(default=0, metadata={"help": "demo corpus seed"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "demo corpus: processes that "
                                                                                  "synthesise and simulate it (unset"
                                                                                  " = one per CPU core, at most 8; "
                                                                                  "the audio is the same for any "
                                                                                  "count)"})
    voices: list[str] | None = field(default=None, metadata={"help": "demo corpus: voices (eSpeak names, flite:slt, "
                                                                    "festival:kal_diphone, ...), split into train/"
                                                                    "validation/test by speaker; unset = eSpeak's"})
    augment: bool = field(default=False, metadata={"help": "demo corpus: speed, pitch, room, level and noise "
                                                           "augmentation of each utterance (synthetic.augment)"})
    real_voice_texts: int = field(default=0, metadata={"help": "demo corpus: this many training utterances speak word "
                                                                "spans of the real-voice set's transcripts (texts "
                                                                "only, never its recordings), in place of template "
                                                                "texts: the text domain the mini base also read"})
    other_speaker_clips: int = field(default=0, metadata={"help": "demo corpus: this many real recordings of "
                                                                   "speakers outside the real-voice set (Debian's "
                                                                   "Asterisk prompts in French, Italian and Russian, "
                                                                   "<= --other_speaker_max_seconds) join the "
                                                                   "training rows with their "
                                                                   "simulated LDV versions; objective distill only"})
    other_speaker_max_seconds: float = field(default=8.0, metadata={"help": "demo corpus: the longest recording "
                                                                            "--other_speaker_clips draws (s; a long "
                                                                            "clip pads every batch it joins)"})
    talker_recordings: str | None = field(default=None, metadata={"help": "demo corpus: a folder of microphone "
                                                                          "recordings of the talker the adapter is "
                                                                          "for (any format, rate and length; no "
                                                                          "transcripts): cut at pauses into pieces "
                                                                          "that fill --talker_share of the training "
                                                                          "rows with their simulated LDV versions; "
                                                                          "objective distill only"})
    talker_max_seconds: float = field(default=4.0, metadata={"help": "demo corpus: the longest --talker_recordings "
                                                                     "piece (s); phrases are joined up to it (8: "
                                                                     "worse and 2x slower on the real-voice set)"})
    talker_share: float = field(default=0.4, metadata={"help": "demo corpus: share of the --num_train_utterances "
                                                               "rows that are --talker_recordings pieces (the rest "
                                                               "stay synthetic)"})
    real_voice_set: str | None = field(default=None, metadata={"help": "demo corpus: a real-voice set folder "
                                                                       "(build-real-voice-set; built there if "
                                                                       "absent): its microphone and `condition` LDV "
                                                                       "clips are scored as real_mic and real_ldv"})
    real_voice_samples: int | None = field(default=None, metadata={"help": "score every k-th clip of the real-voice "
                                                                          "set, k chosen to keep about this many "
                                                                          "(unset = all)"})
    mic_fraction: float = field(default=0.25, metadata={"help": "share of training rows that are microphone clips "
                                                                "(keeps the adapter harmless on mic speech); with "
                                                                "your own data, needs --mic_audio_column"})
    feature_cache: bool = field(default=True, metadata={"help": "cache the frozen tower's outputs (float16)"})
    cache_dir: str | None = field(default=None, metadata={"help": "feature cache folder (default output_dir/"
                                                                  "feature_cache)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "cap each eval set"})
    eval_batch_size: int = field(default=16, metadata={"help": "generation batch size"})
    max_new_tokens: int = field(default=48, metadata={"help": "generation length"})
    language: str = field(default="auto", metadata={"help": "text normalisation for CER/WER: auto, en, zh"})


@dataclass
class ObjectiveArguments:
    objective: str = field(default="lm+distill", metadata={"help": _choices(OBJECTIVE_NAMES)})
    distill_weight: float = field(default=1.0, metadata={"help": "weight of distill in lm+distill"})
    distill_loss: str = field(default="mse", metadata={"help": _choices(DISTILL_LOSSES)})
    scale_learning_rate: float | None = field(default=None, metadata={"help": "learning rate of `scale` "
                                                                              "(default: learning_rate)"})
    distill_warmup_steps: int = field(default=0, metadata={"help": "lm+distill: train the first N of max_steps on "
                                                                   "distill alone (no LLM forward: cheap steps)"})


PARSER_CLASSES = (ModelArguments, AdapterArguments, DataArguments, ObjectiveArguments, TrainingArguments)


def recipe_flags(values: dict[str, Any]) -> list[str]:
    """A recipe's keys and values as command-line flags (lists as several values; ``null`` keys left out)."""
    flags: list[str] = []
    for key, value in values.items():
        if value is not None:
            flags += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return flags


def read_recipe(recipe: Path, known: set[str], unknown_hint: str) -> list[str]:
    """The flags of the YAML ``recipe``; a key outside ``known`` is an error (``unknown_hint`` follows its name)."""
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {recipe} not found")
    values = yaml.safe_load(recipe.read_text()) or {}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{recipe}: unknown recipe keys {unknown}{unknown_hint}")
    return recipe_flags(values)


def parse_arguments(argv: list[str], default_recipe: Path):
    """``[recipe.yaml] [--key value ...]``: the recipe's keys first, command-line flags override them.

    Without a recipe in ``argv`` the ``default_recipe``'s keys come first. Returns ``((model_args, adapter_args,
    data_args, objective_args, training_args), recipe path)``.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(PARSER_CLASSES)
    recipe = default_recipe  # no recipe given: the demo's, with the flags on top
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe, argv = Path(argv[0]), argv[1:]
    known = {f.name for cls in PARSER_CLASSES for f in fields(cls)}
    prefix = read_recipe(Path(recipe), known, " (every key must be a train_hf.py flag)")
    return parser.parse_args_into_dataclasses(args=prefix + argv, look_for_args_file=False), recipe


def resolve_base(name: str, root: str | Path) -> str:
    """``--base_model`` as the absolute path of a directory (``name`` itself, or ``root / name``), else unchanged (a
    Hub id is never turned into a path). The saved adapter records this reference, so an absolute one loads from
    any working directory."""
    for candidate in (Path(name), Path(root) / name):
        if candidate.is_dir():
            return os.path.abspath(candidate)
    return name


__all__ = [
    "AdapterArguments",
    "DataArguments",
    "ModelArguments",
    "ObjectiveArguments",
    "PARSER_CLASSES",
    "parse_arguments",
    "read_recipe",
    "recipe_flags",
    "resolve_base",
]
