"""Small helpers shared by the benchmarks: the median of repeats after a warm-up, and writing a result as JSON and
Markdown."""

import json
import statistics
import time
from pathlib import Path


def median_seconds(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def write_json_and_markdown(output: str | Path, report: dict, lines: list[str]) -> None:
    """``report`` to ``<output>.json`` and ``lines`` (its table) to ``<output>.md``, the table printed too."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
