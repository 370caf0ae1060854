"""The step engine: requests join and leave a decode loop between steps (continuous batching).

Instead of one stock `generate` per batch (which runs until its longest item ends), the
scheduler drives three calls:

* `admit(item, sampling, budget)` builds the talker prompt with qwen-tts's own input code
  (inputs.py), prefills it through the stock talker forward (once per request, so the prompt's
  K/V are exactly stock's), copies the K/V into the slot's own preallocated buffers and picks
  the first talker token;
* `step(slots)` advances every slot by one 80 ms frame: the code predictor's sub-steps for all
  slots of a model batched, then one talker step for all of them (projections and MLP batched,
  attention per slot over its own prefix), then each slot's next token with its own sampler;
* `release(slot)` frees the slot's buffers.

A slot's frames equal stock qwen-tts's codes for the same request alone (greedy, and sampled with
the same seed), in the same dtype: tests prove it on the tiny models. In a step shared with other
slots a slot's codes can differ from its solo codes, because CPU GEMMs are not batch-invariant
(a row's result depends on how many rows share the multiply); see README "Reproducibility".
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_server.engine.base import CustomItem, DesignItem, EngineInfo, Item, SynthItem
from qwen3_tts_server.engine.codec import Codec
from qwen3_tts_server.engine.guard import EOS, LENGTH
from qwen3_tts_server.engine.inputs import TalkerPrompt, capture_prompt
from qwen3_tts_server.engine.layers import KV, DecoderLayer, multimodal_rope
from qwen3_tts_server.engine.linear import LinearFactory, linear_factory
from qwen3_tts_server.engine.predictor import EagerPasses, PredictorGraphs
from qwen3_tts_server.engine.qwen import QwenEngine, as_invalid_input, generate_kwargs
from qwen3_tts_server.engine.sampler import SlotSampler, TalkerRules
from qwen3_tts_server.values import Audio, Sampling

log = logging.getLogger(__name__)


class Lane:
    """One loaded model (base, custom_voice or voice_design) prepared for the step loop."""

    def __init__(
        self, role: str, model: Any, make: LinearFactory, layers: LinearFactory | None = None
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
        rope = self.config.rope_scaling
        self.rope_section, self.rope_interleaved = rope["mrope_section"], rope["interleaved"]
        param = next(talker.parameters())
        self.device, self.dtype = param.device, param.dtype
        # Code-predictor rotary for positions 0..groups, as its rotary module makes them per call.
        positions = torch.arange(self.groups + 1, device=self.device).unsqueeze(0)
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = predictor.model.rotary_emb(probe, positions)
        self.predictor_rope = (cos.unsqueeze(1), sin.unsqueeze(1))
        pcfg = predictor.config
        self.predictor_kv_shape = (pcfg.num_key_value_heads, self.groups + 1, pcfg.head_dim)
        # On CUDA the code predictor's passes replay from captured graphs (engine/predictor.py).
        self.graphs = PredictorGraphs(self) if self.device.type == "cuda" else None
        self.kv_shape = (self.config.num_key_value_heads, self.config.head_dim)
        self.codec = Codec(model.model.speech_tokenizer)


@dataclass(eq=False)
class Slot:
    """One request in the loop: its K/V region, position, sampler, frames and finish reason."""

    lane: Lane
    sampler: SlotSampler
    kv: list[KV]
    length: int  # tokens in the K/V buffers (= the next token's cache position)
    rope_delta: int
    trailing: torch.Tensor  # (T, H) text embeddings fed one per step, then `pad`
    pad: torch.Tensor  # (1, H)
    eos: int
    hidden: torch.Tensor  # (1, 1, H) the talker's last hidden state
    token: int  # the talker token whose frame the next step completes
    budget: int  # frames this slot may produce
    codes: torch.Tensor  # (budget, groups) frames so far in rows [0, count)
    context: torch.Tensor | None = None  # ICL reference codes (decoder left context)
    count: int = 0
    step: int = 0
    finish: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> torch.Tensor:
        return self.codes[: self.count]

    @property
    def done(self) -> bool:
        return self.finish is not None


class StepEngine:
    """The step interface over a loaded `QwenEngine` (which keeps the stock path as reference)."""

    def __init__(self, engine: QwenEngine, *, prepack: bool = True, quant: str = "none") -> None:
        self.engine = engine
        info = engine.info()
        device = "cuda" if info.device.startswith("cuda") else info.device
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
            self._lanes[role] = Lane(role, model, make, layers)

    def info(self) -> EngineInfo:
        return self.engine.info()

    @property
    def frame_cap(self) -> int:
        return self.engine.max_new_tokens_cap

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self.engine.create_prompt(audio, transcript)

    def warm_up(self) -> None:
        """Pay one-time costs before serving: the first resample (numba JIT, seconds) when a
        prompt is made, and one admit, two steps and a decode per loaded model."""
        started = time.perf_counter()
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
        """Prefill one request into a new slot that may produce up to `budget` frames.

        `seed` overrides `sampling.seed` (a retry's new seed); unseeded slots draw a random one.
        Raises what `QwenEngine.prepare` raises for bad input (InvalidInput, PromptMismatch,
        PromptCorrupt, ModelUnavailable).
        """
        if budget < 1:
            raise ValueError("a slot needs a budget of at least one frame")
        call = self.engine.prepare([item])
        lane = self._lanes[call.role]
        kwargs = generate_kwargs(sampling, budget + 1)
        with as_invalid_input():
            prompt = capture_prompt(call.model, lambda _: call.run(kwargs))
        return self._prefill(lane, prompt, sampling, budget, seed, call.ref_codes[0])

    def _prefill(
        self,
        lane: Lane,
        prompt: TalkerPrompt,
        sampling: Sampling,
        budget: int,
        seed: int | None,
        context: torch.Tensor | None,
    ) -> Slot:
        talker = lane.talker
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
        rope_delta = int(talker.rope_deltas.reshape(-1)[0])
        heads, head_dim = lane.kv_shape
        capacity = length + budget + 1
        kv: list[KV] = []
        for layer in cache.layers:
            assert layer.keys is not None and layer.values is not None
            keys = torch.empty(1, heads, capacity, head_dim, dtype=lane.dtype, device=lane.device)
            values = torch.empty_like(keys)
            keys[:, :, :length] = layer.keys
            values[:, :, :length] = layer.values
            kv.append((keys, values))
        seed = sampling.seed if seed is None else seed
        rules = TalkerRules(eos=prompt.eos, suppress=prompt.suppress)
        sampler = SlotSampler(sampling, rules, budget + 1, seed=seed, device=lane.device)
        logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
        return Slot(
            lane=lane,
            sampler=sampler,
            kv=kv,
            length=length,
            rope_delta=rope_delta,
            trailing=prompt.trailing[0],
            pad=prompt.pad[0],
            eos=prompt.eos,
            hidden=out.past_hidden,
            token=sampler.talker(logits),
            budget=budget,
            codes=torch.empty(budget, lane.groups, dtype=torch.long, device=lane.device),
            context=context,
        )

    @torch.inference_mode()
    def step(self, slots: Sequence[Slot]) -> None:
        """Advance every unfinished slot by one frame (appended to its `codes`).

        A slot finishes with "eos" when its next talker token is EOS and with "length" when its
        frames reach its budget; a finished slot must be released, not stepped again.
        """
        live = [slot for slot in slots if not slot.done]
        for _, group in itertools.groupby(
            sorted(live, key=lambda s: s.lane.role), key=lambda s: s.lane.role
        ):
            members = list(group)
            self._step_lane(members[0].lane, members)

    def release(self, slot: Slot) -> None:
        """Free the slot's K/V buffers (its frames stay readable)."""
        slot.kv = []

    def _step_lane(self, lane: Lane, slots: list[Slot]) -> None:
        talker = lane.talker
        tokens = torch.tensor([[slot.token] for slot in slots], device=lane.device)
        last = talker.get_input_embeddings()(tokens)  # (B, 1, H)
        past = torch.cat([slot.hidden for slot in slots])
        codes = self._predict(lane, slots, past, last)  # (B, groups - 1)
        frame = torch.cat([tokens, codes], dim=1)
        for i, slot in enumerate(slots):
            slot.codes[slot.count] = frame[i]
            slot.count += 1
            if slot.count >= slot.budget:
                slot.finish = LENGTH
        embeddings = lane.predictor.get_input_embeddings()
        parts = [last] + [embeddings[g](codes[:, g : g + 1]) for g in range(lane.groups - 1)]
        e = torch.cat(parts, dim=1).sum(1, keepdim=True)
        e = e + torch.stack(
            [
                slot.trailing[slot.step] if slot.step < slot.trailing.shape[0] else slot.pad[0]
                for slot in slots
            ]
        ).unsqueeze(1)
        live = [i for i, slot in enumerate(slots) if not slot.done]
        if not live:
            return
        if len(live) < len(slots):
            e = e[live]
            slots = [slots[i] for i in live]
        self._talker_step(lane, slots, e)

    def _talker_step(self, lane: Lane, slots: list[Slot], e: torch.Tensor) -> None:
        positions = [slot.length for slot in slots]
        rope_positions = torch.tensor(
            [[slot.length + slot.rope_delta] for slot in slots], device=lane.device
        )
        cos, sin = lane.talker.model.rotary_emb(e, rope_positions.unsqueeze(0).expand(3, -1, -1))
        cos, sin = multimodal_rope(cos, sin, lane.rope_section, lane.rope_interleaved)
        h = e
        for index, layer in enumerate(lane.talker_layers):
            h = layer.step_slots(h, cos, sin, [slot.kv[index] for slot in slots], positions)
        h = lane.talker.model.norm(h)
        logits = lane.codec_head(h)[:, -1, :].to(copy=True, dtype=torch.float32)
        for i, slot in enumerate(slots):
            slot.hidden = h[i : i + 1, -1:, :]
            slot.length += 1
            slot.step += 1
            token = slot.sampler.talker(logits[i : i + 1])
            if token == slot.eos:
                slot.finish = EOS
            else:
                slot.token = token

    def _predict(
        self, lane: Lane, slots: list[Slot], past: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        """The code predictor's codes 1..groups-1 of one frame for every slot (B, groups - 1)."""
        batch = len(slots)
        passes = lane.graphs.frame(batch) if lane.graphs is not None else EagerPasses(lane, batch)
        first = torch.cat((past, last), dim=1)
        chosen = torch.empty(batch, lane.groups - 1, dtype=torch.long, device=lane.device)
        for g in range(lane.groups - 1):
            logits = passes.logits(g, first if g == 0 else chosen[:, g - 1 : g])
            for i, slot in enumerate(slots):
                chosen[i, g] = slot.sampler.predictor(logits[i : i + 1], chosen[i : i + 1, :g])
        return chosen
