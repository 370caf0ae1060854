"""Realtime speech from text that arrives in pieces (WS /v1/audio/speech/stream).

A voice agent feeds text as its language model writes it and needs audio back at once. The
session keeps the text that has not made a whole sentence yet (`Segmenter`), and each time a
sentence is surely complete it becomes a *segment*: a /tts call of its own, submitted to the
model at once (so segments that complete together are batched by the scheduler), spoken in
order, each with its own generation row and charge. A client can flush the rest (`flush`), end
the session (`finish`), or barge in (`cancel`): queued segments leave the model's queue, the one
being sent stops between two frames, and the text not yet spoken is dropped.

Rules are /tts's: the same checks (`SpeechChecks.single`), voice and reservation (`prepare`,
before each segment's model call), ledger and charge (when a segment's last frame has been
handed to the connection). A segment whose model call failed, or that was cancelled before any
of it was sent, costs nothing and is recorded as failed or cancelled; one cancelled while being
sent pays for the share that was sent, as a stream left early does; one refused before the
model (402, say) leaves no row, exactly as a refused /tts call. The transport is not known
here: events and audio go to a `Sink`, and what goes wrong is reported through it with /tts's
status codes (`failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from qwen3_tts_server.audio.encode import encode
from qwen3_tts_server.audio.ffmpeg import change_speed
from qwen3_tts_server.audio.resample import resample
from qwen3_tts_server.engine.text.textsplit import complete_end, split_text
from qwen3_tts_server.errors import BadRequest
from qwen3_tts_server.services.failures import describe
from qwen3_tts_server.services.generations import GenerationLedger, Order, Outcome, Spoken
from qwen3_tts_server.services.quota import Hold
from qwen3_tts_server.services.runtime import ModelRuntime, Timing
from qwen3_tts_server.services.speakers import SpeakerService, VoiceChoice
from qwen3_tts_server.services.speech import SENTENCE_PAUSE_S, SpeechRequest, join_sentences
from qwen3_tts_server.services.synthesis import SynthesisService
from qwen3_tts_server.services.threads import in_thread
from qwen3_tts_server.services.timestamps import align_text
from qwen3_tts_server.services.voicing import Voicing
from qwen3_tts_server.values import Audio, Sampling, Word

#: What a session can send: raw s16le samples, or one complete WAV file per segment.
REALTIME_FORMATS = ("pcm", "wav")
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
#: Audio is sent in frames this long, so a cancel stops it within one frame.
FRAME_SECONDS = 0.2


@dataclass(frozen=True)
class SessionConfig:
    """What `session.config` chose: a voice as /v1 names one, or a preset speaker."""

    voice: str | None = None
    speaker: str | None = None
    instructions: str = ""
    language: str | None = "auto"
    format: str = "pcm"
    sample_rate: int | None = None
    speed: float = 1.0
    temperature: float | None = None
    seed: int | None = None
    #: Each segment's words in its `audio.start` event (503 at config without an aligner).
    timestamps: bool = False


class Sink(Protocol):
    """Where a session's output goes (the socket, in the API layer)."""

    async def event(self, payload: dict[str, Any]) -> None: ...

    async def audio(self, data: bytes) -> None: ...


def usage(tokens: int) -> dict[str, int]:
    """OpenAI's usage object for `tokens` charged (characters; no audio tokens are billed)."""
    return {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}


def error_event(error: BaseException, segment: int | None = None) -> dict[str, Any]:
    """An `error` event with the status code and message /tts would answer."""
    failure = describe(error)
    status, message = (failure.status, failure.detail) if failure else (500, "internal error")
    event: dict[str, Any] = {"type": "error", "error": {"status": status, "message": message}}
    if segment is not None:
        event["segment"] = segment
    return event


class Segmenter:
    """Text in as it arrives, whole segments out: sentences once surely complete
    (`complete_end`), packed to at most `max_chars`; a run-on longer than that is cut at a
    clause or a space, as `split_text` cuts long sentences."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._buffer = ""

    def add(self, text: str) -> list[str]:
        self._buffer += text
        end = complete_end(self._buffer)
        segments = split_text(self._buffer[:end], self._max_chars) if end else []
        self._buffer = self._buffer[end:]
        if len(self._buffer.strip()) > self._max_chars:
            *whole, rest = split_text(self._buffer, self._max_chars)
            segments += whole
            self._buffer = self._buffer[self._buffer.rfind(rest) :]
        return segments

    def flush(self) -> list[str]:
        segments = split_text(self._buffer, self._max_chars)
        self._buffer = ""
        return segments


@dataclass(frozen=True)
class _Spoken:
    """A segment's audio, ready to send, and the reservation its charge settles."""

    audio: Audio
    data: bytes
    timing: Timing
    hold: Hold
    words: list[Word] | None = None  # with timestamps: times from the start of `audio`


@dataclass(eq=False)
class _Segment:
    index: int
    text: str
    order: Order
    task: asyncio.Task[_Spoken]
    sent: int = 0  # bytes handed to the connection
    delivered: bool = False  # every frame handed over: charged in full, never cancelled


class RealtimeSession:
    """One socket's session. Not thread-safe: call it from the event loop only."""

    def __init__(
        self,
        service: RealtimeService,
        user_id: int,
        request: SpeechRequest,
        sample_rate: int,
        sink: Sink,
        timestamps: bool = False,
    ) -> None:
        self._service = service
        self._timestamps = timestamps
        self._user_id = user_id
        self._request = request
        self.sample_rate = sample_rate
        self._sink = sink
        self._segmenter = Segmenter(service.chunk_max_chars)
        self._pending: deque[_Segment] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender = asyncio.create_task(self._send_all())
        self._settling: asyncio.Future[None] | None = None
        self._next_index = 0
        self._since_cancel = 0
        self.segments_done = 0
        self.tokens_used = 0

    @property
    def busy(self) -> bool:
        """Audio is being made or sent."""
        return bool(self._pending)

    def append(self, text: str) -> None:
        """More text; every segment it completes is submitted to the model now."""
        for segment in self._segmenter.add(text):
            self._submit(segment)

    def flush(self) -> None:
        """Speak the text kept so far even though its sentence has not ended."""
        for segment in self._segmenter.flush():
            self._submit(segment)

    def _submit(self, text: str) -> None:
        order, sampling = self._service.synthesis.checks.single(self._user_id, text, self._request)
        continues = self._since_cancel > 0
        task = asyncio.create_task(
            self._service.speak(order, sampling, continues, self.sample_rate, self._timestamps)
        )
        self._pending.append(_Segment(self._next_index, text, order, task))
        self._next_index += 1
        self._since_cancel += 1
        self._idle.clear()
        self._wake.set()

    async def _send_all(self) -> None:
        """Deliver segments in order, each once its audio exists."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._deliver(self._pending[0])
                self._pending.popleft()
            self._idle.set()

    async def _deliver(self, segment: _Segment) -> None:
        try:
            spoken = await segment.task
        except Exception as error:  # refused (no row), or failed (recorded by `speak`)
            await self._sink.event(error_event(error, segment.index))
            return
        await self._sink.event(
            {
                "type": "audio.start",
                "segment": segment.index,
                "text": segment.text,
                "format": segment.order.format,
                "sample_rate": spoken.audio.sample_rate,
            }
            | ({} if spoken.words is None else {"words": [w.as_dict() for w in spoken.words]})
        )
        step = 2 * max(1, int(spoken.audio.sample_rate * FRAME_SECONDS))
        for start in range(0, len(spoken.data), step):
            frame = spoken.data[start : start + step]
            await self._sink.audio(frame)
            segment.sent += len(frame)
        segment.delivered = True
        # All audio is out: charge it and say so even if a cancel arrives meanwhile.
        self._settling = asyncio.ensure_future(self._charge(segment, spoken))
        await asyncio.shield(self._settling)

    async def _charge(self, segment: _Segment, spoken: _Spoken) -> None:
        seconds = spoken.audio.duration_s
        outcome = Outcome.ok([Spoken(spoken.data, seconds)], spoken.timing)
        ledger = self._service.ledger
        receipt = await in_thread(ledger.settle, segment.order, outcome, spoken.hold)
        self.segments_done += 1
        self.tokens_used += receipt.tokens_used
        await self._sink.event(
            {
                "type": "audio.done",
                "segment": segment.index,
                "generation_id": receipt.generation_ids[0],
                "audio_seconds": round(seconds, 3),
                "usage": usage(receipt.tokens_used),
            }
        )

    async def cancel(self) -> list[int]:
        """Barge-in: drop the text not spoken yet, withdraw queued segments from the model,
        stop the one being sent between two frames; each is recorded as cancelled (free, but
        for what was sent of it). Returns the indices of the segments dropped."""
        dropped = await self._stop()
        self._since_cancel = 0
        self._sender = asyncio.create_task(self._send_all())
        return dropped

    async def close(self) -> None:
        """The connection is gone or the session ended: nothing more is sent, and whatever
        was not delivered is cancelled."""
        await self._stop()

    async def _stop(self) -> list[int]:
        self._segmenter.flush()
        dropped = [segment for segment in self._pending if not segment.delivered]
        self._pending.clear()
        self._idle.set()
        self._sender.cancel()
        for segment in dropped:
            segment.task.cancel()
        waits: list[asyncio.Future[Any]] = [self._sender, *(segment.task for segment in dropped)]
        if self._settling is not None:
            waits.append(self._settling)
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*waits, return_exceptions=True)
            for segment in dropped:  # those still in the model recorded themselves (`speak`)
                if not segment.task.cancelled() and segment.task.exception() is None:
                    await self._cancel_spoken(segment, segment.task.result())
        return [segment.index for segment in dropped]

    async def _cancel_spoken(self, segment: _Segment, spoken: _Spoken) -> None:
        """A segment whose audio existed but was not all sent: charged for the share of it
        that was, like a stream left early."""
        share = segment.sent / len(spoken.data) if spoken.data else 0.0
        [text] = segment.order.texts
        outcome = Outcome.cancelled(
            "cancelled by the client before all of it was sent",
            tokens=int(len(text) * share),
            audio_seconds=spoken.audio.duration_s * share,
        )
        await in_thread(self._service.ledger.settle, segment.order, outcome, spoken.hold)

    async def finish(self) -> None:
        """Speak what is left and wait until every segment has been delivered (re-raises
        what stopped the delivery, e.g. a closed connection)."""
        self.flush()
        idle = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({idle, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
        if self._sender.done():
            self._sender.result()


class RealtimeService:
    """Opens realtime sessions with /tts's checks, voices, model and ledger."""

    def __init__(
        self,
        synthesis: SynthesisService,
        runtime: ModelRuntime,
        ledger: GenerationLedger,
        speakers: SpeakerService,
        chunk_max_chars: int,
    ) -> None:
        self.synthesis = synthesis
        self.ledger = ledger
        self.chunk_max_chars = chunk_max_chars
        self._runtime = runtime
        self._speakers = speakers

    async def open(self, user_id: int, config: SessionConfig, sink: Sink) -> RealtimeSession:
        """Check the configuration as every segment will be checked (voice, speaker,
        instructions, language, format, quota), so a mistake is reported at once."""
        if (config.voice is None) == (config.speaker is None):
            raise BadRequest("Send exactly one of voice (yours, or an OpenAI name) or speaker")
        fmt = config.format.strip().lower()
        if fmt not in REALTIME_FORMATS:
            raise BadRequest(f"format must be one of: {', '.join(REALTIME_FORMATS)}")
        rate = config.sample_rate
        if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise BadRequest(f"sample_rate must be {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")
        choice = VoiceChoice(speaker=config.speaker)
        if config.voice is not None:
            choice = await in_thread(self._speakers.choose, user_id, config.voice)
        request = SpeechRequest(
            voice_id=choice.voice_id,
            speaker=choice.speaker,
            instruct=config.instructions,
            language=config.language,
            format=fmt,
            store=False,
            temperature=config.temperature,
            seed=config.seed,
            speed=config.speed,
        )
        order, _ = self.synthesis.checks.single(user_id, "check", request)
        await in_thread(self.synthesis.voicing, order)
        if config.timestamps:
            self.synthesis.aligner.worker()  # 503 now, not at every segment
        model_rate = self._runtime.loaded().info.sample_rate
        session_rate = rate or model_rate
        return RealtimeSession(self, user_id, request, session_rate, sink, config.timestamps)

    async def speak(
        self,
        order: Order,
        sampling: Sampling,
        continues: bool,
        sample_rate: int,
        timestamps: bool = False,
    ) -> _Spoken:
        """One segment: voice and reservation, the model, the session's tempo, rate and
        format (and its words). Whatever stops it after the reservation (the model, the
        aligner, a cancel) is recorded and the reservation released here; a refusal before
        it (402, say) leaves no row."""
        hold, voicing = await self._reserve(order)
        try:
            model = self._runtime.loaded()
            [text] = order.texts
            chunks = self.synthesis.sentences(text)
            items = [voicing.item(c, order.language) for c in chunks]
            result = await model.speak(items, sampling, order.user_id)
            joined = join_sentences(result.audio, continues=continues)
            audio = await in_thread(_finish_audio, joined, order.speed, sample_rate)
            data = await in_thread(encode, audio, order.format)
            words = None
            if timestamps:
                worker = self.synthesis.aligner.worker()
                lead = SENTENCE_PAUSE_S if continues else 0.0
                words, _ = await align_text(
                    worker, chunks, result.audio, order.language, order.speed,
                    audio.duration_s, lead,
                )  # fmt: skip
        except BaseException as error:
            await self.ledger.settle_failure(order, hold, error)
            raise
        return _Spoken(audio, data, result.timing, hold, words)

    async def _reserve(self, order: Order) -> tuple[Hold, Voicing]:
        """`prepare` on a worker thread. A cancel (barge-in) that arrives meanwhile cannot stop
        the thread: the reservation it still makes is recorded as cancelled and released at
        once, not left for crash recovery."""
        [text] = order.texts
        job = asyncio.ensure_future(in_thread(self.synthesis.prepare, order, "realtime", len(text)))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError as cancelled:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                hold, _ = await job
                await self.ledger.settle_failure(order, hold, cancelled)
            raise


def _finish_audio(audio: Audio, speed: float, rate: int) -> Audio:
    stretched = change_speed(audio, speed)
    return Audio(resample(stretched.samples, stretched.sample_rate, rate), rate)
