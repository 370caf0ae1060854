"""`python -m qwen3_tts_server` is the same as the `qwen3-tts-server` command."""

from qwen3_tts_server.cli import main

main()
