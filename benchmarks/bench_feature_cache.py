"""Reading cached tower features at Qwen2-Audio-7B's width, as a ratio against a raw numpy memmap read of the same
bytes in the same process.

    python benchmarks/bench_feature_cache.py [--d-model 1280] [--clip-seconds 7] [--clips 64] [--batch-size 16]
                                             [--repeats 15] [--threads 1]

A feature cache as ``build_feature_cache`` writes it (an Arrow file of flat float16 clips, ``--clips`` clips of
``--clip-seconds`` at 25 encoder frames per second and ``--d-model`` values per frame; random values, no model) is
opened the way training opens it (``_load_cached_features`` + ``_with_cached_features``: memory-mapped, numpy
format), and the same bytes are written to a plain file for ``np.memmap``. Per batch of ``--batch-size`` clips:

- raw read: ``np.array(memmap[start:end])`` per clip, the bytes copied into memory: the baseline;
- raw to batch: the same memmap views cast into one padded float32 batch (``collate_cached_features``): the floor
  of any float16 store for what the model takes;
- per row: one ``dataset[i]`` per clip, each cast to float32 on its own, then ``pad_sequence`` (how
  ``bench_real_shapes.py`` times a cached read: one row at a time);
- before: ``dataset.__getitems__(batch)`` (the DataLoader's one call per batch), each clip cast to float32 on its
  own, then ``pad_sequence``: the collator's reading until now;
- after: ``dataset.__getitems__(batch)`` and ``collate_cached_features`` (one float32 buffer per batch, each clip
  cast straight into it): the collator's reading now.

Each repetition times every path over the whole cache, in a rotating order (a slow spell of the machine hits all
paths alike); reported are medians over ``--repeats`` of ms per clip and of each path's time over the raw read's in
the same repetition. The files are in the page cache (written just before, read once to warm up): this is the cost
of the read path, not of the disk. Also checks that the three paths give equal batches, bit for bit.

Writes ``benchmarks/results/feature_cache.json`` and ``.md``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Encoder frames per second at the tower's output (30 s -> 750 frames).
FRAMES_PER_SECOND = 25


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=1280, help="encoder width (Qwen2-Audio-7B: 1280)")
    parser.add_argument("--clip-seconds", type=float, default=7.0)
    parser.add_argument("--clips", type=int, default=64, help="clips in the cache")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "feature_cache"))
    return parser.parse_args(argv)


def write_cache(folder: Path, clips: list[np.ndarray]):
    """``clips`` as a feature cache (the Arrow file ``build_feature_cache`` writes, opened as training opens it) and
    as a plain float16 file. Returns ``(dataset, memmap, starts)``: ``starts[i]`` is clip ``i``'s first value in the
    memmap."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    from modeling_qwen2audio_ldv.training.feature_cache import (
        _CACHE_FILE,
        _load_cached_features,
        _with_cached_features,
    )

    features = datasets.Features({"audio_encoder": datasets.List(datasets.Value("float16"))})
    with ArrowWriter(features=features, path=str(folder / _CACHE_FILE)) as writer:
        writer.write_batch({"audio_encoder": clips})
        writer.finalize()
    texts = datasets.Dataset.from_dict({"text": ["one two three"] * len(clips)})
    dataset = _with_cached_features(texts, _load_cached_features(str(folder)), ("audio",))
    flat = np.concatenate(clips)
    raw = np.memmap(folder / "raw.f16", dtype=np.float16, mode="w+", shape=flat.shape)
    raw[:] = flat
    raw.flush()
    del raw
    starts = np.concatenate([[0], np.cumsum([len(c) for c in clips])])
    return dataset, np.memmap(folder / "raw.f16", dtype=np.float16, mode="r"), starts


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from modeling_qwen2audio_ldv.training.feature_cache import collate_cached_features

    d_model, frames = args.d_model, int(round(args.clip_seconds * FRAMES_PER_SECOND))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(frames * d_model).astype(np.float16) for _ in range(args.clips)]
    batches = [list(range(i, min(i + args.batch_size, args.clips))) for i in range(0, args.clips, args.batch_size)]

    with tempfile.TemporaryDirectory(prefix="bench-feature-cache-") as folder:
        dataset, raw, starts = write_cache(Path(folder), clips)

        def raw_read():
            for batch in batches:
                for i in batch:
                    np.array(raw[starts[i] : starts[i + 1]])

        def raw_to_batch():
            for batch in batches:
                collate_cached_features([raw[starts[i] : starts[i + 1]] for i in batch], d_model)

        def pad_sequence_batch(flats):  # the collator's batch until now
            per_clip = [torch.from_numpy(np.asarray(flat, dtype=np.float16)).reshape(-1, d_model).float()
                        for flat in flats]
            return torch.nn.utils.rnn.pad_sequence(per_clip, batch_first=True)

        def per_row_batch(batch):
            return pad_sequence_batch([dataset[i]["audio_encoder"] for i in batch])

        def before_batch(batch):
            return pad_sequence_batch([e["audio_encoder"] for e in dataset.__getitems__(batch)])

        def after_batch(batch):
            return collate_cached_features([e["audio_encoder"] for e in dataset.__getitems__(batch)], d_model)[0]

        def per_row():
            for batch in batches:  # each batch dropped before the next, as a training step does
                per_row_batch(batch)

        def before():
            for batch in batches:
                before_batch(batch)

        def after():
            for batch in batches:
                after_batch(batch)

        paths = {"raw_read": raw_read, "raw_to_batch": raw_to_batch, "per_row": per_row, "before": before,
                 "after": after}
        identical = all(torch.equal(after_batch(batch), before_batch(batch))
                        and torch.equal(after_batch(batch), per_row_batch(batch)) for batch in batches)
        for fn in paths.values():  # warm-up: page cache, formatters, allocator
            fn()
        seconds = {name: [] for name in paths}
        names = list(paths)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:
                start = time.perf_counter()
                paths[name]()
                seconds[name].append(time.perf_counter() - start)
        del dataset, raw

    ms_per_clip = {name: round(1e3 * statistics.median(times) / args.clips, 4) for name, times in seconds.items()}
    ratios = {name: round(statistics.median(t / r for t, r in zip(times, seconds["raw_read"])), 2)
              for name, times in seconds.items() if name != "raw_read"}
    record = {
        "d_model": d_model, "clip_seconds": args.clip_seconds, "frames_per_clip": frames,
        "bytes_per_clip": frames * d_model * 2, "clips": args.clips, "batch_size": args.batch_size,
        "repeats": args.repeats, "ms_per_clip": ms_per_clip, "ratio_to_raw_read": ratios,
        "before_over_after": round(statistics.median(b / a for b, a in zip(seconds["before"], seconds["after"])), 2),
        "per_row_over_after": round(statistics.median(b / a for b, a in zip(seconds["per_row"], seconds["after"])),
                                    2),
        "batches_equal_bit_for_bit": identical,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__}",
    }
    write_report(record, Path(args.output))
    print(json.dumps(record, indent=2))
    if not identical:
        raise SystemExit("the read paths give different batches")
    return record


def write_report(record: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{output}.json").write_text(json.dumps(record, indent=2) + "\n")
    ms, ratio = record["ms_per_clip"], record["ratio_to_raw_read"]
    rows = [("raw memmap read of the same bytes (baseline)", "raw_read"),
            ("raw memmap -> padded float32 batch", "raw_to_batch"),
            ("per row: dataset[i] per clip, float32 per clip, pad_sequence", "per_row"),
            ("before: __getitems__ per batch, float32 per clip, pad_sequence", "before"),
            ("after: __getitems__ per batch, one float32 batch buffer", "after")]
    lines = [
        "# Reading cached tower features\n",
        f"{record['clips']} cached clips of {record['clip_seconds']:g} s ({record['frames_per_clip']} frames x "
        f"d_model {record['d_model']}, float16: {record['bytes_per_clip'] / 1024:.0f} KB each), batches of "
        f"{record['batch_size']}; medians of {record['repeats']} interleaved repetitions; {record['threads']} torch "
        f"thread(s), {record['machine']}. Files in the page cache.\n",
        "| read path | ms per clip | time / raw read |", "|---|---:|---:|",
        *[f"| {label} | {ms[key]:.3f} | {ratio.get(key, 1.0):.2f} |" for label, key in rows], "",
        f"After: {record['before_over_after']:.1f}x faster than before, {record['per_row_over_after']:.1f}x than per "
        f"row; batches equal bit for bit: {record['batches_equal_bit_for_bit']}.", "",
    ]
    Path(f"{output}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
