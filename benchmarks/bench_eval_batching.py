"""Generation batches bounded by clip length, as a ratio against count-only batches, in one process.

    python benchmarks/bench_eval_batching.py [--threads 2] [--repeats 2] [--samples 140] [--batch 32]

The demo's scoring of real speakers' recordings: the mini base with the demo's fresh LoRA adapter (rank 8, layers
2-5, ``B`` zero, so its transcripts are the base's) transcribes the real-voice set's clips the demo scores (every
4th of 549 with ``--samples 140``: 138 clips, 1-22 s), microphone and ``cardboard_box`` LDV, through
``generate_transcripts`` with the demo's ``eval_batch_size`` (32) and ``max_new_tokens`` (160):

- before: batches of ``--batch`` clips in length order (``length_batches`` with no length bound: the rule until now);
- after: ``length_batches``' default (a new batch where a clip is shorter than half its batch's longest).

Each repetition runs both in a rotating order (a slow spell of the machine hits both alike); reported are medians
over ``--repeats`` of the seconds and of after/before in the same repetition, the padded audio seconds each plan
encodes, and how many transcripts differ between the two (float rounding of other batch shapes could change a
greedy token). The set is built in ``--set`` first if absent (``build-real-voice-set``, ~1.5 min). Writes
``benchmarks/results/eval_batching.json`` and ``.md``.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _timing import write_json_and_markdown  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "mini_base"))
    parser.add_argument("--set", default=str(REPO / "outputs" / "real_voices"), help="the real-voice set's folder")
    parser.add_argument("--samples", type=int, default=140, help="every k-th clip, as the demo's real_voice_samples")
    parser.add_argument("--batch", type=int, default=32, help="the demo's eval_batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "eval_batching"))
    return parser.parse_args(argv)


def demo_clips(folder: Path, samples: int) -> dict[str, list]:
    """The clips ``train_hf.py``'s ``real_voice_eval_sets`` scores: microphone and ``cardboard_box``."""
    from modeling_qwen2audio_ldv.training.arguments import DataArguments
    from modeling_qwen2audio_ldv.training.data import real_voice_eval_sets

    sets = real_voice_eval_sets(DataArguments(real_voice_set=str(folder), real_voice_samples=samples), "cardboard_box")
    return {name: list(rows["audio"]) for name, rows in sets.items()}


def padded_seconds(lengths: list[int], batches: list[list[int]]) -> float:
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches) / 16000


def main(argv=None) -> dict:
    from transformers import AutoProcessor

    from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration
    from modeling_qwen2audio_ldv.audio import audio_to_array
    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION
    from modeling_qwen2audio_ldv.inference import generate

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    processor = AutoProcessor.from_pretrained(args.base)
    config = DomainAdapterConfig(adapter_type="lora", encoder_layer=2, lora_rank=8, lora_alpha=16.0, zero_init=True)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(args.base, adapter_config=config).eval()
    plans = {"before": float("inf"), "after": generate.MAX_LENGTH_RATIO}
    rows = []
    for name, audios in demo_clips(Path(args.set), args.samples).items():
        lengths = [audio_to_array(a).shape[0] for a in audios]
        seconds = {plan: [] for plan in plans}
        texts = {}
        for repeat in range(args.repeats):
            for plan in (list(plans) if repeat % 2 == 0 else list(plans)[::-1]):
                start = time.perf_counter()
                texts[plan] = generate.generate_transcripts(model, processor, audios, DEFAULT_INSTRUCTION, args.batch,
                                                            args.max_new_tokens, progress=False,
                                                            max_length_ratio=plans[plan])
                seconds[plan].append(time.perf_counter() - start)
        ratios = [a / b for b, a in zip(seconds["before"], seconds["after"])]
        rows.append({
            "set": name, "clips": len(audios), "audio_s": sum(lengths) / 16000,
            "padded_s": {plan: padded_seconds(lengths, generate.length_batches(lengths, args.batch, ratio))
                         for plan, ratio in plans.items()},
            "batches": {plan: len(generate.length_batches(lengths, args.batch, ratio))
                        for plan, ratio in plans.items()},
            "before_s": statistics.median(seconds["before"]), "after_s": statistics.median(seconds["after"]),
            "after_over_before": statistics.median(ratios),
            "differing_transcripts": sum(a != b for a, b in zip(texts["before"], texts["after"])),
        })
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "torch_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
              "batch": args.batch, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "max_length_ratio": generate.MAX_LENGTH_RATIO, "rows": rows}
    lines = [f"# Generation batches bounded by clip length ({report['machine']}, {report['torch_capability']}, "
             f"{args.threads} threads, batch {args.batch}, medians of {args.repeats})", "",
             "| set | clips (audio s) | padded audio s: before -> after | batches | before (s) | after (s) | "
             "after / before | transcripts that differ |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['set']} | {row['clips']} ({row['audio_s']:.0f}) | {row['padded_s']['before']:.0f} -> "
                     f"{row['padded_s']['after']:.0f} | {row['batches']['before']} -> {row['batches']['after']} | "
                     f"{row['before_s']:.1f} | {row['after_s']:.1f} | {row['after_over_before']:.2f} | "
                     f"{row['differing_transcripts']} |")
    write_json_and_markdown(args.output, report, lines)
    return report


if __name__ == "__main__":
    main()
