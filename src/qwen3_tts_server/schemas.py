"""Request and response bodies: the wire contract (field names match the original server)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    Strict,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

#: Database ids are signed 64-bit: a larger number can name no row, and SQLite would refuse it
#: with an overflow error instead of a clean "not found".
MAX_ID = 2**63 - 1


def _whole_number(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so the server does too (strict mode alone would
    refuse it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Numbers in JSON bodies are strict (`Strict()` on integers, `strict=True` on floats): `false`
#: is no 0 and `true` no 1, as lax pydantic would take them, and a string is no number; an
#: integer is still a float, and a whole float an integer (this, last in an integer's
#: `Annotated`, so that its bounds stay in its JSON Schema).
_WHOLE = BeforeValidator(_whole_number)
#: Booleans too: 0, 1 and "true" are no booleans.
Flag = Annotated[bool, Strict()]
RowId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID), _WHOLE]


#: Control characters but tab and newlines, as regex escapes that Python's and JSON Schema's
#: (ECMA's) regex dialects read alike.
_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
#: Those and unpaired UTF-16 surrogates: JSON can carry them, but no tokenizer or database
#: column can, so they are refused at the door.
_UNUSABLE = re.compile(f"[{_CONTROL}\ud800-\udfff]")


def _usable_text(value: str) -> str:
    bad = _UNUSABLE.search(value)
    if bad:
        raise ValueError(
            f"contains the unusable character U+{ord(bad.group()):04X} at position "
            f"{bad.start()}; send plain UTF-8 text without control characters"
        )
    return value


class _UsableTextSchema:
    """Documents `_usable_text` as a JSON Schema pattern (the same escapes in ECMA's regex
    dialect), so a client or a generator of test data knows such text is refused. Unpaired
    surrogates cannot be written in a pattern; no UTF-8 client can send them anyway."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = f"^[^{_CONTROL}]*$"
        return schema


#: Any text a client sends: validated like this everywhere (JSON bodies and form fields).
Text = Annotated[str, AfterValidator(_usable_text), _UsableTextSchema()]


class Detail(BaseModel):
    """Every error body: one sentence that says what to fix."""

    detail: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error body on /v1, as OpenAI's API answers (its SDKs read `error.message`)."""

    error: OpenAIErrorDetail


class Status(BaseModel):
    status: str


class ReadyStatus(BaseModel):
    status: str = Field(examples=["ready"])
    database: str = Field(examples=["ok"])
    model: str = Field(examples=["ready"], description="loading | ready | failed")
    error: str | None = None
    aligner: str = Field(
        "disabled",
        examples=["ready"],
        description="Word timestamps (MODEL_ALIGNER_REPO): disabled | loading | ready | failed",
    )
    aligner_error: str | None = None


# -- admin ---------------------------------------------------------------------------------------
class CreateUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, max_length=128, examples=["alice"])
    token_quota: Annotated[int, Strict(), Field(ge=0, le=MAX_ID), _WHOLE] | None = Field(
        None,
        description="Lifetime token allowance; null means unlimited.",
    )


class UserCreated(BaseModel):
    user_id: int


class UserInfo(BaseModel):
    user_id: int
    name: str | None
    is_active: bool
    token_quota: int | None
    created_at: datetime
    usage: dict[str, int | float]


class InviteCreated(BaseModel):
    invite_code: str
    expires_hours: int


class KeyInfoOut(BaseModel):
    key_id: int
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


# -- auth ----------------------------------------------------------------------------------------
class ExchangeInviteRequest(BaseModel):
    invite_code: str = Field(min_length=8, max_length=256)


class ExchangeInviteResponse(BaseModel):
    api_key: str = Field(description="Shown once; the server keeps only its HMAC.")
    key_prefix: str


# -- usage ---------------------------------------------------------------------------------------
class UsageOut(BaseModel):
    tokens_used_total: int
    tokens_used_tts: int
    tokens_used_batch: int
    tokens_used_voices: int
    voices_created: int
    tts_calls: int
    batch_calls: int
    audio_seconds_total: float


class GenerationOut(BaseModel):
    generation_id: int
    status: Literal["ok", "error", "cancelled", "streaming", "interrupted"]
    tokens_used: int
    audio_seconds: float
    finish_reason: str | None


# -- voices --------------------------------------------------------------------------------------
class DesignVoiceRequest(BaseModel):
    name: Text = Field(min_length=1, max_length=128, examples=["warm_narrator"])
    description: Text = Field(
        min_length=1, max_length=2000, examples=["Warm, calm narrator voice. Slightly husky."]
    )
    language: Text | None = Field("auto", examples=["English"])


class VoiceCreatedOut(BaseModel):
    voice_id: int
    tokens_used: int


class VoiceOut(BaseModel):
    voice_id: int
    name: str
    created_at: datetime
    use_count: int
    language: str


class VoiceDetailOut(VoiceOut):
    ref_text: str
    voice_description: str | None
    kind: str = Field(description="clone | design")


# -- synthesis -----------------------------------------------------------------------------------
MAX_SEED = 2**31 - 1
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED), _WHOLE]
#: OpenAI's limit on `instructions`, used for `instruct` too.
MAX_INSTRUCTIONS = 4096
#: Below this the sampler divides logits into infinities (1e-40 made torch fail); 0.01 is
#: already as good as greedy.
MIN_TEMPERATURE = 0.01


_SpeechText = Annotated[Text, Field(min_length=1)]
_SpeechTexts = Annotated[list[Text], Field(min_length=1)]


def _exactly_one(*names: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of these fields is there and not null"."""
    return {
        "oneOf": [
            {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names
        ]
    }


def _branch(field: dict[str, Any], kind: str) -> dict[str, Any]:
    """The `anyOf` alternative of type `kind` of a field's generated schema."""
    [branch] = [option for option in field["anyOf"] if option.get("type") == kind]
    return dict(branch)


def _single_text(schema: dict[str, Any]) -> None:
    """/tts and /tts/timestamps: `text` is one string, required; the batch-only fields
    (`texts`, `timestamps`) are not documented here (a list is answered 400 by the route)."""
    properties = schema["properties"]
    del properties["texts"], properties["timestamps"]
    text = properties["text"]
    properties["text"] = {**_branch(text, "string"), "examples": text["examples"]}
    schema["required"] = ["text"]
    schema["allOf"] = [_exactly_one("voice_id", "speaker")]


def _text_list(schema: dict[str, Any]) -> None:
    """/batchtts: a list as `text` or `texts`, exactly one; `stream` is /tts's."""
    properties = schema["properties"]
    del properties["stream"]
    text = properties["text"]
    text["anyOf"] = [_branch(text, "array"), {"type": "null"}]
    text["examples"] = [["First line.", "Second line."]]
    schema["allOf"] = [_exactly_one("text", "texts"), _exactly_one("voice_id", "speaker")]


class SpeechBody(BaseModel):
    """The body of /tts (one string) and /batchtts (a list, as `text` or the README's `texts`),
    validated alike, as the original server did: a string sent to /batchtts, or a list to
    /tts, is the route's 400. Each route documents its own shape (the subclasses below)."""

    text: _SpeechText | _SpeechTexts | None = Field(None, examples=["Hello from the TTS server."])
    texts: _SpeechTexts | None = Field(
        None, description="Alias of a list `text` (/batchtts, README form)."
    )
    voice_id: RowId | None = Field(None, description="One of your voices (or send `speaker`).")
    speaker: Text | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="A preset speaker of the CustomVoice model (GET /speakers), instead of "
        "`voice_id`.",
        examples=["Vivian"],
    )
    instruct: Text | None = Field(
        None,
        max_length=MAX_INSTRUCTIONS,
        description='How to say it ("cheerful, a little faster"): followed by preset '
        "speakers of the 1.7B CustomVoice model and by designed voices; a cloned voice "
        "answers 400.",
    )
    store: Flag = False
    language: Text = Field("auto", examples=["English"])
    temperature: float | None = Field(
        None,
        ge=MIN_TEMPERATURE,
        le=2.0,
        strict=True,
        description="Sampling temperature; left out, the server's SAMPLING_TEMPERATURE (1.0).",
    )
    format: Text = Field("wav", description="wav | mp3 | ogg | flac | opus | pcm | aac")
    seed: Seed | None = Field(None, description="Same seed → same audio.")
    stream: Flag = Field(
        False,
        description="/tts only: send the audio as it is made (chunked; `pcm` or `wav`). "
        "The response then has no X-Latency-Ms (X-First-Audio-Ms instead). On "
        "/tts/timestamps: NDJSON lines of audio and words as they are made.",
    )
    timestamps: Flag = Field(
        False,
        description="/batchtts only: add a WebVTT file per item (`0.vtt`, ...) and each item's "
        "`words` to the manifest (for one text, use POST /tts/timestamps).",
    )

    @model_validator(mode="after")
    def _one_text_field(self) -> SpeechBody:
        if self.text is None and self.texts is None:
            raise ValueError("send `text` (a string for /tts, a list for /batchtts)")
        if self.text is not None and self.texts is not None:
            raise ValueError("send either `text` or `texts`, not both")
        if (self.voice_id is None) == (self.speaker is None):
            raise ValueError(
                "send exactly one of `voice_id` (one of your voices) or `speaker` (a preset "
                "speaker, see GET /speakers)"
            )
        return self

    @property
    def payload(self) -> str | list[str]:
        value = self.text if self.text is not None else self.texts
        assert value is not None
        return value


class TTSRequest(SpeechBody):
    """/tts and /tts/timestamps: one text."""

    model_config = ConfigDict(json_schema_extra=_single_text)


class BatchTTSRequest(SpeechBody):
    """/batchtts: a list of texts."""

    model_config = ConfigDict(json_schema_extra=_text_list)


# -- word timestamps -----------------------------------------------------------------------------
class WordOut(BaseModel):
    text: str = Field(
        examples=["Hello,"],
        description="The word as written, punctuation attached (Chinese: one character; "
        "Japanese: one unit of the aligner's word splitter)",
    )
    start: float = Field(examples=[0.12], description="Seconds from the start of the audio")
    end: float = Field(examples=[0.48], description="Seconds from the start of the audio")


class TimedSpeechOut(BaseModel):
    audio_base64: str = Field(description="The audio file, base64")
    format: str = Field(examples=["wav"])
    sample_rate: int = Field(examples=[24000])
    duration_s: float = Field(examples=[1.84])
    words: list[WordOut] = Field(description="One entry per word of the text, in order")
    generation_id: int
    tokens_used: int


# -- preset speakers -----------------------------------------------------------------------------
class SpeakerOut(BaseModel):
    name: str = Field(examples=["Vivian"], description="What `speaker` takes (any case).")
    native_language: str = Field(examples=["chinese"], description="Where it sounds best.")
    languages: list[str] = Field(description="Every language it speaks.")
    description: str
    supports_instructions: bool = Field(
        description="Whether `instruct` is followed (the 1.7B CustomVoice model)."
    )
    openai_voices: list[str] = Field(
        description="OpenAI built-in voice names that /v1/audio/speech maps to this speaker."
    )


class SpeakersOut(BaseModel):
    speakers: list[SpeakerOut]


# -- OpenAI-compatible ---------------------------------------------------------------------------
class VoiceRef(BaseModel):
    """OpenAI's custom-voice object, `{"id": "..."}`."""

    id: Text = Field(min_length=1, max_length=256, examples=["12"])


class OpenAISpeechRequest(BaseModel):
    """The body of OpenAI's POST /v1/audio/speech, so its SDKs and tools work unchanged."""

    model: Text = Field("qwen3-tts", description="Accepted for compatibility; any value.")
    input: Text = Field(min_length=1, examples=["Hello from an OpenAI client."])
    voice: Annotated[Text, Field(min_length=1, max_length=256)] | VoiceRef = Field(
        description='Your voice\'s id (`12`, `voice:12`) or name, as a string or `{"id": ...}`; '
        "with the CustomVoice model also a preset speaker's name or an OpenAI voice name "
        "(`alloy`, ...), mapped to a preset speaker.",
        examples=["Geoff"],
    )
    response_format: Text = Field("mp3", description="mp3 | opus | aac | wav | flac | pcm | ogg")
    speed: float = Field(
        1.0,
        ge=0.25,
        le=4.0,
        strict=True,
        description="0.25-4.0: the audio is time-stretched, pitch kept.",
    )
    instructions: Text | None = Field(
        None,
        max_length=MAX_INSTRUCTIONS,
        description="How to say it: followed by preset speakers (1.7B CustomVoice) and "
        "designed voices; a cloned voice answers 400.",
    )
    language: Text = Field("auto", description="Extension: as in /tts.")
    seed: Seed | None = Field(
        None,
        description="Extension: as in /tts (same seed, same audio).",
    )
    stream_format: Literal["audio", "sse"] | None = Field(
        None,
        description="`audio`: the audio file, streamed as it is made for `pcm` and `wav`. "
        "`sse`: server-sent events `speech.audio.delta` (base64 audio) and "
        "`speech.audio.done` (with `usage`); `pcm` and `wav` arrive piece by piece, other "
        "formats as one delta.",
    )
    timestamps: Flag = Field(
        False,
        description="Extension, with `stream_format: sse` (an SDK's extra body field): each "
        "event also carries `words`, those aligned since the event before (times from the "
        "start of the audio); OpenAI's own fields are unchanged. 503 without an aligner.",
    )


# -- realtime (WS /v1/audio/speech/stream) -------------------------------------------------------
class RealtimeConfig(BaseModel):
    """`session.config`: the first message of a session. `voice` as /v1/audio/speech takes
    it, or a preset `speaker`; exactly one."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["session.config"]
    voice: Annotated[Text, Field(min_length=1, max_length=256)] | VoiceRef | None = None
    speaker: Text | None = Field(None, min_length=1, max_length=64)
    instructions: Text | None = Field(None, max_length=MAX_INSTRUCTIONS)
    language: Text = "auto"
    format: Literal["pcm", "wav"] = "pcm"
    sample_rate: Annotated[int, Strict(), Field(ge=8000, le=48000), _WHOLE] | None = None
    speed: float = Field(1.0, ge=0.25, le=4.0, strict=True)
    temperature: float | None = Field(None, gt=0.0, le=2.0, strict=True)
    seed: Seed | None = None
    timestamps: Flag = Field(
        False,
        description="Each segment's `audio.start` event also carries `words` (times from "
        "the start of that segment's audio); an error at config without an aligner",
    )


class RealtimeText(BaseModel):
    """`input.text`: more text, appended to what came before."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["input.text"]
    text: Text = Field(max_length=100_000)


class RealtimeSignal(BaseModel):
    """`input.done` (speak what is buffered), `cancel` (barge-in), `session.close`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["input.done", "cancel", "session.close"]


RealtimeMessage = Annotated[
    RealtimeConfig | RealtimeText | RealtimeSignal, Field(discriminator="type")
]
