"""The mini world: the LDV conditions and simulator, the eSpeak NG texts, speech and paired corpus, the Whisper-base
reader and the mini base build."""
