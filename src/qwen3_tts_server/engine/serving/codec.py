"""Codes to PCM while a slot is still generating: the 12 Hz decoder over a sliding window.

The decoder is causal (causal convolutions, a transformer with a sliding attention window), so
the samples of frames [a, b) depend only on frames before b. Decoding a chunk together with the
`context` frames before it and dropping the context's samples gives nearly what one-shot
decoding gives (bench/codec.py measures the difference per context size); stock qwen-tts itself
decodes long outputs this way (chunks of 300 frames, 25 frames of context).

Why: audio can leave after the first few frames instead of after the whole utterance, and an ICL
voice's reference needs no full re-decode per request (stock decodes reference + output, then
cuts the reference off): its last `context` frames are the first chunk's left context.

Chunk sizes follow a schedule: a small first chunk (first audio sooner), larger ones after (each
decode call re-decodes its context, so small chunks cost more). The pieces of one slot, joined,
are its audio whatever the consumer: streamed and stored audio are the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

#: Frames of left context per decode call. Measured at the real 0.6B decoder dimensions
#: (bench/codec.py, random weights, 100 frames, chunks of 4 then 12-50): 4 frames leave
#: 20-29 dB SNR against one-shot decoding, 8 frames 47-53 dB (max |diff| 0.01), 16 frames
#: 50-56 dB, 25 (stock's own choice) 54-58 dB; in bf16 every context from 8 up sits at the
#: bf16 noise floor (35-37 dB). 8 is past the knee (the convolutions' reach) with the error
#: near -50 dB, and re-decodes a third of what 25 would for 25-frame pieces; a streamed first
#: piece of an ICL voice (4 frames after 8 of its reference) stays small.
DEFAULT_CONTEXT = 8

#: Windows per decoder call at most. On an H200, calls of 48+ windows hit an out-of-bounds
#: gather inside transformers' attention-mask building for the decoder (a device-side assert
#: that leaves the GPU unusable); 16 windows of 33 frames ran cleanly and take ~60-80 ms there.
MAX_DECODE_BATCH = 16


@dataclass(frozen=True)
class ChunkSchedule:
    """How many new frames each decode call takes: `first` for the first call, then `next`."""

    first: int = 4
    next: int = 25
    context: int = DEFAULT_CONTEXT

    def __post_init__(self) -> None:
        if self.first < 1 or self.next < 1 or self.context < 0:
            raise ValueError("chunk sizes must be >= 1 and the context >= 0")


#: The schedule of every request, streamed or not, so that a stream and a /tts file of the same
#: seeded text (run alone) are the same samples: first audio after 4 frames (0.32 s of audio),
#: then 2 s pieces, which is also how often the runaway guard hears new audio.
STREAMING = ChunkSchedule(first=4, next=25)


class Codec:
    """One model's 12 Hz speech tokenizer decoder."""

    def __init__(self, speech_tokenizer: Any) -> None:
        model = speech_tokenizer.model
        self.decoder = model.decoder
        self.upsample = int(model.get_decode_upsample_rate())
        self.sample_rate = int(model.get_output_sample_rate())
        self.device = next(self.decoder.parameters()).device

    def decode(self, codes: torch.Tensor, skip: int = 0) -> npt.NDArray[np.float32]:
        """float32 samples of frames `codes` (T, groups), minus the first `skip` frames' samples."""
        return self.decode_many([(codes, skip)])[0]

    @torch.inference_mode()
    def decode_many(
        self, windows: Sequence[tuple[torch.Tensor, int]]
    ) -> list[npt.NDArray[np.float32]]:
        """`decode` of several windows in one decoder call (one weight pass for all slots whose
        audio is due in the same step). Shorter windows are padded on the right: the decoder is
        causal, so padding after a window's last frame changes none of its samples. The
        windows are on the host: one upload of the padded batch, one download of the PCM.
        At most MAX_DECODE_BATCH windows go into one call."""
        if len(windows) > MAX_DECODE_BATCH:
            return [
                samples
                for start in range(0, len(windows), MAX_DECODE_BATCH)
                for samples in self.decode_many(windows[start : start + MAX_DECODE_BATCH])
            ]
        longest = max(codes.shape[0] for codes, _ in windows)
        batch = torch.zeros(len(windows), longest, windows[0][0].shape[1], dtype=torch.long)
        for row, (codes, _) in enumerate(windows):
            batch[row, : codes.shape[0]] = codes
        wav = self.decoder(batch.to(self.device).clamp(min=0).transpose(1, 2))[:, 0]
        wav = wav.to(torch.float32).cpu().numpy()
        up = self.upsample
        return [
            wav[row, skip * up : codes.shape[0] * up] for row, (codes, skip) in enumerate(windows)
        ]


class StreamDecoder:
    """A slot's decode state: which frames have become samples, and the context before them."""

    def __init__(
        self, codec: Codec, schedule: ChunkSchedule, reference: torch.Tensor | None = None
    ) -> None:
        self.codec = codec
        self.schedule = schedule
        self.decoded = 0  # frames already turned into samples
        self._reference = None
        if reference is not None and schedule.context > 0:
            self._reference = reference[-schedule.context :].cpu()

    def due(self, available: int, final: bool) -> bool:
        """Is a decode call due with `available` frames generated (`final`: no more will come)?"""
        pending = available - self.decoded
        if pending <= 0:
            return False
        wanted = self.schedule.first if self.decoded == 0 else self.schedule.next
        return final or pending >= wanted

    def decode(self, frames: torch.Tensor) -> npt.NDArray[np.float32]:
        """Samples of frames[decoded:] (all frames generated so far); advances `decoded`."""
        return self.codec.decode(*self.window(frames))

    def window(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        """What decodes frames[decoded:] (all frames so far, on the host, where the step
        engine keeps them): the frames with their left context, and how many leading frames
        are context; advances `decoded`."""
        context = self.schedule.context
        start = max(0, self.decoded - context)
        window = frames[start:]
        skip = self.decoded - start
        if self._reference is not None and skip < context:
            extra = self._reference[
                len(self._reference) - min(len(self._reference), context - skip) :
            ]
            window = torch.cat([extra, window])
            skip += extra.shape[0]
        self.decoded = frames.shape[0]
        return window, skip
