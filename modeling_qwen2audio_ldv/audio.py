# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Audio in: the rate the model hears, the files it reads, and the one decode / resample / check path.

Three layers, each built on the one before:

1. :func:`decode_audio_file`: a file (path or ``{"path", "bytes"}``) -> ``(samples, rate)``, ``float32`` of shape
   ``(frames, channels)`` at the file's own rate (soundfile first, torchcodec/ffmpeg for other formats).
2. :func:`to_mono`: any samples and their rate -> mono ``float32`` ``(samples,)`` at :data:`SAMPLING_RATE`
   (channels averaged, polyphase resampling); :func:`load_audio` is layers 1 and 2 for a file.
3. Arrays from any value: :func:`audio_to_array` for training and evaluation data, which must already be mono at
   the model's rate (a datasets ``Audio(sampling_rate=16000)`` column: a wrong rate is an error, never resampled
   silently), and :func:`load_recording` for transcription, which takes a path, an audio dict or an array and
   converts whatever it gets.

Every error names the clip (``where``: a file, a dataset field) so a bad row can be found.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

#: Qwen2-Audio's (and Whisper's) feature extractor rate, in Hz. Every waveform the model sees is mono at this rate.
SAMPLING_RATE = 16_000

#: File endings a folder scan picks up (anything soundfile or ffmpeg decodes; files named directly are always
#: tried, whatever their ending).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif", ".aiff",
                    ".aifc", ".au", ".caf", ".webm", ".mp4", ".mka", ".w64", ".rf64")

#: A clip whose peak absolute sample (float scale, full scale = 1.0) is below this is digital silence.
#: 1e-6 is about -120 dBFS: below one LSB of 16-bit PCM (3.1e-5), so any 16-bit file with a single
#: non-zero sample passes, and float files of exact or near-exact zeros fail.
SILENCE_PEAK_THRESHOLD = 1e-6

#: Errors a decoder raises for a file it cannot read. soundfile raises LibsndfileError (a RuntimeError);
#: torchcodec/ffmpeg raise RuntimeError or ValueError; a vanished file raises OSError.
DECODE_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, OSError, EOFError)


# ------------------------------------------------------------------------------------------------ 1. decode
def decode_audio_file(value: str | Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """Decode one audio file with soundfile, falling back to torchcodec (ffmpeg) for other formats.

    Args:
        value: a path, or a datasets ``Audio(decode=False)`` value ``{"path": str | None, "bytes": bytes | None}``.

    Returns:
        ``(samples, sampling_rate)``: ``float32`` of shape ``(frames, channels)`` at the file's own rate (Hz).

    Raises:
        FileNotFoundError: the path does not exist (and there are no bytes).
        RuntimeError: neither decoder can read it; the message holds both decoders' errors.
    """
    path, data = (value, None) if isinstance(value, str) else (value.get("path"), value.get("bytes"))
    if data is None and path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    try:
        samples, rate = sf.read(io.BytesIO(data) if data is not None else path, dtype="float32", always_2d=True)
        return samples, int(rate)
    except sf.SoundFileError as sf_error:
        first_error = sf_error
    try:
        from torchcodec.decoders import AudioDecoder

        decoded = AudioDecoder(data if data is not None else path).get_all_samples()
    except ImportError:
        raise RuntimeError(f"soundfile: {first_error}") from first_error
    except (RuntimeError, ValueError) as tc_error:
        raise RuntimeError(f"soundfile: {first_error}; torchcodec: {error_line(tc_error)}") from tc_error
    return decoded.data.numpy().T.astype(np.float32, copy=False), int(decoded.sample_rate)


def error_line(error: BaseException) -> str:
    """The last line of a decoder's error message, without torchcodec's ``Function, /path/file.cpp:52,`` prefix."""
    text = str(error).strip().splitlines()
    return re.sub(r"^\w+, \S+\.cpp:\d+, ", "", text[-1]) if text else type(error).__name__


# ------------------------------------------------------------------------------------------------ 2. mono at the rate
def _checked_float32(audio: np.ndarray, where: str) -> np.ndarray:
    """``audio`` (1-D, floating point) as ``float32``; an empty clip or a NaN/Inf sample is an error."""
    if audio.size == 0:
        raise ValueError(f"{where}: the audio is empty")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise ValueError(f"{where}: the audio contains NaN or Inf samples")
    return audio


def _check_floating(audio: np.ndarray, where: str) -> None:
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{where}: audio samples must be floating point in [-1, 1], got {audio.dtype}")


def to_mono(samples: np.ndarray, rate: int, where: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mono ``float32`` ``(samples,)`` at ``sampling_rate`` Hz from floating-point samples at ``rate`` Hz.

    ``samples``: ``(samples,)``, or 2-D with the channels on the shorter axis (averaged). A different rate is
    resampled with ``scipy.signal.resample_poly`` (the rates' ratio reduced by their gcd).

    Raises:
        ValueError: more than two dimensions, integer samples, empty, or NaN/Inf samples (naming ``where``).
    """
    audio = np.asarray(samples)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[0] > audio.shape[1] else audio.mean(axis=0)
    if audio.ndim != 1:
        raise ValueError(f"{where}: expected mono or (samples, channels) audio, got shape {audio.shape}")
    _check_floating(audio, where)
    if int(rate) != sampling_rate:
        from scipy.signal import resample_poly

        divisor = math.gcd(int(rate), sampling_rate)
        audio = resample_poly(audio, sampling_rate // divisor, int(rate) // divisor)
    return _checked_float32(np.asarray(audio), where)


def load_audio(path: str | os.PathLike, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decode an audio file (any format soundfile or ffmpeg reads, any rate and channel count) to mono ``float32``
    ``(samples,)`` at ``sampling_rate`` Hz (channels averaged)."""
    path = os.fspath(path)
    samples, rate = decode_audio_file(path)
    # the decoder's layout is (frames, channels): average the channels whatever the clip's length
    return to_mono(samples.mean(axis=1), rate, path, sampling_rate)


# ------------------------------------------------------------------------------------------------ 3. any value
def _unpack(audio: Any, where: str) -> tuple[Any, int | None]:
    """``(samples, rate)`` of a datasets audio value (``rate`` from the value), or ``(array, None)`` for an array."""
    import torch

    if isinstance(audio, (np.ndarray, torch.Tensor)):
        return audio, None
    if isinstance(audio, Mapping) or hasattr(audio, "get_all_samples"):  # a dict, or datasets' AudioDecoder
        try:
            return audio["array"], audio["sampling_rate"]
        except KeyError as error:
            raise ValueError(f"{where}: an audio dict needs 'array' and 'sampling_rate', got keys "
                             f"{list(audio)}") from error
        except RuntimeError as error:  # torchcodec/ffmpeg cannot decode the file
            raise ValueError(f"{where}: cannot decode the audio ({error}); run validate_dataset / "
                             f"filter_bad_examples first") from error
    raise ValueError(f"{where}: expected decoded audio (dict with 'array' and 'sampling_rate', or a 1-D "
                     f"array), got {type(audio).__name__}")


def audio_to_array(audio: Any, sampling_rate: int = SAMPLING_RATE, where: str = "audio") -> np.ndarray:
    """Return the samples of one clip as mono ``float32`` of shape ``(samples,)``, checking its rate.

    Args:
        audio: a datasets audio value (the decoder a decoded ``Audio`` column yields, or a dict with
            ``array`` and ``sampling_rate``), or a 1-D numpy array / torch tensor already at
            ``sampling_rate``.
        sampling_rate: the required rate (Hz).
        where: a description of the clip for error messages.

    Raises:
        ValueError: wrong sampling rate, not 1-D (multi-channel), integer samples, empty, or NaN/Inf samples.
    """
    import torch

    array, rate = _unpack(audio, where)
    if rate is not None and int(rate) != sampling_rate:
        raise ValueError(f"{where}: audio is at {rate} Hz but Qwen2-Audio needs {sampling_rate} Hz; cast the "
                         f"column with dataset.cast_column('audio', datasets.Audio(sampling_rate={sampling_rate}))")
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"{where}: audio must be mono with shape (samples,), got shape {array.shape}; average "
                         f"the channels first (datasets' audio['array'] is already mono)")
    _check_floating(array, where)
    return _checked_float32(array, where)


def load_recording(item: Any, sampling_rate: int = SAMPLING_RATE, where: str = "audio") -> np.ndarray:
    """One recording as mono ``float32`` at :data:`SAMPLING_RATE`: a path (:func:`load_audio`), a datasets audio
    value (``array``, ``sampling_rate``) or an array / tensor at ``sampling_rate``, converted by :func:`to_mono`."""
    import torch

    if isinstance(item, (str, os.PathLike)):
        return load_audio(item)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().float().numpy()
    if isinstance(item, np.ndarray):
        return to_mono(item, sampling_rate, where)
    if isinstance(item, Mapping) or hasattr(item, "get_all_samples"):
        samples, rate = _unpack(item, where)
        return to_mono(samples, int(rate), where)
    raise TypeError(f"{where}: expected a path, an audio dict or an array, got {type(item).__name__}")


def find_audio_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named directly (whatever their ending) and, for each folder, the files under it whose ending is in
    :data:`AUDIO_EXTENSIONS` (sorted)."""
    files: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                logger.warning("%s: no audio files (%s)", path, ", ".join(AUDIO_EXTENSIONS[:6]) + ", ...")
            files.extend(found)
        else:
            files.append(str(path))
    return files


__all__ = ["AUDIO_EXTENSIONS", "DECODE_ERRORS", "SAMPLING_RATE", "SILENCE_PEAK_THRESHOLD", "audio_to_array",
           "decode_audio_file", "error_line", "find_audio_files", "load_audio", "load_recording", "to_mono"]
