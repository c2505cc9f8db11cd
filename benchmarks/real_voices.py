"""The mini base on real voices, and on Flite/Festival voices of its own text domain: how far from eSpeak it is.

    ldv-qwen2audio build-real-voice-set --output real_voices
    python benchmarks/real_voices.py --set real_voices [--model mini_base] [--conditions cardboard_box] \\
        [--texts 40] [--threads 1]

Needs the real-voice set (``ldv-qwen2audio build-real-voice-set``; Debian's packages from ``scripts/setup.sh``) and,
for the second part, eSpeak NG (``espeakng-loader``), Flite and Festival (``scripts/setup.sh``).

1. **Real voices**: the set's microphone recordings and their simulated LDV versions (``--conditions``), greedy
   transcripts by the base with no adapter (``audio_domain="mic"``: the stock forward through the trimmed tower),
   scored by the project's metric (``compute_error_rates``, ``language="en"``) overall and per group of prompts:
   numbers/days/months (``asterisk/digits/*``), letters and the phonetic alphabet, the other IVR prompts (words and
   sentences), the LibriVox sentences and the "cards" phrases; and the prompts whose every word is in the base's
   training texts (``make_texts(...)[:num_train]`` of its build record): the part of the set its decoder could
   write at all.
2. **Natural synthetic voices**: the first ``--texts`` of the base's own held-out texts (its build record's
   ``make_texts(num_train + num_heldout, seed, kinds)[num_train:]``), spoken by each of the base's held-out eSpeak
   voices (the reference: what its build reports) and by each Flite/Festival voice
   (``synthetic.voices.NATURAL_VOICES``, none heard in the base's training), at the voices' own rate and pitch,
   through the base's held-out microphone channel (gain, white noise 35-55 dB below the speech).

Writes ``benchmarks/results/real_voices.json`` (settings, machine, rates, every transcript) and ``real_voices.md``.
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

logger = logging.getLogger("real_voices")

DEFAULT_OUTPUT = REPO / "benchmarks" / "results"
GROUPS = ("numbers, days, months", "letters, phonetic alphabet", "IVR prompts (words, sentences)",
          "LibriVox (book sentences)", "cards (short phrases)")
IN_VOCABULARY = "every word in the base's training texts"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", required=True, type=Path, help="the real-voice set (build-real-voice-set's output)")
    parser.add_argument("--model", default=str(REPO / "mini_base"), help="a stock Qwen2-Audio base (default mini_base)")
    parser.add_argument("--conditions", nargs="*", default=["cardboard_box"], help="LDV folders of the set to score")
    parser.add_argument("--texts", type=int, default=40, help="held-out texts per synthetic voice (0: skip part 2)")
    parser.add_argument("--limit", type=int, default=0, help="first N clips of the real set (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared cores)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=160,
                        help="generation limit (the set's longest references are ~300 characters)")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    return parser.parse_args(argv)


def group_of(prompt_id: str) -> str:
    if prompt_id.startswith("librivox/"):
        return GROUPS[3]
    if prompt_id.startswith("cards/"):
        return GROUPS[4]
    if prompt_id.startswith("asterisk/digits/"):
        return GROUPS[0]
    if prompt_id.startswith(("asterisk/letters/", "asterisk/phonetic/")):
        return GROUPS[1]
    return GROUPS[2]


def read_folder(folder: Path, limit: int) -> list[dict[str, Any]]:
    """The rows of one audiofolder of the set, with their audio (float32, 16 kHz)."""
    from modeling_qwen2audio_ldv.data.real_voices import read_set_folder

    return read_set_folder(folder, limit)


def _shown_path(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (results carry no machine paths)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def build_settings(model: str) -> dict[str, Any]:
    return json.loads((Path(model) / "build_record.json").read_text(encoding="utf-8"))["settings"]


def training_vocabulary(settings: dict[str, Any]) -> set[str]:
    """The words of the base's training texts (its build: ``make_texts(num_train + num_heldout, ...)[:num_train]``,
    plus the real-voice set's transcripts when the build spoke them: ``prompt_repeats``/``num_spans``)."""
    from modeling_qwen2audio_ldv.synthetic.texts import make_texts

    texts = make_texts(settings["num_train"] + settings["num_heldout"], settings["seed"],
                       kinds=tuple(settings["kinds"]), language="en")[: settings["num_train"]]
    if settings.get("prompt_repeats", 0) > 0 or settings.get("num_spans", 0) > 0:
        from modeling_qwen2audio_ldv.data.real_voices import transcript_texts

        texts = texts + transcript_texts()
    return {word for text in texts for word in text.split()}


def score(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates

    rates = compute_error_rates(hypotheses, references, language="en")
    return {"cer": float(rates["cer"]), "wer": float(rates["wer"]), "clips": len(references),
            "reference_characters": int(rates["reference_characters"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from transformers import AutoProcessor

    from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration
    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)

    def transcribe(clips: list, desc: str) -> list[str]:
        with torch.no_grad():
            return generate_transcripts(model, processor, clips, batch_size=args.batch_size,
                                        max_new_tokens=args.max_new_tokens, audio_domain="mic", desc=desc)

    results: dict[str, Any] = {"real": {}, "synthetic": {}}
    build = build_settings(args.model)
    vocabulary = training_vocabulary(build)
    transcripts: dict[str, Any] = {"real": {}, "synthetic": {}}
    for name in ["mic", *args.conditions]:
        folder = args.set / "mic" if name == "mic" else args.set / "ldv" / name
        rows = read_folder(folder, args.limit)
        tic = time.perf_counter()
        hypotheses = transcribe([row["audio"] for row in rows], f"real/{name}")
        references = [row["text"] for row in rows]
        entry = {"all": score(hypotheses, references), "seconds": round(time.perf_counter() - tic, 1)}
        groups = {group: [i for i, row in enumerate(rows) if group_of(row["prompt_id"]) == group] for group in GROUPS}
        groups[IN_VOCABULARY] = [i for i, row in enumerate(rows) if set(row["text"].split()) <= vocabulary]
        for group, picked in groups.items():
            if picked:
                entry[group] = score([hypotheses[i] for i in picked], [references[i] for i in picked])
        results["real"][name] = entry
        transcripts["real"][name] = [{"prompt_id": r["prompt_id"], "reference": r["text"], "hypothesis": h}
                                     for r, h in zip(rows, hypotheses)]
        logger.info("real %s: CER %.1f%% WER %.1f%% (%d clips, %.0f s)", name, 100 * entry["all"]["cer"],
                    100 * entry["all"]["wer"], len(rows), entry["seconds"])

    if args.texts > 0:
        results["synthetic"], transcripts["synthetic"] = synthetic_voices(args, transcribe)

    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "model": _shown_path(args.model),
        "set": str(args.set),
        "max_new_tokens": args.max_new_tokens,
        "trained_voices": [*build["train_voices"], *build.get("natural_voices", [])],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                    "torch": torch.__version__},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "transcripts": transcripts,
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "real_voices.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (output / "real_voices.md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))
    return 0


def synthetic_voices(args: argparse.Namespace, transcribe) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part 2: the base's held-out texts spoken by its held-out eSpeak voices and by each Flite/Festival voice."""
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import keyed_rng, microphone_channel
    from modeling_qwen2audio_ldv.synthetic.texts import make_texts
    from modeling_qwen2audio_ldv.synthetic.voices import NATURAL_VOICES, engine_available, synthesize_voice

    build = build_settings(args.model)
    texts = make_texts(build["num_train"] + build["num_heldout"], build["seed"], kinds=tuple(build["kinds"]),
                       language="en")[build["num_train"]:][: args.texts]
    voices = list(dict.fromkeys([*build["heldout_voices"], *NATURAL_VOICES]))
    results, transcripts = {}, {}
    for voice in voices:
        if not engine_available(voice):
            logger.warning("%s: engine not installed, skipped", voice)
            continue
        clips = [microphone_channel(synthesize_voice(text, voice), keyed_rng(build["seed"], "mic", voice, i),
                                    reverb=False) for i, text in enumerate(texts)]
        hypotheses = transcribe(clips, f"synthetic/{voice}")
        results[voice] = score(hypotheses, texts)
        transcripts[voice] = [{"reference": t, "hypothesis": h} for t, h in zip(texts, hypotheses)]
        logger.info("%s: CER %.1f%%", voice, 100 * results[voice]["cer"])
    return results, transcripts


def markdown(record: dict[str, Any]) -> str:
    machine = record["machine"]
    lines = [f"# Real voices: {record['model']}", "",
             f"`{record['command']}`; {machine['platform']}, {machine['cpus']} CPUs, {machine['torch_threads']} torch "
             f"thread(s), torch {machine['torch']}; {record['wall_seconds']:.0f} s in all.", "",
             "| real-voice set | clips | CER | WER |", "|---|---|---|---|"]
    for name, entry in record["results"]["real"].items():
        lines.append(f"| {name}: all | {entry['all']['clips']} | {100 * entry['all']['cer']:.1f}% | "
                     f"{100 * entry['all']['wer']:.1f}% |")
        for group in (*GROUPS, IN_VOCABULARY):
            if group in entry:
                lines.append(f"| {name}: {group} | {entry[group]['clips']} | {100 * entry[group]['cer']:.1f}% | "
                             f"{100 * entry[group]['wer']:.1f}% |")
    if record["results"]["synthetic"]:
        heard = set(record.get("trained_voices", ()))
        lines += ["", "| voice (the base's held-out texts, microphone) | heard in the base's training | clips | CER | WER |",
                  "|---|---|---|---|---|"]
        for voice, entry in record["results"]["synthetic"].items():
            lines.append(f"| {voice} | {'yes' if voice in heard else 'no'} | {entry['clips']} | "
                         f"{100 * entry['cer']:.1f}% | {100 * entry['wer']:.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
