"""Qwen3-TTS Server: a self-hosted, multi-user REST API for Qwen3-TTS."""

__version__ = "0.3.0"
