"""Greedy transcription of a batch of clips: the one generation loop that evaluation, the long-file path and the
mini base build share."""

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..audio import SAMPLING_RATE, audio_to_array
from ..data.collator import DEFAULT_INSTRUCTION, build_prompt


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
) -> list[str]:
    """Greedy transcripts of ``audios`` (1-D float arrays at :data:`~modeling_qwen2audio_ldv.audio.SAMPLING_RATE`,
    or datasets audio dicts at that rate).

    The prompt is the chat template with one audio and ``instruction``; batches are left-padded prompts only, of
    clips of similar length (longest first; the transcripts come back in the order of ``audios``), so a batch's
    encoder and generation run for about its own clips' length rather than the longest clip of the whole list.
    ``audio_domain``: ``None``/"ldv" (the active adapter), "mic" (no adapter) or an adapter name.
    """
    prompt = build_prompt(processor, instruction)
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    clips = [audio_to_array(a) for a in audios]
    order = sorted(range(len(clips)), key=lambda i: -clips[i].shape[0])  # stable: equal lengths keep their order
    predictions: list[str] = [""] * len(clips)
    for start in tqdm(range(0, len(clips), batch_size), desc=desc, disable=not progress):
        picked = order[start : start + batch_size]
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
