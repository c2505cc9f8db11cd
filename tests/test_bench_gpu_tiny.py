"""The CUDA benchmark script (benchmarks/gpu/bench_7b.py) kept working: its --tiny mode on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "bench_7b.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_7b", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_every_row(tmp_path):
    bench = _load()
    bench.main(["--tiny", "--output", str(tmp_path)])
    results = json.loads((tmp_path / "bench_7b.json").read_text())
    assert "error" not in results
    assert set(results["steps"]) == {f"{o}/{p}" for o in ("lm", "distill", "lm+distill")
                                     for p in ("cached", "trimmed", "padded")}
    assert all(v["step_s"] > 0 for v in results["steps"].values())
    assert results["tower_trim_max_abs_diff"] < 1e-4  # float32 on the CPU: the trimmed pass equals the padded one
    assert results["generate_stock_s"] > 0 and results["generate_adapter_s"] > 0
    assert results["cache_build_s_per_clip"] > 0
    assert results["four_bit"].startswith("skipped")
    table = (tmp_path / "bench_7b.md").read_text()
    assert "step lm+distill/padded" in table and "generate: adapter on / adapter bypassed" in table


def test_a_failing_row_fails_the_run_and_is_recorded(tmp_path, monkeypatch):
    bench = _load()

    def broken(*args, **kwargs):
        raise RuntimeError("feature cache broke")

    import modeling_qwen2audio_ldv.training.feature_cache as feature_cache

    monkeypatch.setattr(feature_cache, "build_feature_cache", broken)
    with pytest.raises(RuntimeError, match="feature cache broke"):
        bench.main(["--tiny", "--output", str(tmp_path)])
    results = json.loads((tmp_path / "bench_7b.json").read_text())
    assert "feature cache broke" in results["error"]
    assert results["generate_stock_s"] > 0  # what was measured before the error is kept
    assert "ERROR" in (tmp_path / "bench_7b.md").read_text()
