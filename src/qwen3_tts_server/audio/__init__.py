"""Audio in and out: decode uploads from their content, resample, encode outputs, build ZIPs.

In-process only (libsndfile via soundfile, soxr; FFmpeg's libraries via PyAV for AAC and speed
changes): no ffmpeg executable, no subprocess, no temp files.
"""
