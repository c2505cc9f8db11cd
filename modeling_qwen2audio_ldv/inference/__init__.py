"""Transcription: greedy generation of a batch and recordings of any length (windows, stitching, writers)."""
