"""Greedy transcription of a batch of clips: the one generation loop that evaluation, the long-file path and the
mini base build share."""

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..audio import SAMPLING_RATE, audio_to_array
from ..data.collator import DEFAULT_INSTRUCTION, build_prompt

# A batch holds clips at least 1/MAX_LENGTH_RATIO as long as its longest: its encoder pass then spends at most half
# its frames on padding. Count-only batches of a length-sorted list of real recordings (22 s down to 1 s) padded
# the demo's real-voice clips 2.7x (their attention 8x); with this bound 1.35x (1.6x).
MAX_LENGTH_RATIO = 2.0


def length_batches(lengths: Sequence[int], batch_size: int, max_ratio: float = MAX_LENGTH_RATIO) -> list[list[int]]:
    """Indices of ``lengths`` in batches: longest first (equal lengths keep their order), at most ``batch_size``
    per batch, and a new batch wherever the next clip is shorter than its batch's longest over ``max_ratio``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] * max_ratio >= lengths[batches[-1][0]]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def generate_transcripts(
    model,
    processor,
    audios: Sequence[Any],
    instruction: str = DEFAULT_INSTRUCTION,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    audio_domain: str | None = None,
    progress: bool = True,
    desc: str = "transcribing",
    max_length_ratio: float = MAX_LENGTH_RATIO,
) -> list[str]:
    """Greedy transcripts of ``audios`` (1-D float arrays at :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`,
    or datasets audio dicts at that rate).

    The prompt is the chat template with one audio and ``instruction``; batches are left-padded prompts only, of
    clips of similar length (:func:`length_batches`: longest first, none shorter than half its batch's longest; the
    transcripts come back in the order of ``audios``), so a batch's encoder and generation run for about its own
    clips' length rather than the longest clip of the whole list.
    ``audio_domain``: ``None``/"ldv" (the active adapter), "mic" (no adapter) or an adapter name.
    ``max_length_ratio``: :func:`length_batches`' bound (``float("inf")``: batches of ``batch_size`` by count alone).
    """
    prompt = build_prompt(processor, instruction)
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    clips = [audio_to_array(a) for a in audios]
    predictions: list[str] = [""] * len(clips)
    for picked in tqdm(length_batches([clip.shape[0] for clip in clips], batch_size, max_length_ratio), desc=desc,
                       disable=not progress):
        inputs = processor(text=[prompt] * len(picked), audio=[clips[i] for i in picked], sampling_rate=SAMPLING_RATE,
                           return_tensors="pt", padding=True, padding_side="left")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        kwargs = {"audio_domain": audio_domain} if audio_domain is not None else {}
        generated = model.generate(**inputs, **kwargs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        for i, text in zip(picked, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            predictions[i] = text.strip()
    return predictions
