"""The frozen-tower feature cache: its key, its hit branch, its format and its memory, on the tiny model."""

import copy
import tracemalloc

import datasets
import numpy as np
import pytest
import torch

from conftest import noise_clips
from modeling_qwen2audio_ldv import add_domain_adapter_to_model
from modeling_qwen2audio_ldv.training.feature_cache import (
    CachedFeatureCollator,
    _tensor_digest,
    build_feature_cache,
    feature_cache_fingerprint,
)


def _dataset(n=4, seed=0, seconds=(0.5, 0.625, 0.75, 0.875)):
    lengths = [int(16000 * seconds[i % len(seconds)]) for i in range(n)]
    data = datasets.Dataset.from_dict({
        "audio": [{"array": c, "sampling_rate": 16000} for c in noise_clips(lengths, seed)],
        "text": [f"clip {i}" for i in range(n)],
    })
    return data.cast_column("audio", datasets.Audio(sampling_rate=16000))


@pytest.fixture()
def model_and_processor(tiny_base):
    base, processor = tiny_base
    return add_domain_adapter_to_model(copy.deepcopy(base), adapter_type="none"), processor


def _key(model, processor, data):
    return feature_cache_fingerprint(model, processor.feature_extractor, data, ("audio",))


def test_key_changes_with_a_deep_encoder_weight_and_a_feature_extractor_setting(model_and_processor):
    model, processor = model_and_processor
    data = _dataset(2)
    reference = _key(model, processor, data)
    assert _key(model, processor, data) == reference  # deterministic
    tower = model.model.audio_tower
    with torch.no_grad():  # one value of the last layer's feed-forward, far from the convolutions
        tower.layers[-1].fc2.weight[3, 5] += 1e-3
    deep = _key(model, processor, data)
    assert deep != reference
    with torch.no_grad():
        tower.layers[-1].fc2.weight[3, 5] -= 1e-3
        tower.layer_norm.bias[0] += 1e-3  # the encoder's final norm
    assert _key(model, processor, data) not in (reference, deep)
    with torch.no_grad():
        tower.layer_norm.bias[0] -= 1e-3
    assert _key(model, processor, data) == reference
    # swapping two values keeps every sum: the strided sample and the position-weighted sum see it
    with torch.no_grad():
        weight = tower.layers[0].self_attn.q_proj.weight
        weight[[0, 1]] = weight[[1, 0]].clone()
    assert _key(model, processor, data) != reference
    with torch.no_grad():
        weight[[0, 1]] = weight[[1, 0]].clone()

    extractor = copy.deepcopy(processor.feature_extractor)
    extractor.padding_value = 0.5  # a feature-extractor setting
    assert feature_cache_fingerprint(model, extractor, data, ("audio",)) != reference
    model.config.trim_audio_tower = not model.config.trim_audio_tower
    try:
        assert _key(model, processor, data) != reference
    finally:
        model.config.trim_audio_tower = not model.config.trim_audio_tower


class _AcceleratorTensor(torch.Tensor):
    """Behaves as a CUDA/MPS tensor for numpy: ``.numpy()`` raises unless the tensor was moved with ``.cpu()``."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    def cpu(self, *args, **kwargs):
        return torch.Tensor.cpu(self, *args, **kwargs).as_subclass(torch.Tensor)


def test_key_is_computed_from_accelerator_tensors(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    data = _dataset(2)
    reference = _key(model, processor, data)
    tower = model.model.audio_tower
    state = {k: v.as_subclass(_AcceleratorTensor) for k, v in tower.state_dict().items()}
    with pytest.raises(TypeError):
        next(iter(state.values())).float().numpy()  # the stand-in refuses numpy like a CUDA tensor
    monkeypatch.setattr(tower, "state_dict", lambda *a, **k: state)
    assert _key(model, processor, data) == reference
    assert _tensor_digest(torch.zeros(0)) != _tensor_digest(torch.zeros(1))


def _count_tower_calls(tower):
    calls = []
    handles = [module.register_forward_hook(lambda *_: calls.append(1)) for module in (tower.conv1, *tower.layers)]
    return calls, handles


def test_second_build_runs_no_tower_and_reads_the_same_features(model_and_processor, tmp_path):
    model, processor = model_and_processor
    calls, handles = _count_tower_calls(model.model.audio_tower)
    try:
        first = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), batch_size=2,
                                    progress=False)
        assert len(calls) == 2 * (1 + len(model.model.audio_tower.layers))  # 2 batches: conv1 + each layer
        calls.clear()
        again = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), progress=False)
        assert calls == []  # a hit: the tower never ran
    finally:
        for handle in handles:
            handle.remove()
    for i in range(len(first)):
        assert np.array_equal(first[i]["audio_encoder"], again[i]["audio_encoder"])
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    with torch.no_grad():
        model.model.audio_tower.layers[-1].fc1.bias[0] += 0.1
    changed = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), progress=False)
    assert len(list(tmp_path.iterdir())) == 2  # another tower: another cache, with other features
    assert not np.array_equal(first[0]["audio_encoder"], changed[0]["audio_encoder"])


def test_cached_features_equal_the_tower_and_are_read_as_numpy(model_and_processor, tmp_path):
    from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio

    model, processor = model_and_processor
    data = _dataset(4).filter(lambda t: t != "clip 1", input_columns="text")  # an indices mapping
    cached = build_feature_cache(model, processor, data, cache_dir=str(tmp_path), progress=False)
    assert cached["text"] == ["clip 0", "clip 2", "clip 3"]
    row = cached[1]
    assert isinstance(row["audio_encoder"], np.ndarray) and row["audio_encoder"].dtype == np.float16
    assert isinstance(row["text"], str)
    inputs = processor.feature_extractor([data[1]["audio"]["array"]], sampling_rate=16000, return_attention_mask=True,
                                         padding="max_length", return_tensors="pt")
    with torch.no_grad():
        hidden, lengths = encode_audio(model.model.audio_tower, inputs["input_features"], inputs["attention_mask"])
    expected = hidden[0, : int(lengths[0])].to(torch.float16).numpy().reshape(-1)
    # row 1 of the filtered set is clip 2 (clips differ in length, so a misaligned row has another shape); batched
    # with other clips the trimmed pass runs over another length: equal up to float16 storage
    assert row["audio_encoder"].shape == expected.shape
    assert np.allclose(row["audio_encoder"], expected, atol=4e-3)
    # the format survives a column removal, and the collator reads it
    trimmed = cached.remove_columns(["audio"])
    assert isinstance(trimmed[0]["audio_encoder"], np.ndarray)
    # as train_hf.py asks: the audio left out (not copied when the filtered rows are aligned), features as before
    dropped = build_feature_cache(model, processor, data, cache_dir=str(tmp_path), progress=False,
                                  drop_columns=("audio",))
    assert dropped.column_names == ["text", "audio_encoder"]
    assert np.array_equal(dropped[1]["audio_encoder"], row["audio_encoder"])
    batch = CachedFeatureCollator(processor, "Transcribe the audio.", d_model=16)([trimmed[i] for i in range(3)])
    assert batch["audio_encoder_hidden_states"].dtype == torch.float32
    assert torch.equal(batch["audio_encoder_hidden_states"][1, : int(lengths[0])].reshape(-1),
                       torch.from_numpy(row["audio_encoder"]).float())


def _peak_bytes(model, processor, n, path):
    data = _dataset(n, seconds=(1.5,))
    tracemalloc.start()
    try:
        build_feature_cache(model, processor, data, cache_dir=str(path), batch_size=4, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_build_memory_does_not_grow_with_the_corpus(tiny_base, tmp_path):
    """Features are written as they are computed and the audio is read in windows of batches: 5x the clips, same
    peak."""
    from modeling_qwen2audio_ldv.testing import build_tiny_base

    base, processor = build_tiny_base(d_model=256, encoder_attention_heads=4)  # 38 frames x 256 x 2 B = 19 KB a clip
    model = add_domain_adapter_to_model(base, adapter_type="none")
    # clips are read a window of 8 batches of 4 at a time (sorted by length inside it): two windows, then ten
    small = _peak_bytes(model, processor, 64, tmp_path / "small")
    large = _peak_bytes(model, processor, 320, tmp_path / "large")
    # holding the features in a list until the end adds 256 clips x 19 KB = 4.9 MB (and their Arrow conversion)
    assert large < small + 1_000_000, (small, large)


def test_an_interrupted_build_leaves_no_cache_behind(model_and_processor, tmp_path, monkeypatch):
    import modeling_qwen2audio_ldv.training.feature_cache as feature_cache

    model, processor = model_and_processor
    real = feature_cache.encode_audio
    seen = []

    def failing(*args, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "encode_audio", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(feature_cache, "encode_audio", real)
    cached = build_feature_cache(model, processor, _dataset(), cache_dir=str(tmp_path), batch_size=2, progress=False)
    assert len(cached) == 4 and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_tensor_digest_sees_every_value_not_only_the_sample(dtype):
    torch.manual_seed(0)
    weight = (torch.randn(10_000) * 20).to(dtype)  # 10 000 values: the sample takes every 9th
    reference = _tensor_digest(weight)
    changed = weight.clone()
    changed[1] = changed[1] + 1  # off the sample
    assert _tensor_digest(changed) != reference
    swapped = weight.clone()
    swapped[[1, 2]] = weight[[2, 1]]  # two off-sample values trade places: the plain sum is unchanged
    assert not torch.equal(swapped, weight)
    assert _tensor_digest(swapped) != reference
    assert _tensor_digest(weight.clone()) == reference


def _pad_sequence_batch(clips, d_model):
    """The collator's batch as it was built before ``collate_cached_features``: each clip cast to float32 on its
    own, then ``pad_sequence`` (the reference the batches of every earlier run, the demo's included, came from)."""
    frames = [torch.from_numpy(np.asarray(c, dtype=np.float16)).reshape(-1, d_model).float() for c in clips]
    return torch.nn.utils.rnn.pad_sequence(frames, batch_first=True), torch.tensor([f.shape[0] for f in frames])


def test_batches_read_from_the_cache_are_the_earlier_tensors_bit_for_bit(model_and_processor, tmp_path):
    model, processor = model_and_processor
    lengths = [int(16000 * s) for s in (0.5, 1.375, 0.75, 0.5, 1.375, 0.75)]  # 3 lengths: the batches are padded
    data = datasets.Dataset.from_dict({
        column: [{"array": c, "sampling_rate": 16000} for c in noise_clips(lengths, seed)]
        for column, seed in (("audio", 0), ("mic_audio", 1))} | {"text": [f"clip {i}" for i in range(6)]})
    data = data.cast_column("audio", datasets.Audio(16000)).cast_column("mic_audio", datasets.Audio(16000))
    cached = build_feature_cache(model, processor, data, audio_columns=("audio", "mic_audio"),
                                 cache_dir=str(tmp_path), progress=False, drop_columns=("audio", "mic_audio"))
    collator = CachedFeatureCollator(processor, "Transcribe the audio.", mic_feature_key="mic_audio_encoder",
                                     d_model=16)
    for indices in ([0, 1, 2], [5, 3], [4]):
        examples = cached.__getitems__(indices)  # what the DataLoader reads: the batch's rows in one call
        batch = collator(examples)
        for key, name in (("audio_encoder", "audio_encoder_hidden_states"),
                          ("mic_audio_encoder", "mic_audio_encoder_hidden_states")):
            expected, lengths = _pad_sequence_batch([e[key] for e in examples], 16)
            assert batch[name].dtype == expected.dtype == torch.float32
            assert batch[name].shape == expected.shape and torch.equal(batch[name], expected)
            assert torch.equal(batch["audio_encoder_lengths"], lengths)
        assert len(set(batch["audio_encoder_lengths"].tolist())) == len(indices)  # the padding was exercised


def test_collate_cached_features_pads_with_zeros_and_names_a_bad_clip():
    from modeling_qwen2audio_ldv.training.feature_cache import collate_cached_features

    # frames of 2 values (d_model 2): clip 0 has 3 frames, clip 1 one frame, given as a list and as a tensor
    clips = [np.arange(6, dtype=np.float16) - 2.5, [0.5, -1.0]]
    batch, lengths = collate_cached_features([clips[0], torch.tensor(clips[1], dtype=torch.float16)], 2)
    assert lengths.tolist() == [3, 1]
    assert batch.tolist() == [[[-2.5, -1.5], [-0.5, 0.5], [1.5, 2.5]], [[0.5, -1.0], [0.0, 0.0], [0.0, 0.0]]]
    with pytest.raises(ValueError, match="mic_audio_encoder of row 1: 3 values, not a whole number of frames of "
                                         "d_model 2"):
        collate_cached_features([clips[0], np.ones(3, dtype=np.float16)], 2, "mic_audio_encoder")


def test_short_spectrogram_equals_the_processors_on_every_frame_the_trimmed_tower_reads(tiny_base):
    from modeling_qwen2audio_ldv.training.feature_cache import _tower_inputs

    _, processor = tiny_base
    extractor = processor.feature_extractor
    window = extractor.n_samples  # the tiny base's 2 s window
    clips = noise_clips([int(0.3 * window), int(0.55 * window), 1234], seed=3) + [np.zeros(4000, np.float32)]

    def stock(arrays):
        inputs = extractor(arrays, sampling_rate=16000, return_attention_mask=True, padding="max_length",
                           return_tensors="pt")
        return inputs["input_features"], inputs["attention_mask"]

    features, mask = _tower_inputs(extractor, clips, trim=True)
    reference, reference_mask = stock(clips)
    assert features.shape == reference.shape and torch.equal(mask, reference_mask)
    # the trimmed pass reads the longest valid frame count plus at most three (_tower_lengths): those are the same
    read = int(reference_mask.sum(-1).max()) + 3
    assert torch.equal(features[..., :read], reference[..., :read])
    assert not torch.equal(features, reference)  # the short path was taken: the frames after them are zeros
    assert torch.count_nonzero(features[..., -1]) == 0 and torch.count_nonzero(reference[..., -1]) > 0
    # untrimmed, or a clip that reaches the window: exactly the processor's input
    for arrays, trim in ((clips, False), (clips[:1] + [noise_clips([window - 100], seed=4)[0]], True)):
        features, mask = _tower_inputs(extractor, arrays, trim=trim)
        expected, expected_mask = stock(arrays)
        assert torch.equal(features, expected) and torch.equal(mask, expected_mask)


def test_clips_encoded_shortest_first_are_written_back_in_row_order(model_and_processor, tmp_path):
    from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio

    model, processor = model_and_processor
    seconds = (0.875, 0.5, 0.75, 0.625, 0.5625)  # not in length order: the encoding batches reorder them
    data = _dataset(5, seed=2, seconds=seconds)
    cached = build_feature_cache(model, processor, data, cache_dir=str(tmp_path), batch_size=2, progress=False)
    for i in range(5):
        inputs = processor.feature_extractor([data[i]["audio"]["array"]], sampling_rate=16000,
                                             return_attention_mask=True, padding="max_length", return_tensors="pt")
        with torch.no_grad():
            hidden, lengths = encode_audio(model.model.audio_tower, inputs["input_features"], inputs["attention_mask"])
        expected = hidden[0, : int(lengths[0])].to(torch.float16).numpy().reshape(-1)
        assert cached[i]["audio_encoder"].shape == expected.shape  # every clip has its own frame count
        assert np.allclose(cached[i]["audio_encoder"], expected, atol=4e-3)


def test_length_column_counts_each_clips_cached_frames(model_and_processor, tmp_path):
    from modeling_qwen2audio_ldv.training.feature_cache import with_length_column

    model, processor = model_and_processor
    data = _dataset(4, seconds=(0.875, 0.5, 0.75, 0.625)).filter(lambda t: t != "clip 2", input_columns="text")
    cached = build_feature_cache(model, processor, data, cache_dir=str(tmp_path), progress=False)
    d_model = model.config.audio_config.d_model
    grouped = with_length_column(cached, d_model)
    # hop 160 at 16 kHz: 0.875 / 0.5 / 0.625 s -> 88 / 50 / 63 mel frames; conv2 (m - 1) // 2 + 1 -> 44 / 25 / 32;
    # the 2x pooling (f - 2) // 2 + 1 -> 22 / 12 / 16
    assert grouped["length"] == [22, 12, 16]
    assert [len(row["audio_encoder"]) // d_model for row in grouped] == [22, 12, 16]
    assert isinstance(grouped[0]["audio_encoder"], np.ndarray) and grouped[0]["audio_encoder"].dtype == np.float16
    with pytest.raises(ValueError, match="whole number of 7 frames"):
        with_length_column(cached, 7)


def test_length_grouped_sampling_from_audio_uses_a_length_column_or_falls_back_to_random(model_and_processor,
                                                                                            caplog):
    from transformers import TrainingArguments

    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.pipeline import training_collator

    model, processor = model_and_processor

    def arguments():
        return TrainingArguments(output_dir="unused", train_sampling_strategy="group_by_length", use_cpu=True,
                                 report_to="none")

    args = arguments()
    with_lengths = _dataset(2).add_column("length", [8000, 10000])  # the user's own lengths are used as they are
    train, _ = training_collator(model, processor, with_lengths, DataArguments(feature_cache=False), "lm", args)
    assert train["length"] == [8000, 10000] and args.train_sampling_strategy == "group_by_length"
    args = arguments()
    with caplog.at_level("WARNING"):
        training_collator(model, processor, _dataset(2), DataArguments(feature_cache=False), "lm", args)
    assert args.train_sampling_strategy == "random"  # no lengths: random batches, and the log says why
    assert "no 'length' column" in caplog.text and "random batches" in caplog.text
