# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Speech-training augmentations for synthetic clips, through maintained libraries, seeded per clip.

Two stages, because a talker and a room are different things:

* :func:`perturb_speech` changes the talker: speed perturbation (tempo and pitch together, 0.9-1.1, by resampling
  with ``librosa``/``soxr``, as Kaldi-style speed perturbation does) and a pitch shift (``audiomentations.PitchShift``).
  Both the microphone and the LDV recording of an utterance hear the perturbed talker.
* :func:`microphone_channel` changes the microphone's view: a room response (``audiomentations.RoomSimulator``,
  which builds a shoebox room with ``pyroomacoustics``' image-source model for a drawn RT60), a level change
  (``audiomentations.Gain``) and background noise of a drawn colour and SNR (``audiomentations.AddColorNoise``).
  The LDV recording gets its own channel from the simulator instead.

Every draw comes from the clip's seed, so the same seed gives bit-identical audio in any process and whatever ran
before. ``audiomentations`` draws from Python's ``random`` and NumPy's global generator; each call seeds both from
the clip's seed and puts their previous states back afterwards. The libraries are in the ``speech`` extra
(``pip install "qwen2audio-ldv[speech]"``) and are imported only when a clip is augmented.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.augment import SpeechAugmentation, perturb_speech, microphone_channel
    >>> augmentation = SpeechAugmentation()
    >>> talker = perturb_speech(clip, 16000, seed=7, augmentation=augmentation)
    >>> mic = microphone_channel(talker, 16000, seed=7, augmentation=augmentation)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

#: How to install the libraries.
INSTALL_HINT = 'pip install "qwen2audio-ldv[speech]" (audiomentations, pyroomacoustics)'
_PEAK = 0.99  # the output's largest allowed |sample|: a louder clip is scaled down, never clipped


@dataclasses.dataclass(frozen=True)
class SpeechAugmentation:
    """Ranges and probabilities of the augmentations (each clip draws its own values).

    Attributes:
        speed_range: speed factor range (> 1 faster); tempo and pitch change together.
        speed_probability: share of clips whose speed changes.
        pitch_semitones: pitch shift range in semitones, tempo kept.
        pitch_probability: share of clips shifted in pitch.
        rt60_range: reverberation time range of the simulated room, seconds.
        room_probability: share of microphone clips with a room response.
        gain_db: level change range in dB (always applied).
        noise_snr_db: background noise SNR range in dB.
        noise_decay_db_per_octave: noise colour range (-6 brown ... 0 white ... +6 violet).
        noise_probability: share of microphone clips with background noise.
    """

    speed_range: tuple[float, float] = (0.9, 1.1)
    speed_probability: float = 1.0
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    pitch_probability: float = 0.5
    rt60_range: tuple[float, float] = (0.15, 0.6)
    room_probability: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 0.0)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    noise_decay_db_per_octave: tuple[float, float] = (-6.0, 6.0)
    noise_probability: float = 0.5

    def __post_init__(self) -> None:
        for name in ("speed_range", "pitch_semitones", "rt60_range", "gain_db", "noise_snr_db",
                     "noise_decay_db_per_octave"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"SpeechAugmentation.{name} ({low}, {high}) must be an increasing pair")
        if not 0.0 < self.speed_range[0]:
            raise ValueError(f"SpeechAugmentation.speed_range {self.speed_range} must be positive")
        if not 0.0 < self.rt60_range[0]:
            raise ValueError(f"SpeechAugmentation.rt60_range {self.rt60_range} must be positive")
        for name in ("speed_probability", "pitch_probability", "room_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SpeechAugmentation.{name} ({getattr(self, name)}) must be within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _import_audiomentations() -> Any:
    try:
        import audiomentations
    except ImportError as error:
        raise ImportError(f"augmentations need audiomentations and pyroomacoustics: {INSTALL_HINT}") from error
    return audiomentations


@functools.lru_cache(maxsize=8)
def _transforms(augmentation: SpeechAugmentation) -> dict[str, Any]:
    """The ``audiomentations`` transforms of one configuration (built once per process)."""
    audiomentations = _import_audiomentations()
    return {
        "pitch": audiomentations.PitchShift(min_semitones=augmentation.pitch_semitones[0],
                                            max_semitones=augmentation.pitch_semitones[1],
                                            p=augmentation.pitch_probability),
        "room": audiomentations.RoomSimulator(calculation_mode="rt60", min_target_rt60=augmentation.rt60_range[0],
                                              max_target_rt60=augmentation.rt60_range[1],
                                              # no ray tracing: a diffuse image-source tail is enough for training
                                              # and ~10x faster; order 10 gives that tail
                                              use_ray_tracing=False, max_order=10, leave_length_unchanged=True,
                                              p=augmentation.room_probability),
        "gain": audiomentations.Gain(min_gain_db=augmentation.gain_db[0], max_gain_db=augmentation.gain_db[1], p=1.0),
        "noise": audiomentations.AddColorNoise(min_snr_db=augmentation.noise_snr_db[0],
                                               max_snr_db=augmentation.noise_snr_db[1],
                                               min_f_decay=augmentation.noise_decay_db_per_octave[0],
                                               max_f_decay=augmentation.noise_decay_db_per_octave[1],
                                               p=augmentation.noise_probability),
    }


@contextlib.contextmanager
def _global_generators(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global generators (which ``audiomentations`` draws from); restore them after."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _check(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"expected a non-empty mono float waveform (samples,), got {audio.dtype} {audio.shape}")
    if int(sample_rate) <= 0:
        raise ValueError(f"`sample_rate` ({sample_rate}) must be a positive number of Hz")
    return audio.astype(np.float32)


def _limited(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > _PEAK:
        audio = audio * (_PEAK / peak)
    return audio.astype(np.float32)


def perturb_speech(audio: np.ndarray, sample_rate: int, seed: int,
                   augmentation: SpeechAugmentation = SpeechAugmentation()) -> np.ndarray:
    """The talker perturbed: speed (resampling; length ``/ speed``) and pitch (tempo kept).

    Args:
        audio: mono float waveform ``(samples,)``.
        sample_rate: Hz.
        seed: the clip's seed (non-negative integer).
        augmentation: ranges and probabilities.

    Returns:
        float32 ``(round(samples / speed),)``, peak at most 0.99.
    """
    import librosa

    audio = _check(audio, sample_rate)
    rng = np.random.default_rng([int(seed), 1])
    if rng.random() < augmentation.speed_probability:
        speed = float(rng.uniform(*augmentation.speed_range))
        # read the clip as if recorded at rate * speed and bring it back to the rate: faster and higher by `speed`
        audio = librosa.resample(audio, orig_sr=sample_rate * speed, target_sr=sample_rate, res_type="soxr_hq")
    with _global_generators(int(rng.integers(2**63))):
        audio = _transforms(augmentation)["pitch"](samples=audio, sample_rate=int(sample_rate))
    return _limited(audio)


def microphone_channel(audio: np.ndarray, sample_rate: int, seed: int,
                       augmentation: SpeechAugmentation = SpeechAugmentation()) -> np.ndarray:
    """The microphone's view of a talker: room response, level and background noise.

    Args:
        audio: mono float waveform ``(samples,)``.
        sample_rate: Hz.
        seed: the clip's seed (non-negative integer).
        augmentation: ranges and probabilities.

    Returns:
        float32 ``(samples,)`` (same length), peak at most 0.99.
    """
    audio = _check(audio, sample_rate)
    transforms = _transforms(augmentation)
    rng = np.random.default_rng([int(seed), 2])
    with _global_generators(int(rng.integers(2**63))):
        for name in ("room", "gain", "noise"):
            audio = transforms[name](samples=audio, sample_rate=int(sample_rate))
    return _limited(audio)


__all__ = ["INSTALL_HINT", "SpeechAugmentation", "microphone_channel", "perturb_speech"]
