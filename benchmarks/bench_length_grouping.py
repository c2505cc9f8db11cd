"""Batches of clips of similar length, as ratios against the same work in row order, in one process.

    python benchmarks/bench_length_grouping.py [--clips 256] [--threads 2] [--repeats 3] [--layers 0 2]

On the mini base (Whisper-base's encoder), ``--clips`` noise clips with durations drawn uniformly from 0.6-2.6 s (the
demo corpus: 0.6 s to 2.6 s, median 1.5 s), batches of 16 as in the demo:

1. **Building the feature cache** (the microphone column: the whole tower, as ``train_hf.py`` caches the teacher):
   - before: batches in row order, each clip's spectrogram over the processor's 30 s window (the cache until now);
   - after: ``build_feature_cache``'s encoding (clips sorted by length within windows of 8 batches, the spectrogram
     only as far as the trimmed tower reads it): the same features (checked, up to float16 storage).
2. **A training step** of the demo's objective (``distill``, LoRA rank 8 on the tower's layers from ``--layers``),
   from the cache through the demo's collator, per epoch of the clips:
   - random: the Trainer's default sampler (a random permutation): each batch pads to its longest clip;
   - grouped: ``--train_sampling_strategy group_by_length`` (transformers' ``get_length_grouped_indices`` over the
     cached frame counts, as the Trainer samples with ``with_length_column``).

Each repetition runs both paths of a part in a rotating order (a slow spell of the machine hits both alike);
reported are medians over ``--repeats`` of the seconds and of after/before in the same repetition. Writes
``benchmarks/results/length_grouping.json`` and ``.md``.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import write_json_and_markdown  # noqa: E402

BATCH = 16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "mini_base"))
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 2], help="LoRA from these tower layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "length_grouping"))
    return parser.parse_args(argv)


def clips_of(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in rng.uniform(0.6, 2.6, count)]


def encode_in_row_order(model, processor, clips) -> list[np.ndarray]:
    """The cache's encoding until now: batches in row order over the processor's 30 s spectrogram."""
    from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio

    out = []
    for start in range(0, len(clips), BATCH):
        inputs = processor.feature_extractor(clips[start:start + BATCH], sampling_rate=16000, padding="max_length",
                                             return_attention_mask=True, return_tensors="pt")
        hidden, lengths = encode_audio(model.model.audio_tower, inputs["input_features"], inputs["attention_mask"])
        hidden = hidden.to(torch.float16).numpy()
        out += [hidden[row, :n].reshape(-1) for row, n in enumerate(lengths.tolist())]
    return out


def encode_sorted(model, processor, clips) -> list[np.ndarray]:
    """``build_feature_cache``'s encoding (``_write_features`` without the Arrow file)."""
    from modeling_qwen2audio_ldv.training.feature_cache import _SORT_WINDOW_BATCHES, encode_shortest_first

    window = BATCH * _SORT_WINDOW_BATCHES
    return [clip for first in range(0, len(clips), window)
            for clip in encode_shortest_first(model, processor, clips[first:first + window], None, BATCH, "cpu",
                                              torch.float32, True)]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cache_part(base: str, clips, repeats: int) -> dict:
    from transformers import AutoProcessor

    from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base).eval()
    paths = {"before": lambda: encode_in_row_order(model, processor, clips),
             "after": lambda: encode_sorted(model, processor, clips)}
    seconds = {name: [] for name in paths}
    results = {}
    with torch.no_grad():
        for repeat in range(repeats):
            for name in (list(paths) if repeat % 2 == 0 else list(paths)[::-1]):
                took, results[name] = timed(paths[name])
                seconds[name].append(took)
    pairs = list(zip(results["before"], results["after"]))
    worst = max(float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max()) for a, b in pairs)
    # a batch of other clips trims the tower to another length: equal up to a float16 rounding step (2^-10 relative)
    if any(a.shape != b.shape or not np.allclose(a, b, rtol=2e-3, atol=4e-3) for a, b in pairs):
        raise AssertionError(f"the two encodings differ (max abs difference {worst})")
    ratios = [b / a for a, b in zip(seconds["before"], seconds["after"])]
    return {"before_s": statistics.median(seconds["before"]), "after_s": statistics.median(seconds["after"]),
            "after_over_before": statistics.median(ratios), "max_abs_difference": worst}


def training_part(base: str, clips, layer: int, repeats: int, seed: int) -> dict:
    import datasets
    from transformers import AutoProcessor
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION
    from modeling_qwen2audio_ldv.training.arguments import AdapterArguments
    from modeling_qwen2audio_ldv.training.feature_cache import (
        CachedFeatureCollator,
        build_feature_cache,
        with_length_column,
    )
    from modeling_qwen2audio_ldv.training.objectives import LossSettings, objective_loss, parse_objectives

    processor = AutoProcessor.from_pretrained(base)
    config = AdapterArguments(adapter_type="lora", encoder_layer=layer, lora_rank=8, lora_alpha=16.0,
                              dropout=0.0).to_config()
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base, adapter_config=config)
    model.freeze_base_model()
    audio = [{"array": clip, "sampling_rate": 16000} for clip in clips]
    data = datasets.Dataset.from_dict({"audio": audio, "mic_audio": audio, "text": ["one two three"] * len(clips)})
    data = data.cast_column("audio", datasets.Audio(sampling_rate=16000)).cast_column(
        "mic_audio", datasets.Audio(sampling_rate=16000))
    d_model = model.config.audio_config.d_model
    cached = build_feature_cache(model, processor, data, audio_columns=("audio", "mic_audio"), progress=False,
                                 drop_columns=("audio", "mic_audio"), encoder_layers={"audio": layer})
    cached = with_length_column(cached, d_model)
    lengths = list(cached["length"])
    collator = CachedFeatureCollator(processor, DEFAULT_INSTRUCTION, mic_feature_key="mic_audio_encoder",
                                     d_model=d_model, inside_tower=True)
    objectives = parse_objectives("distill")
    settings = LossSettings(distill_weight=4.0, distill_kind="mse", world_size=1, unwrap=lambda m: m)
    generator = torch.Generator().manual_seed(seed)
    orders = {"random": lambda: torch.randperm(len(clips), generator=generator).tolist(),
              "grouped": lambda: get_length_grouped_indices(lengths, BATCH, generator=generator)}
    model.train()

    def epoch(order):
        frames = 0
        for start in range(0, len(order), BATCH):
            batch = collator([cached[i] for i in order[start:start + BATCH]])
            frames += batch["audio_encoder_hidden_states"].shape[:2].numel()
            loss, _ = objective_loss(model, batch, objectives, settings, training=False)
            loss.backward()
            model.zero_grad(set_to_none=True)
        return frames

    seconds = {name: [] for name in orders}
    padded = {}
    for repeat in range(repeats):
        for name in (list(orders) if repeat % 2 == 0 else list(orders)[::-1]):
            order = orders[name]()
            took, padded[name] = timed(lambda: epoch(order))
            seconds[name].append(took)
    ratios = [g / r for r, g in zip(seconds["random"], seconds["grouped"])]
    return {"layer": layer, "random_s": statistics.median(seconds["random"]),
            "grouped_s": statistics.median(seconds["grouped"]), "grouped_over_random": statistics.median(ratios),
            "valid_frames": int(sum(lengths)), "padded_frames_random": padded["random"],
            "padded_frames_grouped": padded["grouped"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clips = clips_of(args.clips, args.seed)
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "torch_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
              "clips": args.clips, "batch": BATCH, "repeats": args.repeats, "seed": args.seed,
              "cache": cache_part(args.base, clips, args.repeats),
              "training": [training_part(args.base, clips, layer, args.repeats, args.seed) for layer in args.layers]}
    lines = [f"# Length-grouped batches ({report['machine']}, {report['torch_capability']}, {args.threads} threads, "
             f"{args.clips} clips of 0.6-2.6 s, batches of {BATCH}, medians of {args.repeats})", "",
             "| work | before (s) | after (s) | after / before |", "|---|---:|---:|---:|",
             f"| building the cache (microphone column, whole tower): row order, 30 s spectrogram -> sorted windows, "
             f"short spectrogram | {report['cache']['before_s']:.1f} | {report['cache']['after_s']:.1f} | "
             f"{report['cache']['after_over_before']:.2f} |"]
    for row in report["training"]:
        lines.append(f"| a training epoch, LoRA from layer {row['layer']} (`distill`): random -> grouped batches "
                     f"(padded frames {row['padded_frames_random']:,} -> {row['padded_frames_grouped']:,}) | "
                     f"{row['random_s']:.1f} | {row['grouped_s']:.1f} | {row['grouped_over_random']:.2f} |")
    write_json_and_markdown(args.output, report, lines)
    return report


if __name__ == "__main__":
    main()
