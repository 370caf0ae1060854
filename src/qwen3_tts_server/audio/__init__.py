"""Audio in and out: decode uploads from their content, resample, encode outputs, build ZIPs.

In-process only (libsndfile via soundfile, soxr): no ffmpeg, no subprocess, no temp files.
"""
