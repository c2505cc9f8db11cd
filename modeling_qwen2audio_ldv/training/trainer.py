"""Training pieces used by ``train_hf.py``: objectives, the adapter Trainer, and the frozen-tower feature cache.

Objectives (``objective=``):

- ``lm``: cross-entropy on the response (transcript) tokens, the whole model in the loop.
- ``distill``: paired data only. The adapter's output on the LDV clip is pulled towards the frozen tower's output
  on the paired microphone clip, over the valid frames (MSE and/or cosine). No LLM forward.
- ``lm+distill``: ``lm + distill_weight * distill``.
"""

import functools
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import Trainer

from ..adapter_bank_qwen2audio_ldv import ADAPTER_WEIGHTS_NAME, load_adapter_state
from ..audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer, execution_device, pooled_lengths
from ..configuration_qwen2audio_ldv import DomainAdapterConfig
from ..modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

logger = logging.getLogger(__name__)

OBJECTIVES = ("lm", "distill", "lm+distill")
DISTILL_LOSSES = ("mse", "cosine", "mse+cosine")


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Feature-matching loss over valid frames.

    Args:
        student: adapter output on LDV audio ``(batch, frames, d_model)``.
        teacher: frozen tower output on the paired microphone audio, same shape.
        lengths: valid frames per clip ``(batch,)``; padded frames do not count.
        kind: ``mse`` (mean squared error per element), ``cosine`` (mean of ``1 - cos`` per frame) or both summed.
    """
    if kind not in DISTILL_LOSSES:
        raise ValueError(f"`distill_loss` ({kind!r}) must be one of {DISTILL_LOSSES}")
    frames = min(student.shape[1], teacher.shape[1])
    student, teacher = student[:, :frames].float(), teacher[:, :frames].float()
    mask = torch.arange(frames, device=student.device)[None, :] < lengths.to(student.device)[:, None]
    count = mask.sum().clamp_min(1)
    loss = student.new_zeros(())
    if "mse" in kind:
        loss = loss + ((student - teacher) ** 2).mean(-1)[mask].sum() / count
    if "cosine" in kind:
        loss = loss + (1 - F.cosine_similarity(student, teacher, dim=-1))[mask].sum() / count
    return loss


def adapter_parameter_groups(model, learning_rate: float, scale_learning_rate: float | None, weight_decay: float):
    """Optimiser groups over the trainable adapter parameters only; ``scale`` gets its own learning rate.

    The guide's FAQ (loss not falling): a larger learning rate for ``scale`` (e.g. 10x) lets the correction's
    strength move faster than the adapter's weights.
    """
    scale, decay, no_decay = [], [], []
    prefix = model.active_adapter_prefix()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if not name.startswith(prefix):
            raise ValueError(f"parameter {name!r} is trainable but not part of the adapter; call freeze_base_model()")
        if name == prefix + "scale":
            scale.append(parameter)
        elif parameter.dim() < 2:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    if not (scale or decay or no_decay):
        raise ValueError("the model has no trainable adapter parameters (adapter_type 'none'?)")
    groups = [
        {"params": decay, "lr": learning_rate, "weight_decay": weight_decay},
        {"params": no_decay, "lr": learning_rate, "weight_decay": 0.0},
        {"params": scale, "lr": scale_learning_rate or learning_rate, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


class DomainAdapterTrainer(Trainer):
    """The HF Trainer with the adapter objectives, adapter-only optimiser groups and a strict resume."""

    def __init__(self, *args, objective: str = "lm", distill_weight: float = 1.0, distill_loss: str = "mse",
                 scale_learning_rate: float | None = None, distill_warmup_steps: int = 0, **kwargs):
        if objective not in OBJECTIVES:
            raise ValueError(f"`objective` ({objective!r}) must be one of {OBJECTIVES}")
        if distill_warmup_steps < 0 or (distill_warmup_steps and objective != "lm+distill"):
            raise ValueError(f"`distill_warmup_steps` ({distill_warmup_steps}) must be >= 0, and > 0 only with the "
                             f"lm+distill objective (got {objective!r})")
        self._objective = objective
        # the first `distill_warmup_steps` optimiser steps train on the distillation loss alone: no LLM forward,
        # a fraction of a full step's cost from the feature cache
        self.distill_warmup_steps = distill_warmup_steps
        self.distill_weight = distill_weight
        self.distill_kind = distill_loss
        self.scale_learning_rate = scale_learning_rate
        model = kwargs.get("model", args[0] if args else None)
        with _quantized_base_with_adapter(model):
            super().__init__(*args, **kwargs)

    @property
    def objective(self) -> str:
        """The objective of the current step: ``distill`` during the warm-up, then the configured one."""
        warming = self.distill_warmup_steps and self.model.training and self.state.global_step < self.distill_warmup_steps
        return "distill" if warming else self._objective

    @objective.setter
    def objective(self, value: str) -> None:
        self._objective = value

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = adapter_parameter_groups(self.model, self.args.learning_rate, self.scale_learning_rate,
                                              self.args.weight_decay)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # Losses are sums normalised by the GLOBAL count of supervised tokens / valid frames of the optimiser step
    # (over gradient-accumulation micro-batches and processes), so one process with batch B and N processes with
    # B / N each take the same step; the Trainer then neither divides by the accumulation steps nor lets DDP's
    # gradient averaging change the scale.
    loss_is_scaled_for_ga = True

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_distill_frames = None
        if "distill" in self.objective:
            inside = self.accelerator.unwrap_model(self.model)._cached_features_layer() is not None
            frames = sum(_valid_frames(batch, inside).sum() for batch in batch_samples)
            frames = torch.as_tensor(frames, device=device)
            if self.args.world_size > 1:
                frames = self.accelerator.gather(frames.reshape(1)).sum()
            self._step_distill_frames = frames
        if "lm" in self.objective.split("+") and num_items_in_batch is None:
            tokens = sum((batch["labels"][..., 1:] != -100).sum() for batch in batch_samples)
            num_items_in_batch = torch.as_tensor(tokens, device=device)
            if self.args.world_size > 1:
                num_items_in_batch = self.accelerator.gather(num_items_in_batch.reshape(1)).sum()
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        extra = {k: inputs.pop(k) for k in list(inputs) if k.startswith(("mic_", "distill_"))}
        # scale of a sum normalised by a global count: undo DDP's averaging over processes
        process_scale = self.args.world_size if self.model.training else 1
        loss = None
        outputs = None
        student = None
        if (self.objective == "lm+distill" and "audio_encoder_hidden_states" in inputs
                and "mic_audio_encoder_hidden_states" in extra and inputs.get("audio_domain") is None):
            # From the feature cache the adapter runs once per step: its output is the distillation student and,
            # routed as "mic" (no second adapter pass), the audio the LLM hears. The same loss and gradients as two
            # passes (bit for bit without adapter dropout), at half the adapter's cost.
            student = self._adapter_output(model, inputs["audio_encoder_hidden_states"],
                                           inputs["audio_encoder_lengths"])
        if "lm" in self.objective.split("+"):
            labels = inputs.pop("labels")
            lm_inputs = inputs if student is None else {**inputs, "audio_encoder_hidden_states": student[0],
                                                        "audio_encoder_lengths": student[1],
                                                        "audio_features_adapted": True}
            # the head (and its full-vocabulary float logits) only on positions whose next token is supervised: the
            # prompt and the audio run carry no labels
            supervised = labels[:, 1:] != -100
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = supervised
            outputs = model(**lm_inputs, logits_to_keep=keep)
            logits = outputs.logits.float()  # (supervised tokens, vocab), row-major like labels[:, 1:][supervised]
            targets = labels[:, 1:][supervised].to(logits.device)
            token_loss = F.cross_entropy(logits, targets, reduction="sum")
            if num_items_in_batch is None or not self.model.training:
                loss = token_loss / max(targets.numel(), 1)
            else:
                loss = token_loss / num_items_in_batch * process_scale
        if "distill" in self.objective:
            frames = getattr(self, "_step_distill_frames", None) if self.model.training else None
            distill_sum, local_frames = self._distill(model, inputs, extra, student)
            if frames is None:
                distill = distill_sum / local_frames.clamp_min(1)
            else:
                distill = distill_sum / frames.clamp_min(1) * process_scale
            loss = distill if loss is None else loss + self.distill_weight * distill
        return (loss, outputs) if return_outputs else loss

    def _adapter_output(self, model, hidden: torch.Tensor, lengths: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The active adapter on frozen-tower states (and, for an adapter inside the tower, the tower's remaining
        layers), through the (possibly DDP-wrapped) model's forward so that gradients are synchronised across
        processes. Returns the adapted tower output and its valid lengths."""
        unwrapped = self.accelerator.unwrap_model(model)
        output = model(audio_encoder_hidden_states=hidden.to(unwrapped.domain_adapter.scale.dtype),
                       audio_encoder_lengths=lengths)
        return output.hidden_states, output.output_lengths

    def _distill(self, model, inputs, extra, student=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed distillation loss over valid output frames, and their number (``student``: the adapted tower
        output and lengths when already computed from the cached features). The teacher is the frozen tower's
        output on the paired microphone clip, wherever the adapter sits."""
        unwrapped = self.accelerator.unwrap_model(model)
        if "audio_encoder_hidden_states" in inputs and "mic_audio_encoder_hidden_states" in extra:
            student_in, lengths = inputs["audio_encoder_hidden_states"], inputs["audio_encoder_lengths"]
            teacher = extra["mic_audio_encoder_hidden_states"]
        elif "mic_input_features" in extra:
            tower = unwrapped.model.audio_tower
            trim = unwrapped.config.trim_audio_tower
            layer = unwrapped._cached_features_layer()
            with torch.no_grad():
                if layer is None:
                    student_in, lengths = encode_audio(tower, inputs["input_features"],
                                                       inputs["feature_attention_mask"], trim=trim)
                else:  # the adapter's input inside the tower; the rest of the tower runs with the adapter
                    student_in, lengths = encode_audio_to_layer(tower, inputs["input_features"],
                                                                inputs["feature_attention_mask"], layer, trim=trim)
                teacher, _ = encode_audio(tower, extra["mic_input_features"], extra["mic_feature_attention_mask"],
                                          trim=trim)
        else:
            raise ValueError("the distill objective needs paired data (a mic_audio column)")
        student, out_lengths = self._adapter_output(model, student_in, lengths) if student is None else student
        frames = out_lengths.sum()
        return distillation_loss(student, teacher, out_lengths, self.distill_kind) * frames, frames

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Load the adapter of a checkpoint strictly (the stock resume load is non-strict)."""
        model = self.accelerator.unwrap_model(model or self.model)
        load_adapter_checkpoint(model, resume_from_checkpoint)

    def _load_best_model(self):
        load_adapter_checkpoint(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


class _quantized_base_with_adapter:
    """Let the Trainer accept a quantised (e.g. 4-bit bitsandbytes) base that carries a trainable domain adapter.

    The Trainer refuses a "purely quantized" model unless a PEFT adapter is attached; the domain adapter plays that
    role here (it is kept out of quantisation and is the only trainable part), so the check is told so while the
    Trainer is built, and only when the quantisation method supports training and the adapter is trainable.
    """

    def __init__(self, model):
        quantizer = getattr(model, "hf_quantizer", None)
        self.model = model if (
            getattr(model, "is_quantized", False) and quantizer is not None
            and getattr(quantizer, "is_trainable", False)
            and not getattr(model, "_hf_peft_config_loaded", False)
            and any(p.requires_grad for p in getattr(model, "domain_adapter_parameters", lambda: [])())
        ) else None

    def __enter__(self):
        if self.model is not None:
            self.model._hf_peft_config_loaded = True

    def __exit__(self, *exc):
        if self.model is not None:
            self.model._hf_peft_config_loaded = False
        return False


def _valid_frames(batch, inside_tower: bool = False) -> torch.Tensor:
    """Valid tower output frames per clip of a collated batch (cached or from audio): the frames distillation
    compares. ``inside_tower``: cached states of an adapter inside the tower (two per output frame)."""
    if "audio_encoder_lengths" in batch:
        lengths = batch["audio_encoder_lengths"]
        return pooled_lengths(lengths) if inside_tower else lengths
    mel = batch["feature_attention_mask"].sum(-1)
    return ((mel - 1) // 2 + 1 - 2) // 2 + 1


def load_adapter_checkpoint(model: Qwen2AudioLDVForConditionalGeneration, checkpoint_dir: str) -> None:
    """Load a Trainer checkpoint's adapter into ``model``: same adapter configuration, every key, nothing else."""
    config_path = os.path.join(checkpoint_dir, "config.json")
    weights_path = os.path.join(checkpoint_dir, ADAPTER_WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{checkpoint_dir}: no {ADAPTER_WEIGHTS_NAME}; not an adapter checkpoint")
    with open(config_path, encoding="utf-8") as handle:
        saved = DomainAdapterConfig.from_dict(json.load(handle).get("domain_adapter") or {})
    current = model.config.adapter_config
    if saved != current:
        differences = {k: (v, getattr(current, k)) for k, v in saved.to_dict().items() if getattr(current, k) != v}
        raise ValueError(
            f"{checkpoint_dir}: checkpoint was trained with another adapter configuration; differing fields "
            f"(checkpoint, current): {differences}"
        )
    state = {k: v.to(model.domain_adapter.scale.device) for k, v in load_file(weights_path).items()}
    load_adapter_state(model.domain_adapter, state, weights_path)


# ------------------------------------------------------------------------------------------------ feature cache
def _audio_array(value: Any) -> np.ndarray:
    from ..data.collator import audio_to_array

    return audio_to_array(value)


#: Values sampled (evenly strided) from every tower tensor for the cache key, on top of exact sums over all values.
_FINGERPRINT_SAMPLES = 1024
#: Rows per Arrow record batch while the cache is written (bounded memory, whatever the corpus size).
_CACHE_WRITER_BATCH = 256
_CACHE_FILE = "features.arrow"


_INTEGER_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@functools.lru_cache(maxsize=16)
def _position_weights(numel: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """1, 2, ..., 251, 1, 2, ... (a tower has a handful of distinct tensor sizes: computed once per size)."""
    return torch.arange(numel, device=device, dtype=dtype) % 251 + 1


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    """A cheap, exact, device-independent digest of one weight: dtype, shape, two integer sums over the raw bits of
    every value (plain and position-weighted) and an evenly strided sample of the values.

    The bits are summed as integers (wrapping modulo 2**32, or 2**64 for 8-byte values), so the result is exact and
    the same on any device and in any reduction order; a change of any single value changes the plain sum, and the
    weighted sum and the sample see values that trade places. Runs where the tensor lives (CUDA/MPS too) and moves
    only a few numbers to the CPU: about 1.5 s for the 32-layer encoder on one CPU thread.
    """
    values = tensor.detach()
    head = f"{values.dtype}{tuple(values.shape)}".encode()
    if values.is_meta:  # an offloaded weight without its value here: only its shape and dtype can count
        return head + b"meta"
    flat = values.reshape(-1)
    if flat.numel() == 0:
        return head
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    bits = flat.contiguous().view(_INTEGER_VIEWS[flat.element_size()])
    accumulate = torch.int64 if bits.element_size() == 8 else torch.int32
    bits = bits.to(accumulate)
    weights = _position_weights(bits.numel(), str(bits.device), accumulate)
    sums = torch.stack([bits.sum(dtype=accumulate), (bits * weights).sum(dtype=accumulate)]).cpu().tolist()
    step = max(1, bits.numel() // _FINGERPRINT_SAMPLES)
    sample = bits[::step][:_FINGERPRINT_SAMPLES].cpu().numpy()
    return head + ",".join(map(str, sums)).encode() + sample.tobytes()


def feature_cache_fingerprint(model, feature_extractor, dataset, audio_columns, batch_size: int = 64,
                              encoder_layers=None) -> str:
    """A key over the base model (every audio-tower weight), the feature extractor, the trim setting, where each
    column is taken (``encoder_layers``) and every clip.

    Any change of a tower weight, a feature-extractor setting or a clip's samples gives another cache. The clips are
    read in batches of ``batch_size`` (the corpus is never decoded into memory at once).
    """
    digest = hashlib.sha256()
    layers = {column: (encoder_layers or {}).get(column) for column in audio_columns}
    if any(layer is not None for layer in layers.values()):  # keys of tower-output caches stay as they were
        digest.update(json.dumps(layers, sort_keys=True).encode())
    digest.update(str(model.config.base_model_name_or_path or model.config.name_or_path).encode())
    digest.update(json.dumps(model.config.audio_config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(f"trim={bool(getattr(model.config, 'trim_audio_tower', True))}".encode())
    for name, tensor in sorted(model.model.audio_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(_tensor_digest(tensor))
    digest.update(feature_extractor.to_json_string().encode())
    digest.update(f"rows={len(dataset)}".encode())
    for column in audio_columns:
        digest.update(column.encode())
        for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
            for value in batch[column]:
                digest.update(_audio_array(value).tobytes())
    return digest.hexdigest()[:16]


def _load_cached_features(path: str):
    import datasets

    return datasets.Dataset.from_file(os.path.join(path, _CACHE_FILE))


def _with_cached_features(dataset, features, audio_columns, drop_columns=()):
    """``dataset`` (less ``drop_columns``) plus the cached ``<column>_encoder`` columns, read as numpy arrays."""
    import datasets

    names = [f"{column}_encoder" for column in audio_columns]
    clash = [name for name in names if name in dataset.column_names]
    clash += [name for name in drop_columns if name in dataset.column_names and name not in clash]
    if clash:
        dataset = dataset.remove_columns(clash)
    if len(features) != len(dataset):
        raise ValueError(f"feature cache has {len(features)} rows, the dataset {len(dataset)}")
    if dataset._indices is not None:  # a filtered/selected dataset: align its rows with the cache's (this copies
        dataset = dataset.flatten_indices()  # the remaining columns: drop the audio first with `drop_columns`)
    result = datasets.concatenate_datasets([dataset, features.select_columns(names)], axis=1)
    # float16 as stored (numpy format would otherwise widen to float32); the collator casts per batch
    return result.with_format("numpy", columns=names, output_all_columns=True, dtype=np.float16)


def _tower_device(tower) -> torch.device:
    return execution_device(tower)


@torch.no_grad()
def build_feature_cache(model, processor, dataset, audio_columns=("audio",), cache_dir=None, batch_size=16,
                        progress=True, device=None, drop_columns=(), encoder_layers=None):
    """Add the frozen tower's outputs for each audio column as ``<column>_encoder`` (float16, valid frames only).

    ``encoder_layers``: ``{column: k}`` caches that column's hidden states after the tower's first ``k`` layers
    instead (the input of an adapter inside the tower, ``DomainAdapterConfig.encoder_layer``; two frames per output
    frame); a column not named, or named with ``None``, holds the tower's output.

    The tower runs on ``device`` (default: where it is; ``train_hf.py`` moves the model to the training device
    first, so a GPU encodes the corpus). The features are written to a memory-mapped Arrow file
    ``cache_dir/<fingerprint>/features.arrow`` as they are computed (in record batches, so memory does not grow
    with the corpus); a later call with the same tower weights, feature extractor and audio reuses it. Without
    ``cache_dir`` a temporary file is used. The returned dataset reads the ``*_encoder`` columns in numpy format
    (flat ``(frames * d_model,)`` float16 per clip; the collator reshapes them). ``drop_columns`` (e.g. the audio
    columns, once encoded) are left out of the returned dataset.

    Disk cost: ``frames * d_model * 2`` bytes per clip (25 encoder frames per second: 3 s at d_model 1280 =
    75 * 1280 * 2 = 192 KB; at the mini base's d_model 128, 19 KB).
    """
    import shutil
    import tempfile

    import datasets
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    audio_columns = tuple(audio_columns)
    tower = model.model.audio_tower
    if device is not None and torch.device(device) != _tower_device(tower):
        if getattr(tower, "_hf_hook", None) is not None or getattr(model, "hf_device_map", None):
            raise ValueError("build_feature_cache(device=...) cannot move a model dispatched with device_map; "
                             "leave device unset (the tower runs where device_map put it)")
        home = _tower_device(tower)
        tower.to(device)
        try:
            return build_feature_cache(model, processor, dataset, audio_columns, cache_dir, batch_size, progress,
                                       drop_columns=drop_columns, encoder_layers=encoder_layers)
        finally:
            tower.to(home)
    layers = {column: (encoder_layers or {}).get(column) for column in audio_columns}
    unknown = sorted(set(encoder_layers or {}) - set(audio_columns))
    if unknown:
        raise ValueError(f"encoder_layers names columns {unknown} that are not among audio_columns {audio_columns}")
    fingerprint = feature_cache_fingerprint(model, processor.feature_extractor, dataset, audio_columns, batch_size,
                                            encoder_layers=layers)
    if cache_dir:
        path = os.path.join(cache_dir, fingerprint)
        if os.path.isfile(os.path.join(path, _CACHE_FILE)):
            logger.info("feature cache hit: %s", path)
            return _with_cached_features(dataset, _load_cached_features(path), audio_columns, drop_columns)
        os.makedirs(cache_dir, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=f".{fingerprint}-", dir=cache_dir)
    else:
        path = partial = tempfile.mkdtemp(prefix="ldv-feature-cache-")
    names = [f"{column}_encoder" for column in audio_columns]
    features = datasets.Features({name: datasets.List(datasets.Value("float16")) for name in names})
    device = _tower_device(tower)
    dtype = tower.conv1.weight.dtype
    if not dtype.is_floating_point:  # a quantised conv: the compute dtype of the model
        dtype = getattr(model, "dtype", torch.float32)
    rows = dataset.select_columns(list(audio_columns))
    try:
        with ArrowWriter(features=features, path=os.path.join(partial, _CACHE_FILE),
                         writer_batch_size=_CACHE_WRITER_BATCH) as writer:
            batches = rows.iter(batch_size=batch_size)
            for batch in tqdm(batches, total=math.ceil(len(rows) / batch_size), desc="caching tower features",
                              disable=not progress):
                encoded = {}
                for column, name in zip(audio_columns, names):
                    inputs = processor.feature_extractor([_audio_array(r) for r in batch[column]], sampling_rate=16000,
                                                         return_attention_mask=True, padding="max_length",
                                                         return_tensors="pt")
                    if layers[column] is None:
                        hidden, lengths = encode_audio(tower, inputs["input_features"].to(device, dtype),
                                                       inputs["attention_mask"].to(device),
                                                       trim=model.config.trim_audio_tower)
                    else:
                        hidden, lengths = encode_audio_to_layer(tower, inputs["input_features"].to(device, dtype),
                                                                inputs["attention_mask"].to(device), layers[column],
                                                                trim=model.config.trim_audio_tower)
                    hidden = hidden.to(torch.float16).cpu().numpy()
                    encoded[name] = [hidden[row, :length].reshape(-1) for row, length in enumerate(lengths.tolist())]
                writer.write_batch(encoded)
            writer.finalize()
        if cache_dir:
            try:
                os.replace(partial, path)  # appears complete or not at all (another process may have won)
            except OSError:
                shutil.rmtree(partial, ignore_errors=True)
                if not os.path.isfile(os.path.join(path, _CACHE_FILE)):
                    raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _with_cached_features(dataset, _load_cached_features(path), audio_columns, drop_columns)


@dataclass
class CachedFeatureCollator:
    """Batches for training from cached tower outputs (no ``input_features``; the tower is skipped).

    Builds the same token sequence the processor builds (one ``<|AUDIO|>`` per encoder frame), right-padded, with
    labels on the transcript and the final eos only.
    """

    processor: Any
    instruction: str
    feature_key: str = "audio_encoder"
    text_key: str = "text"
    mic_feature_key: str | None = None
    d_model: int = 0  # the audio encoder's width
    # the cached features are the tower's states before its 2x pooling (an adapter inside the tower): one <|AUDIO|>
    # token per output frame, (frames - 2) // 2 + 1 of them
    inside_tower: bool = False

    def _frames(self, flat) -> torch.Tensor:
        """A cached clip: flat ``(frames * d_model,)`` float16 -> ``(frames, d_model)`` float32.

        ``build_feature_cache`` returns the columns in numpy format (one array per clip, no Python floats);
        lists still work, only slower.
        """
        if isinstance(flat, torch.Tensor):
            return flat.reshape(-1, self.d_model).float()
        return torch.from_numpy(np.asarray(flat, dtype=np.float16)).reshape(-1, self.d_model).float()

    def __post_init__(self):
        from ..data.collator import DataCollatorForQwen2AudioLDV

        if self.d_model <= 0:
            raise ValueError("CachedFeatureCollator needs `d_model` (the audio encoder's width)")
        # the same prompt and end-of-transcript token as training from audio
        reference = DataCollatorForQwen2AudioLDV(processor=self.processor, instruction=self.instruction, mode="train")
        self._prompt, self._end_token = reference.prompt, reference.end_token

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        audio_token = self.processor.audio_token
        prompt = self._prompt
        features = [self._frames(e[self.feature_key]) for e in examples]
        lengths = torch.tensor([f.shape[0] for f in features])
        sequences, prompt_lengths = [], []
        tokens = pooled_lengths(lengths) if self.inside_tower else lengths
        for count in tokens.tolist():
            expanded = prompt.replace(audio_token, audio_token * count)
            prompt_lengths.append(len(tokenizer(expanded, add_special_tokens=False)["input_ids"]))
            sequences.append(expanded)
        texts = [s + e[self.text_key] + self._end_token for s, e in zip(sequences, examples)]
        batch = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
        labels = batch["input_ids"].clone()
        for row, n in enumerate(prompt_lengths):
            labels[row, :n] = -100
        labels[batch["attention_mask"] == 0] = -100
        out = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
            "audio_encoder_hidden_states": torch.nn.utils.rnn.pad_sequence(features, batch_first=True),
            "audio_encoder_lengths": lengths,
        }
        if self.mic_feature_key:
            mic = [self._frames(e[self.mic_feature_key]) for e in examples]
            out["mic_audio_encoder_hidden_states"] = torch.nn.utils.rnn.pad_sequence(mic, batch_first=True)
        return out
