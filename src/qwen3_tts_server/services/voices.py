"""Voices: cloned from an upload or designed from words, each with a prompt computed once.

Creation reserves first (services/quota.py: its tokens, a voice slot and, for a clone, the
upload's bytes against the per-user storage limit), runs the model, and writes nothing until it
succeeded, so a failed clone leaves no blob and no row and its reservation is released. The
charge (tokens, at least CLONE_MIN_TOKENS for a clone) is stored on the voice itself and
reported by /usage; the reference's bytes count against the owner's storage until deletion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import anyio
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from qwen3_tts_server.audio.decode import decode_upload
from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.config import Settings
from qwen3_tts_server.db.models import AudioBlob, Voice, utcnow
from qwen3_tts_server.db.session import transaction
from qwen3_tts_server.errors import BadRequest, NotFound, ServiceUnavailable
from qwen3_tts_server.services import quota
from qwen3_tts_server.services.design import design_reference
from qwen3_tts_server.services.languages import normalize_language
from qwen3_tts_server.services.media import MediaLibrary
from qwen3_tts_server.services.quota import Amounts, Hold, Quotas
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.threads import in_thread

log = logging.getLogger(__name__)

#: What a designed voice reads aloud to become a reference: a pangram-like sentence in the
#: voice's own language, so the reference covers the sounds that language uses.
COVERAGE_PHRASES: dict[str, str] = {
    "english": (
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "Sphinx of black quartz, judge my vow."
    ),
    "chinese": "天地玄黄，宇宙洪荒。今天的天气很好，我们一起去公园散步，看看湖边的花和树吧。",
    "japanese": "いろはにほへと、ちりぬるを。今日はとても良い天気なので、公園を散歩しましょう。",
    "korean": "다람쥐 헌 쳇바퀴에 타고파. 오늘은 날씨가 정말 좋아서 공원을 산책하고 싶어요.",
    "german": "Victor jagt zwölf Boxkämpfer quer über den großen Sylter Deich. Heute ist ein "
    "schöner Tag für einen Spaziergang.",
    "french": "Portez ce vieux whisky au juge blond qui fume. Aujourd'hui, il fait beau et "
    "nous allons nous promener.",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Сегодня прекрасная "
    "погода для прогулки.",
    "portuguese": "Um pequeno jabuti xereta viu dez cegonhas felizes. Hoje está um dia lindo "
    "para passear no parque.",
    "spanish": "El veloz murciélago hindú comía feliz cardillo y kiwi. Hoy hace un día "
    "precioso para pasear.",
    "italian": "Quel vituperabile xenofobo zelante assaggia il whisky ed esclama: alleluja! "
    "Oggi è una bella giornata.",
}

#: Designed references are kept as lossless FLAC: smaller than WAV, identical samples.
DESIGN_SAMPLE_FORMAT = "flac"
#: The transcript is a form field without a schema limit; names and descriptions are bounded by
#: the request schemas (128 and 2000 characters) before they get here.
MAX_TRANSCRIPT_LEN = 2000


def coverage_phrase(language: str) -> str:
    """The phrase for a language name from `normalize_language` ("auto" reads English)."""
    return COVERAGE_PHRASES.get(language, COVERAGE_PHRASES["english"])


@dataclass(frozen=True)
class VoiceCreated:
    voice_id: int
    tokens_used: int


@dataclass(frozen=True)
class VoiceView:
    """A voice as routes may see it (no prompt bytes, no ORM row)."""

    voice_id: int
    name: str
    kind: str
    language: str
    ref_text: str
    description: str | None
    use_count: int
    created_at: datetime

    @classmethod
    def of(cls, voice: Voice) -> VoiceView:
        return cls(
            voice_id=voice.id,
            name=voice.name,
            kind=voice.kind,
            language=voice.language,
            ref_text=voice.ref_text,
            description=voice.description,
            use_count=voice.use_count,
            created_at=voice.created_at,
        )


@dataclass(frozen=True)
class VoiceSample:
    data: bytes
    media_type: str
    name: str
    ref_text: str


def _required(value: str, label: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise BadRequest(f"{label} must not be empty")
    return cleaned


class VoiceService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        media: MediaLibrary,
        runtime: ModelRuntime,
        quotas: Quotas,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._media = media
        self._runtime = runtime
        self._quotas = quotas

    # -- creation ------------------------------------------------------------------------------
    async def clone(
        self, user_id: int, *, name: str, transcript: str, language: str | None, upload: bytes
    ) -> VoiceCreated:
        """Clone from reference audio; the transcript must be what the audio says.

        Costs len(transcript), at least CLONE_MIN_TOKENS; the upload takes its size of the
        caller's storage and one voice slot, reserved before the audio is even decoded."""
        name = _required(name, "Name")
        transcript = _required(transcript, "Transcript")
        if len(transcript) > MAX_TRANSCRIPT_LEN:
            raise BadRequest(f"Transcript too long (max {MAX_TRANSCRIPT_LEN} characters)")
        language = normalize_language(language)
        if not upload:
            raise BadRequest("Empty file upload")
        tokens = max(len(transcript), self._quotas.limits.clone_min_tokens)
        wanted = Amounts(tokens=tokens, storage_bytes=len(upload), voices=1)
        hold = await in_thread(self._quotas.reserve, user_id, "clone", wanted)
        try:
            model = self._runtime.loaded()
            decoded = await in_thread(
                decode_upload,
                upload,
                min_seconds=self._settings.min_ref_seconds,
                max_seconds=self._settings.max_ref_seconds,
                target_rate=model.info.sample_rate,
            )
            prompt = await model.scheduler.create_prompt(decoded.audio, transcript)
            voice = Voice(
                user_id=user_id,
                name=name,
                kind="clone",
                language=language,
                ref_text=transcript,
                prompt=prompt,
                tokens_used=tokens,
            )
            return await in_thread(
                self._save, voice, hold, upload, decoded.media_type, decoded.duration_s
            )
        except BaseException:
            await self._release(hold)
            raise

    async def design(
        self, user_id: int, *, name: str, description: str, language: str | None
    ) -> VoiceCreated:
        """Design a voice from a description: speak the coverage phrase, then clone that.

        Reserves its tokens and a voice slot (refused while the caller's storage is full); the
        reference it makes (FLAC, some hundred KB) is counted in the caller's storage once
        made, since its size is not known before."""
        name = _required(name, "Name")
        description = _required(description, "Description")
        language = normalize_language(language)
        phrase = coverage_phrase(language)
        tokens = len(description) + len(phrase)
        wanted = Amounts(tokens=tokens, voices=1)
        hold = await in_thread(self._quotas.reserve, user_id, "design", wanted)
        try:
            model = self._runtime.loaded()
            if not model.info.has_voice_design:
                raise ServiceUnavailable(
                    "Voice design is not available: this server runs without a VoiceDesign "
                    "model (set MODEL_VOICEDESIGN_REPO); clone a voice from a recording instead"
                )
            designed = await design_reference(
                model.scheduler,
                phrase=phrase,
                description=description,
                language=language,
                sampling=self._settings.sampling,
                user=user_id,
            )
            sample = designed.sample
            data = await in_thread(encode, sample, DESIGN_SAMPLE_FORMAT)
            voice = Voice(
                user_id=user_id,
                name=name,
                kind="design",
                language=language,
                ref_text=phrase,
                description=description,
                prompt=designed.prompt,
                tokens_used=tokens,
            )
            media_type = FORMATS[DESIGN_SAMPLE_FORMAT].media_type
            return await in_thread(self._save, voice, hold, data, media_type, sample.duration_s)
        except BaseException:
            await self._release(hold)
            raise

    async def _release(self, hold: Hold) -> None:
        """A creation failed after its reservation: give it back (shielded: the request may be
        being cancelled). If the database cannot take it now, it is retried at every heartbeat
        (services/deferred.py)."""
        release = partial(self._quotas.release, hold)
        with anyio.CancelScope(shield=True):
            try:
                await in_thread(release)
            except Exception:
                log.exception("could not release reservation %d now", hold.reservation_id)
                self._quotas.deferred.add(f"reservation {hold.reservation_id}", release)

    def _save(
        self, voice: Voice, hold: Hold, audio: bytes, media_type: str, duration_s: float
    ) -> VoiceCreated:
        """Write the voice and its reference, and turn the hold into the charge, in one commit."""
        with transaction(self._sessions) as session:
            voice.ref_audio_sha256 = self._media.add(session, audio, media_type, duration_s)
            session.add(voice)
            session.flush()
            spent = Amounts(tokens=voice.tokens_used, storage_bytes=len(audio), voices=1)
            quota.settle(session, hold, spent)
            created = VoiceCreated(voice_id=voice.id, tokens_used=voice.tokens_used)
        return created

    # -- reading -------------------------------------------------------------------------------
    def list(self, user_id: int) -> list[VoiceView]:
        """The caller's live voices, newest first."""
        with self._sessions() as session:
            voices = session.scalars(
                select(Voice)
                .where(Voice.user_id == user_id, Voice.deleted_at.is_(None))
                .order_by(Voice.created_at.desc(), Voice.id.desc())
            )
            return [VoiceView.of(voice) for voice in voices]

    @staticmethod
    def owned(session: Session, user_id: int, voice_id: int) -> Voice:
        """The caller's live voice, or 404: another user's voice is indistinguishable from none."""
        voice = session.get(Voice, voice_id)
        if voice is None or voice.user_id != user_id or voice.deleted_at is not None:
            raise NotFound("Voice not found")
        return voice

    def find(self, user_id: int, reference: str) -> int | None:
        """The caller's voice named by id ("12", "voice:12") or by name (the newest live voice
        of that name, case-insensitive), as OpenAI-style clients name voices by a string; None
        when no voice of theirs answers to it. An id comes first, so a voice named "7" is found
        by its name unless the caller also owns the voice whose id is 7."""
        wanted = reference.strip().removeprefix("voice:")
        with self._sessions() as session:
            # ASCII only: str.isdigit() also accepts "²" or "①", which int() then refuses.
            if wanted.isascii() and wanted.isdigit() and len(wanted) <= 18:
                voice = session.get(Voice, int(wanted))
                if voice and voice.user_id == user_id and voice.deleted_at is None:
                    return voice.id
            voice_id: int | None = session.scalar(
                select(Voice.id)
                .where(
                    Voice.user_id == user_id,
                    Voice.deleted_at.is_(None),
                    func.lower(Voice.name) == wanted.lower(),
                )
                .order_by(Voice.created_at.desc(), Voice.id.desc())
                .limit(1)
            )
        return voice_id

    def get(self, user_id: int, voice_id: int) -> VoiceView:
        with self._sessions() as session:
            return VoiceView.of(self.owned(session, user_id, voice_id))

    def sample(self, user_id: int, voice_id: int) -> VoiceSample:
        with self._sessions() as session:
            voice = self.owned(session, user_id, voice_id)
            blob = (
                session.get(AudioBlob, voice.ref_audio_sha256) if voice.ref_audio_sha256 else None
            )
            if blob is None or not self._media.blobs.exists(blob.sha256):
                raise NotFound("Audio file not found")
            return VoiceSample(
                data=self._media.read(blob.sha256),
                media_type=blob.media_type,
                name=voice.name,
                ref_text=voice.ref_text,
            )

    # -- deletion ------------------------------------------------------------------------------
    def delete(self, user_id: int, voice_id: int) -> datetime:
        """Soft-delete the voice; its reference audio goes when no live voice or stored
        generation uses the same bytes any more, and stops counting against the owner's storage
        and voice limits. One conditional UPDATE claims the deletion, so two concurrent deletes
        cannot both give the storage back."""
        deleted_at = utcnow()
        with transaction(self._sessions) as session:
            released = self.owned(session, user_id, voice_id).ref_audio_sha256
            claimed = session.execute(
                update(Voice)
                .where(Voice.id == voice_id, Voice.deleted_at.is_(None))
                .values(deleted_at=deleted_at, ref_audio_sha256=None)
                .execution_options(synchronize_session=False)
            )
            if int(claimed.rowcount) != 1:  # type: ignore[attr-defined]
                raise NotFound("Voice not found")
            blob = session.get(AudioBlob, released) if released else None
            quota.voice_removed(session, user_id, blob.size_bytes if blob else 0)
        if released:
            self._media.release([released])
        return deleted_at
