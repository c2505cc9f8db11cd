"""A LoRA adapter at a fraction of its strength on the real-voice set: does it over-correct real voices?

    python benchmarks/adapter_strength.py --adapter outputs/demo/adapter [more adapters] --set outputs/real_voices \\
        [--strengths 0 0.25 0.5 0.75 1] [--samples 140] [--threads 2]

Every LoRA update ``B A`` of the adapter is multiplied by each strength in turn (``B`` scaled; 0 is the base, 1 the
trained adapter) and the set's ``--condition`` LDV clips (the adapter's own condition) and microphone clips are
transcribed greedily with ``audio_domain="ldv"`` (the adapter on), every k-th clip of the set as the demo picks them
(``--samples``), and scored by the project's metric. A diagnosis, not a recipe: the strengths are compared on the
test set itself, so a strength chosen here would be tuned to it.

Writes ``benchmarks/results/adapter_strength.{json,md}`` (or ``--output-dir``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, nargs="+",
                        help="saved LoRA adapter folders (train_hf.py's output_dir/adapter)")
    parser.add_argument("--set", required=True, type=Path, help="the real-voice set (build-real-voice-set's output)")
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--condition", default="cardboard_box", help="the LDV folder of the set (the adapter's own)")
    parser.add_argument("--samples", type=int, default=140, help="every k-th clip, k keeping about this many")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from modeling_qwen2audio_ldv.data.real_voices import read_set_folder
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates
    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
    from modeling_qwen2audio_ldv.inference.transcribe import load_for_transcription

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sets = {"ldv": read_set_folder(args.set / "ldv" / args.condition), "mic": read_set_folder(args.set / "mic")}
    step = -(-len(sets["mic"]) // args.samples)
    sets = {name: rows[::step] for name, rows in sets.items()}
    results = {}
    for folder in args.adapter:
        model, processor = load_for_transcription(folder)
        kind = dict(model.config.domain_adapter).get("adapter_type")
        if kind != "lora":
            raise SystemExit(f"{folder}: adapter_type {kind!r}; this benchmark scales LoRA updates")
        trained = {name: p.detach().clone() for name, p in model.named_parameters() if ".lora_B." in name}
        parameters = dict(model.named_parameters())
        rows = []
        for strength in args.strengths:
            with torch.no_grad():
                for name, value in trained.items():
                    parameters[name].copy_(strength * value)
            row = {"strength": strength}
            for name, clips in sets.items():
                hypotheses = generate_transcripts(model, processor, [c["audio"] for c in clips],
                                                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                                  audio_domain="ldv", progress=False)
                row[name] = float(compute_error_rates(hypotheses, [c["text"] for c in clips], language="en")["cer"])
            print(f"{folder} strength {strength:.2f}: real LDV CER {100 * row['ldv']:.1f}%, real mic "
                  f"{100 * row['mic']:.1f}%", flush=True)
            rows.append(row)
        results[folder] = rows
    record = {"set": str(args.set), "condition": args.condition, "clips": len(sets["ldv"]), "adapters": results,
              "threads": args.threads, "machine": f"{platform.machine()}, {platform.processor() or '?'}",
              "seconds": round(time.perf_counter() - started, 1)}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "adapter_strength.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    lines = [f"# LoRA adapters at a fraction of their strength on the real-voice set ({len(sets['ldv'])} clips, "
             f"{args.condition}; CER %, LDV / microphone)", "",
             "| strength | " + " | ".join(args.adapter) + " |", "|---:|" + "---:|" * len(args.adapter)]
    for k, strength in enumerate(args.strengths):
        cells = [f"{100 * results[a][k]['ldv']:.1f} / {100 * results[a][k]['mic']:.1f}" for a in args.adapter]
        lines.append(f"| {strength:g} | " + " | ".join(cells) + " |")
    (args.output_dir / "adapter_strength.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
