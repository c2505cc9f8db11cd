"""The mini world: the LDV simulator, the paired eSpeak NG corpus, the Whisper-base reader and the mini base build."""
