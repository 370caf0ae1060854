"""The step engine: requests join and leave a decode loop between steps (continuous batching).

The scheduler drives three calls:

* `admit(item, sampling, budget)` builds the talker prompt with qwen-tts's own input code
  (inputs.py), prefills it through the stock talker forward (so the prompt's K/V are exactly
  stock's), writes the K/V and the request's state into a free row of the model's slot table
  (step/table.py) and picks the first talker token;
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
from transformers.cache_utils import DynamicCache

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
from qwen3_tts_server.engine.step.sizing import DEFAULT_CONTEXT, default_rows
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
        self.rope_cos, self.rope_sin = self._rope_table(context + ROPE_MARGIN, probe)
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


#: Rope table positions beyond the K/V context (a prompt's rope delta shifts its positions).
ROPE_MARGIN = 256


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

    @torch.inference_mode()
    def admit(
        self, item: Item, sampling: Sampling, budget: int, *, seed: int | None = None
    ) -> Slot:
        """Prefill one request into a free row that may produce up to `budget` frames.

        `seed` overrides `sampling.seed` (a retry's new seed); unseeded slots draw a random one.
        Raises what `QwenEngine.prepare` raises for bad input (InvalidInput, PromptMismatch,
        PromptCorrupt, ModelUnavailable), and InvalidInput when prompt and budget do not fit
        the slot's K/V context.
        """
        if budget < 1:
            raise ValueError("a slot needs a budget of at least one frame")
        call = self.engine.prepare([item])
        lane = self._lanes[call.role]
        kwargs = generate_kwargs(sampling, budget + 1)
        with as_invalid_input():
            prompt = capture_prompt(call.model, lambda _: call.run(kwargs))
        self._check_fits(prompt, budget)
        seed = sampling.seed if seed is None else seed
        return self._prefill(lane, prompt, sampling, budget, seed, call.ref_codes[0])

    def _check_fits(self, prompt: TalkerPrompt, budget: int) -> None:
        needed = prompt.embeds.shape[1] + budget + 1
        if needed > self.context:
            raise InvalidInput(
                f"this voice's prompt and text need {needed} positions, over the engine's "
                f"{self.context} (ENGINE_MAX_CONTEXT): use a shorter reference audio or text"
            )
        if prompt.trailing.shape[1] > TEXT_CAPACITY:
            raise InvalidInput(f"a text chunk may have at most {TEXT_CAPACITY} tokens")

    def _prefill(
        self,
        lane: Lane,
        prompt: TalkerPrompt,
        sampling: Sampling,
        budget: int,
        seed: int | None,
        context: torch.Tensor | None,
    ) -> Slot:
        talker, table = lane.talker, lane.table
        embeds = prompt.embeds
        length = embeds.shape[1]
        cache = DynamicCache()
        out = talker.forward(
            inputs_embeds=embeds,
            attention_mask=torch.ones(1, length, dtype=torch.long, device=lane.device),
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(length, device=lane.device),
            trailing_text_hidden=prompt.trailing,
            tts_pad_embed=prompt.pad,
            output_hidden_states=False,
        )
        row = table.take()
        try:
            for (keys, values), layer in zip(table.kv, cache.layers, strict=True):
                assert layer.keys is not None and layer.values is not None
                keys[row, :, :length] = layer.keys[0]
                values[row, :, :length] = layer.values[0]
            seed = random_seed() if seed is None else seed
            text = prompt.trailing.shape[1]
            table.hidden[row] = out.past_hidden[0, -1]
            table.length[row] = length
            table.rope_delta[row] = talker.rope_deltas.reshape(-1)[0]
            table.count[row] = 0
            table.budget[row] = budget
            table.text[row, :text] = prompt.trailing[0]
            table.text_length[row] = text
            table.pad[row] = prompt.pad[0, 0]
            table.eos[row] = prompt.eos
            table.seen[row] = False
            table.suppress[row] = False
            table.suppress[row, list(prompt.suppress)] = True
            table.set_sampling(row, sampling, seed)
            first_token(table, row, out.logits[:, -1, :].to(dtype=torch.float32))
        except BaseException:
            table.give_back(row)  # nothing of a failed admission stays held
            raise
        return Slot(
            lane=lane,
            row=row,
            seed=seed,
            eos=prompt.eos,
            budget=budget,
            position=length,
            codes=torch.empty(budget, lane.groups, dtype=torch.long),
            context=None if context is None else context.cpu(),
        )

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
