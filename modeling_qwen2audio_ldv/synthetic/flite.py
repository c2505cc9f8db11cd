# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech from CMU Flite voices (Debian's ``flite``), called as a program.

Flite's English voices are built from recordings of real speakers (a diphone voice of Kevin Lenzo and
clustergen voices trained on the CMU ARCTIC speakers awb, rms and slt), so they sound like people rather than
eSpeak's formant synthesiser. The binary is an optional system package (``apt-get install flite``; ``bash
scripts/setup.sh`` installs it); this module imports without it and raises a clear error when speech is asked for.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.flite import synthesize_flite
    >>> clip = synthesize_flite("turn on the light", voice="slt")            # float32, 16 kHz
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from ..audio import SAMPLING_RATE
from .espeak import _trim_silence

#: The Flite program this module runs.
FLITE_BINARY = "flite"
#: How to install it.
FLITE_INSTALL_HINT = "apt-get install flite (or: bash scripts/setup.sh)"
#: Seconds one synthesis may take before it is treated as hung.
TIMEOUT_S = 60.0


def flite_available() -> bool:
    """Whether the ``flite`` program is on ``PATH``."""
    return shutil.which(FLITE_BINARY) is not None


def _binary() -> str:
    path = shutil.which(FLITE_BINARY)
    if path is None:
        raise FileNotFoundError(f"the {FLITE_BINARY!r} program is not installed: {FLITE_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def flite_voices() -> tuple[str, ...]:
    """The voices the installed ``flite`` lists (``flite -lv``), e.g. ``("kal", "awb_time", "kal16", ...)``."""
    result = subprocess.run([_binary(), "-lv"], capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
    _, _, names = result.stdout.partition(":")
    return tuple(names.split())


def synthesize_flite(
    text: str,
    voice: str = "slt",
    duration_stretch: float = 1.0,
    f0_shift: float = 1.0,
    sample_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Speak ``text`` with a Flite voice.

    The output is a pure function of the arguments (Flite has no random state).

    Args:
        text: what to say (English).
        voice: a voice ``flite -lv`` lists: ``kal`` (8 kHz diphone), ``kal16``, ``awb``, ``rms``, ``slt``.
        duration_stretch: Flite's ``duration_stretch`` feature: > 1 speaks slower (1.2 = 20% longer).
        f0_shift: Flite's ``f0_shift`` feature: multiplies the pitch contour (1.12 = about two semitones up).
        sample_rate: output rate in Hz; the voice's own rate (8 or 16 kHz) is resampled (polyphase).

    Returns:
        float32 mono waveform ``(samples,)`` in [-1, 1], trimmed to the speech plus 50 ms at each end.

    Raises:
        FileNotFoundError: ``flite`` is not installed.
        ValueError: empty text, a voice the installed ``flite`` does not list (Flite itself would silently fall
            back to its default voice), or a non-positive stretch, shift or rate.
        RuntimeError: Flite failed or wrote no audio.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string, got {text!r}")
    for name, value in (("duration_stretch", duration_stretch), ("f0_shift", f0_shift), ("sample_rate", sample_rate)):
        if not value > 0:
            raise ValueError(f"`{name}` ({value}) must be positive")
    binary = _binary()
    if voice not in flite_voices():
        raise ValueError(f"unknown flite voice {voice!r}: the installed flite has {', '.join(flite_voices())}")
    with tempfile.TemporaryDirectory(prefix="flite-") as folder:
        output = Path(folder) / "speech.wav"
        command = [binary, "-voice", voice, "--setf", f"duration_stretch={float(duration_stretch)!r}",
                   "--setf", f"f0_shift={float(f0_shift)!r}", "-t", text, "-o", str(output)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        if result.returncode != 0 or not output.is_file():
            raise RuntimeError(f"flite failed for {text!r} with voice {voice!r} (exit {result.returncode}): "
                               f"{result.stderr.strip()[-500:]}")
        samples, native_rate = sf.read(output, dtype="float64", always_2d=True)
    return _finish(samples.mean(axis=1), int(native_rate), int(sample_rate), f"flite voice {voice!r}", text)


def _finish(audio: np.ndarray, native_rate: int, sample_rate: int, what: str, text: str) -> np.ndarray:
    """Resample to ``sample_rate``, trim the silence at the ends, clip to [-1, 1] as float32."""
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"{what} produced no audio for {text!r}")
    if native_rate != sample_rate:
        divisor = math.gcd(native_rate, sample_rate)
        audio = signal.resample_poly(audio, sample_rate // divisor, native_rate // divisor)
    return np.clip(_trim_silence(audio, sample_rate), -1.0, 1.0).astype(np.float32)
