# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech from Festival voices (Debian's ``festival`` with ``festvox-*`` voice packages), called as a program.

The voices come from recordings of real speakers: ``kal_diphone`` (Kevin Lenzo) and ``ked_diphone`` are diphone
voices (``festvox-kallpc16k``, ``festvox-kdlpc16k``), ``cmu_us_slt_arctic_hts`` an HTS statistical voice trained
on the CMU ARCTIC speaker slt (``festvox-us-slt-hts``). Each call runs Festival's ``text2wave`` once, so no state
carries over between clips. The programs are optional system packages (``bash scripts/setup.sh`` installs them);
this module imports without them.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.festival import synthesize_festival
    >>> clip = synthesize_festival("turn on the light", voice="kal_diphone")     # float32, 16 kHz
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import SAMPLING_RATE
from .flite import _finish

#: Festival's programs this module runs: ``text2wave`` synthesises, ``festival`` lists the voices.
TEXT2WAVE_BINARY, FESTIVAL_BINARY = "text2wave", "festival"
#: How to install them (with the three English voices this project uses).
FESTIVAL_INSTALL_HINT = (
    "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts (or: bash scripts/setup.sh)"
)
#: Seconds one synthesis may take before it is treated as hung.
TIMEOUT_S = 120.0
_VOICE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def festival_available() -> bool:
    """Whether ``text2wave`` and ``festival`` are on ``PATH``."""
    return shutil.which(TEXT2WAVE_BINARY) is not None and shutil.which(FESTIVAL_BINARY) is not None


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"the {name!r} program (Festival) is not installed: {FESTIVAL_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def festival_voices() -> tuple[str, ...]:
    """The voices the installed Festival finds (``(voice.list)``), e.g. ``("cmu_us_slt_arctic_hts", ...)``."""
    result = subprocess.run([_binary(FESTIVAL_BINARY), "--batch", "(print (voice.list))"], capture_output=True,
                            text=True, timeout=TIMEOUT_S, check=True)
    return tuple(result.stdout.strip().strip("()").split())


def is_hts_voice(voice: str) -> bool:
    """HTS voices take their speed from the HTS engine (``-r``) and have no pitch control here."""
    return voice.endswith("_hts")


def _settings(voice: str, duration_stretch: float, f0_shift: float) -> list[str]:
    """The Scheme expressions that select ``voice`` and set its speed and pitch (``text2wave -eval``)."""
    expressions = [f"(voice_{voice})"]
    if is_hts_voice(voice):
        # the HTS engine ignores Duration_Stretch; its "-r" is a speed factor (durations scale by 1/r)
        speed = 1.0 / duration_stretch
        expressions.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {speed!r}))))')
    else:
        expressions.append(f"(Parameter.set 'Duration_Stretch {float(duration_stretch)!r})")
        if f0_shift != 1.0:
            # the diphone voices' intonation targets are linear-regression F0 values scaled to the speaker's mean:
            # shadow that mean with a scaled copy (assoc finds the first entry)
            expressions.append(
                f"(set! int_lr_params (cons (list 'target_f0_mean (* {float(f0_shift)!r} "
                "(car (cdr (assoc 'target_f0_mean int_lr_params))))) int_lr_params))"
            )
    return expressions


def synthesize_festival(
    text: str,
    voice: str = "kal_diphone",
    duration_stretch: float = 1.0,
    f0_shift: float = 1.0,
    sample_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Speak ``text`` with a Festival voice.

    The output is a pure function of the arguments (each call is a fresh ``text2wave`` process; the voices have
    no random state).

    Args:
        text: what to say (English).
        voice: a voice the installed Festival lists: ``kal_diphone``, ``ked_diphone``, ``cmu_us_slt_arctic_hts``.
        duration_stretch: > 1 speaks slower (1.2 = 20% longer).
        f0_shift: multiplies the speaker's mean pitch target (diphone voices only; HTS voices need 1.0).
        sample_rate: output rate in Hz; the voice's own rate (16 kHz diphones, 32 kHz HTS) is resampled.

    Returns:
        float32 mono waveform ``(samples,)`` in [-1, 1], trimmed to the speech plus 50 ms at each end.

    Raises:
        FileNotFoundError: Festival is not installed.
        ValueError: empty text, a voice the installed Festival does not list, a pitch shift for an HTS voice, or
            a non-positive stretch, shift or rate.
        RuntimeError: Festival failed or wrote no audio.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string, got {text!r}")
    for name, value in (("duration_stretch", duration_stretch), ("f0_shift", f0_shift), ("sample_rate", sample_rate)):
        if not value > 0:
            raise ValueError(f"`{name}` ({value}) must be positive")
    text2wave = _binary(TEXT2WAVE_BINARY)
    if not _VOICE_NAME.match(voice) or voice not in festival_voices():
        raise ValueError(f"unknown Festival voice {voice!r}: the installed Festival has {', '.join(festival_voices())}"
                         f" ({FESTIVAL_INSTALL_HINT})")
    if is_hts_voice(voice) and f0_shift != 1.0:
        raise ValueError(f"Festival voice {voice!r} is an HTS voice: its pitch cannot be shifted here (f0_shift "
                         f"{f0_shift}); use 1.0")
    with tempfile.TemporaryDirectory(prefix="festival-") as folder:
        output = Path(folder) / "speech.wav"
        command = [text2wave, "-o", str(output)]
        for expression in _settings(voice, duration_stretch, f0_shift):
            command += ["-eval", expression]
        # the text goes in on stdin, never through the Scheme reader, so quotes and brackets in it are harmless
        result = subprocess.run(command, input=text + "\n", capture_output=True, text=True, timeout=TIMEOUT_S)
        # Festival reports Scheme errors on stderr and still exits 0
        if result.returncode != 0 or "SIOD ERROR" in result.stderr or not output.is_file():
            raise RuntimeError(f"Festival failed for {text!r} with voice {voice!r} (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[-500:]}")
        samples, native_rate = sf.read(output, dtype="float64", always_2d=True)
    return _finish(samples.mean(axis=1), int(native_rate), int(sample_rate), f"Festival voice {voice!r}", text)
