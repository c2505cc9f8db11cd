"""Long recordings on the mini base: each recording transcribed whole vs. the same utterances one by one, over a
grid of voices x pause lengths x speech levels.

    python benchmarks/bench_long_transcription.py [--voices V V,W ...] [--pauses 0.3 0.7 1.5]
        [--levels -18 -30 -42] [--utterances 24] [--edge-margins 0.05 0.02] [--threads 1]

Each cell of the grid is one recording: ``--utterances`` digit strings (what the mini base reads) at the corpus's
per-utterance rates and pitches, joined with pauses of one length (the same pause before the first and after the
last), scaled so the speech's RMS sits at one level (dBFS) over one fixed white background (``--noise-dbfs``, the
same in every cell, as a microphone's own noise is): a talker at a lower level reads at a lower signal-to-noise
ratio. A voice row is one eSpeak voice, or two joined by a comma that take turns (a louder and a softer talker in
one recording); the defaults are the default corpus's held-out voices (the mini base never heard them), alone and
in two pairs. Each row speaks its own texts, the same in every cell of the row. Every recording is longer than the
mini base's 30 s window, so the long-file path cuts it at its pauses.

The same audio is transcribed two ways, by the model the ``transcribe`` command loads for a plain base
(``load_for_transcription``: the adapter-free LDV class, the stock model's outputs on the valid frames):

- pieces: the recording cut at the known utterance boundaries (each eSpeak clip with its 50 ms edges), one
  ``generate_transcripts`` call per cell: the same utterances as separate files;
- whole: ``transcribe`` on the recording, which finds the pauses, cuts, keeps ``EDGE_MARGIN_SECONDS`` around each
  window's sound, transcribes the windows in batches and stitches the texts; once per ``--edge-margins`` value
  (default: the shipped margin only), so other margins are compared on the same recordings.

Both are scored per cell by CER/WER against the cell's utterance texts joined in order (the pieces' texts joined the
same way), so the two figures share one reference; over the grid and per row, pause and level, corpus-level (all
character edits over all reference characters). The target: whole at most 0.5 CER point above pieces. Also checks
that every utterance became one segment, in time order.

Writes ``benchmarks/results/long_transcription.json`` and ``.md``.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_qwen2audio_ldv.audio import SAMPLING_RATE  # noqa: E402

#: The default corpus's validation and test voices (held out from the mini base's training), alone and in pairs.
DEFAULT_ROWS = ("en-gb-x-gbclan+f1", "en-gb+klatt3", "en-gb-x-gbcwmd+m2", "en-029+f5",
                "en-gb-x-gbclan+f1,en-gb-x-gbcwmd+m2", "en-gb+klatt3,en-029+f5")
#: Whole may read at most this many CER points worse than pieces.
TARGET_POINTS = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "mini_base"))
    parser.add_argument("--voices", nargs="+", default=list(DEFAULT_ROWS),
                        help="voice rows: an eSpeak voice, or voices joined by commas that take turns")
    parser.add_argument("--pauses", type=float, nargs="+", default=[0.3, 0.7, 1.5], help="pause lengths (s)")
    parser.add_argument("--levels", type=float, nargs="+", default=[-18.0, -30.0, -42.0],
                        help="speech RMS levels (dBFS) over the fixed background")
    parser.add_argument("--noise-dbfs", type=float, default=-70.0, help="background white noise RMS (dBFS)")
    parser.add_argument("--utterances", type=int, default=24, help="utterances per recording")
    parser.add_argument("--edge-margins", type=float, nargs="+", default=None,
                        help="seconds kept around each window's sound, one whole transcription each (default: the "
                        "shipped EDGE_MARGIN_SECONDS); the first is the one judged against the target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "long_transcription"))
    return parser.parse_args(argv)


def row_utterances(row: str, count: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """``count`` digit strings of a voice row (its own texts) and their eSpeak clips (float32, 16 kHz, 50 ms edges);
    utterance ``i`` is spoken by the row's voice ``i % len(voices)``, at a rate and pitch drawn from the corpus's
    ranges."""
    from modeling_qwen2audio_ldv.synthetic.corpus import PITCH_RANGE, RATE_RANGE
    from modeling_qwen2audio_ldv.synthetic.espeak import synthesize
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import keyed_rng
    from modeling_qwen2audio_ldv.synthetic.texts import make_texts

    voices = row.split(",")
    texts = make_texts(count, seed=int(keyed_rng(seed, "texts", row).integers(2**31)), kinds=("digits",))
    clips = []
    for index, text in enumerate(texts):
        rng = keyed_rng(seed, "utterance", row, index)
        rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        clips.append(synthesize(text, voice=voices[index % len(voices)], rate=rate, pitch=pitch))
    return texts, clips


def recording(clips: list[np.ndarray], pause_s: float, level_dbfs: float, noise_dbfs: float,
              rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The clips joined with ``pause_s`` of silence (also before the first and after the last), scaled so the
    clips' RMS is ``level_dbfs``, plus white noise of RMS ``noise_dbfs``. Returns ``(audio, spans)``: float32
    samples and each clip's ``[start, end)``."""
    pause = int(round(pause_s * SAMPLING_RATE))
    spans, position = [], pause
    for clip in clips:
        spans.append((position, position + len(clip)))
        position += len(clip) + pause
    clean = np.zeros(position, dtype=np.float64)
    for clip, (start, end) in zip(clips, spans):
        clean[start:end] = clip
    speech_rms = float(np.sqrt(np.mean(np.concatenate(clips).astype(np.float64) ** 2)))
    audio = clean * 10 ** (level_dbfs / 20) / speech_rms + 10 ** (noise_dbfs / 20) * rng.standard_normal(position)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), spans


def _edits(text: str, reference: str) -> dict:
    """Character and word edits of ``text`` against ``reference`` (the shipped metric) and the reference's size."""
    from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates

    rates = compute_error_rates([text], [reference])
    return {"characters": int(rates["character_substitutions"] + rates["character_deletions"]
                              + rates["character_insertions"]),
            "words": int(rates["substitutions"] + rates["deletions"] + rates["insertions"]),
            "reference_characters": int(rates["reference_characters"]),
            "reference_words": int(rates["reference_words"])}


def _summary(cells: list[dict], margins: list[str]) -> dict:
    """Corpus-level CER and WER (%) over ``cells`` for pieces and each margin's whole transcription."""
    chars = sum(c["reference_characters"] for c in cells)
    words = sum(c["reference_words"] for c in cells)

    def rate(key: str, unit: str, total: int) -> float:
        return round(100.0 * sum(c[key][unit] for c in cells) / max(total, 1), 2)

    summary = {"cer_pieces": rate("pieces", "characters", chars), "wer_pieces": rate("pieces", "words", words)}
    for margin in margins:
        key = f"whole_{margin}"
        summary[f"cer_{key}"] = rate(key, "characters", chars)
        summary[f"wer_{key}"] = rate(key, "words", words)
        summary[f"cer_difference_points_{margin}"] = round(summary[f"cer_{key}"] - summary["cer_pieces"], 2)
    return summary


def write_report(record: dict, args: argparse.Namespace) -> None:
    """``<output>.json`` (the record) and ``<output>.md`` (per-cell, per-factor and overall tables)."""
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # endings appended, not swapped: an output name with a dot ("margin_0.1") keeps it
    Path(f"{output}.json").write_text(json.dumps(record, indent=2) + "\n")
    margins = record["edge_margins_seconds"]
    whole_columns = " | ".join(f"whole, margin {m} s" for m in margins)
    align = "---:|" * len(margins)
    lines = [
        f"# Long recordings on the mini base ({record['window_seconds']:g} s window)\n",
        f"{len(record['cells'])} recordings (voice rows x pauses x levels) of {args.utterances} digit strings each "
        f"({record['recording_seconds'][0]}-{record['recording_seconds'][1]} s), background {args.noise_dbfs:g} "
        f"dBFS. CER (%); the target: whole at most {TARGET_POINTS} point above pieces. {record['threads']} torch "
        f"thread(s), {record['machine']}; {record['seconds']['total']} s.\n",
        f"| over the grid | pieces | {whole_columns} |", f"|---|---:|{align}",
        f"| CER (%) | {record['overall']['cer_pieces']} | "
        + " | ".join(str(record["overall"][f"cer_whole_{m}"]) for m in margins) + " |",
        f"| WER (%) | {record['overall']['wer_pieces']} | "
        + " | ".join(str(record["overall"][f"wer_whole_{m}"]) for m in margins) + " |",
        "| cells over the target | | " + " | ".join(str(record["checks"][m]["cells_over_target"]) for m in margins)
        + " |",
        "| one segment per utterance, in time order | | "
        + " | ".join(str(record["checks"][m]["segments_ok"]) for m in margins) + " |", "",
    ]
    for title, key in (("voice row", "by_voice"), ("pause (s)", "by_pause"), ("level (dBFS)", "by_level")):
        lines += [f"| {title} | pieces | {whole_columns} |", f"|---|---:|{align}"]
        lines += [f"| {name} | {row['cer_pieces']} | " + " | ".join(str(row[f"cer_whole_{m}"]) for m in margins)
                  + " |" for name, row in record[key].items()]
        lines.append("")
    lines += [f"| voice row | pause (s) | level (dBFS) | pieces | {whole_columns} |", f"|---|---:|---:|---:|{align}"]
    for cell in record["cells"]:
        lines.append(f"| {cell['voice']} | {cell['pause_seconds']:g} | {cell['level_dbfs']:g} | {cell['cer_pieces']} | "
                     + " | ".join(str(cell[f"cer_whole_{m}"]) for m in margins) + " |")
    Path(f"{output}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    import modeling_qwen2audio_ldv.inference.windows as windows
    from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION
    from modeling_qwen2audio_ldv.inference.generate import generate_transcripts
    from modeling_qwen2audio_ldv.inference.transcribe import load_for_transcription, transcribe
    from modeling_qwen2audio_ldv.synthetic.mini_base_data import keyed_rng

    shipped = windows.EDGE_MARGIN_SECONDS
    margin_values = args.edge_margins or [shipped]
    margins = [f"{m:g}" for m in margin_values]
    started = time.perf_counter()
    model, processor = load_for_transcription(args.base)
    window_s = windows.window_samples(processor) / SAMPLING_RATE
    speech = {row: row_utterances(row, args.utterances, args.seed) for row in args.voices}
    synthesis_s = time.perf_counter() - started

    cells, lengths, timing = [], [], {"pieces": 0.0, "whole": 0.0}
    for row in args.voices:
        texts, clips = speech[row]
        reference = " ".join(texts)
        for pause_s in args.pauses:
            for level in args.levels:
                audio, spans = recording(clips, pause_s, level, args.noise_dbfs,
                                         keyed_rng(args.seed, "background", row, pause_s, level))
                if len(audio) <= window_s * SAMPLING_RATE:
                    raise ValueError(f"the {row} recording with {pause_s} s pauses lasts "
                                     f"{len(audio) / SAMPLING_RATE:.1f} s, within one {window_s:g} s window: raise "
                                     "--utterances so that it is cut")
                lengths.append(len(audio) / SAMPLING_RATE)
                start = time.perf_counter()
                pieces = generate_transcripts(model, processor, [audio[a:b] for a, b in spans], DEFAULT_INSTRUCTION,
                                              batch_size=args.batch_size, max_new_tokens=32, progress=False)
                timing["pieces"] += time.perf_counter() - start
                cell = {"voice": row, "pause_seconds": pause_s, "level_dbfs": level,
                        "snr_db": round(level - args.noise_dbfs, 1), **_edits(" ".join(pieces), reference)}
                cell["pieces"] = {k: cell.pop(k) for k in ("characters", "words")}
                cell["cer_pieces"] = round(100.0 * cell["pieces"]["characters"] / cell["reference_characters"], 2)
                for margin, value in zip(margins, margin_values):
                    windows.EDGE_MARGIN_SECONDS = value
                    start = time.perf_counter()
                    try:
                        whole = transcribe(model, processor, audio, batch_size=args.batch_size, progress=False)
                    finally:
                        windows.EDGE_MARGIN_SECONDS = shipped
                    timing["whole"] += time.perf_counter() - start
                    segments = whole["segments"]
                    edits = _edits(whole["text"], reference)
                    cell[f"whole_{margin}"] = {
                        "characters": edits["characters"], "words": edits["words"], "segments": len(segments),
                        "segments_in_time_order": all(s["start"] < s["end"] <= n["start"]
                                                      for s, n in zip(segments, segments[1:])),
                        "differences": [
                            {"reference": text, "piece": piece,
                             "whole": segments[i]["text"] if len(segments) == len(texts) else None}
                            for i, (text, piece) in enumerate(zip(texts, pieces))
                            if len(segments) != len(texts) or segments[i]["text"] != piece],
                    }
                    cell[f"cer_whole_{margin}"] = round(100.0 * edits["characters"] / cell["reference_characters"], 2)
                cells.append(cell)
                print(f"{row:36s} pause {pause_s:4.2f} s level {level:6.1f} dBFS: pieces {cell['cer_pieces']:5.2f} "
                      "whole " + " ".join(f"{cell[f'cer_whole_{m}']:5.2f}" for m in margins), flush=True)

    checks = {}
    for margin in margins:
        over = [f"{c['voice']} / {c['pause_seconds']:g} s / {c['level_dbfs']:g} dBFS" for c in cells
                if c[f"cer_whole_{margin}"] - c["cer_pieces"] > TARGET_POINTS]
        checks[margin] = {
            "cells_over_target": len(over), "cells_over_target_list": over,
            "largest_cell_difference_points": max((round(c[f"cer_whole_{margin}"] - c["cer_pieces"], 2)
                                                   for c in cells), key=abs),
            "segments_ok": all(c[f"whole_{margin}"]["segments"] == args.utterances
                               and c[f"whole_{margin}"]["segments_in_time_order"] for c in cells),
        }
    record = {
        "base": Path(args.base).name,
        "window_seconds": window_s,
        "edge_margins_seconds": margins,
        "shipped_edge_margin_seconds": shipped,
        "utterances_per_recording": args.utterances,
        "noise_dbfs": args.noise_dbfs,
        "recording_seconds": [round(min(lengths), 1), round(max(lengths), 1)],
        "overall": _summary(cells, margins),
        "checks": checks,
        "by_voice": {row: _summary([c for c in cells if c["voice"] == row], margins) for row in args.voices},
        "by_pause": {f"{p:g}": _summary([c for c in cells if c["pause_seconds"] == p], margins) for p in args.pauses},
        "by_level": {f"{lv:g}": _summary([c for c in cells if c["level_dbfs"] == lv], margins) for lv in args.levels},
        "cells": cells,
        "seconds": {"synthesis_and_loading": round(synthesis_s, 1), "pieces": round(timing["pieces"], 1),
                    "whole": round(timing["whole"], 1), "total": round(time.perf_counter() - started, 1)},
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__}",
    }
    write_report(record, args)
    print(json.dumps({k: record[k] for k in ("overall", "checks", "seconds")}, indent=2))
    return record


if __name__ == "__main__":
    main()
