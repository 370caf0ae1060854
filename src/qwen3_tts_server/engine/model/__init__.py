"""The loaded models: qwen-tts loading and its stock path (the reference), model files, prompt
building and stored voice prompts, size presets and the locally built random models."""
