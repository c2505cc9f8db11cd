# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The steps of a training run around the Trainer, in ``train_hf.py``'s order: the base model with a fresh adapter,
the collator (from the feature cache or from audio), the evaluation of the saved adapter and the files it writes.
"""

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLING_RATE
from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
from .arguments import AdapterArguments, DataArguments, ModelArguments, ObjectiveArguments, resolve_base
from .data import TrainingData
from .feature_cache import CachedFeatureCollator, build_feature_cache, with_length_column
from .objectives import needs_mic_clip

logger = logging.getLogger(__name__)


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


def load_model_for_training(model_args: ModelArguments, adapter_args: AdapterArguments, device,
                            root: str | Path = ".") -> tuple[Any, Any, dict]:
    """The base model (``--base_model``, relative paths tried against ``root`` too) with a fresh adapter, the base
    frozen. Returns ``(model, processor, from_pretrained keyword arguments)``."""
    from transformers import AutoProcessor

    base = resolve_base(model_args.base_model, root)
    processor = AutoProcessor.from_pretrained(base, revision=model_args.base_model_revision)
    load_kwargs = {"dtype": getattr(torch, model_args.dtype), "revision": model_args.base_model_revision}
    if model_args.attn_implementation:
        load_kwargs["attn_implementation"] = model_args.attn_implementation
    load_kwargs.update(quantization_kwargs(model_args, device))
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base, adapter_config=adapter_args.to_config(),
                                                                       **load_kwargs)
    model.config.trim_audio_tower = model_args.trim_audio_tower
    model.freeze_base_model()
    logger.info("adapter: %s (preset %s), %s trainable parameters", model.domain_adapter_config().adapter_type,
                adapter_args.adapter_preset, f"{model.num_domain_adapter_parameters():,}")
    return model, processor, load_kwargs


def training_collator(model, processor, train, data_args: DataArguments, objective: str, training_args):
    """The training rows and their collator: from the feature cache (``--feature_cache``: the frozen tower runs
    once per clip, on the training device) or from audio. Returns ``(train, collator)``."""
    from ..data.collator import DEFAULT_INSTRUCTION, DataCollatorForQwen2AudioLDV

    instruction = data_args.instruction or DEFAULT_INSTRUCTION
    distill = needs_mic_clip(objective)
    grouped = training_args.train_sampling_strategy in ("group_by_length", "batch_rebalance")
    length_column = training_args.length_column_name
    if not data_args.feature_cache:
        if grouped and length_column not in train.column_names:
            # a speed setting (the demo recipe's): without lengths, train in random batches rather than stop
            logger.warning("--train_sampling_strategy %s needs the clips' lengths: the training data has no %r column "
                           "(--length_column_name); training in random batches. Add the column, or train from the "
                           "feature cache (--feature_cache true), which adds it", training_args.train_sampling_strategy,
                           length_column)
            training_args.train_sampling_strategy = "random"
        return train, DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train",
                                                   mic_audio_key="mic_audio" if distill else None)
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
        if grouped and length_column not in train.column_names:  # frames per clip, for the length-grouped sampler
            train = with_length_column(train, model.config.audio_config.d_model, "audio_encoder", length_column)
    collator = CachedFeatureCollator(processor, instruction, mic_feature_key="mic_audio_encoder" if distill else None,
                                     d_model=model.config.audio_config.d_model, inside_tower=layer is not None)
    return train, collator


def load_saved_adapter(adapter_dir: str, load_kwargs: dict, device):
    """The saved adapter loaded back exactly as a user would (``trust_remote_code``), on the base's dtype and
    quantisation, in eval mode on ``device`` (unless ``device_map`` placed it)."""
    from transformers import AutoModelForSeq2SeqLM

    eval_kwargs = {k: v for k, v in load_kwargs.items() if k in ("dtype", "quantization_config", "device_map")}
    model = AutoModelForSeq2SeqLM.from_pretrained(adapter_dir, trust_remote_code=True, **eval_kwargs)
    model.eval()
    if "device_map" not in eval_kwargs:
        model.to(device)
    return model


def evaluate_run(model, processor, data: TrainingData, model_args: ModelArguments, adapter_args: AdapterArguments,
                 data_args: DataArguments, objective_args: ObjectiveArguments, train_seconds: float) -> dict:
    """Baseline vs adapted on each eval set: the run's ``results.json`` record (scores, the adapter, the data, the
    gap recovered and the first three transcripts of each set)."""
    from ..data.collator import DEFAULT_INSTRUCTION
    from ..evaluation.evaluate import evaluate_sets
    from ..evaluation.report import gap_recovered

    instruction = data_args.instruction or DEFAULT_INSTRUCTION
    scores, predictions = evaluate_sets(model, processor, data.eval_sets, instruction, data_args.eval_batch_size,
                                        data_args.max_new_tokens, data_args.language)
    results = {
        "base_model": model_args.base_model,
        "condition": data.condition,
        "adapter": {"preset": adapter_args.adapter_preset, "trainable_params": model.num_domain_adapter_parameters(),
                    "config": model.config.adapter_config.to_dict()},
        "objective": objective_args.objective,
        "eval": scores,
        "train_seconds": round(train_seconds, 1),
        "train_rows": len(data.train),
        "skipped_rows": data.report.to_dict() if hasattr(data.report, "to_dict") else None,
    }
    if "mic" in scores and "ldv" in scores:
        results["gap_recovered"] = gap_recovered(scores["ldv"]["baseline"]["cer"], scores["ldv"]["adapted"]["cer"],
                                                 scores["mic"]["baseline"]["cer"])
    # a cross condition's LDV clips (--eval_condition: `ldv_<name>`) are the same utterances as `mic`
    by_set = {name: gap_recovered(scores[name]["baseline"]["cer"], scores[name]["adapted"]["cer"],
                                  scores["mic"]["baseline"]["cer"])
              for name in scores if name.startswith("ldv_") and "mic" in scores}
    if by_set:
        results["gap_recovered_by_set"] = by_set
    if "real_mic" in scores and "real_ldv" in scores:
        results["real_voice_gap_recovered"] = gap_recovered(
            scores["real_ldv"]["baseline"]["cer"], scores["real_ldv"]["adapted"]["cer"],
            scores["real_mic"]["baseline"]["cer"])
    results["examples"] = [  # the first three transcripts of each eval set
        {"set": name, **{column: texts[i] for column, texts in rows.items()}}
        for name, rows in predictions.items() for i in range(min(3, len(rows["reference"])))
    ]
    return results


def write_run_outputs(results: dict, output_dir: str, log_history: list[dict], model, processor,
                      data: TrainingData, data_args: DataArguments) -> tuple[Path, Path]:
    """``results.json``, ``results.md`` and the pictures (error rates, training curves; for the demo corpus the
    mic-vs-LDV spectrograms and the gate over time). Returns the JSON and Markdown paths."""
    from ..evaluation.report import plot_error_rates, plot_training_curves, write_results

    json_path, md_path = write_results(results, output_dir)
    plot_error_rates(results, os.path.join(output_dir, "error_rates.png"))
    if log_history and any("loss" in h for h in log_history):
        plot_training_curves(log_history, os.path.join(output_dir, "training_curves.png"))
    if data.corpus is not None:
        write_demo_pictures(model, processor, data.corpus, data_args, output_dir)
    return json_path, md_path


def write_demo_pictures(model, processor, corpus, data_args: DataArguments, output_dir: str) -> None:
    """Mic vs LDV spectrograms of one test utterance, and the adapter's gate values over time for it."""
    from ..evaluation.plots import plot_gate_over_time, plot_mic_vs_ldv
    from ..synthetic.simulator import get_condition

    name = get_condition(data_args.condition).name
    row = corpus["test"].filter(lambda c: c == name, input_columns="condition")[0]
    mic, ldv = (np.asarray(row[k]["array"], dtype=np.float32) for k in ("mic_audio", "ldv_audio"))
    plot_mic_vs_ldv(mic, ldv, SAMPLING_RATE, os.path.join(output_dir, "mic_vs_ldv.png"), title=row["text"])
    if getattr(model.domain_adapter, "gate", None) is None:  # no adapter, or one without a gate (lora)
        return
    features = processor.feature_extractor([ldv], sampling_rate=SAMPLING_RATE, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    device = next(model.parameters()).device
    with torch.no_grad():  # the adapter's input: the tower's output, or its states inside it (encoder_layer)
        hidden, lengths = model.domain_adapter_inputs(features["input_features"], features["attention_mask"])
        details = model.domain_adapter(hidden, torch.arange(hidden.shape[1], device=device)[None] < lengths[:, None],
                                       output_gate=True)
    if details.gate is not None:
        plot_gate_over_time(ldv, SAMPLING_RATE, details.gate[0, : int(lengths[0])].float().cpu().numpy(),
                            os.path.join(output_dir, "gate_over_time.png"), title=row["text"])


__all__ = [
    "evaluate_run",
    "load_model_for_training",
    "load_saved_adapter",
    "quantization_kwargs",
    "training_collator",
    "write_demo_pictures",
    "write_run_outputs",
]
