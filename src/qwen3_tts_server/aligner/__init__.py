"""Word timestamps: Qwen3-ForcedAligner (the `qwen-asr` package) next to the speech model.

Given a text and the audio spoken for it, the aligner says when each word starts and ends.
This package loads it (files.py, model.py), runs it on its own thread beside the step loop
(worker.py), turns its units into the words of the text (words.py), writes captions
(captions.py) and builds a random model with the real architecture for tests, the demo and
benchmarks (tiny.py). It knows nothing of users, the database or HTTP, like engine/.
"""
