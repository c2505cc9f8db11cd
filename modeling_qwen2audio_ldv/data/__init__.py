"""Datasets in: loading any audio source, validating it, and the training collator with its prompt."""
