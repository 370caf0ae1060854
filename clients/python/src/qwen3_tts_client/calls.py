"""Each endpoint once: how to ask (method, path, body) and how to read the answer.

`Client` and `AsyncClient` only send these `Call`s, each with its own I/O, so the wire contract
lives here alone and the two clients cannot drift apart.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, Any, Generic, TypedDict, TypeVar
from urllib.parse import unquote

import httpx

from qwen3_tts_client.errors import UnexpectedResponse
from qwen3_tts_client.models import (
    Batch,
    BatchItem,
    Speaker,
    Speech,
    StoredAudio,
    StreamInfo,
    Usage,
    Voice,
    VoiceCreated,
    VoiceDetail,
    VoiceSample,
)

T = TypeVar("T")

#: What `clone_voice` takes as audio: the bytes, a path, or an open binary file.
AudioSource = bytes | str | PathLike[str] | IO[bytes]
#: What `voice=` takes: a voice id, or anything with a `voice_id` (Voice, VoiceCreated, ...).
VoiceRef = Any


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to send and the function that reads its (successful) response."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes]] | None = None

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """A fresh request each time: a retry resends the same body."""
        return http.build_request(
            self.method, self.path, json=self.json, data=self.data, files=self.files
        )


# -- reading answers ------------------------------------------------------------------------------
def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON"
        ) from error


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _required_int_header(response: httpx.Response, name: str) -> int:
    value = _int_header(response, name)
    if value is None:
        raise UnexpectedResponse(f"{response.request.url.path} answered without {name}")
    return value


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "application/octet-stream").split(";")[0]


def read_speech(response: httpx.Response) -> Speech:
    return Speech(
        audio=response.content,
        media_type=_media_type(response),
        generation_id=_required_int_header(response, "x-generation-id"),
        tokens_used=_required_int_header(response, "x-tokens-used"),
        sample_rate=_int_header(response, "x-sample-rate"),
        latency_ms=_int_header(response, "x-latency-ms"),
        queue_ms=_int_header(response, "x-queue-ms"),
        finish_reason=response.headers.get("x-finish-reason"),
    )


def read_stream_info(response: httpx.Response) -> StreamInfo:
    return StreamInfo(
        media_type=_media_type(response),
        generation_id=_required_int_header(response, "x-generation-id"),
        tokens_used=_required_int_header(response, "x-tokens-used"),
        sample_rate=_int_header(response, "x-sample-rate"),
        first_audio_ms=_int_header(response, "x-first-audio-ms"),
        queue_ms=_int_header(response, "x-queue-ms"),
    )


def read_batch(response: httpx.Response) -> Batch:
    try:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            items = [
                BatchItem(
                    index=int(item["index"]),
                    filename=str(item["filename"]),
                    audio=archive.read(item["filename"]),
                    generation_id=int(item["generation_id"]),
                    chars=int(item["chars"]),
                    tokens=int(item["tokens"]),
                    duration_s=float(item["duration_s"]),
                    finish_reason=str(item["finish_reason"]),
                )
                for item in manifest["items"]
            ]
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as error:
        raise UnexpectedResponse(f"/batchtts answered an unreadable archive: {error}") from error
    return Batch(
        batch_id=int(manifest["batch_id"]),
        tokens_used=int(manifest["tokens_used"]),
        discount_used=float(manifest["batch_discount_used"]),
        latency_ms_total=_int_header(response, "x-latency-ms-total"),
        queue_ms=_int_header(response, "x-queue-ms"),
        sample_rate=int(manifest["sample_rate"]),
        format=str(manifest["format"]),
        items=items,
        manifest=manifest,
        archive=response.content,
    )


def _read_sample(response: httpx.Response) -> VoiceSample:
    transcript = response.headers.get("x-transcript")
    return VoiceSample(
        audio=response.content,
        media_type=_media_type(response),
        transcript=unquote(transcript) if transcript is not None else None,
    )


def _read_stored(response: httpx.Response) -> StoredAudio:
    return StoredAudio(
        audio=response.content,
        media_type=_media_type(response),
        generation_id=_required_int_header(response, "x-generation-id"),
    )


# -- building requests ----------------------------------------------------------------------------
def _audio_bytes(audio: AudioSource) -> tuple[str, bytes]:
    """(file name, content): the server reads the format from the content, not the name."""
    if isinstance(audio, bytes):
        return "reference", audio
    if isinstance(audio, str | PathLike):
        path = Path(audio)
        return path.name, path.read_bytes()
    return Path(str(getattr(audio, "name", "reference"))).name, audio.read()


def _voice_id(voice: VoiceRef) -> int:
    if isinstance(voice, bool):
        raise TypeError("voice must be a voice id or a voice, not a bool")
    if isinstance(voice, int):
        return voice
    voice_id = getattr(voice, "voice_id", None)
    if not isinstance(voice_id, int):
        raise TypeError(f"voice must be a voice id or an object with voice_id, not {voice!r}")
    return voice_id


class SpeechOptions(TypedDict, total=False):
    """The keyword arguments of `tts`, `stream` and `batch` (all optional).

    `speaker`: a preset speaker (see `speakers()`) instead of `voice`; exactly one of the two.
    `instruct`: how to speak (preset speakers of the 1.7B model, and designed voices).
    `language`: `auto` (default) or one of the ten languages, any case.
    `format`: `wav` (default; `pcm` for `stream`), `mp3`, `ogg`, `flac`, `opus`, `aac`, `pcm`.
    `seed`: the same seed gives the same audio. `temperature`: 0.01 to 2 (server default 1.0).
    `store`: keep the audio for `stored()` (default False: nothing but the usage row is kept).
    """

    speaker: str | None
    instruct: str | None
    language: str
    format: str
    seed: int | None
    temperature: float | None
    store: bool


_OPTION_NAMES = frozenset(SpeechOptions.__annotations__)
_OPTIONAL = ("speaker", "instruct", "seed", "temperature")


def speech_body(
    text: str | Sequence[str],
    voice: VoiceRef | None,
    options: SpeechOptions,
    *,
    default_format: str = "wav",
) -> dict[str, Any]:
    """The JSON of /tts and /batchtts; options left out (or None) take the server's defaults."""
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(_OPTION_NAMES)}")
    body: dict[str, Any] = {
        "text": text if isinstance(text, str) else list(text),
        "language": options.get("language", "auto"),
        "format": options.get("format", default_format),
        "store": bool(options.get("store", False)),
    }
    if voice is not None:
        body["voice_id"] = _voice_id(voice)
    for name in _OPTIONAL:
        value = options.get(name)
        if value is not None:
            body[name] = value
    return body


def clone_voice(
    name: str, audio: AudioSource, transcript: str | None, language: str | None
) -> Call[VoiceCreated]:
    """`transcript` and `language` left as None are not sent: the server then answers what it
    needs (today it requires the transcript: a 422 naming the field)."""
    form = {"name": name}
    if transcript is not None:
        form["transcript"] = transcript
    if language is not None:
        form["language"] = language
    return Call(
        "POST",
        "/clonevoice",
        lambda response: VoiceCreated.from_json(_json(response)),
        data=form,
        files={"file": _audio_bytes(audio)},
    )


def design_voice(name: str, description: str, language: str | None) -> Call[VoiceCreated]:
    body = {"name": name, "description": description, "language": language or "auto"}
    return Call(
        "POST", "/designvoice", lambda response: VoiceCreated.from_json(_json(response)), json=body
    )


def voices() -> Call[list[Voice]]:
    return Call("GET", "/voices", lambda response: [Voice.from_json(v) for v in _json(response)])


def voice(voice: VoiceRef) -> Call[VoiceDetail]:
    return Call(
        "GET",
        f"/voices/{_voice_id(voice)}",
        lambda response: VoiceDetail.from_json(_json(response)),
    )


def voice_sample(voice: VoiceRef) -> Call[VoiceSample]:
    return Call("GET", f"/voices/{_voice_id(voice)}/sample", _read_sample)


def delete_voice(voice: VoiceRef) -> Call[None]:
    return Call("DELETE", f"/voices/{_voice_id(voice)}", lambda response: None)


def speakers() -> Call[list[Speaker]]:
    return Call(
        "GET",
        "/speakers",
        lambda response: [Speaker.from_json(s) for s in _json(response)["speakers"]],
    )


def tts(body: dict[str, Any]) -> Call[Speech]:
    return Call("POST", "/tts", read_speech, json=body)


def stream(body: dict[str, Any]) -> Call[StreamInfo]:
    return Call("POST", "/tts", read_stream_info, json={**body, "stream": True})


def batch(body: dict[str, Any]) -> Call[Batch]:
    return Call("POST", "/batchtts", read_batch, json=body)


def stored(generation_id: int) -> Call[StoredAudio]:
    return Call("GET", f"/getstored/{int(generation_id)}", _read_stored)


def usage() -> Call[Usage]:
    return Call("GET", "/usage", lambda response: Usage.from_json(_json(response)))
