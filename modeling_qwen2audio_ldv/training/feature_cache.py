# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The frozen tower's outputs, computed once per clip: the feature cache and the collator that trains from it.

The audio tower is frozen, so its output for a clip never changes during training. :func:`build_feature_cache`
runs it once per clip (on the valid frames only) and writes the result to a memory-mapped Arrow file keyed by
:func:`feature_cache_fingerprint` (every tower weight, the feature extractor and every clip);
:class:`CachedFeatureCollator` builds training batches from it, so an epoch runs the adapter and the LLM only.
"""

import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLING_RATE, audio_to_array
from ..audio_tower_qwen2audio_ldv import encode_audio, encode_audio_to_layer, execution_device, pooled_lengths

logger = logging.getLogger(__name__)


#: Values sampled (evenly strided) from every tower tensor for the cache key, on top of exact sums over all values.
_FINGERPRINT_SAMPLES = 1024
#: Rows per Arrow record batch while the cache is written (bounded memory, whatever the corpus size).
_CACHE_WRITER_BATCH = 256
_CACHE_FILE = "features.arrow"
#: Encoding batches per window of rows sorted by length before encoding (the memory held: this many batches' audio).
_SORT_WINDOW_BATCHES = 8


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
                digest.update(audio_to_array(value).tobytes())
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


def with_length_column(dataset, d_model: int, key: str = "audio_encoder", name: str = "length"):
    """``dataset`` (from :func:`build_feature_cache`) plus ``name``: the cached frames of ``key`` per clip, read off
    the Arrow list lengths (no clip is decoded). The Trainer's ``--train_sampling_strategy group_by_length`` batches
    clips of similar length with it, so a batch pads less."""
    import pyarrow.compute as pc

    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    values = pc.list_value_length(dataset.data.column(key)).to_numpy(zero_copy_only=False)
    if np.any(values % d_model):
        raise ValueError(f"feature cache column {key!r}: a clip's length is not a whole number of {d_model} frames")
    format_ = dataset.format  # add_column would add the lengths to the float16 numpy columns: keep them plain ints
    result = dataset.add_column(name, (values // d_model).tolist())
    return result.with_format(format_["type"], columns=format_["columns"],
                              output_all_columns=format_["output_all_columns"], **format_["format_kwargs"])


def collate_cached_features(clips, d_model: int, key: str = "audio_encoder") -> tuple[torch.Tensor, torch.Tensor]:
    """Cached clips -> ``(batch, max_frames, d_model)`` float32, zero-padded, and ``(batch,)`` frames per clip.

    ``clips``: flat ``(frames * d_model,)`` arrays as the cache reads them (float16 numpy; tensors and lists also
    work, lists slowly). One float32 buffer is allocated for the batch and each clip is cast straight into its rows:
    one pass over the clip's bytes, where a float32 copy per clip and then ``pad_sequence`` cost two, and the
    buffer's padding is written once, not zero-filled and then overwritten. The result equals ``pad_sequence`` over
    the clips cast one by one, bit for bit (float16 -> float32 is exact).

    Raises:
        ValueError: a clip whose length is not a whole number of ``d_model`` frames (named by ``key`` and row).
    """
    frames = []
    for row, clip in enumerate(clips):
        if not isinstance(clip, torch.Tensor):
            with warnings.catch_warnings():
                # the cache's arrays are read-only views of the memory-mapped file; they are only read (copied into
                # the batch below), never written
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                clip = torch.from_numpy(np.asarray(clip, dtype=np.float16))
        if clip.numel() % d_model:
            raise ValueError(f"{key} of row {row}: {clip.numel()} values, not a whole number of frames of d_model "
                             f"{d_model}")
        frames.append(clip.reshape(-1, d_model))
    lengths = torch.tensor([clip.shape[0] for clip in frames], dtype=torch.long)
    batch = torch.empty(len(frames), max((clip.shape[0] for clip in frames), default=0), d_model)
    for row, clip in enumerate(frames):
        batch[row, : clip.shape[0]].copy_(clip)
        batch[row, clip.shape[0] :].zero_()
    return batch, lengths


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
    try:
        _write_features(model, processor, dataset.select_columns(list(audio_columns)), layers,
                        os.path.join(partial, _CACHE_FILE), batch_size, progress)
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


def _write_features(model, processor, rows, layers: dict, file: str, batch_size: int, progress: bool) -> None:
    """Encode every clip of ``rows`` (one column per key of ``layers``) and write ``<column>_encoder`` to the Arrow
    ``file`` in record batches (bounded memory, whatever the corpus size)."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    audio_columns = tuple(layers)
    names = [f"{column}_encoder" for column in audio_columns]
    features = datasets.Features({name: datasets.List(datasets.Value("float16")) for name in names})
    tower = model.model.audio_tower
    device = _tower_device(tower)
    dtype = tower.conv1.weight.dtype
    if not dtype.is_floating_point:  # a quantised conv: the compute dtype of the model
        dtype = getattr(model, "dtype", torch.float32)
    trim = model.config.trim_audio_tower
    with ArrowWriter(features=features, path=file, writer_batch_size=_CACHE_WRITER_BATCH) as writer, \
            tqdm(total=len(rows), desc="caching tower features", unit="clip", disable=not progress) as bar:
        # a window of rows at a time: its clips are encoded shortest first, `batch_size` at a time, so a batch pads
        # to a length close to each of its clips'; the window is written back in the rows' order
        for chunk in rows.iter(batch_size=batch_size * _SORT_WINDOW_BATCHES):
            encoded = {name: encode_shortest_first(model, processor, [audio_to_array(c) for c in chunk[column]],
                                                   layers[column], batch_size, device, dtype, trim)
                       for column, name in zip(audio_columns, names)}
            writer.write_batch(encoded)
            bar.update(len(chunk[audio_columns[0]]))
        writer.finalize()


def encode_shortest_first(model, processor, arrays: list, layer: int | None, batch_size: int, device, dtype,
                          trim: bool) -> list[np.ndarray]:
    """:func:`_encode_clips` over ``arrays`` in batches of ``batch_size`` clips of similar length (shortest first),
    returned in the order of ``arrays``."""
    order = sorted(range(len(arrays)), key=lambda i: len(arrays[i]))
    clips = [None] * len(arrays)
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        for i, clip in zip(picked, _encode_clips(model, processor, [arrays[i] for i in picked], layer, device, dtype,
                                                 trim)):
            clips[i] = clip
    return clips


#: Zero samples kept after a batch's longest clip when its mel spectrogram is computed short (see
#: :func:`_tower_inputs`): ten hops, past every frame the trimmed tower reads (the longest valid one plus three) and
#: the STFT window around it (half of n_fft, 200 samples, at Whisper's 400).
_SHORT_MEL_MARGIN_HOPS = 10


def _tower_inputs(feature_extractor, arrays: list, trim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_features, attention_mask)`` for the tower, as the processor builds them (padded to the extractor's
    30 s), but with the spectrogram computed only as far as the trimmed tower reads it.

    The processor's Whisper extractor pads every clip to 30 s before its STFT: most of a short clip's cost. With the
    trimmed tower (``trim``), only the mel frames up to the batch's longest valid one plus three are read; their STFT
    windows see the same samples (the clip, then zeros) whether the clip is padded to 30 s or to the longest clip
    plus ten hops, and the log-mel's per-clip maximum is over the same clip frames and silent frames, so those frames
    are the same; the frames after them are padded with zeros to the 30 s shape (never read). Without trimming, or
    where a clip reaches 30 s, the extractor pads to 30 s as the processor does.
    """
    hop = getattr(feature_extractor, "hop_length", None)
    full = getattr(feature_extractor, "n_samples", None)
    short = None  # samples to pad to; None: the extractor's own 30 s
    if trim and hop and full:
        needed = max(len(a) for a in arrays) + _SHORT_MEL_MARGIN_HOPS * hop
        short = needed if needed < full else None
    inputs = feature_extractor(arrays, sampling_rate=SAMPLING_RATE, return_attention_mask=True, padding="max_length",
                               max_length=short, return_tensors="pt")
    features, mask = inputs["input_features"], inputs["attention_mask"]
    if short is None:
        return features, mask
    missing = full // hop - features.shape[-1]
    return torch.nn.functional.pad(features, (0, missing)), torch.nn.functional.pad(mask, (0, missing))


def _encode_clips(model, processor, arrays: list, layer: int | None, device, dtype, trim: bool) -> list[np.ndarray]:
    """The tower's output (``layer`` ``None``) or its states after ``layer`` layers for each clip (1-D float
    arrays at 16 kHz): flat ``(frames * d_model,)`` float16 over the valid frames."""
    tower = model.model.audio_tower
    features, mask = _tower_inputs(processor.feature_extractor, arrays, trim)
    if layer is None:
        hidden, lengths = encode_audio(tower, features.to(device, dtype), mask.to(device), trim=trim)
    else:
        hidden, lengths = encode_audio_to_layer(tower, features.to(device, dtype), mask.to(device), layer, trim=trim)
    hidden = hidden.to(torch.float16).cpu().numpy()
    return [hidden[row, :length].reshape(-1) for row, length in enumerate(lengths.tolist())]


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
        # the DataLoader reads a batch's rows in one call (datasets' __getitems__); the clips become one padded
        # float32 batch in one pass (collate_cached_features)
        features, lengths = collate_cached_features([e[self.feature_key] for e in examples], self.d_model,
                                                    self.feature_key)
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
            "audio_encoder_hidden_states": features,
            "audio_encoder_lengths": lengths,
        }
        if self.mic_feature_key:
            out["mic_audio_encoder_hidden_states"] = collate_cached_features(
                [e[self.mic_feature_key] for e in examples], self.d_model, self.mic_feature_key)[0]
        return out


__all__ = ["CachedFeatureCollator", "build_feature_cache", "collate_cached_features", "feature_cache_fingerprint"]
