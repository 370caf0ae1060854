"""Which model speaks a request, and with what: a stored voice, a preset speaker, or words.

Every synthesis path (/tts, its stream, /batchtts, /v1/audio/speech, the realtime socket) asks
`SynthesisService.prepare` for a `Voicing` once, then turns each text into the model item that
voicing needs (`item`). `LoadedModel.speak` picks the model by the items' type, so the paths
themselves never branch on where the voice comes from.

Instructions ("say it cheerfully") reach the model only where it can follow them: a preset
speaker of the 1.7B CustomVoice model (`instruct`), and a designed voice, which is then spoken
by the VoiceDesign model from its description plus the instructions (the same described
voice, not the stored reference clip: that model has no way to take both). A cloned voice has
no words to add instructions to, so asking for them is a 400 rather than being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen3_tts_server.engine.base import CustomItem, DesignItem, EngineInfo, SynthItem
from qwen3_tts_server.errors import BadRequest


@dataclass(frozen=True)
class ClonedVoice:
    """A stored voice spoken from its prompt (Base model): cloned, or designed without
    instructions."""

    prompt: bytes

    def item(self, text: str, language: str) -> SynthItem:
        return SynthItem(text, language, self.prompt)


@dataclass(frozen=True)
class PresetSpeaker:
    """One of the CustomVoice model's speakers, with optional instructions."""

    speaker: str
    instruct: str = ""

    def item(self, text: str, language: str) -> CustomItem:
        return CustomItem(text, language, self.speaker, self.instruct)


@dataclass(frozen=True)
class DescribedVoice:
    """A voice the VoiceDesign model makes from words for every text."""

    description: str

    def item(self, text: str, language: str) -> DesignItem:
        return DesignItem(text, language, self.description)


Voicing = ClonedVoice | PresetSpeaker | DescribedVoice


def stored_voice(
    name: str,
    kind: str,
    prompt: bytes,
    description: str | None,
    instruct: str,
    info: EngineInfo | None,
) -> Voicing:
    """How a stored voice speaks: from its prompt, or (designed, with instructions) from its
    description followed by the instructions. `info` is needed only with instructions."""
    if not instruct:
        return ClonedVoice(prompt)
    if kind != "design" or not description:
        raise BadRequest(
            f"Voice {name!r} was cloned from a recording and cannot follow instructions; leave "
            "out the instructions, or use a designed voice or a preset speaker (GET /speakers)"
        )
    if info is None or not info.has_voice_design:
        raise BadRequest(
            f"Instructions for the designed voice {name!r} need the VoiceDesign model, which "
            "this server has not loaded; leave out the instructions"
        )
    description = description.strip()
    separator = " " if description[-1:] in ".!?。！？" else ". "
    return DescribedVoice(f"{description}{separator}{instruct}")
