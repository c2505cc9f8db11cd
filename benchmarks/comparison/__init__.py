# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The pieces of ``benchmarks/compare_methods.py``: the row table, the settings, one run, the report, resuming."""
