"""Speech: reading answers aloud (system voices and Piper) and listening (whisper.cpp)."""
