"""Errors a client causes by sending audio the server cannot use.

Every class is a client error: the API turns it into a 4xx whose detail is `str(error)`, so each
message says what to send instead. Nothing here knows HTTP; the intended status is noted per
class so the mapping in `errors.py` stays obvious.
"""

from __future__ import annotations

from qwen3_tts_server.values import format_size

#: What the decoder accepts, worded for clients.
ACCEPTED_FORMATS = "WAV, MP3, OGG (Vorbis or Opus) or FLAC"


class AudioError(ValueError):
    """Base class: the audio sent or asked for cannot be used (API: 400 unless noted)."""


class EmptyAudio(AudioError):
    """The upload has no bytes at all."""

    def __init__(self) -> None:
        super().__init__(f"the uploaded file is empty; send a {ACCEPTED_FORMATS} recording")


class UploadTooLarge(AudioError):
    """The upload is over the byte limit; raised by whoever reads the upload (API: 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the upload is larger than {format_size(max_bytes)}; "
            "send a shorter clip or a compressed format (MP3, OGG)"
        )
        self.max_bytes = max_bytes


class UndecodableAudio(AudioError):
    """The bytes are not audio in an accepted format, or are corrupt."""

    def __init__(self, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"could not decode the upload as audio{detail}; send {ACCEPTED_FORMATS}")


class AudioTooShort(AudioError):
    """Too little audio to learn a voice from."""

    def __init__(self, duration_s: float, min_seconds: float) -> None:
        super().__init__(
            f"the audio is {duration_s:.2f} s long; send at least {min_seconds:g} s of speech"
        )


class AudioTooLong(AudioError):
    """More audio than the limit; decoding stops at the limit, so the true length is unknown."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"the audio is longer than {max_seconds:g} s; trim it to at most {max_seconds:g} s"
        )


class SilentAudio(AudioError):
    """The audio decodes but holds (almost) nothing but silence."""

    def __init__(self) -> None:
        super().__init__(
            "the audio is silent or nearly so; send a recording in which the speaker is audible"
        )


class UnknownFormat(AudioError):
    """An output format that the encoder does not offer."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown audio format {name!r}; use one of: {', '.join(known)}")


class EncodeFailed(AudioError):
    """The codec refused to write this audio in the format asked for (FLAC, for one, holds no
    rate above 655 350 Hz). The client can ask for another format: not an outage (API: 400)."""

    def __init__(self, fmt: str, reason: str) -> None:
        super().__init__(
            f"the audio could not be encoded as {fmt} ({reason}); ask for another format "
            "(wav or pcm take any audio)"
        )
