# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Throughput of the LDV simulator, as a multiple of real time, for every preset on one thread.

    python benchmarks/bench_simulator.py [--seconds 10] [--repeats 7] [--rate 16000]

Each preset runs on the same synthetic voiced signal (a gliding harmonic series with syllable-rate amplitude
modulation); the table reports the median and best of ``--repeats`` timed calls after one warm-up call (which
also fills the filter-design cache). Thread pools are limited to one thread with threadpoolctl when it is
installed, and through the ``*_NUM_THREADS`` variables set before numpy is imported otherwise. Not a test.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from modeling_qwen2audio_ldv.synthetic.simulator import LDV_PRESETS, simulate_ldv  # noqa: E402


def synthetic_voice(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Harmonic series on a gliding 90-150 Hz fundamental, 3 Hz syllable envelope, light noise: ``(samples,)``."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2
    return harmonics * envelope + 0.01 * np.random.default_rng(seed).standard_normal(t.shape[0])


def single_thread():
    """Context manager limiting native thread pools to one thread (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call (s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per preset")
    parser.add_argument("--rate", type=int, default=16_000, help="sample rate (Hz)")
    args = parser.parse_args()

    audio = synthetic_voice(args.seconds, args.rate)
    print(f"{args.seconds:g} s of audio at {args.rate} Hz, {args.repeats} repeats, one thread")
    print(f"{'preset':<15} {'median ms':>10} {'best ms':>10} {'x real time (median)':>21} {'x real time (best)':>19}")
    with single_thread():
        for name in LDV_PRESETS:
            simulate_ldv(audio, args.rate, name, seed=0)  # warm-up
            times = []
            for repeat in range(args.repeats):
                start = time.perf_counter()
                simulate_ldv(audio, args.rate, name, seed=repeat + 1)
                times.append(time.perf_counter() - start)
            median, best = statistics.median(times), min(times)
            print(
                f"{name:<15} {median * 1e3:>10.1f} {best * 1e3:>10.1f} "
                f"{args.seconds / median:>21.0f} {args.seconds / best:>19.0f}"
            )


if __name__ == "__main__":
    main()
