"""Everything that runs the model, behind the `Engine` contract of base.py.

model/ loads qwen-tts and keeps its stock path as the reference; step/ is the batched serving
step (device state, sampling, CUDA graphs); serving/ is the loop thread that admits, steps,
decodes and guards; text/ splits texts and budgets their frames. docs/architecture.md has the map.
"""
