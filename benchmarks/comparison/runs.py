# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""One comparison run: the shared data, a row's model made trainable as the row says, its training and its scores."""

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoProcessor, PrinterCallback, TrainingArguments, set_seed

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration
from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION, DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.evaluation.evaluate import evaluate_sets
from modeling_qwen2audio_ldv.training.arguments import DataArguments
from modeling_qwen2audio_ldv.training.data import build_demo_data, mic_rows
from modeling_qwen2audio_ldv.training.feature_cache import CachedFeatureCollator, build_feature_cache
from modeling_qwen2audio_ldv.training.objectives import needs_mic_clip
from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

from .arguments import CompareArguments
from .resume import row_spec
from .rows import ROW_BY_NAME, Row, adapter_config_for, row_objective

logger = logging.getLogger(__name__)

PROJECTOR_PREFIX = "model.multi_modal_projector."


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
        """Which training rows are microphone rows for ``seed``: the draw ``train_hf.py`` makes (``mic_rows``)."""
        return mic_rows(len(self.texts), mic_fraction, seed)

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
    """Synthesise the demo corpus (``build_demo_data``, as ``train_hf.py``) and cache the frozen tower's outputs
    once."""
    from modeling_qwen2audio_ldv.audio import audio_to_array

    start = time.perf_counter()
    data_args = DataArguments(condition=args.condition, num_train_utterances=args.num_train_utterances,
                              num_eval_utterances=args.num_eval_utterances, corpus_seed=args.corpus_seed,
                              mic_fraction=args.mic_fraction, text_kinds=list(args.text_kinds),
                              voices=list(args.voices) if args.voices else None)
    _, eval_sets, corpus = build_demo_data(data_args, args.seeds[0])
    if args.real_voice_set:
        from modeling_qwen2audio_ldv.training.data import real_voice_eval_sets

        eval_sets.update(real_voice_eval_sets(DataArguments(real_voice_set=args.real_voice_set,
                                                            real_voice_samples=args.real_voice_samples),
                                              args.condition))
    # the training utterances before the microphone share is mixed in: each row's LDV and microphone clip, encoded
    # once (every row and seed draws its own microphone rows from them, :meth:`ComparisonData.mic_rows`)
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
        row, encoder_width(base), args))
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


def encoder_width(base: str) -> int:
    """The audio encoder's width (``d_model``) of the base model at ``base``."""
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
    d_model = encoder_width(base)
    mic_fraction = args.mic_fraction if row.mic_fraction is None else row.mic_fraction
    layer = dict(row.adapter).get("encoder_layer")
    if row.method == "oracle":
        examples = data.audio_examples(seed, mic_fraction)
        collator = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train")
    else:
        examples = data.cached_examples(seed, mic_fraction, layer)
        collator = CachedFeatureCollator(processor, instruction, d_model=d_model,
                                         mic_feature_key="mic_audio_encoder" if needs_mic_clip(objective) else None,
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
        **real_voice_scores(scores),
        "projector_preserved": bool(preserved), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
    if row.method == "adapter":
        record["adapter_config"] = model.config.adapter_config.to_dict()
    logger.info("%s seed %d: %s trainable, train %.1f s, eval %.1f s, LDV CER %.2f%%, mic CER %.2f%%, projector "
                "preserved %s", row.name, seed, f"{trainable:,}", train_seconds, eval_seconds,
                100 * record["ldv_cer"], 100 * record["mic_cer"], preserved)
    return record


def real_voice_scores(scores: dict[str, Any]) -> dict[str, float]:
    """The real-voice set's CER/WER of a scored run (``real_ldv_cer``, ...), empty without the set."""
    return {f"{name}_{metric}": scores[name]["adapted"][metric]
            for name in ("real_ldv", "real_mic") if name in scores for metric in ("cer", "wer")}


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
        **real_voice_scores(scores),
        "projector_preserved": True,
    }
    logger.info("%s (%s): LDV CER %.2f%%, mic CER %.2f%%", row, base, 100 * record["ldv_cer"],
                100 * record["mic_cer"])
    return record
