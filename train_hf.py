"""Train an LDV domain adapter for Qwen2-Audio with the HF Trainer.

    python train_hf.py                                              # the embedded demo (configuration/recipes/demo.yaml)
    python train_hf.py configuration/recipes/qwen2_audio_7b.yaml    # the real model on your data
    python train_hf.py configuration/recipes/demo.yaml --max_steps 50 --output_dir outputs/quick   # overrides

Every field of the argument dataclasses below and of ``transformers.TrainingArguments`` is a flag and a recipe key.
Runs under ``torchrun``/``accelerate launch`` unchanged (only rank 0 writes).
"""

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoProcessor, HfArgumentParser, TrainingArguments, set_seed

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration

logger = logging.getLogger("train_hf")
REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_RECIPE = REPO_ROOT / "configuration" / "recipes" / "demo.yaml"


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


def quantization_kwargs(model_args: ModelArguments, device) -> dict:
    """``from_pretrained`` arguments for a 4/8-bit bitsandbytes base on ``device`` (empty without quantisation).

    The adapter is left out of quantisation by the model class (``_keep_in_fp32_modules``); the 4-bit base computes
    in ``--dtype`` (bfloat16 in the recipe).
    """
    if model_args.load_in_4bit and model_args.load_in_8bit:
        raise ValueError("--load_in_4bit and --load_in_8bit exclude each other")
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return {}
    from transformers import BitsAndBytesConfig

    if model_args.load_in_4bit:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=getattr(torch, model_args.dtype))
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": str(device)}}


@dataclass
class AdapterArguments:
    adapter_preset: str = field(default="standard", metadata={"help": "lightweight, standard, heavy or mlp"})
    adapter_type: str | None = field(default=None, metadata={"help": "override: transformer, mlp, none"})
    num_layers: int | None = field(default=None, metadata={"help": "override the preset's layer count"})
    num_heads: int | None = field(default=None, metadata={"help": "override: must divide the encoder's d_model"})
    ff_dim: int | None = field(default=None, metadata={"help": "override the feed-forward width"})
    dropout: float | None = field(default=None, metadata={"help": "override the dropout"})
    use_gate: bool | None = field(default=None, metadata={"help": "override: per-frame sigmoid gate"})
    use_position_encoding: bool | None = field(default=None, metadata={"help": "override: sinusoidal positions"})
    scale_init: float | None = field(default=None, metadata={"help": "override the initial scale (0.1)"})
    zero_init: bool | None = field(default=None, metadata={"help": "override: start exactly equal to the base"})
    bottleneck_dim: int | None = field(default=None, metadata={"help": "override the mlp bottleneck"})
    encoder_layer: str | None = field(default=None, metadata={"help": "place the adapter inside the frozen audio "
                                                                      "tower, after this many of its layers; none "
                                                                      "(or unset): after the tower"})

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
    objective: str = field(default="lm+distill", metadata={"help": "lm, distill or lm+distill"})
    distill_weight: float = field(default=1.0, metadata={"help": "weight of distill in lm+distill"})
    distill_loss: str = field(default="mse", metadata={"help": "mse, cosine or mse+cosine"})
    scale_learning_rate: float | None = field(default=None, metadata={"help": "learning rate of `scale` "
                                                                              "(default: learning_rate)"})
    distill_warmup_steps: int = field(default=0, metadata={"help": "lm+distill: train the first N of max_steps on "
                                                                   "distill alone (no LLM forward: cheap steps)"})


PARSER_CLASSES = (ModelArguments, AdapterArguments, DataArguments, ObjectiveArguments, TrainingArguments)


def parse_arguments(argv: list[str]):
    """``[recipe.yaml] [--key value ...]``: the recipe's keys first, command-line flags override them."""
    parser = HfArgumentParser(PARSER_CLASSES)
    recipe = DEFAULT_RECIPE  # no recipe given: the demo's, with the flags on top
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe, argv = Path(argv[0]), argv[1:]
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {recipe} not found")
    values = yaml.safe_load(recipe.read_text()) or {}
    known = {f.name for cls in PARSER_CLASSES for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{recipe}: unknown recipe keys {unknown} (every key must be a train_hf.py flag)")
    prefix: list[str] = []
    for key, value in values.items():
        if value is not None:
            prefix += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return parser.parse_args_into_dataclasses(args=prefix + argv, look_for_args_file=False), recipe


def resolve_base(name: str) -> str:
    if os.path.isdir(name) or not (REPO_ROOT / name).is_dir():
        return name
    return str(REPO_ROOT / name)


def build_demo_data(data_args: DataArguments, seed: int):
    """The synthetic paired corpus: LDV training rows (a share are microphone rows) and the eval sets."""
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    from modeling_qwen2audio_ldv.synthetic.simulator import get_condition

    if data_args.ldv_draws < 1:
        raise ValueError(f"--ldv_draws ({data_args.ldv_draws}) must be >= 1")
    conditions = [get_condition(data_args.condition)]
    conditions += [get_condition(data_args.eval_condition)] if data_args.eval_condition else []
    # the corpus's `condition` column holds the condition's name (a JSON condition's `name`, not its path)
    names = [c.name for c in conditions]
    # further LDV draws of the training condition: the same surface under another name, so each row gets its own
    # simulator seed; only the first draw is scored (the eval sets do not change with --ldv_draws)
    draws = [dataclasses.replace(conditions[0], name=f"{names[0]}~draw{k}") for k in range(1, data_args.ldv_draws)]
    corpus = build_paired_corpus(data_args.num_train_utterances, data_args.num_eval_utterances, data_args.corpus_seed,
                                 conditions=conditions + draws, kinds=tuple(data_args.text_kinds))

    def rows_of(split: str, name: str):
        rows = corpus[split].filter(lambda c: c == name, input_columns="condition")
        if len(corpus[split]) and not len(rows):
            raise ValueError(f"demo corpus: no {split} rows for condition {name!r} (conditions in the corpus: "
                             f"{sorted(set(corpus[split]['condition']))})")
        return rows

    train = rows_of("train", names[0])
    if draws:
        from datasets import concatenate_datasets

        train = concatenate_datasets([train] + [rows_of("train", d.name) for d in draws])
    test_rows = rows_of("test", names[0])
    eval_sets = {
        "ldv": test_rows.select_columns(["ldv_audio", "text"]).rename_column("ldv_audio", "audio"),
        "mic": test_rows.select_columns(["mic_audio", "text"]).rename_column("mic_audio", "audio"),
    }
    if data_args.eval_condition:
        eval_sets[f"ldv_{names[1]}"] = (
            rows_of("test", names[1]).select_columns(["ldv_audio", "text"]).rename_column("ldv_audio", "audio"))
    return mix_mic_rows(train, "ldv_audio", "mic_audio", data_args.mic_fraction, seed), eval_sets, corpus


def mix_mic_rows(train, ldv_column: str, mic_column: str, mic_fraction: float, seed: int):
    """Rows with ``audio`` (LDV, or for a ``mic_fraction`` share the microphone clip) and ``mic_audio``."""
    from datasets import Audio

    rng = np.random.default_rng(seed)
    use_mic = rng.random(len(train)) < mic_fraction
    raw = train.cast_column(ldv_column, Audio(decode=False)).cast_column(mic_column, Audio(decode=False))

    def pick(batch, indices):
        return {"audio": [m if use_mic[i] else l for i, l, m in zip(indices, batch[ldv_column], batch[mic_column])],
                "mic_audio": batch[mic_column]}

    drop = [c for c in raw.column_names if c != "text"]
    mixed = raw.map(pick, with_indices=True, batched=True, remove_columns=drop)
    return mixed.cast_column("audio", Audio(sampling_rate=16000)).cast_column("mic_audio", Audio(sampling_rate=16000))


def eval_split(loaded, source: str, given_for_evaluation: bool):
    """The one split to evaluate on: ``test``, else ``validation``; a source given for evaluation alone
    (``--eval_data``, ``--mic_eval_data``) that holds a single split is used whole (a manifest, or a folder
    without split folders, loads as one ``train`` split)."""
    if not hasattr(loaded, "keys"):
        return loaded
    for split in ("test", "validation"):
        if split in loaded:
            return loaded[split]
    if given_for_evaluation and len(loaded) == 1:
        return next(iter(loaded.values()))
    if given_for_evaluation:
        raise ValueError(f"{source}: splits {list(loaded)}, none of them test or validation; keep one split in it")
    raise ValueError(f"{source}: no test/validation split (splits: {list(loaded)}); pass --eval_data")


def mix_user_mic_rows(train, mic_fraction: float, seed: int):
    """``--mic_fraction`` on the user's paired data: that share of the rows train on their microphone clip (as
    ``audio``, with ``mic_audio`` unchanged), so the adapter learns to leave microphone speech alone."""
    if not mic_fraction:
        return train
    if "mic_audio" not in train.column_names:
        logger.info("--mic_fraction %g needs paired data (--mic_audio_column); training on the LDV rows only",
                    mic_fraction)
        return train
    if not 0.0 < mic_fraction <= 1.0:
        raise ValueError(f"--mic_fraction ({mic_fraction}) must be in [0, 1]")
    mixed = mix_mic_rows(train, "audio", "mic_audio", mic_fraction, seed)
    logger.info("--mic_fraction %g: microphone clips in place of about that share of %d training rows",
                mic_fraction, len(mixed))
    return mixed


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments, logging, seed.
    (model_args, adapter_args, data_args, objective_args, training_args), recipe = parse_arguments(
        sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if recipe:
        logger.info("recipe: %s", recipe)
    set_seed(training_args.seed)
    from modeling_qwen2audio_ldv.data.loading import filter_bad_examples, load_audio_dataset
    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION, DataCollatorForQwen2AudioLDV
    from modeling_qwen2audio_ldv.training.trainer import CachedFeatureCollator, DomainAdapterTrainer, build_feature_cache

    instruction = data_args.instruction or DEFAULT_INSTRUCTION
    distill = "distill" in objective_args.objective

    # 2. Base model + a fresh adapter; only the adapter trains.
    base = resolve_base(model_args.base_model)
    processor = AutoProcessor.from_pretrained(base, revision=model_args.base_model_revision)
    load_kwargs = {"dtype": getattr(torch, model_args.dtype), "revision": model_args.base_model_revision}
    if model_args.attn_implementation:
        load_kwargs["attn_implementation"] = model_args.attn_implementation
    load_kwargs.update(quantization_kwargs(model_args, training_args.device))
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base, adapter_config=adapter_args.to_config(),
                                                                       **load_kwargs)
    model.config.trim_audio_tower = model_args.trim_audio_tower
    model.freeze_base_model()
    logger.info("adapter: %s, %s trainable parameters", adapter_args.adapter_preset,
                f"{model.num_domain_adapter_parameters():,}")

    # 3. Data: the demo corpus or the user's recordings, bad rows handled by policy.
    if data_args.train_data is None:
        train, eval_sets, corpus = build_demo_data(data_args, training_args.seed)
        condition = data_args.condition
    else:
        corpus = None
        loaded = load_audio_dataset(data_args.train_data, audio_column=data_args.audio_column,
                                    text_column=data_args.text_column, mic_audio_column=data_args.mic_audio_column)
        train = loaded["train"] if hasattr(loaded, "keys") else loaded
        if data_args.eval_data:
            eval_source = eval_split(load_audio_dataset(data_args.eval_data, audio_column=data_args.audio_column,
                                                        text_column=data_args.text_column), data_args.eval_data,
                                     given_for_evaluation=True)
        else:
            eval_source = eval_split(loaded, data_args.train_data, given_for_evaluation=False)
        eval_sets = {"ldv": eval_source}
        if data_args.mic_eval_data:
            eval_sets["mic"] = eval_split(load_audio_dataset(data_args.mic_eval_data,
                                                             audio_column=data_args.audio_column,
                                                             text_column=data_args.text_column),
                                          data_args.mic_eval_data, given_for_evaluation=True)
        train = mix_user_mic_rows(train, data_args.mic_fraction, training_args.seed)
        condition = Path(data_args.train_data).name
    # paired rows: a bad microphone clip is a bad row too (it would stop the feature cache or the distill step)
    train, report = filter_bad_examples(train, on_bad_example=data_args.on_bad_example,
                                        mic_audio_column="mic_audio" if "mic_audio" in train.column_names else None)
    eval_sets = {name: filter_bad_examples(ds, on_bad_example=data_args.on_bad_example)[0].select_columns(
        ["audio", "text"]) for name, ds in eval_sets.items()}
    if data_args.max_eval_samples:
        eval_sets = {k: v.select(range(min(len(v), data_args.max_eval_samples))) for k, v in eval_sets.items()}
    if distill and "mic_audio" not in train.column_names:
        raise ValueError("objective 'distill' needs paired data: set --mic_audio_column")

    # 4. Collation: from the feature cache (the frozen tower runs once per clip) or from audio.
    if data_args.feature_cache:
        cache_dir = data_args.cache_dir or os.path.join(training_args.output_dir, "feature_cache")
        columns = ("audio", "mic_audio") if distill else ("audio",)
        # encode on the training device (GPU/MPS), not where from_pretrained left the model (the CPU); the Trainer
        # would move it there anyway. A device_map-dispatched or quantised model stays where it is.
        if not getattr(model, "hf_device_map", None) and not getattr(model, "is_quantized", False):
            model.to(training_args.device)
        with training_args.main_process_first(desc="feature cache"):
            # the raw audio is not needed any more: leaving it would decode every clip again at every step
            # an adapter inside the tower reads its states after `encoder_layer` layers: those are cached for the
            # input column, the tower's output for the microphone teacher
            layer = model.config.adapter_config.encoder_layer
            train = build_feature_cache(model, processor, train, audio_columns=columns, cache_dir=cache_dir,
                                        drop_columns=("audio", "mic_audio"), encoder_layers={"audio": layer})
        collator = CachedFeatureCollator(processor, instruction, mic_feature_key="mic_audio_encoder" if distill else None,
                                         d_model=model.config.audio_config.d_model, inside_tower=layer is not None)
    else:
        collator = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train",
                                                mic_audio_key="mic_audio" if distill else None)
    training_args.remove_unused_columns = False

    # 5. Train (adapter-only checkpoints; resume with a strict key check). With --push_to_hub the adapter is
    #    published once, after evaluation, with its results in the model card (not every checkpoint folder).
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = DomainAdapterTrainer(
        model=model, args=training_args, train_dataset=train, data_collator=collator,
        objective=objective_args.objective, distill_weight=objective_args.distill_weight,
        distill_warmup_steps=objective_args.distill_warmup_steps,
        distill_loss=objective_args.distill_loss, scale_learning_rate=objective_args.scale_learning_rate,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start
    adapter_dir = os.path.join(training_args.output_dir, "adapter")
    trainer.save_model(adapter_dir)
    if not trainer.is_world_process_zero():
        return {}

    # 6. Evaluate: reload the saved adapter exactly as a user would, baseline vs adapted on each eval set.
    eval_kwargs = {k: v for k, v in load_kwargs.items() if k in ("dtype", "quantization_config", "device_map")}
    model = AutoModelForSeq2SeqLM.from_pretrained(adapter_dir, trust_remote_code=True, **eval_kwargs)
    model.eval()
    if "device_map" not in eval_kwargs:
        model.to(training_args.device)
    from modeling_qwen2audio_ldv.evaluation.evaluate import evaluate_sets
    from modeling_qwen2audio_ldv.evaluation.report import gap_recovered, plot_error_rates, plot_training_curves, write_results

    scores, predictions = evaluate_sets(model, processor, eval_sets, instruction, data_args.eval_batch_size,
                                        data_args.max_new_tokens, data_args.language)
    results = {
        "base_model": model_args.base_model,
        "condition": condition,
        "adapter": {"preset": adapter_args.adapter_preset, "trainable_params": model.num_domain_adapter_parameters(),
                    "config": model.config.adapter_config.to_dict()},
        "objective": objective_args.objective,
        "eval": scores,
        "train_seconds": round(train_seconds, 1),
        "train_rows": len(train),
        "skipped_rows": report.to_dict() if hasattr(report, "to_dict") else None,
    }
    if "mic" in scores and "ldv" in scores:
        results["gap_recovered"] = gap_recovered(scores["ldv"]["baseline"]["cer"], scores["ldv"]["adapted"]["cer"],
                                                 scores["mic"]["baseline"]["cer"])
    results["examples"] = [  # the first three transcripts of each eval set
        {"set": name, **{column: texts[i] for column, texts in rows.items()}}
        for name, rows in predictions.items() for i in range(min(3, len(rows["reference"])))
    ]

    # 7. Write the results and pictures.
    output_dir = training_args.output_dir
    json_path, md_path = write_results(results, output_dir)
    plot_error_rates(results, os.path.join(output_dir, "error_rates.png"))
    if trainer.state.log_history and any("loss" in h for h in trainer.state.log_history):
        plot_training_curves(trainer.state.log_history, os.path.join(output_dir, "training_curves.png"))
    if corpus is not None:
        write_demo_pictures(model, processor, corpus, data_args, output_dir)
    if push_to_hub:
        from modeling_qwen2audio_ldv.tools.hub import push_adapter

        push_adapter(adapter_dir, training_args.hub_model_id or Path(output_dir).name, results,
                     token=training_args.hub_token, private=training_args.hub_private_repo,
                     revision=training_args.hub_revision)
    logger.info("results: %s and %s", json_path, md_path)
    print(f"\nResults written to {os.path.abspath(md_path)} (and results.json, PNGs) in {os.path.abspath(output_dir)}")
    return results


def write_demo_pictures(model, processor, corpus, data_args, output_dir: str) -> None:
    """Mic vs LDV spectrograms of one test utterance, and the adapter's gate values over time for it."""
    from modeling_qwen2audio_ldv.evaluation.plots import plot_gate_over_time, plot_mic_vs_ldv

    from modeling_qwen2audio_ldv.synthetic.simulator import get_condition

    name = get_condition(data_args.condition).name
    row = corpus["test"].filter(lambda c: c == name, input_columns="condition")[0]
    mic, ldv = (np.asarray(row[k]["array"], dtype=np.float32) for k in ("mic_audio", "ldv_audio"))
    plot_mic_vs_ldv(mic, ldv, 16000, os.path.join(output_dir, "mic_vs_ldv.png"), title=row["text"])
    if model.domain_adapter is None:
        return
    features = processor.feature_extractor([ldv], sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    device = next(model.parameters()).device
    with torch.no_grad():  # the adapter's input: the tower's output, or its states inside it (encoder_layer)
        hidden, lengths = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
        details = model.domain_adapter(hidden, torch.arange(hidden.shape[1], device=device)[None] < lengths[:, None],
                                       output_gate=True)
    if details.gate is not None:
        plot_gate_over_time(ldv, 16000, details.gate[0, : int(lengths[0])].float().cpu().numpy(),
                            os.path.join(output_dir, "gate_over_time.png"), title=row["text"])


if __name__ == "__main__":
    main()
