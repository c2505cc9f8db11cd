# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Model inputs for Qwen2-Audio: the transcription prompt and a collator for training and generation.

A batch is built by the processor from the chat-template prompt and the audio: the processor expands the
prompt's one ``<|AUDIO|>`` into one token per encoder frame (``(((mel - 1) // 2 + 1) - 2) // 2 + 1`` tokens
for ``mel`` valid mel frames of 10 ms; 750 for 30 s) and extracts log-mel features padded to the encoder's
window (30 s for Qwen2-Audio-7B).

Training (``mode="train"``): ``prompt + transcript + <|im_end|>``, right-padded; ``labels`` are the
``input_ids`` with ``-100`` on every prompt token (system and user turns, the audio run and its
``<|audio_bos|>``/``<|audio_eos|>``, the assistant header) and on padding, so only the transcript and the
closing ``<|im_end|>`` are supervised.

Generation (``mode="generate"``): the prompt only, left-padded (``Qwen2AudioModel`` and ``generate`` expect
left padding); :meth:`DataCollatorForQwen2AudioLDV.collate_for_generation` returns the transcripts
separately, since the model takes no such argument.

Example:
    >>> from transformers import AutoProcessor, Trainer, TrainingArguments
    >>> processor = AutoProcessor.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct")
    >>> collator = DataCollatorForQwen2AudioLDV(processor, mode="train")
    >>> args = TrainingArguments("out", remove_unused_columns=False)   # keep the audio/text columns
    >>> trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    >>> batch, references = DataCollatorForQwen2AudioLDV(processor, mode="generate").collate_for_generation(rows)
    >>> predictions = processor.batch_decode(model.generate(**batch)[:, batch["input_ids"].shape[1]:],
    ...                                      skip_special_tokens=True)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from transformers import BatchFeature

from ..audio import SAMPLING_RATE, audio_to_array

logger = logging.getLogger(__name__)

#: The default instruction (English). Chinese prompts work as well, e.g. the original guide's (see README):
#: :data:`INSTRUCTION_ANALYZE_ZH` ("analyse this audio") and :data:`INSTRUCTION_TRANSCRIBE_ZH`.
DEFAULT_INSTRUCTION = "Transcribe the audio."
INSTRUCTION_ANALYZE_ZH = "請分析這段音頻"
INSTRUCTION_TRANSCRIBE_ZH = "請轉錄這段音頻"
#: Label value ignored by the loss (``CrossEntropyLoss(ignore_index=-100)``).
IGNORE_INDEX = -100
#: The token that closes a chat turn in Qwen2 chat templates; appended to each training transcript.
TURN_END_TOKEN = "<|im_end|>"


def build_prompt(processor: Any, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The chat-template prompt: a user turn with one audio and ``instruction``, then the assistant header.

    Args:
        processor: a ``Qwen2AudioProcessor`` (or any processor with a chat template that renders an audio
            content item as one ``<|AUDIO|>`` token).
        instruction: the text after the audio, e.g. :data:`DEFAULT_INSTRUCTION` or ``"請轉錄這段音頻"``.

    Returns:
        The prompt string, with one unexpanded ``<|AUDIO|>`` (the processor expands it per clip).
    """
    conversation = [{"role": "user", "content": [{"type": "audio", "audio_url": "audio"},
                                                  {"type": "text", "text": instruction}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    audio_token = getattr(processor, "audio_token", "<|AUDIO|>")
    if prompt.count(audio_token) != 1:
        raise ValueError(f"the chat template rendered {prompt.count(audio_token)} {audio_token} tokens, not 1: "
                         f"{prompt!r}")
    return prompt


def _describe(example: Any, key: str, index: int) -> str:
    """``"example 3 (/path/clip.wav)"`` for error messages."""
    path = None
    value = example.get(key) if isinstance(example, Mapping) else None
    if isinstance(value, Mapping):
        path = value.get("path")
    elif value is not None and hasattr(value, "metadata"):
        path = getattr(value.metadata, "path", None)
    return f"example {index}" + (f" ({path})" if path else "")


@dataclasses.dataclass
class DataCollatorForQwen2AudioLDV:
    """Collate ``{"audio": ..., "text": ...}`` rows into Qwen2-Audio inputs (usable as Trainer's ``data_collator``).

    Each example holds decoded audio under ``audio_key`` (a datasets audio value or a 1-D float array at
    ``sampling_rate``) and, for training, its transcript under ``text_key``. Train the HF Trainer with
    ``remove_unused_columns=False`` so these columns reach the collator.

    Returned batch (``B`` examples, ``L`` tokens, ``M`` mel bins, ``W`` window mel frames, e.g. 128 x 3000):

    - ``input_ids``, ``attention_mask``: ``(B, L)``; right-padded in ``train``, left-padded in ``generate``.
    - ``input_features``: ``(B, M, W)`` float32 log-mel; ``feature_attention_mask``: ``(B, W)`` (1 = valid).
    - ``labels`` (``train`` only): ``(B, L)`` int64, ``-100`` on the prompt and on padding.
    - ``mic_input_features``/``mic_feature_attention_mask`` (``train`` with ``mic_audio_key``): the
      microphone clip of each pair, same shapes; for a distillation objective, which must pop them before
      calling the model.
    - ``audio_domain`` (with ``audio_domain_key``): ``list[str]`` of length ``B``, the model's per-audio
      routing argument (``"ldv"``, ``"mic"`` or an adapter name).

    Attributes:
        processor: a ``Qwen2AudioProcessor``.
        instruction: the prompt's instruction (:data:`DEFAULT_INSTRUCTION`; Chinese prompts work).
        mode: ``"train"`` (prompt + transcript + labels) or ``"generate"`` (prompt only).
        audio_key, text_key: the example keys of the audio and the transcript.
        mic_audio_key: the example key of the paired microphone audio, or ``None``.
        sampling_rate: the audio rate (Hz) every clip must have; must equal the feature extractor's.
        max_audio_seconds: longest accepted clip (s); also capped by the feature extractor's window. A longer
            clip raises (the processor would truncate it silently): drop such rows with
            :func:`~modeling_qwen2audio_ldv.data.loading.filter_bad_examples`.
        audio_domain_key: the example key holding each clip's ``audio_domain``, or ``None``.
    """

    processor: Any
    instruction: str = DEFAULT_INSTRUCTION
    mode: Literal["train", "generate"] = "train"
    audio_key: str = "audio"
    text_key: str = "text"
    mic_audio_key: str | None = None
    sampling_rate: int = SAMPLING_RATE
    max_audio_seconds: float = 30.0
    audio_domain_key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("train", "generate"):
            raise ValueError(f"mode must be 'train' or 'generate', not {self.mode!r}")
        feature_extractor = self.processor.feature_extractor
        if feature_extractor.sampling_rate != self.sampling_rate:
            raise ValueError(f"sampling_rate ({self.sampling_rate}) differs from the feature extractor's "
                             f"({feature_extractor.sampling_rate} Hz)")
        self._window_seconds = feature_extractor.n_samples / feature_extractor.sampling_rate
        self._max_samples = int(round(min(self.max_audio_seconds, self._window_seconds) * self.sampling_rate))
        tokenizer = self.processor.tokenizer
        self._audio_token = getattr(self.processor, "audio_token", "<|AUDIO|>")
        self._audio_token_id = tokenizer.convert_tokens_to_ids(self._audio_token)
        self._prompt = build_prompt(self.processor, self.instruction)
        turn_end_id = tokenizer.convert_tokens_to_ids(TURN_END_TOKEN)
        # Qwen2 chat models end an answer with <|im_end|>; fall back to the tokenizer's eos for other vocabularies.
        self._end_token = TURN_END_TOKEN if turn_end_id not in (None, tokenizer.unk_token_id) else tokenizer.eos_token
        if self._end_token is None:
            raise ValueError(f"the tokenizer has neither {TURN_END_TOKEN} nor an eos token to end the transcript")
        self._prompt_ids_cache: dict[int, list[int]] = {}
        self._warned_boundary = False

    @property
    def prompt(self) -> str:
        """The prompt string, with one unexpanded ``<|AUDIO|>``."""
        return self._prompt

    @property
    def end_token(self) -> str:
        """The supervised token after each transcript: ``<|im_end|>`` when the vocabulary has it, else eos."""
        return self._end_token

    # ---------------------------------------------------------------------------------------------- helpers
    def _audio(self, examples: Sequence[Mapping[str, Any]], key: str) -> list[np.ndarray]:
        arrays = []
        for index, example in enumerate(examples):
            if key not in example:
                raise ValueError(f"example {index} has no {key!r} (keys: {list(example)})")
            where = f"{key} of {_describe(example, key, index)}"
            array = audio_to_array(example[key], self.sampling_rate, where)
            if array.shape[0] > self._max_samples:
                limit = self._max_samples / self.sampling_rate
                raise ValueError(f"{where} is {array.shape[0] / self.sampling_rate:.2f} s, longer than "
                                 f"{limit:g} s (max_audio_seconds={self.max_audio_seconds:g}, encoder window "
                                 f"{self._window_seconds:g} s); Qwen2-Audio would truncate it. Drop long clips "
                                 f"with data.filter_bad_examples (or split them) before collating.")
            arrays.append(array)
        return arrays

    def _transcripts(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        texts = []
        for index, example in enumerate(examples):
            text = example.get(self.text_key)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{_describe(example, self.audio_key, index)}: missing or empty transcript "
                                 f"{self.text_key!r} ({text!r}); drop such rows with data.filter_bad_examples")
            texts.append(text.strip())
        return texts

    def _process(self, texts: list[str], arrays: list[np.ndarray], padding_side: str) -> BatchFeature:
        # No truncation anywhere: cutting a run of <|AUDIO|> tokens breaks the audio/token alignment.
        return self.processor(text=texts, audio=arrays, sampling_rate=self.sampling_rate, return_tensors="pt",
                              padding=True, padding_side=padding_side)

    def _prompt_ids(self, num_audio_tokens: int) -> list[int]:
        """Token ids of the prompt with its ``<|AUDIO|>`` expanded to ``num_audio_tokens`` tokens."""
        if num_audio_tokens not in self._prompt_ids_cache:
            expanded = self._prompt.replace(self._audio_token, self._audio_token * num_audio_tokens)
            self._prompt_ids_cache[num_audio_tokens] = self.processor.tokenizer(expanded)["input_ids"]
        return self._prompt_ids_cache[num_audio_tokens]

    def _labels(self, batch: BatchFeature) -> torch.Tensor:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        for row in range(input_ids.shape[0]):
            num_audio_tokens = int((input_ids[row] == self._audio_token_id).sum())
            prompt_ids = torch.tensor(self._prompt_ids(num_audio_tokens), dtype=input_ids.dtype)
            prompt_length = prompt_ids.shape[0]
            if not torch.equal(input_ids[row, :prompt_length], prompt_ids):
                # The tokenizer merged characters across the prompt/transcript boundary: supervise from the
                # first token that differs from the prompt's own tokenisation.
                shared = min(prompt_length, input_ids.shape[1])
                same = (input_ids[row, :shared] == prompt_ids[:shared]).long()
                prompt_length = int(same.cumprod(0).sum())
                if not self._warned_boundary:
                    logger.warning("the tokenizer merges the prompt's last characters with the transcript; "
                                   "masking the %d tokens they share", prompt_length)
                    self._warned_boundary = True
            labels[row, :prompt_length] = IGNORE_INDEX
        return labels

    def _add_extras(self, batch: BatchFeature, examples: Sequence[Mapping[str, Any]], with_mic: bool) -> None:
        if with_mic and self.mic_audio_key is not None:
            mic = self.processor.feature_extractor(
                self._audio(examples, self.mic_audio_key), sampling_rate=self.sampling_rate,
                return_attention_mask=True, padding="max_length", return_tensors="pt",
            )
            batch["mic_input_features"] = mic["input_features"]
            batch["mic_feature_attention_mask"] = mic["attention_mask"]
        if self.audio_domain_key is not None:
            domains = []
            for index, example in enumerate(examples):
                domain = example.get(self.audio_domain_key)
                if not isinstance(domain, str):
                    raise ValueError(f"{_describe(example, self.audio_key, index)}: {self.audio_domain_key!r} must "
                                     f"be a string such as 'ldv' or 'mic', got {domain!r}")
                domains.append(domain)
            batch["audio_domain"] = domains

    # ------------------------------------------------------------------------------------------------ calls
    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> BatchFeature:
        """Collate ``examples`` for ``self.mode`` (see the class docstring for the keys and shapes)."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        if self.mode == "generate":
            return self.collate_for_generation(examples)[0]
        texts = self._transcripts(examples)
        arrays = self._audio(examples, self.audio_key)
        batch = self._process([self._prompt + text + self._end_token for text in texts], arrays, "right")
        batch["labels"] = self._labels(batch)
        self._add_extras(batch, examples, with_mic=True)
        return batch

    def collate_for_generation(self, examples: Sequence[Mapping[str, Any]]) -> tuple[BatchFeature, list[str | None]]:
        """Prompt-only, left-padded inputs for ``model.generate(**batch)``, and the reference transcripts.

        Returns:
            ``(batch, references)``: ``batch`` holds ``input_ids``/``attention_mask`` ``(B, L)``,
            ``input_features`` ``(B, M, W)``, ``feature_attention_mask`` ``(B, W)`` (and ``audio_domain``
            with ``audio_domain_key``); ``references`` is ``example[text_key]`` per example (``None`` where
            absent), for scoring the generated text. Generated tokens start at ``batch["input_ids"].shape[1]``.
        """
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        arrays = self._audio(examples, self.audio_key)
        batch = self._process([self._prompt] * len(examples), arrays, "left")
        self._add_extras(batch, examples, with_mic=False)
        references = [example.get(self.text_key) for example in examples]
        return batch, references
