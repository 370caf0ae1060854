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

Bookkeeping, all through the generation ledger and all in `SpeechStream`: the whole text is
reserved before any work (services/quota.py), and the row is opened before the response (its
id is a header) with status STREAMING, not counted or charged yet. It is settled OK, charged
once like /tts, when the last audio has been handed to the connection; ERROR, free, when the
model fails mid-stream; CANCELLED when the stream is closed before its end (the client went
away), charged for what it was sent (services/metering.py: the text up to the end of the last
chunk whose audio went out). Jobs not run yet are then withdrawn from the queue, and what was
reserved but not charged is released. A process that dies mid-stream leaves STREAMING behind,
which the next start settles as INTERRUPTED (free) and whose reservation it releases.

Times: X-Queue-Ms is the first job's wait for the model; the row's latency is model time, from
the first call's start to the last audio.

Only formats written sample by sample can stream: `pcm` (raw s16le) and `wav`, whose header
says "size unknown" (0xFFFFFFFF), which players and libsndfile read to the end of the stream.
The others are whole files that libsndfile finishes only once all the audio is known.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Sequence

import anyio
import numpy as np

from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.audio.ffmpeg import change_speed
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.services.generations import GenerationLedger, Order, Outcome, Spoken
from qwen3_tts_server.services.metering import DeliveryMeter
from qwen3_tts_server.services.quota import Hold
from qwen3_tts_server.services.runtime import LoadedModel, ModelRuntime, Synthesized, Timing
from qwen3_tts_server.services.speech import SpeechRequest, join_sentences
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.threads import in_thread
from qwen3_tts_server.services.voicing import ModelItem
from qwen3_tts_server.values import Audio, GenerationStatus, Sampling

#: Formats whose audio can be sent before all of it exists (see the module docstring).
STREAMABLE_FORMATS = ("pcm", "wav")

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


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def _piece(
    model: LoadedModel,
    items: Sequence[ModelItem],
    sampling: Sampling,
    *,
    continues: bool,
    speed: float,
) -> Synthesized:
    """One job's sentences, joined (with a leading pause when they continue the text), at the
    requested tempo."""
    result = await model.speak(items, sampling)
    joined = join_sentences(result.audio, continues=continues)
    if speed != 1.0:
        joined = await in_thread(change_speed, joined, speed)
    return Synthesized([joined], result.timing, result.started, result.ready_at)


class SpeechStream:
    """One accepted streamed text: what the headers say now, and its audio as it is made.

    Iterate `chunks()` once. Call `close()` however the response ends: it is what settles a
    stream that was not read to its end (idempotent, and a no-op after a settled stream).
    """

    def __init__(
        self,
        ledger: GenerationLedger,
        order: Order,
        hold: Hold,
        meter: DeliveryMeter,
        generation_id: int,
        submitted: float,
        first: Synthesized,
        pending: list[tuple[int, asyncio.Task[Synthesized]]],
    ) -> None:
        self.generation_id = generation_id
        self.tokens_used = len(order.texts[0])
        self.sample_rate = first.audio[0].sample_rate
        #: From submitting the first job to its audio being ready: the server's time to first
        #: audio (queue wait included), which is all of the latency that is known up front.
        self.first_audio_ms = _ms(first.ready_at - submitted)
        self.queue_ms = first.timing.queue_ms
        self.media_type = order.media_type
        self.extension = FORMATS[order.format].extension
        #: (tokens, seconds of audio) once the stream was settled with a charge: complete, or
        #: left by the client after some audio; None while open, or if it cost nothing.
        self.charge: tuple[int, float] | None = None
        self._ledger = ledger
        self._order = order
        self._hold = hold
        self._meter = meter
        self._first = first
        self._pending = pending
        self._status = GenerationStatus.STREAMING

    async def chunks(self) -> AsyncIterator[bytes]:
        """The audio file in pieces: (a WAV header, then) s16le samples as each job ends.

        Each piece's chunks are metered as sent before the piece is handed over (the billing
        rule). A failure is recorded (ERROR, no charge) and re-raised: the response must end
        abruptly, so the client can tell the audio is incomplete.
        """
        try:
            if self._order.format == "wav":
                yield wav_stream_header(self.sample_rate)
            pieces = [self._first]
            yield await self._send(0, self._first)
            for last_chunk, task in self._pending:
                piece = await task
                pieces.append(piece)
                yield await self._send(last_chunk, piece)
            await self._complete(pieces)
        except Exception as error:  # the model, the queue, a bug: the stream cannot go on
            await self._end_early(Outcome.failed(error))
            raise

    async def _send(self, last_chunk: int, piece: Synthesized) -> bytes:
        data = await in_thread(encode, piece.audio[0], "pcm")
        self._meter.sent(last_chunk, piece.audio[0].duration_s)
        return data

    async def close(self) -> None:
        """End the stream; if it had not completed, it was cancelled (the client went away)
        and is charged for the chunks it was sent."""
        meter = self._meter
        reason = "the stream was closed before its end"
        outcome = Outcome.cancelled(reason, meter.tokens, meter.audio_seconds)
        if await self._end_early(outcome) and meter.tokens:
            self.charge = (meter.tokens, meter.audio_seconds)

    async def _end_early(self, outcome: Outcome) -> bool:
        """Settle an unfinished stream with `outcome`; False if it was settled already."""
        if self._status is not GenerationStatus.STREAMING:
            return False
        self._status = outcome.status
        tasks = [task for _, task in self._pending]
        await _abandon(self._ledger, self._order, self._hold, self.generation_id, tasks, outcome)
        return True

    async def _complete(self, pieces: Sequence[Synthesized]) -> None:
        samples = np.concatenate([piece.audio[0].samples for piece in pieces])
        audio = Audio(samples, self.sample_rate)
        data = await in_thread(encode, audio, self._order.format)
        model_ms = _ms(pieces[-1].ready_at - self._first.started)
        outcome = Outcome.ok(
            [Spoken(data, audio.duration_s)], Timing(queue_ms=self.queue_ms, model_ms=model_ms)
        )
        # Shielded: once charged, a disconnect arriving now must not also mark it cancelled.
        with anyio.CancelScope(shield=True):
            await in_thread(
                self._ledger.settle, self._order, outcome, self._hold, self.generation_id
            )
            self._status = GenerationStatus.OK
        self.charge = (self.tokens_used, audio.duration_s)


async def _abandon(
    ledger: GenerationLedger,
    order: Order,
    hold: Hold,
    generation_id: int,
    pending: Sequence[asyncio.Task[Synthesized]],
    outcome: Outcome,
) -> None:
    """A stream ended before its end: withdraw its jobs and record it with what it was sent.

    Cancelled jobs that wait leave the queue unrun; a running one's result is dropped. Shielded,
    because this runs while the request itself is being cancelled and must still be recorded.
    """
    for task in pending:
        task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.gather(*pending, return_exceptions=True)
        await in_thread(ledger.settle, order, outcome, hold, generation_id)


class StreamingService:
    """Opens streamed /tts calls with /tts's checks, `prepare` and ledger."""

    def __init__(
        self,
        runtime: ModelRuntime,
        synthesis: SynthesisService,
        ledger: GenerationLedger,
        max_job_items: int,
    ) -> None:
        self._runtime = runtime
        self._synthesis = synthesis
        self._ledger = ledger
        self._max_job_items = max_job_items

    async def open(self, user_id: int, text: str, request: SpeechRequest) -> SpeechStream:
        """Validate, then synthesise the first chunk and queue the rest; nothing sent yet.

        Raises what /tts raises, before any audio exists; a failure after the row was made
        is recorded on it.
        """
        synthesis = self._synthesis
        order, sampling = synthesis.checks.single(user_id, text, request)
        if order.format not in STREAMABLE_FORMATS:
            raise BadRequest(
                f"Format {order.format!r} cannot be streamed; streaming supports "
                f"{', '.join(STREAMABLE_FORMATS)} (or send stream: false)"
            )
        [text] = order.texts
        hold, voicing = await in_thread(synthesis.prepare, order, "stream", len(text))
        try:
            model = self._runtime.loaded()
            chunks = synthesis.sentences(text)
            meter = DeliveryMeter(text, chunks)
            items = [voicing.item(chunk, order.language) for chunk in chunks]
            generation_id = await in_thread(self._ledger.open, order)
        except BaseException as error:
            await self._ledger.settle_failure(order, hold, error)
            raise
        submitted = time.perf_counter()
        try:
            first = await _piece(model, items[:1], sampling, continues=False, speed=order.speed)
        except BaseException as error:  # the model, or a cancellation (e.g. shutdown)
            await self._ledger.settle_failure(order, hold, error, generation_id=generation_id)
            raise
        step = self._max_job_items
        pending = [
            (
                min(start + step, len(items)) - 1,  # the piece's last chunk, for the meter
                asyncio.create_task(
                    _piece(
                        model,
                        items[start : start + step],
                        sampling,
                        continues=True,
                        speed=order.speed,
                    )
                ),
            )
            for start in range(1, len(items), step)
        ]
        return SpeechStream(
            self._ledger, order, hold, meter, generation_id, submitted, first, pending
        )
