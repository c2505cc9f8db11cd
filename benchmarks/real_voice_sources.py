# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Which training speech carries the demo's adapter to real voices? The demo's recipe with one kind of speech
added to its training rows (``--speech``), scored on the demo's real-voice sample as always.

- ``set`` (**a ceiling, not a recipe**): the real-voice set's own clips that the demo does *not* score (every clip
  but every k-th, k from ``--real_voice_samples``: 411 of 549, all but 11 of them Allison Smith's Asterisk prompts).
  The set's speakers are held out everywhere else (the corpus builder refuses them); this run lifts that guard for
  these files, in this process only. Same speaker, same recording chain, same kind of prompts, other texts: the
  best case an adapter on this frozen base can hope for from simulated LDV. An adapter trained this way is trained
  on test speakers: never share it, never report its figures as the adapter's.
- ``spanish`` (also a diagnostic: the same held-out speaker): her Spanish prompts (Debian's
  ``asterisk-core-sounds-es-g722``, not installed by the set-up script): the speaker without the language.
- ``talker`` (the same ceiling, through the user's route): the ``set`` clips joined into long 48 kHz FLAC files
  (``--file_minutes`` each, a second of silence between clips), given to ``train_hf.py --talker_recordings`` as a
  user would give recordings of their talker: cut at pauses, ``--talker_share`` of the demo's training rows. The
  joined files are new bytes under a new speaker id, so nothing refuses them: the same caution as ``set`` applies.
- ``piper``: Piper's neural ``joe`` voice (the opt-in ``piper`` extra) speaking word spans of the set's transcripts:
  the language and text domain from the most natural voice the registries ship, no held-out speaker.

Each clip joins through the ``--other_speaker_clips`` path (the same microphone channel and LDV simulation as a
synthesised utterance; the ``distill`` objective reads no transcript), ``--copies`` rows each with their own LDV
draw, beside ``--num_train_utterances`` of the demo's synthetic rows.

    python benchmarks/real_voice_sources.py --speech set [--copies 2] [--clips N] -- [train_hf.py flags]
    python benchmarks/real_voice_sources.py --speech talker --clips 160 [-- --talker_share 0.4 ...]

Writes ``outputs/real_voice_<speech>/`` (the demo's result files) unless ``--output_dir`` is among the flags.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_hf  # noqa: E402
from modeling_qwen2audio_ldv.data import other_speakers  # noqa: E402
from modeling_qwen2audio_ldv.synthetic import corpus  # noqa: E402

#: Allison Smith's Spanish prompts (Debian's ``asterisk-core-sounds-es-g722``, not installed by the set-up script)
SPANISH = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")


def oracle_recordings(folder: Path, samples: int, copies: int, max_seconds: float, clips: int | None = None,
                      seed: int = 0) -> list[other_speakers.Recording]:
    """The set's clips the demo does not score (its every-k-th sample left out), ``<= max_seconds`` long, or a
    seeded draw of ``clips`` of them (in the set's order), ``copies`` times each (every copy a row with its own LDV
    draw)."""
    with open(folder / "mic" / "metadata.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = -(-len(rows) // samples) if samples and len(rows) > samples else 1
    if step == 1:
        raise ValueError(f"--real_voice_samples {samples} scores all {len(rows)} clips: nothing is left to train on")
    kept = [row for index, row in enumerate(rows) if index % step and float(row["duration"]) <= max_seconds]
    if clips is not None:
        if not 0 < clips <= len(kept):
            raise ValueError(f"--clips ({clips}) must be 1-{len(kept)} (the unscored clips <= {max_seconds:g} s)")
        kept = [kept[i] for i in sorted(np.random.default_rng(seed).choice(len(kept), clips, replace=False))]
    recordings = [other_speakers.Recording(folder / "mic" / row["file_name"], f"oracle:{row['speaker']}", "en",
                                           row["text"], float(row["duration"])) for row in kept]
    print(f"set: {len(kept)} of {len(rows)} clips ({sum(r.seconds for r in recordings) / 60:.1f} min) x {copies} "
          f"copies; the demo scores every {step}th clip ({math.ceil(len(rows) / step)})", flush=True)
    return recordings * copies


def spanish_recordings(minutes: float, copies: int, max_seconds: float, seed: int = 0
                       ) -> list[other_speakers.Recording]:
    """The set's main speaker in another language: her Spanish prompts (0.5 s to ``max_seconds``, a seeded draw
    of about ``minutes`` of audio), ``copies`` times each. Their texts are never read (``distill``)."""
    if not SPANISH.is_dir():
        raise SystemExit(f"{SPANISH} not found: apt-get install asterisk-core-sounds-es-g722")
    files = sorted(SPANISH.rglob("*.g722"))
    drawn, total = [], 0.0
    for index in np.random.default_rng(seed).permutation(len(files)):
        seconds = files[index].stat().st_size / other_speakers._G722_BYTES_PER_SECOND  # its length, not decoded
        if other_speakers.MIN_SECONDS <= seconds <= max_seconds and total < minutes * 60:
            drawn.append(other_speakers.Recording(files[index], "oracle:es:allison_smith", "es",
                                                  files[index].stem, seconds))
            total += seconds
    print(f"spanish: {len(drawn)} prompts ({total / 60:.1f} min) x {copies} copies", flush=True)
    return drawn * copies


def piper_recordings(count: int, copies: int, folder: Path, seed: int = 0) -> list[other_speakers.Recording]:
    """``count`` word spans of the set's transcripts spoken by Piper's ``joe`` (written to ``folder`` as WAV),
    ``copies`` times each."""
    import soundfile as sf

    from modeling_qwen2audio_ldv.audio import SAMPLING_RATE
    from modeling_qwen2audio_ldv.data.real_voices import transcript_texts
    from modeling_qwen2audio_ldv.synthetic.piper import synthesize_piper
    from modeling_qwen2audio_ldv.synthetic.texts import span_texts

    folder.mkdir(parents=True, exist_ok=True)
    recordings = []
    for index, text in enumerate(span_texts(transcript_texts(), count, seed)):
        digest = hashlib.sha1(text.encode()).hexdigest()[:12]
        path = folder / f"joe-{seed + index}-{digest}.wav"  # the voice's noise seed and the text
        if not path.is_file():
            sf.write(path, synthesize_piper(text, voice="joe", seed=seed + index), SAMPLING_RATE)
        recordings.append(other_speakers.Recording(path, "piper:joe", "en", text, sf.info(path).duration))
    print(f"piper: {len(recordings)} spans ({sum(r.seconds for r in recordings) / 60:.1f} min) x {copies} copies",
          flush=True)
    return recordings * copies


def talker_folder(recordings: list[other_speakers.Recording], folder: Path, file_minutes: float) -> Path:
    """``recordings`` (each once, in order) joined into 48 kHz FLAC files of about ``file_minutes`` each, one
    second of silence after each clip: a talker's long recordings, as ``--talker_recordings`` takes them."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from modeling_qwen2audio_ldv.audio import SAMPLING_RATE
    from modeling_qwen2audio_ldv.data.real_voices import decode_recording

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.flac"):
        old.unlink()
    pause = np.zeros(SAMPLING_RATE, dtype=np.float32)
    parts: list[np.ndarray] = []
    written = 0

    def flush() -> None:
        nonlocal parts, written
        if parts:
            audio = resample_poly(np.concatenate(parts), 3, 1).astype(np.float32)  # 16 -> 48 kHz
            sf.write(folder / f"talker-{written:03d}.flac", np.clip(audio, -1, 1), 3 * SAMPLING_RATE)
            parts, written = [], written + 1

    for recording in recordings:
        parts += [decode_recording(recording.path), pause]
        if sum(p.shape[0] for p in parts) >= file_minutes * 60 * SAMPLING_RATE:
            flush()
    flush()
    print(f"talker: {len(recordings)} clips joined into {written} FLAC files in {folder}", flush=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", choices=("set", "talker", "spanish", "piper"), required=True,
                        help="set: the set's unscored clips (a ceiling); talker: the same clips as long files "
                             "through --talker_recordings; spanish: its speaker's Spanish prompts; piper: Piper's "
                             "joe speaking spans of the set's transcripts")
    parser.add_argument("--file_minutes", type=float, default=1.0,
                        help="--speech talker: minutes of clips per joined file")
    parser.add_argument("--copies", type=int, default=2, help="rows per clip, each with its own LDV draw")
    parser.add_argument("--max_seconds", type=float, default=12.0, help="longer clips are left out")
    parser.add_argument("--clips", type=int, default=None,
                        help="--speech set: a seeded draw of this many of its unscored clips (default: all of them)")
    parser.add_argument("--minutes", type=float, default=13.5, help="--speech spanish: minutes of prompts")
    parser.add_argument("--spans", type=int, default=400, help="--speech piper: how many spans")
    parser.add_argument("--num_train_utterances", type=int, default=1200,
                        help="the demo's synthetic rows beside these (2000 rows in all with --speech set's defaults)")
    parser.add_argument("train_hf_args", nargs="*", help="flags for train_hf.py (after --)")
    args = parser.parse_args()
    flags = list(args.train_hf_args)
    (_, _, data_args, _, _), _ = train_hf.parse_arguments(flags)
    folder = Path(data_args.real_voice_set)
    if not (folder / "mic" / "metadata.csv").is_file():
        raise SystemExit(f"{folder}: no real-voice set; run `python train_hf.py` or `ldv-qwen2audio "
                         "build-real-voice-set` first")
    if "--output_dir" not in flags:
        flags += ["--output_dir", f"outputs/real_voice_{args.speech}"]
    if args.speech == "talker":  # the user's route: long files, cut at pauses, a share of the demo's rows
        clips = oracle_recordings(folder, data_args.real_voice_samples, 1, args.max_seconds, args.clips)
        flags += ["--talker_recordings", str(talker_folder(clips, ROOT / "outputs" / "talker_set", args.file_minutes))]
    else:
        if args.speech == "set":
            recordings = oracle_recordings(folder, data_args.real_voice_samples, args.copies, args.max_seconds,
                                           args.clips)
        elif args.speech == "spanish":
            recordings = spanish_recordings(args.minutes, args.copies, args.max_seconds)
        else:
            recordings = piper_recordings(args.spans, args.copies, ROOT / "outputs" / "piper_spans")
        if args.speech != "piper":  # this process only: the held-out guard lifted for these files
            corpus._check_recordings = lambda recordings, registry: None
        # the draw of other speakers' recordings replaced by these
        other_speakers.draw_recordings = lambda n, seed, **kwargs: recordings[:n]
        flags += ["--other_speaker_clips", str(len(recordings)),
                  "--num_train_utterances", str(args.num_train_utterances)]
    results = train_hf.main(flags)
    print(json.dumps({k: v for k, v in results.items() if "real" in k}, indent=1))


if __name__ == "__main__":
    main()
