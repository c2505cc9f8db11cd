"""Long recordings on the mini base: one recording of many utterances vs. the same utterances one by one.

    python benchmarks/bench_long_transcription.py [--utterances 60] [--per-recording N] [--threads 1]

Held-out test utterances of the default corpus (unseen voices and texts, digit strings: what the mini base reads)
are concatenated, ``--per-recording`` at a time (default: enough for about five windows, at least 8) with
pauses drawn from ``--pause`` seconds, into recordings several windows long; each recording then passes one
light microphone channel (gain, white noise 35-55 dB below the speech: the mini base's held-out channel,
``mini_base_data.microphone_channel``), so its background is the same throughout, as in one real recording. The same
audio is transcribed two ways:

- one by one: cut at the known utterance boundaries (plus the corpus clips' 50 ms edges), each piece fits the
  window; ``inference.generate.generate_transcripts``, the path of every evaluation;
- as a whole: ``modeling_qwen2audio_ldv.inference.transcribe.transcribe``, which splits the recording at low-energy
  points by itself, transcribes the windows in batches and stitches the texts.

Both are scored by corpus-level CER/WER against the utterances' texts (joined per recording for the long ones).
Also checks that the segments are in time order and counts them. The window is read from the processor.

Writes ``benchmarks/results/long_transcription.json`` and ``.md``.
"""

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_qwen2audio_ldv.audio import SAMPLING_RATE  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "mini_base"))
    parser.add_argument("--utterances", type=int, default=60, help="held-out test utterances")
    parser.add_argument("--per-recording", type=int, default=None,
                        help="utterances per long recording (default: enough for 5 windows, at least 8)")
    parser.add_argument("--pause", type=float, nargs=2, default=(0.3, 0.9), help="pause range (s)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (the demo's is 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "long_transcription"))
    return parser.parse_args(argv)


def long_recordings(clips: list[np.ndarray], texts: list[str], args: argparse.Namespace, window_s: float):
    """``(recordings, references, pieces)``: ``args.per_recording`` clips at a time joined with pauses and passed
    through one microphone channel; each recording's joined texts; and the recordings cut back at the utterance
    boundaries (the one-by-one input). Sets ``args.per_recording`` when it is ``None``."""
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import microphone_channel

    if args.per_recording is None:  # recordings about five windows long, whatever the window
        typical = float(np.mean([len(c) for c in clips])) / SAMPLING_RATE + float(np.mean(args.pause))
        args.per_recording = max(8, math.ceil(5 * window_s / typical))
    rng = np.random.default_rng(args.seed)
    recordings, references, pieces = [], [], []
    for first in range(0, len(clips), args.per_recording):
        parts, spans, position = [], [], 0
        for clip in clips[first : first + args.per_recording]:
            pause = np.zeros(int(rng.uniform(*args.pause) * SAMPLING_RATE), dtype=np.float32)
            parts += [clip, pause]
            spans.append((position, position + len(clip)))
            position += len(clip) + len(pause)
        recording = microphone_channel(np.concatenate(parts[:-1]), rng, reverb=False)
        recordings.append(recording)
        pieces += [recording[start:end] for start, end in spans]
        references.append(" ".join(texts[first : first + args.per_recording]))
    return recordings, references, pieces


def write_report(record: dict, args: argparse.Namespace) -> None:
    """``<output>.json`` (the record) and ``<output>.md`` (the table)."""
    window_s, ordered = record["window_seconds"], record["segments_in_time_order"]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    output.with_suffix(".md").write_text(
        f"# Long recordings on the mini base ({window_s:g} s window)\n\n"
        f"{record['utterances']} held-out test utterances (digit strings, unseen voices), "
        f"{record['recordings']} recording(s) of up to {min(args.per_recording, record['utterances'])} with pauses "
        f"of {args.pause[0]}-{args.pause[1]} s "
        f"({min(record['recording_seconds'])}-{max(record['recording_seconds'])} s each), one microphone channel "
        "per recording.\n\n"
        "| transcription | CER (%) | WER (%) |\n|---|---:|---:|\n"
        f"| one by one | {record['cer_one_by_one']} | {record['wer_one_by_one']} |\n"
        f"| long recording, split and stitched | {record['cer_long']} | {record['wer_long']} |\n\n"
        f"Difference: {record['cer_difference_points']} CER points; {record['segments']} segments, in time order: "
        f"{ordered}. {args.threads} torch thread(s).\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates
    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
    from modeling_qwen2audio_ldv.inference.transcribe import transcribe
    from modeling_qwen2audio_ldv.inference.windows import window_samples
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    started = time.perf_counter()
    processor = AutoProcessor.from_pretrained(args.base)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(args.base).eval()
    window_s = window_samples(processor) / SAMPLING_RATE
    corpus = build_paired_corpus(1, args.utterances, args.seed, kinds=("digits",), mic_augment=False,
                                 progress=False)
    test = corpus["test"]
    clips = [np.asarray(row["mic_audio"]["array"], dtype=np.float32) for row in test]  # eSpeak clips, 50 ms edges
    texts = list(test["text"])
    synth_s = time.perf_counter() - started
    recordings, references, pieces = long_recordings(clips, texts, args, window_s)

    start = time.perf_counter()
    one_by_one = generate_transcripts(model, processor, pieces, DEFAULT_INSTRUCTION, batch_size=args.batch_size,
                                      max_new_tokens=32, progress=False)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    results = transcribe(model, processor, recordings, batch_size=args.batch_size, progress=False)
    long_s = time.perf_counter() - start

    single = compute_error_rates(one_by_one, texts)
    joined_single = compute_error_rates([" ".join(one_by_one[i : i + args.per_recording])
                                         for i in range(0, len(clips), args.per_recording)], references)
    long = compute_error_rates([r["text"] for r in results], references)
    ordered = all(s["start"] < s["end"] <= n["start"]
                  for r in results for s, n in zip(r["segments"], r["segments"][1:]))
    record = {
        "base": Path(args.base).name,
        "window_seconds": window_s,
        "utterances": len(clips),
        "recordings": len(recordings),
        "recording_seconds": [round(len(r) / SAMPLING_RATE, 2) for r in recordings],
        "segments": sum(len(r["segments"]) for r in results),
        "segments_in_time_order": ordered,
        "cer_one_by_one": round(100 * float(single["cer"]), 2),
        "wer_one_by_one": round(100 * float(single["wer"]), 2),
        "cer_one_by_one_joined": round(100 * float(joined_single["cer"]), 2),
        "cer_long": round(100 * float(long["cer"]), 2),
        "wer_long": round(100 * float(long["wer"]), 2),
        "cer_difference_points": round(100 * (float(long["cer"]) - float(single["cer"])), 2),
        "seconds": {"synthesis": round(synth_s, 1), "one_by_one": round(single_s, 1), "long": round(long_s, 1)},
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "recordings_detail": [
            {"reference": reference, "one_by_one": " ".join(one_by_one[i * args.per_recording:
                                                                          (i + 1) * args.per_recording]),
             "long": result["text"], "segments": result["segments"]}
            for i, (reference, result) in enumerate(zip(references, results))],
    }
    write_report(record, args)
    print(json.dumps({k: v for k, v in record.items() if k != "recordings_detail"}, indent=2))
    return record


if __name__ == "__main__":
    main()
