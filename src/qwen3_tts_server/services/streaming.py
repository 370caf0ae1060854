"""Streamed /tts: the first sentences' audio goes out as soon as it exists, the rest follows.

The text is split exactly as /tts splits it (`split_text`, CHUNK_MAX_CHARS). The first chunk is
a scheduler job of its own, awaited *before* the response starts: the first audio is ready
after one chunk instead of the whole text, and everything a client can cause (text, format,
language, voice, quota, a prompt the model refuses, a full queue, no model) still answers as a
JSON error. The first chunk is not submitted together with the rest because the scheduler
merges waiting compatible jobs, and it would then wait for the whole batch.

The remaining chunks are submitted at once, as jobs of at most ENGINE_MAX_BATCH items. Those
are exactly the model calls the scheduler would make for them anyway (no call is larger), so
streaming costs batching nothing beyond the first chunk's call, and each call's audio is sent
the moment it ends: the second piece arrives early too, and later pieces are already queued
while earlier ones are being sent.

Pieces are joined with /tts's `join_sentences`, so the stream is, sample for sample, the audio
/tts joins from the same pieces. The pieces themselves come from separate model calls: a
seeded stream is reproducible, but it is not the seeded /tts audio of the same text.

Bookkeeping: the generation row is made before the response (its id is a header) with status
"streaming", which is never counted or charged. It becomes "ok", charged once like /tts, when
the last audio has been handed to the connection; "error" when the model fails mid-stream;
"cancelled" when the stream is closed before its end (the client went away). Jobs not run yet
are then withdrawn from the queue. A process that dies mid-stream leaves "streaming" behind,
which the next start settles as "interrupted", uncharged (services/recovery.py).

Only formats written sample by sample can stream: `pcm` (raw s16le) and `wav`, whose header
says "size unknown" (0xFFFFFFFF), which players and libsndfile read to the end of the stream.
The others are whole files that libsndfile finishes only once all the audio is known.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
import numpy as np
from starlette.concurrency import run_in_threadpool

from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.scheduler import Scheduler
from qwen3_tts_server.engine.textsplit import split_text
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.synthesis import (
    STREAMING,
    SpeechRequest,
    SynthesisService,
    join_sentences,
)
from qwen3_tts_server.values import Audio, Sampling

#: Formats whose audio can be sent before all of it exists (see the module docstring).
STREAMABLE_FORMATS = ("pcm", "wav")

_ERROR = "error"
_CANCELLED = "cancelled"
_DONE = "ok"

#: RIFF and data chunk sizes meaning "unknown: read to the end of the stream".
_UNKNOWN_SIZE = 0xFFFFFFFF


def wav_stream_header(sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV file whose length is not known yet."""
    block_align = 2  # one 16-bit channel
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        _UNKNOWN_SIZE,
        b"WAVE",
        b"fmt ",
        16,  # size of the fmt chunk
        1,  # PCM
        1,  # channels
        sample_rate,
        sample_rate * block_align,  # bytes per second
        block_align,
        16,  # bits per sample
        b"data",
        _UNKNOWN_SIZE,
    )


def _elapsed_ms(started: float, ended: float) -> int:
    return max(1, round((ended - started) * 1000))


@dataclass(frozen=True)
class _Piece:
    """The joined audio of one scheduler job and when the model handed it over."""

    audio: Audio
    ready_at: float


async def _synthesize_piece(
    scheduler: Scheduler, items: Sequence[SynthItem], sampling: Sampling, *, continues: bool
) -> _Piece:
    audio = await scheduler.synthesize(items, sampling)
    return _Piece(join_sentences(audio, continues=continues), time.perf_counter())


class SpeechStream:
    """One accepted streamed text: what the headers say now, and its audio as it is made.

    Iterate `chunks()` once. Call `close()` however the response ends: it is what settles a
    stream that was not read to its end (idempotent, and a no-op after a complete stream).
    """

    def __init__(
        self,
        synthesis: SynthesisService,
        generation_id: int,
        text: str,
        request: SpeechRequest,
        started: float,
        first: _Piece,
        pending: list[asyncio.Task[_Piece]],
    ) -> None:
        self.generation_id = generation_id
        self.tokens_used = len(text)
        self.sample_rate = first.audio.sample_rate
        #: From submitting the first job to its audio being ready: the server's time to first
        #: audio (queue wait included), which is all of X-Latency-Ms that is known up front.
        self.first_audio_ms = _elapsed_ms(started, first.ready_at)
        spec = FORMATS[request.format]
        self.media_type = spec.media_type
        self.extension = spec.extension
        #: Seconds of audio once the stream completed and was charged, else None.
        self.audio_seconds: float | None = None
        self._synthesis = synthesis
        self._text = text
        self._request = request
        self._started = started
        self._first = first
        self._pending = pending
        self._status = STREAMING

    async def chunks(self) -> AsyncIterator[bytes]:
        """The audio file in pieces: (a WAV header, then) s16le samples as each job ends.

        A failure is recorded (status "error", no charge) and re-raised: the response must end
        abruptly, so the client can tell the audio is incomplete.
        """
        try:
            if self._request.format == "wav":
                yield wav_stream_header(self.sample_rate)
            pieces = [self._first]
            yield await run_in_threadpool(encode, self._first.audio, "pcm")
            for task in self._pending:
                piece = await task
                pieces.append(piece)
                yield await run_in_threadpool(encode, piece.audio, "pcm")
            await self._complete(pieces)
        except Exception as error:  # the model, the queue, a bug: the stream cannot go on
            await self._end_early(_ERROR, str(error))
            raise

    async def close(self) -> None:
        """End the stream; if it had not completed, it was cancelled (the client went away)."""
        await self._end_early(_CANCELLED, "the stream was closed before its end")

    async def _end_early(self, status: str, error: str) -> None:
        if self._status == STREAMING:
            self._status = status
            await _abandon(self._synthesis, self.generation_id, self._pending, status, error)

    async def _complete(self, pieces: Sequence[_Piece]) -> None:
        audio = Audio(np.concatenate([piece.audio.samples for piece in pieces]), self.sample_rate)
        data = await run_in_threadpool(encode, audio, self._request.format)
        latency_ms = _elapsed_ms(self._started, pieces[-1].ready_at)
        # Shielded: once charged, a disconnect arriving now must not also mark it cancelled.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                self._synthesis.finish_generation,
                self.generation_id,
                self._request,
                self._text,
                audio,
                data,
                latency_ms,
            )
            self._status = _DONE
        self.audio_seconds = audio.duration_s


async def _abandon(
    synthesis: SynthesisService,
    generation_id: int,
    pending: Sequence[asyncio.Task[_Piece]],
    status: str,
    error: str,
) -> None:
    """A stream ended before its end: withdraw its jobs and record it, free of charge.

    Cancelled jobs that wait leave the queue unrun; a running one's result is dropped. Shielded,
    because this runs while the request itself is being cancelled and must still be recorded.
    """
    for task in pending:
        task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.gather(*pending, return_exceptions=True)
        await run_in_threadpool(synthesis.abandon_generation, generation_id, status, error)


class StreamingService:
    """Opens streamed /tts calls with /tts's rules (SynthesisService's checks and records)."""

    def __init__(
        self, settings: Settings, runtime: ModelRuntime, synthesis: SynthesisService
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._synthesis = synthesis

    async def open(self, user_id: int, text: str, request: SpeechRequest) -> SpeechStream:
        """Validate, then synthesise the first chunk and queue the rest; nothing sent yet.

        Raises what /tts raises, before any audio exists; a failure after the row was made
        is recorded on it.
        """
        synthesis = self._synthesis
        text, request, language = synthesis.check_single(text, request)
        if request.format not in STREAMABLE_FORMATS:
            raise BadRequest(
                f"Format {request.format!r} cannot be streamed; streaming supports "
                f"{', '.join(STREAMABLE_FORMATS)} (or send stream: false)"
            )
        prompt = await run_in_threadpool(synthesis.prepare, user_id, request, len(text))
        scheduler = self._runtime.loaded().scheduler
        items = [
            SynthItem(chunk, language, prompt)
            for chunk in split_text(text, self._settings.chunk_max_chars)
        ]
        generation_id = await run_in_threadpool(
            synthesis.open_generation, user_id, request, language, len(text)
        )
        started = time.perf_counter()
        try:
            first = await _synthesize_piece(scheduler, items[:1], request.sampling, continues=False)
        except Exception as error:
            await _abandon(synthesis, generation_id, (), _ERROR, str(error))
            raise
        except asyncio.CancelledError:  # e.g. shutdown: the row must not stay "streaming"
            await _abandon(synthesis, generation_id, (), _CANCELLED, "cancelled before any audio")
            raise
        step = self._settings.engine_max_batch
        pending = [
            asyncio.create_task(
                _synthesize_piece(
                    scheduler, items[start : start + step], request.sampling, continues=True
                )
            )
            for start in range(1, len(items), step)
        ]
        return SpeechStream(synthesis, generation_id, text, request, started, first, pending)
