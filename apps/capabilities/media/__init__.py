"""Media code shared by the CPU services: audio decoding and analysis, video encoding.

Everything here runs on the CPU with the libraries that wheels bundle (PyAV's ffmpeg,
WORLD, Praat, eSpeak NG); nothing imports torch.
"""
