# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Throughput (clips/s) of dataset preprocessing: the training collator and ``validate_dataset``.

    python benchmarks/bench_preprocessing.py [--clips 200] [--min-seconds 2] [--max-seconds 8] [--batch-size 8]

Writes ``--clips`` synthetic voiced clips (16 kHz, 16-bit WAV, lengths uniform in ``[--min-seconds,
--max-seconds]``) as an audiofolder in a temporary directory, loads them with ``load_audio_dataset``, and times:

- ``collator (arrays in memory)``: ``DataCollatorForQwen2AudioLDV`` in train mode on pre-decoded arrays: the
  feature extraction (log-mel over the padded 30 s window) and the tokenisation/labels alone;
- ``DataLoader workers=0/2``: decoding through datasets + the collator, as the HF Trainer runs it
  (``dataloader_num_workers``);
- ``validate_dataset num_proc=1/2``: the full decode-and-check scan.

The processor has Qwen2-Audio-7B's feature extractor settings (128 mel bins, 30 s window, 750 audio tokens)
with the offline character tokenizer of ``modeling_qwen2audio_ldv.testing`` (the real BPE tokenizer costs
about the same per token and cannot be downloaded here). The main process uses one torch thread; DataLoader
workers use one each. Each row reports the best of ``--repeats`` passes after a warm-up pass. Not a test.
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf
import torch

from modeling_qwen2audio_ldv.audio import SAMPLING_RATE
from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV
from modeling_qwen2audio_ldv.data.loading import load_audio_dataset, validate_dataset
from modeling_qwen2audio_ldv.testing import build_char_tokenizer, build_processor


def synthetic_voice(seconds: float, seed: int) -> np.ndarray:
    """Harmonic series on a gliding fundamental with a syllable-rate envelope: ``(samples,)`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    f0 = rng.uniform(90, 200) + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2
    return (0.1 * voiced * envelope + 0.003 * rng.standard_normal(t.shape[0])).astype(np.float32)


def write_audiofolder(folder: Path, clips: int, min_seconds: float, max_seconds: float) -> float:
    """Write the clips and ``metadata.csv``; returns the total audio duration (s)."""
    rng = np.random.default_rng(0)
    lines, total = ["file_name,text"], 0.0
    for index in range(clips):
        seconds = float(rng.uniform(min_seconds, max_seconds))
        sf.write(folder / f"clip{index:05d}.wav", synthetic_voice(seconds, index), SAMPLING_RATE, subtype="PCM_16")
        lines.append(f"clip{index:05d}.wav,utterance number {index} of the benchmark corpus")
        total += seconds
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return total


def best_rate(run, clips: int, repeats: int) -> float:
    """Clips per second of the fastest of ``repeats`` timed calls of ``run()`` (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return clips / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="number of clips")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip (s)")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="longest clip (s)")
    parser.add_argument("--batch-size", type=int, default=8, help="collator batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    datasets.disable_progress_bars()
    torch.set_num_threads(1)

    processor = build_processor(build_char_tokenizer(), max_source_positions=1500, num_mel_bins=128)
    collator = DataCollatorForQwen2AudioLDV(processor, mode="train")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        seconds = write_audiofolder(folder, args.clips, args.min_seconds, args.max_seconds)
        dataset = load_audio_dataset(str(folder), split="train", cache_dir=str(Path(tmp) / "cache"))
        rows = [{"audio": row["audio"]["array"], "text": row["text"]} for row in dataset]
        print(f"{args.clips} clips, {seconds / args.clips:.1f} s mean ({seconds / 60:.1f} min), batch size "
              f"{args.batch_size}, 128 mel bins x 3000 frames; best of {args.repeats}")
        print(f"{'stage':<34} {'clips/s':>9} {'x real time':>12}")

        def report(name: str, rate: float) -> None:
            print(f"{name:<34} {rate:>9.1f} {rate * seconds / args.clips:>12.0f}")

        def collate_in_memory() -> None:
            for start in range(0, len(rows), args.batch_size):
                collator(rows[start: start + args.batch_size])

        report("collator (arrays in memory)", best_rate(collate_in_memory, args.clips, args.repeats))
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collator,
                                                 num_workers=workers, persistent_workers=workers > 0)

            def iterate(loader=loader) -> None:
                for _ in loader:
                    pass

            report(f"DataLoader workers={workers}", best_rate(iterate, args.clips, args.repeats))
        for num_proc in (1, 2):
            report(f"validate_dataset num_proc={num_proc}",
                   best_rate(lambda num_proc=num_proc: validate_dataset(dataset, num_proc=num_proc), args.clips,
                             args.repeats))


if __name__ == "__main__":
    main()
