"""A designed voice's reference: the model's own output must be usable, or the server says so.

/designvoice speaks a coverage phrase in the described voice, then clones that sample. The
VoiceDesign model sometimes makes a sample no voice can be cloned from: too short (it stopped
almost at once), silent, or a runaway that never stops. None of that is the caller's doing
(they sent words, no audio), so it is never a 400. A sample is usable when the clone step
takes it (finite, at least MIN_PROMPT_SECONDS long) and it is not silent; otherwise the design
is tried again with a new random seed (an unseeded job draws its own), up to DESIGN_ATTEMPTS
times, and if every try is unusable the call fails with 503 and Retry-After. The caller
(services/voices.py) then releases the reservation: nothing is charged and no voice is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from qwen3_tts_server.engine.base import InvalidInput, Runaway
from qwen3_tts_server.engine.model.qwen import MIN_PROMPT_SECONDS
from qwen3_tts_server.engine.serving.scheduler import Scheduler
from qwen3_tts_server.errors import ServiceUnavailable
from qwen3_tts_server.values import Audio, Sampling

log = logging.getLogger(__name__)

#: Designs tried, each with a new seed, before the call fails (a usable one is the rule: on the
#: demo's random tiny model about 1 in 10 is not, so five tries fail 1 call in 100,000).
DESIGN_ATTEMPTS = 5
#: A sample whose loudest sample stays below this (full scale is 1.0) is silence.
SILENCE_PEAK = 1e-3
#: What the client is told to wait before trying again.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class DesignedReference:
    """A usable designed sample and the clone prompt made from it."""

    sample: Audio
    prompt: bytes
    attempts: int


def flaw(sample: Audio) -> str | None:
    """Why `sample` cannot be a voice's reference, or None when it can."""
    samples = np.asarray(sample.samples)
    if not np.isfinite(samples).all():
        return "it holds non-finite samples"
    if sample.duration_s < MIN_PROMPT_SECONDS:
        return f"it is {sample.duration_s:.2f} s long, under {MIN_PROMPT_SECONDS:g} s"
    if samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK:
        return "it is silent"
    return None


async def design_reference(
    scheduler: Scheduler,
    *,
    phrase: str,
    description: str,
    language: str,
    sampling: Callable[[], Sampling],
    user: Hashable,
) -> DesignedReference:
    """Design `phrase` in the described voice until a sample is usable, and clone it.

    Raises ServiceUnavailable (503, Retry-After) after DESIGN_ATTEMPTS unusable samples; any
    other error (the queue full, the caller's own input refused) goes to the caller as is.
    """
    problems: list[str] = []
    for attempt in range(1, DESIGN_ATTEMPTS + 1):
        try:
            sample = await scheduler.design(phrase, description, language, sampling(), user=user)
        except Runaway as error:
            problems.append(f"the model did not stop ({error})")
            continue
        problem = flaw(sample)
        if problem is None:
            try:
                prompt = await scheduler.create_prompt(sample, phrase)
            except InvalidInput as error:  # the engine refused audio the server made
                problem = str(error)
            else:
                return DesignedReference(sample, prompt, attempt)
        problems.append(problem)
        log.warning("designed sample %d of %d unusable: %s", attempt, DESIGN_ATTEMPTS, problem)
    raise ServiceUnavailable(
        f"The voice design model made no usable reference sample in {DESIGN_ATTEMPTS} tries "
        f"(the last: {problems[-1]}); nothing was charged and no voice was kept. Try again "
        "shortly, or with another description",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
