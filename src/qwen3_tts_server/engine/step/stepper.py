"""The step engine: requests join and leave a decode loop between steps (continuous batching).

The scheduler drives these calls:

* `prepare(item, sampling, budget)` builds the talker prompt with qwen-tts's own input code
  (inputs.py); `prefill(admissions)` takes a free row of the model's slot table (step/table.py)
  for each, runs their prompts through the talker in one batched forward of the step's own
  layers (step/prefill.py: K/V straight into the rows), writes each request's state and picks
  its first talker token (`admit` is both for one request);
* `step(slots)` advances every slot by one 80 ms frame: per model, one batched step for all of
  its rows (step/body.py), replayed from a CUDA graph on GPUs (step/graphs.py), then one small
  copy of the rows' new codes and finish flags to the host: the only host read of a step;
* `release(slot)` frees the slot's row.

What equals what (README "Reproducibility"): at batch 1 greedy codes equal stock qwen-tts's on
the tiny models; a seeded slot draws from noise keyed by (seed, frame, codebook), so it gives the
same codes alone every time, and in a shared step the same codes except where a batch-dependent
GEMM rounding flips a near-tie. Seeded draws differ from stock's (`torch.multinomial` on a
generator): same distribution, other numbers.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.base import (
    CustomItem,
    DesignItem,
    EngineInfo,
    InvalidInput,
    Item,
    SynthItem,
)
from qwen3_tts_server.engine.model.inputs import TalkerPrompt, capture_prompt
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.stock_args import as_invalid_input, generate_kwargs
from qwen3_tts_server.engine.serving.codec import Codec
from qwen3_tts_server.engine.serving.guard import EOS, LENGTH
from qwen3_tts_server.engine.step.body import BUDGET_USED, CHOSE_EOS, first_token, step_rows
from qwen3_tts_server.engine.step.graphs import StepGraphs
from qwen3_tts_server.engine.step.layers import DecoderLayer, multimodal_rope
from qwen3_tts_server.engine.step.linear import LinearFactory, linear_factory
from qwen3_tts_server.engine.step.prefill import prefill_rows
from qwen3_tts_server.engine.step.sizing import DEFAULT_CONTEXT, default_rows, prefill_tokens
from qwen3_tts_server.engine.step.table import TEXT_CAPACITY, SlotTable
from qwen3_tts_server.values import Audio, Sampling

log = logging.getLogger(__name__)


def random_seed() -> int:
    """A fresh seed for an unseeded slot (what a retry changes)."""
    return secrets.randbits(63)


class Lane:
    """One loaded model (base, custom_voice or voice_design) prepared for the step loop."""

    def __init__(
        self,
        role: str,
        model: Any,
        make: LinearFactory,
        layers: LinearFactory | None = None,
        *,
        rows: int,
        context: int,
        keep_logits: bool = False,
    ) -> None:
        """`make` builds the output heads' linears, `layers` (default: `make`) the decoder
        layers' (QUANT=int8 quantizes the layers only: the heads pick the codes)."""
        self.role = role
        self.model = model
        talker = model.model.talker
        self.talker = talker
        self.config = talker.config
        predictor = talker.code_predictor
        self.predictor = predictor
        self.groups = int(self.config.num_code_groups)
        layers = layers or make
        self.talker_layers = [DecoderLayer(layer, layers) for layer in talker.model.layers]
        depth = predictor.config.num_hidden_layers
        self.predictor_layers = [
            DecoderLayer(layer, layers) for layer in predictor.model.layers[:depth]
        ]
        self.heads = [make(head.weight, head.bias) for head in predictor.lm_head]
        self.codec_head = make(talker.codec_head.weight, talker.codec_head.bias)
        param = next(talker.parameters())
        self.device, self.dtype = param.device, param.dtype
        # Code-predictor rotary for positions 0..groups, as its rotary module makes them per call.
        positions = torch.arange(self.groups + 1, device=self.device).unsqueeze(0)
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = predictor.model.rotary_emb(probe, positions)
        self.predictor_rope = (cos.unsqueeze(1), sin.unsqueeze(1))
        pcfg = predictor.config
        self.predictor_kv_shape = (pcfg.num_key_value_heads, self.groups + 1, pcfg.head_dim)
        self.kv_shape = (self.config.num_key_value_heads, self.config.head_dim)
        self.rope_cos, self.rope_sin = self._rope_table(context, probe)
        self.codec = Codec(model.model.speech_tokenizer)
        self.table = SlotTable(self, rows, context, keep_logits=keep_logits)
        self.graphs: StepGraphs | None = None

    def _rope_table(self, length: int, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's (length, head_dim) cos/sin per position. A TTS prompt has no image or
        video, so its three multimodal position ids are equal; the values are those the
        talker's rotary module and `apply_multimodal_rotary_pos_emb` make per call."""
        positions = torch.arange(length, device=self.device).view(1, 1, length).expand(3, 1, -1)
        cos, sin = self.talker.model.rotary_emb(probe, positions)
        rope = self.config.rope_scaling
        cos, sin = multimodal_rope(cos, sin, rope["mrope_section"], rope["interleaved"])
        return cos[0, 0].contiguous(), sin[0, 0].contiguous()

    def run(self, n: int, span: int) -> int:
        """Step rows [0, n) over span positions; returns how many rows were stepped."""
        if self.graphs is not None:
            return self.graphs.run(n, span)
        step_rows(self, self.table, n, span, window=self.table.windowed(n))
        return n

    @torch.inference_mode()
    def capture(self) -> None:
        """CUDA only: capture every (rows, span) bucket of the step body."""
        self.graphs = StepGraphs(self.table, lambda n, span: step_rows(self, self.table, n, span))


@dataclass(eq=False)
class Slot:
    """One request in the loop: its row, the host's copy of its frames, its finish reason."""

    lane: Lane
    row: int
    seed: int
    eos: int
    budget: int
    position: int  # tokens in the row's K/V (the host's mirror of table.length)
    codes: torch.Tensor  # (budget, groups) on the host, frames so far in rows [0, count)
    context: torch.Tensor | None = None  # ICL reference codes (decoder left context)
    count: int = 0
    finish: str | None = None

    @property
    def frames(self) -> torch.Tensor:
        return self.codes[: self.count]

    @property
    def done(self) -> bool:
        return self.finish is not None


@dataclass(frozen=True)
class Admission:
    """A request whose prompt is built (`StepEngine.prepare`), waiting for its prefill."""

    item: Item
    lane: Lane
    prompt: TalkerPrompt
    sampling: Sampling
    budget: int
    seed: int
    context: torch.Tensor | None  # ICL reference codes (decoder left context)

    @property
    def tokens(self) -> int:
        """Prompt positions its prefill runs."""
        return int(self.prompt.embeds.shape[1])


class StepEngine:
    """The step interface over a loaded `QwenEngine` (which keeps the stock path as reference)."""

    def __init__(
        self,
        engine: QwenEngine,
        *,
        prepack: bool = True,
        quant: str = "none",
        rows: int | None = None,
        context: int = DEFAULT_CONTEXT,
        keep_logits: bool = False,
    ) -> None:
        """`rows`: slots per model (default by device, DEFAULT_ROWS); `context`: K/V positions
        per slot (prompt + frames + 1); `keep_logits`: keep each step's talker logits (tests)."""
        self.engine = engine
        info = engine.info()
        device = "cuda" if info.device.startswith("cuda") else info.device
        rows = rows or default_rows(device)
        self.prefill_tokens = prefill_tokens(device)
        self.context = context
        self._lanes: dict[str, Lane] = {}
        roles = ["base"] + [
            role
            for role, present in (
                ("custom_voice", info.has_custom_voice),
                ("voice_design", info.has_voice_design),
            )
            if present
        ]
        for role in roles:
            model = engine.model(role)
            dtype = next(model.model.talker.parameters()).dtype
            make = linear_factory(device, dtype) if prepack else linear_factory("meta", dtype)
            layers = linear_factory(device, dtype, quant) if quant != "none" else None
            self._lanes[role] = Lane(
                role, model, make, layers, rows=rows, context=context, keep_logits=keep_logits
            )
        self._host_out = {
            role: torch.empty(
                lane.table.out.shape, dtype=torch.int64, pin_memory=lane.device.type == "cuda"
            )
            for role, lane in self._lanes.items()
        }

    def info(self) -> EngineInfo:
        return self.engine.info()

    @property
    def frame_cap(self) -> int:
        return self.engine.max_new_tokens_cap

    def lane(self, role: str) -> Lane:
        return self._lanes[role]

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self.engine.create_prompt(audio, transcript)

    def warm_up(self) -> None:
        """Pay one-time costs before serving: the CUDA graphs of every bucket, the first
        resample (numba JIT, seconds) when a prompt is made, and one admit, two steps and a
        decode per loaded model."""
        started = time.perf_counter()
        for lane in self._lanes.values():
            if lane.device.type == "cuda":
                lane.capture()
        seconds = np.arange(16000, dtype=np.float32) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 220 * seconds)).astype(np.float32)
        prompt = self.create_prompt(Audio(tone, 16000), "Warm up.")
        items: dict[str, Item] = {"base": SynthItem("Warm up.", "english", prompt)}
        if "custom_voice" in self._lanes:
            speaker = self.info().speakers[0]
            items["custom_voice"] = CustomItem("Warm up.", "english", speaker)
        if "voice_design" in self._lanes:
            items["voice_design"] = DesignItem("Warm up.", "english", "A calm voice.")
        for item in items.values():
            slot = self.admit(item, Sampling(), 2)
            while not slot.done:
                self.step([slot])
            slot.lane.codec.decode(slot.frames)
            self.release(slot)
        log.info("engine warm in %.1f s", time.perf_counter() - started)

    def admit(
        self, item: Item, sampling: Sampling, budget: int, *, seed: int | None = None
    ) -> Slot:
        """Prepare and prefill one request (`prepare`, then `prefill` of it alone)."""
        [slot] = self.prefill([self.prepare(item, sampling, budget, seed=seed)])
        return slot

    @torch.inference_mode()
    def prepare(
        self, item: Item, sampling: Sampling, budget: int, *, seed: int | None = None
    ) -> Admission:
        """Build one request's talker prompt, for a row that may produce up to `budget` frames.

        `seed` overrides `sampling.seed` (a retry's new seed); unseeded slots draw a random one.
        Raises what `QwenEngine.prepare` raises for bad input (InvalidInput, PromptMismatch,
        PromptCorrupt, ModelUnavailable), and InvalidInput when prompt and budget do not fit
        the slot's K/V context.
        """
        if budget < 1:
            raise ValueError("a slot needs a budget of at least one frame")
        call = self.engine.prepare([item])
        kwargs = generate_kwargs(sampling, budget + 1)
        with as_invalid_input():
            prompt = capture_prompt(call.model, lambda _: call.run(kwargs))
        self._check_fits(prompt, budget)
        seed = sampling.seed if seed is None else seed
        return Admission(
            item=item,
            lane=self._lanes[call.role],
            prompt=prompt,
            sampling=sampling,
            budget=budget,
            seed=random_seed() if seed is None else seed,
            context=call.ref_codes[0],
        )

    def _check_fits(self, prompt: TalkerPrompt, budget: int) -> None:
        needed = prompt.embeds.shape[1] + budget + 1
        if needed > self.context:
            raise InvalidInput(
                f"this voice's prompt and text need {needed} positions, over the engine's "
                f"{self.context} (ENGINE_MAX_CONTEXT): use a shorter reference audio or text"
            )
        if prompt.trailing.shape[1] > TEXT_CAPACITY:
            raise InvalidInput(f"a text chunk may have at most {TEXT_CAPACITY} tokens")

    @torch.inference_mode()
    def prefill(self, admissions: Sequence[Admission]) -> list[Slot]:
        """Take a free row for each prepared request and prefill them, one batched forward per
        model (step/prefill.py); slots in the order given. All or nothing: on an error no row
        stays held."""
        by_lane: dict[str, list[int]] = {}
        for i, admission in enumerate(admissions):
            by_lane.setdefault(admission.lane.role, []).append(i)
        slots: dict[int, Slot] = {}
        try:
            for members in by_lane.values():
                batch = [admissions[i] for i in members]
                for i, slot in zip(members, self._prefill_lane(batch), strict=True):
                    slots[i] = slot
        except BaseException:
            for slot in slots.values():
                self.release(slot)
            raise
        return [slots[i] for i in range(len(admissions))]

    def _prefill_lane(self, admissions: list[Admission]) -> list[Slot]:
        lane = admissions[0].lane
        table = lane.table
        if len(admissions) > table.free_rows:
            raise RuntimeError("more admissions than free slot rows; the loop admits fewer")
        rows = [table.take() for _ in admissions]
        try:
            for row, admission in zip(rows, admissions, strict=True):
                prompt = admission.prompt
                text = prompt.trailing.shape[1]
                table.count[row] = 0
                table.budget[row] = admission.budget
                table.text[row, :text] = prompt.trailing[0]
                table.text_length[row] = text
                table.pad[row] = prompt.pad[0, 0]
                table.eos[row] = prompt.eos
                table.seen[row] = False
                table.suppress[row] = False
                table.suppress[row, list(prompt.suppress)] = True
                table.set_sampling(row, admission.sampling, admission.seed)
            prompts = [admission.prompt.embeds for admission in admissions]
            index = torch.tensor(rows, device=lane.device)
            lengths = torch.tensor(
                [admission.tokens for admission in admissions], device=lane.device
            )
            logits = prefill_rows(lane, table, index, prompts, lengths)
            for i, row in enumerate(rows):
                first_token(table, row, logits[i : i + 1])
        except BaseException:
            for row in rows:
                table.give_back(row)  # nothing of a failed admission stays held
            raise
        return [
            Slot(
                lane=lane,
                row=row,
                seed=admission.seed,
                eos=admission.prompt.eos,
                budget=admission.budget,
                position=admission.tokens,
                codes=torch.empty(admission.budget, lane.groups, dtype=torch.long),
                context=None if admission.context is None else admission.context.cpu(),
            )
            for row, admission in zip(rows, admissions, strict=True)
        ]

    @torch.inference_mode()
    def step(self, slots: Sequence[Slot]) -> None:
        """Advance every unfinished slot by one frame (appended to its `codes`).

        A slot finishes with "eos" when its next talker token is EOS and with "length" when its
        frames reach its budget; a finished slot must be released, not stepped again.
        """
        by_lane: dict[str, list[Slot]] = {}
        for slot in slots:
            if not slot.done:
                by_lane.setdefault(slot.lane.role, []).append(slot)
        for role, members in by_lane.items():
            self._step_lane(self._lanes[role], members, self._host_out[role])

    def _step_lane(self, lane: Lane, slots: list[Slot], host: torch.Tensor) -> None:
        n = max(slot.row for slot in slots) + 1
        span = max(slot.position for slot in slots) + 1
        stepped = lane.run(n, span)
        host[:stepped].copy_(lane.table.out[:stepped], non_blocking=True)
        if lane.device.type == "cuda":  # wait for this copy alone (an event, not a stream sync)
            copied = torch.cuda.Event()
            copied.record()
            copied.synchronize()
        out = host.numpy()
        groups = lane.groups
        for slot in slots:
            result = out[slot.row]
            slot.codes[slot.count] = torch.from_numpy(result[:groups])
            slot.count += 1
            slot.position += 1
            if result[groups] == BUDGET_USED:
                slot.finish = LENGTH
            elif result[groups] == CHOSE_EOS:
                slot.finish = EOS

    def release(self, slot: Slot) -> None:
        """Free the slot's row (its frames stay readable)."""
        if slot.row >= 0:
            slot.lane.table.give_back(slot.row)
            slot.row = -1
