"""Facts about audio that every module shares: the rate the model hears and the files it reads."""

#: Qwen2-Audio's (and Whisper's) feature extractor rate, in Hz. Every waveform the model sees is mono at this rate.
SAMPLING_RATE = 16_000

#: File endings a folder scan picks up (anything soundfile or ffmpeg decodes; files named directly are always
#: tried, whatever their ending).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif", ".aiff",
                    ".aifc", ".au", ".caf", ".webm", ".mp4", ".mka", ".w64", ".rf64")
