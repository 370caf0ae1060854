"""Preset speakers (the CustomVoice model) and how clients name a voice by a string.

The CustomVoice model ships nine speakers; qwen-tts knows only their names, so what a person
needs to choose one (native language, a description) is stated here, from the model card. OpenAI
clients name OpenAI's built-in voices: where the CustomVoice model is loaded, each maps to the
preset speaker closest in register (`OPENAI_VOICES`, documented in the README), so code written
for OpenAI speaks without changes; without it they are unknown names, answered with a 404 that
lists the caller's own voices.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_tts_server.engine.base import LANGUAGES, EngineInfo
from qwen3_tts_server.errors import BadRequest, NotFound, ServiceUnavailable
from qwen3_tts_server.services.runtime import ModelRuntime
from qwen3_tts_server.services.voices import VoiceService
from qwen3_tts_server.services.voicing import PresetSpeaker


@dataclass(frozen=True)
class Preset:
    """What the model card says of a speaker."""

    name: str
    native_language: str
    description: str


#: The published CustomVoice speakers, by the lowercase name qwen-tts uses.
PRESETS: dict[str, Preset] = {
    "vivian": Preset("Vivian", "chinese", "Bright, slightly edgy young female voice."),
    "serena": Preset("Serena", "chinese", "Warm, gentle young female voice."),
    "uncle_fu": Preset("Uncle_Fu", "chinese", "Seasoned male voice with a low, mellow timbre."),
    "dylan": Preset(
        "Dylan", "chinese (beijing dialect)", "Youthful Beijing male voice, clear and natural."
    ),
    "eric": Preset(
        "Eric", "chinese (sichuan dialect)", "Lively Chengdu male voice, slightly husky."
    ),
    "ryan": Preset("Ryan", "english", "Dynamic male voice with strong rhythmic drive."),
    "aiden": Preset("Aiden", "english", "Sunny American male voice with a clear midrange."),
    "ono_anna": Preset("Ono_Anna", "japanese", "Playful Japanese female voice, light and nimble."),
    "sohee": Preset("Sohee", "korean", "Warm Korean female voice with rich emotion."),
}

#: OpenAI's built-in voice names → the preset speaker closest in register.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "serena",
    "ash": "ryan",
    "ballad": "uncle_fu",
    "coral": "sohee",
    "echo": "aiden",
    "fable": "dylan",
    "nova": "vivian",
    "onyx": "uncle_fu",
    "sage": "serena",
    "shimmer": "ono_anna",
    "verse": "eric",
    "marin": "vivian",
    "cedar": "ryan",
}

#: Languages every speaker speaks (best in its native one), as the API names them.
SPOKEN_LANGUAGES = tuple(language for language in LANGUAGES if language != "auto")

#: How many of a caller's voice names a "voice not found" message lists.
_NAMES_SHOWN = 20


@dataclass(frozen=True)
class SpeakerView:
    name: str
    native_language: str
    languages: tuple[str, ...]
    description: str
    supports_instructions: bool
    openai_voices: tuple[str, ...]


@dataclass(frozen=True)
class VoiceChoice:
    """A voice named by a string: one of the caller's voices, or a preset speaker."""

    voice_id: int | None = None
    speaker: str | None = None


class SpeakerService:
    def __init__(self, runtime: ModelRuntime, voices: VoiceService) -> None:
        self._runtime = runtime
        self._voices = voices

    def _info(self) -> EngineInfo:
        """The loaded model's info (503 while loading)."""
        return self._runtime.loaded().info

    def _custom_voice(self) -> EngineInfo:
        info = self._info()
        if not info.has_custom_voice:
            raise ServiceUnavailable(
                "Preset speakers need the CustomVoice model, which this server has not loaded "
                "(set MODEL_CUSTOM_REPO, e.g. Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice); use one "
                "of your own voices (voice_id) instead"
            )
        return info

    def list(self) -> list[SpeakerView]:
        """The loaded CustomVoice model's speakers (503 without one)."""
        info = self._custom_voice()
        return [self._view(name, info) for name in info.speakers]

    @staticmethod
    def _view(name: str, info: EngineInfo) -> SpeakerView:
        preset = PRESETS.get(name, Preset(name, "", ""))
        aliases = tuple(alias for alias, speaker in OPENAI_VOICES.items() if speaker == name)
        return SpeakerView(
            name=preset.name,
            native_language=preset.native_language,
            languages=SPOKEN_LANGUAGES,
            description=preset.description,
            supports_instructions=info.speaker_instructions,
            openai_voices=aliases,
        )

    def preset(self, speaker: str, instruct: str) -> PresetSpeaker:
        """A preset speaker by name (any case), checked against the loaded model."""
        info = self._custom_voice()
        name = speaker.strip().lower()
        if name not in info.speakers:
            known = ", ".join(self._view(known, info).name for known in info.speakers)
            raise BadRequest(f"Unknown speaker {speaker!r}; use one of: {known} (GET /speakers)")
        if instruct and not info.speaker_instructions:
            raise BadRequest(
                "This server's CustomVoice model (0.6B) cannot follow instructions; leave them "
                "out, or load the 1.7B CustomVoice model"
            )
        return PresetSpeaker(name, instruct)

    def choose(self, user_id: int, reference: str) -> VoiceChoice:
        """A voice named the way OpenAI clients name one: the caller's own voice (id, "voice:id"
        or name) first, then an OpenAI built-in name or a preset speaker's name where the
        CustomVoice model is loaded; else a 404 listing the caller's voices."""
        voice_id = self._voices.find(user_id, reference)
        if voice_id is not None:
            return VoiceChoice(voice_id=voice_id)
        info = self._info()
        wanted = reference.strip().lower()
        speaker = OPENAI_VOICES.get(wanted, wanted)
        if info.has_custom_voice and speaker in info.speakers:
            return VoiceChoice(speaker=speaker)
        raise NotFound(self._not_found(user_id, reference, info))

    def _not_found(self, user_id: int, reference: str, info: EngineInfo) -> str:
        names = [voice.name for voice in self._voices.list(user_id)]
        if not names:
            yours = "You have no voices yet: make one with /clonevoice or /designvoice."
        else:
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            yours = "Your voices: " + ", ".join(names[:_NAMES_SHOWN]) + more + "."
        builtin = reference.strip().lower() in OPENAI_VOICES
        if builtin and not info.has_custom_voice:
            yours += (
                " OpenAI's built-in voice names map to preset speakers only where the server "
                "loads the CustomVoice model, and this one does not."
            )
        return f"Voice not found: no voice of yours has the id or name {reference!r}. {yours}"
