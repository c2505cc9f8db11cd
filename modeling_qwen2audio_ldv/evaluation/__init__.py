"""Scoring and reporting: CER/WER, eval sets with and without the adapter, result tables, figures, explain/diagnose."""
