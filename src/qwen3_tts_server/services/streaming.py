"""Streamed /tts: audio leaves a few frames after the model starts, not after a sentence.

The text is split exactly as /tts splits it (`split_text`, CHUNK_MAX_CHARS) and queued as one
streamed job: its chunks run in the scheduler's slots like any other work, and the decoded
audio of each new frame group is handed over as it exists (engine/serving/codec.py: a small first
piece, then larger ones), strictly in text order. The first piece is awaited *before* the
response starts, so everything a client can cause (text, format, language, voice, quota, a
prompt the model refuses, a full queue, no model) still answers as a JSON error.

Chunks are joined with /tts's rule (`join_sentences`: a short pause between two chunks), so
the streamed samples, joined, are the stored audio of the stream, sample for sample.

Bookkeeping, all through the generation ledger and all in `SpeechStream`: the whole text is
reserved before any work (services/quota.py), and the row is opened before the response (its
id is a header) with status STREAMING, not counted or charged yet. It is settled OK, charged
once like /tts, with its finish reason, when the last audio has been handed to the connection;
ERROR, free, when the model fails mid-stream (a runaway chunk included: streamed chunks are not
retried, their audio is already out); CANCELLED when the stream is closed before its end (the
client went away), charged for what it was sent (services/metering.py: the text up to the end
of the last chunk whose audio went out), and the job is then withdrawn from the loop between
two steps; what was reserved but not charged is released. A process that dies mid-stream
leaves STREAMING behind, which a live process settles as INTERRUPTED (free) once the dead
one's lease lapses, releasing its reservation (services/leases.py).

Times: X-Queue-Ms is the wait for the first slot, X-First-Audio-Ms submission to first audio;
the row's latency is model time, from the first slot to the last audio. How the stream plays
(first audio sent, largest underrun, safe play start: services/playback.py) is kept on the row
however the stream ends, and observed in /metrics by the route.

Only formats written sample by sample can stream: `pcm` (raw s16le) and `wav`, whose header
says "size unknown" (0xFFFFFFFF), which players and libsndfile read to the end of the stream.
The others are whole files that libsndfile finishes only once all the audio is known.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import anyio
import numpy as np

from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.audio.ffmpeg import change_speed
from qwen3_tts_server.engine.serving.jobs import AudioPiece
from qwen3_tts_server.engine.serving.scheduler import AudioStream
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.services.generations import GenerationLedger, Order, Outcome, Spoken
from qwen3_tts_server.services.metering import DeliveryMeter
from qwen3_tts_server.services.playback import PlaybackClock
from qwen3_tts_server.services.quota import Hold
from qwen3_tts_server.services.runtime import ModelRuntime, Timing, worst_reason
from qwen3_tts_server.services.speech import SpeechRequest, sentence_pause
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.threads import in_thread
from qwen3_tts_server.services.timestamps import ChunkTimer
from qwen3_tts_server.values import Audio, FinishReason, GenerationStatus, Word

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
        audio: AudioStream,
        first: AudioPiece,
        submitted: float,
        first_audio_s: float,
        sample_rate: int,
        timer: ChunkTimer | None = None,
    ) -> None:
        self.generation_id = generation_id
        self.tokens_used = len(order.texts[0])
        self.sample_rate = sample_rate
        #: From submitting the job to its first audio: the server's time to first audio.
        self.first_audio_ms = _ms(first_audio_s)
        self.queue_ms = _ms(audio.queued_s)
        self.media_type = order.media_type
        self.extension = FORMATS[order.format].extension
        #: (tokens, seconds of audio) once the stream was settled with a charge: complete, or
        #: left by the client after some audio; None while open, or if it cost nothing.
        self.charge: tuple[int, float] | None = None
        self._ledger = ledger
        self._order = order
        self._hold = hold
        self._meter = meter
        self._audio = audio
        self._first = first
        self._timer = timer
        self._status = GenerationStatus.STREAMING
        #: When each piece reached the connection: first audio, underruns, safe play start.
        self.playback = PlaybackClock(submitted)
        #: With timestamps: the aligner's time so far (all of it once the stream ended).
        self.align_ms = 0
        self._words: list[Word] = []  # handed out so far (stored with the audio)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The audio file in pieces: (a WAV header, then) s16le samples as they are decoded.

        Each piece's chunks are metered as sent before the piece is handed over (the billing
        rule). A failure is recorded (ERROR, no charge) and re-raised: the response must end
        abruptly, so the client can tell the audio is incomplete.
        """
        async for data, _ in self.timed_chunks():
            yield data

    async def timed_chunks(self) -> AsyncIterator[tuple[bytes, list[Word]]]:
        """`chunks()`, each with the words aligned since the one before (with timestamps;
        always empty without). The last item has no audio: the words still being aligned
        when the audio ended, awaited before the stream is settled, so an alignment that
        fails fails the stream (uncharged) like the model failing."""
        try:
            if self._order.format == "wav":
                yield wav_stream_header(self.sample_rate), []
            sent: list[np.ndarray] = []
            chunk = 0
            pause = sentence_pause(self.sample_rate)
            pieces = _chain(self._first, self._audio)
            async for piece in pieces:
                if self._timer is not None:
                    self._timer.add(piece.index, piece.samples)
                    if piece.last:
                        self._timer.chunk_ended(piece.index, self.sample_rate)
                if piece.samples.size == 0:
                    continue
                samples = piece.samples
                if piece.index != chunk:  # a new sentence chunk: the pause /tts puts between
                    chunk = piece.index
                    samples = np.concatenate([pause, samples])
                if self._order.speed != 1.0:  # each piece at the asked tempo, as it is sent
                    stretched = await in_thread(
                        change_speed, Audio(samples, self.sample_rate), self._order.speed
                    )
                    samples = stretched.samples
                sent.append(samples)
                data = await in_thread(encode, Audio(samples, self.sample_rate), "pcm")
                seconds = samples.size / self.sample_rate
                self._meter.sent(piece.index, seconds)
                self.playback.arrived(seconds)
                yield data, self._words_ready()
            if self._timer is not None:
                last_words = await self._timer.rest()
                self.align_ms = round(self._timer.seconds * 1000)
                self._words += last_words
                yield b"", last_words
            await self._complete(sent)
        except Exception as error:  # the model, the queue, a bug: the stream cannot go on
            await self._end_early(Outcome.failed(error))
            raise

    def _words_ready(self) -> list[Word]:
        if self._timer is None:
            return []
        words = self._timer.ready()
        self.align_ms = round(self._timer.seconds * 1000)
        self._words += words
        return words

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
        outcome = replace(outcome, playback=self.playback.quality())
        if self._timer is not None:
            self._timer.cancel()
        await _abandon(
            self._ledger, self._order, self._hold, self.generation_id, self._audio, outcome
        )
        return True

    async def _complete(self, sent: Sequence[np.ndarray]) -> None:
        result = self._audio.result
        assert result is not None
        audio = Audio(np.concatenate(sent), self.sample_rate)
        data = await in_thread(encode, audio, self._order.format)
        reason = worst_reason([FinishReason(chunk.finish_reason) for chunk in result.chunks])
        timing = Timing(queue_ms=self.queue_ms, model_ms=_ms(result.model_s))
        words = None if self._timer is None else tuple(self._words)
        outcome = Outcome.ok([Spoken(data, audio.duration_s, reason, words)], timing)
        outcome = replace(outcome, playback=self.playback.quality())
        # Shielded: once charged, a disconnect arriving now must not also mark it cancelled.
        with anyio.CancelScope(shield=True):
            await in_thread(
                self._ledger.settle, self._order, outcome, self._hold, self.generation_id
            )
            self._status = GenerationStatus.OK
        self.charge = (self.tokens_used, audio.duration_s)


async def _chain(first: AudioPiece, rest: AudioStream) -> AsyncIterator[AudioPiece]:
    yield first
    async for piece in rest:
        yield piece


async def _abandon(
    ledger: GenerationLedger,
    order: Order,
    hold: Hold,
    generation_id: int,
    audio: AudioStream,
    outcome: Outcome,
) -> None:
    """A stream ended before its end: withdraw its job and record it with what it was sent.

    Its waiting chunks never run; running ones leave their slots at the next step. Shielded,
    because this runs while the request itself is being cancelled and must still be recorded.
    """
    with anyio.CancelScope(shield=True):
        await audio.close()
        await in_thread(ledger.settle, order, outcome, hold, generation_id)


class StreamingService:
    """Opens streamed /tts calls with /tts's checks, `prepare` and ledger."""

    def __init__(
        self, runtime: ModelRuntime, synthesis: SynthesisService, ledger: GenerationLedger
    ) -> None:
        self._runtime = runtime
        self._synthesis = synthesis
        self._ledger = ledger

    async def open(
        self, user_id: int, text: str, request: SpeechRequest, timestamps: bool = False
    ) -> SpeechStream:
        """Validate, queue the text and wait for its first audio; nothing sent yet. With
        `timestamps`, the stream also aligns each chunk as it ends (`timed_chunks`).

        Raises what /tts raises, before any audio exists (503 without an aligner when
        timestamps are asked); a failure after the row was made is recorded on it.
        """
        synthesis = self._synthesis
        order, sampling = synthesis.checks.single(user_id, text, request)
        if order.format not in STREAMABLE_FORMATS:
            raise BadRequest(
                f"Format {order.format!r} cannot be streamed; streaming supports "
                f"{', '.join(STREAMABLE_FORMATS)} (or send stream: false)"
            )
        worker = synthesis.aligner.worker() if timestamps else None
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
            audio = model.stream(items, sampling, user_id)
        except Exception as error:  # a full queue, shutdown: nothing was queued
            await self._ledger.settle_failure(order, hold, error, generation_id=generation_id)
            raise
        try:
            first = await anext(audio)
        except StopAsyncIteration:  # pragma: no cover - every chunk makes at least one frame
            raise RuntimeError("the stream ended before any audio") from None
        except Exception as error:
            await _abandon(self._ledger, order, hold, generation_id, audio, Outcome.failed(error))
            raise
        except asyncio.CancelledError:  # e.g. shutdown: the row must not stay STREAMING
            cancelled = Outcome.cancelled("cancelled before any audio")
            await _abandon(self._ledger, order, hold, generation_id, audio, cancelled)
            raise
        first_audio_s = time.perf_counter() - submitted
        sample_rate = model.info.sample_rate
        timer = None if worker is None else ChunkTimer(worker, chunks, order.language, order.speed)
        return SpeechStream(
            self._ledger,
            order,
            hold,
            meter,
            generation_id,
            audio,
            first,
            submitted,
            first_audio_s,
            sample_rate,
            timer,
        )
