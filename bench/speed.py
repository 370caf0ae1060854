"""Per-frame speed of stock qwen-tts and of the step loop, in one process; prints one JSON object.

    .venv/bin/python bench/speed.py --real-dims [--data-dir data] [--frames 20] [--batches 1,8]
        [--rounds 2] [--variants stock-fp32,stock-bf16,ours-fp32,ours-bf16,ours-int8]

Why: speed per 80 ms frame is what a TTS server is judged on (issue "Engine speed"). Variants:
* `stock-<dtype>`: stock qwen-tts `generate` (`QwenEngine.stock_codes`, no audio decode);
* `ours-<dtype>`: the step loop (`StepEngine`: prepacked, fused, static K/V), all items admitted
  then stepped together until every slot is done;
* `ours-int8`: the step loop with QUANT=int8 (engine/step/quant.py) on the bf16 model.
Greedy decoding, x-vector prompt, random-weight model (EOS never wins, so every item runs to
`--frames`). Variants alternate within each round (order reversed every other round), so the
shared machine's load drifts hit all alike; compare variants only as ratios within one run, and
read `loadavg` (1-minute load, includes this process's own threads).

Reported per batch size and variant: `s_per_frame` (median over rounds of wall / frames per
item, prefill included; min too), `s_per_item_frame` (/ batch), `rtf` (= s per item-frame / 0.08;
< 1 is faster than real time), ratios vs stock fp32 and stock bf16, and `codes_identical` to
stock of the same dtype (all items, same frames). At batch 1 the identity is also checked for
seeded sampling. For int8: agreement with ours-bf16's codes (share of identical frames, first
differing frame, share of identical codes) and a distance on the decoded audio (SNR in dB and
log-spectral distance in dB; both decoded by the same codec); `stock-bf16_vs_stock-fp32` gives
the same figures for two float dtypes as a yardstick. Random weights make nearly every choice a
near-tie (flat logits), so any numeric change flips codes from the first frame on: on this model
these figures bound nothing about a trained model's agreement. `decoder`: the 12 Hz codec
decoder's cost per decode call of the streaming schedule (engine/serving/codec.py) at each dtype.
`--real-dims` builds the real-0.6b random model once under DATA_DIR (`cached_models`); without
it the tiny models are used (fast, for checking the script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import cached_models
from qwen3_tts_server.engine.serving.codec import STREAMING, Codec
from qwen3_tts_server.engine.step.stepper import StepEngine
from qwen3_tts_server.values import Audio, Sampling

FRAME_S = 0.08
GREEDY = Sampling(temperature=0.0)
SEEDED = Sampling(temperature=0.9, top_k=50, top_p=1.0, seed=11)
TEXTS = [f"Sentence number {i} of the batch, long enough to run to the cap." for i in range(8)]
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}

Codes = list[torch.Tensor]
Runner = Callable[[Sequence[SynthItem], Sampling, int], Codes]


def _reference() -> Audio:
    t = np.arange(3 * 24000, dtype=np.float32) / 24000
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return Audio(tone.astype(np.float32), 24000)


def _loop(steps: StepEngine) -> Runner:
    def run(items: Sequence[SynthItem], sampling: Sampling, frames: int) -> Codes:
        slots = [steps.admit(item, sampling, frames) for item in items]
        while not all(slot.done for slot in slots):
            steps.step(slots)
        for slot in slots:
            steps.release(slot)
        return [slot.frames.clone() for slot in slots]

    return run


def _stock(engine: QwenEngine) -> Runner:
    def run(items: Sequence[SynthItem], sampling: Sampling, frames: int) -> Codes:
        # stock's last new token completes no frame: `frames` frames take frames + 1 tokens
        return engine.stock_codes(items, sampling, frames + 1)

    return run


def _same(a: Codes, b: Codes) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _agreement(reference: Codes, other: Codes, codec: Codec) -> dict[str, Any]:
    """How far int8 codes are from the float codes: frames, codes, decoded audio."""
    frames = same_frames = same_codes = codes = 0
    first: list[int] = []
    snr, lsd = [], []
    for ref, oth in zip(reference, other, strict=True):
        n = min(ref.shape[0], oth.shape[0])
        equal_rows = (ref[:n] == oth[:n]).all(dim=1)
        frames += n
        same_frames += int(equal_rows.sum())
        same_codes += int((ref[:n] == oth[:n]).sum())
        codes += ref[:n].numel()
        differing = (~equal_rows).nonzero()
        first.append(int(differing[0]) if differing.numel() else n)
        a, b = codec.decode(ref[:n]), codec.decode(oth[:n])
        snr.append(10 * np.log10(np.sum(a**2) / max(float(np.sum((a - b) ** 2)), 1e-12)))
        lsd.append(_log_spectral_distance(a, b))
    return {
        "identical_frames": round(same_frames / frames, 3),
        "identical_codes": round(same_codes / codes, 3),
        "first_differing_frame": first,
        "audio_snr_db": round(float(np.mean(snr)), 1),
        "log_spectral_distance_db": round(float(np.mean(lsd)), 2),
    }


def _log_spectral_distance(a: np.ndarray, b: np.ndarray, n_fft: int = 1024) -> float:
    """RMS over frequency of the dB difference of STFT power, averaged over frames."""

    def power_db(x: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 4]
        spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2
        return 10 * np.log10(spectrum + 1e-10)

    diff = power_db(a) - power_db(b)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-1))))


def _decoder_costs(codecs: dict[str, Codec], rounds: int) -> dict[str, Any]:
    """ms per decode call of the streaming schedule: the first chunk, and a steady chunk with its
    left context (what a streamed slot pays), plus ms per frame of one-shot 100-frame decoding."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (100, 16), generator=generator)
    calls = {
        f"first_{STREAMING.first}_frames": codes[: STREAMING.first],
        f"next_{STREAMING.next}_frames_with_{STREAMING.context}_context": codes[
            : STREAMING.context + STREAMING.next
        ],
        "one_shot_100_frames": codes,
    }
    out: dict[str, Any] = {}
    for name, codec in codecs.items():
        groups = codec.decoder.config.num_quantizers
        size = codec.decoder.config.codebook_size
        codec.decode(codes[:4, :groups] % size)  # warm-up
        row: dict[str, Any] = {}
        for call, chunk in calls.items():
            chunk = chunk[:, :groups] % size
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                codec.decode(chunk)
                times.append(time.perf_counter() - started)
            row[f"{call}_ms"] = round(statistics.median(times) * 1000, 1)
        row["ms_per_frame_one_shot"] = round(row["one_shot_100_frames_ms"] / 100, 1)
        new_frames = STREAMING.next
        row["ms_per_new_frame_streaming"] = round(row[list(calls)[1] + "_ms"] / new_frames, 1)
        out[name] = row
    return out


def run(
    models_dir: Path, variants: list[str], batches: list[int], frames: int, rounds: int
) -> dict[str, Any]:
    dtypes = sorted({"bf16" if v == "ours-int8" else v.split("-")[1] for v in variants})
    engines = {
        dt: QwenEngine.load(models_dir, device="cpu", dtype=DTYPES[dt], max_new_tokens_cap=frames)
        for dt in dtypes
    }
    reference = _reference()
    prompts = {dt: engine.create_prompt(reference, None) for dt, engine in engines.items()}
    runners: dict[str, tuple[str, Runner]] = {}
    for variant in variants:
        kind, dt = variant.split("-")
        if variant == "ours-int8":
            runners[variant] = ("bf16", _loop(StepEngine(engines["bf16"], quant="int8")))
        elif kind == "stock":
            runners[variant] = (dt, _stock(engines[dt]))
        else:
            runners[variant] = (dt, _loop(StepEngine(engines[dt])))
    codecs = {dt: Codec(e.model("base").model.speech_tokenizer) for dt, e in engines.items()}

    result: dict[str, Any] = {
        "model": next(iter(engines.values())).info().base_model_id,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "frames": frames,
        "rounds": rounds,
        "loadavg_start": round(os.getloadavg()[0], 2),
    }
    for batch in batches:
        items = {
            dt: [SynthItem(text, "english", prompts[dt]) for text in TEXTS[:batch]] for dt in dtypes
        }
        for dt, runner in runners.values():  # warm-up: first calls pay lazy set-up
            runner(items[dt], GREEDY, 2)
        times: dict[str, list[float]] = {name: [] for name in runners}
        codes: dict[str, Codes] = {}
        loads = []
        for index in range(rounds):
            order = list(runners) if index % 2 == 0 else list(runners)[::-1]
            for name in order:
                dt, runner = runners[name]
                started = time.perf_counter()
                codes[name] = runner(items[dt], GREEDY, frames)
                elapsed = time.perf_counter() - started
                times[name].append(elapsed / max(c.shape[0] for c in codes[name]))
            loads.append(round(os.getloadavg()[0], 2))
        block: dict[str, Any] = {"loadavg_after_each_round": loads}
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name, (dt, runner) in runners.items():
            row: dict[str, Any] = {
                "s_per_frame": round(medians[name], 4),
                "s_per_frame_min": round(min(times[name]), 4),
                "s_per_item_frame": round(medians[name] / batch, 4),
                "rtf": round(medians[name] / batch / FRAME_S, 2),
            }
            for base in ("stock-fp32", "stock-bf16"):
                if base in medians:
                    row[f"x_vs_{base}"] = round(medians[base] / medians[name], 2)
            stock = f"stock-{dt}"
            if name.startswith("ours") and name != "ours-int8" and stock in codes:
                row["codes_identical"] = _same(codes[name], codes[stock])
                if batch == 1:
                    seeded = runner(items[dt], SEEDED, frames)
                    row["seeded_codes_identical"] = _same(
                        seeded, runners[stock][1](items[dt], SEEDED, frames)
                    )
            if name == "ours-int8" and "ours-bf16" in codes:
                row["vs_ours_bf16"] = _agreement(codes["ours-bf16"], codes[name], codecs["bf16"])
            block[name] = row
        if "stock-fp32" in codes and "stock-bf16" in codes:
            # calibration for the int8 figures: how far apart two float dtypes already are
            block["stock-bf16_vs_stock-fp32"] = _agreement(
                codes["stock-fp32"], codes["stock-bf16"], codecs["bf16"]
            )
        result[f"batch_{batch}"] = block
    result["decoder"] = _decoder_costs(codecs, rounds=max(rounds, 3))
    result["loadavg_end"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-dims", action="store_true", help="the real 0.6B sizes")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="model cache")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="stock-fp32,stock-bf16,ours-fp32,ours-bf16,ours-int8")
    args = parser.parse_args()
    dims = "real-0.6b" if args.real_dims else "tiny"
    paths = cached_models(args.data_dir / f"models-{dims}", dims=dims)
    result = run(
        paths.base,
        args.variants.split(","),
        [int(b) for b in args.batches.split(",")],
        args.frames,
        args.rounds,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
